"""Run a generator one step ahead in a background thread: its next item is made while the caller uses this one.

The pipeline uses `prefetch` to sample motion window k+1 while window k renders, and `map_ahead` to paste back
batch k in a worker while its own thread renders batch k+1 (on a GPU these overlap; on a 2-core CPU they would
only compete for the same cores, so both are off there by default). On CUDA the prefetching thread may run on its
own stream, so its kernels interleave with the consumer's instead of queueing behind them.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")
_DONE = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(items: Iterator[T], depth: int = 1, stream: torch.device | None = None) -> Iterator[T]:
    """Yield what `items` yields, computing up to `depth` items ahead in a thread; its exceptions re-raise here.

    stream: a CUDA device -> the thread runs on a stream of its own there; an item is handed over once that stream
    has finished it (the thread waits, not the caller), and its tensors are marked as used by the caller's stream.
    When the caller stops early (break, an exception, Ctrl-C), the thread stops after the item it is making.
    """
    side = torch.cuda.Stream(stream) if stream is not None and torch.device(stream).type == "cuda" else None
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                out.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        on_side = torch.cuda.stream(side) if side is not None else contextlib.nullcontext()
        try:
            with torch.inference_mode(), on_side:  # grad mode and the current stream are per thread
                for item in items:
                    if side is not None:
                        side.synchronize()
                    if not put(item):
                        return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failed(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's own clean-up (progress bars, nested threads) runs now, not at collection

    worker = threading.Thread(target=produce, name="kdtalker-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            value = out.get()
            if value is _DONE:
                return
            if isinstance(value, _Failed):
                raise value.error
            if side is not None and isinstance(value, torch.Tensor) and value.is_cuda:
                value.record_stream(torch.cuda.current_stream(value.device))
            yield value
    finally:
        stop.set()
        worker.join(timeout=60)


def map_ahead(fn: Callable[[T], R], items: Iterator[T], depth: int = 1) -> Iterator[R]:
    """Yield fn(item) for each of `items`, in order; fn runs in a background thread while this thread (the caller's)
    already takes the next item, with up to `depth` items waiting for the caller.

    The pipeline renders in the caller's thread (cuDNN keeps its autotuned algorithms per thread, so a fresh thread
    per run would tune again: seconds on a GPU) and hands each batch's host work (waiting for the copy, paste-back)
    to the worker here.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdtalker-host") as pool:
        pending: collections.deque = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
