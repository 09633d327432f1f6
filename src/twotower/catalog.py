"""The index as part of a model version: built from the model's item vectors (plus new items embedded by the
item tower), tuned on the model's own users, saved in the model folder, and refused by any other model.

Catalog changes after training (items added or refreshed from an items table, items removed) are recorded in
the model folder, applied to the live index at once (upsert/delete, no rebuild), and re-applied, with the
current weights, whenever the index is rebuilt."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .config import IndexConfig
from .data.dataset import request_context
from .data.features import encode
from .data.item_text import TOWER_TEXT, item_texts, tower_text_feature
from .data.schema import read_id_list, read_items
from .errors import InputError, read_stored
from .index.base import IndexSpec, VectorIndex
from .index.faiss_index import FaissIndex, choose_layout
from .index.tuning import RecallReport, exact_truth, measure, tune
from .model.artifact import SavedModel, load_model
from .model.item_vectors import encode_items
from .model.recommender import tower_queries
from .progress import progress_bar

log = logging.getLogger(__name__)
INDEX_DIR = "index"
PGDATA_DIR = "pgdata"
ADDED_ITEMS = "catalog_added.parquet"       # feature rows of items added or refreshed after training
REMOVED_ITEMS = "catalog_removed.parquet"   # ids of items taken out of the catalog


@dataclass
class IndexBuild:
    """What `twotower index` did."""

    backend: str
    kind: str
    items: int
    new_items: int
    params: dict
    removed_items: int = 0
    recall: RecallReport | None = None
    seconds: float = 0.0
    folder: Path = Path()
    rebuilt: bool = True


def model_spec(saved: SavedModel) -> IndexSpec:
    return IndexSpec(saved.config.model.similarity, saved.config.model.dim, saved.model_id)


def make_index(spec: IndexSpec, cfg: IndexConfig, n_items: int, model_dir: Path) -> VectorIndex:
    """An empty index of the configured backend, shaped for `n_items`."""
    if cfg.backend == "faiss":
        return FaissIndex(spec, choose_layout(n_items, cfg.exact_max_items, cfg.faiss_kind, cfg.hnsw_m,
                                              cfg.ef_construction, cfg.search_effort))
    from .index.pgvector_index import PgVectorIndex, embedded_dsn

    dsn = cfg.dsn or embedded_dsn(model_dir / PGDATA_DIR)
    index = PgVectorIndex(spec, dsn, cfg.table, cfg.hnsw_m, cfg.ef_construction, cfg.search_effort or None)
    index.embedded = not cfg.dsn
    return index


def read_new_items(saved: SavedModel, items_file: Path) -> pd.DataFrame:
    """An items table to add: item_id and every feature column the model was trained with."""
    table = read_items(items_file)
    missing = [s.name for s in saved.history.item_specs if s.name not in table.columns and s.name not in TOWER_TEXT]
    if missing:
        raise InputError(str(items_file), f"missing feature column(s) {missing}",
                         "give the same item columns the model was trained with")
    return table


def new_item_vectors(saved: SavedModel, table: pd.DataFrame, show_progress: bool = False,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) for every row of an items table: known items keep their id embedding, all get their
    features from the table. Items the model never saw are searchable by their features alone."""
    specs = saved.history.item_specs
    cfg = saved.config
    encoded = encode(table, [s for s in specs if s.name not in TOWER_TEXT], cfg.data.multi_separator)
    if any(s.name in TOWER_TEXT for s in specs):            # the item tower reads their text: encode it
        texts = item_texts(table, table["item_id"].astype(str).to_numpy(), specs, cfg.search,
                           cfg.data.multi_separator)[1:]
        spec, rows = tower_text_feature(texts, cfg.model.text_encoder, cfg.model.text_buckets)
        encoded[spec.name] = rows
    codes = saved.history.items.encode(table["item_id"])
    vectors = encode_items(saved.model, codes, encoded, show_progress=show_progress)
    return table["item_id"].astype(str).to_numpy(dtype=object), vectors


def sample_queries(saved: SavedModel, n: int, seed: int = 0) -> np.ndarray:
    """[m, d] next-step queries of up to `n` users with history, as a batch `recommend` asks them: real
    queries for measuring recall."""
    hist = saved.history
    users = np.unique(hist.events["user"].to_numpy())
    users = np.random.default_rng(seed).choice(users, min(n, len(users)), replace=False)
    ctx = request_context(hist.context_specs, np.full(len(users), np.nan))    # as a batch serves them
    return tower_queries(saved.model, hist)(users, ctx)


def without_history(saved: SavedModel, ids: np.ndarray) -> np.ndarray:
    """[n] whether each item lives by its content alone: unknown to the model, or without an id embedding
    (too few events when the towers trained: its row is zero). All False for a model with no id embeddings
    or no item features, where every item lives by the same inputs."""
    tower = saved.model.item_tower
    if tower.id_embedding is None or tower.features is None:
        return np.zeros(len(ids), bool)
    has_id = tower.id_embedding.weight.detach().abs().sum(dim=1).numpy() > 0
    return ~has_id[saved.history.items.encode(np.asarray(ids, dtype=object))]


def new_item_scale(saved: SavedModel, vectors: np.ndarray, new: np.ndarray, place: int) -> float:
    """Mean over sampled users of their `place`-th best score among the catalog's items with history, over the
    mean of their best among its `new` items: the factor that lifts a typical user's best new item to that
    place (1.0 where it cannot be measured)."""
    queries = sample_queries(saved, NEW_ITEM_QUERIES)
    if not len(queries) or new.all() or not new.any():
        return 1.0
    at_place = _best_scores(queries, vectors[~new], place)[:, -1].mean()
    best_new = _best_scores(queries, vectors[new], 1)[:, 0].mean()
    return float(at_place / best_new) if best_new > 0 and at_place > 0 else 1.0


def _best_scores(queries: np.ndarray, vectors: np.ndarray, n: int, chunk: int = 50_000) -> np.ndarray:
    """[queries, n] each query's n best inner products over `vectors`, best first, a chunk of items at a time."""
    n = min(n, len(vectors))
    best = np.full((len(queries), 0), -np.inf, np.float32)
    for lo in range(0, len(vectors), chunk):
        scores = np.concatenate([best, queries @ vectors[lo:lo + chunk].T], axis=1)
        best = -np.partition(-scores, n - 1, axis=1)[:, :n] if scores.shape[1] > n else scores
    return -np.sort(-best, axis=1)


NEW_ITEM_QUERIES = 256
NEW_ITEMS_FILE = "new_items.json"          # in the model folder: the place and factor the index was built with


@dataclass
class NewItemScale:
    """How the index holds items without history: scaled by `factor` so that a typical user's best one scores
    as their `place`-th best item with history."""

    place: int
    factor: float

    def apply(self, saved: SavedModel, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        new = without_history(saved, ids)
        if not new.any():
            return vectors
        vectors = vectors.copy()
        vectors[new] *= self.factor
        return vectors

    def save(self, model_dir: Path) -> None:
        with atomic_path(Path(model_dir) / NEW_ITEMS_FILE) as tmp:
            tmp.write_text(json.dumps({"place": self.place, "factor": self.factor}))

    @classmethod
    def load(cls, model_dir: Path) -> "NewItemScale | None":
        """The scale the model's index was built with; None: new items as the towers score them."""
        path = Path(model_dir) / NEW_ITEMS_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def measure_new_item_scale(saved: SavedModel, ids: np.ndarray, vectors: np.ndarray,
                           place: int | None) -> NewItemScale | None:
    """The scale for `index.new_item_place` over this catalog; None when unset, or where it cannot apply (a
    model without id embeddings or item features; a similarity other than dot, which scaling cannot move)."""
    if place is None:
        return None
    tower = saved.model.item_tower
    if saved.config.model.similarity != "dot" or tower.id_embedding is None or tower.features is None:
        log.warning("index.new_item_place applies to dot similarity with id embeddings and item features: "
                    "new items stay as the towers score them")
        return None
    return NewItemScale(place, new_item_scale(saved, vectors, without_history(saved, ids), place))


def catalog(saved: SavedModel, as_indexed: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """(ids, vectors, how many are new) of the catalog as it stands: the trained items, then the recorded
    additions (re-embedded with these weights) replacing or extending them, less the recorded removals; with
    `as_indexed`, items without history scaled as the index holds them (`NewItemScale`)."""
    ids, vectors = saved.item_vectors()
    n_new = 0
    added = saved.folder / ADDED_ITEMS
    if added.is_file():
        extra_ids, extra = new_item_vectors(saved, pd.read_parquet(added))
        keep = ~pd.Index(ids).isin(extra_ids)
        n_new = int((~pd.Index(extra_ids).isin(ids)).sum())
        ids, vectors = np.concatenate([ids[keep], extra_ids]), np.concatenate([vectors[keep], extra])
    removed = saved.folder / REMOVED_ITEMS
    if removed.is_file():
        keep = ~pd.Index(ids).isin(pd.read_parquet(removed)["item_id"].astype(str))
        ids, vectors = ids[keep], vectors[keep]
    scale = NewItemScale.load(saved.folder) if as_indexed else None
    return ids, scale.apply(saved, ids, vectors) if scale else vectors, n_new


def record_changes(model_dir: Path, added: pd.DataFrame | None = None, removed: list[str] = ()) -> None:
    """Merge catalog changes into the model folder's records: an item added again is no longer removed, and
    a removed item is no longer added. Each record is replaced atomically."""
    def read(name: str) -> pd.DataFrame:
        path = model_dir / name
        return pd.read_parquet(path).astype("string") if path.is_file() else pd.DataFrame({"item_id": []}, dtype="string")

    adds, gone = read(ADDED_ITEMS), read(REMOVED_ITEMS)
    if added is not None and len(added):
        new = added.astype("string")       # kept as text: a later table may type a column otherwise
        adds = pd.concat([adds, new], ignore_index=True).drop_duplicates("item_id", keep="last")
        gone = gone[~gone["item_id"].isin(new["item_id"])]
    if removed:
        removed = [str(i) for i in removed]
        adds = adds[~adds["item_id"].isin(removed)]
        gone = pd.concat([gone, pd.DataFrame({"item_id": removed})], ignore_index=True).drop_duplicates("item_id")
    for name, table in ((ADDED_ITEMS, adds), (REMOVED_ITEMS, gone)):
        if len(table) or (model_dir / name).is_file():
            with atomic_path(model_dir / name) as tmp:
                table.reset_index(drop=True).to_parquet(tmp)


def update_model_index(model_dir: str | Path, items_file: Path | None = None, remove_file: Path | None = None,
                       show_progress: bool = True) -> IndexBuild:
    """Add or refresh items from an items table and remove listed items: recorded in the model folder, then
    upserted into / deleted from the live index without a rebuild (built first if there is none)."""
    start = time.perf_counter()
    model_dir = Path(model_dir)
    saved = load_model(model_dir)
    table = read_new_items(saved, items_file) if items_file is not None else None
    removed = [str(i) for i in read_id_list(remove_file, "item_id")] if remove_file is not None else []
    embedded = new_item_vectors(saved, table, show_progress) if table is not None else None    # a table it cannot embed: no record
    record_changes(model_dir, table, removed)
    if not (model_dir / INDEX_DIR / "index.json").is_file():
        return build_model_index(model_dir, show_progress=show_progress)
    index = open_model_index(saved)
    known = set(index.ids())
    strangers = [r for r in removed if r not in known]
    if strangers:
        log.warning("%d id(s) to remove are not in the catalog, e.g. %r: nothing to remove for them",
                    len(strangers), strangers[0])
    n_new = 0
    if embedded is not None:
        ids, vectors = embedded
        n_new = sum(i not in known for i in ids)
        scale = NewItemScale.load(model_dir)          # new items scaled as the index was built
        index.upsert(ids, scale.apply(saved, ids, vectors) if scale else vectors)
    n_removed = index.delete(removed) if removed else 0
    ids, vectors, _ = catalog(saved)
    cfg = saved.config.index
    report = _measure_and_save(index, model_dir, ids, vectors, sample_queries(saved, cfg.recall_queries), cfg,
                               tune_effort=False)
    stats = index.stats()
    return IndexBuild(stats.backend, stats.kind, len(index), n_new, stats.params, n_removed, report,
                      time.perf_counter() - start, model_dir / INDEX_DIR, rebuilt=False)


def build_model_index(model_dir: str | Path, cfg: IndexConfig | None = None, show_progress: bool = True,
                      overrides: dict | None = None) -> IndexBuild:
    """Build (or rebuild) the model's index from its catalog, measure recall@k on its own users' queries
    against exact search, tune the search effort to the target, and save it in the model folder.
    `cfg` defaults to the model's own index config; `overrides` change some of its keys (e.g. the backend)."""
    start = time.perf_counter()
    model_dir = Path(model_dir)
    saved = load_model(model_dir)
    cfg = (cfg or saved.config.index).model_copy(update=overrides or {})
    ids, vectors, n_new = catalog(saved, as_indexed=False)
    scale = measure_new_item_scale(saved, ids, vectors, cfg.new_item_place)
    if scale is not None:
        vectors = scale.apply(saved, ids, vectors)
    index = make_index(model_spec(saved), cfg, len(ids), model_dir)
    queries = sample_queries(saved, cfg.recall_queries)
    with progress_bar(show_progress) as bar:
        task = bar.add_task(f"indexing ({index.backend})", total=len(ids), rate="")
        extra = {"sample_queries": queries} if index.backend == "faiss" else {}
        index.build(ids, vectors, progress=lambda n: bar.update(task, advance=n), **extra)
    report = _measure_and_save(index, model_dir, ids, vectors, queries, cfg, tune_effort=not cfg.search_effort)
    if scale is not None:
        scale.save(model_dir)
    else:
        (model_dir / NEW_ITEMS_FILE).unlink(missing_ok=True)
    stats = index.stats()
    return IndexBuild(stats.backend, stats.kind, len(ids), n_new, stats.params, 0, report,
                      time.perf_counter() - start, model_dir / INDEX_DIR)


def _measure_and_save(index: VectorIndex, model_dir: Path, ids: np.ndarray, vectors: np.ndarray,
                      queries: np.ndarray, cfg: IndexConfig, tune_effort: bool) -> RecallReport | None:
    """Recall against exact search on the catalog (after tuning the effort, when asked and the index is not
    exact), recorded in the index, which is then saved in the model folder."""
    report = None
    if len(ids):
        truth = exact_truth(ids, vectors, queries, min(cfg.recall_k, len(ids)), index.spec.metric)
        if tune_effort and index.stats().kind != "flat":
            report = tune(index, queries, truth, cfg.target_recall)
        else:
            report = measure(index, queries, truth, cfg.target_recall)
        index.recall = report.to_dict()
    index.save(model_dir / INDEX_DIR)
    return report


def open_model_index(saved: SavedModel) -> VectorIndex:
    """The index saved with this model, checked against it; a model without one gets an in-memory exact
    index over its own item vectors."""
    folder = saved.folder / INDEX_DIR
    meta_path = folder / "index.json"
    if not meta_path.is_file():
        index = FaissIndex(model_spec(saved), choose_layout(0, kind="flat"))
        index.build(*saved.item_vectors())
        return index
    return read_stored(folder, lambda f: _load_index(saved, f),
                           fix=f"rebuild it: twotower index --model {saved.folder}")


def _load_index(saved: SavedModel, folder: Path) -> VectorIndex:
    meta_path = folder / "index.json"
    meta = json.loads(meta_path.read_text())
    spec = IndexSpec(**meta["spec"])
    spec.require(model_spec(saved), str(meta_path))
    if meta["backend"] == "faiss":
        return FaissIndex.load(folder, meta)
    from .index.pgvector_index import PgVectorIndex

    return PgVectorIndex.load(folder, meta, saved.folder / PGDATA_DIR)
