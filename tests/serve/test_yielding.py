"""A load beside the served version holds the interpreter about its share of the time, and computes the same."""

from __future__ import annotations

import sys
import time

import pytest

from twotower.serve.yielding import running, yielding


def _work() -> int:
    total = 0
    for i in range(200_000):
        total += len(str(i)) % 7
    return total


def test_the_block_runs_at_about_its_share_and_gives_the_same_result():
    expected = _work()
    wall, cpu = time.perf_counter(), time.thread_time()
    with yielding(0.25):
        assert sys.getprofile() is not None
        got = _work()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    assert got == expected and sys.getprofile() is None
    assert cpu / wall < 0.4                         # the rest of the time it slept: others had the interpreter


def test_a_full_share_runs_unpaced():
    with yielding(1.0):
        assert sys.getprofile() is None
        assert _work() > 0


@pytest.mark.parametrize("share", [0.2, 1.0])
def test_a_block_under_way_is_seen_as_background_work(share):
    assert not running()
    with yielding(share):
        assert running()
    assert not running()
