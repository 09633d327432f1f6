"""Co-visitation counts pairs within a window of one user's history, and recent items never include the
request's own time or later."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twotower.rank.covisit import CoVisitation, recent_items


def log(rows):
    return pd.DataFrame(rows, columns=["user", "item", "timestamp", "weight"])


def test_pairs_count_within_the_window_and_never_across_users(tmp_path):
    events = log([(1, 1, 0, 1), (1, 2, 1, 1), (1, 3, 2, 1), (1, 4, 3, 0),    # item 4: no positive
                  (2, 3, 0, 1), (2, 5, 1, 1)])
    table = CoVisitation.fit(events, n_items=5, window=1)
    c = table.counts.toarray()
    assert c[1, 2] == c[2, 1] == 1 and c[2, 3] == 1 and c[3, 5] == 1
    assert c[1, 3] == 0, "two steps apart is outside a window of 1"
    assert c[:, 4].sum() == 0 and c[1, 5] == 0, "no pair across users, none with a weight-0 event"
    assert CoVisitation.fit(events, 5, window=2).counts[1, 3] == 1
    table.save(tmp_path / "c.npz")
    again = CoVisitation.load(tmp_path / "c.npz")
    assert (again.counts != table.counts).nnz == 0 and again.window == 1
    np.testing.assert_array_equal(again.popularity, table.popularity)


def test_scores_sum_over_the_recent_items():
    events = log([(1, 1, 0, 1), (1, 2, 1, 1), (2, 1, 0, 1), (2, 2, 1, 1), (2, 3, 2, 1)])
    table = CoVisitation.fit(events, n_items=4, window=1)
    out = table.scores([np.array([1, 3]), np.array([], dtype=np.int64)], np.array([0, 0, 1]), np.array([2, 4, 2]))
    assert out["covisit"].tolist() == [3.0, 0.0, 0.0]       # (1,2) twice + (3,2) once; item 4 never; no history
    assert out["covisit_norm"][0] > 0


def test_recent_items_are_strictly_before_the_request():
    events = log([(1, 10, 5.0, 1), (1, 11, 6.0, 1), (1, 12, 7.0, 1), (1, 13, 7.0, 0), (2, 20, 1.0, 1)])
    got = recent_items(events, np.array([1, 1, 1, 2, 3]), np.array([7.0, 7.5, 5.0, 9.0, 9.0]), length=2)
    assert [g.tolist() for g in got] == [[10, 11], [11, 12], [], [20], []]


@pytest.mark.parametrize("gather_max, dense_max", [(1_000_000, 1 << 22), (1_000_000, 0), (0, 1 << 22)])
def test_gathered_rows_sum_as_the_sparse_product_does(gather_max, dense_max, monkeypatch):
    """pair_sums and row_sums (a request's rows gathered in numpy, the pairs summed in dense rows or sorted)
    equal `items_matrix(lists) @ table`, with a repeated item, an empty list and a code past the table (an item
    added later: no row) among the lists."""
    import scipy.sparse as sp

    from twotower.rank import covisit
    from twotower.rank.covisit import items_matrix, pair_sums, row_sums

    monkeypatch.setattr(covisit, "GATHER_MAX_TERMS", gather_max)
    monkeypatch.setattr(covisit, "DENSE_SUMS_MAX", dense_max)

    rng = np.random.default_rng(0)
    table = sp.random(30, 30, density=0.2, format="csr", random_state=1, dtype=np.float64)
    lists = [np.array([3, 7, 3]), np.array([], np.int64), np.array([29, 1]), np.array([12, 45])]
    inside = [x[x < 30] for x in lists]
    dense = (items_matrix(inside, 30) @ table).toarray()
    np.testing.assert_allclose(row_sums(table, lists, np.float64), dense)
    owner, column = rng.integers(0, len(lists), 200), rng.integers(0, 30, 200)
    got = pair_sums(table, lists, owner, column)
    np.testing.assert_allclose(got, dense[owner, column])
    assert got.dtype == table.dtype and (got == 0).any() and (got > 0).any()
    assert pair_sums(table, lists, np.array([0, 2]), np.array([30, 31])).tolist() == [0.0, 0.0]  # past the table


def test_kept_rows_equal_fresh_ones_and_stay_within_their_memory(monkeypatch):
    """`kept_row_sums` answers a list asked before from the rows it kept, exactly as `row_sums` computes them,
    whatever the lists' order; pair sums through kept rows equal the gathered ones; the kept rows never take
    more than `KEPT_BYTES`, and a batch of many lists (training rows) keeps none."""
    import pickle

    import scipy.sparse as sp

    from twotower.rank import covisit
    from twotower.rank.covisit import kept_row_sums, pair_sums, row_sums

    table = sp.random(40, 40, density=0.2, format="csr", random_state=2, dtype=np.float32)
    lists = [np.array([3, 7, 3]), np.array([], np.int64), np.array([39, 1, 55])]
    first = kept_row_sums(table, lists)
    np.testing.assert_array_equal(first, row_sums(table, lists))
    kept = table.__dict__["_kept_rows"]
    assert len(kept) == 3
    again = kept_row_sums(table, lists[::-1])                      # every row read from the kept ones
    np.testing.assert_array_equal(again, first[::-1])
    assert len(kept) == 3
    again[0] = -1.0                                                # a caller's copy: the kept row is unchanged
    np.testing.assert_array_equal(kept_row_sums(table, lists[2:]), first[2:])
    np.testing.assert_array_equal(kept_row_sums(table, lists, np.float64), row_sums(table, lists, np.float64))
    assert len(kept) == 6, "a row is kept per precision"

    owner, column = np.array([0, 0, 2, 2]), np.array([5, 39, 1, 41])
    for t in (table, table.astype(np.float64)):                    # kept pair sums keep the table's precision
        kept_sums = pair_sums(t, lists, owner, column, keep=True)
        assert kept_sums.dtype == t.dtype
        np.testing.assert_array_equal(kept_sums, pair_sums(t, lists, owner, column))
    copied = pickle.loads(pickle.dumps(table))                     # a pickled table starts with no kept rows
    assert len(copied.__dict__["_kept_rows"]) == 0 and (copied != table).nnz == 0

    monkeypatch.setattr(covisit, "KEPT_BYTES", 3 * 40 * 4)         # room for three float32 rows
    many = [np.array([i]) for i in range(10)]
    kept_row_sums(table, many)
    assert kept.total <= covisit.KEPT_BYTES and len(kept) <= 3
    monkeypatch.setattr(covisit, "KEEP_LISTS_MAX", 4)
    fresh = sp.random(40, 40, density=0.2, format="csr", random_state=3, dtype=np.float32)
    np.testing.assert_array_equal(kept_row_sums(fresh, many), row_sums(fresh, many))
    assert "_kept_rows" not in fresh.__dict__, "a batch of many lists keeps nothing"
