"""Turn encoded feature columns into one d-dimensional vector per row (item, user or event)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.features import FeatureSpec


class FeatureEncoder(nn.Module):
    """Sum of one embedding per feature: categorical -> lookup, multi/text -> mean of lookups,
    numeric -> a linear map of all numeric columns together, vector -> a linear projection of its own.

    With a `table` (one row per code) it keeps it as buffers, so `forward(rows)` only needs row codes;
    without one (request context) `forward` takes the feature values themselves.
    """

    def __init__(self, specs: list[FeatureSpec], dim: int, table: dict[str, np.ndarray] | None = None):
        super().__init__()
        self.specs = list(specs) if table is None else [s for s in specs if s.name in table]
        self.names = {f"f{i}": s.name for i, s in enumerate(self.specs)}
        self.lookups = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        numeric = []
        for i, spec in enumerate(self.specs):
            key = f"f{i}"
            if table is not None:
                self.register_buffer(key, torch.as_tensor(table[spec.name]), persistent=False)
            if spec.kind == "numeric":
                numeric.append(key)
            elif spec.kind == "vector":
                self.projections[key] = nn.Linear(spec.width, dim, bias=False)
                nn.init.normal_(self.projections[key].weight, std=0.02)
            else:
                self.lookups[key] = nn.Embedding(spec.cardinality, dim, padding_idx=0)
                nn.init.normal_(self.lookups[key].weight, std=0.02)
        self.numeric_keys = numeric
        self.numeric = nn.Linear(len(numeric), dim) if numeric else None
        if self.numeric is not None:  # start as small as the embeddings, so no feature swamps the id at first
            nn.init.normal_(self.numeric.weight, std=0.02)
            nn.init.zeros_(self.numeric.bias)

    @property
    def empty(self) -> bool:
        return not self.specs

    def _key(self, name: str) -> str | None:
        """The module key of feature `name` (None when the encoder does not read it)."""
        return next((k for k, n in self.names.items() if n == name), None)

    def lookup_of(self, name: str) -> nn.Embedding | None:
        """The embedding table of feature `name` (None when it has none)."""
        key = self._key(name)
        return self.lookups[key] if key in self.lookups else None

    def values_of(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        """The stored rows of feature `name` (an encoder with a table)."""
        return getattr(self, self._key(name))[rows]

    def share(self, name: str, table: nn.Embedding) -> None:
        """Read feature `name` through `table` (another encoder's, of the same size): one set of weights."""
        key = self._key(name)
        if self.lookups[key].weight.shape != table.weight.shape:
            raise ValueError(f"{name}: a table of {tuple(table.weight.shape)} for {tuple(self.lookups[key].weight.shape)}")
        self.lookups[key] = table

    def forward(self, rows: torch.Tensor, values: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[*] row codes -> [*, d]; or, with `values` ({feature name: [*, ...]}), encode those instead."""
        def get(key):
            return values[self.names[key]] if values is not None else getattr(self, key)[rows]

        out = 0
        for key, emb in self.lookups.items():
            x = get(key)
            if x.dim() > rows.dim():  # multi-valued or text: mean over non-padding values (one fused bag op)
                flat = x.reshape(-1, x.shape[-1])
                summed = F.embedding_bag(flat, emb.weight, mode="sum", padding_idx=0)
                count = (flat > 0).sum(-1, keepdim=True).clamp(min=1)
                out = out + (summed / count).reshape(*x.shape[:-1], -1)
            else:
                out = out + emb(x)
        for key, projection in self.projections.items():
            out = out + projection(get(key).float())
        if self.numeric is not None:
            cols = [get(k) for k in self.numeric_keys]
            out = out + self.numeric(torch.stack(cols, dim=-1).float())
        return out
