"""The ranker's training rows on disk: chunks of whole requests, a fixed train/valid draw, and a ranker that
does not depend on how its rows were chunked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import tiny_config
from tests.rank.test_ranker import candidate_rows
from twotower.evaluate.towers import TowerRecommender
from twotower.features.materialize import offline_store
from twotower.model.recommender import tower_scorer
from twotower.pipeline import dataset_from_frames
from twotower.rank import training_rows
from twotower.rank.ranker import LambdaRanker
from twotower.rank.training_rows import RankingRows, SplitRows, chunks
from twotower.rank.two_stage import event_log, train_reranker


def test_chunks_cover_every_request_once_near_the_row_budget():
    parts = list(chunks(1003, rows_per_request=250, chunk_rows=10_000))
    covered = np.concatenate([np.arange(p.start, p.stop) for p in parts])
    assert covered.tolist() == list(range(1003))
    assert max(p.stop - p.start for p in parts) == 40                   # 40 requests x 250 rows = 10,000
    assert list(chunks(3, rows_per_request=10**9, chunk_rows=10)) == [slice(0, 1), slice(1, 2), slice(2, 3)]


def test_each_request_lies_whole_on_one_side_of_a_fixed_draw(tmp_path):
    rows = candidate_rows(n_requests=300, n=10)
    split = SplitRows.create(tmp_path / "a", ["signal"], 300, valid_fraction=0.25)
    for start in range(0, 300, 70):
        split.add(rows[rows["request"].between(start, start + 69)])
    train, valid = (np.concatenate(side.requests) for side in (split.train, split.valid))
    assert not set(train) & set(valid) and len(set(train) | set(valid)) == 300
    assert (split.train.group_sizes == 10).all() and (split.valid.group_sizes == 10).all()
    assert 40 <= len(set(valid)) <= 110
    again = SplitRows.create(tmp_path / "b", ["signal"], 300, valid_fraction=0.25)
    assert (again.held == split.held).all()
    assert np.allclose(split.train.column("signal"), rows.loc[~split.held[rows["request"]], "signal"], atol=1e-6)


def _fit_in_parts(tmp_path, rows, requests_per_part: int) -> LambdaRanker:
    features = ["signal", "noise", "retrieval_score"]
    split = SplitRows.create(tmp_path / str(requests_per_part), features, int(rows["request"].max()) + 1)
    for start in range(0, int(rows["request"].max()) + 1, requests_per_part):
        split.add(rows[rows["request"].between(start, start + requests_per_part - 1)])
    return LambdaRanker(features, base="retrieval_score").fit_rows(split, compare=["retrieval_score"])


def test_a_ranker_from_many_parts_is_the_ranker_from_one(tmp_path):
    rows, test = candidate_rows(seed=1), candidate_rows(seed=2)
    one = _fit_in_parts(tmp_path, rows, 10**6)
    many = _fit_in_parts(tmp_path, rows, 7)
    assert len(list((tmp_path / "7" / "train").glob("part-*.npy"))) > 40
    assert one.report == many.report
    assert np.allclose(one.score(test), many.score(test))
    assert one.report["valid_ndcg@10"] > one.report["base_ndcg@10"] + 0.2     # and it learned the signal


def test_the_served_ranker_trains_from_rows_built_a_chunk_at_a_time(small_ml, tmp_path, monkeypatch):
    """train_reranker with a row budget of ~2 requests per chunk writes many parts, none above the budget, of
    the rows one chunk gets (the towers' scores to float32 rounding: a batch's size may change the last bit
    of a matrix product), and learns the same ranker from them."""
    cfg = tiny_config(rank={"candidates": 40, "slice_events": 2, "sources": ["covisit"], "source_candidates": 10})
    data = dataset_from_frames(*small_ml, cfg)
    store = offline_store(tmp_path, cfg.rank)
    store.write_events(event_log(data))
    trained = {}

    def fit_retriever(history, early_stopping):        # the same retriever for both runs
        if "towers" not in trained:
            trained["towers"] = TowerRecommender(cfg, show_progress=False)
            trained["towers"].fit(history, early_stopping)
        return lambda h: tower_scorer(trained["towers"].model, h)

    parts: dict[str, list] = {"whole": [], "chunked": []}
    add = RankingRows.add
    run = ["whole"]
    monkeypatch.setattr(RankingRows, "add", lambda self, rows, *a: (parts[run[0]].append(rows), add(self, rows, *a)))
    whole = train_reranker(data, fit_retriever, cfg.rank, store)
    run[0] = "chunked"
    monkeypatch.setattr(training_rows, "CHUNK_ROWS", 100)
    chunked = train_reranker(data, fit_retriever, cfg.rank, store)
    sizes = [len(p) for p in parts["chunked"]]
    assert len(sizes) > 50 and max(sizes) <= 100 and len(parts["whole"]) < 5
    one, many = (pd.concat(parts[k]).sort_values(["request", "item"]).reset_index(drop=True) for k in parts)
    assert list(one.columns) == list(many.columns) and len(one) == len(many)
    for column in one.columns:
        a, b = one[column].to_numpy(), many[column].to_numpy()
        if a.dtype == object:
            assert (a == b).all(), column
        else:
            assert np.allclose(a.astype(float), b.astype(float), rtol=1e-5, atol=1e-6, equal_nan=True), column
    assert chunked.ranker.report["valid_ndcg@10"] == pytest.approx(whole.ranker.report["valid_ndcg@10"], abs=0.01)


def test_when_no_held_request_kept_its_target_the_last_training_part_stops_the_trees(tmp_path):
    rows = candidate_rows(n_requests=60, n=10)
    split = SplitRows.create(tmp_path, ["signal"], 60, valid_fraction=0.2)
    split.add(rows[~split.held[rows["request"]]].loc[lambda r: r["request"] < 30])
    split.add(rows[~split.held[rows["request"]]].loc[lambda r: r["request"] >= 30])
    assert not len(split.valid) and len(split.train.parts) == 2
    split.settle()
    assert len(split.valid) and len(split.train.parts) == 1
    assert not set(np.concatenate(split.train.requests)) & set(np.concatenate(split.valid.requests))


def test_grades_follow_the_logs_levels_not_a_parts():
    from twotower.rank.ranker import relevance_grades

    assert relevance_grades(np.array([5.0, 0.0])).tolist() == [1, 0]                 # alone, 5 is the only level
    assert relevance_grades(np.array([5.0, 0.0]), levels=np.array([1.0, 5.0])).tolist() == [2, 0]
