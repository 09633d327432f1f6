"""What a person sees of a model's items: each one's name (the items table's title or name column, kept with
the model) and its readable attributes (categories decoded, numbers as given), for trained items and for
items the catalog gained later. An item without a name is shown by its id."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd

from .catalog import ADDED_ITEMS
from .data.features import FeatureSpec
from .data.item_text import label_column
from .model.artifact import SavedModel

READABLE_KINDS = ("categorical", "multi", "numeric")


class ItemInfo:
    """Names and attributes of one model folder's items, read on first use (the page asks; requests don't)."""

    def __init__(self, saved: SavedModel):
        self._saved = saved
        self._lock = threading.Lock()
        self._names: dict[str, str] | None = None
        self._added: pd.DataFrame | None = None

    def names(self, ids) -> list[str]:
        """Each item's name for people, or its id where the model holds none."""
        names = self._load()
        return [names.get(str(i)) or str(i) for i in ids]

    def attributes(self, item_id: str) -> dict[str, str] | None:
        """{column: value} of the item's readable features (None for an item the model never had)."""
        self._load()
        item_id = str(item_id)
        if self._added is not None and item_id in self._added.index:
            row = self._added.loc[item_id]
            return {c: str(v) for c, v in row.items() if pd.notna(v) and str(v).strip()}
        hist = self._saved.history
        code = int(hist.items.encode([item_id])[0])
        if code == 0:
            return None
        out = {}
        for spec in hist.item_specs:
            value = _readable(spec, hist.item_features.get(spec.name), code)
            if value:
                out[spec.name] = value
        return out

    def _load(self) -> dict[str, str]:
        with self._lock:
            if self._names is None:
                folder: Path = self._saved.folder
                table = pd.read_parquet(folder / "items.parquet")
                names = dict(zip(table["item_id"], table["label"])) if "label" in table.columns else {}
                added = folder / ADDED_ITEMS
                if added.is_file():
                    rows = pd.read_parquet(added).drop_duplicates("item_id", keep="last").set_index("item_id")
                    column = label_column(rows.reset_index(), [])
                    if column is not None:
                        names.update({i: v for i, v in rows[column].items() if isinstance(v, str) and v.strip()})
                    self._added = rows
                self._names = {str(k): v for k, v in names.items() if isinstance(v, str) and v}
            return self._names


def _readable(spec: FeatureSpec, values: np.ndarray | None, code: int) -> str | None:
    """The item's value of one feature as the items table said it (text is hashed: not readable)."""
    if values is None or spec.kind not in READABLE_KINDS:
        return None
    v = values[code]
    if spec.kind == "numeric":
        return f"{float(v) * spec.std + spec.mean:.4g}"
    codes = np.atleast_1d(v)
    words = [spec.vocab[c - 1] for c in codes if 0 < c <= len(spec.vocab)]
    return ", ".join(words) or None
