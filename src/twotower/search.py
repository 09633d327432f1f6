"""Search: a query's text against each item's text, two ways, fused. The pretrained encoder (`text_encoder`)
finds items whose text means what the query means; BM25 (`index.lexical`) finds items that share its words
(brands, model numbers, titles). Each gives its top N; reciprocal rank fusion merges the two lists, and for a
user with history the towers' order of the same candidates joins the fusion, so two users asking the same
thing see their own order of the same matches.

Saved in the model folder (`search/`): the item ids, their text, their text vectors and the BM25 index."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .config import SearchConfig
from .errors import InputError, read_stored
from .index.lexical import LexicalIndex
from .model.text_encoder import TextEncoder, text_encoder, text_key

SEARCH_DIR = "search"
LISTS = ("text", "bm25", "personal")


@dataclass
class SearchBuild:
    items: int
    encoder: str
    seconds: float
    texts_per_second: float


@dataclass
class SearchIndex:
    """The catalog's text, searchable by meaning (unit vectors, exact inner product) and by words (BM25)."""

    ids: np.ndarray               # [n] item ids
    texts: np.ndarray             # [n] their search text
    vectors: np.ndarray           # [n, dim] unit text vectors
    lexical: LexicalIndex
    encoder: TextEncoder

    @classmethod
    def build(cls, ids, texts, encoder: TextEncoder, show_progress: bool = False) -> "SearchIndex":
        """Index the items that have text (the others cannot be found by search)."""
        ids, texts = np.asarray(ids, dtype=object), np.asarray(texts, dtype=object)
        keep = np.array([isinstance(t, str) and bool(t.strip()) for t in texts], dtype=bool)
        ids, texts = ids[keep], texts[keep]
        if not len(ids):
            raise InputError("items", "no item has any text to search",
                             "give the items table a text column (title, description, brand, ...) or a log with "
                             "a query column, or set search.encoder = \"none\"")
        vectors = encoder.encode(list(texts), show_progress=show_progress)
        return cls(ids, texts, vectors, LexicalIndex.build(list(ids), list(texts)), encoder)

    def text_of(self, ids) -> list[str]:
        """The search text of each item id ('' for one without)."""
        text = dict(zip(self.ids, self.texts))
        return [text.get(str(i), "") for i in ids]

    def text_hits(self, query_vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosine) of the n items whose text vectors are nearest the query's."""
        scores = self.vectors @ query_vector
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return self.ids[top], scores[top].astype(np.float64)

    def save(self, model_dir: Path) -> Path:
        folder = Path(model_dir) / SEARCH_DIR
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            pd.DataFrame({"item_id": self.ids.astype(str), "text": self.texts.astype(str)}).to_parquet(tmp / "items.parquet")
            np.save(tmp / "text_vectors.npy", self.vectors)
            self.lexical.save(tmp / "lexical")
            (tmp / "search.json").write_text(json.dumps({"encoder": self.encoder.name, "dim": int(self.vectors.shape[1]),
                                                         "items": len(self.ids)}))
        return folder

    @classmethod
    def load(cls, model_dir: Path) -> "SearchIndex | None":
        """The model's search index, or None for a model built without one."""
        folder = Path(model_dir) / SEARCH_DIR
        if not folder.is_dir():
            return None
        return read_stored(folder, cls._read, fix="rebuild it: retrain the model, or set search.encoder = \"none\"")

    @classmethod
    def _read(cls, folder: Path) -> "SearchIndex":
        meta = json.loads((folder / "search.json").read_text())
        table = pd.read_parquet(folder / "items.parquet")
        ids = table["item_id"].astype(str).to_numpy(dtype=object)
        texts = table["text"].astype(str).to_numpy(dtype=object)
        vectors = np.load(folder / "text_vectors.npy")
        encoder = text_encoder(meta["encoder"])
        encoder.cache.update(zip((text_key(t) for t in texts), vectors))     # texts already encoded stay so
        return cls(ids, texts, vectors, LexicalIndex.load(folder / "lexical"), encoder)


def search_index_from_table(model_dir: Path, items: pd.DataFrame, show_progress: bool = False) -> SearchBuild:
    """(Re)build a trained model's search index from an items table (the training one, or one with more items
    or more text): each item's text as at training, with the click queries of the model's history."""
    from .data.item_text import item_texts
    from .model.artifact import load_model

    saved = load_model(model_dir)
    cfg = saved.config.search if saved.config.search.encoder != "none" else \
        saved.config.search.model_copy(update={"encoder": "minilm"})
    vocab = saved.history.items.ids.astype(str)
    ids = np.concatenate([vocab, items.loc[~items["item_id"].isin(set(vocab)), "item_id"].to_numpy(dtype=object)])
    history = saved.history.events
    texts = item_texts(items, ids, saved.history.item_specs, history, cfg, saved.config.data.multi_separator)
    return build_search_index(model_dir, ids, texts[1:], cfg, show_progress)


def build_search_index(model_dir: Path, ids, texts, cfg: SearchConfig, show_progress: bool = False) -> SearchBuild:
    """Encode and index the items' texts into `model_dir/search`."""
    t0 = time.perf_counter()
    encoder = text_encoder(cfg.encoder)
    index = SearchIndex.build(ids, texts, encoder, show_progress)
    index.save(model_dir)
    return SearchBuild(len(index.ids), cfg.encoder, time.perf_counter() - t0, getattr(encoder, "last_rate", 0.0))


def fuse(lists: dict[str, np.ndarray], weights: dict[str, float], rrf_k: float) -> pd.DataFrame:
    """Reciprocal rank fusion: each item scores sum(weight / (rrf_k + rank)) over the lists that hold it;
    `item_id, score` and each list's rank (NaN where it does not hold the item), best first."""
    ranks: dict[str, pd.Series] = {}
    for name, ids in lists.items():
        ranks[name] = pd.Series(np.arange(1, len(ids) + 1, dtype=np.float64), index=pd.Index(ids, dtype=object))
    table = pd.DataFrame({f"{name}_rank": r for name, r in ranks.items()})
    score = np.zeros(len(table))
    for name in ranks:
        r = table[f"{name}_rank"].to_numpy()
        score += np.where(np.isnan(r), 0.0, weights.get(name, 1.0) / (rrf_k + np.nan_to_num(r, nan=0.0)))
    table.insert(0, "score", score)
    table.index.name = "item_id"
    return table.reset_index().sort_values("score", ascending=False, kind="stable", ignore_index=True)


def search(index: SearchIndex, query: str, k: int, cfg: SearchConfig,
           personal: Callable[[np.ndarray], np.ndarray] | None = None, allowed: Callable[[np.ndarray], np.ndarray] | None = None) -> pd.DataFrame:
    """`item_id, rank, score, text_rank, bm25_rank, personal_rank` of the query's top k. `personal(ids)` gives
    the towers' score of the user with each candidate (None: no user history); `allowed(ids)` keeps the
    items the catalog serves now."""
    if not isinstance(query, str) or not query.strip():
        raise InputError("query", "is empty", "give the words to search for")
    n = max(k, cfg.candidates)
    text_ids, _ = index.text_hits(index.encoder.encode([query])[0], n)
    bm25_ids, _ = index.lexical.search(query, n)
    if allowed is not None:
        text_ids, bm25_ids = text_ids[allowed(text_ids)], bm25_ids[allowed(bm25_ids)]
    lists = {"text": text_ids, "bm25": bm25_ids}
    weights = {"text": 1.0, "bm25": 1.0}
    if personal is not None and cfg.personal_weight > 0:
        union = pd.unique(np.concatenate([text_ids, bm25_ids]))
        order = np.argsort(-personal(union), kind="stable")
        lists["personal"], weights["personal"] = union[order], cfg.personal_weight
    table = fuse(lists, weights, cfg.rrf_k).head(k)
    for name in LISTS:
        if f"{name}_rank" not in table.columns:
            table[f"{name}_rank"] = np.nan
    table.insert(1, "rank", np.arange(1, len(table) + 1, dtype=np.int64))
    return table[["item_id", "rank", "score", "text_rank", "bm25_rank", "personal_rank"]]
