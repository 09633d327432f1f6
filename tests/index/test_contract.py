"""One contract for every index: each FAISS layout and pgvector, built from a spec string, passes the same
tests (search against exact search, exclude and allow, upsert, delete, vectors, save and load, describe)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.lib.index_bench import synthetic
from twotower.errors import InputError
from twotower.index.base import IndexSpec, VectorIndex, exact_top_k, recall_at_k
from twotower.index.factory import make_vector_index, parse_index_spec

SPECS = ["faiss:flat", "faiss:hnsw,m=16,ef_construction=80,ef_search=200", "faiss:ivf,nlist=40,nprobe=20",
         "faiss:ivf-sq8,nlist=40,nprobe=20,refine=4", "pgvector:hnsw,m=16,ef_construction=64,ef_search=200"]


@pytest.fixture(scope="module")
def vectors():
    return synthetic(2000, 16, "structured", n_queries=30, seed=11)


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    """An embedded PostgreSQL + pgvector for the pgvector rows (started on first use)."""
    from tests.conftest import need_pgvector

    need_pgvector(tmp_path_factory)
    from twotower.index.pgvector_index import embedded_dsn, stop_embedded

    pgdata = tmp_path_factory.mktemp("pg-contract") / "pgdata"
    yield pgdata, embedded_dsn(pgdata)
    stop_embedded(pgdata)


@pytest.fixture(params=SPECS)
def index(request, vectors) -> VectorIndex:
    dsn = request.getfixturevalue("pg_server")[1] if request.param.startswith("pgvector") else None
    table = f"contract_{request.node.name.split('[')[0][-20:].replace('-', '_')}"
    made = make_vector_index(request.param, IndexSpec("dot", 16, model="m1"), len(vectors.ids), dsn=dsn,
                             table=table.lower())
    made.build(vectors.ids, vectors.items)
    yield made
    made.close()


def test_describe_gives_back_the_spec_string(index, vectors, request):
    assert isinstance(index, VectorIndex)
    assert index.describe() == request.node.callspec.params["index"]
    assert len(index) == 2000 and sorted(index.ids()) == sorted(vectors.ids)
    assert index.first_id() in set(vectors.ids)


def test_search_finds_what_exact_search_finds(index, vectors):
    found = index.search(vectors.queries, 20)
    rows, _ = exact_top_k(vectors.items, vectors.queries, 20, "ip")
    assert recall_at_k(found.ids, vectors.ids[rows]) >= 0.9
    assert (np.diff(found.scores, axis=1) <= 1e-4).all(), "best first"


def test_exclude_and_allow(index, vectors):
    q = vectors.queries[:2]
    top = index.search(q, 5)
    skip = [set(top.hits(0)[:3]), set()]
    again = index.search(q, 5, exclude=skip)
    assert not skip[0] & set(again.hits(0)) and again.hits(1) == top.hits(1)
    allowed = list(vectors.ids[:50])
    only = index.search(q, 10, allow=allowed)
    assert set(only.hits(0)) <= set(allowed) and len(only.hits(0)) == 10


def test_upsert_delete_and_vectors(index, vectors):
    q = vectors.queries[:1]
    first = index.search(q, 3).hits(0)
    index.upsert(["brand-new"], q * 10)                  # far along the query: first
    assert index.search(q, 1).hits(0) == ["brand-new"]
    np.testing.assert_allclose(index.vectors(["brand-new"]), q * 10, rtol=1e-5)
    assert index.delete([first[0], "no-such-item"]) == 1
    assert first[0] not in index.search(q, 10).hits(0)
    with pytest.raises(KeyError, match="no-such-item"):
        index.vectors(["no-such-item"])


def test_save_and_load_keep_the_content(index, vectors, tmp_path):
    from twotower.index.faiss_index import FaissIndex
    from twotower.index.pgvector_index import PgVectorIndex

    index.upsert(["brand-new"], vectors.queries[:1] * 10)
    index.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert meta["index"] == index.describe()
    if index.backend == "faiss":
        loaded = FaissIndex.load(tmp_path / "ix", meta)
    else:
        loaded = PgVectorIndex.load(tmp_path / "ix", {**meta, "dsn": index.dsn})
    try:
        assert len(loaded) == len(index) and loaded.describe() == index.describe()
        assert sorted(loaded.ids()) == sorted(index.ids()) and loaded.first_id() in set(index.ids())
        assert loaded.search(vectors.queries[:1], 1).hits(0) == ["brand-new"]
    finally:
        if loaded is not index:
            loaded.close()


@pytest.mark.parametrize("text", ["annoy:hnsw", "faiss:pq", "faiss:hnsw,m=x", "faiss:hnsw,q=3", "pgvector:ivf", "faiss"])
def test_bad_spec_strings_are_clear_errors(text):
    with pytest.raises(InputError, match="index spec"):
        parse_index_spec(text)
