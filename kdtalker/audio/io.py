"""Audio file loading with librosa.load(path, sr=16000) semantics, for any common container.

Decoding: soundfile (libsndfile: wav, flac, ogg, mp3 where built in) exactly as librosa does; anything
libsndfile cannot open (m4a/aac, video soundtracks, ...) is decoded to float32 PCM by the ffmpeg binary
shipped with imageio-ffmpeg. Then: float32 mean of the channels, libsoxr "HQ" resampling only when the
file rate differs, and the length forced to ceil(N * sr_out / sr_in) as librosa.resample does.

`StreamingResampler` is the same resampling for audio that arrives in pieces (a browser's microphone): libsoxr's
own stream keeps the filter's state between pieces, so the pieces together are `resample` of the whole, bit for bit.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from kdtalker.audio.mel import SAMPLE_RATE
from kdtalker.errors import AudioError, VideoError
from kdtalker.fileio import temp_dir
from kdtalker.media import ffmpeg_exe


def _decode_soundfile(path: Path) -> tuple[np.ndarray, int] | None:
    """(C, N) float32 and the file rate via libsndfile, or None when libsndfile cannot open the file."""
    try:
        with sf.SoundFile(path) as f:
            data = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except RuntimeError:  # sf.LibsndfileError: not a format libsndfile knows
        return None
    return data.T, rate


# What to tell the user, by what the file is meant to be: a speech recording, or a clip whose sound track is read.
ADVICE = {
    "speech": "give a speech recording (wav, mp3, flac, ogg or m4a)",
    "video": "a training clip needs a readable sound track (re-encode it, e.g. H.264 + AAC in mp4)",
}


def _decode_ffmpeg(path: Path, advice: str = ADVICE["speech"]) -> tuple[np.ndarray, int]:
    """(C, N) float32 and the rate of the first audio stream via the imageio-ffmpeg binary (no resampling)."""
    try:
        exe = ffmpeg_exe()
    except VideoError as exc:
        raise AudioError(
            f"{path} is not wav/flac/ogg/mp3 and no ffmpeg binary was found to decode it "
            "(pip install imageio-ffmpeg, or convert the file to wav)"
        ) from exc
    with temp_dir("kdtalker_audio_") as tmp:
        pcm = tmp / "decoded.wav"
        cmd = [
            exe,
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-vn",
            "-c:a",
            "pcm_f32le",
            "-rf64",
            "auto",
            "-y",
            str(pcm),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if proc.returncode != 0 or not pcm.is_file():
            detail = (
                proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"ffmpeg exit code {proc.returncode}"
            )
            if "matches no streams" in proc.stderr:
                raise AudioError(f"{path} has no audio track; {advice}")
            raise AudioError(f"{path} could not be decoded as audio ({detail}); {advice}")
        decoded = _decode_soundfile(pcm)
        if decoded is None:
            raise AudioError(f"{path} could not be decoded as audio (ffmpeg produced no readable PCM)")
        return decoded


def resample(wav: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """(N,) float32 at orig_sr -> (ceil(N * target_sr / orig_sr),) float32 at target_sr with libsoxr HQ."""
    if orig_sr == target_sr:
        return wav
    out = soxr.resample(wav, orig_sr, target_sr, quality="HQ")
    # libsoxr rounds the output length to nearest; librosa pads/trims to the ceiling, and so do we.
    size = int(math.ceil(wav.shape[-1] * target_sr / orig_sr))
    if out.shape[-1] < size:
        out = np.pad(out, (0, size - out.shape[-1]))
    return np.ascontiguousarray(out[:size], dtype=np.float32)


class StreamingResampler:
    """Mono float32 audio at `rate` pushed in any chunk sizes -> the samples `resample` gives the whole at `target`."""

    def __init__(self, rate: int, target: int):
        for name, value in (("rate", rate), ("target", target)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise AudioError(f"the audio's sample {name} must be a whole number of Hz > 0, got {value!r}")
        self.rate, self.target = int(rate), int(target)
        # libsoxr's streaming form of soxr.resample (same filter, state kept): identical output for any chunking
        self._stream = None if rate == target else soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ")
        self._in = self._out = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether close() has handed out the tail."""
        return self._closed

    @property
    def samples_in(self) -> int:
        """Samples pushed so far (at `rate`)."""
        return self._in

    def push(self, samples: np.ndarray) -> np.ndarray:
        """(N,) float32 at `rate`, N >= 0 -> (M,) float32 at `target`: what became final (libsoxr holds a few ms)."""
        if self._closed:
            raise AudioError("push() after close(): start a new resampler")
        x = np.asarray(samples)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
            raise AudioError(f"audio chunks must be (N,) float mono samples, got {x.dtype} of shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise AudioError("the audio chunk contains NaN or infinite samples")
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._in += len(x)
        out = x.copy() if self._stream is None else self._stream.resample_chunk(x)
        self._out += len(out)
        return out

    def close(self) -> np.ndarray:
        """End of the audio -> the last samples, so that the total is ceil(N * target / rate) as `resample` gives."""
        if self._closed:
            raise AudioError("close() was already called on this resampler")
        self._closed = True
        empty = np.zeros(0, np.float32)
        tail = empty if self._stream is None else self._stream.resample_chunk(empty, last=True)
        size = int(math.ceil(self._in * self.target / self.rate)) - self._out
        tail = np.pad(tail, (0, max(0, size - len(tail))))[: max(0, size)]
        self._stream = None
        return np.ascontiguousarray(tail, dtype=np.float32)


def load_audio(
    path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, fps: float | None = 25.0, kind: str = "speech"
) -> np.ndarray:
    """Any common audio/video file -> (N,) float32 mono at `sample_rate` (librosa.load semantics).

    With `fps` set, a recording shorter than one video frame (sample_rate / fps samples) is an AudioError.
    `kind` ("speech" or "video") words the advice of the error messages.
    """
    path = Path(path)
    advice = ADVICE[kind]
    if not path.exists():
        raise AudioError(f"{'audio' if kind == 'speech' else kind} file {path} not found; check the path")
    if not path.is_file():
        raise AudioError(f"{path} is not a file; {advice}")
    decoded = _decode_soundfile(path)
    if decoded is None:
        decoded = _decode_ffmpeg(path, advice)
    channels, rate = decoded
    if channels.shape[-1] == 0:
        raise AudioError(f"{path} contains no audio samples (empty recording); {advice}")
    # librosa.to_mono: float32 mean over the channel axis of the (C, N) array.
    wav = np.mean(channels, axis=0) if channels.shape[0] > 1 else channels[0]
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{path} contains NaN or infinite samples; re-export the recording")
    wav = resample(np.ascontiguousarray(wav, dtype=np.float32), rate, sample_rate)
    if fps is not None and int(wav.shape[0] / (sample_rate / fps)) < 1:
        raise AudioError(
            f"{path} is {wav.shape[0] / sample_rate * 1000:.1f} ms long, shorter than one video frame "
            f"({1000 / fps:.0f} ms at {fps:g} fps); give a longer recording"
        )
    return wav
