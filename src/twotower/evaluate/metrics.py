"""Ranking metrics from full-catalog scores: HR, NDCG, MRR at cut-offs, and catalog coverage."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

KS = (5, 10, 20)


def score_batch_size(n_items: int, cap: int = 1024) -> int:
    """Users scored at once so a [users, n_items + 1] float64 score matrix stays about 160 MB."""
    return max(1, min(cap, 20_000_000 // (n_items + 1)))


def mask_seen(scores: np.ndarray, users: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
    """Set the scores of items each user already has (and padding column 0) to -inf, in place. [B, n + 1]."""
    rows = seen[users]
    r, c = rows.nonzero()
    scores[r, c] = -np.inf
    scores[:, 0] = -np.inf
    return scores


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target among all items, ties counted as half (the expected rank when ties are
    broken at random, so a constant scorer gets no free hits). scores [B, n + 1], targets [B] -> [B]."""
    t = scores[np.arange(len(targets)), targets][:, None]
    higher = (scores > t).sum(1)
    ties = (scores == t).sum(1) - 1
    return higher + 0.5 * ties


def list_ranks(lists: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each target in its served list ([B, k] item codes, best first), inf when it is
    not in the list (a miss at every cut-off up to k). lists [B, k], targets [B] -> [B]."""
    hit = lists == targets[:, None]
    return np.where(hit.any(1), hit.argmax(1), np.inf)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """[B, k] item codes with the highest scores, best first."""
    rows = np.arange(len(scores))[:, None]
    part = np.argpartition(-scores, kth=min(k, scores.shape[1] - 1), axis=1)[:, :k]
    return part[rows, np.argsort(-scores[rows, part], axis=1, kind="stable")]


def summarize(ranks: np.ndarray, top10: np.ndarray, n_items: int, ks=KS) -> dict[str, float]:
    """HR@k, NDCG@k for each k, MRR@max(k), and the share of the catalog in anyone's top 10."""
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2), 0.0).mean())
    kmax = max(ks)
    out[f"MRR@{kmax}"] = float(np.where(ranks < kmax, 1.0 / (ranks + 1), 0.0).mean())
    out["Coverage@10"] = float(len(np.unique(top10[top10 > 0])) / n_items)
    return out


def ndcg_at(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """[n] 0-based ranks -> [n] each target's NDCG@k (one relevant item per request)."""
    return np.where(ranks < k, 1.0 / np.log2(np.asarray(ranks, dtype=np.float64) + 2), 0.0)


def paired_interval(a: np.ndarray, b: np.ndarray, draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over the same requests, with a 95% paired-bootstrap interval (requests resampled)."""
    return mean_interval(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), draws, seed)


def mean_interval(values: np.ndarray, draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5% and 97.5% quantiles of the bootstrap means) of per-request values."""
    rng = np.random.default_rng(seed)
    means = np.array([values[rng.integers(0, len(values), len(values))].mean() for _ in range(draws)])
    return float(values.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
