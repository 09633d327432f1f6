"""Everything the second stage needs at request time, in one object saved with the model: the ranker, the
co-visitation table, and how candidate rows get their features (the same code for training and serving)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..data.dataset import Dataset
from ..errors import InputError, read_stored
from ..features.definitions import FeatureDefinitions, FeatureSource
from .affinity import affinity_names, category_affinity
from .covisit import NAMES as COVISIT, CoVisitation, recent_items
from .ranker import LambdaRanker

RETRIEVAL = ["retrieval_score", "retrieval_rank", "retrieval_gap"]
IN_LIST = ["item_count_all", "covisit_norm"]     # also given as a percentile within the request's candidates
RANKER_DIR = "ranker"


@dataclass
class Reranker:
    ranker: LambdaRanker | None          # None only while its training rows are being built
    covisitation: CoVisitation
    recent_length: int
    definitions: FeatureDefinitions
    category_features: list[str] = field(default_factory=list)   # item features the user's affinity is for
    profile_length: int = 50
    context_features: list[str] = field(default_factory=list)    # the requests' own context columns

    @property
    def feature_names(self) -> list[str]:
        in_list = [f"{c}_in_list" for c in self.definitions.window_counts + IN_LIST]
        return (RETRIEVAL + self.definitions.names + COVISIT + affinity_names(self.category_features) + in_list
                + self.context_features)

    def refreshed(self, events: pd.DataFrame, n_items: int) -> "Reranker":
        """The same ranker with a co-visitation table over `events` (all a live request may know)."""
        return replace(self, covisitation=CoVisitation.fit(events, n_items, self.covisitation.window))

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        return self.ranker.score(rows)

    def save(self, model_dir: Path) -> Path:
        folder = Path(model_dir) / RANKER_DIR
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            self.ranker.save(tmp)
            self.covisitation.save(tmp / "covisit.npz")
            (tmp / "reranker.json").write_text(json.dumps(
                {"recent_length": self.recent_length, "windows_days": list(self.definitions.windows_days),
                 "category_features": self.category_features, "profile_length": self.profile_length,
                 "context_features": self.context_features}))
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
        return cls(LambdaRanker.load(folder), CoVisitation.load(folder / "covisit.npz"), meta["recent_length"],
                   FeatureDefinitions(tuple(meta["windows_days"])), meta.get("category_features", []),
                   meta.get("profile_length", 50), meta.get("context_features", []))


def context_columns(context: dict[str, np.ndarray], request: np.ndarray) -> dict[str, np.ndarray]:
    """The requests' own encoded context (device, page, ...: one value per request) as row columns
    `context_<name>`; derived context (a leading _, e.g. the request time) is left to the store features."""
    return {f"context_{k}": v[request] for k, v in context.items() if v.ndim == 1 and not k.startswith("_")}


def ranking_rows(rows: pd.DataFrame, source: FeatureSource, reranker: Reranker, history: Dataset) -> pd.DataFrame:
    """Candidate rows (request, user, item codes, user_id, item_id, timestamp, retrieval score and rank) ->
    the same rows with every feature the ranker reads. `source` is a feature store (offline or online);
    `history` (codes and item features) gives each request's latest items, strictly before its time."""
    missing = [c for c in ("request", "user", "item", "user_id", "item_id", "timestamp", "retrieval_score",
                           "retrieval_rank") if c not in rows.columns]
    if missing:
        raise InputError("candidate rows", f"missing column(s) {missing}", "build them with rank.two_stage")
    rows = rows.reset_index(drop=True)
    store = source.features(rows[["user_id", "item_id", "timestamp"]])
    first = rows.drop_duplicates("request")
    users, times = first["user"].to_numpy(), first["timestamp"].to_numpy()
    longest = max(reranker.recent_length, reranker.profile_length)
    profile = recent_items(history.events, users, times, longest)
    recent = [p[-reranker.recent_length:] for p in profile]
    position = pd.Series(np.arange(len(first)), index=first["request"].to_numpy())[rows["request"]].to_numpy()
    item = rows["item"].to_numpy()
    covisit = reranker.covisitation.scores(recent, position, item)
    affinity = category_affinity(history, reranker.category_features,
                                 [p[-reranker.profile_length:] for p in profile], position, item)
    out = pd.concat([rows, store[reranker.definitions.names], covisit, affinity], axis=1)
    per_request = out.groupby("request")
    out["retrieval_gap"] = out["retrieval_score"] - per_request["retrieval_score"].transform("max")
    for c in reranker.definitions.window_counts + IN_LIST:
        out[f"{c}_in_list"] = per_request[c].rank(pct=True)
    return out
