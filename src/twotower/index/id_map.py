"""Item ids <-> the integer labels an index stores. The bulk is two arrays saved as they are (each label's id
in UTF-8, and the labels in id order for binary search), so a million-id map loads in milliseconds with no
Python object per id: a version loading beside a serving one no longer holds the interpreter for a second
building a dict. Changes since the arrays were sorted sit in a small dict and set beside them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError

BY_LABEL_FILE = "ids_by_label.npy"    # [labels] each label's id, UTF-8 (b'' for a free label)
ORDER_FILE = "ids_order.npy"          # the labels sorted by their ids (free ones first)
MERGE_AT = 50_000                     # changes kept beside the sorted arrays before they are sorted again


def encoded(ids: Iterable[str]) -> list[bytes]:
    """UTF-8 ids as the arrays hold them."""
    return [str(i).encode() for i in ids]


def storable(key: bytes) -> bool:
    """numpy's byte strings drop trailing NULs, and b'' marks a free label: such ids cannot be held."""
    return bool(key) and not key.endswith(b"\x00")


class IdMap:
    """Two-way map between item ids (the user's strings) and labels (ints, never reused). An array holds an
    id in as many bytes as the longest id has, so a catalog of ids of similar length costs little. Writes
    are not thread-safe, and a lookup needs no write under way; a search that reads `id_array()` keeps a
    consistent array while another thread writes, since a write replaces the array."""

    def __init__(self, by_label: np.ndarray | None = None, order: np.ndarray | None = None):
        self._by_label = by_label if by_label is not None else np.zeros(0, "S1")
        self._sorted = self._by_label        # the array `_order` sorts; never written (a write makes a new one)
        self._added: dict[bytes, int] = {}      # ids labelled since the sort
        self._removed: set[bytes] = set()       # ids of the sorted part taken out since
        if order is None:
            self._sort()
        else:
            self._order = order
            self._free = self._count_free()

    # --- reading ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._order) - self._free - len(self._removed) + len(self._added)

    def label(self, item_id: str) -> int | None:
        found = int(self.labels([item_id])[0])
        return found if found >= 0 else None

    def labels(self, ids: Sequence[str]) -> np.ndarray:
        """[n] int64 labels, -1 for ids not in the map."""
        keys = encoded(ids)
        out = np.full(len(keys), -1, np.int64)
        if len(self._order) and keys:
            wanted = np.asarray(keys, dtype=bytes)
            at = np.minimum(np.searchsorted(self._sorted, wanted, sorter=self._order), len(self._order) - 1)
            found = self._order[at]
            hit = self._sorted[found] == wanted
            out[hit] = found[hit]
        for n, key in enumerate(keys):
            if key in self._added:
                out[n] = self._added[key]
            elif out[n] >= 0 and (key in self._removed or not storable(key)):
                out[n] = -1                 # taken out, or equal to a held id only without its trailing NULs
        return out

    def id_array(self) -> np.ndarray:
        """[labels] each label's id in UTF-8, b'' for a free one (`decode` gives the strings)."""
        return self._by_label

    @staticmethod
    def decode(raw: np.ndarray) -> list[str]:
        return list(map(bytes.decode, raw.tolist()))

    def ids(self) -> list[str]:
        """Every id in the map, in label order."""
        return self.decode(self._by_label[self._by_label != b""])

    def first(self) -> str | None:
        """One id in the map (for a probe), without listing them all."""
        for key in self._added:
            return key.decode()
        for label in self._order[self._free:]:
            key = self._sorted[label]
            if key not in self._removed:
                return key.decode()
        return None

    # --- writing ------------------------------------------------------------------------------------
    def add(self, ids: Sequence[str], labels: np.ndarray) -> None:
        """Give these ids, none of them in the map, these new labels."""
        keys = encoded(ids)
        bad = next((i for i, key in zip(ids, keys) if not storable(key)), None)
        if bad is not None:
            raise InputError("item_id", f"{str(bad)!r} cannot be an item id in an index",
                             "give every item a non-empty id that does not end in a NUL character")
        if len(self) and (self.labels(ids) >= 0).any():
            raise ValueError("ids already in the map: remove them first")
        self._added.update(zip(keys, np.asarray(labels).tolist()))
        self._relabel(np.asarray(labels, np.int64), np.asarray(keys, dtype=bytes))

    def remove(self, ids: Iterable[str]) -> list[int]:
        """Take these ids out; returns the labels they had (ids not in the map are skipped)."""
        ids = list(ids)
        labels = []
        for key, label in zip(encoded(ids), self.labels(ids).tolist()):
            if label < 0:
                continue
            if self._added.pop(key, None) is None:
                self._removed.add(key)
            labels.append(label)
        if labels:
            self._relabel(np.asarray(labels, np.int64), np.asarray(b""))
        return labels

    def _relabel(self, labels: np.ndarray, keys: np.ndarray) -> None:
        """A new label array with these labels' ids set (a reader keeps the one it holds)."""
        size = max(len(self._by_label), int(labels.max()) + 1 if len(labels) else 0)
        by_label = np.zeros(size, np.result_type(self._by_label.dtype, keys.dtype))
        by_label[:len(self._by_label)] = self._by_label
        by_label[labels] = keys
        self._by_label = by_label
        if len(self._added) + len(self._removed) > MERGE_AT:
            self._sort()

    def _sort(self) -> None:
        """Fold the changes into the sorted order."""
        self._sorted, self._order = self._by_label, np.argsort(self._by_label, kind="stable")
        self._free = self._count_free()
        self._added, self._removed = {}, set()

    def _count_free(self) -> int:
        """How many labels of the sorted array are free (their b'' sorts first)."""
        return int(np.searchsorted(self._sorted, b"", side="right", sorter=self._order))

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
        made = cls()
        made.add(ids, np.asarray(labels, np.int64))
        made._sort()
        return made
