"""The context-free part of each user's next query, kept between requests. It depends on the user and their
history alone (`TwoTowerModel.next_states`: the history encoder and the user's embeddings, most of the query
tower's cost), so a server computes it once per history and adds only each request's context. A new event
changes the user's history and so the key: nothing is ever stale."""

from __future__ import annotations

import numpy as np
import torch

from ..row_cache import RowCache
from .recommender import _in_batches
from .twotower import TwoTowerModel

BATCH = 512             # users whose states one tower call computes


class QueryStates:
    """`queries(histories, users, context)` as `query_vectors` gives them, with the states of the `size`
    (user, history) pairs used last kept in memory (least recently used first out)."""

    def __init__(self, model: TwoTowerModel, item_vectors: torch.Tensor, size: int):
        self.model, self.item_vectors, self.size = model, item_vectors, size
        self._states = RowCache()                # keyed by (user code, history bytes)

    def __len__(self) -> int:
        return len(self._states)

    @property
    def hits(self) -> int:
        return self._states.hits

    @property
    def misses(self) -> int:
        return self._states.misses

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
        return np.array(self._states.latest(n, lambda key: key[0]), np.int64)

    def _states_of(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        keys = [(int(u), h.tobytes()) for u, h in zip(users, histories)]
        states = np.empty((len(keys), self.model.cfg.dim), np.float32)
        missing = self._states.fill(keys, states)
        if not missing:
            return states
        states[missing] = self._compute(histories[missing], users[missing])
        if self.size > 0:
            self._states.keep([keys[row] for row in missing], states[missing], self.size)
        return states

    def _compute(self, histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        def states(history, known, _context, items):
            return self.model.next_states(history, known, items)

        return _in_batches(states, self.model.n_users, histories, users, {}, self.item_vectors, self.model.cfg.dim,
                           BATCH)
