"""Rows a server computes per key and reads again on later requests (a user's query state, a table's sums over
a user's latest items), the least recently used dropped first. Safe to share between threads."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np

ENTRY_BYTES = 250               # an entry's array header and dict slot, beside its key and row


class RowCache:
    """Rows by key, the latest used last. Each entry costs 1 (`measure="count"`) or its key's and row's bytes
    plus `ENTRY_BYTES` (`"bytes"`: keys are bytes); `keep` drops the oldest while the total is over its limit.
    A copied or pickled cache starts empty."""

    def __init__(self, measure: str = "count"):
        self.measure = measure
        self._rows: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.total = 0
        self.hits = self.misses = 0

    def __reduce__(self):
        return RowCache, (self.measure,)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key) -> bool:
        return key in self._rows

    def fill(self, keys: list, out: np.ndarray) -> list[int]:
        """Copy the kept row of each key into `out[i]`; returns the positions of keys with none."""
        missing = []
        with self._lock:
            for i, key in enumerate(keys):
                row = self._rows.get(key)
                if row is None:
                    missing.append(i)
                else:
                    out[i] = row
                    self._rows.move_to_end(key)
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
        return missing

    def keep(self, keys: list, rows: np.ndarray, limit: float) -> None:
        """Keep a copy of each key's row (one already kept stays), then drop the oldest over `limit`."""
        with self._lock:
            for key, row in zip(keys, rows):
                if key not in self._rows:
                    self._rows[key] = row.copy()
                    self.total += self._cost(key, row)
            while self.total > limit and self._rows:
                self.total -= self._cost(*self._rows.popitem(last=False))

    def latest(self, n: int, of: Callable[[Hashable], Hashable]) -> list:
        """Up to `n` distinct `of(key)` values, the most recently used first."""
        found: dict = {}
        with self._lock:                         # from the newest end: n values are about n keys
            for key in reversed(self._rows):
                if len(found) >= n:
                    break
                found[of(key)] = None
        return list(found)

    def _cost(self, key, row: np.ndarray) -> int:
        return len(key) + row.nbytes + ENTRY_BYTES if self.measure == "bytes" else 1
