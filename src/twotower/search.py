"""Search: a query's text against each item's text, two ways, and the towers' own answer, fused. The
pretrained encoder (`text_encoder`; none with search.encoder = "lexical") finds items whose text means what
the query means; BM25
(`index.lexical`) finds items that share its words (brands, model numbers, titles). A model trained on a
log with queries reads the query in its query tower and gives its own top N (for anyone; in a user's
order for a user with history); other models give the towers' scores of the text matches for a user with
history. A logistic model fitted on the log's latest searches (`rank.fusion`) merges them, or, without
enough searches to learn from, a convex combination of the lists' normalised scores (or reciprocal rank
fusion), so two users asking the same thing see their own order.

Saved in the model folder (`search/`): the item ids, their text, their text vectors (unless lexical), the BM25
index and the learned fusions."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
import pandas as pd

from .atomic import atomic_path
from .config import SearchConfig
from .errors import InputError, read_stored
from .index.faiss_index import read_index
from .index.lexical import LexicalIndex
from .model.text_encoder import TextEncoder, text_encoder, text_key
from .rank.fusion import Hits, LearnedFusion, union_of

SEARCH_DIR = "search"
LEXICAL = "lexical"                        # search.encoder: BM25 (and the towers' list) without text vectors
LISTS = ("text", "bm25", "personal")


EQUAL = {"text": 1.0, "bm25": 1.0}
EXACT_TEXT_ITEMS = 50_000                  # text vectors searched exactly up to this many items, HNSW above
MIN_HELD_OUT = 30                          # held-out searches needed to learn the fusion
ENOUGH_HELD_OUT = 200                      # ... held out even past a tenth of the log, up to a quarter of it
MAX_HELD_OUT = 2_000                       # ... and the most it is fitted on


@dataclass
class SearchBuild:
    items: int
    encoder: str
    seconds: float
    texts_per_second: float
    fusions: tuple = ()
    fusion: dict = field(default_factory=dict)     # what learning the fusion saw


@dataclass
class SearchIndex:
    """The catalog's text, searchable by meaning (unit vectors, exact inner product) and by words (BM25)."""

    ids: np.ndarray               # [n] item ids
    texts: np.ndarray             # [n] their search text
    vectors: np.ndarray           # [n, dim] unit text vectors
    lexical: LexicalIndex
    encoder: TextEncoder | None   # None (search.encoder = "lexical"): no text vectors, no text list
    weights: dict = field(default_factory=lambda: dict(EQUAL))   # each list's weight in a convex fusion
    nearest: object = None        # FAISS over `vectors`: exact up to EXACT_TEXT_ITEMS, HNSW above
    fusions: tuple[LearnedFusion, ...] = ()                      # learned on the log's searches, if it had them

    def __post_init__(self):
        if self.nearest is None and self.encoder is not None:
            self.nearest = _nearest_index(self.vectors)

    @classmethod
    def build(cls, ids, texts, encoder: TextEncoder | None, show_progress: bool = False) -> "SearchIndex":
        """Index the items that have text (the others cannot be found by search): by words, and with an
        encoder by meaning."""
        ids, texts = np.asarray(ids, dtype=object), np.asarray(texts, dtype=object)
        keep = np.array([isinstance(t, str) and bool(t.strip()) for t in texts], dtype=bool)
        ids, texts = ids[keep], texts[keep]
        if not len(ids):
            raise InputError("items", "no item has any text to search",
                             "give the items table a text column (title, description, brand, ...) or a log with "
                             "a query column, or set search.encoder = \"none\"")
        vectors = encoder.encode(list(texts), show_progress=show_progress) if encoder is not None \
            else np.zeros((len(ids), 0), np.float32)
        return cls(ids, texts, vectors, LexicalIndex.build(list(ids), list(texts)), encoder)

    def lists(self, query: str, n: int, query_vector: np.ndarray | None = None) -> dict[str, Hits]:
        """The query's top n by words (`bm25`) and, with an encoder, by meaning (`text`; `query_vector` when
        the caller encoded it already)."""
        found = {"bm25": self.lexical.search(query, n)}
        if self.encoder is not None:
            vector = self.encoder.encode([query])[0] if query_vector is None else query_vector
            found = {"text": self.text_hits(vector, n)} | found
        return found

    def text_of(self, ids) -> list[str]:
        """The search text of each item id ('' for one without)."""
        text = dict(zip(self.ids, self.texts))
        return [text.get(str(i), "") for i in ids]

    def text_hits(self, query_vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosine) of the n items whose text vectors are nearest the query's."""
        scores, rows = self.nearest.search(np.asarray(query_vector, np.float32).reshape(1, -1), min(n, len(self.ids)))
        found = rows[0] >= 0
        return self.ids[rows[0][found]], scores[0][found].astype(np.float64)

    def fuse(self, lists: dict[str, Hits], cfg: SearchConfig) -> pd.DataFrame:
        """The lists merged, best first: `item_id, score` and each list's rank. With `fusion = "learned"`, by
        the learned fusion of the most lists it covers (a list it did not learn with, such as a user's towers'
        scores where the log had no queries, joins its order by a convex fusion); else, or with nothing
        learned, by `fuse` with the index's weights."""
        lists = finite(lists)
        weights = {**self.weights, "personal": self.weights.get("personal", 1.0) * cfg.personal_weight}
        learned = max((f for f in self.fusions if set(f.lists) <= set(lists)), key=lambda f: len(f.lists),
                      default=None) if cfg.fusion == "learned" else None
        if learned is None:
            return ranked_table(*fused_order(lists, weights, cfg), lists)
        rest = {name: hits for name, hits in lists.items() if name not in learned.lists}
        order = learned.rank(lists)
        if rest:
            order = fused_order({"learned": order} | rest, weights | {"learned": 1.0}, cfg)
        return ranked_table(*order, lists)

    def save(self, model_dir: Path) -> Path:
        folder = Path(model_dir) / SEARCH_DIR
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            pd.DataFrame({"item_id": self.ids.astype(str), "text": self.texts.astype(str)}).to_parquet(tmp / "items.parquet")
            if self.encoder is not None:
                np.save(tmp / "text_vectors.npy", self.vectors)
                faiss.write_index(self.nearest, str(tmp / "text_vectors.faiss"))
            self.lexical.save(tmp / "lexical")
            (tmp / "search.json").write_text(json.dumps({"encoder": self.encoder.name if self.encoder else LEXICAL,
                                                         "dim": int(self.vectors.shape[1]),
                                                         "items": len(self.ids), "weights": self.weights,
                                                         "fusions": [f.to_dict() for f in self.fusions]}))
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
        fusions = tuple(LearnedFusion.from_dict(f) for f in meta.get("fusions", []))
        weights = meta.get("weights", dict(EQUAL))
        if meta["encoder"] == LEXICAL:
            return cls(ids, texts, np.zeros((len(ids), 0), np.float32), LexicalIndex.load(folder / "lexical"), None,
                       weights, None, fusions)
        vectors = np.load(folder / "text_vectors.npy")
        encoder = text_encoder(meta["encoder"])
        encoder.cache.update(zip((text_key(t) for t in texts), vectors))     # texts already encoded stay so
        return cls(ids, texts, vectors, LexicalIndex.load(folder / "lexical"), encoder, weights,
                   read_index(folder / "text_vectors.faiss"), fusions)     # never changed: mapped


def _nearest_index(vectors: np.ndarray):
    """Inner-product search over unit vectors: exact for a small catalog, HNSW (efSearch 128) above."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) <= EXACT_TEXT_ITEMS:
        index = faiss.IndexFlatIP(vectors.shape[1])
    else:
        index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
    index.add(vectors)
    return index


def refresh_search_index(model_dir: Path, items: pd.DataFrame, show_progress: bool = False) -> SearchIndex | None:
    """The model's search index with the rows of an items table added, or their text refreshed (only changed
    texts are encoded again), saved in place; None when the model has no search index. A refreshed item's
    text is its columns' until the next training gives it its click queries back (the model keeps no log
    text)."""
    from .data.item_text import item_texts
    from .model.artifact import load_model

    current = SearchIndex.load(model_dir)
    if current is None:
        return None
    saved = load_model(model_dir)
    ids = items["item_id"].astype(str).to_numpy(dtype=object)
    texts = item_texts(items.assign(item_id=ids), ids, saved.history.item_specs, saved.config.search,
                       saved.config.data.multi_separator)[1:]
    merged = dict(zip(current.ids, current.texts))
    merged.update(zip(ids, texts))
    index = SearchIndex.build(list(merged), list(merged.values()), current.encoder, show_progress)
    index.weights, index.fusions = current.weights, current.fusions
    index.save(model_dir)
    return index


TowersBefore = Callable[[float], "Callable[[list[str], np.ndarray, np.ndarray, int], list[Hits]] | None"]
"""cut time -> towers trained on the events before it, as (queries, user codes, times, n) -> each search's
top n (item ids, scores); None when those events cannot train towers."""


def build_search_index(model_dir: Path, ids, texts, cfg: SearchConfig, show_progress: bool = False,
                       learn_from: tuple[np.ndarray, pd.DataFrame] | None = None,
                       towers_before: TowersBefore | None = None) -> SearchBuild:
    """Encode and index the items' texts into `model_dir/search`. `learn_from` (the items' column texts by
    code, and the log's events with item codes) lets the fusion be learned on the log's latest searches
    (`learn_fusion`), the towers' list among them with `towers_before`."""
    t0 = time.perf_counter()
    encoder = text_encoder(cfg.encoder) if cfg.encoder != LEXICAL else None
    index = SearchIndex.build(ids, texts, encoder, show_progress)
    rate = getattr(encoder, "last_rate", 0.0)
    report = {}
    if learn_from is not None:
        index.fusions, report = learn_fusion(np.asarray(ids, dtype=object), *learn_from, cfg, encoder, towers_before)
    index.save(model_dir)
    return SearchBuild(len(index.ids), cfg.encoder, time.perf_counter() - t0, rate, index.fusions, report)


def learn_fusion(ids: np.ndarray, column_texts: np.ndarray, events: pd.DataFrame, cfg: SearchConfig,
                 encoder: TextEncoder | None, towers_before: TowersBefore | None = None) -> tuple[tuple, dict]:
    """Fusions learned on the log's latest searches: the latest tenth of the positive events with a query (at
    least `MIN_HELD_OUT`, else nothing is learned; up to `ENOUGH_HELD_OUT` of a small log's latest quarter, as a
    fit on fewer follows their noise; at most `MAX_HELD_OUT`) are held out, the items' texts are
    built from the earlier ones (and with `towers_before`, towers are trained on the events before the first
    of them), and each held-out search's lists (BM25, text vectors, the towers') with the item it led to fit a
    `LearnedFusion` of BM25 and text, and one with the towers' list too. Returns (fusions, what was seen:
    each list's and each fusion's recall@10 on the searches it was fitted on)."""
    from .data.item_text import with_click_queries

    if "query" not in events.columns:
        return (), {}
    searched = events[(events["weight"] > 0) & events["query"].notna() & (events["item"] > 0)]
    searched = searched[searched["query"].astype(str).str.strip() != ""].sort_values("timestamp", kind="stable")
    n = min(max(MIN_HELD_OUT, len(searched) // 10, min(ENOUGH_HELD_OUT, len(searched) // 4)), MAX_HELD_OUT)
    if len(searched) < 2 * n:
        return (), {"held_out": 0, "searches": int(len(searched))}
    held = searched.iloc[-n:]
    texts = with_click_queries(column_texts, events.drop(index=held.index), cfg)[1:]
    index = SearchIndex.build(ids, texts, encoder)
    queries = held["query"].astype(str).tolist()
    targets = ids[held["item"].to_numpy(np.int64) - 1]
    vectors = encoder.encode(queries) if encoder is not None else [None] * len(queries)
    found = [index.lists(q, cfg.candidates, v) for q, v in zip(queries, vectors)]
    towers = towers_before(float(held["timestamp"].min())) if towers_before is not None else None
    if towers is not None:
        for lists, hits in zip(found, towers(queries, held["user"].to_numpy(np.int64),
                                             held["timestamp"].to_numpy(np.float64), cfg.candidates)):
            lists["personal"] = hits
    found = [finite(lists) for lists in found]
    text = tuple(name for name in ("text", "bm25") if name in found[0])
    fusions = tuple(f for names in (text, text + ("personal",)) if names[-1] in found[0]
                    for f in [LearnedFusion.fit(found, list(targets), names)] if f is not None)

    def recall(rank) -> float:
        return round(float(np.mean([t in rank(lists)[0][:10] for lists, t in zip(found, targets)])), 4)

    seen = {name: recall(lambda lists, name=name: lists[name]) for name in found[0]}
    seen |= {"learned " + " + ".join(f.lists): recall(f.rank) for f in fusions}
    return fusions, {"held_out": n, "recall@10 on the held-out searches (fitted on them)": seen}


def finite(lists: dict[str, Hits]) -> dict[str, Hits]:
    """Each list without its entries that have no finite score (an item the towers cannot score)."""
    return {name: (np.asarray(ids, dtype=object)[ok], np.asarray(values, np.float64)[ok])
            for name, (ids, values) in lists.items() for ok in [np.isfinite(np.asarray(values, np.float64))]}


LOWEST = {"text": -1.0, "bm25": 0.0}       # each list's lowest possible score (cosine, BM25); else the list's


def fused_order(lists: dict[str, Hits], weights: dict[str, float], cfg: SearchConfig) -> Hits:
    """(items, scores) of the lists merged by fixed weights, best first: `rrf` scores an item by
    sum(weight / (rrf_k + rank)), which sees ranks only; otherwise (`convex`) by the weighted mean of its
    normalised scores, each list's score divided into [0, 1] between its lowest possible score and its best
    (0 where the list does not hold it), so a list's confident lead counts. (Bruch et al., "An analysis of
    fusion functions for hybrid retrieval", 2023.)"""
    every = union_of(lists, tuple(lists))
    position = {item: i for i, item in enumerate(every)}
    score = np.zeros(len(every))
    for name, (ids, values) in lists.items():
        at = np.fromiter((position[i] for i in ids), np.int64, len(ids))
        w = weights.get(name, 1.0)
        if cfg.fusion == "rrf":
            score[at] += w / (cfg.rrf_k + np.arange(1, len(ids) + 1))
        elif len(ids):
            low = LOWEST.get(name, float(values.min()))
            span = float(values.max()) - low          # 0: every entry ties for the list's best
            score[at] += w * (np.clip((values - low) / span, 0.0, 1.0) if span > 0 else 1.0)
    if cfg.fusion != "rrf":
        score = score / (sum(weights.get(name, 1.0) for name in lists) or 1.0)
    order = np.argsort(-score, kind="stable")
    return every[order], score[order]


def ranked_table(items: np.ndarray, scores: np.ndarray, lists: dict[str, Hits]) -> pd.DataFrame:
    """`item_id, score` and each list's rank of each item (NaN where the list does not hold it)."""
    table = {"item_id": items, "score": scores}
    for name, (ids, _) in lists.items():
        rank = dict(zip(ids, range(1, len(ids) + 1)))
        table[f"{name}_rank"] = np.array([rank.get(i, np.nan) for i in items], dtype=np.float64)
    return pd.DataFrame(table)


def fuse(lists: dict[str, Hits], weights: dict[str, float], cfg: SearchConfig) -> pd.DataFrame:
    """Ranked lists merged by fixed weights (`fused_order`) into one table, best first: `item_id, score` and
    each list's rank. An entry without a finite score (an item the towers cannot score) is left out of its
    list."""
    lists = finite(lists)
    return ranked_table(*fused_order(lists, weights, cfg), lists)


def search(index: SearchIndex, query: str, k: int, cfg: SearchConfig,
           personal: Callable[[np.ndarray], np.ndarray] | None = None,
           allowed: Callable[[np.ndarray], np.ndarray] | None = None,
           towers: Callable[[int], Hits] | None = None) -> pd.DataFrame:
    """`item_id, rank, score, text_rank, bm25_rank, personal_rank` of the query's top k. `towers(n)` gives the
    towers' own top n for the query (a model that reads query text), or `personal(ids)` the towers' score of
    the user with each text match (None: no user history); `allowed(ids)` keeps the items the catalog
    serves now."""
    if not isinstance(query, str) or not query.strip():
        raise InputError("query", "is empty", "give the words to search for")
    n = max(k, cfg.candidates)
    lists = index.lists(query, n)
    if towers is not None and cfg.personal_weight > 0:
        lists["personal"] = towers(n)
    if allowed is not None:
        lists = {name: (ids[keep], values[keep]) for name, (ids, values) in lists.items()
                 for keep in [allowed(ids)]}
    if personal is not None and towers is None and cfg.personal_weight > 0:
        union = pd.unique(np.concatenate([ids for ids, _ in lists.values()]))
        scores = np.asarray(personal(union), np.float64)
        order = np.argsort(-scores, kind="stable")
        lists["personal"] = (union[order], scores[order])
    table = index.fuse(lists, cfg).head(k)
    for name in LISTS:
        if f"{name}_rank" not in table.columns:
            table[f"{name}_rank"] = np.nan
    table.insert(1, "rank", np.arange(1, len(table) + 1, dtype=np.int64))
    return table[["item_id", "rank", "score", "text_rank", "bm25_rank", "personal_rank"]]
