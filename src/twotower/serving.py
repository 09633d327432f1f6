"""The one serving path: a saved model's index retrieves each request's candidates, its ranker orders them
with features as of the request's time, the top k are kept. Batch `recommend` serves visits at an unknown
time, ranked from the online store as of the latest event; `evaluate` serves each held-out request at its
own time from the offline store (the values the online store held then), so the figures it reports are the
figures of what is served."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from .catalog import NewItemScale, open_model_index, without_history
from .data.query_text import QUERY_TEXT
from .data.event_columns import Events
from .data.dataset import Dataset, check_context, request_context, with_new_users
from .errors import InputError
from .features.definitions import Columns, FeatureSource
from .features.materialize import offline_store, open_online_store
from .index.base import SearchResult, VectorIndex
from .model.artifact import SavedModel, load_model
from .model.query_states import QueryStates
from .rank.reranker import RANKER_DIR, Reranker, context_columns, ranking_rows
from .rank.sources import PROFILE_LENGTH, add_source_candidates, source_scores
from .timing import Stopwatch
from .user_state import UserState


@dataclass
class Server:
    """One model folder opened for serving: towers, index, ranker (None: retrieval order, `note` says why)
    and the feature source the ranker reads."""

    saved: SavedModel
    index: VectorIndex
    reranker: Reranker | None
    features: FeatureSource | None
    note: str = ""
    users: UserState | None = None            # built from the history when not given
    catalog: "ServingCatalog | None" = None   # built from the model and index when not given

    @classmethod
    def open(cls, model_dir: str | Path, rerank: bool = True, point_in_time: bool = False,
             order: str | None = None) -> "Server":
        """Open a model folder. The ranker reads the online store, or with `point_in_time` the offline store
        (features as of each request's own time, for evaluating past requests). `order` replaces the order
        the model serves its candidates in (a source's score column: that source alone, over the same
        candidates), for measuring each source."""
        saved = load_model(model_dir)
        index = open_model_index(saved)
        try:
            reranker, note = open_reranker(saved) if rerank else (None, "")
            if reranker is not None and order is not None:
                reranker = replace(reranker, serve_order=order)
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
        return max(float(self.saved.history.events["timestamp"].max()), self.users.latest)

    def top_k(self, users: np.ndarray, k: int, at: np.ndarray | None = None, rank: bool = True,
              exclude_seen: bool | None = None, context: dict | None = None,
              watch: Stopwatch | None = None, keep: list | None = None) -> SearchResult:
        """[n] user codes (0 = unknown) -> their top k items (ids) and scores. Known users get retrieved (and,
        with `rank`, ranked) items, unseen ones when `exclude_seen` (default: the config's
        recommend.exclude_seen); others the most popular indexed items.

        `at` [n] are the requests' times (a live or a held-out request: the towers read its hour, weekday and
        the time since the user's last event; the ranker reads features as of then). Without it the requests
        are a batch for visits at an unknown time: the towers get no time features, the ranker reads
        features as of the latest event (its hour and weekday features are then that event's). `context`
        gives the log's own context columns (see `request_context`). `watch` collects the seconds of each
        stage (query tower, index, the ranker's candidates, features and trees); `keep` receives the ranked
        candidate rows (see `rank_candidates`)."""
        hist, cfg = self.saved.history, self.saved.config
        check_context(hist.context_specs, context)
        exclude_seen = cfg.recommend.exclude_seen if exclude_seen is None else exclude_seen
        reranker = self.reranker if rank else None
        state, cat = self.users, self.catalog
        known = self.knows(users)
        items, scores = np.full((len(users), k), None, dtype=object), np.full((len(users), k), -np.inf)
        if not known.all():
            top = self.popular.iloc[:k]
            items[~known, :len(top)], scores[~known, :len(top)] = top.index.to_numpy(object), top.to_numpy(np.float64)
        if known.any():
            watch = watch or Stopwatch()
            u = users[known]
            asked = np.asarray(at, dtype=np.float64)[known] if at is not None else np.full(len(u), np.nan)
            with watch.stage("query tower"):
                queries, ctx = self.query_vectors(u, asked, context_rows(context, known))
            with watch.stage("index"):
                exclude = [set(hist.items.decode(state.seen_items(c))) for c in u] if exclude_seen else None
                n = max(k, cfg.rank.candidates) if reranker else k
                found = self.index.search(queries, n, exclude=exclude)
            if reranker is not None:
                as_of = asked if at is not None else np.full(len(u), self.now + 1.0)
                width = min(reranker.width, len(cat.indexed))       # what its sources can score
                allowed = np.broadcast_to(cat.indexed[:width], (len(u), width)).copy()
                if exclude_seen:
                    for row, c in enumerate(u):
                        had = state.seen_items(c)
                        allowed[row, had[had < width]] = False
                beside = Beside(allowed, lambda local, item: cat.tower_score(queries[local], item),
                                cat.temperature, state.recent)
                retrieved, scaled = found, self.new_items is not None
                found = rank_candidates(reranker, self.features, hist, u, self.unscaled(found),
                                        2 * k if scaled else k, as_of, beside, ctx, watch, keep)
                if scaled:
                    found = keep_new_in_place(found, retrieved, self.is_new, k)
            items[known], scores[known] = found.ids[:, :k], found.scores[:, :k]
        return SearchResult(items, scores)

    @cached_property
    def new_items(self) -> tuple[np.ndarray, float] | None:
        """Where the index holds new items scaled (`index.new_item_place`): ([n_items + 1] whether each item
        code lives by its content alone, code 0 being an item added after training; the factor); else None.
        New items then keep their retrieved place in ranked lists."""
        scale = NewItemScale.load(self.saved.folder)
        if scale is None:
            return None
        ids = self.saved.history.items.ids
        return np.concatenate([[True], without_history(self.saved, ids)]), scale.factor

    def unscaled(self, found: SearchResult, queries_new: np.ndarray | None = None) -> SearchResult:
        """`found` with every score as the towers give it, best first: the index holds new items' vectors
        scaled (`new_items`), so their scores are divided back (all of a row's, where `queries_new` says its
        query is a new item's own vector). What the ranker, a search's fusion and similar items read."""
        if self.new_items is None:
            return found
        factor = self.new_items[1]
        new = np.zeros(found.ids.shape, bool)
        listed = pd.notna(found.ids)
        new[listed] = self.is_new(found.ids[listed])
        divide = np.where(new, factor, 1.0)
        if queries_new is not None:
            divide = divide * np.where(queries_new, factor, 1.0)[:, None]
        scores = found.scores / divide
        order = np.argsort(-scores, axis=1, kind="stable")
        return SearchResult(np.take_along_axis(found.ids, order, axis=1), np.take_along_axis(scores, order, axis=1))

    def is_new(self, item_ids) -> np.ndarray:
        """[n] whether each item id is held scaled in the index (all False where none are)."""
        if self.new_items is None:
            return np.zeros(len(item_ids), bool)
        return self.new_items[0][self.saved.history.items.encode(np.asarray(item_ids, dtype=object))]

    def query_vectors(self, users: np.ndarray, at: np.ndarray, context: dict | None,
                      query: str | None = None) -> tuple[np.ndarray, dict]:
        """([n, d] index-ready query vectors, the encoded request context) of known user codes asking at `at`
        ([n], NaN: an unknown time) with the log's own `context` values, and for a search its text (read by
        a model trained on a log with queries)."""
        state = self.users
        ctx = request_context(self.saved.history.context_specs, at, state.last_seen_of(users), context, query)
        return self.catalog.queries(state.histories_of(users), users, ctx), ctx

    @property
    def reads_queries(self) -> bool:
        """Whether the query tower reads search text (the model was trained on a log with queries)."""
        return any(s.name == QUERY_TEXT for s in self.saved.history.context_specs)

    def query_hits(self, user: int, query: str | None, n: int, at: float,
                   context: dict | None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the towers' top n items for one search: its text with a known user's history
        (user 0: the text alone), through the index."""
        vector, _ = self.query_vectors(np.array([user]), np.array([at], dtype=np.float64), context, query)
        found = self.unscaled(self.index.search(vector, n))
        keep = pd.notna(found.ids[0]) & np.isfinite(found.scores[0])
        return found.ids[0][keep], found.scores[0][keep].astype(np.float64)

    def personal_scores(self, user: int, item_ids: np.ndarray, at: float, context: dict | None) -> np.ndarray:
        """The towers' score of one known user (code) with each item (ids), on the ranker's scale; -inf for
        items the towers never saw (added to the catalog after training). An unknown context column is an
        error (`request_context` checks)."""
        query, _ = self.query_vectors(np.array([user]), np.array([at], dtype=np.float64), context)
        items = self.saved.history.items.encode(np.asarray(item_ids, dtype=object))
        scores = self.catalog.tower_score(np.repeat(query, len(items), axis=0), items)
        return np.where(items > 0, scores, -np.inf)

    def with_events(self, events: Events) -> "Server":
        """This server after new events (a frame or numpy columns: user_id, item_id, timestamp, weight): the
        same index, ranker and feature store; new users get codes, and what requests read about users changes
        for the users the positive events on known items touch (their cost, not the log's). Trending counts
        them at once."""
        history = with_new_users(self.saved.history, events)
        positive = np.asarray(events["weight"], dtype=np.float64) > 0
        items = history.items.encode(np.asarray(events["item_id"])[positive])
        known = items > 0                        # the towers cannot read items they never had
        users = history.users.encode(np.asarray(events["user_id"])[positive])[known]
        times = np.asarray(events["timestamp"], dtype=np.float64)[positive][known]
        weights = np.asarray(events["weight"], dtype=np.float32)[positive][known]
        reranker = self.reranker
        if reranker is not None:
            reranker = reranker.with_events(times, items[known])
        state = self.users.with_events(users, times, items[known], weights)
        server = replace(self, saved=replace(self.saved, history=history), reranker=reranker, users=state,
                         catalog=self.catalog)
        if state.seen is self.users.seen and "popular" in self.__dict__:
            server.__dict__["popular"] = self.popular          # the base's, unchanged until the next merge
        if "new_items" in self.__dict__:
            server.__dict__["new_items"] = self.new_items      # the model's, which events do not change
        return server

    def with_index(self, index: VectorIndex) -> "Server":
        """This server searching another index of the same model (a changed catalog)."""
        return replace(self, index=index, catalog=None)

    def warm(self, users: np.ndarray, batch: int = 16) -> None:
        """Compute the kept query states of these user codes and read their values from the online store, so
        that their first requests cost what later ones do (a version swapped in starts with neither). In
        batches about as long as one request: the towers hold the interpreter lock through each call, and the
        service's requests wait for it in between."""
        users = np.asarray(users, np.int64)
        users = users[self.knows(users)]
        item = str(self.popular.index[0]) if len(self.popular) else None
        now = self.now + 1.0                      # over the whole history: once, not per batch
        for lo in range(0, len(users), batch):
            part = users[lo:lo + batch]
            self.catalog.states.keep(self.users.histories_of(part), part)
            if self.features is not None and item is not None:
                self.features.features({"user_id": self.saved.history.users.decode(part).astype(str),
                                        "item_id": np.full(len(part), item, dtype=object),
                                        "timestamp": np.full(len(part), now)})

    def recent_users(self, n: int) -> np.ndarray:
        """The codes of the last `n` distinct known users whose requests this server answered, the latest first."""
        return self.catalog.states.recent_users(n)

    def knows(self, users: np.ndarray) -> np.ndarray:
        """[n] True for user codes with a positive event in the model's history (personalised requests)."""
        return self.users.has_history_of(users) & (users > 0)

    def __post_init__(self):
        if self.users is None:
            self.users = UserState.of(self.saved.history, self.saved.model.cfg.max_history)
        if self.catalog is None:
            self.catalog = ServingCatalog.of(self.saved, self.index)

    @cached_property
    def popular(self) -> pd.Series:
        """Indexed items by how many users of the state's base had them, most popular first: what unknown
        users get (ingested events count from the next merge of the live layer)."""
        return self.users.popular(self.saved.history.items.ids, self.catalog.indexed)


@dataclass(frozen=True)
class ServingCatalog:
    """What requests read about the model's items, unchanged by new events: which item codes the index holds,
    the query tower (with the users' context-free states it keeps), the towers' score of any (query, item)
    pair and the temperature."""

    indexed: np.ndarray                       # [items + 1] True for item codes in the index
    states: QueryStates                       # the query tower over every trained item's vector
    tower_score: Callable[[np.ndarray, np.ndarray], np.ndarray]   # (queries [r, d], item codes [r]) -> [r]
    temperature: float

    @classmethod
    def of(cls, saved: SavedModel, index: VectorIndex) -> "ServingCatalog":
        hist = saved.history
        indexed = np.zeros(hist.n_items + 1, bool)
        indexed[1:] = index.contains(hist.items.ids)
        saved.model.eval()
        with torch.no_grad():
            vectors = saved.model.all_item_vectors()
        return cls(indexed, QueryStates(saved.model, vectors, saved.config.recommend.query_cache),
                   tower_pair_scores(saved), float(saved.model.similarity.log_temperature.exp()))

    def queries(self, histories: np.ndarray, users: np.ndarray, context: dict) -> np.ndarray:
        """[n, d] index-ready query vectors of user codes with these histories and request context."""
        return self.states.queries(histories, users, context)


@dataclass
class Beside:
    """What the ranker needs beside the towers' hits: the items each request may get ([m, width] bool over the
    item codes the ranker's sources score: not seen, in the index) for its other candidate sources, the
    towers' score of any (request row, item code) pair, the temperature that puts index scores on the towers'
    scale, and each request's latest items (read from the server's ordered events, not sorted again per call)."""

    allowed: np.ndarray
    tower_score: Callable[[np.ndarray, np.ndarray], np.ndarray]
    temperature: float
    recent: Callable[[np.ndarray, np.ndarray, int], list[np.ndarray]]   # (users, times, n) -> each one's last n items


def tower_pair_scores(saved: SavedModel) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(index-ready queries [r, d], item codes [r]) -> [r] the towers' score, on the scale of the score the
    ranker learned from (the similarity over the temperature, as `TwoTowerModel.score` gives it)."""
    _, vectors = saved.item_vectors()
    vectors = np.vstack([np.zeros((1, vectors.shape[1]), vectors.dtype), vectors])
    similarity = saved.model.similarity
    temperature = float(similarity.log_temperature.exp())

    def score(queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        e = vectors[items]
        s = -((queries - e) ** 2).sum(1) if similarity.kind == "euclidean" else (queries * e).sum(1)
        return s / temperature

    return score


def context_rows(context: dict | None, chosen: np.ndarray | slice) -> dict | None:
    """Context values for the chosen requests (a mask or a slice): a value shared by all stays as it is, one
    per request is cut."""
    if not context:
        return context
    return {k: np.asarray(v, dtype=object)[chosen] if np.ndim(v) else v for k, v in context.items()}


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
                    found: SearchResult, k: int, at: np.ndarray, beside: Beside,
                    context: dict[str, np.ndarray] | None = None, watch: Stopwatch | None = None,
                    keep: list | None = None) -> SearchResult:
    """Order each request's candidates (the towers' `found`, and each of the ranker's sources' top N) by the
    ranker, with features as of its time `at[i]` and the requests' own encoded `context` (`request_context`);
    keep the top k. Rows travel as numpy columns: a request's whole ranking costs less than building frames.
    `keep` (a list) receives (rows, scores) of every candidate, for explaining the order."""
    watch = watch or Stopwatch()
    with watch.stage("ranker: candidates"):
        rows = _candidate_rows(reranker, hist, users, found, at, beside, context or {})
    with watch.stage("ranker: features"):
        rows = ranking_rows(rows, features, reranker, hist, beside.recent)
    with watch.stage("ranker: trees"):
        score = reranker.score(rows)
    if keep is not None:
        keep.append((rows, score))
    order = np.lexsort((-score, rows["request"]))       # by request, then score (stable: ties keep their order)
    request = rows["request"][order]
    place = np.arange(len(order)) - np.searchsorted(request, request, "left")
    top = place < k
    m = len(found.ids)
    ids = np.full((m, k), None, dtype=object)
    scores = np.full((m, k), -np.inf)
    ids[request[top], place[top]] = rows["item_id"][order][top]
    scores[request[top], place[top]] = score[order][top]
    return SearchResult(ids, scores)


def keep_new_in_place(ranked: SearchResult, retrieved: SearchResult, is_new: Callable[[np.ndarray], np.ndarray],
                      k: int) -> SearchResult:
    """The ranked top k with each new item of the retrieved top k (`is_new(ids)`) at its retrieved place: the
    ranker has never seen an item without history chosen, so it does not judge one; the other places take the
    ranker's order. A kept item takes the score of the place above it (the first place: the ranker's best),
    so scores never rise down a list."""
    ids, scores = ranked.ids[:, :k].copy(), ranked.scores[:, :k].copy()
    top = retrieved.ids[:, :k]
    new = np.zeros(top.shape, bool)
    listed = pd.notna(top)
    new[listed] = is_new(top[listed])
    for row in np.flatnonzero(new.any(axis=1)):
        places = np.flatnonzero(new[row])
        kept = set(top[row, places])
        rest = [(i, s) for i, s in zip(ranked.ids[row], ranked.scores[row]) if pd.notna(i) and i not in kept]
        free = np.setdiff1d(np.arange(k), places)[:len(rest)]
        ids[row], scores[row] = None, -np.inf
        ids[row, places] = top[row, places]
        ids[row, free] = [i for i, _ in rest[:len(free)]]
        scores[row, free] = [s for _, s in rest[:len(free)]]
        for p in places:
            scores[row, p] = scores[row, p - 1] if p > 0 else (rest[0][1] if rest else 0.0)
    return SearchResult(ids, scores)


def _candidate_rows(reranker: Reranker, hist: Dataset, users: np.ndarray, found: SearchResult, at: np.ndarray,
                    beside: Beside, context: dict[str, np.ndarray]) -> Columns:
    """One row per (request, candidate): the towers' hits and each source's top N with their scores."""
    m, n = found.ids.shape
    ids, scores = found.ids.ravel(), found.scores.ravel() / beside.temperature
    keep = np.flatnonzero(np.not_equal(ids, None) & np.isfinite(scores))     # None: no item in that place
    item_ids = ids[keep].astype(str).astype(object)
    rows = {"local": keep // n, "item_id": item_ids, "retrieval_rank": (keep % n + 1).astype(np.float64),
            "retrieval_score": scores[keep].astype(np.float64), "item": hist.items.encode(item_ids)}
    if reranker.sources:
        rows = add_source_candidates(rows, source_scores(reranker.sources, beside.recent(users, at, PROFILE_LENGTH), at,
                                                         beside.allowed),
                                     reranker.source_candidates)
        new = np.flatnonzero(np.isnan(rows["retrieval_score"]))    # a source's candidate the towers missed
        if len(new):
            local, item = rows["local"][new], rows["item"][new]
            rows["retrieval_score"][new] = beside.tower_score(local, item)
            rows["retrieval_rank"][new] = n + 1
            rows["item_id"][new] = hist.items.decode(item).astype(str)
    request = rows.pop("local")
    rows.update(request=request, user=users[request], user_id=hist.users.decode(users[request]).astype(str),
                timestamp=at[request], **context_columns(context, request))
    return rows
