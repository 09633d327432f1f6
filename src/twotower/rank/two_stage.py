"""Retrieve, then rank: the towers' top-N candidates for each request, every feature the ranker reads, and the
ranker trained on a later time slice than the towers that produced its candidates.

The ranker must learn from candidates the towers really produce for requests they never trained on. So
`train_reranker` holds out each user's last `slice_events` positives, trains a retriever on the events before
them, and asks it for candidates for each held-out event, with only the history before that event.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import nullcontext
from dataclasses import replace
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..config import RankConfig
from ..data.dataset import Dataset
from ..data.query_text import as_recommendations
from ..data.split import holdout_last
from ..errors import InputError
from ..evaluate.metrics import top_k
from ..evaluate.protocol import EvalSet, Scorer, masked_scores
from ..features.definitions import FeatureSource
from ..features.offline import OfflineStore
from ..progress import progress_bar
from ..timing import Stopwatch
from .affinity import category_features
from .covisit import CoVisitation, recent_items
from .reranker import Reranker, context_columns, context_names, ranking_rows
from .ranker import LambdaRanker, ndcg_of_orders, relevance_grades
from .sources import PROFILE_LENGTH, ItemSource, add_source_candidates, fit_sources, source_scores
from .training_rows import SplitRows, chunks

logger = logging.getLogger(__name__)


class NoRankerData(InputError):
    """The log gives the ranker nothing to learn from: no later request has its chosen item among its
    candidates. The model is then served in retrieval order, and says so."""


RetrieverFit = Callable[[Dataset, EvalSet], Callable[[Dataset], Scorer]]
"""(training history, early-stopping set) -> a trained retriever: history -> Scorer."""


def candidates(scorer: Scorer, ev: EvalSet, n: int, shown: list[np.ndarray] | None = None,
               sources: list[ItemSource] = (), per_source: int = 50, levels: np.ndarray | None = None) -> pd.DataFrame:
    """Top-n unseen items per target request: request, user, item (codes), timestamp, retrieval score and
    rank, and the grade (the target's relevance, 0 for the others). `shown[r]`, item codes logged as shown
    to request r without a click, join its list as real negatives (with their true retrieval score and rank)
    when retrieval did not already bring them. Each of `sources` adds its top `per_source` (retrieval rank
    n + 1 when the towers did not bring them), and every row gets each source's score and rank. `levels`:
    the positive weights grades are counted over (default: the targets' own)."""
    t = ev.targets
    grades = relevance_grades(t.weights if t.weights is not None else np.ones(len(t)), levels)
    profiles = recent_items(ev.history.events, t.users, t.times, PROFILE_LENGTH) if sources else None
    frames = []
    for sl, scores in masked_scores(scorer, ev):
        top = top_k(scores, n)
        m, width = top.shape                # width < n when the catalog is smaller than n
        local = np.repeat(np.arange(m), width)
        items = top.ravel()
        ranks = np.tile(np.arange(1, width + 1), m)
        if shown is not None:
            extra = [(i, item) for i in range(m) for item in set(shown[sl.start + i].tolist())
                     if item not in top[i] and item != t.items[sl.start + i] and np.isfinite(scores[i, item])]
            if extra:
                rows_, cols_ = np.array(extra).T
                local = np.concatenate([local, rows_])
                items = np.concatenate([items, cols_])
                ranks = np.concatenate([ranks, 1 + (scores[rows_] > scores[rows_, cols_][:, None]).sum(1)])
        rows = {"local": local, "item": items, "retrieval_rank": ranks}
        if sources:
            dense = source_scores(sources, profiles[sl], t.times[sl], np.isfinite(scores))
            rows = add_source_candidates(rows, dense, per_source)
        rows = pd.DataFrame(rows)
        local, items = rows["local"].to_numpy(np.int64), rows["item"].to_numpy(np.int64)
        requests = local + sl.start
        frames.append(rows.assign(
            request=requests, user=t.users[requests], timestamp=t.times[requests],
            retrieval_score=scores[local, items], retrieval_rank=rows["retrieval_rank"].fillna(n + 1),
            grade=np.where(items == t.items[requests], grades[requests], 0),
            **context_columns(t.context, requests)).drop(columns="local"))
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[np.isfinite(rows["retrieval_score"])]       # seen items and padding are never candidates
    return rows.sort_values(["request", "retrieval_rank"], kind="stable", ignore_index=True)


def shown_without_click(events: pd.DataFrame, targets, window_s: float) -> list[np.ndarray]:
    """For each target (user, time): item codes of that user's weight-0 events (impressions, skips) logged
    in [time - window_s, time], i.e. shown with or just before the item that was chosen."""
    neg = events[events["weight"] <= 0]
    out = [np.zeros(0, np.int64)] * len(targets)
    if neg.empty:
        return out
    neg = neg.sort_values(["user", "timestamp"], kind="stable")
    users, times, items = neg["user"].to_numpy(), neg["timestamp"].to_numpy(np.float64), neg["item"].to_numpy()
    lo = np.searchsorted(users, targets.users, side="left")
    hi = np.searchsorted(users, targets.users, side="right")
    for r, (a, b, t) in enumerate(zip(lo, hi, targets.times)):
        window = times[a:b]
        start, stop = np.searchsorted(window, t - window_s, "left"), np.searchsorted(window, t, "right")
        out[r] = items[a + start:a + stop]
    return out


def with_ids(rows: pd.DataFrame, data: Dataset) -> pd.DataFrame:
    """Add the user's own ids (user_id, item_id) to code-keyed candidate rows: stores are keyed by ids."""
    return rows.assign(user_id=data.users.decode(rows["user"]).astype(str),
                       item_id=data.items.decode(rows["item"]).astype(str))


def event_log(data: Dataset) -> pd.DataFrame:
    """A dataset's events in the feature store's shape, keyed by the user's own ids."""
    ev = data.events
    return pd.DataFrame({"user_id": data.users.decode(ev["user"]).astype(str),
                         "item_id": data.items.decode(ev["item"]).astype(str),
                         "timestamp": ev["timestamp"].astype(float), "weight": ev["weight"].astype(float)})


def slice_requests(history: Dataset, per_user: int, max_requests: int | None = None, seed: int = 0,
                   exclude_seen: bool = True, share: float = 1.0) -> tuple[Dataset, list[EvalSet]]:
    """Hold out each user's last `per_user` positives (at most `share` of theirs, at least one) one step at
    a time, keeping at least two per user for the retriever to learn from: (the events before all of them,
    one EvalSet per step, newest first, each over the history just before its targets). Above
    `max_requests` targets in all, a uniform sample of them is kept (the history still loses them all)."""
    positives = np.bincount(history.events.loc[history.events["weight"] > 0, "user"], minlength=history.n_users + 1)
    cap = np.minimum(per_user, np.maximum(1, np.floor(share * positives)))
    steps, h = [], history
    for step in range(per_user):
        h, targets = holdout_last(h, min_history=2, only=cap > step)
        if len(targets) == 0:
            break
        steps.append(EvalSet.make(h, targets, exclude_seen))
    # a step of repeats only (exclude_seen) is dropped; the ranker orders recommendations, so its slice
    # requests carry no search text (/recommend has none)
    steps = [EvalSet(s.history, replace(s.targets, context=as_recommendations(s.targets.context)), s.seen)
             for s in steps if len(s.targets)]
    total = sum(len(s.targets) for s in steps)
    if max_requests is not None and total > max_requests:
        keep = np.random.default_rng(seed).permutation(total) < max_requests
        bounds = np.cumsum([0] + [len(s.targets) for s in steps])
        steps = [EvalSet(s.history, s.targets.subset(keep[a:b]), s.seen)
                 for s, a, b in zip(steps, bounds, bounds[1:])]
    return h, steps


def train_reranker(data: Dataset, fit_retriever: RetrieverFit, cfg: RankConfig, store: FeatureSource,
                   log: Callable[[str], None] = lambda _: None, exclude_seen: bool = True,
                   watch: Stopwatch | None = None, show_progress: bool = False) -> Reranker:
    """Train the ranker on a later slice than its retriever's training data (see the module docstring).
    The returned reranker's co-visitation table and sources cover `data` in full, as serving needs.
    `watch` gets the seconds of each step. Its rows wait on disk (`training_rows`): memory holds one chunk
    of them and LightGBM's binned copy (~150 B a row), and rank.max_requests bounds their number."""
    watch = watch or Stopwatch()
    base, steps = slice_requests(data, cfg.slice_events, cfg.max_requests, exclude_seen=exclude_seen,
                                 share=cfg.slice_share)
    if not steps:
        raise NoRankerData("events", "no user has a later positive event the ranker could learn from (two "
                           "positives, or with exclude_seen a positive that is not a repeat)",
                           "train on a longer log, set recommend.exclude_seen = false for repeat purchases, or "
                           "pass --no-ranker")
    log(f"ranker: retriever trained on {int((base.events['weight'] > 0).sum()):,} events; candidates for "
        f"{sum(len(s.targets) for s in steps):,} later requests")
    try:
        with watch.stage("ranker: its retriever's towers"):
            scorer_for = fit_retriever(base, steps[-1])       # early-stopped on the oldest held-out step
    except InputError as exc:
        raise NoRankerData("events", f"the ranker's retriever cannot learn from the events before its slice "
                           f"({exc.problem})", "lower rank.slice_events, train on a longer log, or pass "
                           "--no-ranker") from exc
    with watch.stage("ranker: candidate sources"):
        covisitation = CoVisitation.fit(base.events, data.n_items, cfg.covisit_window)
        tune = steps[-1].targets
        sources = fit_sources(base, cfg, covisitation, (recent_items(base.events, tune.users, tune.times,
                                                                     PROFILE_LENGTH), tune.items), log=log)
    reranker = Reranker(None, covisitation, cfg.recent_items, store.definitions, category_features(data),
                        cfg.profile_items, context_names(tune.context), sources, cfg.source_candidates)
    orders = ["retrieval_score"] + [f"{s.name}_score" for s in sources]
    with tempfile.TemporaryDirectory(prefix="twotower-ranker-rows-") as tmp:
        split = SplitRows.create(Path(tmp), reranker.feature_names, sum(len(s.targets) for s in steps))
        build_rows(data, steps, scorer_for, cfg, store, reranker, split, watch, show_progress)
        split.settle()
        if not len(split.train) or not len(split.valid):
            raise NoRankerData("events", "too few later requests have their chosen item among their candidates "
                               "(the ranker needs some to learn from and some to stop on)",
                               "raise rank.candidates, train on a longer log, or pass --no-ranker")
        with watch.stage("ranker: trees"):
            alone = ndcg_of_orders(split.train, orders)
            base_order = max(orders, key=alone.get)      # the trees correct the best single order
            reranker.ranker = LambdaRanker(reranker.feature_names, base=base_order).fit_rows(split, compare=orders)
    report = reranker.ranker.report
    alone = report["orders_ndcg@10"]
    log("ranker: held-out NDCG@10 " + ", ".join(f"{c.removesuffix('_score')} {v:.4f}" for c, v in alone.items())
        + f", fused {report['valid_ndcg@10']:.4f}")
    best = max(alone, key=alone.get)
    if report["valid_ndcg@10"] <= alone[best]:
        if best == "retrieval_score":
            raise NoRankerData("events", f"the ranker's held-out NDCG@10 ({report['valid_ndcg@10']:.4f}) is no "
                               f"better than retrieval order's ({alone[best]:.4f}) on the same requests",
                               "nothing to do: the model serves retrieval order; a longer log may teach a ranker")
        logger.warning("the ranker's held-out NDCG@10 (%.4f) is no better than the %s source alone (%.4f): the "
                       "model serves that source's order", report["valid_ndcg@10"], best, alone[best])
        reranker.serve_order = best
    with watch.stage("ranker: sources over every event"):
        return reranker.refreshed(data)


def build_rows(data: Dataset, steps: list[EvalSet], scorer_for: Callable[[Dataset], Scorer], cfg: RankConfig,
               store: FeatureSource, reranker: Reranker, split: SplitRows, watch: Stopwatch,
               show_progress: bool = False) -> None:
    """Every slice request's candidates with their features, into `split` a chunk of requests at a time
    (lists without the chosen item teach nothing and are left out): memory for one chunk, not the log."""
    per_request = cfg.candidates + len(reranker.sources) * cfg.source_candidates
    weights = data.events["weight"].to_numpy(np.float64)
    levels, offset = np.unique(weights[weights > 0]), 0
    counted = store.prepared() if isinstance(store, OfflineStore) else nullcontext()   # counts once, not per chunk
    with counted, progress_bar(show_progress) as bar:
        task = bar.add_task("ranker rows", total=sum(len(s.targets) for s in steps), rate="")
        t0 = time.perf_counter()
        for step in steps:
            scorer = scorer_for(step.history)
            with watch.stage("ranker: candidates"):       # one pass over the log per step, not per chunk
                shown = shown_without_click(data.events, step.targets, cfg.impression_window_s)
            for part in chunks(len(step.targets), per_request):
                sub = EvalSet(step.history, step.targets.subset(part), step.seen)
                with watch.stage("ranker: candidates"):
                    rows = candidates(scorer, sub, cfg.candidates, shown[part], reranker.sources,
                                      cfg.source_candidates, levels)
                    rows = rows[rows.groupby("request")["grade"].transform("max") > 0]
                if not rows.empty:
                    with watch.stage("ranker: features"):
                        rows = rows.assign(request=rows["request"] + offset + part.start)
                        split.add(ranking_rows(with_ids(rows, data), store, reranker, data))
                bar.advance(task, part.stop - part.start)
                done = bar.tasks[task].completed
                bar.update(task, rate=f"{done / max(time.perf_counter() - t0, 1e-9):,.0f} requests/s")
            offset += len(step.targets)
