"""The one serving path: a saved model's index retrieves each request's candidates, its ranker orders them
with features as of the request's time, the top k are kept. Batch `recommend` serves visits at an unknown
time, ranked from the online store as of the latest event; `evaluate` serves each held-out request at its
own time from the offline store (the values the online store held then), so the figures it reports are the
figures of what is served."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .data.dataset import Dataset, last_positive_times, request_context
from .errors import InputError
from .evaluate.protocol import seen_matrix
from .features.definitions import FeatureSource
from .features.materialize import offline_store, open_online_store
from .index.base import SearchResult, VectorIndex
from .index.model_index import open_model_index
from .model.artifact import SavedModel, load_model
from .model.recommender import tower_queries
from .rank.reranker import RANKER_DIR, Reranker, context_columns, ranking_rows


@dataclass
class Server:
    """One model folder opened for serving: towers, index, ranker (None: retrieval order, `note` says why)
    and the feature source the ranker reads."""

    saved: SavedModel
    index: VectorIndex
    reranker: Reranker | None
    features: FeatureSource | None
    note: str = ""

    @classmethod
    def open(cls, model_dir: str | Path, rerank: bool = True, point_in_time: bool = False) -> "Server":
        """Open a model folder. The ranker reads the online store, or with `point_in_time` the offline store
        (features as of each request's own time, for evaluating past requests)."""
        saved = load_model(model_dir)
        index = open_model_index(saved)
        try:
            reranker, note = open_reranker(saved) if rerank else (None, "")
            features = None
            if reranker is not None:
                features = offline_store(saved.folder, saved.config.rank) if point_in_time else \
                    open_online_store(saved.folder, saved.config.rank, saved.model_id)
        except BaseException:
            _close(index)
            raise
        return cls(saved, index, reranker, features, note)

    def close(self) -> None:
        """Release the index's connection and the online store's."""
        _close(self.features)
        _close(self.index)

    @property
    def now(self) -> float:
        """The latest event the model knows: a batch is ranked with features as of then."""
        return float(self.saved.history.events["timestamp"].max())

    def top_k(self, users: np.ndarray, k: int, at: np.ndarray | None = None) -> SearchResult:
        """[n] user codes (0 = unknown) -> their top k items (ids) and scores. Known users get retrieved (and
        ranked) items, unseen ones under recommend.exclude_seen; others the most popular indexed items.

        `at` [n] are the requests' times (a live or a held-out request: the towers read its hour, weekday and
        the time since the user's last event; the ranker reads features as of then). Without it the requests
        are a batch for visits at an unknown time: the towers get no time features, the ranker reads
        features as of the latest event (its hour and weekday features are then that event's)."""
        hist, cfg = self.saved.history, self.saved.config
        state = self._prepared
        known = self.knows(users)
        items = np.tile(np.asarray(state.popular.index[:k], dtype=object), (len(users), 1))
        scores = np.tile(state.popular.to_numpy(np.float64)[:k], (len(users), 1))
        if items.shape[1] < k:
            items = np.pad(items, ((0, 0), (0, k - items.shape[1])), constant_values=None)
            scores = np.pad(scores, ((0, 0), (0, k - scores.shape[1])), constant_values=-np.inf)
        if known.any():
            u = users[known]
            asked = np.asarray(at, dtype=np.float64)[known] if at is not None else np.full(len(u), np.nan)
            ctx = request_context(hist.context_specs, asked, state.last_seen[u])
            exclude = [set(hist.items.decode(state.seen[c].indices)) for c in u] if cfg.recommend.exclude_seen \
                else None
            n = max(k, cfg.rank.candidates) if self.reranker else k
            found = self.index.search(state.queries(u, ctx), n, exclude=exclude)
            if self.reranker is not None:
                as_of = asked if at is not None else np.full(len(u), self.now + 1.0)
                found = rank_candidates(self.reranker, self.features, hist, u, found, k, as_of)
            items[known], scores[known] = found.ids[:, :k], found.scores[:, :k]
        return SearchResult(items, scores)

    def knows(self, users: np.ndarray) -> np.ndarray:
        """[n] True for user codes with a positive event in the model's history (personalised requests)."""
        return self._prepared.has_history[users] & (users > 0)

    @cached_property
    def _prepared(self) -> "_Prepared":
        hist = self.saved.history
        seen = seen_matrix(hist)
        return _Prepared(seen, np.diff(seen.indptr) > 0, last_positive_times(hist),
                         popular_items(seen, hist.items.ids, set(self.index.ids())), tower_queries(self.saved.model, hist))


@dataclass
class _Prepared:
    """What every batch of requests reads, computed once per server."""

    seen: sp.csr_matrix                       # [users + 1, items + 1] the items each user had
    has_history: np.ndarray                   # [users + 1] a user with a positive event
    last_seen: np.ndarray                     # [users + 1] their latest positive event's time
    popular: pd.Series                        # indexed items by count, most popular first
    queries: Callable[[np.ndarray, dict], np.ndarray]


def _close(resource) -> None:
    if resource is not None and hasattr(resource, "close"):
        resource.close()


def open_reranker(saved: SavedModel) -> tuple[Reranker | None, str]:
    """(the model's ranker, or None with the reason): a ranker the model says it trained must be there."""
    record = saved.meta.get("ranker", {})
    reranker = Reranker.load(saved.folder)
    if reranker is None and record.get("trained", False):
        raise InputError(str(saved.folder / RANKER_DIR), "the model's ranker is missing",
                         "retrain the model, or pass --no-rank to serve in retrieval order")
    if reranker is None:
        return None, f"this model has no ranker ({record.get('reason', 'trained without one')}): retrieval order"
    return reranker, ""


def rank_candidates(reranker: Reranker, features: FeatureSource, hist: Dataset, users: np.ndarray,
                    found: SearchResult, k: int, at: np.ndarray) -> SearchResult:
    """Order each request's retrieved candidates by the ranker, with features as of its time `at[i]`; keep
    the top k."""
    m, n = found.ids.shape
    request = np.repeat(np.arange(m), n)
    rows = pd.DataFrame({"request": request, "user": users[request], "item_id": found.ids.ravel(),
                         "retrieval_score": found.scores.ravel(), "retrieval_rank": np.tile(np.arange(1, n + 1), m)})
    rows = rows[rows["item_id"].notna() & np.isfinite(rows["retrieval_score"])]
    request = rows["request"].to_numpy()
    rows = rows.assign(item_id=rows["item_id"].astype(str), item=hist.items.encode(rows["item_id"].astype(str)),
                       user_id=hist.users.decode(rows["user"]).astype(str), timestamp=at[request],
                       **context_columns(request_context(hist.context_specs, at), request))
    rows = ranking_rows(rows, features, reranker, hist)
    rows = rows.assign(score=reranker.score(rows)).sort_values(["request", "score"], ascending=[True, False],
                                                               kind="stable")
    top = rows.assign(pos=rows.groupby("request").cumcount()).query("pos < @k")
    ids = np.full((m, k), None, dtype=object)
    scores = np.full((m, k), -np.inf)
    ids[top["request"], top["pos"]] = top["item_id"].to_numpy()
    scores[top["request"], top["pos"]] = top["score"].to_numpy()
    return SearchResult(ids, scores)


def popular_items(seen, item_ids: np.ndarray, indexed: set) -> pd.Series:
    """Items still in the index by interaction count: {item id: count}, most popular first."""
    counts = pd.Series(np.asarray(seen.sum(0)).ravel()[1:], index=item_ids.astype(str))
    counts = counts[counts.index.isin(list(indexed))]
    return counts.sort_values(ascending=False, kind="stable").astype(np.float64)
