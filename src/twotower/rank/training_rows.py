"""The ranker's training rows kept on disk: each chunk of requests becomes one float32 feature matrix that
LightGBM reads memory-mapped, in batches, so building and fitting them needs memory for one chunk (plus
LightGBM's own binned copy, one byte per feature per row) however many requests the log gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import lightgbm as lgb
import numpy as np
import pandas as pd

CHUNK_ROWS = 250_000        # candidate rows built at once (requests x candidates)


def chunks(n_requests: int, rows_per_request: int, chunk_rows: int | None = None) -> Iterator[slice]:
    """Consecutive request ranges whose candidate rows stay near `chunk_rows` (CHUNK_ROWS by default)."""
    step = max(1, (chunk_rows or CHUNK_ROWS) // max(rows_per_request, 1))
    for start in range(0, n_requests, step):
        yield slice(start, min(start + step, n_requests))


class _Matrix(lgb.Sequence):
    """A saved feature matrix as LightGBM's `Sequence` (random rows for its bin sample, ranges in batches)."""

    batch_size = 65_536

    def __init__(self, path: Path, width: int):
        self.data, self.width = np.load(path, mmap_mode="r"), width

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx):
        return np.asarray(self.data[idx, :self.width], dtype=np.float64)


@dataclass
class RankingRows:
    """Candidate rows of whole requests in parts under `folder`: features (float32, in `features` order, then
    `extra` columns the trees do not read, e.g. a base order) on disk; the grade and request of each row in
    memory (a few bytes a row), as LightGBM's label and groups."""

    folder: Path
    features: list[str]
    extra: list[str] = field(default_factory=list)
    parts: list[Path] = field(default_factory=list)
    grades: list[np.ndarray] = field(default_factory=list)
    requests: list[np.ndarray] = field(default_factory=list)

    def add(self, rows: pd.DataFrame, label: str = "grade", group: str = "request") -> None:
        """Append rows (sorted by request; a request's rows all in one call)."""
        if rows.empty:
            return
        path = self.folder / f"part-{len(self.parts):05d}.npy"
        np.save(path, np.column_stack([rows[c].to_numpy(np.float32) for c in self.columns]))
        self.parts.append(path)
        self.grades.append(rows[label].to_numpy(np.int8))
        self.requests.append(rows[group].to_numpy(np.int64))

    def __len__(self) -> int:
        return sum(len(g) for g in self.grades)

    @property
    def columns(self) -> list[str]:
        return self.features + [c for c in self.extra if c not in self.features]

    @property
    def label(self) -> np.ndarray:
        return np.concatenate(self.grades) if self.grades else np.zeros(0, np.int8)

    @property
    def group_sizes(self) -> np.ndarray:
        """Rows per request, in order (LightGBM's `group`)."""
        if not self.requests:
            return np.zeros(0, np.int64)
        request = np.concatenate(self.requests)
        starts = np.flatnonzero(np.r_[True, request[1:] != request[:-1]])
        return np.diff(np.r_[starts, len(request)])

    def column(self, name: str) -> np.ndarray:
        """One stored column over every row (float64)."""
        j = self.columns.index(name)
        return np.concatenate([np.load(p, mmap_mode="r")[:, j].astype(np.float64) for p in self.parts]) \
            if self.parts else np.zeros(0)

    def frames(self, columns: list[str]) -> Iterator[pd.DataFrame]:
        """Each part's rows as a frame of stored `columns` plus grade and request."""
        for path, grade, request in zip(self.parts, self.grades, self.requests):
            data = np.load(path, mmap_mode="r")
            yield pd.DataFrame({**{c: np.asarray(data[:, self.columns.index(c)], np.float64) for c in columns},
                                "grade": grade, "request": request})

    def matrices(self) -> list[_Matrix]:
        """The parts as LightGBM reads them."""
        return [_Matrix(p, len(self.features)) for p in self.parts]


@dataclass
class SplitRows:
    """Training and validation rows, each request on one side by a fixed draw: `held[request]`."""

    train: RankingRows
    valid: RankingRows
    held: np.ndarray

    @classmethod
    def create(cls, folder: Path, features: list[str], n_requests: int, valid_fraction: float = 0.2,
               seed: int = 42, extra: list[str] = ()) -> "SplitRows":
        held = np.random.default_rng(seed).random(n_requests) < valid_fraction
        if not held.any() and n_requests:
            held[-1] = True
        (folder / "train").mkdir(parents=True, exist_ok=True)
        (folder / "valid").mkdir(exist_ok=True)
        return cls(RankingRows(folder / "train", features, list(extra)),
                   RankingRows(folder / "valid", features, list(extra)), held)

    def settle(self) -> None:
        """After the last `add`: when no held request kept a relevant candidate, the last training part
        becomes the validation side (the trees need requests to stop on), if another part remains."""
        if not len(self.valid) and len(self.train.parts) > 1:
            for field_ in ("parts", "grades", "requests"):
                getattr(self.valid, field_).append(getattr(self.train, field_).pop())

    def add(self, rows: pd.DataFrame) -> None:
        """Rows of whole requests (global request numbers below `len(held)`) to their side."""
        is_valid = self.held[rows["request"].to_numpy(np.int64)]
        self.train.add(rows[~is_valid])
        self.valid.add(rows[is_valid])
