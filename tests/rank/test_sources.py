"""Candidate sources beside the towers: each scores from what was known before the request, EASE is the closed
form the baseline uses, and merged candidates carry every source's score and rank."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.conftest import synthetic_log, tiny_config
from twotower.evaluate.baselines import EASE
from twotower.pipeline import dataset_from_frames
from twotower.rank.covisit import CoVisitation
from twotower.rank.sources import (EASE_L2, CoVisitSource, EaseSource, TrendingSource, add_source_candidates,
                                   choose_ease_l2, fit_sources, source_scores)


def _data():
    return dataset_from_frames(synthetic_log(users=60, items=40, per_user=12), None, None, tiny_config())


def test_ease_source_is_the_baselines_closed_form_when_nothing_is_cut():
    data = _data()
    source = EaseSource.fit(data, 50.0)
    full = EASE(grid=[{"l2": 50.0}])._fit(data, {"l2": 50.0})
    profiles = [np.array([1, 2, 3]), np.array([7])]
    expected = np.stack([full[[1, 2, 3]].sum(0), full[7]])
    np.testing.assert_allclose(source.scores(profiles, np.zeros(2)), expected, rtol=1e-4, atol=1e-6)


def test_trending_counts_only_events_before_the_request():
    data = _data()
    source = TrendingSource.fit(data, window=20)           # one count per request (no sharing)
    ev = data.events[data.events["weight"] > 0].sort_values("timestamp", kind="stable")
    t = float(np.median(ev["timestamp"]))
    got = source.scores([np.zeros(0, np.int64)], np.array([t]))[0]
    expected = np.bincount(ev[ev["timestamp"] < t]["item"].to_numpy()[-20:], minlength=data.n_items + 1)
    np.testing.assert_array_equal(got, expected)
    assert source.scores([np.zeros(0, np.int64)], np.array([ev["timestamp"].min()]))[0].sum() == 0


def test_covisit_source_reads_only_the_latest_items():
    data = _data()
    table = CoVisitation.fit(data.events, data.n_items)
    a = CoVisitSource(table, recent=1).scores([np.array([4, 9])], np.zeros(1))
    b = CoVisitSource(table, recent=1).scores([np.array([9])], np.zeros(1))
    np.testing.assert_array_equal(a, b)


def test_merged_candidates_carry_each_sources_score_and_rank():
    dense = {"a": np.array([[-np.inf, 5.0, 4.0, 0.0, 1.0]], np.float32),
             "b": np.array([[-np.inf, 0.0, 0.0, 3.0, 2.0]], np.float32)}
    towers = {"local": np.array([0]), "item": np.array([2]), "retrieval_rank": np.array([1])}
    rows = pd.DataFrame(add_source_candidates(towers, dense, n=2)).set_index("item")
    assert rows.index.tolist() == [2, 1, 3, 4]                  # towers' first, then each source's top 2
    assert rows.loc[2, "a_rank"] == 2 and rows.loc[2, "b_rank"] == 3       # outside b's top 2: n + 1
    assert rows.loc[3, "a_score"] == 0 and rows.loc[3, "b_score"] == 3
    assert np.isnan(rows.loc[1, "retrieval_rank"])


def test_sources_never_propose_what_a_request_may_not_get():
    data = _data()
    sources = fit_sources(data, tiny_config().rank, CoVisitation.fit(data.events, data.n_items))
    allowed = np.ones((1, data.n_items + 1), bool)
    allowed[0, [0, 1, 2]] = False
    for name, scores in source_scores(sources, [np.array([1, 2])], np.array([1e12]), allowed).items():
        assert np.isneginf(scores[0, [0, 1, 2]]).all(), name


def test_ease_l2_is_chosen_from_the_grid_on_later_choices():
    data = _data()
    ev = data.events[data.events["weight"] > 0]
    profiles = [g["item"].to_numpy()[:-1] for _, g in ev.groupby("user")]
    targets = np.array([g["item"].to_numpy()[-1] for _, g in ev.groupby("user")])
    assert choose_ease_l2(data, profiles, targets) in EASE_L2


def test_sparse_ease_keeps_each_items_strongest_links():
    from twotower.rank.sources import _sparsify

    b = np.random.default_rng(0).normal(size=(50, 40)).astype(np.float32)
    kept = _sparsify(b.copy(), keep=5, rows=7).toarray()
    for row, full in zip(kept, b):
        assert set(np.flatnonzero(row)) == set(np.argsort(-full)[:5])
        np.testing.assert_array_equal(row[row != 0], full[row != 0])


def test_trending_takes_new_events_as_a_merge_into_the_stored_ones_would():
    """Later events append in place, an earlier one is merged, and a source made before (or beside) a later
    one keeps reading exactly its own events."""
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 100, 50))
    base = TrendingSource(times, rng.integers(1, 9, 50), size=10, window=20)

    def merged(source, t, i):                       # the reference: insert after stored events of equal time
        order = np.argsort(t, kind="stable")
        at = np.searchsorted(source.times, t[order], side="right")
        return np.insert(source.times, at, t[order]), np.insert(source.items, at, i[order])

    batches = [(np.array([100.0, 130.0, 101.0]), np.array([1, 2, 3])),     # later: appended
               (np.array([130.0]), np.array([4])),                           # a tie with the newest stored
               (np.array([50.0, 140.0]), np.array([5, 6])),                  # one earlier: merged into a copy
               (np.array([150.0] * 3000), np.full(3000, 7))]                 # past the room: a larger one
    source, kept = base, []
    for t, i in batches:
        want = merged(source, t, i)
        kept.append((source, source.times.copy(), source.items.copy()))
        source = source.with_events(t, i)
        np.testing.assert_array_equal(source.times, want[0])
        np.testing.assert_array_equal(source.items, want[1])
    assert np.shares_memory(kept[2][0].times, kept[1][0].times)            # the tie was appended in place
    sibling = kept[1][0].with_events(np.array([200.0]), np.array([8]))      # beside a later source
    assert sibling.times[-1] == 200.0 and len(sibling.times) == len(kept[1][1]) + 1
    for old, t, i in kept:                            # every earlier source still reads its own events
        np.testing.assert_array_equal(old.times, t)
        np.testing.assert_array_equal(old.items, i)
    np.testing.assert_array_equal(source.scores([np.zeros(0, np.int64)], np.array([1e9])),
                                  TrendingSource(source.times.copy(), source.items.copy(), 10, 20)
                                  .scores([np.zeros(0, np.int64)], np.array([1e9])))
