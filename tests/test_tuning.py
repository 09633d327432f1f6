"""Choosing the towers' settings on validation within a budget: every trial is recorded, a change is kept
only when it wins, and the budget bounds the walk."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_config
from twotower.tuning import CHANGES, choose_settings, with_changes
from twotower.pipeline import dataset_from_frames, early_stopping_split


@pytest.fixture(scope="module")
def split(small_ml):
    cfg = tiny_config()
    return early_stopping_split(dataset_from_frames(*small_ml, cfg), cfg), cfg


def test_a_spent_budget_runs_only_the_configured_settings(split):
    (data, validation), cfg = split
    tuned, tuning = choose_settings(data, validation, cfg, budget_s=1e-6, trial_epochs=1)
    assert len(tuning.trials) == 1 and tuning.trials[0]["changes"] == {} and tuning.chosen == {}
    assert tuned == cfg


def test_kept_changes_won_their_trial(split):
    (data, validation), cfg = split
    tuned, tuning = choose_settings(data, validation, cfg, budget_s=1e9, trial_epochs=1)
    assert 1 < len(tuning.trials) <= 1 + len(CHANGES)
    default = tuning.trials[0]["val_ndcg@10"]
    for key, value in tuning.chosen.items():
        won = [t for t in tuning.trials if t["changes"].get(key) == value]
        assert won and max(t["val_ndcg@10"] for t in won) > default
    assert tuned == with_changes(cfg, tuning.chosen)


def test_a_change_is_validated_like_a_config_file(split):
    _, cfg = split
    with pytest.raises(ValueError):
        with_changes(cfg, {"model.dropout": 1.5})
