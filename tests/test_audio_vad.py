"""Voice-activity detection (kdtalker.audio.vad) on real synthetic speech with known pauses, whole-file and streaming.

The recording tests/fixtures/speech_pauses/speech.flac is three espeak-ng sentences joined by pauses; speech.json
holds its speech intervals (how it was made: its `made_by`, scripts/benchmarks/vad.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kdtalker.audio import num_video_frames
from kdtalker.audio.vad import SILERO_HOP, WEBRTC_HOP, StreamingVad, hop_detector, speech_frames
from kdtalker.audio.windows import crop_length
from kdtalker.errors import AudioError, ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from benchmarks.vad import frame_truth, scores, with_noise  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "speech_pauses"
DETECTORS = [("silero", 0), ("webrtc", 2)]


@pytest.fixture(scope="module")
def recording() -> tuple[np.ndarray, list[tuple[int, int]]]:
    wav, rate = sf.read(FIXTURE / "speech.flac", dtype="float32")
    note = json.loads((FIXTURE / "speech.json").read_text())
    assert rate == note["sample_rate"] == 16000
    return wav, [tuple(s) for s in note["speech_intervals"]]


# Measured on this recording (README "Silence"): the bars sit just under each detector's own figures.
BARS = {
    # (detector, noise dB or None): (accuracy, speech frames found, pause frames found)
    ("silero", None): (0.93, 0.93, 0.95),
    ("silero", 20.0): (0.96, 0.97, 0.93),
    ("webrtc", None): (0.96, 1.0, 0.87),
    ("webrtc", 20.0): (0.95, 0.97, 0.89),
}


@pytest.mark.parametrize("detector, mode", DETECTORS)
@pytest.mark.parametrize("snr", [None, 20.0], ids=["clean", "20dB"])
def test_frames_follow_the_known_pauses(recording, detector, mode, snr):
    wav, spans = recording
    noisy = with_noise(wav, spans, snr, seed=1)
    flags = speech_frames(noisy, 25, detector, 0.5, mode)
    assert flags.dtype == bool and flags.shape == (num_video_frames(len(wav), 16000, 25),)
    truth = frame_truth(spans, len(flags), 25)
    accuracy, found, quiet = scores(flags, truth)
    bar = BARS[(detector, snr)]
    assert (accuracy, found, quiet) >= (bar[0], 0, 0) and found >= bar[1] and quiet >= bar[2], (accuracy, found, quiet)
    # Every pause is found: its frames further than 0.25 s from speech are all silent (after the first 0.1 s, where
    # WebRTC's noise estimate starts up), and the middle 40 % of each sentence is speech.
    centre = (np.arange(len(flags)) + 0.5) * 640
    near = centre < 1600
    for a, b in spans:
        near |= (centre >= a - 4000) & (centre < b + 4000)
        middle = (centre >= a + 0.3 * (b - a)) & (centre < b - 0.3 * (b - a))
        assert flags[middle].mean() >= 0.85  # silero hears espeak's digital silence between some words
    assert (~near).sum() >= 20 and not flags[~near].any()


@pytest.mark.parametrize("detector, mode", DETECTORS)
@pytest.mark.parametrize("fps", [25, 30])
def test_streaming_equals_the_whole_file_for_any_chunking(recording, detector, mode, fps):
    wav = with_noise(*recording, 20.0, seed=2)[: 4 * 16000 + 123]
    whole = speech_frames(wav, fps, detector, 0.5, mode)
    rng = np.random.default_rng(fps)
    for trial in range(3):
        stream = StreamingVad(detector, 0.5, mode, fps)
        pieces, at = [], 0
        while at < len(wav):
            size = int(rng.choice([0, 1, 100, 511, 640, 3000, 20000]))
            chunk = stream.push(wav[at : at + size])
            assert chunk.first == sum(len(p) for p in pieces)
            pieces.append(chunk.values)
            at += size
        pieces.append(stream.close().values)
        assert np.array_equal(np.concatenate(pieces), whole)


@pytest.mark.parametrize("detector, mode, hop", [("silero", 0, SILERO_HOP), ("webrtc", 3, WEBRTC_HOP)])
def test_a_frame_comes_out_once_its_last_hop_is_decided(recording, detector, mode, hop):
    wav = recording[0][:16000]
    stream = StreamingVad(detector, 0.5, mode, 25)
    out = 0
    for n in range(0, len(wav), 64):
        out = stream.push(wav[n : n + 64]).stop
        pushed = min(n + 64, len(wav))
        # frame i needs the hops covering its samples [640 i, 640 (i + 1)); a hop is decided once complete
        expected = 0
        while crop_length(expected + 1) <= pushed // hop * hop and expected < num_video_frames(pushed):
            expected += 1
        assert out == expected, pushed
    assert stream.close().stop == 25 and stream.frames_out == 25 and stream.samples_pushed == 16000


def test_silence_is_silent_and_short_audio_has_no_frames():
    for detector, mode in DETECTORS:
        assert not speech_frames(np.zeros(8000, np.float32), 25, detector, 0.5, mode).any()
        assert speech_frames(np.zeros(639, np.float32), 25, detector, 0.5, mode).shape == (0,)
    # thresholds at the ends: 0 calls every frame speech, a frame is never more than certain
    wav = np.zeros(3200, np.float32)
    assert speech_frames(wav, 25, "webrtc", 0.0, 0).all()


def test_bad_settings_and_bad_chunks_are_clear_errors():
    with pytest.raises(ConfigError, match=r"^silence.detector='loud' is not one of"):
        hop_detector("loud", 0)
    with pytest.raises(ConfigError, match=r"^silence.aggressiveness=4"):
        hop_detector("webrtc", 4)
    with pytest.raises(ConfigError, match=r"^silence.threshold=1.5"):
        StreamingVad("webrtc", 1.5, 0, 25)
    stream = StreamingVad("webrtc", 0.5, 0, 25)
    with pytest.raises(AudioError, match="float32"):
        stream.push(np.zeros(10, np.int16))
    with pytest.raises(AudioError, match="finite"):
        stream.push(np.array([0.0, np.nan], np.float32))
    stream.close()
    with pytest.raises(RuntimeError, match="after close"):
        stream.push(np.zeros(10, np.float32))


def test_a_missing_silero_package_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "silero_vad" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install silero-vad"):
        hop_detector("silero", 0)
