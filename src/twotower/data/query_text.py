"""The search text of each event as a request-context feature of the query tower: the query through the
pretrained sentence encoder (frozen; the tower trains a projection of it), so one model serves
recommendation (no query: zeros) and search (the query's vector), and a query log teaches it which items
each kind of query leads to."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .features import FeatureSpec
from .item_text import text_vectors

QUERY_TEXT = "query_text"


def query_text_feature(queries: pd.Series, encoder_name: str) -> tuple[FeatureSpec, np.ndarray] | None:
    """(its spec, [n, width] float16 vectors, zeros where an event has no query) of each event's query, each
    distinct query encoded once; None when no event has one."""
    text = queries.fillna("").astype(str).str.strip().to_numpy(dtype=object)
    asked = text != ""
    if not asked.any():
        return None
    distinct = pd.unique(text[asked])
    vectors = text_vectors(list(distinct), encoder_name)
    out = np.zeros((len(text), vectors.shape[1]), np.float16)
    out[asked] = vectors[pd.Index(distinct).get_indexer(text[asked])]
    return query_text_spec(vectors.shape[1]), out


def query_text_spec(width: int) -> FeatureSpec:
    """The spec of the query-text feature (the encoder's vectors are unit length: no rescaling)."""
    return FeatureSpec(QUERY_TEXT, "vector", std=1.0, width=int(width))


def request_query(specs: list[FeatureSpec], n: int, vector: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The query-text feature of `n` requests: `vector` (one query's [width], or each request's [n, width],
    for search) or zeros (recommendation); {} for a model that reads no query text."""
    spec = next((s for s in specs if s.name == QUERY_TEXT), None)
    if spec is None:
        return {}
    if vector is None:
        return {QUERY_TEXT: np.zeros((n, spec.width), np.float32)}
    vector = np.asarray(vector, np.float32)
    return {QUERY_TEXT: np.broadcast_to(vector.reshape(-1, spec.width), (n, spec.width)).copy()}
