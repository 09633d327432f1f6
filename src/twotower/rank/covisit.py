"""Co-visitation: how often two items sit within a few steps of each other in the same user's history.

A candidate's co-visitation with the user's most recent items is the classic "people who had these next had
that" signal, computed from an older log than the requests it scores (the towers' training events), so no
request sees its own future. The same table and the same `recent_items` serve training rows and live rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..atomic import atomic_path
from ..row_cache import RowCache

NAMES = ["covisit", "covisit_norm"]


@dataclass
class CoVisitation:
    """[n_items + 1]² counts over item codes (row/column 0 unused) and each item's positive-event count."""

    counts: sp.csr_matrix
    popularity: np.ndarray
    window: int

    @classmethod
    def fit(cls, events: pd.DataFrame, n_items: int, window: int = 5) -> "CoVisitation":
        """Count item pairs at most `window` positive events apart in one user's time-ordered history."""
        ev = events[events["weight"] > 0].sort_values(["user", "timestamp"], kind="stable")
        users, items = ev["user"].to_numpy(), ev["item"].to_numpy()
        rows, cols = [], []
        for step in range(1, window + 1):
            same = users[step:] == users[:-step]
            a, b = items[:-step][same], items[step:][same]
            rows += [a, b]
            cols += [b, a]
        size = n_items + 1
        r, c = (np.concatenate(rows), np.concatenate(cols)) if rows else (np.zeros(0, int), np.zeros(0, int))
        counts = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(size, size))
        counts.sum_duplicates()
        popularity = np.bincount(items, minlength=size).astype(np.float64)
        return cls(counts, popularity, window)

    def scores(self, recent: list[np.ndarray], request: np.ndarray, item: np.ndarray) -> dict[str, np.ndarray]:
        """For each row (request index, candidate item code): the summed counts with the request's recent
        items, and the same normalised by sqrt(popularity) of both ends (so blockbusters do not dominate).
        Only the recent items' rows of the table are read: a request costs what its items' rows hold."""
        size = self.counts.shape[0]
        item = np.where(item < size, item, 0)         # codes of items added after training: no history
        return {"covisit": pair_sums(self.counts, recent, request, item, keep=True),
                "covisit_norm": pair_sums(self.normalised, recent, request, item, keep=True)}

    @cached_property
    def normalised(self) -> sp.csr_matrix:
        """counts[i, j] / sqrt((popularity[i] + 1)(popularity[j] + 1)), computed once per table."""
        inv = sp.diags(1.0 / np.sqrt(self.popularity + 1.0))
        return (inv @ self.counts @ inv).tocsr()

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, data=self.counts.data, indices=self.counts.indices,
                                    indptr=self.counts.indptr, popularity=self.popularity, window=self.window)

    @classmethod
    def load(cls, path: Path) -> "CoVisitation":
        z = np.load(path)
        size = len(z["popularity"])
        counts = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=(size, size))
        return cls(counts, z["popularity"], int(z["window"]))


def items_matrix(lists: list[np.ndarray], size: int) -> sp.csr_matrix:
    """[len(lists), size] with a 1 at each listed item code (a request's recent items, one row each)."""
    lengths = np.array([len(x) for x in lists], dtype=np.int64)
    codes = np.concatenate(lists).astype(np.int64) if len(lists) else np.zeros(0, np.int64)
    return sp.csr_matrix((np.ones(lengths.sum(), np.float32), codes, np.concatenate([[0], np.cumsum(lengths)])),
                         shape=(len(lists), size))


GATHER_MAX_TERMS = 1_000_000     # above this many terms a batch (training rows) takes the sparse product instead
DENSE_SUMS_MAX = 1 << 22         # pair sums through dense rows while lists x columns stay under this many
KEEP_LISTS_MAX = 64              # calls with at most this many lists (served requests) keep their rows
KEPT_BYTES = 32 << 20            # the kept rows of one table take at most this much memory


def _product(table: sp.csr_matrix, lists: list[np.ndarray]) -> sp.csr_matrix:
    return items_matrix([x[x < table.shape[0]] for x in lists], table.shape[0]) @ table


def row_entries(table: sp.csr_matrix, lists: list[np.ndarray],
                max_terms: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(list index, column, value) of every stored entry in the rows each list names: the terms of
    `items_matrix(lists) @ table` before they are summed, gathered without building sparse matrices (whose
    set-up costs more than a served request's few rows). None when there are more than `max_terms`: a
    training chunk's thousands of rows, whose terms would all be held at once (the sparse product is then
    the cheaper way)."""
    lengths = np.fromiter((len(x) for x in lists), np.int64, len(lists))
    rows = np.concatenate(lists).astype(np.int64) if len(lists) else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(lists)), lengths)
    known = rows < table.shape[0]                     # items added after the table was made: no row
    rows, owner = rows[known], owner[known]
    starts, ends = table.indptr[rows], table.indptr[rows + 1]
    sizes = (ends - starts).astype(np.int64)
    if max_terms is not None and sizes.sum() > max_terms:
        return None
    at = np.repeat(starts - np.r_[0, np.cumsum(sizes)[:-1]], sizes) + np.arange(sizes.sum())
    return np.repeat(owner, sizes), table.indices[at], table.data[at]


def pair_sums(table: sp.csr_matrix, lists: list[np.ndarray], owner: np.ndarray, column: np.ndarray,
              keep: bool = False) -> np.ndarray:
    """[r] `(items_matrix(lists) @ table)[owner, column]` (in the table's precision): each pair's sum over its
    list's rows; 0 for a column past the table. With `keep`, a few lists' rows are kept (`kept_row_sums`)."""
    width = table.shape[1]
    column = np.asarray(column, np.int64)
    out = np.zeros(len(column), table.dtype)
    inside = column < width
    if keep and len(lists) <= KEEP_LISTS_MAX and len(lists) * width <= DENSE_SUMS_MAX:
        sums = kept_row_sums(table, lists, table.dtype)
        out[inside] = sums[np.asarray(owner, np.int64)[inside], column[inside]]
        return out
    entries = row_entries(table, lists, GATHER_MAX_TERMS)
    if entries is None:
        out[inside] = np.asarray(_product(table, lists)[np.asarray(owner)[inside], column[inside]]).ravel()
        return out
    at, col, value = entries
    if len(lists) * width <= DENSE_SUMS_MAX:        # a served request's few lists: one dense row each, no sort
        sums = np.bincount(at * width + col, weights=value, minlength=len(lists) * width)
        out[inside] = sums[np.asarray(owner, np.int64)[inside] * width + column[inside]]
        return out
    keys, where = np.unique(at * width + col, return_inverse=True)
    if not len(keys):
        return out
    sums = np.bincount(where, weights=value, minlength=len(keys))
    asked = np.asarray(owner, np.int64) * width + column
    hit = np.minimum(np.searchsorted(keys, asked), len(keys) - 1)
    found = (keys[hit] == asked) & inside
    out[found] = sums[hit[found]]
    return out


def row_sums(table: sp.csr_matrix, lists: list[np.ndarray], dtype=np.float32) -> np.ndarray:
    """[len(lists), columns] `items_matrix(lists) @ table` as a dense matrix."""
    entries = row_entries(table, lists, GATHER_MAX_TERMS)
    if entries is None:
        return np.asarray(_product(table, lists).todense(), dtype=dtype)
    at, col, value = entries
    width = table.shape[1]
    return np.bincount(at * width + col, weights=value, minlength=len(lists) * width) \
        .reshape(len(lists), width).astype(dtype, copy=False)


def kept_row_sums(table: sp.csr_matrix, lists: list[np.ndarray], dtype=np.float32) -> np.ndarray:
    """`row_sums(table, lists, dtype)`, with the rows of lists asked for lately kept with the table: a served
    user's latest items change only with their events, so their next request reads its rows instead of
    gathering them again. Exact: a row is kept by its list's contents. Calls with many lists (training
    rows) are not kept."""
    if len(lists) > KEEP_LISTS_MAX:
        return row_sums(table, lists, dtype)
    kept = table.__dict__.get("_kept_rows")
    if kept is None:
        kept = table.__dict__.setdefault("_kept_rows", RowCache("bytes"))
    dtype = np.dtype(dtype)
    keys = [dtype.str.encode() + np.asarray(x, np.int64).tobytes() for x in lists]
    out = np.empty((len(lists), table.shape[1]), dtype)
    missing = kept.fill(keys, out)
    if missing:
        out[missing] = row_sums(table, [lists[r] for r in missing], dtype)
        kept.keep([keys[r] for r in missing], out[missing], KEPT_BYTES)
    return out


def recent_items(events: pd.DataFrame, users: np.ndarray, times: np.ndarray, length: int) -> list[np.ndarray]:
    """Each request's (user code, time) last `length` positive item codes strictly before that time."""
    ev = events[events["weight"] > 0].sort_values(["user", "timestamp"], kind="stable")
    return recent_sorted(ev["user"].to_numpy(), ev["timestamp"].to_numpy(np.float64), ev["item"].to_numpy(),
                         users, times, length)


def recent_sorted(ev_users: np.ndarray, ev_times: np.ndarray, ev_items: np.ndarray, users: np.ndarray,
                  times: np.ndarray, length: int) -> list[np.ndarray]:
    """`recent_items` over positive events already in (user, time) order, given as three arrays."""
    starts = np.searchsorted(ev_users, users, side="left")
    ends = np.searchsorted(ev_users, users, side="right")
    out = []
    for s, e, t in zip(starts, ends, np.asarray(times, dtype=np.float64)):
        stop = s + np.searchsorted(ev_times[s:e], t, side="left")
        out.append(ev_items[max(s, stop - length):stop])
    return out
