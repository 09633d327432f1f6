"""The service under failure, over real HTTP on loopback (short versions of `benchmarks/failures.py`): killed
while events arrive, swapped under load, read-your-writes, and random requests from the schema."""

from __future__ import annotations

import shutil

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from benchmarks.lib.request_fuzz import bodies, exchange, ids, limits, routes
from benchmarks.lib.service_harness import Service, crash_while_ingesting, hot_swap, read_your_writes
from twotower.serve import create_app
from twotower.serve.versions import ServedModels

USERS = [f"u{i:03d}" for i in range(40)]          # the tiny model's log (tests/conftest.synthetic_log)
ITEMS = [f"i{i:03d}" for i in range(30)]


@pytest.fixture()
def model(tiny_model, tmp_path):
    return shutil.copytree(tiny_model[0], tmp_path / "model")


def test_no_acknowledged_event_is_lost_or_doubled_when_the_server_is_killed(model, tmp_path):
    rounds = crash_while_ingesting(model, tmp_path / "state", USERS, ITEMS, events=600, rate=200, kills=2)
    for r in rounds:
        assert r.acknowledged > 0, "the kill came before any event: the test checked nothing"
        assert (r.missing, r.duplicated, r.stored, r.applied_gap, r.integrity) == (0, 0, r.sent, 0, "ok")
        assert r.ready_s < 10


def test_swaps_under_load_answer_every_request_and_a_broken_version_is_refused(model, tmp_path):
    other = shutil.copytree(model, tmp_path / "other")
    broken = shutil.copytree(model, tmp_path / "broken")
    (broken / "item_vectors.npy").write_bytes(b"\x93NUMPY garbage")
    service = Service(model, tmp_path / "state", token="t0ken").start()
    try:
        service.wait_ready()
        outcome = hot_swap(service, [other, model], USERS, rate=10, seconds=6, timeout=30)
        assert [status for status, _, _ in outcome.reloads] == [200, 200]
        assert outcome.non_2xx == 0 and outcome.requests == 60
        refused = service.reload(broken)
        assert refused.status_code == 409 and "item_vectors.npy" in refused.json()["detail"]
        assert httpx.post(f"{service.base}/recommend", json={"user_id": "u001"}).status_code == 200
        huge = httpx.post(f"{service.base}/events", content=b"[" + b" " * (10 << 20) + b"]",
                          headers={"content-type": "application/json"}, timeout=60)
        assert huge.status_code == 413
        assert read_your_writes(service.base, USERS, ITEMS, probes=100) == 0
    finally:
        service.stop()


@pytest.fixture(scope="module")
def fuzz_client(tiny_model, tmp_path_factory):
    folder = shutil.copytree(tiny_model[0], tmp_path_factory.mktemp("fuzz") / "model")
    with TestClient(create_app(ServedModels(str(folder), events=folder.parent / "events.sqlite")),
                    raise_server_exceptions=False) as client:
        yield client


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=routes, body=bodies, item=ids, user=ids, k=limits)
def test_random_requests_from_the_schema_never_get_a_5xx(fuzz_client, route, body, item, user, k):
    posted, searched, similar, history = exchange(fuzz_client, route, body, item, user, k)
    assert posted < 500 and searched < 500
    assert similar < 500 and history < 500


@pytest.mark.parametrize("raw", [b'{"user_id": "u001", "at": NaN}', b'{"user_id": "u001", "k": Infinity}',
                                 b'{"user_id": "u001", "item_id": "i001", "timestamp": -Infinity}',
                                 b'[{"user_id": "u001", "item_id": "i001", "timestamp": NaN}]'])
def test_non_finite_numbers_are_refused_not_stored(fuzz_client, raw):
    route = "/events" if b"item_id" in raw else "/recommend"
    answer = fuzz_client.post(route, content=raw, headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
