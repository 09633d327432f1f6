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


def test_vector_columns_are_projected_features_scaled_by_their_mean_norm():
    import pytest

    from twotower.errors import InputError

    df = pd.DataFrame({"item_id": ["a", "b", "c"], "image": [np.full(4, 2.0), None, [0.0, 0.0, 0.0, 2.0]]})
    assert infer_kind(df["image"]) == "vector"
    (spec,) = fit_specs(df, ["image"], {})
    assert spec.kind == "vector" and spec.width == 4 and spec.std == 3.0        # norms 4 and 2
    out = encode(df, [spec])["image"]
    assert out.dtype == np.float32 and out.shape == (3, 4)
    assert np.allclose(out[0], 2 / 3) and not out[1].any() and np.allclose(out[2], [0, 0, 0, 2 / 3])
    ragged = pd.DataFrame({"image": [[1.0, 2.0], [1.0, 2.0, 3.0]]})
    with pytest.raises(InputError, match="lengths"):
        fit_specs(ragged, ["image"], {})


def test_a_npy_beside_the_items_table_becomes_a_vector_column(tmp_path):
    import pytest

    from twotower.data.schema import read_items
    from twotower.errors import InputError

    pd.DataFrame({"item_id": ["x1", "x2"], "genre": ["a", "b"]}).to_csv(tmp_path / "items.csv", index=False)
    np.save(tmp_path / "items.image.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    table = read_items(tmp_path / "items.csv")
    assert list(table["item_id"]) == ["x1", "x2"] and np.array_equal(table["image"][1], [3, 4, 5])
    np.save(tmp_path / "items.image.npy", np.zeros((3, 3)))
    with pytest.raises(InputError, match="one row per item"):
        read_items(tmp_path / "items.csv")
