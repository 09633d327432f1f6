"""The tower model as a `Recommender`: build from a dataset, train with early stopping, score users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..data.dataset import Dataset
from ..evaluate.protocol import EvalSet, Scorer, ndcg10
from .examples import last_histories
from .trainer import TrainReport, train_towers
from .twotower import TwoTowerModel


EARLY_STOPPING_REQUESTS = 5000     # scored after every epoch: a sample is as good a stopping signal, and cheaper


def build_model(data: Dataset, cfg: Config) -> TwoTowerModel:
    torch.manual_seed(cfg.train.seed)
    return TwoTowerModel(data.n_users, data.n_items, cfg.model, data.item_specs, data.item_features,
                         data.user_specs, data.user_features,
                         data.context_specs if cfg.model.context_features else ())


def _per_user(model: TwoTowerModel, history: Dataset, step, width: int, batch: int):
    """`fn(users [n] codes, context) -> [n, width]`: `step(histories, users, context, item_vectors)` in
    batches, over each user's last `max_history` positive events in `history` (built once, not per batch)."""
    model.eval()
    with torch.no_grad():
        items = model.all_item_vectors()
    histories = last_histories(history, np.arange(history.n_users + 1), model.cfg.max_history)

    def run(users: np.ndarray, context: dict) -> np.ndarray:
        out = [np.zeros((0, width), np.float32)]
        for lo in range(0, len(users), batch):
            u = users[lo:lo + batch]
            ctx = {k: torch.as_tensor(v[lo:lo + batch]) for k, v in context.items()} or None
            known = np.where(u <= model.n_users, u, 0)      # users who arrived after training: no id, no features
            out.append(step(torch.as_tensor(histories[u]), torch.as_tensor(known), ctx, items).numpy())
        return np.concatenate(out)

    return run


def tower_queries(model: TwoTowerModel, history: Dataset, batch: int = 512):
    """`fn(users [n] codes, context) -> [n, d]` next-step query vectors, prepared for a vector index."""
    return _per_user(model, history, model.index_queries, model.cfg.dim, batch)


def tower_scorer(model: TwoTowerModel, history: Dataset, batch: int = 512) -> Scorer:
    """Score users against every item from their last `max_history` positive events in `history`."""
    return _per_user(model, history, model.score, model.n_items + 1, batch)


class TowerRecommender:
    """Two-tower model under the protocol; `refit` keeps the early-stopped weights, because at test time the
    validation event reaches the model through the user's history."""

    def __init__(self, cfg: Config, name: str = "TwoTower", checkpoint_dir: Path | None = None,
                 show_progress: bool = True, resume_key: str = ""):
        self.cfg, self.name = cfg, name
        self.checkpoint_dir, self.show_progress, self.resume_key = checkpoint_dir, show_progress, resume_key
        self.model: TwoTowerModel | None = None
        self.report: TrainReport | None = None

    def fit(self, train: Dataset, validation: EvalSet | None, warm_start: dict | None = None) -> dict:
        """Train (from `warm_start`, the weights of towers trained on older events of the same log, when
        given) with early stopping on `validation`."""
        self.model = build_model(train, self.cfg)
        if warm_start is not None:
            self.model.load_state_dict(warm_start)
        if validation is not None:
            validation = validation.sample(EARLY_STOPPING_REQUESTS, self.cfg.train.seed)
        validate = (lambda m: ndcg10(tower_scorer(m, validation.history), validation)) if validation else None
        self.report = train_towers(self.model, train, self.cfg.train, validate, self.checkpoint_dir,
                                   self.show_progress, self.resume_key)
        return {"epoch": self.report.best_epoch}

    def refit(self, train: Dataset) -> None:
        pass

    def scorer(self, history: Dataset) -> Scorer:
        return tower_scorer(self.model, history)


def id_only(cfg: Config) -> Config:
    """The SASRec-style baseline: the same query tower over item ids alone, no features, no user id."""
    changes = dict(item_features=False, user_features=False, context_features=False, user_id=False, item_id=True)
    return cfg.model_copy(update={"model": cfg.model.model_copy(update=changes)})
