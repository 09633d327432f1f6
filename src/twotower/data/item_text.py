"""Each item's search text: what its text-like columns say (title, brand, category path, genres, ...) and,
where the log has a `query` column, the searches that led to a positive event on it. Lexical and dense
search both read this one text."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import SearchConfig
from .features import FeatureSpec, encode

TEXT_KINDS = ("text", "categorical", "multi")
MAX_QUERIES = 20              # an item's most frequent click queries kept in its text
LABEL_NAMES = ("title", "name", "product_name", "product_title", "item_name", "label")   # what people call an item


def item_texts(items: pd.DataFrame | None, item_ids: np.ndarray, specs: list[FeatureSpec], cfg: SearchConfig,
               separator: str = "|") -> np.ndarray:
    """[n_items + 1] what each item code's chosen columns say (row 0, padding, is empty)."""
    texts = [[] for _ in range(len(item_ids) + 1)]
    if items is not None:
        kinds = {s.name: s.kind for s in specs}
        columns = cfg.text_columns if cfg.text_columns is not None else \
            [c for c in items.columns if c != "item_id" and kinds.get(c) in TEXT_KINDS]
        aligned = items.set_index("item_id").reindex(pd.Index(np.asarray(item_ids).astype(str)))
        for column in columns:
            if column not in aligned.columns:
                continue
            values = aligned[column].to_numpy(dtype=object)
            for code, value in enumerate(values, start=1):
                if isinstance(value, str) and value.strip():
                    texts[code].append(value.replace(separator, " ") if kinds.get(column) == "multi" else value)
    return np.array([" . ".join(parts) for parts in texts], dtype=object)


TEXT_VECTOR = "text_vector"    # the item feature `model.text_vectors` adds: the sentence encoder's view of its text
TEXT_NGRAMS = "text_ngrams"    # ... or, with model.text_encoder = "ngram", its hashed words and 3-grams
TOWER_TEXT = (TEXT_VECTOR, TEXT_NGRAMS)


def tower_text_feature(texts, text_encoder: str, buckets: int,
                       show_progress: bool = False) -> tuple[FeatureSpec, np.ndarray]:
    """(spec, one row per text) of the towers' text input: the frozen sentence encoder's vectors ("minilm"),
    or hashed words and character 3-grams for the small trainable encoder ("ngram")."""
    if text_encoder == "ngram":
        spec = FeatureSpec(TEXT_NGRAMS, "ngrams", buckets=buckets)
        return spec, encode({TEXT_NGRAMS: pd.Series(list(texts), dtype=object)}, [spec])[TEXT_NGRAMS]
    vectors = text_vectors(texts, text_encoder, show_progress)
    return text_vector_spec(vectors), vectors


def text_vector_spec(vectors: np.ndarray) -> FeatureSpec:
    """The spec of the text-vector feature (the encoder's vectors are unit length: no rescaling)."""
    return FeatureSpec(TEXT_VECTOR, "vector", std=1.0, width=int(vectors.shape[1]))


def text_vectors(texts, encoder_name: str, show_progress: bool = False) -> np.ndarray:
    """[n, width] float32 sentence vectors of the texts (empty text: zeros)."""
    from ..model.text_encoder import text_encoder

    texts = [str(t) if isinstance(t, str) else "" for t in texts]
    encoder = text_encoder(encoder_name)
    present = [i for i, t in enumerate(texts) if t.strip()]
    found = encoder.encode([texts[i] for i in present], show_progress=show_progress) if present else None
    width = found.shape[1] if found is not None else encoder.encode(["x"]).shape[1]
    out = np.zeros((len(texts), width), np.float32)
    if found is not None:
        out[present] = found
    return out


def label_column(items: pd.DataFrame, specs: list[FeatureSpec]) -> str | None:
    """The items table's column that names an item for a person: a title/name column, else its first text
    column, else none (the id is then the name)."""
    by_name = {str(c).lower(): c for c in items.columns if c != "item_id"}
    for name in LABEL_NAMES:
        if name in by_name:
            return by_name[name]
    return next((s.name for s in specs if s.kind == "text" and s.name in items.columns), None)


def item_labels(items: pd.DataFrame | None, item_ids: np.ndarray, specs: list[FeatureSpec]) -> np.ndarray | None:
    """[n_items + 1] each item code's name for people (None where the table has none), or None without one."""
    column = label_column(items, specs) if items is not None else None
    if column is None:
        return None
    values = items.drop_duplicates("item_id").set_index("item_id")[column]
    aligned = values.reindex(pd.Index(np.asarray(item_ids).astype(str))).to_numpy(dtype=object)
    return np.concatenate([[None], [v if isinstance(v, str) and v.strip() else None for v in aligned]]).astype(object)


def with_click_queries(texts: np.ndarray, events: pd.DataFrame, cfg: SearchConfig) -> np.ndarray:
    """The texts ([n_items + 1], by item code) followed by each item's most frequent queries among `events`
    (item codes, `weight`, optionally `query`) that led to a positive event on it."""
    if not cfg.click_queries or "query" not in events.columns:
        return texts
    clicked = events[(events["weight"] > 0) & events["query"].notna() & (events["item"] > 0)]
    if not len(clicked):
        return texts
    counts = pd.DataFrame({"item": clicked["item"].to_numpy(),
                           "query": clicked["query"].astype(str).str.strip().to_numpy()})
    counts = counts[counts["query"] != ""].value_counts(sort=True)
    out = [[t] if t else [] for t in texts]
    for (code, query), _ in counts.groupby(level=0, sort=False).head(MAX_QUERIES).items():
        out[int(code)].append(query)
    return np.array([" . ".join(parts) for parts in out], dtype=object)
