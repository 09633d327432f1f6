"""More than two towers in one space (the seed's N-tower question): each extra tower reads one vector
feature of an item (its text through the sentence encoder, an image embedding made elsewhere) and maps it
into the towers' space. The pairs the data grounds are trained to agree: query and item from the events
(the main loss), and each pair in `train.pairs` (text-item, image-item, text-image, ...) from the catalog
itself, since an item's text, its image and the item are one thing. A trained extra tower then embeds any
such vector, e.g. a query's sentence vector into the item space, or an item known only by its image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.features import FeatureSpec
from ..errors import InputError

ITEM = "item"
PAIR_ITEMS = 256           # catalog items each step's pair losses compare
PAIR_TEMPERATURE = 0.05    # cosine logits are divided by it


class ContentTower(nn.Module):
    """[*, width] a vector feature -> [*, d]: a two-layer MLP."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())


def pair_names(pairs: dict[str, float], towers: dict[str, str]) -> list[tuple[str, str, float]]:
    """("a", "b", weight) of each configured pair "a-b", or one error naming the pair and the towers known."""
    known = {ITEM, *towers}
    out = []
    for pair, weight in pairs.items():
        a, _, b = pair.partition("-")
        if not b or a == b or a not in known or b not in known:
            raise InputError("train.pairs", f"{pair!r} is not two different towers joined by '-'",
                             f"name two of {sorted(known)} (model.towers adds towers), e.g. \"text-item\"")
        out.append((a, b, float(weight)))
    idle = sorted(set(towers) - {name for a, b, _ in out for name in (a, b)})
    if idle:
        raise InputError("model.towers", f"tower(s) {idle} are in no pair of train.pairs, so nothing trains them",
                         f"add a pair, e.g. train.pairs = {{\"{idle[0]}-item\" = 0.5}}")
    return out


def check_towers(towers: dict[str, str], item_specs: list[FeatureSpec]) -> dict[str, int]:
    """{tower: the width of the vector feature it reads}, or one error naming the tower and the fix."""
    vectors = {s.name: s.width for s in item_specs if s.kind == "vector"}
    for name, feature in towers.items():
        if name == ITEM or "-" in name:
            raise InputError("model.towers", f"{name!r} cannot name an extra tower", "use a plain name, e.g. text")
        if feature not in vectors:
            raise InputError("model.towers", f"tower {name!r} reads {feature!r}, which is not a vector feature of "
                             f"the items (those are: {sorted(vectors) or 'none'})",
                             "set model.text_vectors = true for text_vector, or give a vector column (a Parquet "
                             "list column or <stem>.<column>.npy beside the items table)")
    return {name: vectors[feature] for name, feature in towers.items()}


def pair_loss(vectors: dict[str, torch.Tensor], pairs: list[tuple[str, str, float]]) -> torch.Tensor:
    """Sum of weight x symmetric InfoNCE over the same items' vectors from two towers (each item's own
    vector in the other tower is its positive, the other items its negatives)."""
    total = 0.0
    for a, b, weight in pairs:
        logits = F.normalize(vectors[a], dim=-1) @ F.normalize(vectors[b], dim=-1).T / PAIR_TEMPERATURE
        target = torch.arange(len(logits))
        total = total + weight * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    return total
