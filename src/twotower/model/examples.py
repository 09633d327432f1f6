"""Training examples for the towers: every prefix of a user's history predicts the next positive event.

A user's positive events (weight > 0) in time order form the history sequence; each one after the first is
a target whose query is the history before it, so one causal pass over a window trains L queries at once.
A user's first event is a target too when it came from a search: its query text is the query, with no
history. Weight-0 events (shown, not chosen) between two positives become explicit negatives of the later one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.dataset import Dataset
from ..data.query_text import QUERY_TEXT
from ..errors import InputError


@dataclass
class Windows:
    """Right-aligned windows of L steps (0 = padding on the left).

    inputs [W, L] item codes seen before each step, targets [W, L] item codes to predict, weights [W, L],
    rows [W, L] event row of each target (for its request context, -1 = padding), negatives [W, L, M]
    explicit negative item codes, users [W].
    """

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    rows: np.ndarray
    negatives: np.ndarray
    users: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


def positive_sequences(data: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row index of each positive event in time order, its user, the start offset of each user's run)."""
    ev = data.events
    rows = np.flatnonzero(ev["weight"].to_numpy() > 0)
    users = ev["user"].to_numpy()[rows]
    starts = np.searchsorted(users, np.arange(data.n_users + 2))
    return rows, users, starts


def explicit_negatives(data: Dataset, max_per_target: int) -> dict[int, np.ndarray]:
    """{row of a positive event: item codes of the weight-0 events since the user's previous positive}."""
    if max_per_target == 0:
        return {}
    ev = data.events
    weight = ev["weight"].to_numpy()
    user = ev["user"].to_numpy()
    pos = weight > 0
    # number of positives of the same user up to each row; a weight-0 row belongs to the next positive
    cum = np.cumsum(pos)
    first_of_user = np.r_[True, user[1:] != user[:-1]]
    base = np.maximum.accumulate(np.where(first_of_user, cum - pos, 0))
    k = cum - base
    pos_rows = np.flatnonzero(pos)
    next_pos = {(u, kk): r for u, kk, r in zip(user[pos_rows], k[pos_rows] - 1, pos_rows)}
    out: dict[int, list[int]] = {}
    items = ev["item"].to_numpy()
    for r in np.flatnonzero(~pos):
        target = next_pos.get((user[r], k[r]))
        if target is not None:
            out.setdefault(int(target), []).append(int(items[r]))
    return {t: np.asarray(v[-max_per_target:], dtype=np.int64) for t, v in out.items()}


def build_windows(data: Dataset, length: int, max_negatives: int) -> Windows:
    """Cut every user's positive sequence into windows of `length` targets, newest first, no overlap."""
    rows, users, starts = positive_sequences(data)
    items = data.events["item"].to_numpy()
    weight = data.events["weight"].to_numpy()
    negs = explicit_negatives(data, max_negatives)
    width = max((len(v) for v in negs.values()), default=0)
    searched = searched_events(data)
    out = {k: [] for k in ("inputs", "targets", "weights", "rows", "negatives", "users")}
    for u in range(1, data.n_users + 1):
        seq = rows[starts[u]:starts[u + 1]]
        first = 0 if len(seq) and searched[seq[0]] else 1       # the first target: index into seq
        for end in range(len(seq), first, -length):
            lo = max(first, end - length)
            tgt = seq[lo:end]
            pad = length - len(tgt)
            before = items[seq[lo - 1:end - 1]] if lo else np.r_[0, items[seq[:end - 1]]]
            out["inputs"].append(np.r_[np.zeros(pad, np.int64), before])
            out["targets"].append(np.r_[np.zeros(pad, np.int64), items[tgt]])
            out["weights"].append(np.r_[np.zeros(pad, np.float32), weight[tgt]])
            out["rows"].append(np.r_[np.full(pad, -1, np.int64), tgt])
            neg = np.zeros((length, width), np.int64)
            for j, r in enumerate(tgt):
                v = negs.get(int(r))
                if v is not None:
                    neg[pad + j, : len(v)] = v
            out["negatives"].append(neg)
            out["users"].append(u)
    if not out["users"]:
        raise InputError("events", "no user has two positive events, so there is nothing to learn what comes next from",
                         "give users at least two events with a positive weight (click, purchase, ...)")
    return Windows(*(np.stack(out[k]) if k != "users" else np.asarray(out[k], np.int64) for k in out))


def searched_events(data: Dataset) -> np.ndarray:
    """[events] True where the event came with search text (its query-text vector is not zeros)."""
    vectors = data.context_features.get(QUERY_TEXT)
    if vectors is None:
        return np.zeros(len(data.events), bool)
    return np.asarray(vectors).any(axis=1)


def last_histories(data: Dataset, users: np.ndarray, length: int) -> np.ndarray:
    """[len(users), length] the last `length` positive item codes of each user, right-aligned, 0-padded."""
    rows, _, starts = positive_sequences(data)
    items = data.events["item"].to_numpy()
    out = np.zeros((len(users), length), np.int64)
    for i, u in enumerate(users):
        if 0 < u <= data.n_users:
            seq = items[rows[starts[u]:starts[u + 1]][-length:]]
            if len(seq):
                out[i, -len(seq):] = seq
    return out
