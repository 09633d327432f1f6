"""Retrieval losses over query and item vectors. They know nothing of features or towers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .similarity import Similarity

NEG_INF = float("-inf")


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Label-weighted loss averaged over examples: a purchase (5) counts five times a click (1)."""
    return (losses * weights).sum() / weights.gt(0).sum().clamp(min=1)


def full_softmax_loss(queries: torch.Tensor, item_vectors: torch.Tensor, targets: torch.Tensor,
                      weights: torch.Tensor, similarity: Similarity, catalog: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the whole catalog. queries [N, d], item_vectors [n_items + 1, d] (row 0 padding),
    targets [N] codes, weights [N]; `catalog` (sorted codes, holding every target) keeps the denominator to
    those items. Logged weight-0 items are in the denominator like every other item."""
    if catalog is not None:
        logits = similarity.all_pairs(queries, item_vectors[catalog])
        return weighted_mean(F.cross_entropy(logits, torch.searchsorted(catalog, targets), reduction="none"), weights)
    logits = similarity.all_pairs(queries, item_vectors)
    logits[:, 0] = NEG_INF
    return weighted_mean(F.cross_entropy(logits, targets, reduction="none"), weights)


def sampled_softmax_loss(queries: torch.Tensor, targets: torch.Tensor, target_vectors: torch.Tensor,
                         weights: torch.Tensor, similarity: Similarity,
                         negatives: torch.Tensor | None = None, negative_vectors: torch.Tensor | None = None,
                         candidate_log_q: torch.Tensor | None = None,
                         explicit: torch.Tensor | None = None, explicit_vectors: torch.Tensor | None = None,
                         offset: int = 0) -> torch.Tensor:
    """Sampled softmax with in-batch and mixed negatives, logQ correction and accidental-hit masking: the
    label-weighted cross-entropy of `sampled_softmax_logits` (see there) at each row's own positive."""
    logits = sampled_softmax_logits(queries, targets, target_vectors, similarity, negatives, negative_vectors,
                                    candidate_log_q, explicit, explicit_vectors, offset)
    return positive_loss(logits, weights, offset)


def sampled_softmax_logits(queries: torch.Tensor, targets: torch.Tensor, target_vectors: torch.Tensor,
                           similarity: Similarity,
                           negatives: torch.Tensor | None = None, negative_vectors: torch.Tensor | None = None,
                           candidate_log_q: torch.Tensor | None = None,
                           explicit: torch.Tensor | None = None, explicit_vectors: torch.Tensor | None = None,
                           offset: int = 0) -> torch.Tensor:
    """queries [N, d] -> logits [N, G + K + M] over in-batch, shared sampled and per-row explicit negatives.

    Candidates for row i are every batch target `targets` [G] (in-batch; row i's own positive is column
    offset + i: G = N and offset 0 in one process, while under data parallelism `targets` is the global
    batch gathered from every rank), then the shared `negatives` [K] (e.g. uniform over the catalog), then
    row i's own `explicit` [N, M] negatives (logged weight-0 impressions; code 0 = none).
    candidate_log_q [G + K]: log of each candidate's expected count per batch under the mixed sampling
    distribution; it is subtracted from the logits (Yi et al. 2019), which makes the sampled softmax an
    unbiased stand-in for the full one. Explicit negatives are not sampled, so get no correction.
    A candidate with the same item as row i's target (other than row i's own column) is an accidental hit:
    masked (-inf).
    """
    n = len(queries)
    own = targets[offset:offset + n]
    cand_items = targets if negatives is None else torch.cat([targets, negatives])
    cand_vectors = target_vectors if negatives is None else torch.cat([target_vectors, negative_vectors])
    logits = similarity.all_pairs(queries, cand_vectors)                        # [N, G + K]
    if candidate_log_q is not None:
        logits = logits - candidate_log_q.unsqueeze(0)
    hit = own.unsqueeze(1) == cand_items.unsqueeze(0)
    rows = torch.arange(n)
    hit[rows, offset + rows] = False
    logits = logits.masked_fill(hit, NEG_INF)
    if explicit is not None and explicit.shape[1] > 0:
        ex = similarity.pairs(queries.unsqueeze(1), explicit_vectors)           # [N, M]
        ex = ex.masked_fill((explicit == 0) | (explicit == own.unsqueeze(1)), NEG_INF)
        logits = torch.cat([logits, ex], dim=1)
    return logits


def positive_loss(logits: torch.Tensor, weights: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Label-weighted cross-entropy of logits [N, C] whose row i's positive is column offset + i."""
    labels = offset + torch.arange(len(logits), device=logits.device)
    return weighted_mean(F.cross_entropy(logits, labels, reduction="none"), weights)


def mixed_log_q(batch_probability: torch.Tensor, n_uniform: int, n_items: int) -> torch.Tensor:
    """log expected count of an item among a batch's candidates: in-batch probability + uniform draws."""
    return torch.log(batch_probability + n_uniform / n_items + 1e-12)

