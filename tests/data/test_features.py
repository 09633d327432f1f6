import numpy as np
import pandas as pd

from twotower.data.features import encode, fit_specs, hash_tokens, infer_kind


def test_kinds_are_inferred_from_real_movielens_items(ml100k):
    _, items, users = ml100k
    kinds = {c: infer_kind(items[c]) for c in ("title", "release_date", "genres")}
    assert kinds == {"title": "text", "release_date": "numeric", "genres": "multi"}
    assert infer_kind(users["occupation"]) == "categorical"
    assert infer_kind(users["age"]) == "numeric"


def test_near_unique_codes_are_ignored_and_overrides_win():
    urls = pd.Series([f"http://x/{i}" for i in range(200)])
    assert infer_kind(urls) == "ignore"
    specs = fit_specs(pd.DataFrame({"u": urls}), ["u"], {"u": "categorical"})
    assert specs[0].kind == "categorical" and len(specs[0].vocab) == 200


def test_encoding_handles_unseen_and_missing_values():
    train = pd.DataFrame({"c": ["a", "b", None], "m": ["x|y", "y", None], "n": [1.0, 3.0, None], "t": ["red shoe", "blue hat", ""]})
    specs = fit_specs(train, list(train.columns), {"t": "text"})
    new = pd.DataFrame({"c": ["b", "zzz"], "m": ["y|new", None], "n": [2.0, None], "t": ["red hat", None]})
    enc = encode(new, specs)
    assert enc["c"].tolist() == [2, 0]                      # unseen category -> 0
    assert enc["m"][0].tolist()[:2] == [2, 0] and enc["m"][1].sum() == 0
    np.testing.assert_allclose(enc["n"], [0.0, 0.0])        # the mean, and missing -> mean
    assert enc["t"][0][:2].tolist() == hash_tokens("red hat", specs[3].buckets)
    assert (enc["t"][1] == 0).all()
