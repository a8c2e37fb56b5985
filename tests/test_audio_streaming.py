"""The incremental audio front end: any chunking gives the whole-file windows and features, frame count included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_audio_mel import speech_like

from kdtalker.audio import (
    AudioEncoder,
    SpeechFeatures,
    StreamingMelWindows,
    StreamingSpeechFeatures,
    audio_features,
    audio_windows,
    final_frames,
    lookahead_samples,
    num_video_frames,
    samples_needed,
)
from kdtalker.audio.checkpoint import load_audio_encoder
from kdtalker.audio.mel import preemphasis
from kdtalker.audio.windows import crop_length, window_starts
from kdtalker.errors import AudioError

# The mel projection is one BLAS product over the STFT frames computed together; other groupings move a mel value by
# a few float64 ulps, which can flip the float32 rounding of a window value by one ulp (2^-21 for |x| in [2, 4]).
WINDOW_ATOL = 2.0**-21
# The encoder sees other batch compositions than audio_features (reference README section 9: <= 4e-6 on CPU).
FEATURE_ATOL = 1e-5
FPS = [25.0, 30.0, 24.0, 12.5, 29.97, 60.0]


@pytest.fixture(scope="module")
def encoder(audio_ref) -> AudioEncoder:
    """The fixture weights of the conformance cases, loaded like wav2lip.pth."""
    return load_audio_encoder({"state_dict": audio_ref.weights("spec_wav2lip_audio_encoder.json")})


def random_chunks(wav: np.ndarray, rng: np.random.Generator, largest: int) -> list[np.ndarray]:
    """`wav` cut at random points: empty, 1-sample, small and up to `largest`-sample chunks."""
    chunks, pos = [], 0
    while pos < len(wav):
        size = int(rng.choice([0, 1, int(rng.integers(2, 200)), int(rng.integers(200, largest + 1))]))
        chunks.append(wav[pos : pos + size])
        pos += len(chunks[-1])
    return chunks


def run_stream(stream, chunks: list[np.ndarray]):
    """Push every chunk then close; check the pieces are contiguous and final_frames holds after each push."""
    pieces, pushed = [], 0
    for chunk in chunks:
        piece = stream.push(chunk)
        pushed += len(chunk)
        assert piece.first == (pieces[-1].stop if pieces else 0)
        assert stream.frames_out == final_frames(pushed, stream.fps) == piece.stop
        assert stream.samples_pushed == pushed
        pieces.append(piece)
    tail = stream.close()
    assert tail.first == (pieces[-1].stop if pieces else 0)
    return pieces + [tail]


def concat(pieces) -> np.ndarray | torch.Tensor:
    values = [p.values for p in pieces]
    return torch.cat(values) if isinstance(values[0], torch.Tensor) else np.concatenate(values)


def test_shared_steps_are_exact_across_chunks():
    """Pre-emphasis with the carried sample and window starts from a later frame: the whole-file values, bitwise."""
    wav = speech_like(0.5, 11)
    cuts = [0, 1, 2, 500, 501, 3000, len(wav)]
    parts = [preemphasis(wav[a:b], wav[a - 1] if a else None) for a, b in zip(cuts[:-1], cuts[1:])]
    np.testing.assert_array_equal(np.concatenate(parts), preemphasis(wav))
    for fps in FPS:
        np.testing.assert_array_equal(window_starts(40, fps, first=1000), window_starts(1040, fps)[1000:])


@pytest.mark.parametrize("fps", FPS)
@pytest.mark.parametrize("seconds, seed", [(2.34, 0), (3.07, 1)])
def test_windows_match_whole_file_for_random_chunks(fps, seconds, seed):
    wav = speech_like(seconds, seed)
    windows = concat(run_stream(StreamingMelWindows(fps), random_chunks(wav, np.random.default_rng(seed), 4000)))
    expected = audio_windows(wav, fps)
    assert windows.shape == expected.shape == (num_video_frames(len(wav), fps=fps), 80, 16)
    assert windows.dtype == np.float32
    np.testing.assert_allclose(windows, expected, rtol=0, atol=WINDOW_ATOL)


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_one_sample_chunks_and_each_frame_at_its_latency(fps):
    wav = speech_like(0.3, 2)  # 4800 samples: 7 frames at 25 fps, 9 at 30 fps
    stream, got = StreamingMelWindows(fps), {}
    for n in range(1, len(wav) + 1):
        piece = stream.push(wav[n - 1 : n])
        for k in range(len(piece.values)):
            assert samples_needed(piece.first + k, fps) == n  # handed out exactly when it becomes final
            got[piece.first + k] = piece.values[k]
    tail = stream.close()
    for k in range(len(tail.values)):
        got[tail.first + k] = tail.values[k]
    expected = audio_windows(wav, fps)
    assert sorted(got) == list(range(len(expected)))
    np.testing.assert_allclose(np.stack([got[i] for i in range(len(expected))]), expected, rtol=0, atol=WINDOW_ATOL)


def test_huge_chunks():
    wav = speech_like(12.3, 3)
    whole = concat(run_stream(StreamingMelWindows(25.0), [wav]))
    halves = concat(run_stream(StreamingMelWindows(25.0), [wav[:100_001], wav[100_001:]]))
    expected = audio_windows(wav, 25.0)
    assert len(whole) == len(halves) == len(expected) == 307
    np.testing.assert_allclose(whole, expected, rtol=0, atol=WINDOW_ATOL)
    np.testing.assert_allclose(halves, expected, rtol=0, atol=WINDOW_ATOL)


def test_final_frames_do_not_depend_on_what_follows():
    """A frame handed out after n samples equals the whole-file window whether the clip ends there or goes on."""
    rng = np.random.default_rng(4)
    wav = speech_like(2.0, 4)
    for n in rng.integers(2560, len(wav), 5):
        stream = StreamingMelWindows(25.0)
        out = stream.push(wav[:n]).values
        assert len(out) == final_frames(int(n), 25.0) == num_video_frames(int(n)) - 3
        louder = np.concatenate([wav[:n], np.ones(3000, np.float32)])
        for clip in (wav[:n], louder):
            np.testing.assert_allclose(out, audio_windows(clip)[: len(out)], rtol=0, atol=WINDOW_ATOL)


def test_latency_at_25_fps_is_three_frames():
    for i in range(300):
        assert samples_needed(i, 25.0) == 640 * (i + 4)  # the frame's own 640 samples + 1920 of look-ahead
        assert lookahead_samples(i, 25.0) == 1920
    assert final_frames(640 * 4 - 1, 25.0) == 0 and final_frames(640 * 4, 25.0) == 1


@pytest.mark.parametrize("fps", [*FPS, 1.0, 100.0])
def test_samples_needed_is_the_first_final_sample_count(fps):
    for i in [0, 1, 2, 3, 7, 50, 333]:
        n = samples_needed(i, fps)
        assert final_frames(n, fps) > i >= final_frames(n - 1, fps)
        assert lookahead_samples(i, fps) == n - crop_length(i + 1, fps=fps) >= 0  # never before its own audio


@pytest.mark.parametrize("fps", [25.0, 29.97])
def test_features_match_audio_features(encoder, fps):
    wav = speech_like(1.7, 5)
    # Few encoder calls (the windows tests cover fine chunking): 1-sample, empty, odd and large chunks.
    cuts = [0, 1, 1, 5000, 5001, 17001, len(wav)]
    stream = StreamingSpeechFeatures(encoder, fps, batch_size=8)
    feats = concat(run_stream(stream, [wav[a:b] for a, b in zip(cuts[:-1], cuts[1:])]))
    expected = audio_features(wav, encoder, fps=fps, batch_size=256)
    assert feats.shape == expected.shape == (num_video_frames(len(wav), fps=fps), 512)
    assert feats.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(feats, expected, rtol=0, atol=FEATURE_ATOL)


def test_speech_features_stream(audio_ref, tmp_path):
    path = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": audio_ref.weights("spec_wav2lip_audio_encoder.json")}, path)
    speech = SpeechFeatures(path, batch_size=16, device="cpu")
    wav = speech_like(1.0, 6)
    stream = speech.stream(fps=25.0)
    assert stream.encoder is speech.encoder and stream.batch_size == 16
    feats = concat(run_stream(stream, [wav[:7000], wav[7000:]]))
    torch.testing.assert_close(feats, speech(wav, fps=25.0), rtol=0, atol=FEATURE_ATOL)


def test_random_weight_encoder_in_float64():
    torch.manual_seed(7)
    enc = AudioEncoder().eval().double()
    wav = speech_like(0.8, 7)
    feats = concat(run_stream(StreamingSpeechFeatures(enc, 25.0, batch_size=4), [wav[:3333], wav[3333:]]))
    assert feats.dtype == torch.float64 and feats.shape == (20, 512)
    torch.testing.assert_close(feats, audio_features(wav, enc, fps=25, batch_size=256), rtol=0, atol=1e-10)


def test_empty_pushes_change_nothing(encoder):
    wav = speech_like(0.5, 8)
    stream = StreamingSpeechFeatures(encoder, 25.0, batch_size=8)
    empty = stream.push(np.zeros(0, np.float32))
    assert empty.first == 0 and empty.values.shape == (0, 512) and empty.values.dtype == torch.float32
    pieces = [stream.push(wav[:4000]), stream.push(wav[4000:4000]), stream.push(wav[4000:]), stream.close()]
    assert pieces[1].first == pieces[0].stop and len(pieces[1].values) == 0
    torch.testing.assert_close(
        concat(pieces), audio_features(wav, encoder, fps=25, batch_size=256), rtol=0, atol=FEATURE_ATOL
    )


def test_close_without_a_whole_frame(encoder):
    empty = StreamingMelWindows(25.0).close()
    assert empty.first == 0 and empty.values.shape == (0, 80, 16)
    assert StreamingSpeechFeatures(encoder, 25.0, batch_size=8).close().values.shape == (0, 512)
    stream = StreamingMelWindows(25.0)
    assert len(stream.push(np.zeros(639, np.float32)).values) == 0
    assert len(stream.close().values) == 0  # the whole-file call raises instead: a file that short is a mistake
    with pytest.raises(AudioError, match="shorter than one video frame"):
        audio_windows(np.zeros(639, np.float32))
    one = StreamingMelWindows(25.0)
    one.push(np.full(640, 0.1, np.float32))
    np.testing.assert_array_equal(one.close().values, audio_windows(np.full(640, 0.1, np.float32)))


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 100), np.float32), "1-D array of mono samples"),
        (np.array([0.1, np.nan], np.float32), "sample 1 of the chunk is nan"),
        (np.array([np.inf], np.float32), "finite samples only"),
        (np.zeros(10, np.int16), "float32 samples.*int16"),
        (np.zeros(10, np.float64), "float32 samples.*float64"),
        (np.array(0.5, np.float32), "1-D array"),
        ([0.0, 0.1], "numpy float32 array.*list"),
        (torch.zeros(10), "not a torch tensor"),
    ],
)
def test_wrong_input_is_one_audio_error_and_leaves_the_stream_intact(bad, match):
    wav = speech_like(0.6, 9)
    stream = StreamingMelWindows(25.0)
    first = stream.push(wav[:5000])
    with pytest.raises(AudioError, match=match):
        stream.push(bad)
    windows = concat([first, stream.push(wav[5000:]), stream.close()])
    np.testing.assert_allclose(windows, audio_windows(wav), rtol=0, atol=WINDOW_ATOL)


def test_use_after_close_and_bad_settings(encoder):
    stream = StreamingMelWindows(25.0)
    stream.close()
    with pytest.raises(RuntimeError, match="after close"):
        stream.push(np.zeros(10, np.float32))
    with pytest.raises(RuntimeError, match="already"):
        stream.close()
    for fps in (0, -25.0, float("nan"), float("inf"), "25"):
        with pytest.raises(ValueError, match="fps"):
            StreamingMelWindows(fps)
    with pytest.raises(ValueError, match="batch_size"):
        StreamingSpeechFeatures(encoder, 25.0, batch_size=0)
    with pytest.raises(ValueError, match="eval mode"):
        StreamingSpeechFeatures(AudioEncoder(), 25.0, batch_size=8)


@pytest.mark.parametrize("fps", [25.0, 1.0])
def test_memory_does_not_grow_with_the_stream(fps):
    rng = np.random.default_rng(10)
    stream = StreamingMelWindows(fps)
    sample_bound = 16000 / fps + 800
    mel_bound = max(15, 160 / fps)
    for _ in range(3000):
        stream.push((0.1 * rng.standard_normal(int(rng.integers(0, 700)))).astype(np.float32))
        assert stream.buffered_samples <= sample_bound and stream.buffered_mel_frames <= mel_bound
    assert stream.samples_pushed > 900_000  # about a minute of audio
    tail = stream.close()
    assert tail.first == stream.frames_out - len(tail.values) and stream.frames_out == num_video_frames(
        stream.samples_pushed, fps=fps
    )
