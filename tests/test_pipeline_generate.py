"""The pipeline's own logic in process: sampling controls, streaming render loop, paste-back output, bad input.

Fast doubles stand in for the heavy parts where the test is about the pipeline, not the networks: a small
randomly initialised Denoiser and AudioEncoder (the real classes), and a renderer double whose frames encode
the driving keypoints. The real networks on official-layout files are covered by test_inference_e2e.py.
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, fields, replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf
from test_pipeline_checkpoints import make_fake_checkpoints

from kdtalker.audio import AudioEncoder, SpeechFeatures
from kdtalker.config import CONFIG_DIR
from kdtalker.diffusion import NO_GUIDANCE, DDIMScheduler, Denoiser, Guidance, MotionNorm, MultiSignalDenoiser
from kdtalker.diffusion.motion import POSE
from kdtalker.diffusion.sampling import motion_windows
from kdtalker.diffusion.smoothing import StreamingSmoother, smooth_motion
from kdtalker.errors import AudioError, ConfigError, ImageError, KDTalkerError, OutputError, VideoError
from kdtalker.media import probe_video
from kdtalker.pipeline import Controls, TalkingHeadPipeline
from kdtalker.pipeline.compose import driving_keypoints
from kdtalker.pipeline.control import Control
from kdtalker.pipeline.face import DlibCrop
from kdtalker.pipeline.face_onnx import InsightFaceCrop
from kdtalker.pipeline.models import Models
from kdtalker.pipeline.motion import source_motion
from kdtalker.renderer import AppearanceFeatureExtractor, MotionExtractor, Source, SPADEDecoder, WarpingNetwork
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "astronaut.png"


class RecordingRenderer:
    """Renderer double: fixed source info, frames whose brightness follows x_d (over a fixed vertical shading, as
    no real frame is one flat colour); records every batch size."""

    def __init__(self):
        self.batches: list[int] = []
        self.chunk_sizes: list[int | None] = []
        self.stitched = 0
        g = torch.Generator().manual_seed(0)
        self.info = {
            "pitch": torch.tensor([[3.0]]),
            "yaw": torch.tensor([[-5.0]]),
            "roll": torch.tensor([[1.0]]),
            "t": torch.tensor([[0.01, -0.02, 0.0]]),
            "exp": 0.01 * torch.randn(1, 21, 3, generator=g),
            "scale": torch.tensor([[1.5]]),
            "kp": 0.1 * torch.randn(1, 21, 3, generator=g),
        }

    frame_scale = 2  # 512 px frames from the 256 px crop, as LivePortrait's

    def encode_source(self, rgb):
        assert rgb.shape == (256, 256, 3)
        info = {k: v.clone() for k, v in self.info.items()}
        return Source(info, torch.zeros(1, 32, 16, 64, 64), torch.zeros(1, 21, 3), torch.zeros(1))

    def stitch(self, x_s, x_d):
        self.stitched += x_d.shape[0]
        return x_d

    def render(self, source, x_d, chunk_size=None):
        self.batches.append(x_d.shape[0])
        self.chunk_sizes.append(chunk_size)
        level = torch.sigmoid(x_d.mean(dim=(1, 2)))[:, None, None, None]
        shading = torch.linspace(0.8, 1.0, 512)[None, None, :, None]
        return (level * shading).expand(-1, 3, 512, 512).clone()


class RandomSpeechFeatures(SpeechFeatures):
    """The audio condition on a randomly initialised encoder (no file)."""

    def __init__(self):
        self.encoder, self.batch_size = AudioEncoder().eval(), 256


@pytest.fixture()
def pipeline(tmp_path) -> TalkingHeadPipeline:
    root = make_fake_checkpoints(tmp_path / "ckpt")
    pipe = TalkingHeadPipeline.from_pretrained(root, device="cpu", steps=2, batch_size=4)
    torch.manual_seed(0)
    pipe.models = Models(
        renderer=RecordingRenderer(),
        audio=RandomSpeechFeatures(),
        denoiser=Denoiser(width=64, depth=1, heads=2, head_dim=32, time_dim=32).eval(),
        scheduler=DDIMScheduler(),
        norm=MotionNorm.load(root / "norm.npz"),
    )
    return pipe


def speech(path: Path, seconds: float) -> Path:
    wav, rate = sf.read(REPO / "examples" / "speech.wav", dtype="float32")
    sf.write(path, wav[8000 : 8000 + int(seconds * rate)], rate)
    return path


def test_generate_streams_batches_and_writes_the_clip(pipeline, tmp_path):
    audio = speech(tmp_path / "a.wav", 1.0)
    out = pipeline.generate(EXAMPLE, audio, tmp_path / "out.mp4", stitching=True)
    info = probe_video(out)
    assert info["frames"] == 25 and (info["width"], info["height"]) == (512, 512)
    assert abs(info["audio_duration"] - 1.0) < 0.03
    renderer = pipeline.models.renderer
    assert renderer.batches == [4] * 6 + [1]  # never more than batch_size frames at once
    assert renderer.chunk_sizes == [4] * 7  # and batch_size frames per forward, whatever the renderer config says
    assert renderer.stitched == 25
    assert pipeline.timings.frames == 25 and pipeline.timings.rendering > 0


def test_paste_back_gives_the_source_size(pipeline, tmp_path):
    audio = speech(tmp_path / "a.wav", 0.2)
    out = pipeline.generate(EXAMPLE, audio, tmp_path / "full.mp4", paste_back=True)
    info = probe_video(out)
    assert (info["width"], info["height"]) == (512, 512) and info["frames"] == 5  # the example is 512x512
    from PIL import Image

    wide = tmp_path / "wide.png"
    src = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    Image.fromarray(np.pad(src, ((0, 0), (0, 301), (0, 0)), mode="edge")).save(wide)  # 813 wide: odd
    info = probe_video(pipeline.generate(wide, audio, tmp_path / "wide.mp4", paste_back=True))
    assert (info["width"], info["height"]) == (812, 512)


def test_sampling_controls(pipeline):
    features = torch.randn(40, 512, generator=torch.Generator().manual_seed(1))
    info = pipeline.models.renderer.info
    raw = source_motion(info, LIVEPORTRAIT_LAYOUT)
    ctl = pipeline.controls
    base = pipeline.motion_maker.sample(info, features, ctl)
    assert base.shape == (40, 70) and base.dtype == torch.float32
    assert torch.equal(base, pipeline.motion_maker.sample(info, features, ctl))  # same seed, same motion
    assert not torch.equal(base, pipeline.motion_maker.sample(info, features, replace(ctl, seed=1)))
    still = pipeline.motion_maker.sample(info, features, replace(ctl, head_motion_scale=0.0))
    assert torch.allclose(still[:, 1:7], raw[1:7].expand(40, -1), atol=1e-5)  # the source pose on every frame
    assert torch.equal(still[:, 7:], base[:, 7:])  # the expression is untouched
    half = pipeline.motion_maker.sample(info, features, replace(ctl, head_motion_scale=0.5))
    assert torch.allclose(half[:, 1:7] - raw[1:7], 0.5 * (base[:, 1:7] - raw[1:7]), atol=1e-4)
    rough = pipeline.motion_maker.sample(info, features, replace(ctl, smoothing=0.0))
    smoother = pipeline.motion_maker.sample(info, features, replace(ctl, smoothing=100.0))
    variation = lambda m: (m[1:, 1:] - m[:-1, 1:]).abs().mean()  # noqa: E731
    assert variation(smoother) < variation(base) < variation(rough)
    assert torch.equal(rough[:, 0], base[:, 0])  # the scale is never smoothed
    x_abs = driving_keypoints(info, base, mode="absolute")
    x_rel = driving_keypoints(info, base, mode="relative")
    assert x_abs.shape == x_rel.shape == (40, 21, 3) and not torch.allclose(x_abs, x_rel)


def test_bad_input_leaves_nothing(pipeline, tmp_path):
    audio = speech(tmp_path / "a.wav", 0.2)
    out = tmp_path / "out.mp4"
    with pytest.raises(ImageError, match="not found"):
        pipeline.generate(tmp_path / "missing.png", audio, out)
    from PIL import Image

    Image.new("RGB", (200, 200), (90, 90, 90)).save(tmp_path / "flat.png")
    with pytest.raises(ImageError, match="no face"):
        pipeline.generate(tmp_path / "flat.png", audio, out)
    with pytest.raises(AudioError, match="not found"):
        pipeline.generate(EXAMPLE, tmp_path / "missing.wav", out)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF....WAVEfmt definitely not audio")
    with pytest.raises(AudioError):
        pipeline.generate(EXAMPLE, garbage, out)
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(500, np.float32), 16000)
    with pytest.raises(AudioError, match="shorter than one video frame"):
        pipeline.generate(EXAMPLE, short, out)
    with pytest.raises(OutputError, match="does not exist"):
        pipeline.generate(EXAMPLE, audio, tmp_path / "no" / "out.mp4")
    with pytest.raises(VideoError, match=".mp4"):
        pipeline.generate(EXAMPLE, audio, tmp_path / "out.avi")
    with pytest.raises(ConfigError, match="motion_mode"):
        pipeline.generate(EXAMPLE, audio, out, motion_mode="sideways")
    with pytest.raises(ConfigError, match="unknown control"):
        pipeline.generate(EXAMPLE, audio, out, colour="blue")

    class Exploding(RecordingRenderer):
        def render(self, source, x_d, chunk_size=None):
            if len(self.batches) == 1:
                raise RuntimeError("out of memory")
            return super().render(source, x_d, chunk_size)

    pipeline.models.renderer = Exploding()
    with pytest.raises(RuntimeError):
        pipeline.generate(EXAMPLE, audio, out, batch_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.wav",
        "ckpt",
        "flat.png",
        "garbage.wav",
        "short.wav",
    ]  # no video, no temp file


@pytest.mark.parametrize("broken", ["nan_frame", "flat_frame", "nan_motion"])
def test_broken_weights_or_stats_stop_the_run(broken, pipeline, tmp_path):
    # What broken weights or statistics produce: NaN or one-colour frames, NaN keypoints. Nothing is written.
    class Broken(RecordingRenderer):
        def render(self, source, x_d, chunk_size=None):
            frames = super().render(source, x_d, chunk_size)
            if broken == "nan_frame" and len(self.batches) == 2:
                frames[0, 1, 100, 200] = float("nan")
            if broken == "flat_frame" and len(self.batches) == 2:
                frames[1] = 0.5
            return frames

    pipeline.models.renderer = Broken()
    if broken == "nan_motion":
        pipeline.models.norm.std[10] = np.inf  # as if the statistics had been tampered with after loading
    audio = speech(tmp_path / "a.wav", 0.4)
    words = {
        "nan_frame": "rendered frame 4 holds NaN",
        "flat_frame": "rendered frame 5 is a single flat colour",
        "nan_motion": "sampled motion holds NaN",
    }[broken]
    with pytest.raises(KDTalkerError, match=words):
        pipeline.generate(EXAMPLE, audio, tmp_path / "out.mp4", batch_size=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "ckpt"]


def test_python_api_controls_are_typed(pipeline, tmp_path):
    audio = speech(tmp_path / "a.wav", 0.2)
    for control, words in [
        ({"steps": "abc"}, "steps='abc' is not valid: steps takes a whole number"),
        ({"stitching": "no"}, "stitching takes true or false"),
        ({"seed": 1.5}, "seed takes a whole number"),
        ({"fps": "fast"}, "fps takes a number"),
    ]:
        with pytest.raises(ConfigError, match=words):
            pipeline.generate(EXAMPLE, audio, tmp_path / "out.mp4", **control)


def test_dtype_and_device_checks(tmp_path):
    root = make_fake_checkpoints(tmp_path)
    with pytest.raises(ConfigError, match="float16"):
        TalkingHeadPipeline.from_pretrained(root, device="cpu", dtype="float16")
    with pytest.raises(ConfigError, match="steps"):
        TalkingHeadPipeline.from_pretrained(root, device="cpu", steps=0)


def test_from_the_inference_config(tmp_path):
    from hydra import compose, initialize_config_dir

    root = make_fake_checkpoints(tmp_path)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(
            "inference",
            overrides=[
                f"checkpoint_dir={root}",
                "device=cpu",
                "steps=7",
                "crop.scale=1.3",
                "crop.face_index=1",
                "head_motion_scale=0",
                "motion_mode=relative",
                "paste_back=true",
                "smoothing=2",
            ],
        )
    pipe = TalkingHeadPipeline.from_config(cfg)
    c = pipe.controls
    assert (
        c.steps,
        c.crop.scale,
        c.crop.face_index,
        c.head_motion_scale,
        c.motion_mode,
        c.paste_back,
    ) == (
        7,
        1.3,
        1,
        0.0,
        "relative",
        True,
    ) and c.smoothing == 2.0
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.model_kwargs["width"] == 768
    assert pipe.kalman_transition_cov == 0.05 and pipe.kalman_observation_cov == 0.001
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        default = compose("inference", overrides=[f"checkpoint_dir={root}"])
    official = TalkingHeadPipeline.from_config(default).controls  # the config's values are the official behaviour
    assert (official.steps, official.seed, official.smoothing, official.head_motion_scale) == (50, 0, 1.0, 1.0)
    assert (official.motion_mode, official.stitching, official.paste_back, official.crf) == (
        "absolute",
        False,
        False,
        18,
    )
    assert official.crop == DlibCrop(scale=1.0, face_index=0, predictor_path=None) and official.control.is_audio_only
    assert official.guidance == NO_GUIDANCE and official.signals == "audio" and official.fps == 25


def _signature_defaults(target) -> dict:
    return {name: p.default for name, p in inspect.signature(target).parameters.items() if p.default is not p.empty}


def test_every_setting_has_one_default_the_yaml(tmp_path):
    """The Python API and inference.py with no overrides run the same official configuration, read from the
    packaged YAML: the pipeline's constructor and the per-run settings declare no default of their own."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_method

    from kdtalker.diffusion.smoothing import smooth_motion
    from kdtalker.renderer.checkpoints import STITCHING_ENTRIES
    from kdtalker.renderer.warping import DenseMotionNetwork

    root = make_fake_checkpoints(tmp_path)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("inference", overrides=[f"checkpoint_dir={root}"])
    yaml = TalkingHeadPipeline.from_config(cfg)
    python = TalkingHeadPipeline.from_pretrained(root)
    assert yaml.controls == python.controls and type(yaml.scheduler) is type(python.scheduler) is DDIMScheduler
    for name in ("kalman_transition_cov", "kalman_observation_cov", "overlap", "model_kwargs"):
        assert getattr(yaml, name) == getattr(python, name), name
    assert _signature_defaults(TalkingHeadPipeline.__init__) == {} and _signature_defaults(SpeechFeatures) == {}
    for settings in (Controls, Control, Guidance, DlibCrop, InsightFaceCrop):
        assert [f.name for f in fields(settings) if f.default is not MISSING or f.default_factory is not MISSING] == []
    assert _signature_defaults(smooth_motion) == {} and _signature_defaults(StreamingSmoother) == {}
    assert (cfg.kalman.transition_cov, cfg.kalman.observation_cov) == (0.05, 0.001)
    # every group's keys are its target's own defaults: model, scheduler, renderer (+ each module's sizes)
    model = OmegaConf.to_container(cfg.model)
    assert model.pop("_target_") == "kdtalker.diffusion.Denoiser" and model == _signature_defaults(Denoiser)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        multi = OmegaConf.to_container(compose("inference", overrides=["model=kdtalker_multisignal"]).model)
    assert get_class(multi.pop("_target_")) is MultiSignalDenoiser
    assert multi == {**_signature_defaults(Denoiser), **_signature_defaults(MultiSignalDenoiser)}
    scheduler = OmegaConf.to_container(cfg.diffusion)
    assert get_class(scheduler.pop("_target_")) is DDIMScheduler
    assert scheduler == _signature_defaults(DDIMScheduler)
    renderer = OmegaConf.to_container(cfg.renderer, resolve=True)
    factory = get_method(renderer.pop("_target_"))
    defaults = _signature_defaults(factory)
    configs = renderer.pop("configs")
    assert renderer["compile_modules"] is cfg.compile is defaults["compile_modules"] is False
    for key in (
        "chunk_size",
        "fold_batchnorm",
        "stitching",
        "fuse_ops",
        "memory_format",
        "grid_sample",
        "backend",
        "graph",
    ):
        assert renderer[key] == defaults[key] == python.renderer_factory.keywords[key], key
    for name, cls in [
        ("appearance_feature_extractor", AppearanceFeatureExtractor),
        ("motion_extractor", MotionExtractor),
        ("warping_module", WarpingNetwork),
        ("spade_generator", SPADEDecoder),
    ]:
        own = {**_signature_defaults(cls), "dense_motion_params": configs[name].get("dense_motion_params")}
        assert {k: list(v) if isinstance(v, tuple) else v for k, v in own.items() if k in configs[name]} == configs[
            name
        ], name
    dense = configs["warping_module"]["dense_motion_params"]
    assert dense == {k: v for k, v in _signature_defaults(DenseMotionNetwork).items() if k in dense}
    official = {entry: sizes for entry, (_, sizes) in STITCHING_ENTRIES.items()}
    assert configs["stitching_retargeting_module"] == official
    assert cfg.audio.batch_size == 256 and cfg.audio.checkpoint == f"{root}/wav2lip.pth"


class CountingScheduler(DDIMScheduler):
    """DDIM that counts the windows sampled so far (one set_timesteps call per window, on the window's own copy of
    the scheduler: the count is a list the copies share)."""

    def __init__(self):
        self.count = [0]
        super().__init__()

    @property
    def windows(self) -> int:
        return self.count[0]

    @windows.setter
    def windows(self, value: int) -> None:
        self.count[0] = value

    def set_timesteps(self, *args, **kwargs):
        self.count[0] += 1
        return super().set_timesteps(*args, **kwargs)


@pytest.mark.parametrize(
    "controls, overlap",
    [
        (dict(), False),
        (dict(smoothing=30.0, head_motion_scale=0.5, batch_size=7), True),
        (dict(motion_mode="relative", smoothing=0.0, batch_size=3, paste_back=True), False),
    ],
)
def test_stream_gives_the_frames_generate_writes(pipeline, tmp_path, monkeypatch, controls, overlap):
    """73 frames = two motion windows: the frames streamed equal the frames written, and come window by window."""
    import kdtalker.pipeline.video as video

    written = []
    original_write = video.VideoWriter.write
    monkeypatch.setattr(video.VideoWriter, "write", lambda self, f: (written.append(f.copy()), original_write(self, f)))
    audio = speech(tmp_path / "a.wav", 2.95)
    pipeline.generate(EXAMPLE, audio, tmp_path / "out.mp4", **controls)
    pipeline.overlap = overlap  # sampling in a thread, one window ahead of the rendering: the same frames
    scheduler = pipeline.models.scheduler = CountingScheduler()
    scheduler.windows = 0  # (its constructor sets the default timesteps once)
    windows_at_first_frame = None
    streamed = []
    for frame in pipeline.stream(EXAMPLE, audio, **controls):
        if windows_at_first_frame is None:
            windows_at_first_frame = scheduler.windows
        streamed.append(frame)
    written = np.concatenate(written)
    assert len(streamed) == len(written) == 73 and scheduler.windows == 2
    assert streamed[0].shape == written.shape[1:] and streamed[0].dtype == np.uint8
    np.testing.assert_array_equal(np.stack(streamed), written)
    # the first frame came before the second window was sampled (with overlap that one is being made meanwhile)
    assert windows_at_first_frame == 1 or (overlap and windows_at_first_frame == 2)
    # the streamed motion equals the whole-clip official post-processing (full RTS smoothing at once)
    info = pipeline.models.renderer.info
    features = torch.randn(73, 512, generator=torch.Generator().manual_seed(1))
    ctl = replace(pipeline.controls, **controls)
    pieces = list(pipeline.motion_maker.pieces(info, features, ctl))
    assert len(pieces) >= 2
    raw = torch.cat([pipeline.models.norm.denormalize(x0[0]) for _, x0 in _windows(pipeline, info, features, ctl)])[
        :73
    ].float()
    want = raw.numpy() if ctl.smoothing == 0 else smooth_motion(raw.numpy(), 0.05, 0.001 * ctl.smoothing)
    want = torch.from_numpy(want)
    src = source_motion(info, LIVEPORTRAIT_LAYOUT)
    if ctl.head_motion_scale != 1:
        want[:, POSE] = src[POSE] + ctl.head_motion_scale * (want[:, POSE] - src[POSE])
    torch.testing.assert_close(torch.cat(pieces), want, rtol=0, atol=0)


def _windows(pipeline, info, features, ctl):
    models = pipeline.models
    norm = models.norm
    raw = source_motion(info, LIVEPORTRAIT_LAYOUT)
    ori = norm.canonical_token(info["kp"].reshape(63).float())
    generator = torch.Generator().manual_seed(int(ctl.seed))
    return motion_windows(
        models.denoiser,
        models.scheduler,
        features[None],
        norm.normalize(raw)[None],
        ori[None],
        steps=ctl.steps,
        generator=generator,
        progress=False,
    )


def test_presets_and_the_per_device_batch(tmp_path):
    """preset=fast: 10 DDIM steps and the device's fastest precision; command-line keys still win; batch by device."""
    from hydra import compose, initialize_config_dir

    from kdtalker.device import fastest_dtype
    from kdtalker.pipeline.controls import default_batch_size

    root = make_fake_checkpoints(tmp_path)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        official = compose("inference", overrides=[f"checkpoint_dir={root}", "device=cpu"])
        fast = compose("inference", overrides=[f"checkpoint_dir={root}", "device=cpu", "preset=fast"])
        mine = compose("inference", overrides=[f"checkpoint_dir={root}", "device=cpu", "preset=fast", "steps=20"])
    assert (official.steps, official.dtype, official.batch_size) == (50, "float32", None)
    assert (fast.steps, fast.dtype) == (10, "fastest") and "num_inference_steps" not in fast.diffusion  # one knob
    assert mine.steps == 20
    pipe = TalkingHeadPipeline.from_config(fast)
    assert pipe.controls.steps == 10 and pipe.dtype is fastest_dtype(torch.device("cpu"))
    assert pipe.controls.updated({}, pipe.device).batch_size == default_batch_size(torch.device("cpu")) == 1
    assert pipe.controls.updated({"batch_size": 3}, pipe.device).batch_size == 3
    assert default_batch_size(torch.device("cuda")) == 16


def test_the_sound_is_the_users_recording(pipeline, tmp_path):
    """The mp4 carries the input file's own audio (its rate and channels), cut to exactly the video's length."""
    mono, rate = sf.read(REPO / "examples" / "speech.wav", dtype="float32")
    clip = mono[8000 : 8000 + int(1.3 * rate)]
    stereo = np.stack([clip, 0.5 * clip], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, 44100)  # a 44.1 kHz stereo recording (its pitch does not matter)
    seconds = len(stereo) / 44100
    frames = int(seconds * 25)
    info = probe_video(pipeline.generate(EXAMPLE, tmp_path / "stereo.wav", tmp_path / "out.mp4"))
    assert info["frames"] == frames and (info["sample_rate"], info["channels"], info["audio_codec"]) == (
        44100,
        2,
        "aac",
    )
    assert abs(info["audio_duration"] - frames / 25) < 0.03  # cut to the video, not the recording's length


def test_save_motion_then_render_it_again(pipeline, tmp_path, monkeypatch):
    """save_motion writes what is rendered; motion_file renders it again (no audio model, no sampling): same frames."""
    import kdtalker.pipeline.video as video

    written = []
    original_write = video.VideoWriter.write
    monkeypatch.setattr(video.VideoWriter, "write", lambda self, f: (written.append(f.copy()), original_write(self, f)))
    audio = speech(tmp_path / "a.wav", 1.0)
    pipeline.generate(EXAMPLE, audio, tmp_path / "a.mp4", save_motion=tmp_path / "m.npz", motion_mode="relative")
    first = np.concatenate(written)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as saved:
        motion, x_d = saved["motion"], saved["x_d"]
        assert motion.shape == (25, 70) and x_d.shape == (25, 21, 3) and saved["source_kp"].shape == (1, 21, 3)
    info = pipeline.models.renderer.info
    want = driving_keypoints(info, torch.from_numpy(motion), mode="relative")
    np.testing.assert_array_equal(x_d, want.numpy())  # x_d is the composition of the saved motion

    written.clear()
    pipeline.models.denoiser = pipeline.models.audio = None  # neither may be used now
    pipeline.generate(EXAMPLE, None, tmp_path / "b.mp4", motion_file=tmp_path / "m.npz", motion_mode="relative")
    np.testing.assert_array_equal(np.concatenate(written), first)
    assert probe_video(tmp_path / "b.mp4")["audio_codec"] is None  # no sound given, none written
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []  # no temp files left


@pytest.mark.parametrize(
    "contents, message",
    [
        (dict(other=np.zeros((3, 70))), "no 'motion' array"),
        (dict(motion=np.zeros((3, 69))), r"must be \(frames, 70\)"),
        (dict(motion=np.full((3, 70), np.nan)), "finite"),
    ],
)
def test_bad_motion_files_are_one_clear_error(pipeline, tmp_path, contents, message):
    np.savez(tmp_path / "m.npz", **contents)
    with pytest.raises(ConfigError, match=message):
        pipeline.generate(EXAMPLE, None, tmp_path / "out.mp4", motion_file=tmp_path / "m.npz")
    assert not (tmp_path / "out.mp4").exists()
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable"):
        pipeline.generate(EXAMPLE, None, tmp_path / "out.mp4", motion_file=tmp_path / "junk.npz")
    with pytest.raises(ConfigError, match="driven_audio=PATH is required"):
        pipeline.generate(EXAMPLE, None, tmp_path / "out.mp4")


def test_stream_leaves_the_callers_grad_mode_alone(pipeline, tmp_path):
    """Between two frames the caller's own code runs with its own autograd state, not the pipeline's."""
    audio = speech(tmp_path / "a.wav", 0.3)
    modes = [(torch.is_grad_enabled(), torch.is_inference_mode_enabled()) for _ in pipeline.stream(EXAMPLE, audio)]
    assert modes and set(modes) == {(True, False)}
