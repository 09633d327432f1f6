"""Retrieve then rank under the protocol, on a real MovieLens slice: candidates, the later slice the ranker
learns from, and the table."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from tests.conftest import tiny_config
from twotower.evaluate.protocol import masked_scores, split_for_protocol
from twotower.evaluate.towers import TowerRecommender
from twotower.model.recommender import tower_scorer
from twotower.pipeline import dataset_from_frames
from twotower.data.split import Targets
from benchmarks.lib.two_stage_eval import evaluate_two_stage
from twotower.rank.two_stage import candidates, shown_without_click, slice_requests


def fit_retriever(cfg):
    def fit(history, early_stopping):
        towers = TowerRecommender(cfg, show_progress=False)
        towers.fit(history, early_stopping)
        return lambda h: tower_scorer(towers.model, h)
    return fit


def test_the_ranker_slice_lies_after_its_retrievers_training_events(small_ml):
    data = dataset_from_frames(*small_ml, tiny_config())
    base, steps = slice_requests(data, 3)
    assert len(steps) == 3
    last_base = base.events.groupby("user")["timestamp"].max()
    for newer, older in zip(steps, steps[1:]):
        assert (newer.targets.times >= last_base.reindex(newer.targets.users).to_numpy()).all()
        assert len(newer.history.events) > len(older.history.events)
    held = sum(len(s.targets) for s in steps)
    assert len(base.events) + held <= len(data.events)
    assert (data.events["weight"] > 0).sum() - (base.events["weight"] > 0).sum() >= held
    capped_base, capped = slice_requests(data, 3, max_requests=100)
    assert sum(len(s.targets) for s in capped) == 100 and len(capped_base.events) == len(base.events)
    assert all(set(c.targets.users) <= set(s.targets.users) for c, s in zip(capped, steps))


def test_two_stage_table_on_real_data(small_ml):
    cfg = tiny_config(rank={"candidates": 50, "slice_events": 3})
    data = dataset_from_frames(*small_ml, cfg)
    val, test = split_for_protocol(data)
    towers = TowerRecommender(cfg, show_progress=False)
    towers.fit(val.history, val)

    rows = candidates(tower_scorer(towers.model, test.history), test, 50)
    assert rows.groupby("request").size().eq(50).all()
    seen = test.seen[rows["user"].to_numpy(), rows["item"].to_numpy()]
    assert np.asarray(seen).sum() == 0, "candidates never include items the user already had"
    hits = rows[rows["grade"] > 0]
    assert (hits["item"].to_numpy() == test.targets.items[hits["request"].to_numpy()]).all()

    # logged no-click impressions join the list as negatives, with their true retrieval rank
    _, scores = next(masked_scores(tower_scorer(towers.model, test.history), test))
    far = [np.argsort(-s, kind="stable")[[60, 61]] for s in scores[:3]]
    shown = far + [np.zeros(0, np.int64)] * (len(test.targets) - 3)
    with_shown = candidates(tower_scorer(towers.model, test.history), test, 50, shown)
    assert len(with_shown) == len(rows) + 6
    extra = with_shown[with_shown["retrieval_rank"] > 50]
    assert sorted(extra["retrieval_rank"].tolist()) == [61, 61, 61, 62, 62, 62]
    assert (extra["grade"] == 0).all() and set(extra["request"]) == {0, 1, 2}

    result = evaluate_two_stage(data, val, test, fit_retriever(cfg), cfg.rank)
    table = result.table.set_index("order")
    assert list(table.index) == ["retrieval (two towers)", "ranked (LambdaRank)"]
    assert table["recall@N"].nunique() == 1 and 0 < table["recall@N"].iloc[0] <= 1
    assert table["NDCG@10"].between(0, 1).all()
    report = result.reranker.ranker.report
    per_source = result.reranker.source_candidates * len(result.reranker.sources)
    assert report["requests"] > 0 and 50 * report["requests"] < report["rows"] <= (50 + per_source) * report["requests"]
    gain, low, high = map(float, re.fullmatch(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]",
                                              table.loc["ranked (LambdaRank)", "gain"]).groups())
    assert low <= gain <= high
    # the gain is ranked minus retrieval NDCG@10 over the same requests (rounded to 4 places in the table)
    assert gain == pytest.approx(table.loc["ranked (LambdaRank)", "NDCG@10"] - table.loc["retrieval (two towers)",
                                                                                         "NDCG@10"], abs=2e-4)


def test_impressions_without_a_click_are_found_in_the_window_before_the_choice():
    import pandas as pd

    events = pd.DataFrame({"user": [1, 1, 1, 1, 2], "item": [5, 6, 7, 8, 9], "timestamp": [100., 290., 300., 300., 300.],
                           "weight": [0., 0., 0., 1., 0.]})
    targets = Targets(np.array([1, 2, 3]), np.array([8, 1, 1]), {}, np.array([300., 299., 300.]), np.ones(3))
    got = shown_without_click(events, targets, window_s=60)
    assert [g.tolist() for g in got] == [[6, 7], [], []]
    assert shown_without_click(events, targets, window_s=1000)[0].tolist() == [5, 6, 7]


def test_a_user_gives_the_slice_at_most_its_share_of_positives(small_ml):
    data = dataset_from_frames(*small_ml, tiny_config())
    positives = data.events[data.events["weight"] > 0].groupby("user").size()
    _, steps = slice_requests(data, 10, share=0.3)
    held = pd.Series(np.concatenate([s.targets.users for s in steps])).value_counts()
    cap = np.minimum(10, np.maximum(1, np.floor(0.3 * positives)))
    assert (held <= cap.reindex(held.index)).all()
    assert (held == cap.reindex(held.index)).any(), "the cap is reached (a test that can fail)"
