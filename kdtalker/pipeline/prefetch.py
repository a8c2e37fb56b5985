"""Run a generator one step ahead in a background thread: its next item is made while the caller uses this one.

The pipeline uses it to sample motion window k+1 while window k renders (on a GPU the two overlap; on a 2-core
CPU they would only compete for the same cores, so it is off there by default).
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

import torch

T = TypeVar("T")
_DONE = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yield what `items` yields, computing up to `depth` items ahead in a thread; its exceptions re-raise here.

    When the caller stops early (break, an exception, Ctrl-C), the thread stops after the item it is making.
    """
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
        try:
            with torch.inference_mode():  # grad mode is per thread
                for item in items:
                    if not put(item):
                        return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failed(exc))

    worker = threading.Thread(target=produce, name="kdtalker-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            value = out.get()
            if value is _DONE:
                return
            if isinstance(value, _Failed):
                raise value.error
            yield value
    finally:
        stop.set()
        worker.join(timeout=60)
