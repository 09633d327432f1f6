"""New items (no history) keep the towers' place in a ranked list: the ranker has never seen such an item
chosen, so it does not judge it, and the others take the ranker's order around it."""

from __future__ import annotations

import numpy as np

from twotower.index.base import SearchResult
from twotower.serving import keep_new_in_place


def lists(rows: list[list], scores: list[list]) -> SearchResult:
    return SearchResult(np.array(rows, dtype=object), np.array(scores, dtype=np.float64))


def test_a_new_item_keeps_its_retrieved_place_and_the_ranker_orders_the_rest():
    retrieved = lists([["a", "NEW1", "b", "c", "NEW2"], ["a", "b", "c", "d", "e"]], [[5, 4, 3, 2, 1]] * 2)
    ranked = lists([["c", "b", "a", "NEW1", "d", "e"], ["e", "d", "c", "b", "a", None]],
                   [[0.9, 0.8, 0.7, 0.1, 0.05, 0.01], [0.9, 0.8, 0.7, 0.6, 0.5, -np.inf]])
    out = keep_new_in_place(ranked, retrieved, lambda ids: np.char.startswith(ids.astype(str), "NEW"), k=5)
    assert out.ids[0].tolist() == ["c", "NEW1", "b", "a", "NEW2"]           # NEW1 not listed twice
    assert out.scores[0].tolist() == [0.9, 0.9, 0.8, 0.7, 0.7]             # never rising down the list
    assert out.ids[1].tolist() == ["e", "d", "c", "b", "a"], "a list with no new item is the ranker's"
    assert out.scores[1].tolist() == [0.9, 0.8, 0.7, 0.6, 0.5]


def test_a_new_item_first_takes_the_rankers_best_score_and_short_lists_pad_with_none():
    retrieved = lists([["NEW", "a", None]], [[3, 2, -np.inf]])
    ranked = lists([["a", None, None]], [[0.4, -np.inf, -np.inf]])
    out = keep_new_in_place(ranked, retrieved, lambda ids: np.char.startswith(ids.astype(str), "NEW"), k=3)
    assert out.ids[0].tolist() == ["NEW", "a", None]
    assert out.scores[0].tolist() == [0.4, 0.4, -np.inf]
