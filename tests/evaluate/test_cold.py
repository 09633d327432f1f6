"""Cold items: held out of training entirely, scored apart; nothing learned from their events."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import tiny_config
from twotower.errors import InputError
from twotower.evaluate.cold import cold_split
from twotower.evaluate.protocol import protocol_split
from twotower.pipeline import dataset_from_frames, evaluate_cold


@pytest.fixture(scope="module")
def small_data(small_ml):
    events, items, users = small_ml
    cfg = tiny_config()
    return dataset_from_frames(events, items, users, cfg), cfg


def test_cold_items_leave_no_event_in_what_is_learned_and_split_the_targets(small_data):
    data, cfg = small_data
    _, test = protocol_split(data, log=lambda _: None)
    split = cold_split(test, 0.2, seed=3)
    cold = np.zeros(data.n_items + 1, bool)
    cold[split.cold_items] = True
    with_events = np.unique(test.history.events.loc[test.history.events["weight"] > 0, "item"])
    assert len(split.cold_items) == round(0.2 * len(with_events))
    assert not cold[split.history.events["item"]].any()
    assert not cold[split.validation.history.events["item"]].any() and not cold[split.validation.targets.items].any()
    assert cold[split.cold.targets.items].all() and not cold[split.warm.targets.items].any()
    assert len(split.cold.targets) + len(split.warm.targets) <= len(test.targets)
    assert split.history.n_items == data.n_items          # still in the catalog, with their features


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 2.0])
def test_a_share_outside_zero_to_one_is_refused(small_data, fraction):
    data, _ = small_data
    _, test = protocol_split(data, log=lambda _: None)
    with pytest.raises(InputError, match="--cold-items"):
        cold_split(test, fraction)


def test_cold_items_need_item_features(small_ml):
    events, _, _ = small_ml
    data = dataset_from_frames(events, None, None, tiny_config())
    _, test = protocol_split(data, log=lambda _: None)
    with pytest.raises(InputError, match="feature columns"):
        cold_split(test, 0.1)


def test_popularity_never_finds_a_cold_item_and_every_model_is_scored_on_both_parts(small_data):
    data, cfg = small_data
    table = evaluate_cold(data, cfg, 0.2, log=lambda _: None, show_progress=False)
    assert set(table["items"]) == {"cold", "warm"}
    assert {"twotower (served, ranked)", "twotower (served, retrieval order)", "id-only towers",
            "Popularity"} == set(table["model"])
    popular_cold = table[(table["model"] == "Popularity") & (table["items"] == "cold")].iloc[0]
    assert popular_cold["Recall@20"] == 0.0                 # it learned no count for them: nothing leaked
    assert (table["Recall@10"] <= table["Recall@20"]).all()
