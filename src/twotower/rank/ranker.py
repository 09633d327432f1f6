"""LightGBM LambdaRank over candidate lists: graded relevance from the actions (purchase > cart > click >
no click), one group per request, early stopping on held-out requests by NDCG@10."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .training_rows import RankingRows, SplitRows


def relevance_grades(weights: np.ndarray, levels: np.ndarray | None = None) -> np.ndarray:
    """Label weights -> integer grades LambdaRank needs: 0 for weight 0, then 1, 2, ... by distinct weight
    (of `levels`, e.g. every positive weight of the log, so that a part of it grades as the whole does)."""
    weights = np.asarray(weights, dtype=np.float64)
    levels = np.unique(weights[weights > 0]) if levels is None else np.unique(np.asarray(levels, np.float64))
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

    def fit(self, rows: pd.DataFrame, label: str = "grade", group: str = "request", valid_fraction: float = 0.2,
            compare: list[str] = ()) -> "LambdaRanker":
        """Train on candidate rows in memory (sorted by `group`): `fit_rows` over them, written to a temporary
        folder."""
        extra = self._orders(compare)
        missing = [c for c in self.features + extra + [label, group] if c not in rows.columns]
        if missing:
            raise InputError("ranker rows", f"missing column(s) {missing}", "build rows with rank.candidates")
        rows = rows.assign(request=pd.factorize(rows[group])[0], grade=rows[label]).sort_values("request", kind="stable")
        with tempfile.TemporaryDirectory(prefix="twotower-ranker-") as tmp:
            split = SplitRows.create(Path(tmp), self.features, int(rows["request"].max()) + 1 if len(rows) else 0,
                                     valid_fraction, self.seed, extra)
            split.add(rows[rows.groupby("request")["grade"].transform("max") > 0])
            split.settle()
            return self.fit_rows(split, compare)

    def fit_rows(self, split: SplitRows, compare: list[str] = ()) -> "LambdaRanker":
        """Train on rows kept on disk (requests without a relevant candidate already dropped), early-stopped on
        the held-out side. The report gives NDCG@10 on those requests for the trees and for ordering by each
        `compare` column (and the base) alone."""
        import lightgbm as lgb

        if not len(split.train) or not len(split.valid):
            raise InputError("ranker rows", "no request has a relevant item among its candidates (or too few to "
                             "hold some out)", "retrieve more candidates (rank.candidates) or train on a longer log")
        params = lightgbm_params(self, "lambdarank", metric="ndcg", eval_at=[10], num_threads=os.cpu_count() or 1,
                                 force_row_wise=True)
        if self.base:
            # LambdaRank's pair gradients saturate on a widely spread base (tower logits span tens): the hessians
            # vanish and the first trees' Newton steps overshoot. Unit spread keeps the order and the steps sane.
            spread = float(np.nanstd(split.train.column(self.base)))
            self.base_scale = 1.0 / spread if np.isfinite(spread) and spread > 0 else 1.0

        def dataset(part: RankingRows, reference=None):
            return lgb.Dataset(part.matrices(), part.label, group=part.group_sizes, reference=reference,
                               feature_name=self.features,
                               init_score=part.column(self.base) * self.base_scale if self.base else None)

        train_set = dataset(split.train)
        valid_set = dataset(split.valid, train_set)
        self.model = lgb.train(params, train_set, self.n_estimators, valid_sets=[valid_set],
                               callbacks=[lgb.early_stopping(30, verbose=False)])
        n_train, n_valid = len(split.train.group_sizes), len(split.valid.group_sizes)
        self.report = {"requests": n_train + n_valid, "rows": len(split.train) + len(split.valid),
                       "best_iteration": int(self.model.best_iteration or self.n_estimators),
                       "valid_ndcg@10": float(self.model.best_score["valid_0"]["ndcg@10"])}
        alone = ndcg_of_orders(split.valid, self._orders(compare))
        if self.base:
            self.report["base_ndcg@10"] = alone[self.base]
        self.report["orders_ndcg@10"] = alone
        return self

    def _orders(self, compare: list[str]) -> list[str]:
        """The single orders the report sets beside the trees: `compare` and the base, once each."""
        return list(dict.fromkeys([*compare, *([self.base] if self.base else [])]))

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
    return float(ndcg_per_list(rows, order_by, label, group).mean())


def ndcg_of_orders(rows: RankingRows, orders: list[str]) -> dict[str, float]:
    """Mean NDCG@10 over every list of rows on disk when ordered by each column of `orders` alone (a part
    holds whole lists, so each is read once)."""
    per_list = {c: [] for c in orders}
    for part in rows.frames(orders):
        for c in orders:
            per_list[c].append(ndcg_per_list(part, c).to_numpy())
    return {c: float(np.concatenate(v).mean()) if v else float("nan") for c, v in per_list.items()}


def ndcg_per_list(rows: pd.DataFrame, order_by: str, label: str = "grade", group: str = "request") -> pd.Series:
    """Each list's NDCG@10 when ordered by `order_by` (0 for a list with nothing relevant)."""
    def dcg(by: str) -> pd.Series:
        """Each list's DCG@10 when ordered by `by`."""
        ranked = rows.sort_values([group, by], ascending=[True, False], kind="stable")
        pos = ranked.groupby(group).cumcount().to_numpy()
        gain = (2.0 ** ranked[label].to_numpy(np.float64) - 1) / np.log2(pos + 2) * (pos < 10)
        return pd.Series(gain).groupby(ranked[group].to_numpy()).sum()

    found = dcg(order_by)
    return (found / dcg(label).reindex(found.index)).fillna(0)


def lightgbm_params(settings, objective: str, **extra) -> dict:
    """LightGBM parameters from a model's tree settings (learning_rate, num_leaves, min_child_samples, seed):
    deterministic (one thread unless `extra` says otherwise), so a run on the same machine repeats exactly."""
    return {"objective": objective, "learning_rate": settings.learning_rate, "num_leaves": settings.num_leaves,
            "min_data_in_leaf": settings.min_child_samples, "seed": settings.seed, "num_threads": 1,
            "verbose": -1, "deterministic": True, **extra}
