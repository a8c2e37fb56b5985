"""load_audio: every common format, any rate, any channel count, and one clear AudioError for bad input."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import imageio_ffmpeg
import librosa
import numpy as np
import pytest
import soundfile as sf

from kdtalker.audio import load_audio, wav2lip_mel
from kdtalker.audio.io import StreamingResampler, _decode_ffmpeg, _decode_soundfile, resample
from kdtalker.errors import AudioError

TONE_HZ = 440.0


def tone(rate: int, seconds: float = 0.5, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    """(N, C) float32: a 440 Hz tone, each channel at a different level so the mono mix is checkable."""
    t = np.arange(int(rate * seconds)) / rate
    x = amplitude * np.sin(2 * np.pi * TONE_HZ * t)
    return np.stack([x * (1.0 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def peak_hz(wav: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.fft.rfftfreq(len(wav), 1.0 / rate)[np.argmax(spectrum)])


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def source_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "tone.wav"
    sf.write(path, tone(44100, channels=2), 44100, subtype="PCM_16")
    return path


@pytest.mark.parametrize(
    "ext, subtype", [("wav", "PCM_16"), ("wav", "PCM_24"), ("wav", "FLOAT"), ("flac", "PCM_16"), ("ogg", "VORBIS")]
)
def test_soundfile_formats_match_librosa(ext, subtype, tmp_path):
    path = tmp_path / f"speech.{ext}"
    sf.write(path, tone(22050, channels=2), 22050, subtype=subtype)
    wav = load_audio(path)
    expected, _ = librosa.load(path, sr=16000)
    np.testing.assert_array_equal(wav, expected)
    assert wav.dtype == np.float32 and len(wav) == math.ceil(len(tone(22050)) * 16000 / 22050)
    assert abs(peak_hz(wav) - TONE_HZ) < 3


@pytest.mark.parametrize("ext, codec", [("mp3", "libmp3lame"), ("m4a", "aac")])
def test_compressed_formats(ext, codec, source_wav, tmp_path):
    path = tmp_path / f"speech.{ext}"
    ffmpeg("-i", str(source_wav), "-c:a", codec, "-b:a", "128k", str(path))
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    # lossy codecs may add a frame of priming/padding samples; the content must survive
    assert abs(len(wav) - 8000) <= 1200
    assert abs(peak_hz(wav) - TONE_HZ) < 3
    mono_level = 0.5 * (1.0 + 0.8) / 2 / math.sqrt(2)  # RMS of the mixed 440 Hz tone
    assert abs(np.sqrt(np.mean(wav[1000:7000] ** 2)) - mono_level) < 0.02


def test_mp3_follows_librosa_when_libsndfile_reads_it(source_wav, tmp_path):
    path = tmp_path / "speech.mp3"
    ffmpeg("-i", str(source_wav), "-c:a", "libmp3lame", str(path))
    if _decode_soundfile(path) is None:  # libsndfile without MP3: load_audio decodes through ffmpeg instead
        assert len(load_audio(path)) > 0
    else:
        np.testing.assert_array_equal(load_audio(path), librosa.load(path, sr=16000)[0])


def test_ffmpeg_decode_is_lossless_for_pcm(source_wav):
    via_ffmpeg, rate_ffmpeg = _decode_ffmpeg(source_wav)
    via_sf, rate_sf = _decode_soundfile(source_wav)
    assert rate_ffmpeg == rate_sf == 44100
    np.testing.assert_array_equal(via_ffmpeg, via_sf)


def test_video_soundtrack(source_wav, tmp_path):
    path = tmp_path / "talk.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:s=64x64:r=25:d=0.5",
        "-i",
        str(source_wav),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(path),
    )
    wav = load_audio(path)
    assert abs(peak_hz(wav) - TONE_HZ) < 3 and len(wav) >= 640


def test_video_without_audio(tmp_path):
    path = tmp_path / "silent_film.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=64x64:r=25:d=0.2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    with pytest.raises(AudioError, match="no audio track") as err:
        load_audio(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_sample_rates(rate, tmp_path):
    path = tmp_path / f"r{rate}.wav"
    sf.write(path, tone(rate, seconds=0.3), rate, subtype="PCM_16")
    wav = load_audio(path)
    np.testing.assert_array_equal(wav, librosa.load(path, sr=16000)[0])
    assert len(wav) == math.ceil(int(rate * 0.3) * 16000 / rate)
    assert abs(peak_hz(wav) - TONE_HZ) < 5


def test_other_target_rate(tmp_path):
    path = tmp_path / "r44.wav"
    sf.write(path, tone(44100, seconds=0.3), 44100, subtype="PCM_16")
    wav = load_audio(path, sample_rate=22050)
    np.testing.assert_array_equal(wav, librosa.load(path, sr=22050)[0])


@pytest.mark.parametrize("channels", [2, 4])
def test_multichannel_is_mean_of_channels(channels, tmp_path):
    path = tmp_path / f"c{channels}.wav"
    data = tone(16000, channels=channels)
    sf.write(path, data, 16000, subtype="FLOAT")
    wav = load_audio(path)
    np.testing.assert_array_equal(wav, librosa.load(path, sr=16000)[0])
    np.testing.assert_allclose(wav, data.mean(axis=1), rtol=0, atol=1e-7)


def test_silence_is_valid(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000, np.int16), 16000, subtype="PCM_16")
    wav = load_audio(path)
    assert len(wav) == 16000 and not wav.any()
    assert np.all(wav2lip_mel(wav) == -4.0)


def test_clipping_is_valid(tmp_path):
    path = tmp_path / "loud.wav"
    data = np.clip(3.0 * tone(16000)[:, 0], -1.0, 1.0)  # a hard-clipped recording
    data[::50] = 1.7  # float wavs may even exceed full scale
    sf.write(path, data, 16000, subtype="FLOAT")
    wav = load_audio(path)
    assert wav.max() == np.float32(1.7)
    mel = wav2lip_mel(wav)
    assert np.all(np.isfinite(mel)) and mel.min() >= -4.0 and mel.max() <= 4.0


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda d: d / "missing.wav", "not found"),
        (lambda d: d, "not a file"),
        (
            lambda d: _write_bytes(d / "notes.wav", b"this is a shopping list, not a recording\n" * 20),
            "could not be decoded",
        ),
        (lambda d: _write_bytes(d / "noise.mp3", np.random.default_rng(0).bytes(4096)), "could not be decoded"),
        (lambda d: _write_bytes(d / "zero_bytes.wav", b""), "could not be decoded"),
    ],
)
def test_unreadable_input(make, problem, tmp_path):
    path = make(tmp_path)
    with pytest.raises(AudioError, match=problem) as err:
        load_audio(path)
    assert str(path) in str(err.value)


def test_empty_recording(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0,), np.int16), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="no audio samples") as err:
        load_audio(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("rate, samples", [(16000, 639), (44100, 1000)])
def test_shorter_than_one_frame(rate, samples, tmp_path):
    path = tmp_path / "blip.wav"
    sf.write(path, tone(rate)[:samples], rate, subtype="PCM_16")
    with pytest.raises(AudioError, match="shorter than one video frame") as err:
        load_audio(path)
    assert str(path) in str(err.value)
    assert len(load_audio(path, fps=None)) == math.ceil(samples * 16000 / rate)


def test_one_frame_is_enough(tmp_path):
    path = tmp_path / "frame.wav"
    sf.write(path, tone(16000)[:640], 16000, subtype="PCM_16")
    assert len(load_audio(path)) == 640


def test_non_finite_samples(tmp_path):
    path = tmp_path / "nan.wav"
    data = tone(16000)[:, 0]
    data[100] = np.nan
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN") as err:
        load_audio(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("rate", [48000, 44100, 16000, 8000])
def test_streaming_resampler_is_whole_signal_resampling_for_any_chunking(rate):
    """Browser audio in random pieces (1 sample to 0.3 s) -> bit for bit `resample` of the whole, length included."""
    rng = np.random.default_rng(rate)
    x = (0.3 * rng.standard_normal(rate + 777)).astype(np.float32)
    want = resample(x, rate, 16000)
    for trial in range(3):
        stream, got, i = StreamingResampler(rate, 16000), [], 0
        while i < len(x):
            n = int(rng.choice([0, 1, 7, 480, 1024, int(0.3 * rate)]))
            got.append(stream.push(x[i : i + n]))
            i += n
        got.append(stream.close())
        np.testing.assert_array_equal(np.concatenate(got), want)
        assert stream.samples_in == len(x)


def test_streaming_resampler_refuses_bad_input_with_one_line():
    with pytest.raises(AudioError, match="sample rate must be"):
        StreamingResampler(0, 16000)
    stream = StreamingResampler(48000, 16000)
    with pytest.raises(AudioError, match="NaN"):
        stream.push(np.array([0.0, np.nan], np.float32))
    with pytest.raises(AudioError, match=r"\(N,\) float mono"):
        stream.push(np.zeros((4, 2), np.float32))
    assert stream.samples_in == 0  # a refused chunk changes nothing
    stream.close()
    with pytest.raises(AudioError, match="after close"):
        stream.push(np.zeros(3, np.float32))
