"""FAISS backend: recall against exact search for every layout and metric, and the item lifecycle
(upsert, delete, filters) surviving save/load."""

from __future__ import annotations

import numpy as np
import pytest

from twotower.errors import InputError
from twotower.index.base import IndexSpec, exact_top_k, recall_at_k
from benchmarks.lib.index_bench import synthetic
from twotower.index.faiss_index import FaissIndex, choose_layout


@pytest.fixture(scope="module")
def vectors():
    return synthetic(4000, 16, "structured", n_queries=60, seed=3)


def built(vs, kind: str, similarity: str = "dot") -> FaissIndex:
    index = FaissIndex(IndexSpec(similarity, 16), choose_layout(len(vs.ids), exact_max_items=0, kind=kind,
                                                                search_effort=200 if kind == "hnsw" else 0))
    if kind.startswith("ivf"):
        index.search_effort = 32
    index.build(vs.ids, vs.items)
    return index


def test_choose_layout_follows_the_size_rule():
    assert choose_layout(10_000, exact_max_items=50_000).kind == "flat"
    assert choose_layout(50_001, exact_max_items=50_000).kind == "ivf-sq8"
    assert choose_layout(1_000_000, kind="ivf").nlist == 4000


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivf-sq8"])
@pytest.mark.parametrize("similarity", ["dot", "euclidean"])
def test_search_matches_exact_search(vectors, kind, similarity):
    index = built(vectors, kind, similarity)
    found = index.search(vectors.queries, 50)
    rows, exact_scores = exact_top_k(vectors.items, vectors.queries, 50, index.spec.metric)
    recall = recall_at_k(found.ids, vectors.ids[rows])
    assert recall == 1.0 if kind == "flat" else recall >= 0.9
    # scores are the true similarity of the item returned (minus squared distance for Euclidean)
    got = index.vectors(list(found.ids[0, :5]))
    q = vectors.queries[0]
    truth = got @ q if similarity == "dot" else -((got - q) ** 2).sum(1)
    np.testing.assert_allclose(found.scores[0, :5], truth, rtol=1e-4, atol=1e-3)
    assert (np.diff(found.scores, axis=1) <= 1e-4).all(), "best first"


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivf-sq8"])
def test_upsert_and_delete_survive_save_and_load(vectors, kind, tmp_path):
    index = built(vectors, kind)
    q = vectors.queries[:1]
    top = index.search(q, 5).ids[0]
    assert index.delete(list(top[:3]) + ["no-such-item"]) == 3
    index.upsert(["brand-new"], q * 3)           # far along the query: it must come first
    index.upsert([top[3]], -q)                   # moved away from the query: it must drop out
    for current in (index, FaissIndex.load(tmp_path / "ix", _saved(index, tmp_path / "ix"))):
        hits = current.search(q, 20).hits(0)
        assert hits[0] == "brand-new"
        assert not set(top[:4]) & set(hits)
        assert len(current) == len(vectors.ids) - 2
        np.testing.assert_allclose(current.vectors(["brand-new"]), q * 3, rtol=1e-5)


def _saved(index, folder):
    import json

    index.save(folder)
    return json.loads((folder / "index.json").read_text())


def test_exclude_and_allow_filters(vectors):
    index = built(vectors, "hnsw")
    q = vectors.queries[:2]
    plain = index.search(q, 10)
    seen = set(plain.ids[0, :4])
    filtered = index.search(q, 10, exclude=[seen, set()])
    assert not seen & set(filtered.hits(0)) and len(filtered.hits(0)) == 10
    assert filtered.hits(1) == plain.hits(1)
    allow = {"i1", "i2", "i3", str(plain.ids[1, 0])}
    only = index.search(q, 10, allow=allow)
    assert set(only.hits(0)) == allow and only.hits(1)[0] == plain.ids[1, 0]


def test_hnsw_deletes_compact_and_a_long_vector_rebuilds_the_bound(vectors):
    index = built(vectors, "hnsw")
    gone = list(vectors.ids[: len(vectors.ids) // 3])
    index.delete(gone)
    assert index._dead == set(), "a third deleted: the graph was rebuilt without them"
    hits = index.search(vectors.queries, 30)
    assert not set(gone) & set(hits.ids.ravel())
    longest = float((vectors.items ** 2).sum(1).max())
    index.upsert(["giant"], vectors.queries[:1] / np.linalg.norm(vectors.queries[0]) * 10 * np.sqrt(longest))
    assert index.layout.norm_bound > longest * 50
    assert index.search(vectors.queries[:1], 1).hits(0) == ["giant"]


def test_bad_vectors_and_mismatched_specs_are_clear_errors(vectors):
    index = built(vectors, "flat")
    with pytest.raises(InputError, match="shape"):
        index.upsert(["x"], np.zeros((1, 8), np.float32))
    with pytest.raises(InputError, match="NaN"):
        index.upsert(["x"], np.full((1, 16), np.nan, np.float32))
    with pytest.raises(InputError, match="dims"):
        index.search(np.zeros((1, 8), np.float32), 5)
    with pytest.raises(InputError, match="similarity='dot' but the model has 'cosine'"):
        index.spec.require(IndexSpec("cosine", 16), "index.json")


@pytest.mark.parametrize("kind, transform", [("structured", "mips"), ("isotropic", "none")])
def test_hnsw_over_inner_products_picks_its_transform_by_measurement(kind, transform):
    """Varying norms (popularity) favour the MIPS-to-L2 reduction; near-equal norms favour the raw graph."""
    vs = synthetic(6000, 32, kind, n_queries=100, seed=1)
    index = FaissIndex(IndexSpec("dot", 32), choose_layout(len(vs.ids), kind="hnsw"))
    index.build(vs.ids, vs.items, sample_queries=vs.tune_queries)
    assert index.layout.transform == transform
    rows, _ = exact_top_k(vs.items, vs.queries, 100, "ip")
    index.search_effort = 400
    assert recall_at_k(index.search(vs.queries, 100).ids, vs.ids[rows]) >= 0.9


def test_exact_reranking_in_blocks_gives_the_same_answer():
    """A query with thousands of candidates (a user with thousands of seen items) is re-ranked a block of
    queries at a time: the same scores and order as all at once."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    index = FaissIndex(IndexSpec("dot", 16), choose_layout(3000, exact_max_items=0, kind="ivf-sq8"))
    index.build([f"i{j}" for j in range(3000)], vectors)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    labels = rng.integers(-1, 3000, (40, 500))
    whole = index._rerank(queries, labels, 100)
    blocks = index._rerank(queries, labels, 100, block_floats=3 * 500 * 16)     # 3 queries a block
    np.testing.assert_array_equal(whole[1], blocks[1])
    np.testing.assert_allclose(whole[0], blocks[0])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf-sq8"])
def test_a_loaded_index_maps_its_file_and_changes_like_one_never_saved(vectors, kind, tmp_path):
    """A loaded index searches the file's pages in place (listed in this process's memory maps) and copies
    itself into memory at its first change: the same answers as the index it was saved from, no abort."""
    from pathlib import Path as P

    original = built(vectors, kind)
    loaded = FaissIndex.load(tmp_path / "ix", _saved(original, tmp_path / "ix"))
    if P("/proc/self/maps").exists():
        assert str(tmp_path / "ix" / "faiss.index") in P("/proc/self/maps").read_text()
    q = vectors.queries[:3]
    assert np.array_equal(loaded.search(q, 20).ids, original.search(q, 20).ids)
    top = list(original.search(q[:1], 5).ids[0])
    for index in (original, loaded):
        index.delete(top[:2])
        index.upsert(["brand-new"], q[:1] * 3)
    for index in (original, loaded):
        assert index.search(q[:1], 1).hits(0) == ["brand-new"]
        assert not set(top[:2]) & set(index.search(q, 20).ids.ravel())
    assert np.array_equal(loaded.search(q, 20).ids, original.search(q, 20).ids)
    assert loaded.search_effort == original.search_effort

