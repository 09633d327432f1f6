"""The vector index contract: what every backend offers, what it records, and how its recall is checked."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InputError

# The towers' similarity -> the metric an index needs. After `Similarity.prepare_query/prepare_item`,
# dot, cosine and Hadamard are inner products; Euclidean ranks by (negative) squared L2 distance.
METRIC_OF = {"dot": "ip", "cosine": "ip", "hadamard": "ip", "euclidean": "l2"}


@dataclass(frozen=True)
class IndexSpec:
    """What the vectors in an index mean; a query from a model with another spec is refused."""

    similarity: str
    dim: int
    model: str = ""          # fingerprint of the model whose item tower made the vectors ("" = not from a model)

    @property
    def metric(self) -> str:
        return METRIC_OF[self.similarity]

    def require(self, expected: "IndexSpec", where: str) -> None:
        """Raise a clear error when this index was built for other vectors than `expected` describes."""
        for name in ("similarity", "dim", "model"):
            have, want = getattr(self, name), getattr(expected, name)
            if have != want:
                raise InputError(where, f"the index was built with {name}={have!r} but the model has {want!r}",
                                 "rebuild it: `twotower index --model DIR`")


@dataclass
class SearchResult:
    """Top-k per query, best first. Slots past the last hit hold id None and score -inf."""

    ids: np.ndarray      # [n, k] object (the user's item ids)
    scores: np.ndarray   # [n, k] float32: inner product, or minus the squared L2 distance

    def hits(self, row: int) -> list[str]:
        return [i for i in self.ids[row] if i is not None]


@dataclass
class IndexStats:
    backend: str
    kind: str                       # e.g. "flat", "hnsw", "ivf"
    items: int
    dim: int
    similarity: str
    params: dict = field(default_factory=dict)
    recall: dict = field(default_factory=dict)    # {"k": 100, "recall": 0.97, "queries": 1000}

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class VectorIndex(Protocol):
    """Item vectors searchable by query vectors. Ids are the user's item ids (strings). `describe()` names
    the backend and structure as a spec string (`faiss:ivf-sq8,nlist=4000,nprobe=32`, `pgvector:hnsw,m=16`)
    that `index.factory.make_vector_index` builds an empty index from."""

    spec: IndexSpec
    backend: str
    recall: dict                  # the last recall measurement against exact search (saved with the index)
    search_effort: int | None     # efSearch / nprobe; None or 0 where the structure has no such knob

    def build(self, ids: Sequence[str], vectors: np.ndarray, progress: Callable[[int], None] | None = None) -> None:
        """Replace the whole content with these items (`progress(n)` after each chunk of n)."""

    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add new items or replace the vectors of known ones; searchable as soon as this returns."""

    def delete(self, ids: Sequence[str]) -> int:
        """Remove items (unknown ids are ignored); returns how many were removed."""

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[Collection[str]] | None = None,
               allow: Collection[str] | None = None) -> SearchResult:
        """Top-k items per query; `exclude[i]` is never returned for query i (e.g. items already seen);
        with `allow`, only those items are candidates."""

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of these items (a KeyError names a missing one)."""

    def contains(self, ids: Sequence[str]) -> np.ndarray:
        """[n] True for the ids the index holds (without listing a large catalog)."""

    def ids(self) -> np.ndarray:
        """Every item id in the index."""

    def first_id(self) -> str | None:
        """One item id in the index (for a probe), without listing them all; None when it is empty."""

    def save(self, folder: Path) -> None:
        """Persist beside the model (a server backend saves where to find its table)."""

    def stats(self) -> IndexStats:
        """Backend, structure, size, parameters and the recorded recall."""

    def describe(self) -> str:
        """The spec string of this index's backend, structure and parameters."""

    def close(self) -> None:
        """Release connections (a no-op for an in-process index)."""

    def __len__(self) -> int:
        ...


def check_vectors(ids: Sequence[str], vectors: np.ndarray, dim: int, where: str = "vectors") -> np.ndarray:
    """Validate an (ids, vectors) batch; returns the vectors as contiguous float32."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise InputError(where, f"expected vectors of shape [n, {dim}], got {list(vectors.shape)}",
                         "give vectors from the same model the index was built for")
    if len(ids) != len(vectors):
        raise InputError(where, f"{len(ids)} ids but {len(vectors)} vectors", "give one vector per id")
    if len(set(ids)) != len(ids):
        raise InputError(where, "an id appears twice in one batch", "give each item once")
    if not np.isfinite(vectors).all():
        raise InputError(where, "a vector holds NaN or infinity", "check the model that made the vectors")
    return vectors


def check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """[n, dim] float32 queries (one query may come as [dim])."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != dim:
        raise InputError("search", f"queries have {queries.shape[1]} dims, the index {dim}",
                         "query with vectors from the model the index was built for")
    return queries


def exact_top_k(items: np.ndarray, queries: np.ndarray, k: int, metric: str,
                batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force (rows, scores) of the top k items per query: the ground truth recall is measured against."""
    k = min(k, len(items))
    if len(queries) == 0 or k == 0:
        return np.zeros((len(queries), k), np.int64), np.zeros((len(queries), k), np.float32)
    item_sq = (items.astype(np.float32) ** 2).sum(1) if metric == "l2" else None
    rows, scores = [], []
    for lo in range(0, len(queries), batch):
        s = queries[lo:lo + batch] @ items.T
        if metric == "l2":
            s = 2 * s - item_sq - (queries[lo:lo + batch] ** 2).sum(1, keepdims=True)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        rows.append(top)
        scores.append(np.take_along_axis(s, top, 1))
    return np.concatenate(rows), np.concatenate(scores)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (rows of ids; None slots count as misses)."""
    if len(truth) == 0:
        return float("nan")
    hits = [len(set(f) & set(t)) / max(len(t), 1) for f, t in zip(found.tolist(), truth.tolist())]
    return float(np.mean(hits))
