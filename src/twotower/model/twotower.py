"""The whole two-tower model: item tower, query tower and the similarity that joins them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..data.features import FeatureSpec
from ..data.item_text import TEXT_NGRAMS
from ..data.query_text import QUERY_TEXT
from .encoders import FeatureEncoder
from .extra_towers import ITEM, ContentTower, check_towers
from .similarity import Similarity
from .towers import ItemTower, QueryTower


class TwoTowerModel(nn.Module):
    """Query tower and item tower into one d-dimensional space, compared by `similarity`."""

    def __init__(self, n_users: int, n_items: int, cfg: ModelConfig,
                 item_specs: list[FeatureSpec] = (), item_table: dict[str, np.ndarray] | None = None,
                 user_specs: list[FeatureSpec] = (), user_table: dict[str, np.ndarray] | None = None,
                 context_specs: list[FeatureSpec] = ()):
        super().__init__()
        self.cfg = cfg
        self.n_users, self.n_items = n_users, n_items
        item_feats = FeatureEncoder(item_specs, cfg.dim, item_table) if item_table else None
        user_feats = FeatureEncoder(user_specs, cfg.dim, user_table) if user_table else None
        context = FeatureEncoder(context_specs, cfg.dim) if context_specs else None
        self.item_tower = ItemTower(n_items, item_feats, cfg)
        self.query_tower = QueryTower(n_users, user_feats, context, cfg)
        widths = check_towers(cfg.towers, list(item_specs))
        self.extra = nn.ModuleDict({name: ContentTower(width, cfg.dim) for name, width in widths.items()})
        words = item_feats.lookup_of(TEXT_NGRAMS) if item_feats is not None else None
        if words is not None and context is not None and context.lookup_of(QUERY_TEXT) is not None:
            context.share(QUERY_TEXT, words)     # the n-gram encoder: one table for the query's and the item's text
        self.similarity = Similarity(cfg.similarity, cfg.dim, cfg.temperature, cfg.learn_temperature)

    def tower_vectors(self, name: str, items: torch.Tensor) -> torch.Tensor:
        """[n, d] catalog items (codes) as tower `name` sees them: the item tower, or an extra tower reading its
        feature of those items."""
        if name == ITEM:
            return self.item_tower(items)
        return self.extra[name](self.item_tower.features.values_of(self.cfg.towers[name], items))

    def all_item_vectors(self) -> torch.Tensor:
        """[n_items + 1, d] every catalog item (row 0 is padding)."""
        return self.item_tower(torch.arange(self.n_items + 1))

    def queries(self, history: torch.Tensor, users: torch.Tensor, context: dict[str, torch.Tensor] | None = None,
                item_vectors: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """history [B, L] item codes (right-aligned), users [B], context {name: [B, L, ...]} -> [B, L, d]; with
        `last_only`, context {name: [B, 1, ...]} -> [B, 1, d] (the last position's query alone).

        `item_vectors` [n_items + 1, d] avoids re-running the item tower when the caller already has them.
        """
        vecs = item_vectors[history] if item_vectors is not None else self.item_tower(history)
        return self.query_tower(vecs, history > 0, users, context, last_only)

    @torch.no_grad()
    def next_queries(self, history: torch.Tensor, users: torch.Tensor,
                     context: dict[str, torch.Tensor] | None = None,
                     item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """[B, d] each user's query for the next step; context {name: [B, ...]} describes the request and is
        applied at the last history position. Only that position is computed, over the history without the
        padding every row has on its left (positions count from the right end: the same query, though the
        batch's longest history sets the products' shapes, so its last float bits may differ by batch)."""
        return self.next_with_context(self.next_states(history, users, item_vectors), history[:, -1] > 0, context)

    @torch.no_grad()
    def next_states(self, history: torch.Tensor, users: torch.Tensor,
                    item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """[B, d] each user's next-step query before the request's context (`QueryTower.state`): what depends
        on the user and their history alone."""
        real = (history > 0).any(0)
        first = int(real.to(torch.int8).argmax()) if bool(real.any()) else history.shape[1] - 1
        history = history[:, first:]
        vecs = item_vectors[history] if item_vectors is not None else self.item_tower(history)
        return self.query_tower.state(vecs, history > 0, users, last_only=True)[:, -1]

    @torch.no_grad()
    def next_with_context(self, states: torch.Tensor, last_real: torch.Tensor,
                          context: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[B, d] next-step queries from `next_states` and the request's context {name: [B, ...]};
        `last_real` [B] whether each history's last position holds an item."""
        if context:
            context = {k: v.unsqueeze(1) for k, v in context.items()}
        return self.query_tower.with_context(states.unsqueeze(1), last_real.unsqueeze(1), context)[:, -1]

    @torch.no_grad()
    def score(self, history: torch.Tensor, users: torch.Tensor, context: dict[str, torch.Tensor] | None = None,
              item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """[B, n_items + 1] similarity of each user's next-step query to every item (column 0 = -inf)."""
        if item_vectors is None:
            item_vectors = self.all_item_vectors()
        s = self.similarity.all_pairs(self.next_queries(history, users, context, item_vectors), item_vectors)
        s[:, 0] = float("-inf")
        return s

    @torch.no_grad()
    def index_queries(self, history: torch.Tensor, users: torch.Tensor,
                      context: dict[str, torch.Tensor] | None = None,
                      item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """[B, d] next-step queries as a vector index takes them (see `Similarity.prepare_query`)."""
        return self.similarity.prepare_query(self.next_queries(history, users, context, item_vectors))

    @torch.no_grad()
    def index_vectors(self, codes: torch.Tensor, features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[n, d] item vectors as an index stores them. `features` ({name: [n, ...]}, encoded with the
        model's item specs) replaces the stored feature rows: how items unseen in training get vectors
        (their code is 0, so the id embedding adds nothing)."""
        if features is None:
            vectors = self.item_tower(codes)
        else:
            vectors = self.item_tower.with_features(codes, features)
        return self.similarity.prepare_item(vectors)
