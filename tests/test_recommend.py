"""Retrieve, then rank, from a saved model: the served rows are the rows the offline store gives for the
same time, the online store must be materialized (SQLite or Redis) and both give the same answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import tiny_config
from twotower.errors import InputError
from twotower.features.materialize import FEATURES_DIR, SQLITE_FILE, materialize
from twotower.model.artifact import load_model
from twotower.pipeline import dataset_from_frames, train_and_save
from twotower.recommend import recommend
from twotower.serving import Server

CFG = tiny_config(rank={"candidates": 40, "slice_events": 3})


@pytest.fixture(scope="module")
def model(small_ml, tmp_path_factory):
    out = tmp_path_factory.mktemp("ranked") / "model"
    result = train_and_save(dataset_from_frames(*small_ml, CFG), CFG, out, {}, show_progress=False)
    assert result.ranker is not None and result.ranker.store.events > 0
    return out, result.ranker.reranker


def test_served_rows_are_the_offline_rows_for_the_same_time(model):
    folder, _ = model
    users = np.arange(1, 21)
    at = np.full(20, float(load_model(folder).history.events["timestamp"].max()) + 1.0)
    lists = {}
    for name, kwargs in {"online": {}, "offline": {"point_in_time": True}, "retrieval": {"rerank": False}}.items():
        server = Server.open(folder, **kwargs)
        try:
            lists[name] = server.top_k(users, 10, at=at)
        finally:
            server.close()
    np.testing.assert_array_equal(lists["online"].ids, lists["offline"].ids)
    np.testing.assert_allclose(lists["online"].scores, lists["offline"].scores, rtol=1e-9)
    assert not (lists["online"].ids == lists["retrieval"].ids).all(), "the ranker reorders some list (can fail)"


def test_candidate_sources_bring_items_the_towers_did_not(model):
    """The ranker's sources (co-visitation, EASE, trending) add candidates beyond the towers' top N: with
    N = k, some served item is not in the towers' own list."""
    folder, reranker = model
    assert [s.name for s in reranker.sources] == ["covisit", "ease", "trending"]
    users = np.arange(1, 21)
    lists = {}
    for rerank in (True, False):
        server = Server.open(folder, rerank=rerank)
        try:
            cfg = server.saved.config
            server.saved.config = cfg.model_copy(update={"rank": cfg.rank.model_copy(update={"candidates": 10})})
            lists[rerank] = server.top_k(users, 10)
        finally:
            server.close()
    outside = [set(lists[True].hits(r)) - set(lists[False].hits(r)) for r in range(len(users))]
    assert any(outside), "every served item came from the towers"
    assert all(len(lists[True].hits(r)) == 10 for r in range(len(users)))


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


def test_shards_split_the_users_without_overlap_and_together_give_the_whole_output(model, tmp_path):
    folder, _ = model
    whole = recommend(folder, "all", 5, tmp_path / "all.csv", show_progress=False)
    parts = [recommend(folder, "all", 5, tmp_path / f"part-{k}.csv", show_progress=False, shard=(k, 3))
             for k in (1, 2, 3)]
    frames = [pd.read_csv(tmp_path / f"part-{k}.csv", dtype={"user_id": str, "item_id": str}) for k in (1, 2, 3)]
    users = [set(f["user_id"]) for f in frames]
    assert all(len(u) > 0 for u in users) and not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
    assert sum(p.users for p in parts) == whole.users
    together = pd.concat(frames).sort_values(["user_id", "rank"], ignore_index=True)
    expected = pd.read_csv(tmp_path / "all.csv", dtype={"user_id": str, "item_id": str})
    pd.testing.assert_frame_equal(together, expected.sort_values(["user_id", "rank"], ignore_index=True))


@pytest.mark.parametrize("spec", ["0/3", "4/3", "2", "a/b", "1/0"])
def test_a_bad_shard_is_one_clear_error(spec):
    from twotower.recommend import parse_shard

    with pytest.raises(InputError, match="--shard"):
        parse_shard(spec)
