"""Voice-activity detection at the video frame rate: which frames of a 16 kHz speech recording hold speech.

Two packaged detectors decide on fixed hops of audio, one hop after another (each keeps a state):
- silero: the Silero VAD network, the ONNX file shipped inside the `silero-vad` pip package, run by onnxruntime
  (no torch, no download). 512-sample hops (32 ms); each hop is fed with the 64 samples before it as context and
  the recurrent state of the hop before; its output is the speech probability of the hop.
- webrtc: Google's WebRTC GMM detector (`webrtcvad-wheels`), 10 ms hops of int16 PCM, aggressiveness 0..3
  (3 = most eager to call audio non-speech); its 0/1 decision is the hop's probability.

Video frame i spans samples [int(i sr / fps), int((i + 1) sr / fps)) (the crop rule of windows.py); its speech
probability is the mean of its hops' probabilities weighted by how many of its samples each hop covers, and it is
speech when that is >= threshold.

Streaming: `StreamingVad.push(samples)` hands out the flags of the frames whose every overlapping hop has been
decided (a frame waits for at most one hop past its end: 32 ms with silero, 10 ms with webrtc); `close()` decides
the last partial hop, zero-padded, and hands out the rest. `speech_frames` (the whole file) is one push and close,
and hops are decided one by one in order however the samples arrive, so every chunking gives the same flags.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from kdtalker.audio.mel import SAMPLE_RATE
from kdtalker.audio.streaming import StreamChunk, _check_fps, _check_samples
from kdtalker.audio.windows import crop_length, num_video_frames
from kdtalker.errors import ConfigError

DETECTORS = ("silero", "webrtc")
SILERO_HOP = 512  # samples per decision of the 16 kHz Silero model
SILERO_CONTEXT = 64  # samples of the previous hop the model sees before each hop
SILERO_STATE = (2, 1, 128)  # the model's recurrent state (layers, batch, width)
WEBRTC_HOP = 160  # 10 ms: WebRTC's own analysis frame (10, 20 or 30 ms are accepted)


class HopDetector(Protocol):
    """A stateful detector: hops (n, hop) float32 in order -> (n,) float64 speech probabilities."""

    hop: int

    def __call__(self, hops: np.ndarray) -> np.ndarray: ...


def silero_model_file() -> Path:
    """The Silero VAD ONNX file inside the installed silero-vad package (found without importing it: no torch)."""
    spec = importlib.util.find_spec("silero_vad")
    path = None if spec is None or spec.origin is None else Path(spec.origin).parent / "data" / "silero_vad.onnx"
    if path is None or not path.is_file():
        raise ConfigError(
            "silence.detector=silero needs the silero-vad package (pip install silero-vad; its model file "
            "silero_vad/data/silero_vad.onnx ships inside it), or use silence.detector=webrtc"
        )
    return path


class SileroDetector:
    """The Silero VAD ONNX model on 512-sample hops at 16 kHz, one hop per call of the session (its state carried)."""

    hop = SILERO_HOP

    def __init__(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # one thread: a 32 ms hop is far too small to split, and the cost figure is then per core
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(silero_model_file()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.state = np.zeros(SILERO_STATE, np.float32)
        self.context = np.zeros(SILERO_CONTEXT, np.float32)
        self.rate = np.array(SAMPLE_RATE, np.int64)

    def __call__(self, hops: np.ndarray) -> np.ndarray:
        """(n, 512) float32 -> (n,) float64 speech probabilities."""
        out = np.empty(len(hops), np.float64)
        for k, hop in enumerate(hops):
            x = np.concatenate([self.context, hop])[None]  # (1, 576)
            prob, self.state = self.session.run(None, {"input": x, "state": self.state, "sr": self.rate})
            self.context = x[0, -SILERO_CONTEXT:]
            out[k] = float(prob.reshape(-1)[0])
        return out


class WebRtcDetector:
    """The WebRTC VAD on 10 ms hops of int16 PCM at 16 kHz: 1.0 for a speech hop, 0.0 otherwise."""

    hop = WEBRTC_HOP

    def __init__(self, aggressiveness: int) -> None:
        try:
            import webrtcvad
        except ImportError:
            raise ConfigError(
                "silence.detector=webrtc needs the webrtcvad-wheels package (pip install webrtcvad-wheels), "
                "or use silence.detector=silero"
            ) from None
        self.vad = webrtcvad.Vad(aggressiveness)

    def __call__(self, hops: np.ndarray) -> np.ndarray:
        """(n, 160) float32 in [-1, 1] -> (n,) float64 0/1 decisions."""
        pcm = np.clip(np.rint(hops * 32767.0), -32768, 32767).astype("<i2")
        return np.array([float(self.vad.is_speech(row.tobytes(), SAMPLE_RATE)) for row in pcm], np.float64)


def hop_detector(detector: str, aggressiveness: int) -> HopDetector:
    """A fresh detector by name (silero | webrtc); `aggressiveness` (0..3) is WebRTC's and ignored by silero."""
    if detector == "silero":
        return SileroDetector()
    if detector == "webrtc":
        if isinstance(aggressiveness, bool) or aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"silence.aggressiveness={aggressiveness!r} must be 0, 1, 2 or 3 (WebRTC's modes)")
        return WebRtcDetector(aggressiveness)
    raise ConfigError(f"silence.detector={detector!r} is not one of {DETECTORS} (or none)")


class StreamingVad:
    """16 kHz float32 samples pushed in any chunk sizes -> per-video-frame speech flags (n,) bool (`speech_frames`)."""

    def __init__(self, detector: str, threshold: float, aggressiveness: int, fps: float):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise ConfigError(f"silence.threshold={threshold!r} must be a number in [0, 1]")
        self.fps = _check_fps(fps)
        self.threshold = float(threshold)
        self.detector = hop_detector(detector, aggressiveness)
        self.hop = self.detector.hop
        self._pending = np.zeros(0, np.float32)  # samples of the hop not yet complete
        self._pushed = 0
        self._probs = np.zeros(0, np.float64)  # probabilities of hops _hop_first .. _hop_first + len - 1
        self._hop_first = 0
        self._next_frame = 0
        self._closed = False

    @property
    def samples_pushed(self) -> int:
        """Samples pushed so far."""
        return self._pushed

    @property
    def frames_out(self) -> int:
        """Video frames handed out so far (the `first` of the next chunk)."""
        return self._next_frame

    def push(self, samples: np.ndarray) -> StreamChunk:
        """(N,) float32 16 kHz samples, any N >= 0 -> StreamChunk(first, (n,) bool flags of newly decided frames)."""
        if self._closed:
            raise RuntimeError("push() after close(): start a new stream")
        x = _check_samples(samples)
        self._pushed += len(x)
        buffer = np.concatenate([self._pending, x])
        whole = len(buffer) // self.hop * self.hop
        self._decide(buffer[:whole])
        self._pending = buffer[whole:].copy()
        decided = (self._hop_first + len(self._probs)) * self.hop  # samples covered by decided hops
        frames = num_video_frames(self._pushed, SAMPLE_RATE, self.fps)
        stop = self._next_frame
        while stop < frames and crop_length(stop + 1, SAMPLE_RATE, self.fps) <= decided:
            stop += 1
        return self._emit(stop)

    def close(self) -> StreamChunk:
        """End of stream -> StreamChunk(first, (n,) bool): the last partial hop zero-padded, the remaining frames."""
        if self._closed:
            raise RuntimeError("close() was already called on this stream")
        self._closed = True
        if len(self._pending):
            self._decide(np.concatenate([self._pending, np.zeros(self.hop - len(self._pending), np.float32)]))
            self._pending = np.zeros(0, np.float32)
        return self._emit(num_video_frames(self._pushed, SAMPLE_RATE, self.fps))

    def _decide(self, samples: np.ndarray) -> None:
        """Run the detector on whole hops (a multiple of `hop` samples) and keep their probabilities."""
        if len(samples):
            self._probs = np.concatenate([self._probs, self.detector(samples.reshape(-1, self.hop))])

    def _emit(self, stop: int) -> StreamChunk:
        """Flags of frames _next_frame .. stop - 1 from the hops' probabilities, weighted by overlap."""
        flags = np.zeros(stop - self._next_frame, bool)
        for k, frame in enumerate(range(self._next_frame, stop)):
            start, end = crop_length(frame, SAMPLE_RATE, self.fps), crop_length(frame + 1, SAMPLE_RATE, self.fps)
            total = 0.0
            for h in range(start // self.hop, -(-end // self.hop)):
                covered = min(end, (h + 1) * self.hop) - max(start, h * self.hop)
                total += covered * self._probs[h - self._hop_first]
            flags[k] = total >= self.threshold * (end - start)
        first, self._next_frame = self._next_frame, stop
        # forget the hops that lie wholly before the next frame
        drop = crop_length(stop, SAMPLE_RATE, self.fps) // self.hop - self._hop_first
        if drop > 0:
            self._probs = self._probs[drop:].copy()
            self._hop_first += drop
        return StreamChunk(first, flags)


def speech_frames(wav: np.ndarray, fps: float, detector: str, threshold: float, aggressiveness: int) -> np.ndarray:
    """(N,) float32 16 kHz speech -> (T,) bool, True where video frame i is speech; T = int(N / (16000 / fps))."""
    stream = StreamingVad(detector, threshold, aggressiveness, fps)
    head = stream.push(np.ascontiguousarray(wav, dtype=np.float32))
    return np.concatenate([head.values, stream.close().values])
