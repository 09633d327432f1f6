"""Retrieve, then rank, from a saved model: the served rows are the rows the offline store gives for the
same time, the online store must be materialized (SQLite or Redis) and both give the same answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import tiny_config
from twotower.data.dataset import request_context
from twotower.errors import InputError
from twotower.features.materialize import FEATURES_DIR, SQLITE_FILE, materialize, offline_store, open_online_store
from twotower.index.model_index import open_model_index
from twotower.model.artifact import load_model
from twotower.model.recommender import tower_queries
from twotower.pipeline import dataset_from_frames, train_and_save
from twotower.rank.reranker import Reranker
from twotower.recommend import recommend
from twotower.serving import rank_candidates

CFG = tiny_config(rank={"candidates": 40, "slice_events": 3})


@pytest.fixture(scope="module")
def model(small_ml, tmp_path_factory):
    out = tmp_path_factory.mktemp("ranked") / "model"
    result = train_and_save(dataset_from_frames(*small_ml, CFG), CFG, out, {}, show_progress=False)
    assert result.ranker is not None and result.ranker.store.events > 0
    return out, result.ranker.reranker


def retrieved(folder, users=np.arange(1, 21)):
    saved = load_model(folder)
    hist = saved.history
    found = open_model_index(saved).search(tower_queries(saved.model, hist)(users, request_context(
        hist.context_specs, np.full(len(users), float(hist.events["timestamp"].max())))), 40)
    return saved, found


def test_served_rows_are_the_offline_rows_for_the_same_time(model):
    folder, trained = model
    saved, found = retrieved(folder)
    at = np.full(20, float(saved.history.events["timestamp"].max()) + 1.0)
    reranker = Reranker.load(folder)
    online = open_online_store(folder, saved.config.rank, saved.model_id)
    served = rank_candidates(reranker, online, saved.history, np.arange(1, 21), found, 10, at)
    offline = rank_candidates(trained, offline_store(folder, saved.config.rank), saved.history,
                              np.arange(1, 21), found, 10, at)
    np.testing.assert_array_equal(served.ids, offline.ids)
    np.testing.assert_allclose(served.scores, offline.scores, rtol=1e-9)
    assert not (served.ids == found.ids[:, :10]).all(), "the ranker reorders some list (a test that can fail)"


def test_recommend_ranks_and_needs_a_materialized_store(model, tmp_path):
    folder, _ = model
    first = recommend(folder, "all", 10, tmp_path / "a.csv", show_progress=False)
    assert first.ranked and first.rows == 10 * first.users
    retrieval = recommend(folder, "all", 10, tmp_path / "r.csv", show_progress=False, rerank=False)
    assert not retrieval.ranked
    a, r = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "r.csv")
    assert (a["item_id"] != r["item_id"]).any()
    (folder / FEATURES_DIR / SQLITE_FILE).unlink()
    with pytest.raises(InputError, match="materialize"):
        recommend(folder, "all", 10, tmp_path / "b.csv", show_progress=False)
    assert not (tmp_path / "b.csv").exists()
    saved = load_model(folder)
    materialize(folder, saved.config.rank, saved.model_id, show_progress=False)
    recommend(folder, "all", 10, tmp_path / "b.csv", show_progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b.csv"), a)


def test_a_redis_online_store_gives_the_same_recommendations(model, redis_server, tmp_path):
    folder, _ = model
    recommend(folder, "all", 10, tmp_path / "sqlite.csv", show_progress=False)
    saved = load_model(folder)
    redis_cfg = saved.config.rank.model_copy(update={"online_store": "redis", "redis_url": redis_server.url})
    try:
        materialize(folder, redis_cfg, saved.model_id, show_progress=False)
        materialize(folder, redis_cfg, saved.model_id, show_progress=False)   # a reload never double-counts
        recommend(folder, "all", 10, tmp_path / "redis.csv", show_progress=False)
    finally:
        materialize(folder, saved.config.rank, saved.model_id, show_progress=False)   # back to SQLite
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "redis.csv"), pd.read_csv(tmp_path / "sqlite.csv"))
