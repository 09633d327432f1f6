"""The index benchmark: build time, size, recall@10/100 against exact search, and single-thread query speed
for FAISS exact, FAISS HNSW and IVF, hnswlib and pgvector, on the same vectors and queries."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from twotower.index.base import IndexSpec, recall_at_k
from twotower.index.faiss_index import FaissIndex, choose_layout
from twotower.index.tuning import exact_truth, tune

K = 100


@dataclass
class VectorSet:
    """Items and queries to benchmark on; `tune_queries` pick settings, `queries` are measured."""

    name: str
    ids: np.ndarray
    items: np.ndarray
    queries: np.ndarray
    tune_queries: np.ndarray
    metric: str = "ip"


def synthetic(n: int, dim: int, kind: str = "structured", n_queries: int = 1000, seed: int = 0) -> VectorSet:
    """`structured`: like trained item vectors: a low-rank mixture of taste clusters plus noise, with norms
    growing with a Zipf popularity (popular items score higher under dot products); queries mix one to
    three clusters. `isotropic`: i.i.d. Gaussian items and queries, the worst case for any ANN index."""
    rng = np.random.default_rng(seed)
    m = n_queries + 500
    if kind == "isotropic":
        items = rng.standard_normal((n, dim), dtype=np.float32)
        queries = rng.standard_normal((m, dim), dtype=np.float32)
    else:
        rank, clusters = 16, 1000
        basis = rng.standard_normal((rank, dim)).astype(np.float32) / np.sqrt(rank)
        centres = rng.standard_normal((clusters, rank)).astype(np.float32)
        weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
        member = rng.choice(clusters, n, p=weights / weights.sum())
        items = np.empty((n, dim), np.float32)
        for lo in range(0, n, 100_000):
            hi = min(n, lo + 100_000)
            latent = centres[member[lo:hi]] + 0.5 * rng.standard_normal((hi - lo, rank), dtype=np.float32)
            items[lo:hi] = latent @ basis + 0.3 * rng.standard_normal((hi - lo, dim), dtype=np.float32)
        popularity = 1.0 / rng.permutation(np.arange(1, n + 1)) ** 0.5
        items *= (1.0 + 0.5 * np.log1p(popularity * n) / np.log1p(n))[:, None].astype(np.float32)
        picks = rng.choice(clusters, (m, 3))
        mix = rng.dirichlet(np.ones(3), m).astype(np.float32)
        latent = (centres[picks] * mix[..., None]).sum(1) + 0.3 * rng.standard_normal((m, rank), dtype=np.float32)
        queries = latent @ basis + 0.1 * rng.standard_normal((m, dim), dtype=np.float32)
    ids = np.asarray([f"i{j}" for j in range(n)], dtype=object)
    return VectorSet(f"synthetic {kind} {n:,} x {dim}", ids, items, queries[:n_queries].astype(np.float32),
                     queries[n_queries:].astype(np.float32))


def from_model(model_dir: Path, n_queries: int = 1000) -> VectorSet:
    """A trained model's own item vectors and its users' next-step queries."""
    from twotower.catalog import sample_queries
    from twotower.model.artifact import load_model

    saved = load_model(model_dir)
    ids, items = saved.item_vectors()
    queries = sample_queries(saved, n_queries + 500, seed=1)     # one per user: a small log has fewer
    n_tune = min(500, len(queries) // 3)
    metric = IndexSpec(saved.config.model.similarity, saved.config.model.dim).metric
    return VectorSet(f"model {model_dir.name} ({len(ids):,} items x {items.shape[1]})", ids, items,
                     queries[n_tune:], queries[:n_tune], metric)


@dataclass
class Row:
    vectors: str
    index: str
    settings: str
    build_s: float
    size_mb: float
    recall_at_10: float
    recall_at_100: float
    qps: float
    p50_ms: float
    p99_ms: float
    speedup: float = 0.0

    def brief(self) -> str:
        return f"{self.index} ({self.settings}): recall@100 {self.recall_at_100:.4f}, {self.qps:,.0f} queries/s"


def time_queries(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run queries one at a time, as a service would: (found ids [n, K], latencies in ms)."""
    found, lat = [], np.empty(len(queries))
    for i, q in enumerate(queries):
        t = time.perf_counter()
        found.append(search(q))
        lat[i] = 1000 * (time.perf_counter() - t)
    width = max(len(f) for f in found)
    return np.asarray([list(f) + [None] * (width - len(f)) for f in found], dtype=object), lat


def make_row(vs: VectorSet, truth: np.ndarray, index: str, settings: str, build_s: float, size_mb: float,
             found: np.ndarray, lat: np.ndarray) -> Row:
    return Row(vs.name, index, settings, build_s, size_mb, recall_at_k(found[:, :10], truth[:, :10]),
               recall_at_k(found[:, :K], truth), len(lat) / (lat.sum() / 1000), float(np.percentile(lat, 50)),
               float(np.percentile(lat, 99)))


DEFAULT = "FAISS default"


def faiss_rows(vs: VectorSet, truth: np.ndarray, tune_truth: np.ndarray, log) -> list[Row]:
    """FAISS exact, the default layout for this size (tuned to recall@100 >= 0.95 on held-out queries, then
    a couple of other operating points), and HNSW, all through `FaissIndex` (the product's own search path)."""
    spec, n = IndexSpec("dot" if vs.metric == "ip" else "euclidean", vs.items.shape[1]), len(vs.ids)
    default = choose_layout(n, exact_max_items=0)
    rows = []
    for label, layout, efforts in [
        ("FAISS exact (flat)", choose_layout(n, kind="flat"), [None]),
        (f"{DEFAULT} ({default.kind})", default, ["tuned", default.nlist // 16, default.nlist // 8]),
        ("FAISS HNSW", choose_layout(n, kind="hnsw"), ["tuned", 512]),
    ]:
        log(f"  building {label} ...")
        index = FaissIndex(spec, layout)
        t = time.perf_counter()
        index.build(vs.ids, vs.items, sample_queries=vs.tune_queries)
        build_s = time.perf_counter() - t
        size_mb = index.size_bytes() / 2**20
        for effort in efforts:
            tag = ""
            if effort == "tuned":
                effort = tune(index, vs.tune_queries, tune_truth, 0.95).search_effort
                tag = " (tuned on held-out queries)"
            if effort is not None:
                index.search_effort = effort
            found, lat = time_queries(lambda q: index.search(q[None], K).ids[0], vs.queries)
            settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in index.stats().params.items() if k != "norm_bound")
            rows.append(make_row(vs, truth, label, (settings or "-") + tag, build_s, size_mb, found, lat))
            log(f"    {rows[-1].brief()}")
    return rows


def hnswlib_rows(vs: VectorSet, truth: np.ndarray, log, m: int = 16, ef_construction: int = 200) -> list[Row]:
    import hnswlib

    log("  building hnswlib ...")
    index = hnswlib.Index(space="ip" if vs.metric == "ip" else "l2", dim=vs.items.shape[1])
    index.set_num_threads(1)
    t = time.perf_counter()
    index.init_index(len(vs.items), M=m, ef_construction=ef_construction)
    index.add_items(vs.items, np.arange(len(vs.items)), num_threads=1)
    build_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        index.save_index(f"{tmp}/h.bin")
        size_mb = Path(f"{tmp}/h.bin").stat().st_size / 2**20
    rows = []
    for ef in (128, 256, 512):
        index.set_ef(ef)
        found, lat = time_queries(lambda q: vs.ids[index.knn_query(q, K, num_threads=1)[0][0]], vs.queries)
        rows.append(make_row(vs, truth, "hnswlib", f"M {m}, ef_construction {ef_construction}, ef {ef}",
                             build_s, size_mb, found, lat))
        log(f"    {rows[-1].brief()}")
    return rows


def pgvector_rows(vs: VectorSet, truth: np.ndarray, log, dsn: str | None = None) -> list[Row]:
    """pgvector at its own defaults (m 16, ef_construction 64, ef_search 40), then with ef_search raised."""
    from twotower.index.pgvector_index import PgVectorIndex, embedded_dsn, stop_embedded

    with tempfile.TemporaryDirectory() as tmp:
        pgdata = None if dsn else Path(tmp) / "pgdata"
        dsn = dsn or embedded_dsn(pgdata)
        spec = IndexSpec("dot" if vs.metric == "ip" else "euclidean", vs.items.shape[1])
        index = PgVectorIndex(spec, dsn, "bench_items", hnsw_m=16, ef_construction=64)
        index.serial()
        log("  building pgvector ...")
        t = time.perf_counter()
        index.build(vs.ids, vs.items)
        build_s = time.perf_counter() - t
        size_mb = index.size_bytes() / 2**20
        rows = []
        for ef in (None, 200, 400):
            index.search_effort = ef
            found, lat = time_queries(lambda q: index.search(q[None], K).ids[0], vs.queries)
            label = "defaults: m 16, ef_construction 64, ef_search 40" if ef is None else \
                f"m 16, ef_construction 64, ef_search {ef}"
            rows.append(make_row(vs, truth, "pgvector HNSW", label, build_s, size_mb, found, lat))
            log(f"    {rows[-1].brief()}")
        index.drop()
        index.close()
        if pgdata is not None:
            stop_embedded(pgdata)      # before its folder goes
    return rows


def run(sets: list[VectorSet], backends: set[str], log=print) -> pd.DataFrame:
    """Every row for every vector set, single thread; speedup is QPS over FAISS exact on the same set."""
    faiss.omp_set_num_threads(1)
    rows: list[Row] = []
    for vs in sets:
        log(f"{vs.name}: exact top-{K} of {len(vs.queries)} + {len(vs.tune_queries)} queries ...")
        truth = exact_truth(vs.ids, vs.items, vs.queries, K, vs.metric)
        tune_truth = exact_truth(vs.ids, vs.items, vs.tune_queries, K, vs.metric)
        part = faiss_rows(vs, truth, tune_truth, log)
        if "hnswlib" in backends:
            part += hnswlib_rows(vs, truth, log)
        if "pgvector" in backends:
            part += pgvector_rows(vs, truth, log)
        exact_qps = part[0].qps
        for r in part:
            r.speedup = r.qps / exact_qps
        rows += part
    return pd.DataFrame([r.__dict__ for r in rows])
