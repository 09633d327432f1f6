"""Choose the towers' few settings that matter on the validation split, within a time budget.

A greedy walk from the configured settings: each step tries one change (dropout, learning rate, history
length, dimension) with a short training run, and keeps it when validation NDCG@10 improves. The walk stops
when the budget is spent; every trial is recorded with the model. Short trials favour settings that learn
fast, so a change must win by a margin to be kept.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .config import Config
from .data.dataset import Dataset
from .evaluate.protocol import EvalSet

logger = logging.getLogger(__name__)

# one change per trial, the ones that most often matter first
CHANGES: list[dict] = [
    {"model.dropout": 0.1}, {"model.dropout": 0.5},
    {"train.lr": 1e-3}, {"train.lr": 1e-2},
    {"model.max_history": 20}, {"model.max_history": 100},
    {"model.dim": 128}, {"model.dim": 32},
]
MARGIN = 1.02            # a change is kept when it beats the current best by 2%


@dataclass
class Tuning:
    """The settings chosen and every trial (its changes, validation NDCG@10, seconds)."""

    chosen: dict = field(default_factory=dict)
    trials: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def with_changes(cfg: Config, changes: dict) -> Config:
    """`cfg` with {"section.key": value} changes applied (validated like a config file)."""
    raw = cfg.model_dump()
    for key, value in changes.items():
        section, name = key.split(".")
        raw[section][name] = value
    return Config.model_validate(raw)


def choose_settings(data: Dataset, validation: EvalSet, cfg: Config, budget_s: float, trial_epochs: int,
                    show_progress: bool = False) -> tuple[Config, Tuning]:
    """(the config with the chosen changes, the record). Trials train on `data` for `trial_epochs` epochs
    and are scored on `validation`; a trial that would start after `budget_s` seconds is not run."""
    from .evaluate.towers import TowerRecommender

    t0 = time.perf_counter()
    tuning = Tuning()

    def trial(changes: dict) -> float:
        start = time.perf_counter()
        short = with_changes(cfg, {**tuning.chosen, **changes, "train.epochs": trial_epochs})
        towers = TowerRecommender(short, name="tuning trial", show_progress=show_progress)
        towers.fit(data, validation)
        score = towers.report.best_score
        tuning.trials.append({"changes": {**tuning.chosen, **changes}, "val_ndcg@10": round(score, 5),
                              "seconds": round(time.perf_counter() - start, 1)})
        logger.info("tuning: %s -> validation NDCG@10 %.4f", {**tuning.chosen, **changes} or "defaults", score)
        return score

    best = trial({})
    for change in CHANGES:
        spent = time.perf_counter() - t0
        if spent + tuning.trials[0]["seconds"] > budget_s:
            break
        if all(tuning.chosen.get(k) == v for k, v in change.items()) or \
                any(k in tuning.chosen for k in change):          # this setting was already changed
            continue
        score = trial(change)
        if score > best * MARGIN:
            best = score
            tuning.chosen.update(change)
    tuning.seconds = time.perf_counter() - t0
    return with_changes(cfg, tuning.chosen), tuning
