"""Live sessions (kdtalker/pipeline/live.py, kdtalker/diffusion/live.py) and scripts/live.py.

Most cases run on the fast doubles of test_pipeline_generate.py (a small random Denoiser and AudioEncoder, a
renderer double whose frames encode x_d); one case renders real frames through the CLI on fixture weights.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import signal
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_inference_e2e import short_speech
from test_pipeline_checkpoints import make_fake_checkpoints
from test_pipeline_generate import EXAMPLE, RandomSpeechFeatures, RecordingRenderer, pipeline, speech  # noqa: F401

from kdtalker.audio import load_audio
from kdtalker.diffusion import DDIMScheduler, Denoiser
from kdtalker.diffusion.live import LiveSampler
from kdtalker.diffusion.sampling import motion_windows
from kdtalker.diffusion.smoothing import StreamingSmoother
from kdtalker.errors import AudioError, ConfigError, KDTalkerError
from kdtalker.media import probe_video
from kdtalker.pipeline import TalkingHeadPipeline
from kdtalker.pipeline.live_run import pcm_chunks
from kdtalker.pipeline.models import Models
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

REPO = Path(__file__).resolve().parent.parent


class LinearEncoder(torch.nn.Module):
    """A cheap stand-in for the audio encoder where the features' values do not matter."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(80 * 16, 512)

    def encode_windows(self, windows):
        return self.proj(windows.flatten(1))


def _linear_audio(pipe) -> None:
    speech_features = RandomSpeechFeatures()
    speech_features.encoder = LinearEncoder().eval()
    pipe.models = Models(**{**pipe.models.__dict__, "audio": speech_features})


def _push_in_chunks(session, wav: np.ndarray, rng: np.random.RandomState, sizes=(0, 1, 7, 640, 3001, 20000)):
    pieces, i = [], 0
    while i < len(wav):
        n = int(rng.choice(sizes))
        pieces += session.push(wav[i : i + n])
        i += n
    return pieces + session.close()


@pytest.mark.parametrize("frames, hop", [(5, 8), (64, 16), (73, 8), (130, 7), (130, 64)])
def test_the_live_sampler_makes_the_offline_windows_bit_for_bit(frames, hop):
    """Feature rows pushed in random pieces give exactly motion_windows' frames (same noise and order), end included."""
    torch.manual_seed(0)
    model = Denoiser(width=64, depth=1, heads=2, head_dim=32, time_dim=32).eval()
    g = torch.Generator().manual_seed(frames)
    features, source, ori = torch.randn(frames, 512, generator=g), torch.randn(70, generator=g), torch.randn(70)
    offline = motion_windows(
        model, DDIMScheduler(), features[None], source[None], ori[None], steps=2, progress=False, hop=hop,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    want = torch.cat([x0[0] for _, x0 in offline])[:frames]
    sampler = LiveSampler(
        model, DDIMScheduler(), source, ori, steps=2, hop=hop, generator=torch.Generator().manual_seed(3), guidance=None
    )
    rng, got, i = np.random.RandomState(frames + hop), [], 0
    while i < frames:
        n = rng.randint(0, 20)
        got.append(sampler.push(features[i : i + n]))
        i += n
        assert sampler.buffered_rows <= 64 + 64 + 20  # the head kept for the end, the next window, one push
    got.append(sampler.close())
    assert torch.equal(torch.cat(got), want)
    assert sampler.windows_sampled == 1 + max(0, -(-(frames - 64) // hop))


def test_a_live_session_gives_the_offline_motion(pipeline, tmp_path):  # noqa: F811
    """pipeline.motion (offline, no rendering) and a live session of the same audio, in random chunkings: the same
    motion. Equal bit for bit when the audio encoder sees batches that give the same features; the encoder's batch
    of one window (1-sample pushes) moves a feature by float32 rounding (~5e-8), which reaches the motion as <1e-10."""
    audio = speech(tmp_path / "a.wav", 2.95)  # 73 frames: hop 8 -> 3 windows
    wav = load_audio(audio)
    for controls in ({}, {"head_motion_scale": 0.5, "control": {"pose": "still"}, "hop": 16, "smoothing": 0.0}):
        want = pipeline.motion(EXAMPLE, audio, **{"hop": 8, **controls})
        assert want.shape == (73, 70) and want.dtype == torch.float32
        for seed in range(2 if controls else 3):
            pieces = _push_in_chunks(pipeline.live(EXAMPLE, render=False, **controls), wav, np.random.RandomState(seed))
            got = torch.cat([p.motion for p in pieces])
            torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
            assert all(p.frames is None for p in pieces)
            assert [p.first for p in pieces] == list(np.cumsum([0] + [len(p) for p in pieces[:-1]]))
            np.testing.assert_array_equal(np.concatenate([p.times for p in pieces]), np.arange(73) / 25)
    # pushes of whole 40 ms frames (what a microphone hands over): equal as above (bit for bit on some machines and
    # thread counts, not on all: the encoder's batches of one frame round differently from the offline batches)
    session = pipeline.live(EXAMPLE, render=False)
    pieces = [p for i in range(0, len(wav), 640) for p in session.push(wav[i : i + 640])] + session.close()
    got = torch.cat([p.motion for p in pieces])
    torch.testing.assert_close(got, pipeline.motion(EXAMPLE, audio, hop=8), rtol=0, atol=1e-9)


def test_live_sessions_take_the_live_node_of_the_config(pipeline):  # noqa: F811
    assert pipeline.live_controls == {"hop": 8} and pipeline.controls.hop is None  # offline: the model's window
    assert pipeline.live(EXAMPLE, render=False).controls.hop == 8
    assert pipeline.live(EXAMPLE, render=False, hop=16).controls.hop == 16  # a keyword wins
    other = TalkingHeadPipeline.from_pretrained(pipeline.checkpoint_dir, "live.hop=32", device="cpu")
    assert other.live_controls == {"hop": 32}


def test_rendered_pieces_are_the_frames_stream_renders(pipeline, tmp_path):  # noqa: F811
    audio = speech(tmp_path / "a.wav", 1.0)
    streamed = np.stack(list(pipeline.stream(EXAMPLE, audio, hop=8)))
    session = pipeline.live(EXAMPLE)
    pieces = _push_in_chunks(session, load_audio(audio), np.random.RandomState(0))
    frames = np.concatenate([p.frames for p in pieces])
    assert frames.dtype == np.uint8 and frames.shape == (25, 512, 512, 3) and session.size == (512, 512)
    np.testing.assert_array_equal(frames, streamed)
    assert all(len(p.frames) == len(p.motion) <= pipeline.controls.batch_size for p in pieces)


def test_frames_come_a_hop_and_the_lags_after_their_audio(pipeline):  # noqa: F811
    """After the first window, each push of 40 ms brings frames whose audio ended at most mel look-ahead + hop +
    smoothing lag ago: 3 + (8 - 1) + 11 frames at 25 fps with the default hop 8."""
    _linear_audio(pipeline)  # when frames come does not depend on the features' values
    session = pipeline.live(EXAMPLE, render=False)
    wav = np.random.RandomState(0).uniform(-0.3, 0.3, 640 * 84).astype(np.float32)
    lag = StreamingSmoother(
        0.05, 0.001, enabled=True, layout=LIVEPORTRAIT_LAYOUT
    ).lag  # the official Kalman settings (inference.yaml)
    assert lag == 11
    worst = 0
    for i in range(84):  # the first window, and two more
        for piece in session.push(wav[640 * i : 640 * (i + 1)]):
            heard = i + 1  # frames of audio pushed
            assert heard - (piece.first + len(piece)) >= 3 + lag  # never before its mel window and smoother lag
            if piece.first:  # after the first window (which waits for 64 frames of audio)
                worst = max(worst, heard - (piece.first + 1))  # frames of audio past the first frame given out
    assert session.frames_out > 64
    # window k is sampled when its last row is final (3 frames of mel look-ahead); the smoother then gives out
    # up to lag frames before it, from the frame after the last one given at window k - 1, H frames earlier
    assert worst == 3 + 8 + lag - 1


def test_memory_stays_flat_over_minutes_of_speech(pipeline, monkeypatch):  # noqa: F811
    """Minutes of speech with render=False: every buffer stays bounded. The networks are stand-ins here (the
    test is about what the session keeps, not about the numbers): a linear audio encoder and a window sampler
    that returns its noise with the held frames in place."""
    import kdtalker.diffusion.live as live_module

    def held_noise(model, scheduler, x_T, ref, ori, audio, *, known=None, known_mask=None, **kwargs):
        return x_T if known is None else torch.where(known_mask, known, x_T)

    _linear_audio(pipeline)
    monkeypatch.setattr(live_module, "sample_window", held_noise)
    session = pipeline.live(EXAMPLE, render=False, hop=8)
    rng = np.random.RandomState(0)
    minute = rng.uniform(-0.3, 0.3, 16000 * 60).astype(np.float32)
    most = {}
    frames = 0
    for _ in range(4):
        for start in range(0, len(minute), 32000):
            for piece in session.push(minute[start : start + 32000]):
                frames += len(piece)
            for key, value in session.buffered.items():
                most[key] = max(most.get(key, 0), value)
    frames += sum(len(p) for p in session.close())
    assert frames == 6000
    # between 2 s pushes: < 1 frame + 800 samples, 15 mel frames, the head (64) + the next window's rows (< 64),
    # the smoother's lag + 1 rows
    assert most["samples"] < 640 + 800 and most["mel_frames"] <= 15
    assert most["feature_rows"] < 64 + 64 and most["smoother_rows"] <= 11 + 1


def test_bad_stream_input_is_one_error_and_the_session_goes_on(pipeline):  # noqa: F811
    session = pipeline.live(EXAMPLE, render=False)
    good = np.zeros(640 * 3, np.float32)
    cases = [
        (good.astype(np.float64), "float32"),
        (good.astype(np.int16), "float32"),
        (good.reshape(-1, 2), "1-D array of mono samples"),
        (np.array([0.0, np.nan], np.float32), "sample 1 of the chunk is nan"),
        (np.array([np.inf], np.float32), "sample 0 of the chunk is inf"),
        (torch.zeros(10), "numpy array, not a torch tensor"),
        ([0.0, 0.1], "got list"),
    ]
    for bad, message in cases:
        with pytest.raises(AudioError, match=message) as caught:
            session.push(bad)
        assert "\n" not in str(caught.value)
    session.push(good)
    assert sum(len(p) for p in session.close()) == 3
    with pytest.raises(KDTalkerError, match="push\\(\\) after close\\(\\)"):
        session.push(good)
    with pytest.raises(KDTalkerError, match="already closed"):
        session.close()
    for controls, message in [
        ({"keyframes": "loop"}, "keyframes need the clip's length"),
        ({"control": {"pose": "video"}}, "video signal"),
        ({"hop": 65}, "^hop=65"),
        ({"hop": 0}, "hop=0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            pipeline.live(EXAMPLE, render=False, **controls)


def test_a_closed_or_abandoned_session_holds_nothing(pipeline):  # noqa: F811
    threads = threading.active_count()
    wav = np.zeros(640 * 70, np.float32)
    with pipeline.live(EXAMPLE) as session:
        assert session.push(wav[: 640 * 20]) == []  # 17 final frames: no window yet
    assert session.closed
    assert session._sampler is None and session._speech is None and session._renderer is None
    abandoned = pipeline.live(EXAMPLE, render=False)
    assert sum(len(p) for p in abandoned.push(wav)) == 64 - 11  # 67 final frames: one window, less the smoothing lag
    gone = weakref.ref(abandoned._sampler)
    del abandoned
    gc.collect()
    assert gone() is None and threading.active_count() == threads
    with pytest.raises(RuntimeError, match="boom"), pipeline.live(EXAMPLE, render=False) as session:
        session.push(wav)
        raise RuntimeError("boom")
    assert session.closed and session._sampler is None


def test_pcm_on_stdin_is_read_as_soundfile_reads_it():
    samples = np.array([0, 1, -32768, 32767, 1000], np.int16)
    got = np.concatenate(list(pcm_chunks(io.BytesIO(samples.tobytes()), "s16le", 2)))
    np.testing.assert_array_equal(got, samples.astype(np.float32) / 32768)
    floats = np.array([0.5, -0.25, 1.0], np.float32)
    np.testing.assert_array_equal(np.concatenate(list(pcm_chunks(io.BytesIO(floats.tobytes()), "f32le", 8))), floats)
    with pytest.raises(AudioError, match="ended inside a sample"):
        list(pcm_chunks(io.BytesIO(b"\x00\x01\x02"), "s16le", 4))


def _live_script():
    spec = importlib.util.spec_from_file_location("live_script", REPO / "scripts" / "live.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_writes_the_video_and_the_motion(pipeline, tmp_path, monkeypatch, capsys):  # noqa: F811
    """scripts/live.py in process on the doubles: a 1 s wav -> a 25-frame mp4 with the speech, and the motion."""
    from kdtalker.cli import run
    from kdtalker.pipeline.config import LiveRunConfig

    models = pipeline.models
    monkeypatch.setattr(TalkingHeadPipeline, "load", lambda self: setattr(self, "models", models) or models)
    audio = speech(tmp_path / "a.wav", 1.0)
    root = pipeline.checkpoint_dir
    args = [f"source_image={EXAMPLE}", f"wav={audio}", f"checkpoint_dir={root}", "device=cpu", "steps=2"]
    run(_live_script().main, "live", LiveRunConfig, argv=[*args, f"out={tmp_path / 'o.mp4'}", "realtime=false",
        f"motion_out={tmp_path / 'm.npz'}"])  # fmt: skip
    info = probe_video(tmp_path / "o.mp4")
    assert info["frames"] == 25 and abs(info["audio_duration"] - 1.0) < 0.03
    saved = np.load(tmp_path / "m.npz")
    want = pipeline.motion(EXAMPLE, audio, hop=8)
    np.testing.assert_allclose(saved["motion"], want.numpy(), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(saved["times"], np.arange(25) / 25)
    assert "25 frames from 1.00 s of speech" in capsys.readouterr().out
    # the speech from stdin as s16le PCM, motion only
    pcm = (np.clip(load_audio(audio), -1, 1) * 32767).astype("<i2").tobytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm)))
    run(_live_script().main, "live", LiveRunConfig, argv=[*args[:1], *args[2:], "render=false",
        f"motion_out={tmp_path / 'stdin.npz'}"])  # fmt: skip
    assert np.load(tmp_path / "stdin.npz")["motion"].shape == (25, 70)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "ckpt", "m.npz", "o.mp4", "stdin.npz"]


def _cli(*overrides: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "live.py"), *overrides],
        input=stdin,
        capture_output=True,
        timeout=600,
        env={**__import__("os").environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"},
    )


def test_the_cli_refuses_bad_input_with_one_line(tmp_path, capsys):
    from kdtalker.cli import run
    from kdtalker.pipeline.config import LiveRunConfig

    main = _live_script().main
    root = make_fake_checkpoints(tmp_path / "ckpt")
    wav = speech(tmp_path / "a.wav", 0.5)
    base = [f"source_image={EXAMPLE}", f"checkpoint_dir={root}", "download=never"]
    cases = [
        ([f"wav={wav}"], "out=PATH.mp4 is required"),
        ([f"wav={wav}", f"out={tmp_path / 'o.avi'}"], "must be an .mp4 file"),
        ([f"wav={tmp_path / 'missing.wav'}", f"out={tmp_path / 'o.mp4'}"], "file not found"),
        ([f"wav={wav}", "render=false"], "render=false needs motion_out"),
        ([f"wav={wav}", f"out={tmp_path / 'o.mp4'}", f"driven_audio={wav}"], "driven_audio is an inference.py"),
        ([f"wav={wav}", f"out={tmp_path / 'o.mp4'}", "keyframes=loop"], "keyframes need the clip's length"),
        ([f"wav={wav}", f"out={tmp_path / 'no' / 'o.mp4'}"], "does not exist"),
        ([f"wav={wav}", f"out={tmp_path / 'o.mp4'}", "stdin_format=u8"], "stdin_format='u8' is not one of"),
        ([f"wav={wav}", f"out={tmp_path / 'o.mp4'}", "chunk_ms=0"], "chunk_ms must be > 0"),
        ([f"out={tmp_path / 'o.mp4'}", "live.hop=x"], "live.hop"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exited:
            run(main, "live", LiveRunConfig, argv=[*base, *extra])
        err = capsys.readouterr().err
        assert exited.value.code == 1 and err.startswith("error: ") and err.count("\n") == 1, (extra, err)
        assert message in err, (extra, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "ckpt"]


@pytest.mark.slow
def test_the_cli_renders_real_frames_on_fixture_weights(fixture_checkpoints, tmp_path):
    """The real networks on official-layout fixture files, as a program: f32le PCM on stdin -> an mp4 with one frame
    per 40 ms. One frame only: a full-size frame takes 5-30 s on a shared 2-core CPU (the 1 s wav runs above, on
    the doubles)."""
    wav = load_audio(short_speech(tmp_path / "a.wav", 0.04), fps=None)
    done = _cli(
        f"source_image={EXAMPLE}",
        f"checkpoint_dir={fixture_checkpoints}",
        "download=never",
        "device=cpu",
        "steps=2",
        f"out={tmp_path / 'o.mp4'}",
        "stdin_format=f32le",
        stdin=wav.astype("<f4").tobytes(),
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    info = probe_video(tmp_path / "o.mp4")
    assert info["frames"] == 1 and (info["width"], info["height"]) == (512, 512)
    assert abs(info["audio_duration"] - 0.04) < 0.03
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "o.mp4"]


def test_the_cli_help_shows_the_live_keys_first(capsys):
    from kdtalker.cli import run

    run(lambda cfg: None, "live", argv=["--help"])
    lines = capsys.readouterr().out.splitlines()
    settings = next(i for i, line in enumerate(lines) if line.startswith("Settings"))
    keys = [line.split()[0].split("=")[0] for line in lines[settings + 1 : settings + 5]]
    assert keys == ["wav", "stdin_format", "out", "render"], lines
    assert any(line.split()[0] == "live.hop=8" for line in lines if line.strip()), lines


@pytest.mark.parametrize("detector, mode", [("webrtc", "absolute"), ("silero", "relative")])
def test_silence_in_a_live_session_is_the_offline_silence(pipeline, tmp_path, detector, mode):  # noqa: F811
    """silence.detector on: the live session's lips ease in the pauses as offline, in random chunkings (the VAD and
    the pause weights are exact for any chunking; the motion as in the test above)."""
    _linear_audio(pipeline)  # the features' values do not matter here, and the real-size encoder is slow
    wav = load_audio(speech(tmp_path / "a.wav", 1.5))
    pause = np.zeros(int(0.8 * 16000), np.float32)  # 20 frames of silence between two stretches of speech
    audio = tmp_path / "pause.wav"
    sf.write(audio, np.concatenate([wav, pause, wav[:12000]]), 16000)
    wav = load_audio(audio)
    controls = {"hop": 8, "motion_mode": mode, "silence": {"detector": detector, "neutral": "closed"}}
    want = pipeline.motion(EXAMPLE, audio, **controls)
    plain = pipeline.motion(EXAMPLE, audio, hop=8, motion_mode=mode)
    eased = (want != plain).any(dim=1).numpy()
    assert eased[40:55].all() and not eased[:30].any()  # the pause is eased, the speech before it untouched
    session = pipeline.live(EXAMPLE, render=False, **controls)
    pieces = _push_in_chunks(session, wav, np.random.RandomState(0), sizes=(0, 1, 7, 640, 3001, 9000))
    torch.testing.assert_close(torch.cat([p.motion for p in pieces]), want, rtol=0, atol=1e-9)
    assert session.closed


def test_sigterm_mid_session_ends_the_cli_cleanly(tmp_path):
    """scripts/live.py reading PCM from a stdin that is still open, stopped by SIGTERM: one line, exit 143, and the
    partial video is removed (nothing at out=, its private folder gone; README "Live": out= is written whole).
    SIGINT takes the same path (kdtalker.cli; exit 130: tests/test_inference_e2e.py)."""
    import os
    import time

    root = make_fake_checkpoints(tmp_path / "ckpt")  # norm.npz and files that pass the checks; the models: doubles
    private = tmp_path / "tmp"
    private.mkdir()
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONWARNINGS="ignore", TMPDIR=str(private))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    out = tmp_path / "o.mp4"
    cmd = [sys.executable, str(REPO / "tests" / "live_cli_doubles.py"), f"source_image={EXAMPLE}", "download=never"]
    cmd += [f"checkpoint_dir={root}", "device=cpu", "steps=2", f"out={out}", "stdin_format=f32le"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    wav = load_audio(speech(tmp_path / "a.wav", 1.5)).astype("<f4").tobytes()
    proc.stdin.write(wav)  # 1.5 s: the session has made and written frames, and waits for more speech
    proc.stdin.flush()
    deadline = time.monotonic() + 120
    while not list(private.glob("kdtalker_live_*/speech.wav")) or not list(private.glob("kdtalker_video_*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1].decode()[-2000:]
        time.sleep(0.1)
    time.sleep(1.5)  # the session runs (the video writer and the speech file are open), pushing what was sent
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr.decode()[-2000:]
    assert stderr.decode() == "error: interrupted\n" and stdout == b""
    assert not out.exists() and list(private.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "ckpt", "tmp"]
