import math

import pytest
import torch
import torch.nn.functional as F

from twotower.model.loss import full_softmax_loss, mixed_log_q, sampled_softmax_loss
from twotower.model.similarity import Similarity

DOT = Similarity("dot", 2)


def test_logq_correction_subtracts_log_q_from_every_sampled_logit():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    e = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([1, 2])
    log_q = torch.log(torch.tensor([0.5, 0.05]))
    got = sampled_softmax_loss(q, targets, e, torch.ones(2), DOT, candidate_log_q=log_q)
    logits = q @ e.T - log_q  # a popular item (q=0.5) loses less than a rare one (q=0.05)
    want = F.cross_entropy(logits, torch.tensor([0, 1]))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # the sign matters: adding log q instead gives a different, larger loss for row 1,
    # whose popular negative would be boosted
    wrong = F.cross_entropy(q @ e.T + log_q, torch.tensor([0, 1]))
    assert wrong.item() != pytest.approx(got.item(), rel=1e-3)


def test_accidental_hits_are_masked_so_a_duplicate_target_is_not_a_negative():
    torch.manual_seed(0)
    q, e = torch.randn(3, 2), torch.randn(3, 2)
    targets = torch.tensor([4, 4, 9])   # rows 0 and 1 share the item
    got = sampled_softmax_loss(q, targets, e, torch.ones(3), DOT)
    logits = q @ e.T
    rows = []
    for i in range(3):
        keep = [j for j in range(3) if j == i or targets[j] != targets[i]]
        rows.append(-torch.log_softmax(logits[i, keep], 0)[keep.index(i)])
    assert got.item() == pytest.approx(torch.stack(rows).mean().item(), rel=1e-6)


def test_uniform_negatives_that_hit_the_target_are_masked_too():
    q, e = torch.eye(2), torch.eye(2)
    targets = torch.tensor([1, 2])
    negatives = torch.tensor([1, 3])
    neg_vecs = torch.tensor([[5.0, 5.0], [0.0, 0.0]])   # item 1 again, scoring high: must not count for row 0
    got = sampled_softmax_loss(q, targets, e, torch.ones(2), DOT, negatives=negatives, negative_vectors=neg_vecs)
    row0 = -torch.log_softmax(torch.tensor([1.0, 0.0, 0.0]), 0)[0]          # target, item 2, item 3
    row1 = -torch.log_softmax(torch.tensor([0.0, 1.0, 5.0, 0.0]), 0)[1]     # item 1, target, item 1, item 3
    assert got.item() == pytest.approx(((row0 + row1) / 2).item(), rel=1e-6)


def test_explicit_negatives_add_per_row_candidates_and_padding_is_ignored():
    q, e = torch.eye(2), torch.eye(2)
    targets = torch.tensor([1, 2])
    base = sampled_softmax_loss(q, targets, e, torch.ones(2), DOT)
    pad = sampled_softmax_loss(q, targets, e, torch.ones(2), DOT, explicit=torch.zeros(2, 1, dtype=torch.long),
                               explicit_vectors=torch.ones(2, 1, 2) * 9)
    assert pad.item() == pytest.approx(base.item())
    shown = torch.tensor([[7], [2]])   # row 0 saw item 7 and skipped it; row 1's "negative" is its own target
    vecs = torch.tensor([[[3.0, 0.0]], [[0.0, 3.0]]])
    got = sampled_softmax_loss(q, targets, e, torch.ones(2), DOT, explicit=shown, explicit_vectors=vecs)
    row0 = -torch.log_softmax(torch.tensor([1.0, 0.0, 3.0]), 0)[0]
    row1 = -torch.log_softmax(torch.tensor([0.0, 1.0]), 0)[1]
    assert got.item() == pytest.approx(((row0 + row1) / 2).item(), rel=1e-6)
    assert got > base


def test_label_weights_scale_each_example():
    q, e = torch.eye(2), torch.eye(2)
    targets = torch.tensor([1, 2])
    per_row = F.cross_entropy(q @ e.T, torch.tensor([0, 1]), reduction="none")
    got = sampled_softmax_loss(q, targets, e, torch.tensor([5.0, 1.0]), DOT)
    assert got.item() == pytest.approx(((5 * per_row[0] + per_row[1]) / 2).item(), rel=1e-6)


def test_full_softmax_never_predicts_padding():
    q = torch.tensor([[0.0, 1.0]])
    items = torch.tensor([[0.0, 100.0], [1.0, 0.0], [0.0, 1.0]])   # row 0 is padding and would win
    got = full_softmax_loss(q, items, torch.tensor([2]), torch.ones(1), DOT)
    assert got.item() == pytest.approx(-torch.log_softmax(torch.tensor([0.0, 1.0]), 0)[1].item(), rel=1e-6)


def test_mixed_log_q_adds_uniform_share():
    got = mixed_log_q(torch.tensor([0.2, 0.0]), n_uniform=10, n_items=100)
    assert got.tolist() == pytest.approx([math.log(0.3), math.log(0.1)], rel=1e-5)


def test_logq_makes_sampled_softmax_gradient_closer_to_full_softmax():
    """The point of the correction: with in-batch negatives drawn by popularity, the corrected gradient
    w.r.t. the query approximates the full-softmax gradient better than the uncorrected one."""
    torch.manual_seed(0)
    n, d, batch = 60, 8, 256
    items = torch.randn(n + 1, d)
    pop = 1.0 / torch.arange(1, n + 1).float() ** 1.2
    pop = pop / pop.sum()
    q0 = torch.randn(1, d) * 0.3   # a smooth softmax, as early in training: bias, not variance, dominates
    full_target = 5

    def grad(loss_fn):
        q = q0.clone().requires_grad_(True)
        loss_fn(q).backward()
        return q.grad

    full = grad(lambda q: full_softmax_loss(q, items, torch.tensor([full_target]), torch.ones(1), DOT))
    err = {True: 0.0, False: 0.0}
    for trial in range(50):
        others = torch.multinomial(pop, batch - 1, replacement=True) + 1
        tgts = torch.cat([torch.tensor([full_target]), others])
        # the row's own target is there for sure (log 1 = 0); the others come with their expected counts
        expected = torch.cat([torch.ones(1), (batch - 1) * pop[others - 1]])
        for corrected in (True, False):
            g = grad(lambda q: sampled_softmax_loss(
                torch.cat([q, torch.zeros(batch - 1, d)]), tgts, items[tgts], torch.tensor([1.0] + [0.0] * (batch - 1)),
                DOT, candidate_log_q=torch.log(expected) if corrected else None) * 1.0)
            err[corrected] += (g - full).norm().item()
    assert err[True] < 0.7 * err[False], err


def test_full_softmax_leaves_items_outside_the_catalog_out_of_the_denominator():
    q = torch.tensor([[0.0, 1.0]])
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 50.0]])   # item 3 would take all the mass
    got = full_softmax_loss(q, items, torch.tensor([2]), torch.ones(1), DOT, torch.tensor([1, 2]))
    assert got.item() == pytest.approx(-torch.log_softmax(torch.tensor([0.0, 1.0]), 0)[1].item(), rel=1e-6)
