"""The online store gives, for a request made now, exactly the row the offline store computes for that time
(no train/serve skew), and a failed batch leaves it unchanged."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from tests.features.test_offline import random_log
from twotower.data.event_columns import as_columns
from twotower.errors import InputError
from twotower.features.offline import OfflineStore
from twotower.features.online import RedisOnlineStore, SQLiteOnlineStore


def test_offline_and_online_rows_agree_for_the_same_user_and_time(online_store, tmp_path):
    events = random_log(seed=7, n=800)
    now = float(events["timestamp"].quantile(0.7)) + 0.5
    known = events[events["timestamp"] < now]
    online = online_store
    for lo in range(0, len(known), 150):                 # arrives in batches, as a stream would: frames from
        batch = known.iloc[lo:lo + 150]                  # files, numpy columns from the service's requests
        online.ingest(batch if lo % 300 else as_columns(batch))
    offline = OfflineStore(tmp_path / "offline")
    offline.write_events(events)                          # the offline store also holds the future
    rng = np.random.default_rng(0)
    requests = pd.DataFrame({"user_id": rng.choice(events["user_id"].unique(), 60),
                             "item_id": rng.choice(events["item_id"].unique(), 60), "timestamp": now})
    requests.loc[0, "user_id"] = "a-user-never-seen"
    on, off = pd.DataFrame(online.features(requests)), pd.DataFrame(offline.features(requests))
    pd.testing.assert_frame_equal(on[off.columns], off, check_dtype=False)
    assert (off["item_count_30d"] > 0).any() and (off["user_item_events"] > 0).any(), "a test that can fail"


def test_a_failed_batch_changes_nothing(online_store):
    online = online_store
    online.ingest(random_log(seed=1, n=50))
    request = pd.DataFrame({"user_id": ["1"], "item_id": ["2"], "timestamp": [1e9]})
    before = pd.DataFrame(online.features(request))
    bad = pd.DataFrame({"user_id": ["1", "1"], "item_id": ["2", "2"], "timestamp": [5.0, np.nan],
                        "weight": [1.0, 1.0]})            # the second row breaks NOT NULL mid-transaction
    with pytest.raises((sqlite3.IntegrityError, InputError), match="NOT NULL|not a finite number"):
        online.ingest(bad)
    pd.testing.assert_frame_equal(pd.DataFrame(online.features(request)), before)


def test_redis_keeps_acknowledged_events_through_a_restart(redis_server):
    store = RedisOnlineStore(redis_server.url)
    assert store.ingest(random_log(seed=2, n=100)) > 0
    request = pd.DataFrame({"user_id": ["1", "4"], "item_id": ["2", "3"], "timestamp": [1e9, 1e9]})
    before = pd.DataFrame(store.features(request))
    store.close()
    redis_server.stop()
    redis_server.start()
    again = RedisOnlineStore(redis_server.url)
    pd.testing.assert_frame_equal(pd.DataFrame(again.features(request)), before)
    assert before["user_events"].sum() > 0
    again.close()


def test_requests_at_several_later_times_agree_with_the_offline_store(online_store, tmp_path):
    """A batch whose requests come at different times (a served batch), each after every ingested event:
    the windows count from each request's own time."""
    events = random_log(seed=11, n=600)
    now = float(events["timestamp"].max()) + 1.0
    online_store.ingest(events)
    offline = OfflineStore(tmp_path / "offline")
    offline.write_events(events)
    rng = np.random.default_rng(1)
    n = 80
    requests = pd.DataFrame({"user_id": rng.choice(events["user_id"].unique(), n),
                             "item_id": rng.choice(events["item_id"].unique(), n),
                             "timestamp": now + rng.choice([0.0, 3_600.0, 2.5 * 86_400, 12 * 86_400, 45 * 86_400], n)})
    on, off = pd.DataFrame(online_store.features(requests)), pd.DataFrame(offline.features(requests))
    pd.testing.assert_frame_equal(on[off.columns], off, check_dtype=False)
    assert off["item_count_7d"].nunique() > 2, "a test that can fail"


def test_a_request_after_new_events_never_reads_stale_cached_values(tmp_path):
    """The store's near cache: values read for one request are dropped when this store ingests events for
    them, and when another connection (another process) commits events for them."""
    path = tmp_path / "online.sqlite"
    store, other = SQLiteOnlineStore(path), SQLiteOnlineStore(path)
    request = {"user_id": np.array(["u"]), "item_id": np.array(["i"]), "timestamp": np.array([1e9])}
    event = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "timestamp": [1e9 - 10.0], "weight": [1.0]})

    def seen() -> tuple[int, int, int]:
        f = store.features(request)
        return int(f["user_item_events"][0]), int(f["item_count_all"][0]), int(f["item_count_1d"][0])

    assert seen() == (0, 0, 0)
    store.ingest(event)
    assert seen() == (1, 1, 1)
    other.ingest(event)
    assert seen() == (2, 2, 2)
    store.close()
    other.close()


def test_another_connections_events_drop_only_what_they_changed(tmp_path, monkeypatch):
    """A service's workers share one store: another connection's ingest drops the users and items it changed
    from this store's near cache and keeps the rest; a `clear`, or changes pruned past this store's last look,
    drop everything. Every read equals a fresh connection's."""
    from twotower.features import online

    path = tmp_path / "online.sqlite"
    store, other = SQLiteOnlineStore(path), SQLiteOnlineStore(path)
    request = {"user_id": np.array(["u", "u", "v"]), "item_id": np.array(["i", "j", "j"]),
               "timestamp": np.full(3, 1e9)}

    def event(user, item, t=1e9 - 10.0):
        return pd.DataFrame({"user_id": [user], "item_id": [item], "timestamp": [t], "weight": [1.0]})

    def agrees():
        fresh = SQLiteOnlineStore(path)
        got, want = store.features(request), fresh.features(request)
        fresh.close()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)

    other.ingest(event("u", "i"))
    other.ingest(event("v", "j"))
    agrees()
    cached = set(store._items.slot)
    assert cached == {"i", "j"} and set(store._users) == {"u", "v"}
    other.ingest(event("u", "k"))                        # changes user u and item k only
    store._forget_if_written_elsewhere()
    assert set(store._items.slot) == {"i", "j"} and set(store._users) == {"v"}
    agrees()
    other.clear()                                        # everything changed
    store._forget_if_written_elsewhere()
    assert not store._items.slot and not store._users
    agrees()
    other.ingest(event("v", "i"))
    agrees()
    monkeypatch.setattr(online, "CHANGES_KEPT", 1)       # the list pruned past this store's last look
    for user in ("a", "b", "c"):
        other.ingest(event(user, "z"))
    store._forget_if_written_elsewhere()
    assert not store._items.slot and not store._users
    agrees()
    store.close()
    other.close()
