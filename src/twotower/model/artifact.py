"""A trained model on disk: weights, feature tables, id vocabularies, the history it serves from, item
vectors, the config and the data fingerprint. Arrays plus JSON, no pickled code; loading checks the format."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..atomic import atomic_path
from ..config import Config, config_from_dict
from ..data.dataset import Dataset, IdVocab
from ..data.features import FeatureSpec
from ..errors import InputError, first_line, read_stored
from .item_vectors import encode_items
from .trainer import TrainReport
from .twotower import TwoTowerModel

FORMAT = 1
DAMAGED_FIX = "retrain with `twotower train` (or restore the model folder from a copy)"
ARTIFACT_FILES = ("model.json", "weights.pt", "features.npz", "items.parquet", "users.parquet", "history.parquet",
                  "item_vectors.npy")


@dataclass
class SavedModel:
    """A loaded model folder: the model, its config, and the history (events, vocabularies) it knows."""

    model: TwoTowerModel
    config: Config
    history: Dataset
    meta: dict
    folder: Path

    @property
    def model_id(self) -> str:
        """Names these weights: an index built from them records it, and is refused by other weights."""
        return self.meta["model_id"]

    def item_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, [n, d] vectors as an index stores them) for the catalog the model was trained on."""
        vectors = read_stored(self.folder / "item_vectors.npy", np.load, DAMAGED_FIX)[1:]
        if vectors.shape != (len(self.history.items), self.config.model.dim):
            raise InputError(str(self.folder / "item_vectors.npy"), f"holds vectors of shape {vectors.shape}, not "
                             f"({len(self.history.items)}, {self.config.model.dim})", DAMAGED_FIX)
        return self.history.items.ids.astype(str).astype(object), vectors


def save_model(out_dir: str | Path, model: TwoTowerModel, data: Dataset, cfg: Config, report: TrainReport,
               fingerprint: dict, metrics: dict | None = None) -> Path:
    """Write the model's files into `out_dir`, each replaced whole and model.json last (a crash leaves no
    model.json of a half-written model); other files in the folder (a training checkpoint) stay."""
    out_dir = Path(out_dir)
    meta = {
        "format": FORMAT, "twotower_version": __version__, "config": cfg.model_dump(),
        "n_users": data.n_users, "n_items": data.n_items,
        "item_specs": [s.to_dict() for s in data.item_specs], "user_specs": [s.to_dict() for s in data.user_specs],
        "context_specs": [s.to_dict() for s in data.context_specs] if cfg.model.context_features else [],
        "similarity": cfg.model.similarity, "training": asdict(report), "data": fingerprint, "metrics": metrics or {},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".model.", dir=out_dir) as staging:
        tmp = Path(staging)
        torch.save(model.state_dict(), tmp / "weights.pt")
        meta["model_id"] = hashlib.sha256((tmp / "weights.pt").read_bytes()).hexdigest()[:16]
        (tmp / "model.json").write_text(json.dumps(meta, indent=2, default=float))
        np.savez(tmp / "features.npz", **{f"item/{k}": v for k, v in data.item_features.items()},
                 **{f"user/{k}": v for k, v in data.user_features.items()})
        labels = {"label": data.item_labels[1:]} if data.item_labels is not None else {}
        pd.DataFrame({"item_id": data.items.ids.astype(str), **labels}).to_parquet(tmp / "items.parquet")
        pd.DataFrame({"user_id": data.users.ids.astype(str)}).to_parquet(tmp / "users.parquet")
        ev = data.events[data.events["weight"] > 0][["user", "item", "timestamp", "weight", "order"]]
        ev.to_parquet(tmp / "history.parquet")
        vectors = np.lib.format.open_memmap(tmp / "item_vectors.npy", "w+", np.float32, (data.n_items + 1, cfg.model.dim))
        encode_items(model, np.arange(data.n_items + 1), out=vectors)     # straight to the file, a chunk at a time
        vectors.flush()
        del vectors
        for name in sorted(ARTIFACT_FILES, key=lambda n: n == "model.json"):
            os.replace(tmp / name, out_dir / name)
    return out_dir


def update_meta(model_dir: str | Path, **fields) -> None:
    """Record more about the model in its model.json (e.g. how its later stages went), atomically."""
    path = Path(model_dir) / "model.json"
    meta = {**json.loads(path.read_text()), **fields}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=float))


def model_id_of(model_dir: str | Path) -> str:
    """The model id recorded in a model folder, without loading the weights."""
    return json.loads((Path(model_dir) / "model.json").read_text())["model_id"]


def load_model(model_dir: str | Path) -> SavedModel:
    """Read a folder written by `save_model`; a missing, foreign or damaged folder is one clear error naming
    the file."""
    model_dir = Path(model_dir)
    meta_path = model_dir / "model.json"
    if not meta_path.is_file():
        raise InputError(str(model_dir), "not a twotower model folder (no model.json)",
                         "pass the --out folder of `twotower train`")

    def read(name: str, reader):
        return read_stored(model_dir / name, reader, DAMAGED_FIX)

    meta = read("model.json", lambda p: json.loads(p.read_text()))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise InputError(str(meta_path), f"model format {found} is not {FORMAT}",
                         "retrain the model with this version of twotower")
    cfg = config_from_dict(meta.get("config", {}), source=str(meta_path))
    feats = read("features.npz", lambda p: dict(np.load(p)))
    item_table = {k.split("/", 1)[1]: v for k, v in feats.items() if k.startswith("item/")}
    user_table = {k.split("/", 1)[1]: v for k, v in feats.items() if k.startswith("user/")}
    state = read("weights.pt", lambda p: torch.load(p, weights_only=True))
    try:
        specs = {k: [FeatureSpec(**s) for s in meta[k]] for k in ("item_specs", "user_specs", "context_specs")}
        model = TwoTowerModel(meta["n_users"], meta["n_items"], cfg.model, specs["item_specs"], item_table,
                              specs["user_specs"], user_table, specs["context_specs"])
        model.load_state_dict(state)
    except Exception as exc:    # an edited model.json (dim, sizes, specs) or weights from another model
        raise InputError(str(meta_path), f"does not match weights.pt ({first_line(exc)})", DAMAGED_FIX) from exc
    model.eval()
    users = IdVocab(read("users.parquet", pd.read_parquet)["user_id"])
    items = IdVocab(read("items.parquet", pd.read_parquet)["item_id"])
    history = Dataset(read("history.parquet", pd.read_parquet), users, items,
                      specs["item_specs"], item_table, specs["user_specs"], user_table, specs["context_specs"])
    if (len(users), len(items)) != (meta["n_users"], meta["n_items"]):
        raise InputError(str(model_dir), f"users.parquet/items.parquet hold {len(users)}/{len(items)} ids, model.json "
                         f"says {meta['n_users']}/{meta['n_items']}", DAMAGED_FIX)
    return SavedModel(model, cfg, history, meta, model_dir)

