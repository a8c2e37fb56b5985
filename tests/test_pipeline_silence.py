"""Silence: the lips ease to a neutral mouth in the speech's pauses (kdtalker.pipeline.silence), through the pipeline.

In-process runs use the test doubles of test_pipeline_generate.py; one run of inference.py on fixture weights
checks the `silence.*` overrides end to end.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import MISSING, fields, replace

import numpy as np
import pytest
import soundfile as sf
import torch
from test_inference_e2e import run_inference
from test_pipeline_generate import EXAMPLE, REPO, pipeline  # noqa: F401 - pipeline is a fixture

from kdtalker.audio.vad import StreamingVad, speech_frames
from kdtalker.errors import ConfigError
from kdtalker.media import probe_video
from kdtalker.pipeline import TalkingHeadPipeline
from kdtalker.pipeline.build import default_controls
from kdtalker.pipeline.job import read_speech
from kdtalker.pipeline.motion import source_motion
from kdtalker.pipeline.silence import (
    LIP_CHANNELS,
    Silence,
    StreamingPauseWeights,
    lip_open_direction,
    mouth_opening,
    neutral_lips,
    pause_weights,
    quiet_lips,
)
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

OTHER = [c for c in range(70) if c not in LIP_CHANNELS]


def silence(**changes) -> Silence:
    return replace(default_controls().silence, **{"detector": "webrtc", **changes})


def test_pause_weights_ramp_inside_the_pause_by_a_raised_cosine():
    speech = np.array([1] * 5 + [0] * 20 + [1] * 5, bool)
    w = pause_weights(speech, 5, 4)
    assert np.array_equal(w[speech], np.ones(10))
    ramp = [0.5 * (1 + math.cos(math.pi * d / 5)) for d in (1, 2, 3, 4)]
    np.testing.assert_allclose(w[5:9], ramp, rtol=0, atol=1e-15)
    np.testing.assert_allclose(w[21:25], ramp[::-1], rtol=0, atol=1e-15)
    assert np.array_equal(w[9:21], np.zeros(12))
    assert np.all(np.diff(w[4:10]) < 0)  # 1, four steps down, 0
    # a pause shorter than min_pause keeps its lips; one too short for two ramps only dips
    assert np.array_equal(pause_weights(speech, 21, 4), np.ones(30))
    short = pause_weights(np.array([1, 0, 0, 0, 1], bool), 1, 4)
    assert short[0] == short[4] == 1 and 0 < short[2] < short[1] < 1 and short[1] == short[3]
    # no speech before / after: no ramp on that side; no ramp at all: a step
    edges = pause_weights(np.array([0, 0, 0, 1, 1, 0, 0, 0], bool), 1, 1)
    np.testing.assert_allclose(edges, [0, 0, 0.5, 1, 1, 0.5, 0, 0], rtol=0, atol=1e-15)
    assert np.array_equal(pause_weights(speech, 5, 0), speech.astype(float))
    assert np.array_equal(pause_weights(np.zeros(4, bool), 2, 3), np.zeros(4))


def lip_motion(num: int, seed: int) -> torch.Tensor:
    """Raw motion (num, 70) float32 whose mouth opens and closes (opening up to ~0.03) over random other channels."""
    g = torch.Generator().manual_seed(seed)
    # every channel a slow wave (periods 1.3 - 4 s at 25 fps) of random phase and size: motion that moves smoothly
    t = torch.arange(num, dtype=torch.float32)[:, None]
    period, phase = 32 + 68 * torch.rand(70, generator=g), 2 * math.pi * torch.rand(70, generator=g)
    motion = 0.02 * torch.randn(70, generator=g) * torch.sin(2 * math.pi * t / period + phase)
    phase = torch.linspace(0, 12 * math.pi, num)
    opening = 0.015 * (1 + torch.sin(phase))
    motion[:, LIP_CHANNELS] += opening[:, None] * lip_open_direction().float()[None]
    return motion


@pytest.mark.parametrize("neutral", ["source", "closed"])
def test_pauses_hold_the_neutral_mouth_and_speech_is_untouched(neutral):
    fps, ramp = 25, 0.2
    speech = np.zeros(150, bool)
    speech[10:50] = speech[80:120] = True
    speech[30:33] = False  # a 0.12 s gap between words: below min_pause, the lips move on
    motion = lip_motion(150, 0)
    source = lip_motion(1, 1)[0]
    settings = silence(neutral=neutral, ramp=ramp, min_pause=0.2)
    out = torch.cat(list(quiet_lips(iter([motion]), speech, source, settings, fps, relative=False)))
    w = pause_weights(speech, 5, 5)
    kept = w == 1
    assert torch.equal(out[kept], motion[kept])  # speech (and the short gap): bit for bit
    assert torch.equal(out[:, OTHER], motion[:, OTHER])  # pose, eyes, the rest of the face: everywhere
    deep = w == 0
    assert deep.sum() == 5 + 20 + 25  # the clip's start (no ramp back from it), the middle of the pause, its end
    opening = mouth_opening(out)
    if neutral == "closed":
        assert float(mouth_opening(source)) > 0.01  # this source's mouth is open ...
        assert opening[deep].abs().max() <= 1e-9  # ... and closed in the pauses (float32 rounding)
    else:
        torch.testing.assert_close(out[deep][:, LIP_CHANNELS], source[LIP_CHANNELS].expand(50, -1), rtol=0, atol=0)
    assert float(mouth_opening(motion)[deep].max()) > 0.02  # the sampled mouth was wide open there
    # no snap: along a ramp the lips move by at most the raised cosine's steepest step of their distance to neutral
    target = neutral_lips(source, neutral).float()
    step = (out[1:, LIP_CHANNELS] - out[:-1, LIP_CHANNELS]).abs()
    free = (motion[1:, LIP_CHANNELS] - motion[:-1, LIP_CHANNELS]).abs()
    gap = torch.maximum(motion[1:, LIP_CHANNELS] - target, motion[:-1, LIP_CHANNELS] - target).abs().max(1).values
    bound = free.max(1).values + math.sin(math.pi / 12) * gap  # |dw| <= sin(pi / (2 (R + 1))) with R = 5
    assert torch.all(step.max(1).values <= bound + 1e-7)


def test_the_pieces_do_not_change_the_easing():
    speech = np.r_[np.ones(40), np.zeros(30), np.ones(30)].astype(bool)
    motion, source = lip_motion(100, 2), lip_motion(1, 3)[0]
    settings = silence(neutral="closed")
    whole = torch.cat(list(quiet_lips(iter([motion]), speech, source, settings, 25, relative=False)))
    pieces = [motion[:7], motion[7:45], motion[45:46], motion[46:]]
    assert torch.equal(torch.cat(list(quiet_lips(iter(pieces), speech, source, settings, 25, False))), whole)


def test_closed_removes_only_the_opening():
    v = lip_open_direction()
    assert v.shape == (18,) and abs(float(v.norm()) - 1) < 1e-12
    # keypoint 19's y channel leads the direction (LivePortrait's lip open edit)
    assert LIP_CHANNELS[int(v.abs().argmax())] == 7 + 3 * 19 + 1
    source = lip_motion(1, 4)[0].double()
    lips = source[LIP_CHANNELS]
    closed = neutral_lips(source, "closed")
    assert float(closed @ v) == pytest.approx(0, abs=1e-15)
    rest = lips - (lips @ v) * v
    torch.testing.assert_close(closed, rest, rtol=0, atol=1e-15)
    shut = source.clone()
    shut[LIP_CHANNELS] = rest - 0.01 * v  # closed further than canonical: kept
    torch.testing.assert_close(neutral_lips(shut, "closed"), shut[LIP_CHANNELS], rtol=0, atol=0)
    assert torch.equal(neutral_lips(source, "source"), lips)


def test_relative_motion_keeps_frame_0_and_renders_the_neutral_in_pauses():
    speech = np.r_[np.zeros(20), np.ones(20), np.zeros(30)].astype(bool)
    motion, source = lip_motion(70, 5).double(), lip_motion(1, 6)[0].double()
    settings = silence(neutral="closed", ramp=0.08)
    out = torch.cat(list(quiet_lips(iter([motion[:30], motion[30:]]), speech, source, settings, 25, relative=True)))
    assert torch.equal(out[0], motion[0])  # the reference of relative motion
    rendered = source[LIP_CHANNELS] + (out[:, LIP_CHANNELS] - out[0, LIP_CHANNELS])  # compose.py's relative exp
    deep = pause_weights(np.r_[True, speech[1:]], 5, 2) == 0
    assert deep[5:18].all() and deep[45:].all()
    target = neutral_lips(source, "closed").expand(int(deep.sum()), -1)
    torch.testing.assert_close(rendered[deep], target, rtol=0, atol=1e-15)


def test_the_silence_settings():
    ctl = default_controls()
    assert ctl.silence.detector == "none" and not ctl.silence.enabled  # official: no detector
    # every default lives in the YAML: neither the settings nor the functions they drive declare one
    assert all(f.default is MISSING and f.default_factory is MISSING for f in fields(Silence))
    for function in (StreamingVad, speech_frames, quiet_lips, pause_weights):
        assert all(p.default is p.empty for p in inspect.signature(function).parameters.values()), function
    assert default_controls(silence={"detector": "silero"}).silence.enabled
    cpu = torch.device("cpu")
    assert ctl.updated({"silence": {"neutral": "closed", "ramp": 0.5}}, cpu).silence == replace(
        ctl.silence, neutral="closed", ramp=0.5
    )
    bad = [
        ({"detector": "loud"}, r"^silence.detector='loud' is not one of"),
        ({"neutral": "smile"}, r"^silence.neutral="),
        ({"threshold": 2}, r"^silence.threshold="),
        ({"ramp": -1}, r"^silence.ramp="),
        ({"min_pause": float("nan")}, r"^silence.min_pause="),
        ({"aggressiveness": 5}, r"^silence.aggressiveness="),
        ({"rampe": 1}, r"^unknown silence key"),
    ]
    for changes, message in bad:
        with pytest.raises(ConfigError, match=message):
            ctl.updated({"silence": changes}, cpu)


def speech_then_pause(path, speech_s: float, pause_s: float, tail_s: float = 0.0):
    wav, rate = sf.read(REPO / "examples" / "speech.wav", dtype="float32")
    talk = wav[int(0.5 * rate) : int((0.5 + speech_s) * rate)]
    tail = wav[int(1.5 * rate) : int((1.5 + tail_s) * rate)]
    sf.write(path, np.concatenate([talk, np.zeros(int(pause_s * rate), np.float32), tail]), rate)
    return path


def test_generate_eases_the_lips_in_pauses_and_keeps_the_rest(pipeline, tmp_path):  # noqa: F811
    audio = speech_then_pause(tmp_path / "a.wav", 1.0, 1.2, 0.8)
    plain, quiet = tmp_path / "plain.npz", tmp_path / "quiet.npz"
    pipeline.generate(EXAMPLE, audio, tmp_path / "a.mp4", save_motion=plain)
    out = pipeline.generate(
        EXAMPLE, audio, tmp_path / "b.mp4", save_motion=quiet, silence={"detector": "webrtc", "neutral": "source"}
    )
    assert probe_video(out)["frames"] == 75
    a, b = np.load(plain)["motion"], np.load(quiet)["motion"]
    source = source_motion(pipeline.models.renderer.info, LIVEPORTRAIT_LAYOUT).numpy()
    wav, _ = read_speech(audio, 25)
    w = pause_weights(speech_frames(wav, 25, "webrtc", 0.5, 2), 5, 5)  # the YAML's 0.2 s and 0.2 s at 25 fps
    assert (w == 0).sum() >= 15 and (w[30:52] < 1).all()  # the 1.2 s pause (frames 25..54) is found
    assert np.array_equal(a[w == 1], b[w == 1])  # speech: bit for bit
    assert np.array_equal(a[:, OTHER], b[:, OTHER])  # everything but the lips: bit for bit
    assert np.array_equal(b[w == 0][:, LIP_CHANNELS], np.broadcast_to(source[LIP_CHANNELS], ((w == 0).sum(), 18)))
    assert not np.allclose(a[w == 0][:, LIP_CHANNELS], source[LIP_CHANNELS])


def test_lips_from_a_driving_video_are_not_eased(pipeline, tmp_path, monkeypatch):  # noqa: F811
    import kdtalker.pipeline.pipeline as pipeline_module

    called = []
    monkeypatch.setattr(pipeline_module, "speech_frames", lambda *a: called.append(a))
    audio = speech_then_pause(tmp_path / "a.wav", 0.2, 0.2)
    pipeline.generate(EXAMPLE, audio, tmp_path / "a.mp4", silence={"detector": "webrtc"}, control={"pose": "still"})
    assert len(called) == 1  # lips from the audio: detected
    pipeline.generate(EXAMPLE, audio, tmp_path / "b.mp4")
    assert len(called) == 1  # detector none: not run


@pytest.mark.slow
def test_inference_overrides_turn_silence_on(fixture_checkpoints, tmp_path):
    # 1 frame of digital silence, then 1 of speech (rendering costs ~12 s a frame here): with no ramp and no minimum
    # pause the first frame renders the closed mouth, the second its sampled lips.
    wav, rate = sf.read(REPO / "examples" / "speech.wav", dtype="float32")
    audio = tmp_path / "a.wav"
    sf.write(
        audio,
        np.concatenate([np.zeros(int(0.04 * rate), np.float32), wav[int(0.8 * rate) :][: int(0.04 * rate)]]),
        rate,
    )
    motion, video = tmp_path / "m.npz", tmp_path / "v.mp4"
    common = [f"source_image={EXAMPLE}", f"driven_audio={audio}", f"checkpoint_dir={fixture_checkpoints}"]
    result = run_inference(
        *common,
        "steps=2",
        "device=cpu",
        "download=never",
        f"output={video}",
        f"save_motion={motion}",
        "silence.detector=silero",
        "silence.ramp=0",
        "silence.min_pause=0",
        "silence.neutral=closed",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = np.load(motion)
    lips = saved["motion"][:, LIP_CHANNELS]
    source = np.zeros(70, np.float32)
    source[7:] = saved["source_exp"].reshape(63)
    closed = neutral_lips(torch.from_numpy(source), "closed").numpy()
    assert probe_video(video)["frames"] == 2
    np.testing.assert_allclose(lips[0], closed, rtol=0, atol=1e-7)
    assert not np.allclose(lips[1:], closed, rtol=0, atol=1e-4)
    # the same overrides in process (what inference.py composes): a wrong value is one ConfigError before any work
    with pytest.raises(ConfigError, match=r"^silence.detector='loud' is not one of"):
        TalkingHeadPipeline.from_pretrained(fixture_checkpoints, "silence.detector=loud", device="cpu")


@pytest.mark.parametrize("min_pause, ramp, reference", [(5, 5, False), (1, 3, True), (8, 2, False), (0, 0, False)])
def test_streaming_pause_weights_are_the_whole_clips_for_any_chunking(min_pause, ramp, reference):
    """Flags in random pieces -> exactly pause_weights of the whole clip, each weight `lookahead` frames late."""
    rng = np.random.default_rng(min_pause * 10 + ramp)
    for trial in range(20):
        runs = rng.integers(1, 15, size=12)  # alternating speech / pause runs, either first
        flags = np.concatenate([np.full(n, (k + trial) % 2 == 0) for k, n in enumerate(runs)])
        want_flags = flags.copy()
        if reference:
            want_flags[0] = True
        want = pause_weights(want_flags, min_pause, ramp)
        stream, got, i = StreamingPauseWeights(min_pause, ramp, reference), [], 0
        while i < len(flags):
            n = min(int(rng.integers(0, 9)), len(flags) - i)
            got.append(stream.push(flags[i : i + n]))
            i += n
            assert stream.frames_out == max(0, i - stream.lookahead)  # each weight once its look-ahead came
        got.append(stream.close())
        np.testing.assert_array_equal(np.concatenate(got), want)


def test_streaming_pause_weights_hold_a_bounded_buffer_in_an_endless_pause():
    stream = StreamingPauseWeights(5, 5, False)
    flags = np.concatenate([np.ones(3, bool), np.zeros(25 * 400, bool), np.ones(4, bool)])  # 400 s of silence
    got = [stream.push(flags[:3])]
    for i in range(3, len(flags), 25):
        got.append(stream.push(flags[i : i + 25]))
        assert stream.buffered <= 2 * (stream.lookahead + stream.min_pause + 1)
    np.testing.assert_array_equal(np.concatenate([*got, stream.close()]), pause_weights(flags, 5, 5))
