"""LightGBM LambdaRank over candidate lists: graded relevance from the actions (purchase > cart > click >
no click), one group per request, early stopping on held-out requests by NDCG@10."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError


def relevance_grades(weights: np.ndarray) -> np.ndarray:
    """Label weights -> integer grades LambdaRank needs: 0 for weight 0, then 1, 2, ... by distinct weight."""
    weights = np.asarray(weights, dtype=np.float64)
    levels = np.unique(weights[weights > 0])
    return np.where(weights > 0, np.searchsorted(levels, weights) + 1, 0).astype(np.int64)


@dataclass
class LambdaRanker:
    """Orders the candidates of each request. `features` are the columns it reads, fixed at fit time.

    With `base`, the trees learn a correction on top of that column (LightGBM's init score): with no tree
    the order is the base order, so a ranker that finds nothing to add cannot do worse than retrieval on
    its own validation requests.
    """

    features: list[str]
    base: str | None = None          # a column whose value starts every score (the retrieval score)
    base_scale: float = 1.0          # the base is multiplied by this: unit spread over the training rows
    n_estimators: int = 400          # small trees: a few hundred relevant requests is a common size
    learning_rate: float = 0.05
    num_leaves: int = 7
    min_child_samples: int = 100
    seed: int = 42
    model: object = None
    report: dict = field(default_factory=dict)

    def fit(self, rows: pd.DataFrame, label: str = "grade", group: str = "request",
            sample_weight: np.ndarray | None = None, valid_fraction: float = 0.2,
            compare: list[str] = ()) -> "LambdaRanker":
        """Train on candidate rows (sorted by `group`); requests without a relevant candidate teach nothing
        and are dropped; a fraction of requests is held out for early stopping. The report gives NDCG@10 on
        those requests for the trees and for ordering by each `compare` column (and the base) alone."""
        import lightgbm as lgb

        missing = [c for c in self.features + [label, group] if c not in rows.columns]
        if missing:
            raise InputError("ranker rows", f"missing column(s) {missing}", "build rows with rank.candidates")
        useful = rows.groupby(group)[label].transform("max") > 0
        rows = rows[useful].sort_values(group, kind="stable")
        if rows.empty:
            raise InputError("ranker rows", "no request has a relevant item among its candidates",
                             "retrieve more candidates (rank.candidates) or train on a longer log")
        requests = rows[group].unique()
        rng = np.random.default_rng(self.seed)
        held = set(rng.choice(requests, max(1, int(len(requests) * valid_fraction)), replace=False))
        is_valid = rows[group].isin(held).to_numpy()
        weights = sample_weight[useful.to_numpy()] if sample_weight is not None else None
        params = lightgbm_params(self, "lambdarank", metric="ndcg", eval_at=[10], num_threads=os.cpu_count() or 1,
                                 force_row_wise=True)
        train, valid = rows[~is_valid], rows[is_valid]
        if self.base:
            # LambdaRank's pair gradients saturate on a widely spread base (tower logits span tens): the hessians
            # vanish and the first trees' Newton steps overshoot. Unit spread keeps the order and the steps sane.
            spread = float(np.nanstd(train[self.base].to_numpy(np.float64)))
            self.base_scale = 1.0 / spread if np.isfinite(spread) and spread > 0 else 1.0

        def dataset(part, mask, reference=None):
            return lgb.Dataset(part[self.features], part[label], group=_sizes(part[group]), reference=reference,
                               weight=weights[mask] if weights is not None else None,
                               init_score=self.base_score(part) if self.base else None)

        train_set = dataset(train, ~is_valid)
        valid_set = dataset(valid, is_valid, train_set)
        self.model = lgb.train(params, train_set, self.n_estimators, valid_sets=[valid_set],
                               callbacks=[lgb.early_stopping(30, verbose=False)])
        self.report = {"requests": int(len(requests)), "rows": int(len(rows)),
                       "best_iteration": int(self.model.best_iteration or self.n_estimators),
                       "valid_ndcg@10": float(self.model.best_score["valid_0"]["ndcg@10"])}
        if self.base:
            self.report["base_ndcg@10"] = ndcg_at_10(valid, self.base, label, group)
        self.report["orders_ndcg@10"] = {c: ndcg_at_10(valid, c, label, group)
                                         for c in dict.fromkeys([*compare, *([self.base] if self.base else [])])}
        return self

    def score(self, rows) -> np.ndarray:
        """Each row's score (higher first); `rows` is a frame or named numpy columns."""
        if self.model is None:
            raise InputError("ranker", "not trained", "call fit first")
        score = self.model.predict(self._matrix(rows), num_iteration=self.model.best_iteration or None)
        return score + self.base_score(rows)

    def contributions(self, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """([n, features] each feature's SHAP contribution to each row's score (LightGBM's `pred_contrib`),
        [n] the trees' expected value, [n] the base term): the three sum to `score(rows)`."""
        if self.model is None:
            raise InputError("ranker", "not trained", "call fit first")
        contrib = self.model.predict(self._matrix(rows), num_iteration=self.model.best_iteration or None,
                                     pred_contrib=True)
        return contrib[:, :-1], contrib[:, -1], self.base_score(rows)

    def base_score(self, rows) -> np.ndarray:
        """Each row's starting score: the base column scaled (zeros without a base)."""
        if not self.base:
            return np.zeros(len(rows[self.features[0]]))
        return np.asarray(rows[self.base], dtype=np.float64) * self.base_scale

    def _matrix(self, rows) -> np.ndarray:
        return np.column_stack([np.asarray(rows[c], dtype=np.float64) for c in self.features])

    def save(self, folder: Path) -> None:
        """ranker.txt (LightGBM's own format, best iteration only) and ranker.json (columns, base, report)."""
        if self.model is None:
            raise InputError("ranker", "not trained", "call fit first")
        self.model.save_model(str(folder / "ranker.txt"), num_iteration=self.model.best_iteration or None)
        (folder / "ranker.json").write_text(json.dumps({"features": self.features, "base": self.base,
                                                        "base_scale": self.base_scale, "report": self.report},
                                                       indent=2))

    @classmethod
    def load(cls, folder: Path) -> "LambdaRanker":
        import lightgbm as lgb

        meta = json.loads((folder / "ranker.json").read_text())
        ranker = cls(meta["features"], base=meta["base"], base_scale=meta.get("base_scale", 1.0),
                     report=meta["report"])
        ranker.model = lgb.Booster(model_file=str(folder / "ranker.txt"))
        return ranker

    def importance(self) -> pd.Series:
        gain = self.model.feature_importance("gain")
        return pd.Series(gain / max(gain.sum(), 1e-12), index=self.features).sort_values(ascending=False)


def ndcg_at_10(rows: pd.DataFrame, order_by: str, label: str = "grade", group: str = "request") -> float:
    """Mean NDCG@10 of the lists when each is ordered by `order_by` (descending), with LightGBM's gains
    (2^grade - 1): the figure LambdaRank's early stopping reports, for any other order."""
    def dcg(by: str) -> pd.Series:
        """Each list's DCG@10 when ordered by `by`."""
        ranked = rows.sort_values([group, by], ascending=[True, False], kind="stable")
        pos = ranked.groupby(group).cumcount().to_numpy()
        gain = (2.0 ** ranked[label].to_numpy(np.float64) - 1) / np.log2(pos + 2) * (pos < 10)
        return pd.Series(gain).groupby(ranked[group].to_numpy()).sum()

    found = dcg(order_by)
    return float((found / dcg(label).reindex(found.index)).fillna(0).mean())


def lightgbm_params(settings, objective: str, **extra) -> dict:
    """LightGBM parameters from a model's tree settings (learning_rate, num_leaves, min_child_samples, seed):
    deterministic (one thread unless `extra` says otherwise), so a run on the same machine repeats exactly."""
    return {"objective": objective, "learning_rate": settings.learning_rate, "num_leaves": settings.num_leaves,
            "min_data_in_leaf": settings.min_child_samples, "seed": settings.seed, "num_threads": 1,
            "verbose": -1, "deterministic": True, **extra}


def _sizes(groups: pd.Series) -> np.ndarray:
    """Group sizes in order of appearance (rows are sorted by group)."""
    return groups.groupby(groups, sort=False).size().to_numpy()
