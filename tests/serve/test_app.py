"""The HTTP service over a real (tiny) model: answers, read-your-writes, idempotent events, a 4xx for every
bad request, metrics, and the admin swap with its token."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from fastapi.testclient import TestClient

from twotower.config import ServeConfig
from twotower.serve import create_app
from twotower.serve.versions import ServedModels

TOKEN = "s3cret-token-for-tests"


@pytest.fixture()
def folders(tiny_model, tmp_path):
    """Two private copies of the tiny model (two 'versions') and the service's state folder."""
    a = shutil.copytree(tiny_model[0], tmp_path / "a")
    b = shutil.copytree(tiny_model[0], tmp_path / "b")
    return a, b, tmp_path / "state"


def client_for(folder, state, **serve) -> TestClient:
    served = ServedModels(str(folder), events=state / "events.sqlite")
    return TestClient(create_app(served, ServeConfig(**serve)))


def test_recommend_answers_known_and_unknown_users(folders):
    a, _, state = folders
    with client_for(a, state) as client:
        known = client.post("/recommend", json={"user_id": "u001", "k": 5})
        assert known.status_code == 200, known.text
        body = known.json()
        assert body["personalized"] and len(body["items"]) == 5
        assert [i["rank"] for i in body["items"]] == [1, 2, 3, 4, 5]
        assert body["model_version"]
        stranger = client.post("/recommend", json={"user_id": "nobody-42", "k": 3}).json()
        assert not stranger["personalized"] and len(stranger["items"]) == 3
        excluded = {i["item_id"] for i in body["items"][:2]}
        again = client.post("/recommend", json={"user_id": "u001", "k": 5, "exclude": sorted(excluded)}).json()
        assert len(again["items"]) == 5 and not excluded & {i["item_id"] for i in again["items"]}


def test_every_posted_event_is_read_by_the_next_request(folders):
    a, _, state = folders
    with client_for(a, state) as client:
        for probe in range(40):
            top = client.post("/recommend", json={"user_id": f"u{probe % 7:03d}", "k": 1}).json()["items"][0]
            event = {"user_id": f"u{probe % 7:03d}", "item_id": top["item_id"], "action": "purchase",
                     "event_id": f"probe-{probe}"}
            assert client.post("/events", json=event).json()["stored"] == 1
            after = client.post("/recommend", json={"user_id": event["user_id"], "k": 5}).json()
            assert top["item_id"] not in {i["item_id"] for i in after["items"]}        # seen now: excluded
            history = client.get(f"/users/{event['user_id']}/history", params={"limit": 1}).json()["events"]
            assert history[0]["item_id"] == top["item_id"] and history[0]["event_id"] == f"probe-{probe}"


def test_a_user_known_only_from_events_gets_personal_items(folders):
    a, _, state = folders
    with client_for(a, state) as client:
        assert not client.post("/recommend", json={"user_id": "fresh", "k": 3}).json()["personalized"]
        client.post("/events", json=[{"user_id": "fresh", "item_id": "i003", "action": "click"},
                                     {"user_id": "fresh", "item_id": "i004", "action": "click"}])
        answer = client.post("/recommend", json={"user_id": "fresh", "k": 3}).json()
        assert answer["personalized"]
        assert not {"i003", "i004"} & {i["item_id"] for i in answer["items"]}


def test_an_event_id_is_stored_once_across_retries(folders):
    a, _, state = folders
    event = {"user_id": "u002", "item_id": "i005", "action": "click", "event_id": "retry-me"}
    with client_for(a, state) as client:
        assert client.post("/events", json=event).json()["stored"] == 1
        assert client.post("/events", json=[event, event]).json() | {"model_version": ""} == \
            {"received": 2, "stored": 0, "model_version": ""}
        ids = [e["event_id"] for e in client.get("/users/u002/history").json()["events"]]
        assert ids.count("retry-me") == 1


@pytest.mark.parametrize("route, body, status", [
    ("/recommend", {"user_id": "u001", "k": 0}, 422),
    ("/recommend", {"user_id": "u001", "k": 10**6}, 422),
    ("/recommend", {"user_id": 17, "k": 3}, 422),                       # ids are strings
    ("/recommend", {"user_id": "u001", "kk": 3}, 422),                   # unknown field
    ("/recommend", {"user_id": "u001", "context": {"no_such_column": 1}}, 400),
    ("/recommend", {"user_id": "u001", "at": "not a time"}, 400),
    ("/recommend", {}, 422),
    ("/events", {"user_id": "u001"}, 422),
    ("/events", [], 422),
    ("/events", {"user_id": "u001", "item_id": "i001", "action": "teleport"}, 400),
    ("/events", {"user_id": "u001", "item_id": "i001", "timestamp": "yesterday-ish"}, 400),
    ("/search", {"query": "red shoes"}, 409),                           # this model has no item text
    ("/search", {"query": "   "}, 422),
])
def test_bad_requests_get_a_4xx_that_says_what_is_wrong(folders, route, body, status):
    a, _, state = folders
    with client_for(a, state) as client:
        answer = client.post(route, json=body)
        assert answer.status_code == status, answer.text
        assert answer.json()["detail"]


def test_unknown_items_bodies_too_large_and_broken_json(folders):
    a, _, state = folders
    with client_for(a, state) as client:
        assert client.get("/items/no-such-item/similar").status_code == 404
        similar = client.get("/items/i001/similar", params={"k": 4}).json()
        assert len(similar["items"]) == 4 and "i001" not in {i["item_id"] for i in similar["items"]}
        big = json.dumps({"user_id": "u001", "exclude": ["x" * 100] * 20_000})
        assert client.post("/recommend", content=big, headers={"content-type": "application/json"}).status_code == 413
        assert client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"}
                           ).status_code == 422
        assert client.post("/events", json=[{"user_id": "u", "item_id": "i001"}] * 11, ).status_code == 200
    with client_for(a, state, max_batch_events=10) as client:
        assert client.post("/events", json=[{"user_id": "u", "item_id": "i001"}] * 11).status_code == 413


def test_health_readiness_docs_and_metrics(folders):
    a, _, state = folders
    with client_for(a, state) as client:
        assert client.get("/healthz").json() == {"status": "ok", "pid": os.getpid()}
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready"
        client.post("/recommend", json={"user_id": "u001", "k": 2})
        client.post("/events", json={"user_id": "u001", "item_id": "i009"})
        text = client.get("/metrics").text
        assert 'twotower_requests_total{method="POST",route="/recommend",status="200"} 1.0' in text
        assert "twotower_events_ingested_total 1.0" in text
        assert f'twotower_model_info{{version="{ready["model_version"]}"}} 1.0' in text
        assert "/recommend" in client.get("/openapi.json").json()["paths"]
        assert client.get("/docs").status_code == 200


def test_admin_routes_are_off_without_a_token(folders, monkeypatch):
    monkeypatch.delenv("TWOTOWER_ADMIN_TOKEN", raising=False)
    a, b, state = folders
    with client_for(a, state) as client:
        assert client.post("/admin/reload", json={"model": str(b)}).status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Bearer {TOKEN[:-1]}X", f"Basic {TOKEN}"])
def test_admin_refuses_a_missing_or_wrong_token_and_changes_nothing(folders, header):
    a, b, state = folders
    with client_for(a, state, admin_token=TOKEN) as client:
        before = client.get("/readyz").json()
        answer = client.post("/admin/reload", json={"model": str(b)},
                             headers={"Authorization": header} if header else {})
        assert answer.status_code == 401
        assert client.get("/readyz").json() == before


def test_reload_swaps_versions_keeps_events_and_refuses_a_broken_one(folders, tiny_model):
    a, b, state = folders
    (b / "item_vectors.npy").write_bytes(b"not an array")        # b is damaged first
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with client_for(a, state, admin_token=TOKEN) as client:
        client.post("/events", json={"user_id": "u003", "item_id": "i011", "action": "purchase", "event_id": "e1"})
        refused = client.post("/admin/reload", json={"model": str(b)}, headers=auth)
        assert refused.status_code == 409 and "item_vectors.npy" in refused.json()["detail"]
        assert client.post("/recommend", json={"user_id": "u003", "k": 3}).status_code == 200
        shutil.rmtree(b)
        shutil.copytree(tiny_model[0], b)
        swapped = client.post("/admin/reload", json={"model": str(b)}, headers=auth)
        assert swapped.status_code == 200, swapped.text
        history = client.get("/users/u003/history").json()["events"]
        assert history[0]["event_id"] == "e1"                 # the service's events follow the swap
        metrics = client.get("/metrics").text
        assert 'twotower_reloads_total{outcome="refused"} 1.0' in metrics
        stages = swapped.json()["stages"]                     # where the swap's time went, in the answer and metrics
        assert set(stages) == {"open", "warm", "catch_up"} and min(stages.values()) >= 0
        assert sum(stages.values()) <= swapped.json()["seconds"] + 0.01
        assert all(f'twotower_reload_seconds_count{{stage="{stage}"}} 1.0' in metrics for stage in stages)


def test_a_request_in_flight_keeps_its_version_through_a_swap(folders):
    a, b, state = folders
    served = ServedModels(str(a), events=state / "events.sqlite")
    try:
        with served.lease() as held:
            served.reload(str(b))
            assert served.current is not held and held.retired
            assert not held.model.recommend(["u001"], k=3).empty          # still open for its request
        served.settle()                                                   # closed beside the requests
        with pytest.raises(Exception):
            held.model.recommend(["u001"], k=3)                           # closed once the request ended
    finally:
        served.close()


def test_a_retired_version_is_closed_off_the_thread_whose_request_ended_last(folders, monkeypatch):
    """Freeing a large catalog takes tens of ms: it must not fall on the thread that answers requests."""
    import threading

    from twotower.api import Model

    a, b, state = folders
    closed_on = []
    close = Model.close
    monkeypatch.setattr(Model, "close", lambda self: (closed_on.append(threading.current_thread()), close(self)))
    served = ServedModels(str(a), events=state / "events.sqlite")
    try:
        with served.lease():
            served.reload(str(b))
        served.settle()
        assert closed_on and threading.current_thread() not in closed_on
    finally:
        served.close()


@pytest.mark.parametrize("warm_users", [0, 3])
def test_a_version_swapped_in_is_warmed_for_the_latest_users_only_as_asked(folders, warm_users):
    """A cold version costs each user's first request the query tower's full work; the swap does it before."""
    a, b, state = folders
    served = ServedModels(str(a), events=state / "events.sqlite", warm_users=warm_users)
    try:
        users = served.current.model.user_ids()[1:6]        # not the first: the swap's probe request asks for it
        for user in users:
            served.current.model.recommend_each([user], k=3)
        served.reload(str(b))
        new = served.current.model
        latest = users[::-1][:3]
        assert set(new.recent_users(10)) & set(users) == (set(latest[:warm_users]))
        states = new._server.catalog.states
        hits, misses = states.hits, states.misses
        new.recommend_each(latest, k=3)
        assert (states.hits - hits, states.misses - misses) == (warm_users, 3 - warm_users)
    finally:
        served.close()


def test_an_old_dated_event_reaches_the_live_version_and_a_future_one_is_refused(folders):
    a, _, state = folders
    with client_for(a, state) as client:
        old = {"user_id": "u004", "item_id": "i012", "timestamp": "2001-01-01T00:00:00", "event_id": "old-1"}
        assert client.post("/events", json=old).json()["stored"] == 1
        ids = [e["event_id"] for e in client.get("/users/u004/history", params={"limit": 1000}).json()["events"]]
        assert "old-1" in ids
        ahead = client.post("/events", json={"user_id": "u004", "item_id": "i012", "timestamp": 4_000_000_000})
        assert ahead.status_code == 400 and "ahead" in ahead.json()["detail"]


def test_reloading_the_same_folder_applies_no_event_twice(folders):
    import sqlite3

    a, _, state = folders
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def applied_total() -> int:
        with sqlite3.connect(a / "features" / "online.sqlite") as db:
            return db.execute("SELECT sum(n) FROM user_totals").fetchone()[0]

    with client_for(a, state, admin_token=TOKEN) as client:
        client.post("/events", json=[{"user_id": "u005", "item_id": f"i0{i:02d}", "event_id": f"x{i}"}
                                     for i in range(5)])
        before = applied_total()
        for _ in range(2):
            assert client.post("/admin/reload", headers=auth).status_code == 200     # the same folder again
        assert applied_total() == before
        client.post("/events", json={"user_id": "u005", "item_id": "i020", "event_id": "x-after"})
        assert applied_total() == before + 1


def test_ids_with_slashes_times_that_are_not_and_chunked_bodies(folders):
    a, _, state = folders
    with client_for(a, state) as client:
        missing = client.get("/items/a%2Fb/similar")
        assert missing.status_code == 404 and "a/b" in missing.json()["detail"]
        assert client.get("/users/team%2Fann/history").json()["user_id"] == "team/ann"
        assert client.post("/recommend", json={"user_id": "u001", "at": True}).status_code == 422
        assert client.post("/recommend", json={"user_id": "u001", "at": "now"}).status_code == 400
        assert client.post("/recommend", json={"user_id": "u001", "at": 1e300}).status_code == 400

        def chunks():
            yield b'{"user_id": "u001", "exclude": ['
            for _ in range(2000):
                yield b'"' + b"x" * 1000 + b'",'
            yield b'"y"]}'

        chunked = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        small = client.post("/recommend", content=iter([b'{"user_id": ', b'"u001", "k": 2}']),
                            headers={"content-type": "application/json"})
        assert small.status_code == 200 and len(small.json()["items"]) == 2


def test_reads_while_the_catalog_changes_never_fail_and_never_return_a_deleted_item(folders):
    import threading
    import time as clock

    a, _, state = folders
    auth = {"Authorization": f"Bearer {TOKEN}"}
    seen, failures, stop = [], [], threading.Event()
    with client_for(a, state, admin_token=TOKEN) as client:
        def read(user: str):
            while not stop.is_set():
                started = clock.monotonic()
                for answer in (client.post("/recommend", json={"user_id": user, "k": 10}),
                               client.get("/items/i000/similar", params={"k": 10})):
                    if answer.status_code >= 500:
                        failures.append(answer.text)
                    elif answer.status_code == 200:
                        seen.append((started, {i["item_id"] for i in answer.json()["items"]}))

        readers = [threading.Thread(target=read, args=(u,)) for u in ("u001", "u002", "stranger")]
        for r in readers:
            r.start()
        deleted = {}
        try:
            refused = client.post("/admin/catalog", json={"upsert": [{"item_id": "new-1"}]}, headers=auth)
            assert refused.status_code == 400 and "no features" in refused.json()["detail"]   # ids-only towers
            for item in ("i001", "i002", "i003", "i004"):
                assert client.post("/admin/catalog", json={"delete": [item]}, headers=auth).status_code == 200
                deleted[item] = clock.monotonic()
            rebuilt = client.post("/admin/catalog", json={"rebuild": True}, headers=auth)
            assert rebuilt.status_code == 200 and rebuilt.json()["rebuilt"] and rebuilt.json()["items"] == 26, \
                rebuilt.text
            clock.sleep(0.5)
        finally:
            stop.set()
            for r in readers:
                r.join()
    assert not failures
    valid = {f"i{i:03d}" for i in range(30)}
    assert seen and all(items <= valid for _, items in seen)
    late = [(item, items) for started, items in seen for item, at in deleted.items() if started > at and item in items]
    assert not late, late[:3]


def test_a_served_version_leaves_the_cyclic_collector(folders):
    """Opening a version freezes what it holds out of the cyclic garbage collector, so a full collection
    under load never scans a catalog's id arrays (about 160 ms at a million items)."""
    import gc

    a, b, state = folders
    gc.unfreeze()
    served = ServedModels(str(a), events=state / "events.sqlite")
    try:
        held = served.current.model._server.__dict__           # a container the version holds
        assert gc.get_freeze_count() > 0
        assert not any(o is held for o in gc.get_objects()), "the version's objects are frozen"
        frozen = gc.get_freeze_count()
        served.reload(str(b))
        assert gc.get_freeze_count() > frozen, "a reloaded version is frozen too"
    finally:
        served.close()
        gc.unfreeze()


def test_a_service_starts_warm_for_the_users_with_the_latest_events(folders):
    """Before any user asked, a starting service prepares the answers of the `warm_users` latest users."""
    a, _, state = folders
    served = ServedModels(str(a), events=state / "events.sqlite", warm_users=3)
    try:
        model = served.current.model
        latest = model.latest_users(3)
        hist = model._server.saved.history
        events = hist.events[hist.events["weight"] > 0]
        last = events.groupby("user")["timestamp"].max()
        last.index = hist.users.decode(last.index.to_numpy()).astype(str)
        assert sorted(last[latest]) == sorted(last.nlargest(3).to_numpy()) and len(set(latest)) == 3
        states = model._server.catalog.states
        others = [u for u in model.user_ids()[1:] if u not in latest][:2]   # not the first: the probe asked it
        hits, misses = states.hits, states.misses
        model.recommend_each([*latest, *others], k=3)
        assert (states.hits - hits, states.misses - misses) == (3, 2)
    finally:
        served.close()
