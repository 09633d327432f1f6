"""A LightGBM click model over logged impressions: each shown item is a row, a click is 1 and a logged
impression without a click is a real 0. Inverse-propensity weights undo the logging policy's choice of what
was shown, so the model learns clicks per item rather than the old policy's preferences."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from twotower.errors import InputError
from twotower.rank.ranker import lightgbm_params


def ips_weights(propensity: np.ndarray, clip: float = 100.0) -> np.ndarray:
    """1 / propensity, capped at `clip` (a few tiny propensities must not own the loss), scaled to mean 1."""
    p = np.asarray(propensity, dtype=np.float64)
    if (p <= 0).any() or (p > 1).any():
        raise InputError("propensity", "must be in (0, 1]", "give the logging policy's probability of each shown item")
    w = np.minimum(1.0 / p, clip)
    return w / w.mean()


@dataclass
class ClickModel:
    features: list[str]
    categorical: list[str] = field(default_factory=list)
    n_estimators: int = 500
    learning_rate: float = 0.03
    num_leaves: int = 7
    min_child_samples: int = 100
    seed: int = 42
    model: object = None
    levels: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)

    def _matrix(self, rows: pd.DataFrame) -> pd.DataFrame:
        out = rows[self.features].copy()
        for c in self.categorical:          # codes fixed at fit time; an unseen value is missing (-1)
            out[c] = rows[c].astype(str).map(self.levels[c]).fillna(-1).astype(np.int64)
        return out

    def fit(self, rows: pd.DataFrame, label: str = "click", weight: np.ndarray | None = None,
            folds: int = 5) -> "ClickModel":
        """Choose the number of trees by `folds`-fold cross-validated (weighted) log loss, then train on all
        rows: clicks are rare, and one held-out slice would hold too few of them to stop on."""
        import lightgbm as lgb

        missing = [c for c in self.features + [label] if c not in rows.columns]
        if missing:
            raise InputError("impression rows", f"missing column(s) {missing}", "add them to the log")
        self.levels = {c: {v: i for i, v in enumerate(sorted(rows[c].astype(str).unique()))} for c in self.categorical}
        y = rows[label].to_numpy()
        if y.sum() < folds:
            raise InputError("impression rows", f"only {int(y.sum())} clicks", "train on a longer log")
        data = lgb.Dataset(self._matrix(rows), y, weight=weight, categorical_feature=self.categorical,
                           free_raw_data=False)
        params = lightgbm_params(self, "binary", feature_pre_filter=False)
        cv = lgb.cv(params, data, self.n_estimators, folds=_stratified_folds(y, folds, self.seed),
                    callbacks=[lgb.early_stopping(50, verbose=False)])
        losses = cv["valid binary_logloss-mean"]
        self.model = lgb.train(params, data, len(losses))
        self.report = {"rows": len(rows), "clicks": int(y.sum()), "trees": len(losses),
                       "cv_logloss": float(losses[-1])}
        return self

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        if self.model is None:
            raise InputError("click model", "not trained", "call fit first")
        return self.model.predict(self._matrix(rows))


def _stratified_folds(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k folds with the clicks spread evenly (LightGBM's own stratified folds need scikit-learn)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), np.int64)
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(len(idx)) % k
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]
