import numpy as np
import pytest
import scipy.sparse as sp

from twotower.evaluate.metrics import mask_seen, summarize, target_ranks, top_k


def test_ranks_count_better_items_and_half_the_ties():
    scores = np.array([[-np.inf, 0.9, 0.5, 0.5, 0.5, 0.1]])
    assert target_ranks(scores, np.array([1]))[0] == 0
    assert target_ranks(scores, np.array([3]))[0] == 2.0          # one better, two tied others -> 1 + 1
    assert target_ranks(scores, np.array([5]))[0] == 4


def test_a_constant_scorer_earns_no_free_hits():
    scores = np.zeros((1, 101))
    scores[:, 0] = -np.inf
    assert target_ranks(scores, np.array([7]))[0] == 49.5


def test_metrics_by_hand():
    ranks = np.array([0.0, 1.0, 9.0, 30.0])
    m = summarize(ranks, np.array([[1, 2], [2, 3]]), n_items=10, ks=(10, 20))
    assert m["HR@10"] == pytest.approx(0.75)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(11)) / 4)
    assert m["MRR@20"] == pytest.approx((1 + 0.5 + 0.1) / 4)
    assert m["Coverage@10"] == pytest.approx(0.3)


def test_seen_items_and_padding_are_masked():
    seen = sp.csr_matrix(np.array([[0, 0, 0], [0, 1, 0]], dtype=np.float32))
    scores = np.array([[5.0, 3.0, 1.0]])
    mask_seen(scores, np.array([1]), seen)
    assert scores.tolist() == [[-np.inf, -np.inf, 1.0]]


def test_top_k_is_sorted_best_first():
    scores = np.array([[0.1, 0.7, 0.3, 0.9, 0.5]])
    assert top_k(scores, 3).tolist() == [[3, 1, 4]]


def test_a_paired_interval_is_zero_for_the_same_lists_and_excludes_zero_for_a_clear_lead():
    from twotower.evaluate.metrics import ndcg_at, paired_interval

    rng = np.random.default_rng(0)
    ranks = rng.integers(0, 30, 500).astype(float)
    assert paired_interval(ndcg_at(ranks), ndcg_at(ranks)) == (0.0, 0.0, 0.0)
    better = np.maximum(ranks - 3, 0)                       # every target three places higher
    gain, low, high = paired_interval(ndcg_at(better), ndcg_at(ranks))
    assert 0 < low <= gain <= high
    assert ndcg_at(np.array([0.0, 9.0, 10.0, np.inf])).tolist() == [1.0, 1 / np.log2(11), 0.0, 0.0]
