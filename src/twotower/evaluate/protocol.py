"""The protocol: hold out each user's last positive event as test and the one before as validation; rank
the whole catalog with the user's earlier items excluded; tune every model on validation, report test.

Repeat consumption: with `exclude_seen` (the default, as `recommend` serves) an item the user already had
can never be recommended, so a held-out event that repeats one is not counted (that user has no target at
that step; the log line says how many). With `exclude_seen = false` nothing is masked and a repeat is a
target like any other."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.dataset import Dataset, seen_matrix
from ..data.query_text import as_recommendations
from ..data.split import Targets, holdout_last
from ..errors import InputError
from .metrics import mask_seen, score_batch_size, summarize, target_ranks, top_k

Scorer = Callable[[np.ndarray, dict], np.ndarray]
"""(user codes [B], request context {name: [B, ...]}) -> scores [B, n_items + 1] (column 0 unused)."""


class Recommender(Protocol):
    """What the protocol needs from a model or a baseline."""

    name: str

    def fit(self, train: Dataset, validation: "EvalSet") -> dict:
        """Fit on `train`, choosing settings (or the stopping epoch) by NDCG@10 on `validation`; return them."""

    def refit(self, train: Dataset) -> None:
        """Fit again on `train` (which now includes the validation events) with the chosen settings."""

    def scorer(self, history: Dataset) -> Scorer:
        """Score users given the events known at query time."""


@dataclass
class EvalSet:
    """Targets to rank and the history known before them."""

    history: Dataset
    targets: Targets
    seen: sp.csr_matrix

    @classmethod
    def make(cls, history: Dataset, targets: Targets, exclude_seen: bool = True) -> "EvalSet":
        if not exclude_seen:
            return cls(history, targets, sp.csr_matrix((history.n_users + 1, history.n_items + 1), dtype=np.float32))
        seen = seen_matrix(history)
        # a target the user already had cannot be recommended under seen-item exclusion: drop it
        fresh = (np.asarray(seen[targets.users, targets.items]).ravel() == 0) if len(targets) else np.zeros(0, bool)
        return cls(history, targets.subset(fresh), seen)


    def sample(self, n: int, seed: int = 0) -> "EvalSet":
        """At most `n` of the targets, a uniform sample (all of them when there are fewer)."""
        if len(self.targets) <= n:
            return self
        keep = np.zeros(len(self.targets), bool)
        keep[np.random.default_rng(seed).choice(len(self.targets), n, replace=False)] = True
        return EvalSet(self.history, self.targets.subset(keep), self.seen)


def masked_scores(scorer: Scorer, ev: EvalSet, batch: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """(targets slice, [B, n_items + 1] float64 scores with seen items and padding at -inf), batch by batch."""
    t = ev.targets
    batch = batch or score_batch_size(ev.history.n_items)
    for lo in range(0, len(t), batch):
        sl = slice(lo, lo + batch)
        scores = np.array(scorer(t.users[sl], {k: v[sl] for k, v in t.context.items()}), dtype=np.float64)
        yield sl, mask_seen(scores, t.users[sl], ev.seen)


def rank_targets(scorer: Scorer, ev: EvalSet, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """([n] each target's 0-based rank among all items, [n, 10] each request's top 10 item codes)."""
    ranks, tops = [], []
    for sl, scores in masked_scores(scorer, ev, batch):
        ranks.append(target_ranks(scores, ev.targets.items[sl]))
        tops.append(top_k(scores, 10))
    return np.concatenate(ranks), np.concatenate(tops)


def evaluate_scorer(scorer: Scorer, ev: EvalSet, batch: int | None = None) -> dict[str, float]:
    """Rank every target with `scorer` and summarise."""
    return summarize(*rank_targets(scorer, ev, batch), ev.history.n_items)


def ndcg10(scorer: Scorer, ev: EvalSet) -> float:
    return evaluate_scorer(scorer, ev)["NDCG@10"]


def split_for_protocol(data: Dataset, exclude_seen: bool = True) -> tuple[EvalSet, EvalSet]:
    """(validation set over the history before it, test set over the history before it)."""
    (before_val, val), (before_test, test) = _holdouts(data)
    return EvalSet.make(before_val, val, exclude_seen), EvalSet.make(before_test, test, exclude_seen)


def _holdouts(data: Dataset) -> tuple[tuple[Dataset, Targets], tuple[Dataset, Targets]]:
    """((history, validation targets), (history, test targets)): each user's last positive is the test, the
    one before it the validation."""
    before_test, test = holdout_last(data, min_history=2)
    return holdout_last(before_test, min_history=1), (before_test, test)


def protocol_split(data: Dataset, exclude_seen: bool = True,
                   log: Callable[[str], None] = print) -> tuple[EvalSet, EvalSet]:
    """The protocol's (validation, test) sets, checked: a clear error when there is nothing to rank."""
    (before_val, every_val), (before_test, every_test) = _holdouts(data)
    every_test = replace(every_test, context=as_recommendations(every_test.context))   # it scores recommending
    val, test = EvalSet.make(before_val, every_val, exclude_seen), EvalSet.make(before_test, every_test, exclude_seen)
    repeats = len(every_test) - len(test.targets)
    if len(test.targets) == 0 or len(val.targets) == 0:
        if len(every_test) and len(every_val):
            raise InputError("events", "every held-out event repeats an item its user already had, and seen items "
                             "are excluded from recommendations, so there is nothing to rank",
                             "for a log of repeat purchases set recommend.exclude_seen = false in the config")
        raise InputError("events", "no user has three positive events, which leave-one-out evaluation needs "
                         "(one to learn from, one to validate, one to test)", "evaluate on a longer log")
    log(f"protocol: {len(test.targets)} test users, {len(val.targets)} validation users, "
        f"{data.n_items} items, {int((val.history.events['weight'] > 0).sum())} training events"
        + (f"; {repeats} test events repeat a seen item and are not counted (exclude_seen)" if repeats else "")
        + ("" if exclude_seen else "; seen items not excluded, repeats count"))
    return val, test


def run_protocol(data: Dataset, models: list[Recommender], log: Callable[[str], None] = print,
                 exclude_seen: bool = True, split: tuple[EvalSet, EvalSet] | None = None) -> pd.DataFrame:
    """Fit, tune and test every model under the same split; one row of test metrics per model."""
    rows, _ = protocol_rows(data, models, log, split or protocol_split(data, exclude_seen, log))
    return pd.DataFrame(rows)


def protocol_rows(data: Dataset, models: list[Recommender], log: Callable[[str], None],
                  split: tuple[EvalSet, EvalSet]) -> tuple[list[dict], dict[str, np.ndarray]]:
    """(one row of test metrics per model, {model name: [n] each test target's rank}) under `split`."""
    val, test = split
    rows, ranks = [], {}
    for model in models:
        t0 = time.perf_counter()
        chosen = model.fit(val.history, val)
        model.refit(test.history)
        ranks[model.name], tops = rank_targets(model.scorer(test.history), test)
        metrics = summarize(ranks[model.name], tops, test.history.n_items)
        seconds = time.perf_counter() - t0
        log(f"  {model.name:<22} NDCG@10 {metrics['NDCG@10']:.4f}  HR@10 {metrics['HR@10']:.4f}  "
            f"({seconds:.0f}s; {_fmt(chosen)})")
        rows.append({"model": model.name, **metrics, "seconds": seconds, "settings": _fmt(chosen)})
    return rows, ranks


def _fmt(params: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
