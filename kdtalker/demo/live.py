"""The demo's Live tab: a browser microphone streamed into a live session (kdtalker.pipeline.live), frames back.

Gradio calls `Demo.live_chunk` (app.py) every `limits.live_stream_every` seconds with the wav of what the
microphone recorded since (Chromium hands over 0.1 s pieces, at its own rate). A stream event's calls run one at a
time and the browser holds its chunks back while a call runs (a new chunk replaces a pending one on the server), so
the call only reads, resamples (StreamingResampler: the pieces are the whole recording's 16 kHz samples) and
queues; one worker thread per browser session pushes the queue into its live session, which samples and renders.
Chunks still held back in the browser at Stop are not sent (README "Live"). Each call answers with the newest frame
and the lag; `stop` (the recording stopped) closes the session, waits for its tail and reports the count. A closed
tab drops the session (Gradio's State delete callback): the worker stops at its next chunk, and everything it held
goes with it. The queue holds what rendering has not caught up with (on a CPU, most of the speech; at most
`limits.live_seconds` of 16 kHz float32, 38 MB for 600 s).

Lag on the page: the seconds between the newest frame's audio arriving at the server and the frame being ready
(the look-ahead of the mel window, the rest of the hop, the smoother's lag and the sampling and rendering behind
them), and the audio received but not yet shown as frames.
"""

from __future__ import annotations

import bisect
import queue
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from kdtalker.audio import SAMPLE_RATE, StreamingResampler
from kdtalker.cli import user_message
from kdtalker.errors import AudioError
from kdtalker.pipeline.live import LivePiece, LiveSession

END = None  # the queue's last item: the recording stopped


def browser_samples(path: str | Path) -> tuple[int, np.ndarray]:
    """A microphone chunk as Gradio saves it (a wav) -> (rate, (N,) float32 mono): the channels' mean, as load_audio.

    Read with soundfile here, not Gradio's numpy conversion (pydub, which starts ffprobe for every chunk): a call
    slower than the chunk interval holds the browser's chunks back (module doc)."""
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as exc:
        raise AudioError(f"the microphone's chunk could not be read as audio ({exc})") from None
    return int(rate), data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


class LiveFeed:
    """One browser session: queued 16 kHz audio -> a worker thread pushing it into `session`; the newest frame."""

    def __init__(self, make_session: Callable[[], LiveSession], fps: float, rate: int):
        self.fps = fps
        self.resampler = StreamingResampler(rate, SAMPLE_RATE)
        self._make_session = make_session  # called by the worker: the call that takes a chunk never waits for it
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._arrived: list[tuple[int, float]] = []  # (16 kHz samples received in all, when): for the lag
        self.samples = 0  # 16 kHz samples received
        self.frames = 0  # frames made
        self.frame: np.ndarray | None = None  # the newest (H, W, 3) uint8
        self._shown = 0  # the frame count when the page was last sent a frame (new_frame)
        self.lag: float | None = None  # seconds from the newest frame's audio arriving to the frame being ready
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="kdtalker-live", daemon=True)
        self._worker.start()

    @property
    def done(self) -> bool:
        """Whether the worker has finished (the session closed, failed or was dropped)."""
        return not self._worker.is_alive()

    def put(self, rate: int, samples: np.ndarray) -> None:
        """A browser chunk at `rate` -> resampled and queued for the session (AudioError for a bad one)."""
        if rate != self.resampler.rate:
            raise AudioError(f"the microphone changed its sample rate from {self.resampler.rate} to {rate} Hz")
        self._enqueue(self.resampler.push(samples))

    def finish(self, timeout: float) -> bool:
        """The recording stopped: the resampler's tail, then the session's close(); True when done within timeout."""
        if not self.resampler.closed:
            self._enqueue(self.resampler.close())
            self._queue.put(END)
        self._worker.join(timeout)
        return self.done

    def release(self) -> None:
        """Drop the session now (the tab closed): the worker stops before its next chunk."""
        self._stop.set()
        self._queue.put(END)

    def new_frame(self) -> np.ndarray | None:
        """The newest frame if the page has not been sent it yet, else None.

        The page gets each frame once: sent again, Gradio would rewrite the same cached image file while the browser
        may still be reading it (a truncated response, and a server that then stops slowly).
        """
        with self._lock:
            if self.frame is None or self.frames == self._shown:
                return None
            self._shown = self.frames
            return self.frame

    def status(self) -> str:
        """The line under the video: audio in, frames out and the lag."""
        with self._lock:
            seconds, frames, lag, error = self.samples / SAMPLE_RATE, self.frames, self.lag, self.error
        if error is not None:
            return f"error: {user_message(error) or f'internal error ({type(error).__name__})'}"
        behind = max(0.0, seconds - frames / self.fps)
        state = "done" if self.done else "live"
        shown = "-" if lag is None else f"{lag:.2f} s"
        return (
            f"{state}: {frames} frames from {seconds:.2f} s of audio · lag {shown} "
            f"(newest frame after its audio arrived) · {behind:.2f} s of audio not yet shown"
        )

    def _enqueue(self, samples: np.ndarray) -> None:
        with self._lock:
            self.samples += len(samples)
            self._arrived.append((self.samples, time.monotonic()))
        self._queue.put(samples)

    def _run(self) -> None:
        session = None
        try:
            session = self._make_session()  # the crop and the source's encoding: audio queues meanwhile
            while not self._stop.is_set():
                item = self._queue.get()
                if self._stop.is_set():
                    break
                pieces = session.close() if item is END else session.push(item)
                for piece in pieces:
                    self._take(piece)
                if item is END:
                    break
        except BaseException as exc:  # noqa: BLE001 - shown on the page; the session is released below
            with self._lock:
                self.error = exc
        finally:
            if session is not None:
                session.release()
            self._make_session = None

    def _take(self, piece: LivePiece) -> None:
        """A piece -> the newest frame, the count, and the lag of its last frame."""
        last = piece.first + len(piece) - 1
        needed = round((last + 1) * SAMPLE_RATE / self.fps)  # its audio ends here (16 kHz samples)
        with self._lock:
            at = bisect.bisect_left(self._arrived, (needed, -np.inf))
            arrived = self._arrived[min(at, len(self._arrived) - 1)][1]
            self._arrived = self._arrived[max(0, at - 1) :]  # older arrivals belong to frames already out
            self.frames = last + 1
            self.lag = time.monotonic() - arrived
            if piece.frames is not None:
                self.frame = piece.frames[-1]
