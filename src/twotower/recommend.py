"""Batch recommendations from a saved model: top-k unseen items per user, popularity for unknown users."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .data.dataset import request_context
from .data.schema import read_table
from .errors import InputError
from .evaluate.metrics import mask_seen, score_batch_size, top_k
from .evaluate.protocol import seen_matrix
from .model.artifact import SavedModel, load_model
from .model.recommender import tower_scorer
from .progress import progress_bar


@dataclass
class RecommendSummary:
    users: int
    personalised: int
    fallback: int
    rows: int
    out: Path


def read_user_ids(spec: str, saved: SavedModel) -> list[str]:
    """'all' -> every user the model knows; otherwise a file: CSV/Parquet with user_id, or one id per line."""
    if spec == "all":
        return [str(u) for u in saved.history.users.ids]
    path = Path(spec)
    if path.suffix.lower() in (".csv", ".parquet", ".pq", ".tsv"):
        return read_table(path, id_column="user_id")["user_id"].tolist()
    if not path.is_file():
        raise InputError(spec, "file not found", "pass --users all or a file of user ids")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise InputError(spec, "no user ids in the file", "put one user id per line")
    return ids


def recommend(model_dir: str | Path, users: str, k: int, out: str | Path, batch: int | None = None,
              show_progress: bool = True) -> RecommendSummary:
    """Write `user_id,item_id,rank,score` for each user: known users get the towers' top-k among the items
    they have not had; users with no history get the most popular items."""
    if k < 1:
        raise InputError("--k", f"must be at least 1, got {k}", "pass a positive number")
    saved = load_model(model_dir)
    hist = saved.history
    ids = read_user_ids(users, saved)
    codes = hist.users.encode(ids)
    seen = seen_matrix(hist)
    has_history = np.asarray(seen.sum(1)).ravel() > 0
    known = has_history[codes] & (codes > 0)
    popularity = np.asarray(seen.sum(0)).ravel().astype(np.float64)
    popularity[0] = -np.inf
    pop_top = top_k(popularity[None, :], min(k, hist.n_items))[0]
    score = tower_scorer(saved.model, hist)
    now = float(hist.events["timestamp"].max())   # requests are scored as of the latest event the model knows
    k = min(k, hist.n_items)
    batch = batch or score_batch_size(hist.n_items)
    frames = []
    with progress_bar(show_progress) as bar:
        task = bar.add_task("recommending", total=len(ids), rate="")
        for lo in range(0, len(ids), batch):
            sl = slice(lo, lo + batch)
            c, kn = codes[sl], known[sl]
            items = np.tile(pop_top, (len(c), 1))
            scores = np.tile(popularity[pop_top], (len(c), 1))
            if kn.any():
                ctx = request_context(hist.context_specs, int(kn.sum()), now)
                s = mask_seen(np.array(score(c[kn], ctx), dtype=np.float64), c[kn], seen)
                top = top_k(s, k)
                items[kn], scores[kn] = top, np.take_along_axis(s, top, 1)
            frames.append(pd.DataFrame({
                "user_id": np.repeat(np.asarray(ids[sl], dtype=object), k),
                "item_id": hist.items.decode(items.ravel()),
                "rank": np.tile(np.arange(1, k + 1), len(c)),
                "score": scores.ravel(),
            }))
            bar.update(task, advance=len(c))
    recs = pd.concat(frames, ignore_index=True)
    recs = recs[np.isfinite(recs["score"])]
    out = Path(out)
    with atomic_path(out) as tmp:
        recs.to_csv(tmp, index=False, float_format="%.6g")
    return RecommendSummary(len(ids), int(known.sum()), int((~known).sum()), len(recs), out)
