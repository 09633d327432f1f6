"""Everything the second stage needs at request time, in one object saved with the model: the ranker, the
co-visitation table, the candidate sources beside the towers, the order that is served, and how candidate
rows get their features (the same code for training and serving)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..data.dataset import Dataset
from ..errors import InputError, read_stored
from ..features.definitions import Columns, FeatureDefinitions, FeatureSource
from .affinity import affinity_names, category_affinity
from .covisit import NAMES as COVISIT, CoVisitation, recent_items
from .ranker import LambdaRanker
from .sources import ALSSource, CoVisitSource, EaseSource, ItemSource, TrendingSource

Table = pd.DataFrame | Columns       # candidate rows: a frame in training, named numpy columns for a request

RETRIEVAL = ["retrieval_score", "retrieval_rank", "retrieval_gap"]
IN_LIST = ["item_count_all", "covisit_norm"]     # also given as a percentile within the request's candidates
RANKER_DIR = "ranker"
RANKER = "ranker"                                # serve_order when the trees order the list


def source_columns(name: str) -> list[str]:
    """A candidate source's ranker features: its score for the candidate and the candidate's place in its
    list (the list's length + 1 when it is not there)."""
    return [f"{name}_score", f"{name}_rank"]


@dataclass
class Reranker:
    ranker: LambdaRanker | None          # None only while its training rows are being built
    covisitation: CoVisitation
    recent_length: int
    definitions: FeatureDefinitions
    category_features: list[str] = field(default_factory=list)   # item features the user's affinity is for
    profile_length: int = 50
    context_features: list[str] = field(default_factory=list)    # the requests' own context columns
    sources: list[ItemSource] = field(default_factory=list)      # candidate generators beside the towers
    source_candidates: int = 50                                  # each source's top N joins the candidates
    serve_order: str = RANKER      # what orders served lists: the trees, or a score column that beat them

    @property
    def feature_names(self) -> list[str]:
        in_list = [f"{c}_in_list" for c in self.definitions.window_counts + IN_LIST]
        return (RETRIEVAL + [c for s in self.sources for c in source_columns(s.name)] + self.definitions.names
                + COVISIT + affinity_names(self.category_features) + in_list + self.context_features)

    @property
    def width(self) -> int:
        """Item codes its tables and sources know (those of its training history, with padding 0): later
        catalog additions have no events there, so its sources never score them."""
        return self.covisitation.counts.shape[0]

    def refreshed(self, data: Dataset) -> "Reranker":
        """The same ranker with its co-visitation table and sources over `data` (all a live request may know);
        EASE keeps the l2 chosen for it."""
        covisitation = CoVisitation.fit(data.events, data.n_items, self.covisitation.window)
        return replace(self, covisitation=covisitation,
                       sources=[refit_source(s, data, covisitation) for s in self.sources])

    def with_events(self, times: np.ndarray, items: np.ndarray) -> "Reranker":
        """The same ranker after new positive events (times, item codes) arrived: trending counts them at
        once; the item-to-item tables (co-visitation, EASE, iALS) stay as trained until the next training,
        while each user's profile they read already holds the events."""
        return replace(self, sources=[s.with_events(times, items) if isinstance(s, TrendingSource) else s
                                      for s in self.sources])

    def score(self, rows: Table) -> np.ndarray:
        """The served order's score of each candidate row (higher first)."""
        if self.serve_order == RANKER:
            return self.ranker.score(rows)
        return np.asarray(rows[self.serve_order], dtype=np.float64)

    def save(self, model_dir: Path) -> Path:
        folder = Path(model_dir) / RANKER_DIR
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            self.ranker.save(tmp)
            self.covisitation.save(tmp / "covisit.npz")
            for source in self.sources:
                if hasattr(source, "save"):
                    source.save(tmp)
            (tmp / "reranker.json").write_text(json.dumps(
                {"recent_length": self.recent_length, "windows_days": list(self.definitions.windows_days),
                 "category_features": self.category_features, "profile_length": self.profile_length,
                 "context_features": self.context_features, "sources": [s.name for s in self.sources],
                 "source_candidates": self.source_candidates, "serve_order": self.serve_order}))
        return folder

    @classmethod
    def load(cls, model_dir: Path) -> "Reranker | None":
        """The model's reranker, or None for a model trained without one."""
        folder = Path(model_dir) / RANKER_DIR
        if not folder.is_dir():
            return None
        return read_stored(folder, cls._read, fix="retrain the model (twotower train), or serve without it "
                               "(twotower recommend --no-rank)")

    @classmethod
    def _read(cls, folder: Path) -> "Reranker":
        meta = json.loads((folder / "reranker.json").read_text())
        covisitation = CoVisitation.load(folder / "covisit.npz")
        return cls(LambdaRanker.load(folder), covisitation, meta["recent_length"],
                   FeatureDefinitions(tuple(meta["windows_days"])), meta.get("category_features", []),
                   meta.get("profile_length", 50), meta.get("context_features", []),
                   [load_source(name, folder, covisitation, meta["recent_length"])
                    for name in meta.get("sources", [])],
                   meta.get("source_candidates", 50), meta.get("serve_order", RANKER))


def load_source(name: str, folder: Path, covisitation: CoVisitation, recent: int) -> ItemSource:
    """A saved candidate source (co-visitation reads the reranker's own table)."""
    if name == "covisit":
        return CoVisitSource(covisitation, recent)
    loaders = {"ease": EaseSource.load, "ials": ALSSource.load, "trending": TrendingSource.load}
    if name not in loaders:
        raise InputError(str(folder / "reranker.json"), f"unknown candidate source {name!r}",
                         "retrain the model with this version of twotower")
    return loaders[name](folder)


def refit_source(source: ItemSource, data: Dataset, covisitation: CoVisitation) -> ItemSource:
    """The same kind of source, with the same settings, over `data`."""
    if isinstance(source, CoVisitSource):
        return replace(source, table=covisitation)
    if isinstance(source, EaseSource):
        return EaseSource.fit(data, source.l2)
    if isinstance(source, ALSSource):
        return ALSSource.fit(data)
    if isinstance(source, TrendingSource):
        return TrendingSource.fit(data, window=source.window)
    raise TypeError(f"unknown source {source!r}")


def context_names(context: dict[str, np.ndarray]) -> list[str]:
    """The row columns `context_columns` makes from requests with this context."""
    return [f"context_{k}" for k, v in context.items() if v.ndim == 1 and not k.startswith("_")]


def context_columns(context: dict[str, np.ndarray], request: np.ndarray) -> dict[str, np.ndarray]:
    """The requests' own encoded context (device, page, ...: one value per request) as row columns
    `context_<name>`; derived context (a leading _, e.g. the request time) is left to the store features."""
    return {name: context[name.removeprefix("context_")][request] for name in context_names(context)}


def ranking_rows(rows: Table, source: FeatureSource, reranker: Reranker, history: Dataset,
                 recent: Callable[[np.ndarray, np.ndarray, int], list[np.ndarray]] | None = None) -> Table:
    """Candidate rows (request, user, item codes, user_id, item_id, timestamp, retrieval score and rank) ->
    the same rows with every feature the ranker reads: a frame for a frame (training), `Columns` for
    `Columns` (a served request, where building frames would cost more than the ranking). `source` is a
    feature store (offline or online); `history` (codes and item features) gives each request's latest items,
    strictly before its time, or `recent(users, times, n)` does from events already in order (a server's)."""
    missing = [c for c in ("request", "user", "item", "user_id", "item_id", "timestamp", "retrieval_score",
                           "retrieval_rank") if c not in rows]
    if missing:
        raise InputError("candidate rows", f"missing column(s) {missing}", "build them with rank.two_stage")
    out = {c: np.asarray(rows[c]) for c in rows}
    store = source.features(out)
    position, firsts = appearance_order(out["request"])
    users, times = out["user"][firsts], out["timestamp"][firsts]
    longest = max(reranker.recent_length, reranker.profile_length)
    profile = recent(users, times, longest) if recent else recent_items(history.events, users, times, longest)
    latest = [p[-reranker.recent_length:] for p in profile]
    item = out["item"].astype(np.int64)
    out.update({name: store[name] for name in reranker.definitions.names})
    out.update(reranker.covisitation.scores(latest, position, item))
    out.update(category_affinity(history, reranker.category_features,
                                 [p[-reranker.profile_length:] for p in profile], position, item))
    score = out["retrieval_score"].astype(np.float64)
    best = np.full(len(firsts), -np.inf)
    np.maximum.at(best, position, score)
    out["retrieval_gap"] = score - best[position]
    ranked = reranker.definitions.window_counts + IN_LIST
    if ranked:                                   # every column in one pass: (column, request) is the group
        groups = np.arange(len(ranked))[:, None] * len(firsts) + position[None, :]
        within = percentile_within(groups.ravel(), np.concatenate([np.asarray(out[c], dtype=np.float64)
                                                                   for c in ranked])).reshape(len(ranked), -1)
        out.update({f"{c}_in_list": within[j] for j, c in enumerate(ranked)})
    return pd.DataFrame(out) if isinstance(rows, pd.DataFrame) else out


def appearance_order(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([n] each value's place among the distinct values in order of first appearance, [distinct] where each
    first appears): `pd.factorize` in numpy, cheaper on a served request's few hundred rows."""
    _, firsts, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(firsts, kind="stable")
    place = np.empty(len(order), np.int64)
    place[order] = np.arange(len(order))
    return place[inverse.ravel()], firsts[order]


def percentile_within(group: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each value's rank within its group over the group's size, ties at their average rank: pandas'
    `groupby(group).rank(pct=True)`, computed with two sorts. NaN stays NaN and is not counted."""
    out = np.full(len(values), np.nan)
    ok = ~np.isnan(values)
    g, v, where = group[ok], values[ok], np.flatnonzero(ok)
    order = np.lexsort((v, g))
    g, v = g[order], v[order]
    new_run = np.concatenate([[True], (g[1:] != g[:-1]) | (v[1:] != v[:-1])])
    run = np.cumsum(new_run) - 1
    group_start = np.concatenate([[True], g[1:] != g[:-1]])
    first_of_group = np.maximum.accumulate(np.where(group_start, np.arange(len(g)), 0))
    position = np.arange(len(g)) - first_of_group + 1                  # 1-based position within the group
    run_first = np.flatnonzero(new_run)
    run_last = np.concatenate([run_first[1:], [len(g)]]) - 1
    average = (position[run_first] + position[run_last]) / 2.0         # ties share their average rank
    size = np.bincount(g, minlength=int(group.max()) + 1 if len(group) else 0)[g]
    out[where[order]] = average[run] / size
    return out
