"""The search text of each event as a request-context feature of the query tower: the query through the
towers' text encoder (the pretrained sentence encoder, frozen, with a trained projection; or the small
trainable n-gram encoder the item tower shares), so one model serves recommendation (no query: zeros)
and search (the query's text), and a query log teaches it which items each kind of query leads to."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..model.text_encoder import MINILM
from .features import FeatureSpec
from .item_text import tower_text_feature

QUERY_TEXT = "query_text"


def query_text_feature(queries: pd.Series, text_encoder: str, buckets: int) -> tuple[FeatureSpec, np.ndarray] | None:
    """(its spec, one row per event: the query's sentence vector (float16) or its hashed n-grams, zeros where
    an event has no query) of each event's query, each distinct query encoded once; None when no event has
    one."""
    text = queries.fillna("").astype(str).str.strip().to_numpy(dtype=object)
    asked = text != ""
    if not asked.any():
        return None
    distinct = pd.unique(text[asked])
    spec, rows = query_spec_and_rows(list(distinct), text_encoder, buckets)
    out = np.zeros((len(text), rows.shape[1]), np.float16 if spec.kind == "vector" else rows.dtype)
    out[asked] = rows[pd.Index(distinct).get_indexer(text[asked])]
    return spec, out


def query_spec_and_rows(texts: list[str], text_encoder: str, buckets: int) -> tuple[FeatureSpec, np.ndarray]:
    """The query-text spec and the rows of `texts` (the item tower's text input, under the query's name)."""
    spec, rows = tower_text_feature(texts, text_encoder, buckets)
    return FeatureSpec(QUERY_TEXT, spec.kind, std=spec.std, buckets=spec.buckets, width=spec.width), rows


def as_recommendations(context: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Request context with the search text blanked: held-out events scored as recommendations (the
    protocol's test, the ranker's slice: `/recommend` never has a query), whatever their logged query."""
    if QUERY_TEXT not in context:
        return context
    return {**context, QUERY_TEXT: np.zeros_like(context[QUERY_TEXT])}


def request_query(specs: list[FeatureSpec], n: int, query: str | list[str] | None = None) -> dict[str, np.ndarray]:
    """The query-text feature of `n` requests: the search text (one for all, or one per request) encoded as
    the model was trained, or zeros (a recommendation); {} for a model that reads no query text."""
    spec = next((s for s in specs if s.name == QUERY_TEXT), None)
    if spec is None:
        return {}
    if query is None:
        return {QUERY_TEXT: np.zeros((n, spec.width or 1), np.float32 if spec.kind == "vector" else np.int64)}
    texts = [query] * n if isinstance(query, str) else list(query)
    _, rows = query_spec_and_rows(texts, MINILM if spec.kind == "vector" else "ngram", spec.buckets)
    return {QUERY_TEXT: rows.astype(np.float32) if spec.kind == "vector" else rows}
