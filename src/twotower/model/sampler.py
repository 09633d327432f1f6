"""Negative samplers and the streaming item-frequency estimate used for logQ correction."""

from __future__ import annotations

import torch


class FrequencyEstimator:
    """Streaming estimate of how often each item shows up as a batch target (Yi et al., RecSys 2019, alg. 2).

    For each item it keeps the step it was last seen (A) and a moving average of the gap between sightings
    (B); 1/B estimates the probability that the item is among a batch's targets. Exact item codes are used
    as the hash, so there are no collisions.
    """

    def __init__(self, n_items: int, alpha: float = 0.01):
        self.alpha = alpha
        self.step = 0
        self.last_seen = torch.zeros(n_items + 1, dtype=torch.float64)
        self.gap = torch.full((n_items + 1,), float("inf"), dtype=torch.float64)

    def update(self, items: torch.Tensor) -> None:
        """Record one batch of target item codes ([*], 0 = padding ignored)."""
        self.step += 1
        seen = torch.unique(items[items > 0])
        delta = self.step - self.last_seen[seen]
        gap = self.gap[seen]
        first = torch.isinf(gap)
        # an item's first sighting starts its average at the observed gap instead of infinity
        self.gap[seen] = torch.where(first, delta, (1 - self.alpha) * gap + self.alpha * delta)
        self.last_seen[seen] = float(self.step)

    def probability(self, items: torch.Tensor) -> torch.Tensor:
        """[*] codes -> [*] estimated probability of appearing among one batch's targets (0 if never seen)."""
        return (1.0 / self.gap[items]).clamp(max=1.0).float()

    def state_dict(self) -> dict:
        return {"step": self.step, "last_seen": self.last_seen, "gap": self.gap, "alpha": self.alpha}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.last_seen, self.gap, self.alpha = state["step"], state["last_seen"], state["gap"], state["alpha"]


def sample_uniform(n_items: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """[k] item codes drawn uniformly from 1..n_items, with replacement."""
    return torch.randint(1, n_items + 1, (k,), generator=generator)
