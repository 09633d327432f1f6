"""Retrieve then rank under the protocol, on a real MovieLens slice."""

from __future__ import annotations

import numpy as np

from tests.conftest import tiny_config
from twotower.evaluate.protocol import split_for_protocol
from twotower.model.recommender import TowerRecommender, tower_scorer
from twotower.pipeline import dataset_from_frames
from twotower.rank.two_stage import candidates, evaluate_two_stage


def test_two_stage_table_on_real_data(small_ml):
    cfg = tiny_config()
    data = dataset_from_frames(*small_ml, cfg)
    val, test = split_for_protocol(data)
    towers = TowerRecommender(cfg, show_progress=False)
    towers.fit(val.history, val)
    val_scorer, test_scorer = tower_scorer(towers.model, val.history), tower_scorer(towers.model, test.history)

    rows = candidates(test_scorer, test, 50)
    assert rows.groupby("request").size().eq(50).all()
    seen = test.seen[rows["user"].to_numpy(), rows["item"].to_numpy()]
    assert np.asarray(seen).sum() == 0, "candidates never include items the user already had"
    hits = rows[rows["grade"] > 0]
    assert (hits["item"].to_numpy() == test.targets.items[hits["request"].to_numpy()]).all()

    result = evaluate_two_stage(data, val, test, val_scorer, test_scorer, n=50)
    table = result.table.set_index("order")
    assert list(table.index) == ["retrieval (two towers)", "ranked (LambdaRank)"]
    assert table["recall@N"].nunique() == 1 and 0 < table["recall@N"].iloc[0] <= 1
    assert len(hits) / len(test.targets) == table["recall@N"].iloc[0]
    assert table["NDCG@10"].between(0, 1).all()
