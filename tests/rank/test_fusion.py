"""The learned fusion of search lists: it learns which list to trust from the searches it sees, places an item a
list lacks below that list's last entry, and reads back from its saved form with the same order."""

from __future__ import annotations

import numpy as np
import pytest

from twotower.rank.fusion import MIN_POSITIVES, PER_LIST, LearnedFusion, list_features


def searches(n: int, trusted: str, seed: int) -> tuple[list[dict], list[str]]:
    """n searches over 50 items with a 'text' and a 'personal' list of 20 each: the target tops the trusted
    list and sits at a random place in the other; the two lists' scores look alike."""
    rng = np.random.default_rng(seed)
    found, targets = [], []
    for _ in range(n):
        items = np.array([f"i{j}" for j in rng.permutation(50)], dtype=object)
        target = items[0]
        lists = {}
        for name in ("text", "personal"):
            if name == trusted:
                ids = np.concatenate([[target], items[1:20]])
            else:
                ids = np.delete(items[:20], 0)
                ids = np.insert(ids, int(rng.integers(0, 19)), target)
            lists[name] = (ids.astype(object), np.sort(rng.uniform(0.2, 0.9, 20))[::-1])
        found.append(lists)
        targets.append(target)
    return found, targets


@pytest.mark.parametrize("trusted", ["text", "personal"])
def test_it_learns_which_list_to_trust(trusted):
    found, targets = searches(60, trusted, seed=1)
    fusion = LearnedFusion.fit(found, targets, ("text", "personal"))
    new, wanted = searches(40, trusted, seed=2)
    first = [fusion.rank(lists)[0][0] for lists in new]
    assert np.mean([f == t for f, t in zip(first, wanted)]) > 0.9
    other = LearnedFusion.fit(*searches(60, "personal" if trusted == "text" else "text", seed=1), ("text", "personal"))
    assert np.mean([other.rank(lists)[0][0] == t for lists, t in zip(new, wanted)]) < 0.5, \
        "fitted on the other list's searches, it trusts the other list"


def test_an_item_a_list_lacks_ranks_below_its_last_entry():
    found = {"text": (np.array(["a", "b"], object), np.array([0.9, 0.3])),
             "bm25": (np.array(["c"], object), np.array([4.0]))}
    items, x = list_features(found, ("text", "bm25"))
    assert items.tolist() == ["a", "b", "c"]
    text = {f: x[:, i] for i, f in enumerate(PER_LIST)}
    assert text["held"].tolist() == [1, 1, 0] and text["reciprocal rank"].tolist() == [1, 0.5, 0]
    assert text["score"].tolist() == [0.9, 0.3, 0.3]            # c: no better than the list's last
    assert text["score below the list's best"][2] == text["score below the list's best"][1] < 0


def test_too_few_findable_targets_learn_nothing():
    found, targets = searches(MIN_POSITIVES - 1, "text", seed=3)
    assert LearnedFusion.fit(found, targets, ("text", "personal")) is None
    missing = ["never-listed"] * 40
    assert LearnedFusion.fit(searches(40, "text", seed=3)[0], missing, ("text", "personal")) is None


def test_the_saved_form_ranks_the_same():
    found, targets = searches(40, "personal", seed=4)
    fusion = LearnedFusion.fit(found, targets, ("text", "personal"))
    again = LearnedFusion.from_dict(fusion.to_dict())
    for lists in searches(5, "personal", seed=5)[0]:
        assert fusion.rank(lists)[0].tolist() == again.rank(lists)[0].tolist()
    assert fusion.positives == 40 and set(fusion.to_dict()["weights"]) >= {"personal: reciprocal rank"}
