"""Item ids <-> the integer labels an index stores. The bulk is two arrays saved as they are (each label's id,
and the labels in id order for binary search), so a million-id map loads in milliseconds with no Python
object per id: a version loading beside a serving one no longer holds the interpreter for a second building a
dict. Changes since the arrays were sorted sit in a small dict and set beside them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

BY_LABEL_FILE = "ids_by_label.npy"    # [labels] each label's id ('' for a free label)
ORDER_FILE = "ids_order.npy"          # the labels sorted by their ids (free ones first)
MERGE_AT = 50_000                     # changes kept beside the sorted arrays before they are sorted again


class IdMap:
    """Two-way map between item ids (the user's strings, kept as numpy strings: an id may not end in NUL) and
    labels (ints, never reused). Not thread-safe for writes; a reader holding `id_array()` keeps a consistent
    array while another thread writes, since a write replaces the array."""

    def __init__(self, by_label: np.ndarray | None = None, order: np.ndarray | None = None):
        self._by_label = by_label if by_label is not None else np.zeros(0, "U1")
        self._sorted = self._by_label        # the array `_order` sorts; never written (a write makes a new one)
        self._added: dict[str, int] = {}        # ids labelled since the sort
        self._removed: set[str] = set()         # ids of the sorted part taken out since
        if order is None:
            self._sort()
        else:
            self._order = order
            self._free = self._count_free()

    # --- reading ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._order) - self._free - len(self._removed) + len(self._added)

    def __contains__(self, item_id: str) -> bool:
        return self.label(item_id) is not None

    def label(self, item_id: str) -> int | None:
        item_id = str(item_id)
        if item_id in self._added:
            return self._added[item_id]
        if item_id in self._removed or not item_id or not len(self._order):
            return None
        at = int(np.searchsorted(self._sorted, item_id, sorter=self._order))
        if at < len(self._order) and self._sorted[self._order[at]] == item_id:
            return int(self._order[at])
        return None

    def labels(self, ids: Sequence[str]) -> np.ndarray:
        """[n] int64 labels, -1 for ids not in the map."""
        ids = [str(i) for i in ids]
        out = np.full(len(ids), -1, np.int64)
        if len(self._order) and ids:
            wanted = np.asarray(ids, dtype=str)
            at = np.minimum(np.searchsorted(self._sorted, wanted, sorter=self._order), len(self._order) - 1)
            found = self._order[at]
            hit = (self._sorted[found] == wanted) & (wanted != "")
            out[hit] = found[hit]
        if self._added or self._removed:
            for n, item_id in enumerate(ids):
                if item_id in self._added:
                    out[n] = self._added[item_id]
                elif item_id in self._removed:
                    out[n] = -1
        return out

    def id_array(self) -> np.ndarray:
        """[labels] each label's id, '' for a free one."""
        return self._by_label

    def ids(self) -> list[str]:
        """Every id in the map, in label order."""
        return self._by_label[self._by_label != ""].tolist()

    def first(self) -> str | None:
        """One id in the map (for a probe), without listing them all."""
        for item_id in self._added:
            return item_id
        for label in self._order[self._free:]:
            item_id = str(self._sorted[label])
            if item_id not in self._removed:
                return item_id
        return None

    # --- writing ------------------------------------------------------------------------------------
    def add(self, ids: Sequence[str], labels: np.ndarray) -> None:
        """Give these ids, none of them in the map, these new labels."""
        ids = [str(i) for i in ids]
        if (self.labels(ids) >= 0).any():
            raise ValueError("ids already in the map: remove them first")
        self._added.update(zip(ids, np.asarray(labels).tolist()))
        self._relabel(np.asarray(labels, np.int64), np.asarray(ids, dtype=str))

    def remove(self, ids: Iterable[str]) -> list[int]:
        """Take these ids out; returns the labels they had (ids not in the map are skipped)."""
        labels = []
        for item_id in map(str, ids):
            label = self.label(item_id)
            if label is None:
                continue
            if self._added.pop(item_id, None) is None:
                self._removed.add(item_id)
            labels.append(label)
        if labels:
            self._relabel(np.asarray(labels, np.int64), np.asarray("", dtype=str))
        return labels

    def _relabel(self, labels: np.ndarray, ids: np.ndarray) -> None:
        """A new label array with these labels' ids set (a reader keeps the one it holds)."""
        size = max(len(self._by_label), int(labels.max()) + 1 if len(labels) else 0)
        by_label = np.zeros(size, np.result_type(self._by_label.dtype, ids.dtype))
        by_label[:len(self._by_label)] = self._by_label
        by_label[labels] = ids
        self._by_label = by_label
        if len(self._added) + len(self._removed) > MERGE_AT:
            self._sort()

    def _sort(self) -> None:
        """Fold the changes into the sorted order."""
        self._sorted, self._order = self._by_label, np.argsort(self._by_label, kind="stable")
        self._free = self._count_free()
        self._added, self._removed = {}, set()

    def _count_free(self) -> int:
        """How many labels of the sorted array are free (their '' sorts first)."""
        return int(np.searchsorted(self._sorted, "", side="right", sorter=self._order))

    # --- persistence --------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the arrays into `folder` (the caller's temporary folder: the index is saved as a whole)."""
        self._sort()
        np.save(Path(folder) / BY_LABEL_FILE, self._by_label, allow_pickle=False)
        np.save(Path(folder) / ORDER_FILE, self._order, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> "IdMap":
        folder = Path(folder)
        return cls(np.load(folder / BY_LABEL_FILE, allow_pickle=False),
                   np.load(folder / ORDER_FILE, allow_pickle=False))

    @classmethod
    def from_pairs(cls, ids: Sequence[str], labels: Sequence[int]) -> "IdMap":
        """A map from (id, label) pairs (an index saved before these arrays existed)."""
        labels = np.asarray(labels, np.int64)
        ids = np.asarray(ids, dtype=str)
        by_label = np.zeros(int(labels.max()) + 1 if len(labels) else 0, ids.dtype if len(ids) else "U1")
        by_label[labels] = ids
        return cls(by_label)

    @staticmethod
    def saved_in(folder: Path) -> bool:
        return (Path(folder) / BY_LABEL_FILE).is_file()
