"""Leave-one-out by time: each user's last positive event is held out, with everything after it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dataset import Dataset


@dataclass
class Targets:
    """One held-out event per user: [n] user codes, [n] item codes, the request context of each, and its
    [n] timestamp and label weight."""

    users: np.ndarray
    items: np.ndarray
    context: dict[str, np.ndarray]
    times: np.ndarray | None = None
    weights: np.ndarray | None = None

    def subset(self, keep: np.ndarray) -> "Targets":
        pick = (lambda a: a[keep] if a is not None else None)
        return Targets(self.users[keep], self.items[keep], {k: v[keep] for k, v in self.context.items()},
                       pick(self.times), pick(self.weights))

    def __len__(self) -> int:
        return len(self.users)


def holdout_last(data: Dataset, min_history: int = 1, only: np.ndarray | None = None) -> tuple[Dataset, Targets]:
    """Split off each user's last positive event (ties broken by file order).

    Returns the events strictly before it (the history the model may see) and the held-out targets.
    Users with fewer than `min_history` earlier positive events, or False in `only` ([n_users + 1] bool),
    keep all their events and get no target.
    """
    ev = data.events
    pos = ev["weight"].to_numpy() > 0
    users = ev["user"].to_numpy()
    row = np.arange(len(ev))
    last = np.full(data.n_users + 1, -1, dtype=np.int64)
    np.maximum.at(last, users[pos], row[pos])
    n_pos = np.bincount(users[pos], minlength=data.n_users + 1)
    has_target = (last >= 0) & (n_pos > min_history)
    if only is not None:
        has_target &= only
    target_rows = np.sort(last[has_target])
    keep = ~has_target[users] | (row < last[users])
    targets = Targets(
        users=users[target_rows].astype(np.int64),
        items=ev["item"].to_numpy()[target_rows].astype(np.int64),
        context={k: v[target_rows] for k, v in data.context_features.items()},
        times=ev["timestamp"].to_numpy()[target_rows].astype(np.float64),
        weights=ev["weight"].to_numpy()[target_rows].astype(np.float64),
    )
    return data.subset(keep), targets
