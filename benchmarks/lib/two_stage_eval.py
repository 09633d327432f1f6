"""The two-stage table (benchmarks/two_stage.py): retrieval order and ranked order of the same candidates,
under the protocol, with a paired-bootstrap gain."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from twotower.config import RankConfig
from twotower.data.dataset import Dataset
from twotower.evaluate.metrics import mean_interval
from twotower.evaluate.protocol import EvalSet
from twotower.features.definitions import FeatureDefinitions
from twotower.features.offline import OfflineStore
from twotower.rank.reranker import Reranker, ranking_rows
from twotower.rank.two_stage import RetrieverFit, candidates, event_log, train_reranker, with_ids


def _target_positions(rows: pd.DataFrame, order_by: str) -> pd.Series:
    """{request: 1-based position of its relevant candidate under `order_by` (descending)}."""
    ranked = rows.sort_values(["request", order_by], ascending=[True, False], kind="stable")
    ranked = ranked.assign(pos=ranked.groupby("request").cumcount() + 1)
    hit = ranked[ranked["grade"] > 0]
    return pd.Series(hit["pos"].to_numpy(), index=hit["request"].to_numpy())


def _ndcg10(pos: pd.Series) -> pd.Series:
    return (1.0 / np.log2(pos + 1.0)).where(pos <= 10, 0.0)


def two_stage_metrics(rows: pd.DataFrame, order_by: str, n_targets: int) -> dict:
    """Recall@N of the candidate lists and HR/NDCG@10 of `order_by` (descending) within them; a target
    outside the candidates counts as a miss (full-catalog definition)."""
    pos = _target_positions(rows, order_by)
    return {"recall@N": len(pos) / n_targets, "HR@10": float((pos <= 10).sum()) / n_targets,
            "NDCG@10": float(_ndcg10(pos).sum()) / n_targets}


def paired_gain(rows: pd.DataFrame, order_by: str, baseline: str, n_targets: int, draws: int = 2000,
                seed: int = 0) -> tuple[float, float, float]:
    """NDCG@10 of `order_by` minus `baseline` over the same requests, with a 95% paired-bootstrap interval."""
    a, b = _ndcg10(_target_positions(rows, order_by)), _ndcg10(_target_positions(rows, baseline))
    gain = np.zeros(n_targets)            # requests whose target is not a candidate gain nothing either way
    gain[:len(a)] = a.to_numpy() - b.reindex(a.index).to_numpy()
    return mean_interval(gain, draws, seed)


@dataclass
class TwoStageResult:
    table: pd.DataFrame
    reranker: Reranker


def evaluate_two_stage(data: Dataset, val: EvalSet, test: EvalSet, fit_retriever: RetrieverFit, cfg: RankConfig,
                       log: Callable[[str], None] = lambda _: None) -> TwoStageResult:
    """The protocol's retriever (trained before validation, early-stopped on it) gives each test request its
    candidates; the ranker learns from a slice before validation; both orders of the same candidates are
    scored in one table. Features come from an offline store over the whole log, read as of each request."""
    with tempfile.TemporaryDirectory() as tmp:
        store = OfflineStore(tmp, FeatureDefinitions(tuple(cfg.windows_days)))
        store.write_events(event_log(data))
        scorer_for = fit_retriever(val.history, val)
        reranker = train_reranker(val.history, fit_retriever, cfg, store, log).refreshed(test.history)
        found = candidates(scorer_for(test.history), test, cfg.candidates, sources=reranker.sources,
                           per_source=reranker.source_candidates)
        rows = ranking_rows(with_ids(found, data), store, reranker, data)
    rows = rows.assign(ranker_score=reranker.score(rows))
    n_targets = len(test.targets)
    gain, low, high = paired_gain(rows, "ranker_score", "retrieval_score", n_targets)
    table = pd.DataFrame([
        {"order": "retrieval (two towers)", **two_stage_metrics(rows, "retrieval_score", n_targets), "gain": ""},
        {"order": "ranked (LambdaRank)", **two_stage_metrics(rows, "ranker_score", n_targets),
         "gain": f"{gain:+.4f} [{low:+.4f}, {high:+.4f}]"},
    ])
    return TwoStageResult(table, reranker)
