"""model.item_id_min_events: items with too few events to teach an id embedding live by their features."""

from __future__ import annotations

import numpy as np
import torch

from tests.conftest import tiny_config
from twotower.evaluate.towers import TowerRecommender
from twotower.pipeline import dataset_from_frames, early_stopping_split


def _trained(small_ml, min_events: int):
    events, items, users = small_ml
    cfg = tiny_config(model={"item_id_min_events": min_events}, train={"epochs": 2, "threads": 1})
    data = dataset_from_frames(events, items, users, cfg)
    before, validation = early_stopping_split(data, cfg)
    towers = TowerRecommender(cfg, show_progress=False)
    towers.fit(before, validation)
    counts = np.bincount(before.events.loc[before.events["weight"] > 0, "item"], minlength=data.n_items + 1)
    return towers.model, counts


def test_items_below_the_threshold_have_no_id_embedding_after_training(small_ml):
    model, counts = _trained(small_ml, min_events=3)
    rows = model.item_tower.id_embedding.weight.detach()
    rare = np.flatnonzero((counts < 3) & (np.arange(len(counts)) > 0))
    common = np.flatnonzero(counts >= 3)
    assert len(rare) > 50 and len(common) > 50
    assert not rows[rare].any(), "a rare item's id row stayed zero through training"
    assert rows[common].abs().sum(1).gt(0).all()
    with torch.no_grad():                                   # served, a rare item is its features alone
        vectors = model.item_tower(torch.as_tensor(rare[:5]))
        features = model.item_tower.features(torch.as_tensor(rare[:5]))
    assert torch.allclose(vectors, features)


def test_a_threshold_of_zero_keeps_every_id(small_ml):
    model, counts = _trained(small_ml, min_events=0)
    rows = model.item_tower.id_embedding.weight.detach()
    assert rows[1:].abs().sum(1).gt(0).all()


def test_a_warm_start_does_not_bring_back_the_id_of_a_rare_item(small_ml):
    """Towers fine-tuned from other towers (the ranker's, trained on other events) keep the rare items of
    their own data without an id."""
    events, items, users = small_ml
    cfg = tiny_config(train={"epochs": 1, "threads": 1})
    data = dataset_from_frames(events, items, users, cfg)
    before, validation = early_stopping_split(data, cfg)
    donor = TowerRecommender(tiny_config(model={"item_id_min_events": 0}, train={"epochs": 1, "threads": 1}),
                             show_progress=False)
    donor.fit(before, validation)
    towers = TowerRecommender(cfg, show_progress=False)
    towers.fit(before, validation, warm_start=donor.model.state_dict())
    counts = np.bincount(before.events.loc[before.events["weight"] > 0, "item"], minlength=data.n_items + 1)
    rare = np.flatnonzero((counts < 2) & (np.arange(len(counts)) > 0))
    assert len(rare) and not towers.model.item_tower.id_embedding.weight.detach()[rare].any()
