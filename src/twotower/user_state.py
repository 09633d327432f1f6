"""What every request reads about users, kept current as events arrive: the items each user had, their latest
event's time, their last items (the towers' input), and their positive events in time order (the ranker's
profiles).

Built once from a history (the base). Events that arrive later go to a live layer holding, for each user they
touch, that user's whole positive sequence: the users' part of applying an event costs what its user's
history costs, not what the log costs. When the live layer holds more than `COMPACT_SHARE` of the base's
events it is merged into a new base, one rebuild per that many events (a batch that large is merged at
once: replaying a log at open)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .data.dataset import Dataset, pairs_matrix
from .rank.covisit import recent_sorted

COMPACT_SHARE = 0.05          # events the live layer holds, as a share of the base's, that make a new base
COMPACT_MIN_EVENTS = 20_000   # ... but never fewer than this


@dataclass(frozen=True)
class LiveUser:
    """One user's positive events once new ones arrived: all of them (stored and new), in (time, arrival)
    order: times, item codes and weights."""

    times: np.ndarray
    items: np.ndarray
    weights: np.ndarray

    @cached_property
    def seen(self) -> np.ndarray:
        return np.unique(self.items)


@dataclass(frozen=True)
class UserState:
    seen: sp.csr_matrix          # base: [users + 1, items + 1] 1 where the user had the item
    last_seen: np.ndarray        # base: [users + 1] the user's latest positive event time (NaN: none)
    histories: np.ndarray        # base: [users + 1, length] the last `length` positive item codes, right-aligned
    ev_users: np.ndarray         # base: positive events in (user, time, arrival) order: user codes,
    ev_times: np.ndarray         # their times
    ev_items: np.ndarray         # item codes
    ev_weights: np.ndarray       # and weights
    live: dict = field(default_factory=dict)     # user code -> LiveUser, for users with events since the base
    live_events: int = 0                         # events the live layer holds (its users' whole sequences)
    latest: float = -np.inf                      # the latest of those events' times

    @classmethod
    def of(cls, history: Dataset, length: int) -> "UserState":
        ev = history.events
        keep = ev["weight"].to_numpy() > 0
        users, times = ev["user"].to_numpy()[keep], ev["timestamp"].to_numpy(np.float64)[keep]
        items, weights = ev["item"].to_numpy()[keep], ev["weight"].to_numpy(np.float32)[keep]
        n = history.n_users + 1
        state = cls(pairs_matrix(users, items, (n, history.n_items + 1)), np.full(n, np.nan),
                    np.zeros((n, length), np.int64), users, times, items, weights)
        state._refresh(np.unique(users))
        return state

    # --- what requests read ------------------------------------------------------------------------------
    def seen_items(self, user: int) -> np.ndarray:
        """The item codes a user (code) had: a slice of the base matrix's row, or the live layer's."""
        live = self.live.get(int(user))
        if live is not None:
            return live.seen
        if user >= self.seen.shape[0]:
            return np.zeros(0, np.int64)
        return self.seen.indices[self.seen.indptr[user]:self.seen.indptr[user + 1]]

    def last_seen_of(self, users: np.ndarray) -> np.ndarray:
        """[n] each user's latest positive event time (NaN: none)."""
        out = self._base_rows(self.last_seen, users, np.nan)
        for i, live in self._live_rows(users):
            out[i] = live.times[-1]
        return out

    def histories_of(self, users: np.ndarray) -> np.ndarray:
        """[n, length] each user's last `length` positive item codes, right-aligned (0: padding)."""
        out = self._base_rows(self.histories, users, 0)
        for i, live in self._live_rows(users):
            _right_aligned(out[i], live.items)
        return out

    def has_history_of(self, users: np.ndarray) -> np.ndarray:
        """[n] True for users with a positive event."""
        out = self._base_rows(self.has_history, users, False)
        for i, _ in self._live_rows(users):
            out[i] = True
        return out

    def recent(self, users: np.ndarray, times: np.ndarray, length: int) -> list[np.ndarray]:
        """Each request's (user code, time) last `length` positive item codes strictly before that time."""
        out = recent_sorted(self.ev_users, self.ev_times, self.ev_items, users, times, length)
        times = np.asarray(times, dtype=np.float64)
        for i, live in self._live_rows(users):
            stop = np.searchsorted(live.times, times[i], side="left")
            out[i] = live.items[max(0, stop - length):stop]
        return out

    def latest_users(self, n: int) -> np.ndarray:
        """The codes of the `n` users whose latest positive event is the newest, the newest first: the
        likeliest to ask next, so the ones a service starting up prepares for."""
        last = self.last_seen_of(np.arange(max(len(self.last_seen), max(self.live, default=0) + 1)))
        known = np.flatnonzero(~np.isnan(last))
        return known[np.argsort(-last[known], kind="stable")[:n]]

    @cached_property
    def has_history(self) -> np.ndarray:
        """[base users + 1] True for a user with a positive event in the base."""
        return np.diff(self.seen.indptr) > 0

    def event_counts(self) -> np.ndarray:
        """[users + 1] each user's positive events, the live layer's included."""
        n = max(len(self.last_seen), max(self.live, default=0) + 1)
        counts = np.bincount(self.ev_users, minlength=n)
        for user, live in self.live.items():
            counts[user] = len(live.times)
        return counts

    def popular(self, item_ids: np.ndarray, indexed: np.ndarray) -> pd.Series:
        """Indexed items by how many users of the base had them: {item id: count}, most popular first."""
        counts = np.asarray(self.seen.sum(0)).ravel()
        codes = np.flatnonzero(indexed[:len(counts)])
        codes = codes[np.argsort(-counts[codes], kind="stable")]
        return pd.Series(counts[codes].astype(np.float64), index=item_ids[codes - 1].astype(str))

    # --- new events -----------------------------------------------------------------------------------------
    def with_events(self, users: np.ndarray, times: np.ndarray, items: np.ndarray,
                    weights: np.ndarray) -> "UserState":
        """The state after new positive events (user codes, times, item codes, weights, in arrival order; new
        users take codes past the base's): only the users they touch are recomputed, from their own events."""
        users, times, items, weights = (np.asarray(users, np.int64), np.asarray(times, np.float64),
                                        np.asarray(items, np.int64), np.asarray(weights, np.float32))
        if not len(users):
            return self
        latest = max(self.latest, float(times.max()))
        if self.live_events + len(users) > self._merge_at:
            return replace(self, latest=latest)._merged(users, times, items, weights)
        order = np.lexsort((np.arange(len(users)), times, users))          # by user, then time, then arrival
        users, times, items, weights = users[order], times[order], items[order], weights[order]
        live, held = dict(self.live), self.live_events   # a new layer: requests in flight keep the old one
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        for lo, hi in zip(starts, np.r_[starts[1:], len(users)]):
            user = int(users[lo])
            old = self.events_of(user)
            # stored events arrived first: a stable sort by time keeps (time, arrival) order
            t, it, w = (np.r_[a, b[lo:hi]] for a, b in zip(old, (times, items, weights)))
            by_time = np.argsort(t, kind="stable")
            live[user] = LiveUser(t[by_time], it[by_time], w[by_time])
            held += len(t) - (len(old[0]) if user in self.live else 0)
        state = replace(self, live=live, live_events=held, latest=latest)
        if held > self._merge_at:
            return state._merged()
        state.__dict__["has_history"] = self.has_history      # the base's, unchanged
        return state

    def compacted(self) -> "UserState":
        """The live layer merged into a new base (no live users left); what requests read is unchanged."""
        return self._merged() if self.live else self

    @property
    def _merge_at(self) -> float:
        return max(COMPACT_MIN_EVENTS, COMPACT_SHARE * len(self.ev_users))

    def _merged(self, users=(), times=(), items=(), weights=()) -> "UserState":
        """A new base of this one's events, the live layer's and these new ones (arrival order)."""
        length = self.histories.shape[1]
        moved = np.fromiter(self.live, np.int64, len(self.live))
        touched = np.unique(np.r_[moved, np.asarray(users, np.int64)])       # the rows to recompute
        keep = ~np.isin(self.ev_users, moved)
        lives = list(self.live.values())
        users = np.r_[self.ev_users[keep], np.repeat(moved, [len(v.times) for v in lives]), users].astype(np.int64)
        times = np.concatenate([self.ev_times[keep], *(v.times for v in lives), times]).astype(np.float64)
        items = np.concatenate([self.ev_items[keep], *(v.items for v in lives), items]).astype(np.int64)
        weights = np.concatenate([self.ev_weights[keep], *(v.weights for v in lives), weights]).astype(np.float32)
        # stored events come first and are in (time, arrival) order per user: ties keep their place
        order = np.lexsort((np.arange(len(users)), times, users))
        users, times, items, weights = users[order], times[order], items[order], weights[order]
        n_users = max(self.seen.shape[0], int(users.max(initial=0)) + 1)
        n_items = max(self.seen.shape[1], int(items.max(initial=0)) + 1)
        grow = n_users - len(self.last_seen)
        state = UserState(pairs_matrix(users, items, (n_users, n_items)), np.r_[self.last_seen, np.full(grow, np.nan)],
                          np.vstack([self.histories, np.zeros((grow, length), np.int64)]), users, times, items,
                          weights, latest=self.latest)
        state._refresh(touched)
        return state

    def events_of(self, user: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, item codes, weights) of one user's positive events as this state knows them, in (time,
        arrival) order."""
        live = self.live.get(int(user))
        if live is not None:
            return live.times, live.items, live.weights
        lo, hi = np.searchsorted(self.ev_users, [user, user + 1], "left")
        return self.ev_times[lo:hi], self.ev_items[lo:hi], self.ev_weights[lo:hi]

    # --- internals ------------------------------------------------------------------------------------------
    def _base_rows(self, table: np.ndarray, users: np.ndarray, missing) -> np.ndarray:
        """The base's rows of these users (a copy), `missing` for users past the base."""
        users = np.asarray(users, np.int64)
        inside = users < len(table)
        out = table[np.where(inside, users, 0)]
        out[~inside] = missing
        return out

    def _live_rows(self, users: np.ndarray):
        """(position, LiveUser) of the users with live events."""
        live = self.live
        if not live:
            return []
        return [(i, live[u]) for i, u in enumerate(np.asarray(users).tolist()) if u in live]

    def _refresh(self, users: np.ndarray) -> None:
        """Recompute the latest time and last items of these users from the event arrays (in place: only
        while the state is being built)."""
        lo = np.searchsorted(self.ev_users, users, "left")
        hi = np.searchsorted(self.ev_users, users, "right")
        for u, a, b in zip(users, lo, hi):
            if b > a:
                self.last_seen[u] = self.ev_times[b - 1]
                _right_aligned(self.histories[u], self.ev_items[a:b])


def _right_aligned(row: np.ndarray, items: np.ndarray) -> None:
    """Write the last len(row) of `items` into `row`, right-aligned, 0 before them."""
    seq = items[len(items) - min(len(items), len(row)):]
    row[:] = 0
    row[len(row) - len(seq):] = seq
