"""The index as part of a model version: built from the model's item vectors (plus new items embedded by the
item tower), tuned on the model's own users, saved in the model folder, and refused by any other model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import IndexConfig
from ..data.dataset import request_context
from ..data.features import encode
from ..data.schema import read_table
from ..errors import InputError
from ..model.artifact import SavedModel, load_model
from ..model.recommender import tower_queries
from ..progress import progress_bar
from .base import IndexSpec, VectorIndex
from .faiss_index import FaissIndex, choose_layout
from .tuning import RecallReport, exact_truth, measure, tune

INDEX_DIR = "index"
PGDATA_DIR = "pgdata"


@dataclass
class IndexBuild:
    """What `twotower index` did."""

    backend: str
    kind: str
    items: int
    new_items: int
    params: dict
    recall: RecallReport | None
    seconds: float
    folder: Path


def model_spec(saved: SavedModel) -> IndexSpec:
    return IndexSpec(saved.config.model.similarity, saved.config.model.dim, saved.model_id)


def make_index(spec: IndexSpec, cfg: IndexConfig, n_items: int, model_dir: Path) -> VectorIndex:
    """An empty index of the configured backend, shaped for `n_items`."""
    if cfg.backend == "faiss":
        return FaissIndex(spec, choose_layout(n_items, cfg.exact_max_items, cfg.faiss_kind, cfg.hnsw_m,
                                              cfg.ef_construction, cfg.search_effort))
    from .pgvector_index import PgVectorIndex, embedded_dsn

    dsn = cfg.dsn or embedded_dsn(model_dir / PGDATA_DIR)
    index = PgVectorIndex(spec, dsn, cfg.table, cfg.hnsw_m, cfg.ef_construction, cfg.search_effort or None)
    index.embedded = not cfg.dsn
    return index


def new_item_vectors(saved: SavedModel, items_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) for every row of an items table: known items keep their id embedding, all get their
    features from the file. Items the model never saw are searchable by their features alone."""
    table = read_table(items_file, id_column="item_id")
    specs = saved.history.item_specs
    missing = [s.name for s in specs if s.name not in table.columns]
    if missing:
        raise InputError(str(items_file), f"missing feature column(s) {missing}",
                         "give the same item columns the model was trained with")
    values = {k: torch.as_tensor(v) for k, v in encode(table, specs, saved.config.data.multi_separator).items()}
    codes = torch.as_tensor(saved.history.items.encode(table["item_id"]))
    vectors = saved.model.index_vectors(codes, values).numpy()
    return table["item_id"].astype(str).to_numpy(dtype=object), vectors


def sample_queries(saved: SavedModel, n: int, seed: int = 0) -> np.ndarray:
    """[m, d] next-step queries of up to `n` users with history, as of the latest event: real queries for
    measuring recall."""
    hist = saved.history
    users = np.unique(hist.events["user"].to_numpy())
    users = np.random.default_rng(seed).choice(users, min(n, len(users)), replace=False)
    ctx = request_context(hist.context_specs, len(users), float(hist.events["timestamp"].max()))
    return tower_queries(saved.model, hist)(users, ctx)


def build_model_index(model_dir: str | Path, cfg: IndexConfig | None = None, items_file: Path | None = None,
                      show_progress: bool = True) -> IndexBuild:
    """Build (or rebuild) the model's index from its item vectors, measure recall@k on its own users' queries
    against exact search, tune the search effort to the target, and save it in the model folder."""
    import time

    start = time.perf_counter()
    model_dir = Path(model_dir)
    saved = load_model(model_dir)
    cfg = cfg or saved.config.index
    ids, vectors = saved.item_vectors()
    n_new = 0
    if items_file is not None:
        extra_ids, extra = new_item_vectors(saved, items_file)
        keep = ~pd.Index(ids).isin(extra_ids)
        n_new = int((~pd.Index(extra_ids).isin(ids)).sum())
        ids, vectors = np.concatenate([ids[keep], extra_ids]), np.concatenate([vectors[keep], extra])
    index = make_index(model_spec(saved), cfg, len(ids), model_dir)
    queries = sample_queries(saved, cfg.recall_queries)
    with progress_bar(show_progress) as bar:
        task = bar.add_task(f"indexing ({index.backend})", total=len(ids), rate="")
        extra = {"sample_queries": queries} if index.backend == "faiss" else {}
        index.build(ids, vectors, progress=lambda n: bar.update(task, advance=n), **extra)
    report = None
    stats = index.stats()
    if len(ids):
        truth = exact_truth(ids, vectors, queries, min(cfg.recall_k, len(ids)), index.spec.metric)
        exact = stats.kind == "flat"
        report = measure(index, queries, truth) if exact or cfg.search_effort else \
            tune(index, queries, truth, cfg.target_recall)
        report.target = cfg.target_recall
        index.recall = report.to_dict()
    folder = model_dir / INDEX_DIR
    index.save(folder)
    stats = index.stats()
    return IndexBuild(stats.backend, stats.kind, len(ids), n_new, stats.params, report,
                      time.perf_counter() - start, folder)


def open_model_index(saved: SavedModel) -> VectorIndex:
    """The index saved with this model, checked against it; a model without one gets an in-memory exact
    index over its own item vectors."""
    folder = saved.folder / INDEX_DIR
    meta_path = folder / "index.json"
    if not meta_path.is_file():
        index = FaissIndex(model_spec(saved), choose_layout(0, kind="flat"))
        index.build(*saved.item_vectors())
        return index
    meta = json.loads(meta_path.read_text())
    spec = IndexSpec(**meta["spec"])
    spec.require(model_spec(saved), str(meta_path))
    if meta["backend"] == "faiss":
        return FaissIndex.load(folder, meta)
    from .pgvector_index import PgVectorIndex

    return PgVectorIndex.load(folder, meta, saved.folder / PGDATA_DIR)
