"""Baselines for the protocol, each tuned on validation over a small grid: popularity, item-kNN, EASE,
iALS and BPR (from `implicit`). The SASRec-style sequence baseline is the tower model with ids only."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits

from ..data.dataset import Dataset, seen_matrix
from .protocol import EvalSet, Scorer, ndcg10


class GridBaseline(ABC):
    """A baseline with a grid of settings: `fit` keeps the one with the best validation NDCG@10."""

    name: str = "baseline"
    grid: list[dict] = [{}]

    def __init__(self, seed: int = 42, grid: list[dict] | None = None):
        self.seed = seed
        if grid is not None:
            self.grid = grid
        self.params: dict = {}
        self.state: Any = None

    @abstractmethod
    def _fit(self, train: Dataset, params: dict) -> Any:
        """Fit with one setting; return what scoring needs."""

    @abstractmethod
    def _scorer(self, state: Any, history: Dataset) -> Scorer:
        """Score users from a fitted state and the events known at query time."""

    def fit(self, train: Dataset, validation: EvalSet) -> dict:
        best = -1.0
        for params in self.grid:
            state = self._fit(train, params)
            score = ndcg10(self._scorer(state, validation.history), validation)
            if score > best:
                best, self.params, self.state = score, params, state
        return self.params

    def refit(self, train: Dataset) -> None:
        self.state = self._fit(train, self.params)

    def scorer(self, history: Dataset) -> Scorer:
        return self._scorer(self.state, history)


class Popularity(GridBaseline):
    """Items ranked by how many positive events they have."""

    name = "Popularity"

    def _fit(self, train, params):
        return np.asarray(seen_matrix(train).sum(0)).ravel()

    def _scorer(self, counts, history):
        return lambda users, ctx: np.broadcast_to(counts, (len(users), len(counts)))


class ItemKNN(GridBaseline):
    """Item-to-item cosine similarity over users, keeping each item's k nearest neighbours."""

    name = "ItemKNN"
    grid = [{"k": k, "shrink": s} for k in (20, 50, 100, 400) for s in (0.0, 10.0)]

    def _fit(self, train, params):
        x = seen_matrix(train).tocsc().astype(np.float32)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(0)).ravel())
        sim = (x.T @ x).toarray()
        sim /= np.outer(norms, norms) + params["shrink"] + 1e-9
        np.fill_diagonal(sim, 0.0)
        k = min(params["k"], sim.shape[1] - 1)
        drop = np.argpartition(-sim, kth=k, axis=1)[:, k:]
        np.put_along_axis(sim, drop, 0.0, axis=1)
        return sim

    def _scorer(self, sim, history):
        seen = seen_matrix(history)
        return lambda users, ctx: np.asarray(seen[users] @ sim.T)


class EASE(GridBaseline):
    """Embarrassingly shallow autoencoder (Steck 2019): a closed-form item-item model."""

    name = "EASE"
    grid = [{"l2": v} for v in (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 3000.0)]

    def _fit(self, train, params):
        x = seen_matrix(train)
        g = (x.T @ x).toarray().astype(np.float64)
        g[np.diag_indices_from(g)] += params["l2"]
        p = np.linalg.inv(g)
        b = -p / np.diag(p)
        np.fill_diagonal(b, 0.0)
        return b.astype(np.float32)

    def _scorer(self, b, history):
        seen = seen_matrix(history)
        return lambda users, ctx: np.asarray(seen[users] @ b)


class _ImplicitMF(GridBaseline):
    """Matrix factorisation from the `implicit` library; user vectors come from the fitted model."""

    @abstractmethod
    def _make(self, params: dict):
        """The unfitted `implicit` model for one setting."""

    def _fit(self, train, params):
        # implicit runs its own threads; nested BLAS threads slow it down (its libraries are loaded at import,
        # above, so that this limit reaches them)
        with threadpool_limits(1, "blas"):
            model = self._make(params)
            model.fit(seen_matrix(train), show_progress=False)
        return np.asarray(model.user_factors), np.asarray(model.item_factors)

    def _scorer(self, state, history):
        users_f, items_f = state
        return lambda users, ctx: users_f[users] @ items_f.T


class IALS(_ImplicitMF):
    name = "iALS"
    grid = [{"factors": f, "regularization": r, "alpha": a}
            for f in (64, 128) for r in (0.01, 0.1, 1.0) for a in (1.0, 10.0)]

    def _make(self, p):
        return AlternatingLeastSquares(factors=p["factors"], regularization=p["regularization"], alpha=p["alpha"],
                                       iterations=15, random_state=self.seed)


class BPR(_ImplicitMF):
    name = "BPR"
    grid = [{"factors": f, "learning_rate": lr, "regularization": r}
            for f in (64, 128) for lr in (0.01, 0.05) for r in (0.001, 0.01)]

    def _make(self, p):
        return BayesianPersonalizedRanking(factors=p["factors"], learning_rate=p["learning_rate"],
                                           regularization=p["regularization"], iterations=100, random_state=self.seed)


def classic_baselines(seed: int = 42) -> list[GridBaseline]:
    return [Popularity(seed), ItemKNN(seed), EASE(seed), IALS(seed), BPR(seed)]
