"""The item tower and the query tower. They know nothing of the loss (see `loss.py`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import InputError
from .encoders import FeatureEncoder


class ItemTower(nn.Module):
    """Item code -> [d]: an id embedding plus the item's feature embeddings.

    Code 0 is padding: a zero vector.
    """

    def __init__(self, n_items: int, features: FeatureEncoder | None, cfg: ModelConfig):
        super().__init__()
        self.id_embedding = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0) if cfg.item_id else None
        if self.id_embedding is not None:
            nn.init.normal_(self.id_embedding.weight, std=0.02)
            with torch.no_grad():
                self.id_embedding.weight[0].zero_()
        self.features = features if features is not None and not features.empty and cfg.item_features else None
        # items with an id embedding; the others (too few events to learn one) live by their features alone
        self.register_buffer("has_id", torch.ones(n_items + 1, dtype=torch.bool), persistent=False)
        self.id_dropout = cfg.item_id_dropout if self.features is not None else 0.0
        if self.id_embedding is None and self.features is None:
            raise InputError("config", "model.item_id is false and there are no item features",
                             "set model.item_id = true or give an items table with feature columns")

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """[*] item codes -> [*, d]."""
        out = self._ids(items)
        if self.features is not None:
            out = out + self.features(items) * (items > 0).unsqueeze(-1)
        return out

    def with_features(self, items: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """[n] codes (0 = an item the model has not seen) and their encoded features -> [n, d]."""
        if self.features is None:
            raise InputError("items", "this model's item tower has no features, so it cannot embed new items",
                             "retrain with model.item_features = true and an items table with features")
        return self._ids(items) + self.features(items, values)

    def keep_ids_of(self, has_id: torch.Tensor) -> None:
        """Only these item codes ([n_items + 1] bool) get an id embedding; the others' rows are zeroed and, as
        training masks them, stay zero: served, those items are their features alone."""
        if self.id_embedding is None or self.features is None:
            return
        self.has_id = has_id.to(torch.bool)
        with torch.no_grad():
            self.id_embedding.weight[~self.has_id] = 0.0

    def _ids(self, items: torch.Tensor) -> torch.Tensor | int:
        """The id embeddings; in training, `id_dropout` of them zeroed (the features must carry those items)."""
        if self.id_embedding is None:
            return 0
        out = self.id_embedding(items)
        if self.training and self.features is not None:
            out = out * self.has_id[items].unsqueeze(-1)
        if self.training and self.id_dropout > 0:
            keep = torch.rand(items.shape, device=items.device) >= self.id_dropout
            out = out * (keep.unsqueeze(-1) / (1.0 - self.id_dropout))     # inverted: serving adds ids as they are
        return out


class FastDropout(nn.Module):
    """Inverted dropout from a uniform draw: the same function as nn.Dropout, about twice as fast on CPU."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


class CausalBlock(nn.Module):
    """Pre-norm transformer block whose positions attend only to themselves and earlier real items."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model.dim ({dim}) must be divisible by model.heads ({heads})")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.dropout = FastDropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x [B, L, d], allowed [B, 1, L, L] (query, key) -> [B, L, d]; with `last_only`, [B, 1, d]: the last
        position alone (what a next-step query reads), attending to all earlier ones."""
        B, L, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if last_only:
            q, allowed, x = q[:, :, -1:], allowed[:, :, -1:], x[:, -1:]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=0.0)
        x = x + self.dropout(self.out(a.transpose(1, 2).reshape(B, x.shape[1], d)))
        return x + self.dropout(self.ff(self.norm2(x)))


class HistoryEncoder(nn.Module):
    """[B, L, d] item vectors of a right-aligned history (0-padded on the left) -> [B, L, d] causal states:
    position t sees items 0..t only. A transformer, or a running mean as the cheap option."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.history
        self.position = nn.Embedding(cfg.max_history, cfg.dim)
        nn.init.normal_(self.position.weight, std=0.02)
        self.dropout = FastDropout(cfg.dropout)
        if self.kind == "transformer":
            self.blocks = nn.ModuleList(CausalBlock(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x [B, L, d], mask [B, L] true where a real item is; with `last_only`, [B, 1, d]: the last state."""
        L = x.shape[1]
        m = mask.unsqueeze(-1).to(x.dtype)
        if self.kind == "mean":
            out = self.norm(x.cumsum(1) / m.cumsum(1).clamp(min=1.0)) * m
            return out[:, -1:] if last_only else out
        # positions count from the right end (histories are right-aligned), so a batch cut to its longest
        # history gives every item the position it has in the full window
        longest = self.position.num_embeddings
        pos = torch.arange(longest - L, longest, device=x.device)
        h = self.dropout((x + self.position(pos)) * m)
        causal = pos.unsqueeze(0) <= pos.unsqueeze(1)                         # [L(query), L(key)]
        # a padding position may see itself, so no row is empty (an empty row would give NaN)
        allowed = (causal & (mask.unsqueeze(1) | torch.eye(L, dtype=torch.bool, device=x.device))).unsqueeze(1)
        for i, block in enumerate(self.blocks):
            last = last_only and i == len(self.blocks) - 1      # only the last block narrows to one position
            h = block(h, allowed, last) * (m[:, -1:] if last else m)
        return self.norm(h) * (m[:, -1:] if last_only else m)


class QueryTower(nn.Module):
    """(history, user, request context) -> [d] per position: the causal history state plus optional user-id,
    user-feature and context embeddings, so every history prefix is a training query."""

    def __init__(self, n_users: int, user_features: FeatureEncoder | None, context: FeatureEncoder | None,
                 cfg: ModelConfig):
        super().__init__()
        self.history = HistoryEncoder(cfg)
        self.user_embedding = nn.Embedding(n_users + 1, cfg.dim, padding_idx=0) if cfg.user_id else None
        if self.user_embedding is not None:
            nn.init.normal_(self.user_embedding.weight, std=0.02)
        self.user_features = user_features if user_features is not None and not user_features.empty and cfg.user_features else None
        self.context = context if context is not None and not context.empty else None

    def forward(self, history: torch.Tensor, mask: torch.Tensor, users: torch.Tensor,
                context: dict[str, torch.Tensor] | None = None, last_only: bool = False) -> torch.Tensor:
        """history [B, L, d] item vectors, mask [B, L], users [B], context {feature: [B, L, ...]} -> [B, L, d];
        with `last_only`, context {feature: [B, 1, ...]} -> [B, 1, d], the last position's query."""
        q = self.state(history, mask, users, last_only)
        return self.with_context(q, mask[:, -1:] if last_only else mask, context)

    def state(self, history: torch.Tensor, mask: torch.Tensor, users: torch.Tensor,
              last_only: bool = False) -> torch.Tensor:
        """The query before the request's context: the causal history state plus the user's id and feature
        embeddings ([B, L, d], or [B, 1, d] with `last_only`). A function of the user and their history alone,
        so a server may keep it between requests."""
        q = self.history(history, mask, last_only)
        extra = 0
        if self.user_embedding is not None:
            extra = extra + self.user_embedding(users)
        if self.user_features is not None:
            extra = extra + self.user_features(users)
        if not isinstance(extra, int):
            q = q + extra.unsqueeze(1)
        return q

    def with_context(self, state: torch.Tensor, mask: torch.Tensor,
                     context: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """`state` [B, L, d] plus the context's embedding at the positions `mask` [B, L] marks real."""
        if self.context is not None and context is not None:
            return state + self.context(mask, values=context)
        return state
