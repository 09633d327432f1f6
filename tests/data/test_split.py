import numpy as np
import pandas as pd

from twotower.config import Config
from twotower.data.dataset import build_dataset
from twotower.data.schema import validate_events
from twotower.data.split import holdout_last
from pathlib import Path


def make(rows):
    return build_dataset(validate_events(pd.DataFrame(rows), Config().data, Path("e.csv")), None, None, Config())


def test_last_positive_is_held_out_with_everything_after_it_and_ties_follow_file_order():
    data = make([
        {"user_id": "u", "item_id": "a", "timestamp": 1, "action": "click"},
        {"user_id": "u", "item_id": "c", "timestamp": 5, "action": "click"},   # same second as b: file order says c first
        {"user_id": "u", "item_id": "b", "timestamp": 5, "action": "purchase"},
        {"user_id": "u", "item_id": "d", "timestamp": 9, "action": "impression"},  # after the target: dropped
        {"user_id": "v", "item_id": "a", "timestamp": 3, "action": "click"},     # one positive: no target
    ])
    history, targets = holdout_last(data)
    assert data.items.decode(targets.items).tolist() == ["b"]
    assert data.users.decode(targets.users).tolist() == ["u"]
    kept = history.events
    assert sorted(zip(data.users.decode(kept["user"]), data.items.decode(kept["item"]))) == [("u", "a"), ("u", "c"), ("v", "a")]


def test_holdout_keeps_users_with_too_little_history():
    data = make([{"user_id": "u", "item_id": i, "timestamp": i} for i in range(3)])
    history, targets = holdout_last(data, min_history=3)
    assert len(targets) == 0 and len(history.events) == 3
    history, targets = holdout_last(data, min_history=2)
    assert len(targets) == 1 and np.array_equal(history.events["timestamp"], [0, 1])
