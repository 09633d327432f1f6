"""The tower model as the serving path and the protocol read it: build one from a dataset, and the query
vectors (or full score rows) of users from their latest history."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..config import Config
from ..data.dataset import Dataset
from .examples import last_histories
from .twotower import TwoTowerModel


def build_model(data: Dataset, cfg: Config) -> TwoTowerModel:
    torch.manual_seed(cfg.train.seed)
    model = TwoTowerModel(data.n_users, data.n_items, cfg.model, data.item_specs, data.item_features,
                          data.user_specs, data.user_features,
                          data.context_specs if cfg.model.context_features else ())
    events = np.bincount(data.events.loc[data.events["weight"] > 0, "item"], minlength=data.n_items + 1)
    model.item_tower.keep_ids_of(torch.as_tensor(events >= cfg.model.item_id_min_events))
    return model


def _per_user(model: TwoTowerModel, history: Dataset, step, width: int, batch: int):
    """`fn(users [n] codes, context) -> [n, width]`: `step(histories, users, context, item_vectors)` in
    batches, over each user's last `max_history` positive events in `history` (built once, not per batch)."""
    model.eval()
    with torch.no_grad():
        items = model.all_item_vectors()
    histories = last_histories(history, np.arange(history.n_users + 1), model.cfg.max_history)
    return lambda users, context: _in_batches(step, model.n_users, histories[users], users, context, items, width,
                                              batch)


def query_vectors(model: TwoTowerModel, histories: np.ndarray, users: np.ndarray, context: dict,
                  items: torch.Tensor, batch: int = 512) -> np.ndarray:
    """[n, d] index-ready next-step queries of user codes with these [n, max_history] item histories, given
    the item vectors the query tower reads (`model.all_item_vectors()`, computed once by the caller). The
    model must be in eval mode (the caller's, once: switching it costs more than a request's tower)."""
    return _in_batches(model.index_queries, model.n_users, histories, users, context, items, model.cfg.dim, batch)


def _in_batches(step, n_users: int, histories: np.ndarray, users: np.ndarray, context: dict, items,
                width: int, batch: int) -> np.ndarray:
    out = [np.zeros((0, width), np.float32)]
    with torch.inference_mode():
        for lo in range(0, len(users), batch):
            u = users[lo:lo + batch]
            ctx = {k: torch.as_tensor(v[lo:lo + batch]) for k, v in context.items()} or None
            known = np.where(u <= n_users, u, 0)     # users who arrived after training: no id, no features
            out.append(step(torch.as_tensor(histories[lo:lo + batch]), torch.as_tensor(known), ctx, items).numpy())
    return np.concatenate(out)


def tower_queries(model: TwoTowerModel, history: Dataset, batch: int = 512):
    """`fn(users [n] codes, context) -> [n, d]` next-step query vectors, prepared for a vector index."""
    return _per_user(model, history, model.index_queries, model.cfg.dim, batch)


def tower_scorer(model: TwoTowerModel, history: Dataset, batch: int = 512) -> Callable[[np.ndarray, dict], np.ndarray]:
    """Score users against every item from their last `max_history` positive events in `history`."""
    return _per_user(model, history, model.score, model.n_items + 1, batch)
