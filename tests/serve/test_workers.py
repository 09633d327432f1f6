"""`twotower serve --workers 2`: two processes, one event log. An event acknowledged by one is read by the
next request whichever process answers it, and a reload made through one is followed by the other."""

from __future__ import annotations

import shutil
import time

import httpx
import psutil

from benchmarks.lib.service_harness import Service

ITEMS = [f"i{i:03d}" for i in range(30)]        # the tiny model's log (tests/conftest.synthetic_log)


def test_two_workers_read_each_others_events_and_follow_each_others_reloads(tiny_model, tmp_path):
    model = shutil.copytree(tiny_model[0], tmp_path / "a")
    other = shutil.copytree(tiny_model[0], tmp_path / "b")
    service = Service(model, tmp_path / "state", token="t0ken", workers=2).start()
    try:
        service.wait_ready(300)
        answered_by = set()
        for i in range(15):                     # new connections: either process may take each request
            event = {"user_id": "u001", "item_id": ITEMS[i], "action": "click", "event_id": f"w-{i}"}
            assert httpx.post(f"{service.base}/events", json=event).status_code == 200
            for _ in range(4):
                latest = httpx.get(f"{service.base}/users/u001/history", params={"limit": 1}).json()["events"]
                assert latest[0]["event_id"] == f"w-{i}", f"a read after event w-{i} missed it"
                answered_by.add(httpx.get(f"{service.base}/healthz").json()["pid"])
        assert len(answered_by) == 2, f"only {answered_by} answered: the test checked one process"
        with httpx.Client(base_url=service.base) as client:     # one client keeping its connection alive
            answers = [client.get("/healthz") for _ in range(60)]
        assert all(a.headers["connection"] == "close" for a in answers)
        assert len({a.json()["pid"] for a in answers}) == 2, "one keep-alive client was pinned to one worker"
        parent = psutil.Process(service.proc.pid).cpu_times()
        assert service.cpu_seconds() > parent.user + parent.system, "the workers' CPU was not counted"

        before = httpx.get(f"{service.base}/readyz").json()["model"]
        swapped = service.reload(other)
        assert swapped.status_code == 200, swapped.text
        after = str(other)
        assert after != before
        deadline, streak = time.monotonic() + 60, 0
        while streak < 20 and time.monotonic() < deadline:       # 20 answers in a row from the new version
            streak = streak + 1 if httpx.get(f"{service.base}/readyz").json()["model"] == after else 0
            time.sleep(0.05)
        assert streak >= 20, "a worker kept serving the old version"
    finally:
        service.stop()
