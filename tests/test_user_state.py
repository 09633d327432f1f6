"""The serving state after new events equals the state rebuilt from scratch: the incremental update touches
only the users the events name, and must leave every user exactly as a full rebuild would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import synthetic_log
from twotower.config import Config
from twotower.data.dataset import Dataset, build_dataset
from twotower.data.schema import validate_events
from twotower.user_state import UserState


def with_events(data: Dataset, events: pd.DataFrame) -> Dataset:
    """The oracle: `data` rebuilt with more positive events (user_id, item_id, timestamp, weight; weight-0
    ones left out), users not seen before taking new codes, events on unknown items left out, events kept in
    (user, time, arrival) order. A state built from it from scratch is what the live layer must read as."""
    weight = np.asarray(events["weight"], dtype=np.float64)
    positive = weight > 0
    user_ids = np.asarray(events["user_id"]).astype(str).astype(object)[positive]
    item_ids = np.asarray(events["item_id"]).astype(str).astype(object)[positive]
    new_users = pd.unique(np.array([u for u in user_ids if u not in data.users], dtype=object))
    users = data.users.extended(new_users) if len(new_users) else data.users
    items = data.items.encode(item_ids)
    known = items > 0
    first = int(data.events["order"].to_numpy().max()) + 1 if len(data.events) else 0
    added = {"user": users.encode(user_ids)[known], "item": items[known],
             "timestamp": np.asarray(events["timestamp"], dtype=np.float64)[positive][known],
             "weight": weight[positive][known].astype(np.float32),
             "order": first + np.arange(int(known.sum()), dtype=np.int64)}
    by_user_time = np.lexsort((added["order"], added["timestamp"], added["user"]))
    added = {c: v[by_user_time] for c, v in added.items()}
    # insert the few new rows into the sorted log (their arrival is after every stored row): no full sort
    old_users, old_times = data.events["user"].to_numpy(), data.events["timestamp"].to_numpy(np.float64)
    lo = np.searchsorted(old_users, added["user"], "left")
    hi = np.searchsorted(old_users, added["user"], "right")
    at = np.array([a + np.searchsorted(old_times[a:b], t, "right")
                   for a, b, t in zip(lo, hi, added["timestamp"])], dtype=np.int64)
    ev = pd.DataFrame({c: np.insert(data.events[c].to_numpy(), at, added[c].astype(data.events[c].dtype))
                       for c in data.events.columns if c in added})
    return Dataset(ev, users, data.items, data.item_specs, data.item_features,
                   data.user_specs, data.user_features, data.context_specs, {}, data.item_texts, data.item_labels)


def _history():
    log = synthetic_log(users=30, items=25, per_user=8)
    data = build_dataset(validate_events(log, Config().data, Path("e.csv")), None, None, Config())
    return data.subset(data.events["weight"].to_numpy() > 0)


def _new_events(data, rng) -> pd.DataFrame:
    users = [*rng.choice(data.users.ids, 5), "newcomer-1", "newcomer-2"]
    times = data.events["timestamp"].to_numpy()
    return pd.DataFrame({"user_id": np.repeat(users, 2), "item_id": rng.choice(data.items.ids, 2 * len(users)),
                         # some at the same time as a stored event, some in the past, most later
                         "timestamp": rng.choice(np.r_[times[:5], times.max() + rng.integers(1, 99, 20)], 2 * len(users)),
                         "weight": 1.0})


def test_events_are_inserted_in_user_time_arrival_order():
    data, rng = _history(), np.random.default_rng(0)
    grown = with_events(data, _new_events(data, rng))
    ev = grown.events
    assert len(ev) == len(data.events) + 14
    order = np.lexsort((ev["order"].to_numpy(), ev["timestamp"].to_numpy(), ev["user"].to_numpy()))
    assert (order == np.arange(len(ev))).all()
    assert grown.users.encode(["newcomer-2"])[0] == data.n_users + 2


def _assert_same_reads(state: UserState, rebuilt: UserState, n_users: int) -> None:
    users = np.arange(n_users + 1)
    for u in users:
        np.testing.assert_array_equal(np.sort(state.seen_items(u)), np.sort(rebuilt.seen_items(u)))
        for a, b in zip(state.events_of(u), rebuilt.events_of(u)):      # times, items, weights in order
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(state.histories_of(users), rebuilt.histories_of(users))
    np.testing.assert_array_equal(state.last_seen_of(users), rebuilt.last_seen_of(users))
    np.testing.assert_array_equal(state.has_history_of(users), rebuilt.has_history_of(users))
    latest = state.latest_users(5)                     # the newest latest events first, live users included
    np.testing.assert_array_equal(latest, rebuilt.latest_users(5))
    assert (np.diff(state.last_seen_of(latest)) <= 0).all()
    assert state.last_seen_of(latest)[-1] >= np.nanmax(np.delete(state.last_seen_of(users), latest), initial=-np.inf)
    for times in (np.full(len(users), np.inf), np.full(len(users), np.median(rebuilt.ev_times))):
        for a, b in zip(state.recent(users, times, 3), rebuilt.recent(users, times, 3)):
            np.testing.assert_array_equal(a, b)


def _positive_codes(data, events):
    items = data.items.encode(events["item_id"].to_numpy())
    return (data.users.encode(events["user_id"].to_numpy()), events["timestamp"].to_numpy(np.float64), items,
            events["weight"].to_numpy(np.float32))


def test_the_updated_state_reads_as_a_full_rebuild():
    """Every read (items had, events, last items, latest time, profiles at two times) of the live layer equals a state
    built from scratch over the grown log, batch after batch, and so does the layer merged into a new base."""
    data, rng = _history(), np.random.default_rng(1)
    state, touched = UserState.of(data, length=4), set()
    for _ in range(3):
        events = _new_events(data, rng)
        data = with_events(data, events)
        state = state.with_events(*_positive_codes(data, events))
        touched |= set(data.users.encode(events["user_id"].to_numpy()).tolist())
        rebuilt = UserState.of(data, length=4)
        assert set(state.live) == touched                         # only the touched users were recomputed
        _assert_same_reads(state, rebuilt, data.n_users)
    merged = state.compacted()
    assert not merged.live
    assert (merged.seen != rebuilt.seen).nnz == 0
    np.testing.assert_array_equal(merged.histories, rebuilt.histories)
    _assert_same_reads(merged, rebuilt, data.n_users)


def test_enough_live_events_merge_into_a_new_base(monkeypatch):
    """A batch past the threshold merges with the live layer into a new base at once, reading as a rebuild."""
    from twotower import user_state

    data, rng = _history(), np.random.default_rng(2)
    state = UserState.of(data, length=4)
    events = _new_events(data, rng)
    data = with_events(data, events)
    state = state.with_events(*_positive_codes(data, events))                # live
    assert state.live
    monkeypatch.setattr(user_state, "COMPACT_MIN_EVENTS", 10)
    events = _new_events(data, rng)                                           # 14 events: past the threshold
    data = with_events(data, events)
    state = state.with_events(*_positive_codes(data, events))
    assert not state.live and len(state.ev_users) == len(data.events)
    rebuilt = UserState.of(data, length=4)
    _assert_same_reads(state, rebuilt, data.n_users)
    np.testing.assert_array_equal(state.event_counts(), np.bincount(data.events["user"], minlength=data.n_users + 1))


def test_event_counts_include_the_live_layer():
    data, rng = _history(), np.random.default_rng(3)
    state = UserState.of(data, length=4)
    events = _new_events(data, rng)
    data = with_events(data, events)
    state = state.with_events(*_positive_codes(data, events))
    assert state.live
    np.testing.assert_array_equal(state.event_counts(), np.bincount(data.events["user"], minlength=data.n_users + 1))
