"""What every request reads about users, kept current as events arrive: the items each user had, their latest
event's time, their last items (the towers' input), and the positive events in (user, time) order (the
ranker's profiles). Built once from a history; after new events only the users they touch are recomputed, so
an ingested event reaches the next request without rebuilding the rest."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .data.dataset import Dataset, seen_matrix
from .rank.covisit import recent_sorted


@dataclass(frozen=True)
class UserState:
    seen: sp.csr_matrix          # [users + 1, items + 1] 1 where the user had the item
    last_seen: np.ndarray        # [users + 1] the user's latest positive event time (NaN: none)
    histories: np.ndarray        # [users + 1, length] the last `length` positive item codes, right-aligned
    ev_users: np.ndarray         # positive events in (user, time, arrival) order: user codes,
    ev_times: np.ndarray         # their times
    ev_items: np.ndarray         # and item codes

    @classmethod
    def of(cls, history: Dataset, length: int) -> "UserState":
        users, times, items = _positives(history)
        n = history.n_users + 1
        state = cls(seen_matrix(history), np.full(n, np.nan), np.zeros((n, length), np.int64), users, times, items)
        state._refresh(np.unique(users))
        return state

    @cached_property
    def has_history(self) -> np.ndarray:
        """[users + 1] True for a user with a positive event."""
        return np.diff(self.seen.indptr) > 0

    def popular(self, item_ids: np.ndarray, indexed: np.ndarray) -> pd.Series:
        """Indexed items by how many users had them: {item id: count}, most popular first."""
        counts = np.asarray(self.seen.sum(0)).ravel()
        codes = np.flatnonzero(indexed[:len(counts)])
        codes = codes[np.argsort(-counts[codes], kind="stable")]
        return pd.Series(counts[codes].astype(np.float64), index=item_ids[codes - 1].astype(str))

    def recent(self, users: np.ndarray, times: np.ndarray, length: int) -> list[np.ndarray]:
        """Each request's (user code, time) last `length` positive item codes strictly before that time."""
        return recent_sorted(self.ev_users, self.ev_times, self.ev_items, users, times, length)

    def with_events(self, history: Dataset, users: np.ndarray) -> "UserState":
        """The state of `history` (this one's history plus new events of the user codes `users`; new users
        take the next codes), recomputed for those users only."""
        ev_users, ev_times, ev_items = _positives(history)
        n = history.n_users + 1
        grow = n - len(self.last_seen)
        seen = self.seen.copy()
        if grow:
            seen.resize((n, seen.shape[1]))
        touched = np.unique(np.asarray(users, np.int64))
        lo, hi = np.searchsorted(ev_users, touched, "left"), np.searchsorted(ev_users, touched, "right")
        rows = np.repeat(touched, hi - lo)
        cols = np.concatenate([ev_items[a:b] for a, b in zip(lo, hi)]) if len(touched) else rows
        added = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=seen.shape)
        added.data[:] = 1.0                       # a pair seen twice is still 1
        seen = seen.maximum(added).tocsr()
        state = UserState(seen, np.r_[self.last_seen, np.full(grow, np.nan)],
                          np.vstack([self.histories, np.zeros((grow, self.histories.shape[1]), np.int64)]),
                          ev_users, ev_times, ev_items)
        state._refresh(touched)
        return state

    def _refresh(self, users: np.ndarray) -> None:
        """Recompute the latest time and last items of these users from the event arrays (in place: only
        while the state is being built)."""
        lo = np.searchsorted(self.ev_users, users, "left")
        hi = np.searchsorted(self.ev_users, users, "right")
        length = self.histories.shape[1]
        for u, a, b in zip(users, lo, hi):
            if b > a:
                self.last_seen[u] = self.ev_times[b - 1]
                seq = self.ev_items[max(a, b - length):b]
                self.histories[u] = 0
                self.histories[u, length - len(seq):] = seq


def _positives(history: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ev = history.events
    keep = ev["weight"].to_numpy() > 0
    return (ev["user"].to_numpy()[keep], ev["timestamp"].to_numpy(np.float64)[keep],
            ev["item"].to_numpy()[keep])
