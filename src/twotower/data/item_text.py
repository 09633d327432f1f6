"""Each item's search text: what its text-like columns say (title, brand, category path, genres, ...) and,
where the log has a `query` column, the searches that led to a positive event on it. Lexical and dense
search both read this one text."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import SearchConfig
from .features import FeatureSpec

TEXT_KINDS = ("text", "categorical", "multi")
MAX_QUERIES = 20              # an item's most frequent click queries kept in its text


def item_texts(items: pd.DataFrame | None, item_ids: np.ndarray, specs: list[FeatureSpec], events: pd.DataFrame,
               cfg: SearchConfig, separator: str = "|") -> np.ndarray:
    """[n_items + 1] one text per item code (row 0, padding, is empty): the chosen columns' values, then the
    item's click queries. `events` has item codes (`item`), `weight` and, optionally, `query`."""
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
    if cfg.click_queries and "query" in events.columns:
        clicked = events[(events["weight"] > 0) & events["query"].notna()]
        if len(clicked):
            queries = clicked["query"].astype(str).str.strip()
            counts = pd.DataFrame({"item": clicked["item"].to_numpy(), "query": queries.to_numpy()})
            counts = counts[counts["query"] != ""].value_counts(sort=True)
            for (code, query), _ in counts.groupby(level=0, sort=False).head(MAX_QUERIES).items():
                texts[int(code)].append(query)
    return np.array([" . ".join(parts) for parts in texts], dtype=object)
