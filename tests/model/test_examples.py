import numpy as np
import pandas as pd
from pathlib import Path

from twotower.config import Config
from twotower.data.dataset import build_dataset
from twotower.data.schema import validate_events
from twotower.model.examples import build_windows, explicit_negatives, last_histories


def make(rows):
    return build_dataset(validate_events(pd.DataFrame(rows), Config().data, Path("e.csv")), None, None, Config())


ROWS = [
    {"user_id": "u", "item_id": "a", "timestamp": 1, "action": "click"},
    {"user_id": "u", "item_id": "x", "timestamp": 2, "action": "impression"},
    {"user_id": "u", "item_id": "y", "timestamp": 2, "action": "impression"},
    {"user_id": "u", "item_id": "b", "timestamp": 3, "action": "purchase"},
    {"user_id": "u", "item_id": "c", "timestamp": 4, "action": "click"},
    {"user_id": "u", "item_id": "z", "timestamp": 5, "action": "impression"},   # no later positive: unused
    {"user_id": "v", "item_id": "q", "timestamp": 0, "action": "impression"},   # before v's first positive
    {"user_id": "v", "item_id": "a", "timestamp": 1, "action": "click"},
    {"user_id": "v", "item_id": "c", "timestamp": 2, "action": "click"},
]


def test_impressions_become_negatives_of_the_next_positive_of_the_same_user():
    data = make(ROWS)
    negs = explicit_negatives(data, max_per_target=8)
    by_target = {(data.users.decode([data.events["user"][r]])[0], data.items.decode([data.events["item"][r]])[0]):
                 sorted(data.items.decode(v)) for r, v in negs.items()}
    assert by_target == {("u", "b"): ["x", "y"], ("v", "a"): ["q"]}


def test_windows_pair_each_prefix_with_the_next_positive():
    data = make(ROWS)
    w = build_windows(data, length=3, max_negatives=8)
    dec = lambda codes: [data.items.decode([c])[0] if c else "-" for c in codes]
    u = int(np.flatnonzero(w.users == data.users.encode(["u"])[0])[0])
    assert dec(w.inputs[u]) == ["-", "a", "b"]
    assert dec(w.targets[u]) == ["-", "b", "c"]
    assert w.weights[u].tolist() == [0.0, 5.0, 1.0]
    assert sorted(dec(w.negatives[u][1][w.negatives[u][1] > 0])) == ["x", "y"]


def test_long_histories_are_cut_into_windows_that_cover_every_target():
    rows = [{"user_id": "u", "item_id": i, "timestamp": i} for i in range(11)]
    data = make(rows)
    w = build_windows(data, length=4, max_negatives=0)
    assert len(w) == 3                                   # 10 targets in windows of 4, 4 and 2
    assert sorted(w.targets[w.targets > 0].tolist()) == list(range(2, 12))
    assert w.negatives.shape == (3, 4, 0)


def test_last_histories_are_right_aligned_and_unknown_users_are_empty():
    data = make(ROWS)
    h = last_histories(data, np.array([data.users.encode(["u"])[0], 0]), 4)
    assert [data.items.decode([c])[0] if c else "-" for c in h[0]] == ["-", "a", "b", "c"]
    assert (h[1] == 0).all()


def test_a_search_is_a_target_even_as_a_users_first_event():
    """A user whose only event came from a search still teaches the towers (its query is the text, with no
    history); a first event without a query does not (there is nothing to predict it from)."""
    rows = [dict(r, query=None) for r in ROWS] + [
        {"user_id": "s", "item_id": "b", "timestamp": 1, "action": "click", "query": "red running shoes"},
        {"user_id": "t", "item_id": "c", "timestamp": 1, "action": "click", "query": "  "}]
    data = make(rows)
    w = build_windows(data, length=3, max_negatives=8)
    dec = lambda codes: [data.items.decode([c])[0] if c else "-" for c in codes]
    by_user = {data.users.decode([u])[0]: i for i, u in enumerate(w.users)}
    assert "t" not in by_user                                   # a blank query is no search
    s = by_user["s"]
    assert dec(w.inputs[s]) == ["-", "-", "-"] and dec(w.targets[s]) == ["-", "-", "b"]
    assert dec(w.targets[by_user["u"]]) == ["-", "b", "c"]      # u's first click had no query: not a target
