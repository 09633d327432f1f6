"""The user's affinity to a candidate's categories: shares of the user's latest items with its values."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.conftest import tiny_config
from twotower.pipeline import dataset_from_frames
from twotower.rank.affinity import category_affinity, category_features


def test_affinity_is_the_share_of_recent_items_with_the_candidates_values():
    events = pd.DataFrame({"user_id": ["u"] * 4 + ["v"] * 3, "item_id": ["a", "b", "c", "d", "a", "b", "c"],
                           "timestamp": [1, 2, 3, 4, 1, 2, 3]})
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "genres": ["x|y", "x", "y", "z|x"],
                          "shop": ["s1", "s1", "s2", "s2"]})
    data = dataset_from_frames(events, items, None, tiny_config(data={"feature_kinds": {"genres": "multi",
                                                                                        "shop": "categorical"}}))
    assert set(category_features(data)) == {"genres", "shop"}
    code = dict(zip(data.items.ids, range(1, 5)))
    profile = [np.array([code["a"], code["b"], code["c"]]), np.array([], dtype=np.int64)]
    got = category_affinity(data, ["genres", "shop"], profile, np.array([0, 0, 1]),
                            np.array([code["d"], code["c"], code["d"]]))
    # d has genres z (0 of 3 recent items) and x (a, b: 2 of 3) -> mean 1/3; shop s2: only c -> 1/3
    np.testing.assert_allclose(got["affinity_genres"], [1 / 3, 2 / 3, 0.0])   # c: y is in a and c
    np.testing.assert_allclose(got["affinity_shop"], [1 / 3, 1 / 3, 0.0])
