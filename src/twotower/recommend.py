"""Batch recommendations from a saved model: top-k unseen items per user, popularity for unknown users."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .data.dataset import Dataset, request_context
from .data.schema import read_id_list
from .errors import InputError
from .evaluate.protocol import seen_matrix
from .features.definitions import FeatureSource
from .features.materialize import open_online_store
from .folder import owned_paths, training_files
from .index.base import SearchResult
from .index.model_index import open_model_index
from .model.artifact import SavedModel, load_model
from .model.recommender import tower_queries
from .outputs import TableOutput, table_output
from .progress import progress_bar
from .rank.reranker import RANKER_DIR, Reranker, context_columns, ranking_rows


@dataclass
class RecommendSummary:
    users: int
    personalised: int
    fallback: int
    rows: int
    out: TableOutput
    ranked: bool
    note: str = ""             # why the ranker was not used, when it was asked for


def read_user_ids(spec: str, saved: SavedModel) -> list[str]:
    """'all' -> every user the model knows; otherwise a file of user ids."""
    if spec == "all":
        return [str(u) for u in saved.history.users.ids]
    return read_id_list(Path(spec), "user_id")


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


def recommend(model_dir: str | Path, users: str, k: int, out: str | Path | TableOutput, batch: int = 256,
              show_progress: bool = True, rerank: bool = True) -> RecommendSummary:
    """Write `user_id,item_id,rank,score` for each user (CSV, TSV or Parquet by the extension, or CSV on
    stdout for `-`). Known users: the model's vector index retrieves the top-N items (unseen ones, under
    recommend.exclude_seen), then the model's ranker (when it has one and `rerank`) orders them with
    features from the online store as of one second after the latest event, and the top k are kept; the
    score is the ranker's, or without it the index's similarity. Users with no history get the most popular
    indexed items. k is capped at the catalog's size."""
    if k < 1:
        raise InputError("--k", f"must be at least 1, got {k}", "pass a positive number")
    out = table_output(out, "--out", inputs=[users if users != "all" else None, *training_files(model_dir)],
                       protected=owned_paths(model_dir))
    saved = load_model(model_dir)
    index = open_model_index(saved)
    reranker, note = open_reranker(saved) if rerank else (None, "")
    online = open_online_store(saved.folder, saved.config.rank, saved.model_id) if reranker else None
    indexed = index.ids()
    k = min(k, max(len(indexed), 1))
    n = max(k, saved.config.rank.candidates) if reranker else k
    hist = saved.history
    ids = read_user_ids(users, saved)
    codes = hist.users.encode(ids)
    seen = seen_matrix(hist)
    known = (np.diff(seen.indptr) > 0)[codes] & (codes > 0)
    exclude_seen = saved.config.recommend.exclude_seen
    popular = popular_items(seen, hist.items.ids, set(indexed), k)
    queries = tower_queries(saved.model, hist)
    now = float(hist.events["timestamp"].max())   # requests are scored as of the latest event the model knows
    def top_k_of(c: np.ndarray, kn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[len(c), k] item ids and scores: popular items, replaced for known users by their own."""
        items = np.tile(np.asarray(popular.index, dtype=object), (len(c), 1))
        scores = np.tile(popular.to_numpy(np.float64), (len(c), 1))
        if len(popular) < k:
            items = np.pad(items, ((0, 0), (0, k - len(popular))), constant_values=None)
            scores = np.pad(scores, ((0, 0), (0, k - len(popular))), constant_values=-np.inf)
        if kn.any():
            ctx = request_context(hist.context_specs, int(kn.sum()), now)
            exclude = [set(hist.items.decode(seen[u].indices)) if exclude_seen else set() for u in c[kn]]
            found = index.search(queries(c[kn], ctx), n, exclude=exclude)
            if reranker:
                found = rank_candidates(reranker, online, hist, c[kn], found, k, now + 1.0)
            items[kn], scores[kn] = found.ids, found.scores
        return items, scores

    frames = []
    try:
        with progress_bar(show_progress) as bar:
            task = bar.add_task("recommending", total=len(ids), rate="")
            for lo in range(0, len(ids), batch):
                c = codes[lo:lo + batch]
                items, scores = top_k_of(c, known[lo:lo + batch])
                frames.append(pd.DataFrame({
                    "user_id": np.repeat(np.asarray(ids[lo:lo + batch], dtype=object), k),
                    "item_id": items.ravel(), "rank": np.tile(np.arange(1, k + 1), len(c)),
                    "score": scores.ravel()}))
                bar.update(task, advance=len(c))
    finally:
        if online is not None:
            online.close()
    recs = pd.concat(frames, ignore_index=True)
    recs = recs[recs["item_id"].notna() & np.isfinite(recs["score"])]
    out.write(recs, float_format="%.6g")
    return RecommendSummary(len(ids), int(known.sum()), int((~known).sum()), len(recs), out, reranker is not None,
                            note)


def rank_candidates(reranker: Reranker, online: FeatureSource, hist: Dataset, users: np.ndarray,
                    found: SearchResult, k: int, at: float) -> SearchResult:
    """Order each user's retrieved candidates by the ranker, with features as of `at`; keep the top k."""
    m, n = found.ids.shape
    rows = pd.DataFrame({"request": np.repeat(np.arange(m), n), "user": np.repeat(users, n),
                         "item_id": found.ids.ravel(), "retrieval_score": found.scores.ravel(),
                         "retrieval_rank": np.tile(np.arange(1, n + 1), m)})
    rows = rows[rows["item_id"].notna() & np.isfinite(rows["retrieval_score"])]
    rows = rows.assign(item_id=rows["item_id"].astype(str), item=hist.items.encode(rows["item_id"].astype(str)),
                       user_id=hist.users.decode(rows["user"]).astype(str), timestamp=at,
                       **context_columns(request_context(hist.context_specs, m, at), rows["request"].to_numpy()))
    rows = ranking_rows(rows, online, reranker, hist)
    rows = rows.assign(score=reranker.score(rows)).sort_values(["request", "score"], ascending=[True, False],
                                                               kind="stable")
    top = rows.assign(pos=rows.groupby("request").cumcount()).query("pos < @k")
    ids = np.full((m, k), None, dtype=object)
    scores = np.full((m, k), -np.inf)
    ids[top["request"], top["pos"]] = top["item_id"].to_numpy()
    scores[top["request"], top["pos"]] = top["score"].to_numpy()
    return SearchResult(ids, scores)


def popular_items(seen, item_ids: np.ndarray, indexed: set, k: int) -> pd.Series:
    """The k most-interacted items still in the index: {item id: interaction count}, most popular first."""
    counts = pd.Series(np.asarray(seen.sum(0)).ravel()[1:], index=item_ids.astype(str))
    counts = counts[counts.index.isin(list(indexed))]
    return counts.sort_values(ascending=False, kind="stable").head(k).astype(np.float64)
