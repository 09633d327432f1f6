"""The LambdaRank ranker: graded labels, learning a real signal, and never starting below its base order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twotower.rank.ranker import LambdaRanker, ndcg_at_10, relevance_grades


def test_relevance_grades_keep_the_order_of_actions():
    assert relevance_grades(np.array([0, 1, 5, 3, 1, 0])).tolist() == [0, 1, 3, 2, 1, 0]


def candidate_rows(n_requests=400, n=30, seed=0):
    """One relevant candidate per request; `signal` marks it with noise, `noise` is useless, and the base
    score (retrieval) puts it somewhere in the list."""
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame({"request": np.repeat(np.arange(n_requests), n), "grade": 0})
    target = rng.integers(0, n, n_requests)
    hit = np.zeros(len(rows), bool)
    hit[np.arange(n_requests) * n + target] = True
    rows.loc[hit, "grade"] = 1
    rows["signal"] = hit * 1.0 + rng.normal(0, 0.3, len(rows))
    rows["noise"] = rng.normal(0, 1, len(rows))
    rows["retrieval_score"] = hit * 0.5 + rng.normal(0, 1, len(rows))
    return rows


def test_the_ranker_learns_a_feature_that_retrieval_missed():
    train, test = candidate_rows(seed=1), candidate_rows(seed=2)
    ranker = LambdaRanker(["signal", "noise", "retrieval_score"], base="retrieval_score").fit(train)
    ranked = ndcg_at_10(test.assign(s=ranker.score(test)), "s")
    base = ndcg_at_10(test, "retrieval_score")
    assert ranked > base + 0.2
    assert ranker.importance().index[0] == "signal"


def test_with_nothing_to_learn_the_base_order_stays():
    train, test = candidate_rows(seed=3), candidate_rows(seed=4)
    ranker = LambdaRanker(["noise"], base="retrieval_score").fit(train)
    ranked = ndcg_at_10(test.assign(s=ranker.score(test)), "s")
    base = ndcg_at_10(test, "retrieval_score")
    assert abs(ranked - base) < 0.02


def test_the_report_sets_the_ranker_beside_retrieval_order_on_the_same_held_out_requests():
    learned = LambdaRanker(["signal", "noise", "retrieval_score"], base="retrieval_score").fit(candidate_rows(seed=5))
    assert learned.report["valid_ndcg@10"] > learned.report["base_ndcg@10"] + 0.2
    nothing = LambdaRanker(["noise"], base="retrieval_score").fit(candidate_rows(seed=5))
    assert nothing.report["base_ndcg@10"] == learned.report["base_ndcg@10"]     # the same held-out requests
    assert abs(nothing.report["valid_ndcg@10"] - nothing.report["base_ndcg@10"]) < 0.03


def test_the_ranker_does_not_depend_on_the_scale_of_its_base():
    """Tower logits can span hundreds of units: from such a base LambdaRank's pair gradients saturate and the
    first trees overshoot, unless the base is put on a unit scale inside the ranker (and scored on it)."""
    quality = {}
    for scale in (1, 1000):
        train, test = candidate_rows(seed=5), candidate_rows(seed=6)
        train["retrieval_score"] *= scale
        test["retrieval_score"] *= scale
        ranker = LambdaRanker(["signal", "noise"], base="retrieval_score").fit(train)
        quality[scale] = ndcg_at_10(test.assign(s=ranker.score(test)), "s")
    assert quality[1000] == pytest.approx(quality[1], abs=0.02)
    assert quality[1000] > ndcg_at_10(test, "retrieval_score") + 0.5
