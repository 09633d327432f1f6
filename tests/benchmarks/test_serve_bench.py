"""The serve benchmark: its choice of cores for the load generator, and how it summarizes a phase."""

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


def test_a_phase_row_shows_the_tail_and_how_much_of_it_was_the_client_late():
    from benchmarks.serve import summarize

    # (due offset s, latency s, status, client lag s): 99 quick answers and one slow one the client sent late
    samples = [(i / 100, 0.005, 200, 0.0001) for i in range(99)] + [(0.99, 0.050, 200, 0.040)]
    row, = summarize("steady", {"recommend": samples, "versions": {"v1": 100}}, seconds=1.0, cpu_seconds=0.5)
    assert row["failed"] == 0 and row["max_ms"] == 50.0 and row["p50_ms"] == 5.0
    assert 0.1 < row["client_lag_p99_ms"] < 40.0          # the 99th percentile, between the two lags
    assert row["server_cpu_ms"] == 5.0 and row["server_busy_%"] == 50
