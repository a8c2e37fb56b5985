"""prefetch / map_ahead: work run ahead in a thread keeps its order, its errors, and stops with its caller."""

from __future__ import annotations

import threading

import pytest

from kdtalker.pipeline.prefetch import map_ahead, prefetch


def test_items_in_order_and_made_ahead():
    made = []
    seen_ahead = []

    def numbers():
        for i in range(6):
            made.append(i)
            yield i

    for item in prefetch(numbers(), depth=1):
        seen_ahead.append(len(made) - 1 - item)  # how many items were made beyond this one when it arrived
    assert made == list(range(6))
    assert max(seen_ahead) <= 2


def test_errors_reach_the_caller():
    def failing():
        yield 1
        raise ValueError("broken window")

    got = []
    with pytest.raises(ValueError, match="broken window"):
        for item in prefetch(failing()):
            got.append(item)
    assert got == [1]


def test_stopping_early_stops_the_thread():
    made = []

    def endless():
        i = 0
        while True:
            made.append(i)
            yield i
            i += 1

    for item in prefetch(endless(), depth=1):
        if item == 2:
            break
    assert not any(t.name == "kdtalker-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(made) <= 2 + 1 + 2  # the items taken, the queue's one, and the one being made


def test_map_ahead_takes_the_next_item_before_the_caller_gets_this_result():
    """fn runs in another thread, in order; the items are taken in the caller's thread (the render thread), and
    item k + 1 is taken before result k is handed over (the GPU renders the next batch during paste-back)."""
    log, threads = [], set()

    def items():
        for i in range(5):
            threads.add(threading.current_thread().name)
            log.append(f"item {i}")
            yield i

    def fn(i):
        threads.add(threading.current_thread().name)
        return i * 10

    got = []
    for value in map_ahead(fn, items(), depth=1):
        log.append(f"result {value // 10}")
        got.append(value)
    assert got == [0, 10, 20, 30, 40]
    assert log.index("item 1") < log.index("result 0") and log.index("item 4") < log.index("result 3")
    assert threading.current_thread().name in threads and any(t.startswith("kdtalker-host") for t in threads)


def test_map_ahead_errors_reach_the_caller():
    def fn(i):
        if i == 2:
            raise ValueError("broken batch")
        return i

    got = []
    with pytest.raises(ValueError, match="broken batch"):
        for value in map_ahead(fn, iter(range(5))):
            got.append(value)
    assert got == [0, 1]
