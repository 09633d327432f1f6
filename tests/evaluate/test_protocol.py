import numpy as np
import pytest

from tests.conftest import tiny_config
from twotower.evaluate.baselines import BPR, EASE, IALS, ItemKNN, Popularity
from twotower.evaluate.protocol import evaluate_scorer, run_protocol, split_for_protocol
from twotower.pipeline import dataset_from_frames


@pytest.fixture(scope="module")
def data(small_ml):
    return dataset_from_frames(*small_ml, tiny_config())


def test_split_holds_out_the_last_two_events_per_user(data):
    val, test = split_for_protocol(data)
    n_pos = np.bincount(data.events["user"], minlength=data.n_users + 1)
    assert len(test.targets) == int((n_pos > 2).sum())
    # the validation history is the test history minus each user's validation event
    assert len(test.history.events) - len(val.history.events) == len(val.targets)
    # no target is in its own history
    assert not np.asarray(test.seen[test.targets.users, test.targets.items]).any()


def test_a_random_scorer_lands_near_chance(data):
    _, test = split_for_protocol(data)
    rng = np.random.default_rng(0)
    m = evaluate_scorer(lambda u, c: rng.random((len(u), data.n_items + 1)), test)
    assert m["HR@10"] < 0.05


@pytest.mark.parametrize("baseline", [ItemKNN, EASE, IALS, BPR])
def test_each_tuned_baseline_beats_chance_and_picks_from_its_grid(data, baseline):
    model = baseline(grid=baseline.grid[:2])
    table = run_protocol(data, [model], log=lambda s: None)
    assert table.loc[0, "HR@10"] > 0.05       # chance is 10 / ~1,600 items
    assert model.params in baseline.grid[:2]


def test_protocol_runs_every_model_on_the_same_split(data):
    table = run_protocol(data, [Popularity(), EASE(grid=[{"l2": 100.0}])], log=lambda s: None)
    assert table["model"].tolist() == ["Popularity", "EASE"]
    assert {"HR@5", "NDCG@10", "MRR@20", "Coverage@10"} <= set(table.columns)
