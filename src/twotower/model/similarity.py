"""How a query vector and an item vector are compared; chosen once, saved with the model and the index."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Similarity(nn.Module):
    """dot, cosine, negative squared Euclidean, or a learned weighted Hadamard product, over a temperature.

    `all_pairs(q [n, d], e [m, d]) -> [n, m]`, `pairs(q [*, d], e [*, d]) -> [*]`.
    """

    KINDS = ("dot", "cosine", "euclidean", "hadamard")

    def __init__(self, kind: str, dim: int, temperature: float = 1.0, learn_temperature: bool = False):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"similarity must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        log_t = torch.tensor(math.log(temperature))
        self.log_temperature = nn.Parameter(log_t) if learn_temperature else nn.Parameter(log_t, requires_grad=False)
        self.weight = nn.Parameter(torch.ones(dim)) if kind == "hadamard" else None

    def prepare_query(self, q: torch.Tensor) -> torch.Tensor:
        """The query as it meets items in an inner product (index searches use the same transform)."""
        if self.kind == "cosine":
            return F.normalize(q, dim=-1)
        if self.kind == "hadamard":
            return q * self.weight
        return q

    def prepare_item(self, e: torch.Tensor) -> torch.Tensor:
        return F.normalize(e, dim=-1) if self.kind == "cosine" else e

    def all_pairs(self, q: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        qp, ep = self.prepare_query(q), self.prepare_item(e)
        s = qp @ ep.transpose(-1, -2)
        if self.kind == "euclidean":
            s = 2 * s - (qp * qp).sum(-1, keepdim=True) - (ep * ep).sum(-1).unsqueeze(-2)
        return self._over_temperature(s)

    def _over_temperature(self, s: torch.Tensor) -> torch.Tensor:
        """s / temperature; a fixed temperature of 1 skips a pass over what can be a [batch, catalog] matrix."""
        if not self.log_temperature.requires_grad and float(self.log_temperature) == 0.0:
            return s
        return s / self.log_temperature.exp()

    def pairs(self, q: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        qp, ep = self.prepare_query(q), self.prepare_item(e)
        s = -((qp - ep) ** 2).sum(-1) if self.kind == "euclidean" else (qp * ep).sum(-1)
        return self._over_temperature(s)
