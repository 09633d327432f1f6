"""The ranker's per-request columns computed with numpy equal pandas' definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from twotower.rank.reranker import percentile_within


def test_percentile_within_equals_pandas_grouped_rank():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 300))
        group = rng.integers(0, int(rng.integers(1, 6)), n)
        values = rng.integers(0, 5, n).astype(float)                 # many ties
        values[rng.random(n) < 0.1] = np.nan
        expected = pd.Series(values).groupby(group).rank(pct=True).to_numpy()
        np.testing.assert_allclose(percentile_within(group, values), expected, equal_nan=True)


def test_appearance_order_equals_pandas_factorize():
    from twotower.rank.reranker import appearance_order

    rng = np.random.default_rng(1)
    for values in (rng.integers(0, 7, 50), np.array([5, 5, 2, 9, 2]), np.array(["b", "a", "b"]), np.zeros(0, int)):
        place, firsts = appearance_order(values)
        codes, uniques = pd.factorize(values)
        np.testing.assert_array_equal(place, codes)
        np.testing.assert_array_equal(values[firsts], uniques)
