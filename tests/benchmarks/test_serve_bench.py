"""The serve benchmark's choice of cores for its load generator."""

from __future__ import annotations

import os

import pytest

from benchmarks.serve import client_cores


def test_client_cores_are_the_last_core_any_core_or_the_listed_ones():
    cores = sorted(os.sched_getaffinity(0))
    assert client_cores("last") == ({cores[-1]} if len(cores) > 1 else None)
    assert client_cores("any") is None
    assert client_cores("0") == {0} and client_cores("1,3") == {1, 3}
    with pytest.raises(SystemExit, match="client-cpus"):
        client_cores("first")
