"""The small trainable text encoder's input: hashed words and character 3-grams."""

from __future__ import annotations

import pandas as pd

from twotower.data.features import FeatureSpec, encode, hash_ngrams


def test_forms_of_a_word_share_most_of_their_ngrams_and_hashes_are_stable():
    shoe, shoes = set(hash_ngrams("Shoe", 1 << 20)), set(hash_ngrams("shoes", 1 << 20))
    assert len(shoe & shoes) >= 3 and len(shoe) == 5                  # #shoe, <sh, sho, hoe, oe>
    assert hash_ngrams("red shoes", 1 << 20) == hash_ngrams("RED  shoes!", 1 << 20)
    assert hash_ngrams("red shoes", 1 << 20)[:2] == [hash_ngrams("red", 1 << 20)[0], hash_ngrams("shoes", 1 << 20)[0]]
    assert all(1 <= h <= 64 for h in hash_ngrams("a long text of many words", 64))
    assert hash_ngrams("", 64) == []


def test_the_ngrams_kind_encodes_a_padded_row_per_text():
    spec = FeatureSpec("q", "ngrams", buckets=1 << 15)
    rows = encode({"q": pd.Series(["ipad case", None, "tv"], dtype=object)}, [spec])["q"]
    assert rows.shape[0] == 3 and rows.dtype.kind == "i"
    assert (rows[0] > 0).sum() == len(hash_ngrams("ipad case", 1 << 15)) and not rows[1].any()
    assert spec.cardinality == (1 << 15) + 1
