"""Control with a driving video and a pose file: which region follows which signal, checked on the saved motion.

The renderer is the double of test_pipeline_generate (frames from x_d; keypoint info from an image's colours),
so the test sees exactly the motion the pipeline composes; the crops are the real dlib crops of the video frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_pipeline_generate import EXAMPLE, RecordingRenderer, pipeline, speech  # noqa: F401 - the fixture

from kdtalker.diffusion.motion import EYE_KEYPOINTS as EYES
from kdtalker.diffusion.motion import LIP_KEYPOINTS as LIPS
from kdtalker.diffusion.motion import OTHER_KEYPOINTS as REST
from kdtalker.errors import ConfigError, VideoError
from kdtalker.media import read_video, write_video
from kdtalker.pipeline.control import ping_pong, relative_video_motion
from kdtalker.pipeline.dubbing import prepare_dub
from kdtalker.pipeline.image import load_image
from kdtalker.pipeline.motion import motions_of, source_motion
from kdtalker.pipeline.request import Request
from kdtalker.renderer.keypoints import rotation_angles, rotation_matrix
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT


class KeypointRenderer(RecordingRenderer):
    """+ keypoint_info of any image: pose and expression from its mean colours (so video frames differ)."""

    def prepare_image(self, rgb):
        return torch.from_numpy(np.asarray(rgb, np.float32) / 255).permute(2, 0, 1)[None]

    def encode_source(self, rgb):
        source = super().encode_source(rgb)
        return type(source)(self.keypoint_info(self.prepare_image(rgb)), source.f_s, source.x_s, source.compressed)

    def keypoint_info(self, images):
        m = images.mean(dim=(2, 3))  # (B, 3)
        b = images.shape[0]
        g = torch.Generator().manual_seed(3)
        basis = torch.randn(3, 63, generator=g)
        return {
            "pitch": (m[:, :1] - 0.4) * 40,
            "yaw": (m[:, 1:2] - 0.4) * 60,
            "roll": (m[:, 2:3] - 0.4) * 20,
            "t": (m - 0.4) * 0.1,
            "exp": (0.05 * (m - 0.4) @ basis).reshape(b, 21, 3),
            "scale": 1.5 + m[:, :1],
            "kp": self.info["kp"].expand(b, -1, -1),
        }


@pytest.fixture()
def controlled(pipeline):  # noqa: F811 - the fixture of test_pipeline_generate
    pipeline.models.renderer = KeypointRenderer()
    return pipeline


def driving_clip(path, frames: int):
    """The example portrait, its colours changing frame by frame (a face in every frame)."""
    image = load_image(EXAMPLE).astype(np.float32)
    shifts = [np.array([1.0 - 0.02 * i, 0.8 + 0.03 * (i % 5), 1.0 - 0.01 * i]) for i in range(frames)]
    return write_video(path, np.stack([np.clip(image * s, 0, 255).astype(np.uint8) for s in shifts]), fps=25)


def video_motion(pipe, path, frames: int):
    """The video's raw motion per output frame, extracted independently: decode, crop, renderer.keypoint_info."""
    renderer = pipe.models.renderer
    decoded = read_video(path, fps=25)
    crops = [pipe.crop(f).image for f in decoded]
    raw = motions_of(renderer.keypoint_info(torch.cat([renderer.prepare_image(c) for c in crops])), LIVEPORTRAIT_LAYOUT)
    return raw[torch.from_numpy(ping_pong(len(raw), frames))]


def saved(tmp_path):
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        return torch.from_numpy(data["motion"])


def source_raw(pipe):
    renderer = pipe.models.renderer
    return source_motion(renderer.encode_source(pipe.crop(load_image(EXAMPLE)).image).info, LIVEPORTRAIT_LAYOUT)


def lip_columns(points):
    return [7 + 3 * k + c for k in points for c in range(3)]


def test_pose_from_the_video(controlled, tmp_path):
    """control.pose=video: angles = R_i R_0^T R_source, t = t_source + (t_i - t_0); expression from the audio."""
    video = driving_clip(tmp_path / "drive.mp4", 12)  # shorter than the 25 frames of audio: ping-pong
    audio = speech(tmp_path / "a.wav", 1.0)
    controlled.generate(
        EXAMPLE,
        audio,
        tmp_path / "o.mp4",
        save_motion=tmp_path / "m.npz",
        driving_video=video,
        control={"pose": "video"},
    )
    motion = saved(tmp_path)
    drive, src = video_motion(controlled, video, 25), source_raw(controlled)

    def rot(m):
        return rotation_matrix(m[:, 2], m[:, 1], m[:, 3])

    pitch, yaw, roll = rotation_angles(rot(drive) @ rot(drive[:1]).transpose(1, 2) @ rot(src[None]))
    torch.testing.assert_close(motion[:, 1:4], torch.stack([yaw, pitch, roll], 1), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(motion[:, 4:7], src[4:7] + (drive[:, 4:7] - drive[:1, 4:7]), rtol=1e-5, atol=1e-6)
    # small head turns: the composition is close to adding the angle deltas to the source pose
    torch.testing.assert_close(motion[:, 1:4], src[1:4] + (drive[:, 1:4] - drive[:1, 1:4]), rtol=0, atol=0.5)
    # the expression is still the audio's: the same as a run without control (same seed)
    controlled.generate(EXAMPLE, audio, tmp_path / "o2.mp4", save_motion=tmp_path / "m.npz")
    torch.testing.assert_close(motion[:, 7:], saved(tmp_path)[:, 7:], rtol=0, atol=0)


def test_lips_from_audio_eyes_from_video(controlled, tmp_path):
    video = driving_clip(tmp_path / "drive.mp4", 30)  # longer than the audio: cut
    audio = speech(tmp_path / "a.wav", 1.0)
    controlled.generate(EXAMPLE, audio, tmp_path / "a.mp4", save_motion=tmp_path / "m.npz")
    audio_only = saved(tmp_path)
    controlled.generate(
        EXAMPLE,
        audio,
        tmp_path / "b.mp4",
        save_motion=tmp_path / "m.npz",
        driving_video=video,
        control={"lips": "audio", "eyes": "video", "expression": "source", "eyes_strength": 0.5},
    )
    mixed, src = saved(tmp_path), source_raw(controlled)
    want_eyes = relative_video_motion(video_motion(controlled, video, 25), src)[:, lip_columns(EYES)]
    eyes = lip_columns(EYES)
    torch.testing.assert_close(mixed[:, eyes], src[eyes] + 0.5 * (want_eyes - src[eyes]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed[:, lip_columns(LIPS)], audio_only[:, lip_columns(LIPS)], rtol=0, atol=0)
    torch.testing.assert_close(mixed[:, lip_columns(REST)], src[lip_columns(REST)].expand(25, -1), rtol=0, atol=0)
    torch.testing.assert_close(mixed[:, 1:7], audio_only[:, 1:7], rtol=0, atol=0)  # pose still from the audio


def test_pose_from_a_file(controlled, tmp_path):
    audio = speech(tmp_path / "a.wav", 1.0)
    rows = ["yaw,pitch,roll,time"] + [f"{10 * t},{-5 * t},{2.5},{t}" for t in (0.0, 0.5, 1.0)]
    (tmp_path / "pose.csv").write_text("\n".join(rows) + "\n")
    controlled.generate(
        EXAMPLE,
        audio,
        tmp_path / "o.mp4",
        save_motion=tmp_path / "m.npz",
        pose_file=tmp_path / "pose.csv",
        control={"pose": "file"},
    )
    motion, src = saved(tmp_path), source_raw(controlled)
    times = torch.arange(25) / 25
    torch.testing.assert_close(motion[:, 1], 10 * times, rtol=1e-6, atol=1e-5)  # interpolated, not smoothed
    torch.testing.assert_close(motion[:, 2], -5 * times, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(motion[:, 3], torch.full((25,), 2.5), rtol=0, atol=0)
    torch.testing.assert_close(motion[:, 4:7], src[4:7].expand(25, -1), rtol=0, atol=0)  # no tx, ty: the source's


def test_video_only_reenactment_and_faceless_frames(controlled, tmp_path):
    """Every region from the video, no audio at all: as long as the video; faceless frames hold a neighbour."""
    frames = load_image(EXAMPLE)
    clip = np.stack([frames] * 6)
    clip[2] = 0  # no face in frame 2
    write_video(tmp_path / "drive.mp4", clip, fps=25)
    everything = {"pose": "video", "lips": "video", "eyes": "video", "expression": "video"}
    controlled.generate(
        EXAMPLE,
        None,
        tmp_path / "o.mp4",
        save_motion=tmp_path / "m.npz",
        driving_video=tmp_path / "drive.mp4",
        control=everything,
    )
    motion = saved(tmp_path)
    assert motion.shape == (6, 70)
    assert any("1 of 6 driving-video frames show no face" in note for note in controlled.notes)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(control={"pose": "video"}), "give driving_video"),
        (dict(driving_video="ref.mp4"), "no region follows it"),
        (dict(control={"pose": "file"}), "control.pose=file and pose_file"),
        (dict(control={"pose": "sideways"}), "control.pose='sideways' is not one of"),
        (dict(control={"eyes_strength": 2}), r"must be a number in \[0, 1\]"),
        (dict(control={"gaze": "video"}), "unknown control key"),
    ],
)
def test_bad_controls_are_one_clear_error(controlled, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        controlled.generate(EXAMPLE, speech(tmp_path / "a.wav", 0.3), tmp_path / "o.mp4", **kwargs)
    assert not (tmp_path / "o.mp4").exists()


def test_bad_signal_files_are_one_clear_error(controlled, tmp_path):
    audio = speech(tmp_path / "a.wav", 0.3)
    pose = dict(control={"pose": "file"})
    (tmp_path / "cols.csv").write_text("yaw,pitch\n1,2\n")
    with pytest.raises(ConfigError, match=r"lacks the column\(s\) \['roll'\]"):
        controlled.generate(EXAMPLE, audio, tmp_path / "o.mp4", pose_file=tmp_path / "cols.csv", **pose)
    (tmp_path / "nan.csv").write_text("yaw,pitch,roll\n1,2,nan\n")
    with pytest.raises(ConfigError, match="NaN"):
        controlled.generate(EXAMPLE, audio, tmp_path / "o.mp4", pose_file=tmp_path / "nan.csv", **pose)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoError, match="broken.mp4"):
        controlled.generate(
            EXAMPLE, audio, tmp_path / "o.mp4", driving_video=tmp_path / "broken.mp4", control={"pose": "video"}
        )
    write_video(tmp_path / "dark.mp4", np.zeros((3, 64, 64, 3), np.uint8))
    with pytest.raises(ConfigError, match="no face in any frame"):
        controlled.generate(
            EXAMPLE, audio, tmp_path / "o.mp4", driving_video=tmp_path / "dark.mp4", control={"pose": "video"}
        )
    assert not (tmp_path / "o.mp4").exists()


def test_ping_pong_and_rotation_angles():
    assert ping_pong(3, 7).tolist() == [0, 1, 2, 1, 0, 1, 2]
    assert ping_pong(1, 3).tolist() == [0, 0, 0] and ping_pong(5, 3).tolist() == [0, 1, 2]
    pitch, yaw, roll = torch.tensor([10.0, -20, 5]), torch.tensor([30.0, 5, -60]), torch.tensor([-15.0, 40, 2])
    back = rotation_angles(rotation_matrix(pitch, yaw, roll))
    torch.testing.assert_close(torch.stack(back), torch.stack([pitch, yaw, roll]), rtol=0, atol=1e-4)


def test_dubbing_a_source_video(controlled, tmp_path):
    """source_video: as long as the audio; each frame keeps its own pose and eyes; the lips move by the sampled
    lip motion relative to the sampled sequence's first frame."""
    from kdtalker.media import probe_video

    video = driving_clip(tmp_path / "talk.mp4", 10)  # 10 frames for 25 of audio: plays back and forth
    audio = speech(tmp_path / "a.wav", 1.0)
    out = controlled.generate(None, audio, tmp_path / "dub.mp4", source_video=video, save_motion=tmp_path / "m.npz")
    assert probe_video(out)["frames"] == 25
    motion = saved(tmp_path)
    renderer = controlled.models.renderer
    crops = [controlled.crop(f).image for f in read_video(video, fps=25)]
    own = torch.stack(
        [source_motion(renderer.encode_source(c).info, LIVEPORTRAIT_LAYOUT) for c in crops]
    )  # each frame's own motion
    own = own[torch.from_numpy(ping_pong(len(own), 25))]
    lips = lip_columns(LIPS)
    others = [c for c in range(70) if c not in lips]
    torch.testing.assert_close(motion[:, others], own[:, others], rtol=0, atol=0)  # pose, eyes, rest: the frame's
    request = Request(controlled.controls.updated({}, controlled.device), driven_audio=audio, source_video=video)
    job = prepare_dub(request, controlled.load, controlled.crop, controlled.timings)
    sampled = controlled.motion_maker.sample(job.source.info, job.features, request.controls)
    torch.testing.assert_close(
        motion[:, lips] - own[:, lips], sampled[:, lips] - sampled[:1, lips], rtol=1e-5, atol=1e-6
    )
    # paste_back: each animated face goes back into its own full frame (the video's size)
    wide = np.pad(read_video(video, fps=25)[:4], ((0, 0), (0, 0), (40, 60), (0, 0)), mode="edge")
    write_video(tmp_path / "wide.mp4", wide, fps=25)
    short = speech(tmp_path / "s.wav", 0.2)
    out = controlled.generate(
        None, short, tmp_path / "wide_out.mp4", source_video=tmp_path / "wide.mp4", paste_back=True
    )
    info = probe_video(out)
    assert (info["frames"], info["width"], info["height"]) == (5, wide.shape[2], wide.shape[1])
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoError, match="broken.mp4"):
        controlled.generate(None, short, tmp_path / "o.mp4", source_video=tmp_path / "broken.mp4")
    with pytest.raises(ConfigError, match="give one source"):
        controlled.generate(EXAMPLE, audio, tmp_path / "o.mp4", source_video=video)
    with pytest.raises(ConfigError, match="takes no motion_file, driving_video"):
        controlled.generate(None, audio, tmp_path / "o.mp4", source_video=video, control={"pose": "still"})
    assert not (tmp_path / "o.mp4").exists()


@pytest.fixture()
def multisignal(controlled):
    """The pipeline with a multi-signal denoiser whose backbone is the plain one's and whose branch is 'trained'."""
    from test_diffusion_multisignal import trained_branch

    from kdtalker.diffusion import MultiSignalDenoiser

    plain = controlled.models.denoiser
    torch.nn.init.normal_(plain.output_projection.weight, std=0.05)  # epsilon far from zero: guidance shows
    model = MultiSignalDenoiser(motion_features=8, width=64, depth=1, heads=2, head_dim=32, time_dim=32)
    model.load_state(plain.state_dict(), "the plain test model")
    controlled.models.denoiser = trained_branch(model).eval()
    return controlled, plain


def test_multisignal_model_follows_the_driving_video_through_its_regions(multisignal, tmp_path, monkeypatch):
    pipe, plain = multisignal
    model = pipe.models.denoiser
    video = driving_clip(tmp_path / "drive.mp4", 12)
    audio = speech(tmp_path / "a.wav", 1.0)
    pipe.generate(EXAMPLE, audio, tmp_path / "a.mp4", save_motion=tmp_path / "m.npz")
    audio_mode = saved(tmp_path)
    # signals=audio is the backbone alone: the plain model's motion, exactly
    pipe.models.denoiser = plain
    pipe.generate(EXAMPLE, audio, tmp_path / "p.mp4", save_motion=tmp_path / "m.npz")
    torch.testing.assert_close(saved(tmp_path), audio_mode, rtol=0, atol=0)
    pipe.models.denoiser = model

    seen = []
    condition = model.condition
    monkeypatch.setattr(model, "condition", lambda a, **kw: seen.append(kw) or condition(a, **kw))
    pipe.generate(
        EXAMPLE, audio, tmp_path / "b.mp4", save_motion=tmp_path / "m.npz", driving_video=video, signals="both"
    )
    both = saved(tmp_path)
    assert not torch.allclose(both, audio_mode)
    # the model got the video's motion on the source, normalised, with every region but the lips
    norm = pipe.models.norm
    want = norm.normalize(relative_video_motion(video_motion(pipe, video, 25), source_raw(pipe)))
    driven = torch.cat([kw["driving"][0] for kw in seen if "driving" in kw])[:25]
    torch.testing.assert_close(driven, want.float(), rtol=1e-5, atol=1e-5)
    assert all(kw["regions"].tolist() == [[0.0, 1.0, 1.0, 1.0]] for kw in seen if "driving" in kw)

    # signals=motion: no audio needed; the clip is as long as the driving video
    out = pipe.generate(
        EXAMPLE, None, tmp_path / "c.mp4", save_motion=tmp_path / "m.npz", driving_video=video, signals="motion"
    )
    assert saved(tmp_path).shape == (12, 70) and read_video(out).shape[0] == 12
    # guidance on the audio follows eq. (2): another motion than the unguided one
    pipe.generate(
        EXAMPLE,
        audio,
        tmp_path / "d.mp4",
        save_motion=tmp_path / "m.npz",
        driving_video=video,
        signals="both",
        guidance={"audio": 2.0},
    )
    assert not torch.allclose(saved(tmp_path), both)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(signals="both"), "give driving_video"),
        (dict(signals="lips"), "signals must be one of"),
        (dict(guidance={"audio": -1}), "guidance.audio=-1"),
        (dict(guidance={"lips": 2}), "unknown guidance key"),
        (dict(guidance={"motion": 2.0}), "guidance.motion=2 needs the motion signal"),
    ],
)
def test_bad_signals_are_one_clear_error(multisignal, tmp_path, kwargs, message):
    pipe, _ = multisignal
    with pytest.raises(ConfigError, match=message):
        pipe.generate(EXAMPLE, speech(tmp_path / "a.wav", 0.3), tmp_path / "o.mp4", **kwargs)
    assert not (tmp_path / "o.mp4").exists()


def test_the_official_model_refuses_signals_it_was_not_trained_for(controlled, tmp_path):
    from kdtalker.diffusion import MultiSignalDenoiser

    video = driving_clip(tmp_path / "drive.mp4", 4)
    audio = speech(tmp_path / "a.wav", 0.3)
    plain = controlled.models.denoiser
    untrained = MultiSignalDenoiser(width=64, depth=1, heads=2, head_dim=32, time_dim=32)
    untrained.load_state(plain.state_dict(), "the official weights")  # the branch stays at its zero init
    controlled.models.denoiser = untrained.eval()
    with pytest.raises(ConfigError, match="motion branch is untrained"):
        controlled.generate(EXAMPLE, audio, tmp_path / "o.mp4", driving_video=video, signals="both")
    controlled.models.denoiser = plain
    with pytest.raises(ConfigError, match="needs a multi-signal model"):
        controlled.generate(EXAMPLE, audio, tmp_path / "o.mp4", driving_video=video, signals="both")
    with pytest.raises(ConfigError, match="kdtalker_multisignal"):
        controlled.generate(EXAMPLE, audio, tmp_path / "o.mp4", guidance={"audio": 2.0})
    assert not (tmp_path / "o.mp4").exists()
