"""Recall against exact search, and the least search effort that reaches a target recall."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from .base import VectorIndex, exact_top_k, recall_at_k


@dataclass
class RecallReport:
    """How well an index finds the exact top-k of real queries; saved with the index."""

    k: int
    queries: int
    recall: float              # recall@k against exact search
    recall_at_10: float
    search_effort: int | None  # the effort it was measured at (None = exact index or server default)
    target: float
    ms_per_query: float

    def to_dict(self) -> dict:
        return asdict(self)


def effort_ladder(kind: str, k: int, nlist: int = 0) -> list[int]:
    """Efforts to try, cheapest first: HNSW efSearch from k upward, IVF nprobe by steps of about 1.5x."""
    if kind.startswith("ivf"):
        steps = sorted({int(round(1.5 ** i)) for i in range(40)})
        return [p for p in steps if p < nlist] + [nlist]
    if kind == "hnsw":
        return sorted({max(16, int(k * f)) for f in (1, 1.25, 1.5, 2, 2.5, 3, 4, 6, 8, 10)} | {1000})
    return []


def exact_truth(ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """[n, k] ids of the exact top-k per query."""
    rows, _ = exact_top_k(vectors, queries, k, metric)
    return np.asarray(ids, dtype=object)[rows]


def measure(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, target: float = 0.0) -> RecallReport:
    """Search one query at a time (as a service would) and compare with the exact answer."""
    k = truth.shape[1]
    start = time.perf_counter()
    found = np.concatenate([index.search(q[None], k).ids for q in queries]) if len(queries) else truth[:0]
    seconds = time.perf_counter() - start
    return RecallReport(k, len(queries), recall_at_k(found, truth), recall_at_k(found[:, :10], truth[:, :10]),
                        getattr(index, "search_effort", None) or None, target, 1000 * seconds / max(len(queries), 1))


def tune(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, target: float) -> RecallReport:
    """Set the index to the least effort on its ladder whose recall reaches `target` (or the most it has)."""
    stats = index.stats()
    ladder = effort_ladder(stats.kind, truth.shape[1], stats.params.get("nlist", 0))
    if stats.backend == "pgvector":
        ladder = [e for e in ladder if e <= 1000]
    report = None
    for effort in ladder:
        index.search_effort = effort
        report = measure(index, queries, truth, target)
        if report.recall >= target:
            break
    return report or measure(index, queries, truth, target)
