"""Retrieve, then rank, under the evaluation protocol: the towers' top-N candidates for each held-out
request, point-in-time features for every (request, candidate), a ranker trained on the validation requests
(candidates the towers really produce) and tested on the test requests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.dataset import Dataset
from ..evaluate.metrics import top_k
from ..evaluate.protocol import EvalSet, Scorer, masked_scores
from ..features.definitions import FeatureDefinitions
from ..features.offline import OfflineStore
from .ranker import LambdaRanker, relevance_grades

RETRIEVAL = ["retrieval_score", "retrieval_rank"]


def candidates(scorer: Scorer, ev: EvalSet, n: int) -> pd.DataFrame:
    """Top-n unseen items per target request: request, user, item (codes), timestamp, retrieval score and
    rank, and the grade (the target's relevance, 0 for the others)."""
    t = ev.targets
    grades = relevance_grades(t.weights if t.weights is not None else np.ones(len(t)))
    frames = []
    for sl, scores in masked_scores(scorer, ev):
        top = top_k(scores, n)
        m = len(scores)
        items = top.ravel()
        frames.append(pd.DataFrame({
            "request": np.repeat(np.arange(sl.start, sl.start + m), n), "user": np.repeat(t.users[sl], n),
            "item": items, "timestamp": np.repeat(t.times[sl], n),
            "retrieval_score": np.take_along_axis(scores, top, 1).ravel(),
            "retrieval_rank": np.tile(np.arange(1, n + 1), m),
            "grade": np.where(items == np.repeat(t.items[sl], n), np.repeat(grades[sl], n), 0),
        }))
    return pd.concat(frames, ignore_index=True)


def with_features(rows: pd.DataFrame, store: OfflineStore) -> pd.DataFrame:
    """Join the store's features, as of each request's time, onto candidate rows."""
    req = pd.DataFrame({"user_id": rows["user"].astype(str), "item_id": rows["item"].astype(str),
                        "timestamp": rows["timestamp"]})
    feats = store.features(req)
    return pd.concat([rows.reset_index(drop=True), feats[store.definitions.names]], axis=1)


def event_log(data: Dataset) -> pd.DataFrame:
    """A dataset's events in the store's shape (internal codes as ids: they never leave this module)."""
    ev = data.events
    return pd.DataFrame({"user_id": ev["user"].astype(str), "item_id": ev["item"].astype(str),
                         "timestamp": ev["timestamp"].astype(float), "weight": ev["weight"].astype(float)})


@dataclass
class TwoStageResult:
    table: pd.DataFrame
    ranker: LambdaRanker


def two_stage_metrics(rows: pd.DataFrame, order_by: str, n_targets: int) -> dict:
    """Recall@N of the candidate lists and HR/NDCG@10 of `order_by` (descending) within them; a target
    outside the candidates counts as a miss (full-catalog definition)."""
    ranked = rows.sort_values(["request", order_by], ascending=[True, False], kind="stable")
    ranked = ranked.assign(pos=ranked.groupby("request").cumcount() + 1)
    hit = ranked[ranked["grade"] > 0]
    ndcg = (1.0 / np.log2(hit["pos"] + 1.0)).where(hit["pos"] <= 10, 0.0)
    return {"recall@N": len(hit) / n_targets, "HR@10": float((hit["pos"] <= 10).sum()) / n_targets,
            "NDCG@10": float(ndcg.sum()) / n_targets}


def evaluate_two_stage(data: Dataset, val: EvalSet, test: EvalSet, val_scorer: Scorer, test_scorer: Scorer,
                       n: int = 200, definitions: FeatureDefinitions | None = None,
                       store_folder=None) -> TwoStageResult:
    """Train the ranker on validation requests' candidates, then compare retrieval order and ranked order on
    the test requests, all in one table."""
    import tempfile

    definitions = definitions or FeatureDefinitions()
    with tempfile.TemporaryDirectory() as tmp:
        store = OfflineStore(store_folder or tmp, definitions)
        store.write_events(event_log(data))        # every event; each row only sees those before its time
        train_rows = with_features(candidates(val_scorer, val, n), store)
        test_rows = with_features(candidates(test_scorer, test, n), store)
    ranker = LambdaRanker(RETRIEVAL + definitions.names, base="retrieval_score").fit(train_rows)
    test_rows = test_rows.assign(ranker_score=ranker.score(test_rows))
    n_targets = len(test.targets)
    table = pd.DataFrame([
        {"order": "retrieval (two towers)", **two_stage_metrics(test_rows, "retrieval_score", n_targets)},
        {"order": "ranked (LambdaRank)", **two_stage_metrics(test_rows, "ranker_score", n_targets)},
    ])
    return TwoStageResult(table, ranker)
