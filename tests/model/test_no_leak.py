"""Guards against the one bug that makes every number a lie: the query seeing its own target."""

import numpy as np
import pandas as pd
from pathlib import Path

from tests.conftest import tiny_config
from twotower.data.dataset import build_dataset
from twotower.data.schema import validate_events
from twotower.data.split import holdout_last
from twotower.evaluate.protocol import EvalSet, evaluate_scorer
from twotower.model.recommender import build_model, tower_scorer
from twotower.model.trainer import train_towers


def random_log(seed=0, users=150, per_user=20, items=300):
    """Every event's item is drawn at random: nothing in the history or context predicts it."""
    rng = np.random.default_rng(seed)
    n = users * per_user
    events = pd.DataFrame({
        "user_id": np.repeat(np.arange(users), per_user), "item_id": rng.integers(0, items, n),
        "timestamp": np.tile(np.arange(per_user), users), "device": rng.choice(["ios", "web", "tv"], n),
        "user": rng.choice(list("abcde"), n),   # user columns named like internal ones stay the user's own values
    })
    catalog = pd.DataFrame({"item_id": np.arange(items).astype(str), "colour": rng.choice(list("abcdef"), items),
                            "price": rng.random(items)})
    cfg = tiny_config(train={"epochs": 15, "lr": 1e-2})
    return build_dataset(validate_events(events, cfg.data, Path("random.csv")), catalog, None, cfg), cfg


def test_context_holds_only_the_users_own_columns():
    data, _ = random_log()
    assert [s.name for s in data.context_specs] == ["device", "user"]     # positions are no clock: no time
    assert sorted(np.unique(data.context_features["user"])) == [1, 2, 3, 4, 5]   # codes of "a".."e"


def test_a_model_cannot_predict_random_targets():
    data, cfg = random_log()
    history, targets = holdout_last(data)
    val = EvalSet.make(history, targets)
    model = build_model(history, cfg)
    train_towers(model, history, cfg.train, show_progress=False)
    train_fit = evaluate_scorer(tower_scorer(model, history), val)
    assert train_fit["HR@10"] < 0.12      # chance is about 10/300; a leak of the target would give ~1


def test_movielens_context_is_time_that_holds_at_serving_never_the_absolute_time(small_ml):
    from twotower.data.time_features import NAMES, SINCE_PREVIOUS
    from twotower.pipeline import dataset_from_frames

    events, items, users = small_ml
    data = dataset_from_frames(events, items, users, tiny_config())
    assert [s.name for s in data.context_specs] == list(NAMES)
    later = dataset_from_frames(events.assign(timestamp=events["timestamp"] + 52 * 7 * 86400), items, users,
                                tiny_config())                     # the same log a year of whole weeks later
    for name in NAMES:
        np.testing.assert_allclose(later.context_features[name], data.context_features[name], atol=1e-5)
    off = dataset_from_frames(*small_ml, tiny_config(model={"request_time": False}))
    assert off.context_specs == [] and off.context_features == {}
    since = data.context_features[SINCE_PREVIOUS]
    assert since.min() < since.max()


def test_a_request_served_long_after_the_log_stays_inside_the_training_range(small_ml):
    from twotower.data.dataset import last_positive_times, request_context
    from twotower.pipeline import dataset_from_frames

    data = dataset_from_frames(*small_ml, tiny_config())
    users = np.arange(1, data.n_users + 1)
    years_later = float(data.events["timestamp"].max()) + 3 * 365 * 86400
    served = request_context(data.context_specs, np.full(len(users), years_later), last_positive_times(data)[users])
    for name, values in served.items():             # every value clipped into what training saw
        train = data.context_features[name]
        assert train.min() - 1e-6 <= values.min() and values.max() <= train.max() + 1e-6, name
