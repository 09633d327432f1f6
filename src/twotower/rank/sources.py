"""Candidate sources beside the towers. Industry retrieval merges several generators; each of these scores the
whole catalog for a request from what its user had before the request's time:

- `covisit`: co-visitation with the user's latest items ("people who had these next had that");
- `ease`: EASE (Steck 2019), a closed-form item-to-item model, where the catalog is small enough for its dense
  inverse; `ials` (from `implicit`, the user's factors solved from their items) above that size;
- `trending`: the items most chosen in the latest positive events before the request.

The ranker merges each source's top N with the towers' and reads every source's score and rank as features
(see `rank.reranker`). Sources are fitted on the events their requests follow, never on a request's future.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..config import RankConfig
from ..data.dataset import Dataset, seen_matrix
from ..evaluate.metrics import ndcg_at, target_ranks, top_k
from ..features.definitions import Columns
from .covisit import CoVisitation, items_matrix, kept_row_sums

PROFILE_LENGTH = 200          # the latest items an item-to-item source reads per request
EASE_KEEP = 200               # each item's strongest EASE links kept (a sparse model, the dense one is n^2)
EASE_L2 = (10.0, 50.0, 200.0, 500.0, 1000.0, 3000.0)
EASE_TUNE_ITEMS = 3000        # the l2 grid is searched on the most popular items only (a dense inverse each)


class ItemSource(Protocol):
    """One candidate generator: each request's profile (item codes before its time, oldest first) and time
    -> a score for every item code, [m, n_items + 1] (higher is better; 0 means no evidence)."""

    name: str

    def scores(self, profiles: list[np.ndarray], times: np.ndarray) -> np.ndarray:
        ...


@dataclass
class CoVisitSource:
    """Co-visitation counts with the user's `recent` latest items, normalised by both ends' popularity."""

    table: CoVisitation
    recent: int
    name: str = "covisit"

    def scores(self, profiles, times):
        return kept_row_sums(self.table.normalised, [p[-self.recent:] for p in profiles])


@dataclass
class EaseSource:
    """EASE's item-to-item weights, sparsified to each item's `EASE_KEEP` strongest links."""

    weights: sp.csr_matrix            # [n_items + 1]^2
    l2: float
    name: str = "ease"

    @classmethod
    def fit(cls, history: Dataset, l2: float) -> "EaseSource":
        x = seen_matrix(history)
        return cls(_sparsify(_ease_weights(x, l2), EASE_KEEP), l2)

    def scores(self, profiles, times):
        return kept_row_sums(self.weights, [np.unique(p[-PROFILE_LENGTH:]) for p in profiles])

    def save(self, folder: Path) -> None:
        w = self.weights
        np.savez_compressed(folder / "ease.npz", data=w.data, indices=w.indices, indptr=w.indptr,
                            shape=np.array(w.shape), l2=self.l2)

    @classmethod
    def load(cls, folder: Path) -> "EaseSource":
        z = np.load(folder / "ease.npz")
        return cls(sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"])), float(z["l2"]))


@dataclass
class ALSSource:
    """iALS item factors from `implicit`; a request's user factors are solved from its profile."""

    item_factors: np.ndarray          # [n_items + 1, f]
    regularization: float = 0.1
    alpha: float = 10.0
    name: str = "ials"

    @classmethod
    def fit(cls, history: Dataset, seed: int = 42) -> "ALSSource":
        from threadpoolctl import threadpool_limits

        model = _als(64, 0.1, 10.0, seed)
        with threadpool_limits(1, "blas"):
            model.fit(seen_matrix(history), show_progress=False)
        return cls(np.asarray(model.item_factors), 0.1, 10.0)

    def scores(self, profiles, times):
        model = _als(self.item_factors.shape[1], self.regularization, self.alpha)
        model.item_factors = self.item_factors
        latest = items_matrix([np.unique(p[-PROFILE_LENGTH:]) for p in profiles], len(self.item_factors))
        users = model.recalculate_user(np.arange(len(profiles)), latest)
        return (users @ self.item_factors.T).astype(np.float32)

    def save(self, folder: Path) -> None:
        np.savez_compressed(folder / "ials.npz", item_factors=self.item_factors,
                            params=np.array([self.regularization, self.alpha]))

    @classmethod
    def load(cls, folder: Path) -> "ALSSource":
        z = np.load(folder / "ials.npz")
        return cls(z["item_factors"], float(z["params"][0]), float(z["params"][1]))


@dataclass
class _Room:
    """Arrays with spare room after the events a trending source reads: the newest source appends there."""

    times: np.ndarray
    items: np.ndarray
    used: int


@dataclass
class TrendingSource:
    """Counts of each item among the latest `window` positive events before the request's time."""

    times: np.ndarray                 # positive events' times, ascending
    items: np.ndarray                 # their item codes
    size: int                         # n_items + 1
    window: int
    name: str = "trending"
    room: _Room | None = field(default=None, repr=False, compare=False)

    @classmethod
    def fit(cls, history: Dataset, share: float = 0.02, window: int | None = None) -> "TrendingSource":
        """The window is `share` of the positive events (100 to 200,000) unless given."""
        ev = history.events[history.events["weight"] > 0].sort_values("timestamp", kind="stable")
        window = window or int(np.clip(share * len(ev), 100, 200_000))
        return cls(ev["timestamp"].to_numpy(np.float64), ev["item"].to_numpy(np.int64), history.n_items + 1, window)

    def scores(self, profiles, times):
        ends = np.searchsorted(self.times, np.asarray(times, dtype=np.float64), side="left")
        step = max(1, self.window // 20)          # requests a few events apart share one (older) count
        ends = ends // step * step
        out = np.zeros((len(ends), self.size), np.float32)
        for end in np.unique(ends):
            counts = np.bincount(self.items[max(0, end - self.window):end], minlength=self.size)
            out[ends == end] = counts[:self.size]
        return out

    def with_events(self, times: np.ndarray, items: np.ndarray) -> "TrendingSource":
        """The same window over the stored events and these new positive ones (item codes). Events no older
        than the stored ones (the live case) are appended in the spare room after them, so a batch costs its
        own size; older ones are merged into a new copy. Sources made before keep reading their own length."""
        times, items = np.asarray(times, dtype=np.float64), np.asarray(items, np.int64)
        order = np.argsort(times, kind="stable")
        times, items = times[order], items[order]
        n = len(self.times)
        if not len(times):
            return self
        if n and times[0] < self.times[-1]:
            at = np.searchsorted(self.times, times, side="right")     # after stored events of the same time
            return replace(self, times=np.insert(self.times, at, times), items=np.insert(self.items, at, items),
                           room=None)
        room = self.room
        if room is None or room.used != n or n + len(times) > len(room.times):   # none, or taken by another
            capacity = max(1024, 2 * (n + len(times)))
            room = _Room(np.empty(capacity, np.float64), np.empty(capacity, np.int64), n)
            room.times[:n], room.items[:n] = self.times, self.items
        room.times[n:n + len(times)], room.items[n:n + len(times)] = times, items
        room.used = n + len(times)
        return replace(self, times=room.times[:room.used], items=room.items[:room.used], room=room)

    def save(self, folder: Path) -> None:
        np.savez_compressed(folder / "trending.npz", times=self.times, items=self.items,
                            shape=np.array([self.size, self.window]))

    @classmethod
    def load(cls, folder: Path) -> "TrendingSource":
        z = np.load(folder / "trending.npz")
        return cls(z["times"], z["items"], int(z["shape"][0]), int(z["shape"][1]))


def _ease_weights(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE's closed form, B = I - P diag(1/diag(P)) with P = (X'X + l2 I)^-1, by Cholesky (the Gram
    matrix is symmetric positive definite): half the work of a general inverse, in place."""
    from scipy.linalg import lapack

    gram = (x.T @ x).toarray().astype(np.float64 if x.shape[1] <= 4000 else np.float32)
    gram[np.diag_indices_from(gram)] += l2
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (gram,))
    factor, info = potrf(gram, lower=False, overwrite_a=True, clean=False)
    if info == 0:
        p, info = potri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE's Gram matrix is not positive definite (lapack info {info})")
    p = np.triu(p) + np.triu(p, 1).T             # potri fills the upper triangle only
    b = p / -np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32, copy=False)


def _sparsify(b: np.ndarray, keep: int, rows: int = 1024) -> sp.csr_matrix:
    """Each row's `keep` largest weights (the items it most predicts), the rest dropped; a block of rows at a
    time, so no index array of the full matrix's size is made."""
    if b.shape[1] <= keep:
        return sp.csr_matrix(b)
    parts = []
    for lo in range(0, b.shape[0], rows):
        block = b[lo:lo + rows]
        top = np.argpartition(-block, kth=keep, axis=1)[:, :keep]
        values = np.take_along_axis(block, top, 1)
        parts.append(sp.csr_matrix((values.ravel(), top.ravel(), np.arange(0, values.size + 1, keep)),
                                   shape=block.shape))
    out = sp.vstack(parts).tocsr()
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _als(factors: int, regularization: float, alpha: float, seed: int = 42):
    from implicit.cpu.als import AlternatingLeastSquares

    return AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha, iterations=15,
                                   random_state=seed)


def choose_ease_l2(history: Dataset, profiles: list[np.ndarray], targets: np.ndarray,
                   grid: tuple[float, ...] = EASE_L2) -> float:
    """EASE's l2 with the best NDCG@10 for `targets` (item codes the requests chose after `profiles`), on the
    `EASE_TUNE_ITEMS` most popular items (the targets among them): one small dense inverse per value."""
    x = seen_matrix(history)
    popular = np.argsort(-np.asarray(x.sum(0)).ravel(), kind="stable")[:EASE_TUNE_ITEMS]
    popular = popular[popular > 0]
    position = pd.Series(np.arange(len(popular)), index=popular)
    sub = x[:, popular]
    keep = np.isin(targets, popular)
    if keep.sum() == 0:
        return grid[len(grid) // 2]
    local = [position.reindex(p[-PROFILE_LENGTH:]).dropna().to_numpy(np.int64) for p, k in zip(profiles, keep) if k]
    target = position[targets[keep]].to_numpy()
    had = items_matrix(local, len(popular))
    best, chosen = -1.0, grid[0]
    for l2 in grid:
        s = np.asarray((had @ _ease_weights(sub, l2)).astype(np.float64))
        s[had.nonzero()] = -np.inf
        ndcg = float(ndcg_at(target_ranks(s, target)).mean())
        if ndcg > best:
            best, chosen = ndcg, l2
    return chosen


def source_scores(sources: list[ItemSource], profiles: list[np.ndarray], times: np.ndarray,
                  allowed: np.ndarray) -> dict[str, np.ndarray]:
    """{source name: [m, width] scores} for a batch of requests, over the item codes `allowed` [m, width]
    covers; items a request may not get (`allowed` False: seen, padding, not indexed) score -inf."""
    out = {}
    for source in sources:
        s = source.scores(profiles, times)
        width = min(s.shape[1], allowed.shape[1])
        out[source.name] = np.where(allowed[:, :width], s[:, :width], -np.inf).astype(np.float32)
    return out


def add_source_candidates(rows: Columns, dense: dict[str, np.ndarray], n: int) -> Columns:
    """Candidate rows (`local`: the request's row in `dense`, `item`: code) -> the same rows, then each
    source's top n of each request not yet among them (missing in every other column: NaN, or None for
    objects), and for every row `<source>_score` (0 where it has none) and `<source>_rank` (1..n, n + 1
    outside its top n)."""
    if not dense:
        return rows
    local, item = np.asarray(rows["local"], np.int64), np.asarray(rows["item"], np.int64)
    base = max(max(s.shape[1] for s in dense.values()), int(item.max(initial=0)) + 1)   # key = local * base + item
    tops = {}
    for name, scores in dense.items():
        top = top_k(scores, n)
        m, width = top.shape
        value = scores[np.arange(m)[:, None], top].ravel()
        ok = np.isfinite(value) & (value != 0)          # 0: the source knows nothing of the item
        tops[name] = (np.repeat(np.arange(m), width)[ok] * base + top.ravel()[ok],
                      np.tile(np.arange(1, width + 1), m)[ok])
    new = np.concatenate([keys for keys, _ in tops.values()])
    new = new[np.sort(np.unique(new, return_index=True)[1])]                   # distinct, first appearance order
    new = new[~np.isin(new, local * base + item)]
    out = {c: _padded(v, len(new)) for c, v in rows.items()}
    out["local"], out["item"] = np.concatenate([local, new // base]), np.concatenate([item, new % base])
    keys = out["local"] * base + out["item"]
    for name, (top_keys, top_ranks) in tops.items():
        order = np.argsort(top_keys)
        at = np.minimum(np.searchsorted(top_keys[order], keys), max(len(order) - 1, 0))
        found = top_keys[order][at] == keys if len(order) else np.zeros(len(keys), bool)
        scores = dense[name]
        value = scores[out["local"], np.where(out["item"] < scores.shape[1], out["item"], 0)]
        out[f"{name}_score"] = np.where(np.isfinite(value), value, 0.0)
        out[f"{name}_rank"] = np.where(found, top_ranks[order][at] if len(order) else 0, n + 1).astype(np.float64)
    return out


def _padded(column, extra: int) -> np.ndarray:
    """The column with `extra` missing values after it: None for objects, else NaN (integers become floats)."""
    column = np.asarray(column)
    if column.dtype == object:
        return np.concatenate([column, np.full(extra, None, object)])
    return np.concatenate([column.astype(np.float64, copy=False), np.full(extra, np.nan)])


def fit_sources(history: Dataset, cfg: RankConfig, covisitation: CoVisitation,
                tune: tuple[list[np.ndarray], np.ndarray] | None = None, seed: int = 42,
                log=lambda _: None) -> list[ItemSource]:
    """The sources `cfg.sources` names, fitted on `history`; EASE's l2 is chosen on `tune` (profiles and
    the item codes their requests chose next) when given."""
    out: list[ItemSource] = []
    for name in cfg.sources:
        if name == "covisit":
            out.append(CoVisitSource(covisitation, cfg.recent_items))
        elif name == "ease" and history.n_items <= cfg.ease_max_items:
            l2 = choose_ease_l2(history, *tune) if tune is not None else 200.0
            log(f"candidate source: EASE, l2={l2:g}")
            out.append(EaseSource.fit(history, l2))
        elif name == "ease":
            log(f"candidate source: iALS ({history.n_items:,} items is above rank.ease_max_items)")
            out.append(ALSSource.fit(history, seed))
        elif name == "trending":
            out.append(TrendingSource.fit(history, cfg.trending_share))
    return out
