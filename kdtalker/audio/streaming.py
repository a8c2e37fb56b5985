"""Incremental audio front end: 16 kHz samples pushed in chunks of any size -> the whole-file windows and features.

`StreamingMelWindows` turns pushed samples into the (80, 16) mel windows of `audio_windows`, and
`StreamingSpeechFeatures` runs them through the audio encoder as `audio_features` does. Each video frame is
handed out once no later sample can change it; `close()` hands out the rest with the whole-file end rules.
The concatenation of every piece equals the whole-file result of the clip pushed, frame count included.

Which frames are final (the latency the live session reports). After n samples, the whole-file code would keep
T(n) = int(n / (16000 / fps)) frames and the first L(n) = int(T(n) 16000 / fps) samples (`crop_length`: a
partial video frame is dropped before the STFT). Mel frame m is the centred STFT frame over the pre-emphasised
samples [200 m - 400, 200 m + 400), zeros outside [0, L); window i holds mel frames s_i .. s_i + 15 clamped to
[0, M - 1], with s_i = int(80 (i - 2) / fps) and M = 1 + L // 200. Frame i is therefore final when

    i < T(n)  and  200 (s_i + 15) + 400 <= L(n),

i.e. its last mel frame lies wholly inside audio that every later crop keeps, so neither the zero padding at
the end nor the clamp to the last mel frame can reach it. `final_frames(n, fps)` counts these frames,
`samples_needed(i, fps)` is the smallest such n and `lookahead_samples(i, fps)` how far that lies past the end
of frame i's own audio. At 25 fps frame i is final after 640 (i + 4) samples: its own 40 ms plus 3 video frames
(1920 samples, 120 ms) of look-ahead. The window itself reaches 1320..1560 samples (82.5..97.5 ms) past the end
of its frame; the crop to whole video frames rounds that up to 3 frames. (30 fps: 2134-2135 samples, 4 frames.)

Exactness: pre-emphasis (carried across chunks), STFT frames, rfft, dB and normalisation are the same float64
operations as the whole-file code, sample by sample. The one difference is the mel projection, a BLAS matrix
product over however many STFT frames became ready together, which can move a mel value by a few float64 ulps
(the float32 windows are then identical except, rarely, by one float32 ulp; none of 5.8 million window values
differed over 60 random chunkings of 3 s clips). The encoder then sees other batch
compositions than `audio_features`, which moves a feature by up to ~4e-6 on CPU (reference README section 9).

Memory is O(1) in the stream length: fewer than 16000 / fps + 800 samples and at most max(15, 160 / fps) mel frames
are held between pushes (`buffered_samples`, `buffered_mel_frames`), plus the chunk being processed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from kdtalker.audio.encoder import AudioEncoder, encode_windows
from kdtalker.audio.mel import HOP_SIZE, N_FFT, NUM_MELS, SAMPLE_RATE, frames_mel_amplitude, normalize_mel, preemphasis
from kdtalker.audio.windows import MEL_STEP_SIZE, crop_length, num_video_frames, samples_per_frame, window_starts
from kdtalker.errors import AudioError

HALF = N_FFT // 2  # centred STFT: 400 zeros before the first sample and after the last cropped one


class StreamChunk(NamedTuple):
    """Frames handed out by one push or close: `values[k]` belongs to video frame `first + k`."""

    first: int
    values: np.ndarray | torch.Tensor  # (n, 80, 16) float32 windows or (n, 512) features

    @property
    def stop(self) -> int:
        """Index one past the last frame of the chunk."""
        return self.first + len(self.values)


def _check_fps(fps: float) -> float:
    """A positive, finite frame rate as float."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return float(fps)


def _final_mel_frames(num_kept: int) -> int:
    """Mel frames whose STFT support [200 m - 400, 200 m + 400) lies inside the first `num_kept` samples."""
    return max(0, (num_kept - HALF) // HOP_SIZE + 1)


def _window_start(frame: int, fps: float) -> int:
    """s_i of one frame, with the whole-file float64 arithmetic (`window_starts`)."""
    return int(window_starts(1, fps, first=frame)[0])


def final_frames(num_samples: int, fps: float) -> int:
    """Number of leading video frames that no later sample can change after `num_samples` pushed (see module doc)."""
    fps = _check_fps(fps)
    num_frames = num_video_frames(num_samples, SAMPLE_RATE, fps)
    # frame i needs s_i + 15 < the final mel frames, i.e. s_i < limit
    limit = _final_mel_frames(crop_length(num_frames, SAMPLE_RATE, fps)) - (MEL_STEP_SIZE - 1)
    lo, hi = 0, num_frames  # s_i is non-decreasing: bisect for the first frame with s_i >= limit
    while lo < hi:
        mid = (lo + hi) // 2
        if _window_start(mid, fps) < limit:
            lo = mid + 1
        else:
            hi = mid
    return lo


def samples_needed(frame: int, fps: float) -> int:
    """Smallest number of pushed samples after which video frame `frame` is final (its latency, in samples)."""
    fps = _check_fps(fps)
    if frame < 0:
        raise ValueError(f"frame must be >= 0, got {frame}")
    spf = samples_per_frame(SAMPLE_RATE, fps)
    need = HOP_SIZE * (_window_start(frame, fps) + MEL_STEP_SIZE - 1) + HALF  # samples inside the crop
    frames = max(frame + 1, math.ceil(need / spf))
    while frames > frame + 1 and crop_length(frames - 1, SAMPLE_RATE, fps) >= need:
        frames -= 1
    while crop_length(frames, SAMPLE_RATE, fps) < need:
        frames += 1
    # the smallest n with int(n / spf) >= frames, found with the same float expression as num_video_frames
    n = math.ceil(frames * spf)
    while n > 0 and num_video_frames(n - 1, SAMPLE_RATE, fps) >= frames:
        n -= 1
    while num_video_frames(n, SAMPLE_RATE, fps) < frames:
        n += 1
    return n


def lookahead_samples(frame: int, fps: float) -> int:
    """Samples past the end of video frame `frame`'s own audio that must arrive before it is final (1920 at 25 fps)."""
    return samples_needed(frame, fps) - crop_length(frame + 1, SAMPLE_RATE, fps)


def _check_samples(samples: object) -> np.ndarray:
    """One chunk of a stream as a (N,) float32 array of finite samples, or one AudioError saying what is wrong."""
    if isinstance(samples, torch.Tensor):
        raise AudioError("audio stream: push a numpy array, not a torch tensor (use tensor.cpu().numpy())")
    if not isinstance(samples, np.ndarray):
        raise AudioError(f"audio stream: push a numpy float32 array of 16 kHz samples, got {type(samples).__name__}")
    if samples.ndim != 1:
        raise AudioError(
            f"audio stream: push a 1-D array of mono samples, got shape {samples.shape} "
            "(mix channels to mono first: the mean over the channel axis)"
        )
    if samples.dtype != np.float32:
        raise AudioError(
            f"audio stream: push float32 samples in [-1, 1] at 16 kHz, got {samples.dtype} "
            "(int16 PCM: samples.astype(np.float32) / 32768)"
        )
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise AudioError(f"audio stream: sample {bad} of the chunk is {samples[bad]}; push finite samples only")
    return samples


class StreamingMelWindows:
    """16 kHz float32 samples pushed in any chunk sizes -> (n, 80, 16) float32 windows as in `audio_windows`."""

    def __init__(self, fps: float):
        self.fps = _check_fps(fps)
        self._pushed = 0  # samples pushed so far
        self._previous: np.float32 | None = None  # last sample pushed: the pre-emphasis memory
        # Centred-STFT input (400 zeros, then the pre-emphasised samples) from padded index _signal_start on:
        # everything before it belongs only to mel frames already computed.
        self._signal = np.zeros(HALF, np.float64)
        self._signal_start = 0
        # Normalised mel frames _mel_first .. _mel_first + K - 1 (the next one to compute is _mel_first + K).
        self._mel = np.zeros((NUM_MELS, 0), np.float64)
        self._mel_first = 0
        self._next_frame = 0  # first video frame not handed out yet
        self._closed = False

    @property
    def samples_pushed(self) -> int:
        """Samples pushed so far."""
        return self._pushed

    @property
    def frames_out(self) -> int:
        """Video frames handed out so far (the `first` of the next chunk)."""
        return self._next_frame

    @property
    def buffered_samples(self) -> int:
        """Samples held between pushes (< 16000 / fps + 800: the uncropped partial frame and 2 STFT frames' worth)."""
        return len(self._signal)

    @property
    def buffered_mel_frames(self) -> int:
        """Mel frames held between pushes (<= max(15, 160 / fps): the pending windows' columns)."""
        return self._mel.shape[1]

    def push(self, samples: np.ndarray) -> StreamChunk:
        """(N,) float32 16 kHz samples, any N >= 0 -> StreamChunk(first, (n, 80, 16) windows of newly final frames)."""
        if self._closed:
            raise RuntimeError("push() after close(): start a new stream")
        x = _check_samples(samples)
        if len(x):
            y = preemphasis(x, self._previous)
            self._previous = x[-1]
            self._signal = np.concatenate([self._signal, y])
            self._pushed += len(x)
        num_frames = num_video_frames(self._pushed, SAMPLE_RATE, self.fps)
        num_mel = _final_mel_frames(crop_length(num_frames, SAMPLE_RATE, self.fps))
        self._compute_mel(self._signal, num_mel)
        starts = window_starts(num_frames - self._next_frame, self.fps, first=self._next_frame)
        ready = int(np.searchsorted(starts + MEL_STEP_SIZE - 1, num_mel, side="left"))  # s_i + 15 < num_mel
        return self._emit(self._next_frame + ready, None)

    def close(self) -> StreamChunk:
        """End of stream -> StreamChunk(first, (n, 80, 16)): the remaining frames, with the whole-file end rules.

        A stream shorter than one video frame gives no frame at all (`audio_windows` raises AudioError instead).
        """
        if self._closed:
            raise RuntimeError("close() was already called on this stream")
        self._closed = True
        num_frames = num_video_frames(self._pushed, SAMPLE_RATE, self.fps)
        if num_frames > self._next_frame:
            kept = crop_length(num_frames, SAMPLE_RATE, self.fps)
            num_mel = 1 + kept // HOP_SIZE
            # The crop drops the partial video frame; the STFT pads the cropped signal with 400 zeros.
            end = HALF + kept - self._signal_start
            self._compute_mel(np.concatenate([self._signal[:end], np.zeros(HALF)]), num_mel)
            chunk = self._emit(num_frames, num_mel)
        else:
            chunk = StreamChunk(self._next_frame, np.zeros((0, NUM_MELS, MEL_STEP_SIZE), np.float32))
        self._signal = np.zeros(0, np.float64)
        self._mel = np.zeros((NUM_MELS, 0), np.float64)
        return chunk

    def _compute_mel(self, signal: np.ndarray, stop: int) -> None:
        """Compute mel frames up to `stop` - 1 from `signal` (the padded signal from _signal_start), then forget
        the samples that only those frames needed."""
        first = self._mel_first + self._mel.shape[1]
        if stop <= first:
            return
        offset = HOP_SIZE * first - self._signal_start
        frames = np.lib.stride_tricks.sliding_window_view(signal[offset:], N_FFT)[::HOP_SIZE][: stop - first]
        self._mel = np.concatenate([self._mel, normalize_mel(frames_mel_amplitude(frames))], axis=1)
        drop = HOP_SIZE * stop - self._signal_start
        self._signal = self._signal[drop:].copy()  # a copy: a view would keep a huge pushed chunk alive
        self._signal_start += drop

    def _emit(self, stop: int, num_mel: int | None) -> StreamChunk:
        """Windows of frames _next_frame .. stop - 1 (indices clamped to [0, num_mel - 1] at the end of the stream)."""
        first = self._next_frame
        idx = window_starts(stop - first, self.fps, first=first)[:, None] + np.arange(MEL_STEP_SIZE)[None, :]
        idx = np.clip(idx, 0, None if num_mel is None else num_mel - 1) - self._mel_first
        windows = np.ascontiguousarray(self._mel[:, idx].transpose(1, 0, 2), dtype=np.float32)  # (n, 80, 16)
        self._next_frame = stop
        # Keep the mel frames from the next pending window's start on (never past those computed).
        keep_from = max(0, _window_start(stop, self.fps))
        drop = min(max(keep_from - self._mel_first, 0), self._mel.shape[1])
        if drop:
            self._mel = self._mel[:, drop:].copy()
            self._mel_first += drop
        return StreamChunk(first, windows)


class StreamingSpeechFeatures:
    """16 kHz float32 samples pushed in any chunk sizes -> (n, 512) features as in `audio_features`."""

    def __init__(self, encoder: AudioEncoder, fps: float, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if encoder.training:  # BatchNorm on batch statistics would make a feature depend on the chunking
            raise ValueError("the audio encoder must be in eval mode (encoder.eval()) for streaming")
        self.encoder = encoder
        self.batch_size = batch_size
        self.windows = StreamingMelWindows(fps)

    @property
    def fps(self) -> float:
        """Video frame rate of the stream."""
        return self.windows.fps

    @property
    def samples_pushed(self) -> int:
        """Samples pushed so far."""
        return self.windows.samples_pushed

    @property
    def frames_out(self) -> int:
        """Video frames handed out so far (the `first` of the next chunk)."""
        return self.windows.frames_out

    def push(self, samples: np.ndarray) -> StreamChunk:
        """(N,) float32 16 kHz samples -> StreamChunk(first, (n, 512) features of the newly final frames)."""
        return self._encode(self.windows.push(samples))

    def close(self) -> StreamChunk:
        """End of stream -> StreamChunk(first, (n, 512)): the remaining frames (none if under one video frame)."""
        return self._encode(self.windows.close())

    def _encode(self, chunk: StreamChunk) -> StreamChunk:
        """Windows chunk -> features chunk on the encoder's device and dtype."""
        return StreamChunk(chunk.first, encode_windows(chunk.values, self.encoder, self.batch_size))
