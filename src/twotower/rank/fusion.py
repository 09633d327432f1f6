"""Learned fusion of ranked lists (search's BM25, text-vector and towers' lists): a logistic model over each
list's rank and score features, fitted on the log's latest searches, scores every item any list holds. It
learns what fixed weights cannot: that a near-exact text match (cosine close to 1) should lead while the
text list's tail is noise, or that the towers' list, which finds items with no text of their own through
their features, should fill the places the text lists cannot."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Hits = tuple[np.ndarray, np.ndarray]       # (item ids, their scores), best first

ABSOLUTE = ("text", "bm25")   # lists whose raw score means the same from query to query (cosine, BM25)
PER_LIST = ("held", "reciprocal rank", "score below the list's best", "score against the list's mean", "score")
MIN_POSITIVES = 10            # searches whose target some list holds, needed to fit
REGULARISATION = 1.0          # sklearn's C: the inverse strength of the L2 penalty


def union_of(found: dict[str, Hits], lists: tuple[str, ...]) -> np.ndarray:
    """Every item the lists hold, in first-seen order."""
    position: dict = {}
    for name in lists:
        for item in found[name][0]:
            position.setdefault(item, len(position))
    return np.array(list(position), dtype=object)


def list_features(found: dict[str, Hits], lists: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(items, [items, len(PER_LIST) * len(lists)] features). An item a list does not hold is placed just
    below its last entry: not held, reciprocal rank 0, its scores the list's lowest."""
    items = union_of(found, lists)
    position = {item: i for i, item in enumerate(items)}
    width = len(PER_LIST)
    x = np.zeros((len(items), width * len(lists)))
    for c, name in enumerate(lists):
        ids, scores = found[name]
        if not len(ids):
            continue
        scores = np.asarray(scores, np.float64)
        spread = float(scores.std()) or 1.0
        below_best, against_mean = (scores - scores.max()) / spread, (scores - scores.mean()) / spread
        raw = scores if name in ABSOLUTE else np.zeros_like(scores)
        cols = slice(width * c, width * (c + 1))
        x[:, cols] = [0.0, 0.0, below_best.min(), against_mean.min(), raw.min()]
        at = np.fromiter((position[i] for i in ids), np.int64, len(ids))
        x[at, cols] = np.column_stack([np.ones(len(ids)), 1.0 / np.arange(1, len(ids) + 1), below_best,
                                       against_mean, raw])
    return items, x


@dataclass
class LearnedFusion:
    """A logistic model of 'this item is the one searched for' over `lists`' features (standardised)."""

    lists: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    searches: int = 0             # the searches it was fitted on
    positives: int = 0            # ... of which some list held the target

    @classmethod
    def fit(cls, found: list[dict[str, Hits]], targets: list[str], lists: tuple[str, ...]) -> "LearnedFusion | None":
        """Fitted on searches (each list's hits) and the item each led to; None when fewer than MIN_POSITIVES
        searches have their target in some list (too little to learn from)."""
        from sklearn.linear_model import LogisticRegression

        rows, labels = [], []
        for hits, target in zip(found, targets):
            items, x = list_features(hits, lists)
            rows.append(x)
            labels.append(items == target)
        positives = int(sum(y.any() for y in labels))
        if positives < MIN_POSITIVES:
            return None
        x, y = np.vstack(rows), np.concatenate(labels)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0
        model = LogisticRegression(C=REGULARISATION, max_iter=5_000).fit((x - mean) / scale, y)
        return cls(tuple(lists), mean, scale, model.coef_[0], float(model.intercept_[0]), len(found), positives)

    def rank(self, found: dict[str, Hits]) -> Hits:
        """(items, scores) of everything the lists hold, best first."""
        items, x = list_features(found, self.lists)
        scores = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        order = np.argsort(-scores, kind="stable")
        return items[order], scores[order]

    def to_dict(self) -> dict:
        return {"lists": list(self.lists), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept, "searches": self.searches,
                "positives": self.positives,
                "weights": {f"{name}: {feature}": round(float(w), 4) for (name, feature), w
                            in zip(((n, f) for n in self.lists for f in PER_LIST), self.coef)}}

    @classmethod
    def from_dict(cls, values: dict) -> "LearnedFusion":
        return cls(tuple(values["lists"]), np.asarray(values["mean"]), np.asarray(values["scale"]),
                   np.asarray(values["coef"]), float(values["intercept"]), int(values.get("searches", 0)),
                   int(values.get("positives", 0)))
