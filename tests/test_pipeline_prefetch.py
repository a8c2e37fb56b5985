"""prefetch: a generator run one item ahead in a thread keeps its order, its errors, and stops with its caller."""

from __future__ import annotations

import threading

import pytest

from kdtalker.pipeline.prefetch import prefetch


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
