"""The context-free part of each user's next query, kept between requests. It depends on the user and their
history alone (`TwoTowerModel.next_states`: the history encoder and the user's embeddings, most of the query
tower's cost), so a server computes it once per history and adds only each request's context. A new event
changes the user's history and so the key: nothing is ever stale."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch

from .recommender import _in_batches
from .twotower import TwoTowerModel

BATCH = 512             # users whose states one tower call computes


class QueryStates:
    """`queries(histories, users, context)` as `query_vectors` gives them, with the states of the `size`
    (user, history) pairs used last kept in memory (least recently used first out)."""

    def __init__(self, model: TwoTowerModel, item_vectors: torch.Tensor, size: int):
        self.model, self.item_vectors, self.size = model, item_vectors, size
        self._states: OrderedDict[tuple[int, bytes], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._states)

    def queries(self, histories: np.ndarray, users: np.ndarray, context: dict) -> np.ndarray:
        """[n, d] index-ready next-step queries of user codes with these [n, max_history] histories and the
        requests' encoded context ({name: [n, ...]}). The model must be in eval mode."""
        states = self._states_of(histories, users)
        with torch.inference_mode():
            ctx = {k: torch.as_tensor(v) for k, v in context.items()} or None
            q = self.model.next_with_context(torch.from_numpy(states), torch.as_tensor(histories[:, -1] > 0), ctx)
            return self.model.similarity.prepare_query(q).numpy()

    def keep(self, histories: np.ndarray, users: np.ndarray) -> None:
        """Compute and keep the states of these user codes with these histories (warming a version up)."""
        self._states_of(histories, users)

    def recent_users(self, n: int) -> np.ndarray:
        """The codes of the last `n` distinct users whose states were asked for, the latest first."""
        latest: dict[int, None] = {}
        with self._lock:                         # from the newest end: n users are about n keys
            for user, _ in reversed(self._states):
                if len(latest) >= n:
                    break
                latest[user] = None
        return np.fromiter(latest, np.int64, len(latest))

    def _states_of(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        keys = [(int(u), h.tobytes()) for u, h in zip(users, histories)]
        states = np.empty((len(keys), self.model.cfg.dim), np.float32)
        missing = []
        with self._lock:
            for row, key in enumerate(keys):
                state = self._states.get(key)
                if state is None:
                    missing.append(row)
                else:
                    states[row] = state
                    self._states.move_to_end(key)
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
        if not missing:
            return states
        states[missing] = self._compute(histories[missing], users[missing])
        if self.size > 0:
            with self._lock:
                for row in missing:
                    self._states[keys[row]] = states[row].copy()
                while len(self._states) > self.size:
                    self._states.popitem(last=False)
        return states

    def _compute(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        def states(history, known, _context, items):
            return self.model.next_states(history, known, items)

        return _in_batches(states, self.model.n_users, histories, users, {}, self.item_vectors, self.model.cfg.dim,
                           BATCH)
