"""The serving state after new events equals the state rebuilt from scratch: the incremental update touches
only the users the events name, and must leave every user exactly as a full rebuild would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import synthetic_log
from twotower.config import Config
from twotower.data.dataset import build_dataset, with_events
from twotower.data.schema import validate_events
from twotower.user_state import UserState


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


def test_the_updated_state_equals_a_full_rebuild():
    data, rng = _history(), np.random.default_rng(1)
    state = UserState.of(data, length=4)
    for _ in range(3):
        events = _new_events(data, rng)
        data = with_events(data, events)
        state = state.with_events(data, data.users.encode(events["user_id"].to_numpy()))
        rebuilt = UserState.of(data, length=4)
        assert (state.seen != rebuilt.seen).nnz == 0
        np.testing.assert_array_equal(state.histories, rebuilt.histories)
        np.testing.assert_array_equal(state.last_seen, rebuilt.last_seen)
        np.testing.assert_array_equal(state.has_history, rebuilt.has_history)
        users = np.arange(1, data.n_users + 1)
        times = np.full(len(users), np.inf)
        for a, b in zip(state.recent(users, times, 3), rebuilt.recent(users, times, 3)):
            np.testing.assert_array_equal(a, b)
