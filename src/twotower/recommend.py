"""Batch recommendations from a saved model: top-k unseen items per user, popularity for unknown users."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .data.dataset import request_context
from .data.schema import read_id_list
from .errors import InputError
from .evaluate.protocol import seen_matrix
from .index.model_index import open_model_index
from .model.artifact import SavedModel, load_model
from .model.recommender import tower_queries
from .progress import progress_bar


@dataclass
class RecommendSummary:
    users: int
    personalised: int
    fallback: int
    rows: int
    out: Path


def read_user_ids(spec: str, saved: SavedModel) -> list[str]:
    """'all' -> every user the model knows; otherwise a file of user ids."""
    if spec == "all":
        return [str(u) for u in saved.history.users.ids]
    return read_id_list(Path(spec), "user_id")


def recommend(model_dir: str | Path, users: str, k: int, out: str | Path, batch: int = 256,
              show_progress: bool = True) -> RecommendSummary:
    """Write `user_id,item_id,rank,score` for each user: known users get the top-k of the model's vector
    index among the items they have not had; users with no history get the most popular indexed items.
    The score is the index's: the similarity before the temperature."""
    if k < 1:
        raise InputError("--k", f"must be at least 1, got {k}", "pass a positive number")
    saved = load_model(model_dir)
    index = open_model_index(saved)
    hist = saved.history
    ids = read_user_ids(users, saved)
    codes = hist.users.encode(ids)
    seen = seen_matrix(hist)
    known = (np.diff(seen.indptr) > 0)[codes] & (codes > 0)
    popular = popular_items(seen, hist.items.ids, set(index.ids()), k)
    queries = tower_queries(saved.model, hist)
    now = float(hist.events["timestamp"].max())   # requests are scored as of the latest event the model knows
    frames = []
    with progress_bar(show_progress) as bar:
        task = bar.add_task("recommending", total=len(ids), rate="")
        for lo in range(0, len(ids), batch):
            c, kn = codes[lo:lo + batch], known[lo:lo + batch]
            items = np.tile(np.asarray(popular.index, dtype=object), (len(c), 1))
            scores = np.tile(popular.to_numpy(np.float64), (len(c), 1))
            if len(popular) < k:
                items = np.pad(items, ((0, 0), (0, k - len(popular))), constant_values=None)
                scores = np.pad(scores, ((0, 0), (0, k - len(popular))), constant_values=-np.inf)
            if kn.any():
                ctx = request_context(hist.context_specs, int(kn.sum()), now)
                exclude = [set(hist.items.decode(seen[u].indices)) for u in c[kn]]
                found = index.search(queries(c[kn], ctx), k, exclude=exclude)
                items[kn], scores[kn] = found.ids, found.scores
            frames.append(pd.DataFrame({
                "user_id": np.repeat(np.asarray(ids[lo:lo + batch], dtype=object), k),
                "item_id": items.ravel(),
                "rank": np.tile(np.arange(1, k + 1), len(c)),
                "score": scores.ravel(),
            }))
            bar.update(task, advance=len(c))
    recs = pd.concat(frames, ignore_index=True)
    recs = recs[recs["item_id"].notna() & np.isfinite(recs["score"])]
    out = Path(out)
    with atomic_path(out) as tmp:
        recs.to_csv(tmp, index=False, float_format="%.6g")
    return RecommendSummary(len(ids), int(known.sum()), int((~known).sum()), len(recs), out)


def popular_items(seen, item_ids: np.ndarray, indexed: set, k: int) -> pd.Series:
    """The k most-interacted items still in the index: {item id: interaction count}, most popular first."""
    counts = pd.Series(np.asarray(seen.sum(0)).ravel()[1:], index=item_ids.astype(str))
    counts = counts[counts.index.isin(list(indexed))]
    return counts.sort_values(ascending=False, kind="stable").head(k).astype(np.float64)
