"""Off-policy evaluation from logged impressions: what click rate would a new policy get, estimated from a
log collected by another policy with known propensities.

IPS weights each logged click by pi(a|x) / p(a|x); SNIPS divides by the summed weights instead of n, trading
a little bias for much less variance. Intervals are percentile bootstraps over the logged rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OffPolicyEstimate:
    ips: float
    ips_interval: tuple[float, float]
    snips: float
    snips_interval: tuple[float, float]
    matched: int            # logged rows where the new policy gives the logged item a positive probability


def ips(target: np.ndarray, logging: np.ndarray, reward: np.ndarray) -> float:
    return float(np.mean(target / logging * reward))


def snips(target: np.ndarray, logging: np.ndarray, reward: np.ndarray) -> float:
    w = target / logging
    return float((w * reward).sum() / max(w.sum(), 1e-12))


def estimate(target: np.ndarray, logging: np.ndarray, reward: np.ndarray, draws: int = 2000,
             seed: int = 0) -> OffPolicyEstimate:
    """IPS and SNIPS of a policy that gives the logged items probabilities `target`, from a log whose policy
    gave them `logging` (propensities) and observed `reward`."""
    target, logging, reward = (np.asarray(a, dtype=np.float64) for a in (target, logging, reward))
    if (logging <= 0).any():
        raise ValueError("logging propensities must be positive")
    rng = np.random.default_rng(seed)
    w = target / logging
    boot_ips, boot_snips = [], []
    for lo in range(0, draws, 100):              # 100 resamples at a time: memory stays at 100 x rows
        idx = rng.integers(0, len(reward), (min(100, draws - lo), len(reward)))
        gain, weight = (w[idx] * reward[idx]).sum(1), w[idx].sum(1)
        boot_ips.append(gain / len(reward))
        boot_snips.append(gain / np.maximum(weight, 1e-12))
    boot_ips, boot_snips = np.concatenate(boot_ips), np.concatenate(boot_snips)
    q = lambda a: (float(np.quantile(a, 0.025)), float(np.quantile(a, 0.975)))  # noqa: E731
    return OffPolicyEstimate(ips(target, logging, reward), q(boot_ips), snips(target, logging, reward),
                             q(boot_snips), int((target > 0).sum()))


def top_k_policy(scores: np.ndarray, logged: np.ndarray, k: int) -> np.ndarray:
    """pi(logged item | context) for the policy that shows one of each context's k best-scored items,
    uniformly at random (k = 1: the greedy policy). Items tied at the cut share its remaining places
    (their probability is averaged), so no tie-break by item order decides the estimate.
    scores: [n, n_items]; logged: [n] item indexes."""
    order = -np.sort(-scores, axis=1)
    kth = order[:, k - 1:k]
    above = (scores > kth).sum(1)
    tied = (scores == kth).sum(1)
    own = scores[np.arange(len(logged)), logged][:, None]
    share = np.where(own[:, 0] > kth[:, 0], 1.0, np.where(own[:, 0] == kth[:, 0], (k - above) / tied, 0.0))
    return share / k
