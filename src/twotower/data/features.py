"""Feature columns of the item, user and event tables: infer their kind, fit their encodings, encode.

Encoded values are plain numpy arrays so towers, baselines and later stages can share them:
  categorical -> int64 [n]       codes, 0 = missing/unseen
  multi       -> int64 [n, m]    codes of `a|b|c` values, 0-padded
  numeric     -> float32 [n]     standardised and clipped to the range seen when fitting (a served value
                                 never extrapolates), missing -> 0 (the mean)
  text        -> int64 [n, t]    hashed word ids in 1..buckets, 0-padded
  ngrams      -> int64 [n, g]    hashed words and character 3-grams in 1..buckets, 0-padded (the towers'
                                 small trainable text encoder, `model.text_encoder = "ngram"`)
  vector      -> float32 [n, w]  a precomputed embedding (image, text from elsewhere) over its mean norm,
                                 missing -> zeros
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from ..errors import InputError

MAX_MULTI = 32
MAX_TOKENS = 32
MAX_NGRAMS = 96
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class FeatureSpec:
    """How one column is encoded; JSON-serialisable so a saved model encodes new rows the same way."""

    name: str
    kind: str
    vocab: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    buckets: int = 0
    low: float | None = None         # numeric: the smallest and largest value seen when fitting
    high: float | None = None
    width: int = 0                   # vector: its length

    @property
    def cardinality(self) -> int:
        """Rows the embedding table needs (index 0 is missing/padding)."""
        return self.buckets + 1 if self.kind in ("text", "ngrams") else len(self.vocab) + 1

    def to_dict(self) -> dict:
        return asdict(self)


def infer_kind(col: pd.Series, separator: str = "|") -> str:
    """Guess a column's kind from its values: numeric, multi (`a|b|c`), text (several words), categorical,
    or ignore (a near-unique code such as a URL, which no embedding can generalise from)."""
    values = col.dropna()
    if len(values) == 0:
        return "ignore"
    if isinstance(values.iloc[0], (list, tuple, np.ndarray)):
        return "vector"
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return "numeric"
    text = values.astype(str)
    if text.str.contains(separator, regex=False).mean() > 0.05:
        return "multi"
    words = text.str.count(r"\w+")
    unique_ratio = text.nunique() / len(text)
    if words.mean() >= 2.5 and unique_ratio > 0.2 and text.str.contains(r"\s").mean() > 0.5:
        return "text"
    if _as_dates(text).notna().mean() > 0.9:
        return "numeric"
    if unique_ratio > 0.9 and len(text) > 50:
        return "ignore"
    return "categorical"


def fit_specs(df: pd.DataFrame, columns: list[str], overrides: dict[str, str], separator: str = "|",
              text_buckets: int = 1 << 15) -> list[FeatureSpec]:
    """Fit one spec per column (kind from `overrides` or inferred)."""
    specs = []
    for name in columns:
        kind = overrides.get(name) or infer_kind(df[name], separator)
        col = df[name]
        if kind == "ignore":
            continue
        if kind == "categorical":
            vocab = sorted(col.dropna().astype(str).unique().tolist())
            specs.append(FeatureSpec(name, kind, vocab=vocab))
        elif kind == "multi":
            vocab = sorted({v for vals in _split(col, separator) for v in vals})
            specs.append(FeatureSpec(name, kind, vocab=vocab))
        elif kind == "numeric":
            x = _numeric(col)
            finite = x[np.isfinite(x)]
            mean = float(finite.mean()) if len(finite) else 0.0
            std = float(finite.std()) if len(finite) > 1 else 1.0
            low, high = (float(finite.min()), float(finite.max())) if len(finite) else (None, None)
            specs.append(FeatureSpec(name, kind, mean=mean, std=std if std > 0 else 1.0, low=low, high=high))
        elif kind == "text":
            specs.append(FeatureSpec(name, kind, buckets=text_buckets))
        elif kind == "vector":
            rows = [np.asarray(v, dtype=np.float64) for v in col if _is_vector(v)]
            widths = {len(r) for r in rows}
            if len(widths) != 1 or not all(np.isfinite(r).all() for r in rows):
                raise InputError(name, f"holds vectors of lengths {sorted(widths)[:5]} or with missing numbers",
                                 "give every row a vector of one length with finite values (or none)")
            norm = float(np.mean([np.linalg.norm(r) for r in rows]))
            specs.append(FeatureSpec(name, kind, std=norm if norm > 0 else 1.0, width=widths.pop()))
    return specs


def encode(df: pd.DataFrame | Mapping[str, np.ndarray], specs: list[FeatureSpec],
           separator: str = "|") -> dict[str, np.ndarray]:
    """Encode the columns of `df` (a frame, or named numpy columns of one length) named by `specs`; a missing
    column encodes as all-missing."""
    out: dict[str, np.ndarray] = {}
    n = len(df) if isinstance(df, pd.DataFrame) else len(next(iter(df.values()), ()))
    for spec in specs:
        col = df[spec.name] if spec.name in df else np.full(n, None, object)
        if not (spec.kind == "numeric" and isinstance(col, np.ndarray) and col.dtype.kind in "biuf"):
            col = pd.Series(col)                # numbers in numpy skip pandas: a served request's path
        if spec.kind == "categorical":
            lookup = {v: i + 1 for i, v in enumerate(spec.vocab)}
            out[spec.name] = col.astype("string").map(lookup).fillna(0).to_numpy(np.int64)
        elif spec.kind == "multi":
            lookup = {v: i + 1 for i, v in enumerate(spec.vocab)}
            out[spec.name] = _pad([[lookup.get(v, 0) for v in vals] for vals in _split(col, separator)], MAX_MULTI)
        elif spec.kind == "numeric":
            x = _numeric(col)
            if spec.low is not None:
                x = np.clip(x, spec.low, spec.high)
            x = (x - spec.mean) / spec.std
            out[spec.name] = np.where(np.isfinite(x), x, 0.0).astype(np.float32)     # missing: the mean
        elif spec.kind == "text":
            out[spec.name] = _pad([hash_tokens(t, spec.buckets) for t in col.fillna("").astype(str)], MAX_TOKENS)
        elif spec.kind == "ngrams":
            out[spec.name] = _pad([hash_ngrams(t, spec.buckets) for t in col.fillna("").astype(str)], MAX_NGRAMS)
        elif spec.kind == "vector":
            out[spec.name] = _vectors(col, spec)
    return out


def _is_vector(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and len(value) > 0


def _vectors(col, spec: FeatureSpec) -> np.ndarray:
    """[n, width] float32 rows over the fitted mean norm; a missing row, or one of another length, is zeros."""
    out = np.zeros((len(col), spec.width), np.float32)
    for i, value in enumerate(col):
        if _is_vector(value) and len(value) == spec.width:
            out[i] = np.nan_to_num(np.asarray(value, dtype=np.float32) / spec.std)
    return out


def hash_tokens(text: str, buckets: int) -> list[int]:
    """Lower-cased words hashed (stable across runs and machines) into 1..buckets."""
    return [zlib.crc32(w.encode()) % buckets + 1 for w in _WORD.findall(text.lower())]


def hash_ngrams(text: str, buckets: int) -> list[int]:
    """Lower-cased words and each word's character 3-grams (with boundary marks: "<sh", "sho", ..., "es>"),
    hashed into 1..buckets: "shoe" and "shoes" share most of theirs, so a model can match forms it never
    saw together. Words first, so a long text keeps all its words before any 3-gram is cut."""
    words = _WORD.findall(text.lower())
    grams = [f"#{w}" for w in words]
    for w in words:
        marked = f"<{w}>"
        grams += [marked[i:i + 3] for i in range(len(marked) - 2)]
    return [zlib.crc32(g.encode()) % buckets + 1 for g in grams]


def _split(col: pd.Series, separator: str) -> list[list[str]]:
    return [[v.strip() for v in str(x).split(separator) if v.strip()] if pd.notna(x) else [] for x in col]


def _numeric(col: pd.Series | np.ndarray) -> np.ndarray:
    if isinstance(col, np.ndarray):             # already numbers (bool, int, float)
        return col.astype(np.float64)
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return col.astype("float64").to_numpy()
    x = pd.to_numeric(col, errors="coerce")
    if x.notna().mean() < 0.5:
        dates = _as_dates(col.astype("string"))
        x = dates.dt.year + dates.dt.day_of_year / 366.0
    return x.astype("float64").to_numpy()


def _as_dates(text: pd.Series) -> pd.Series:
    return pd.to_datetime(text, errors="coerce", format="mixed", utc=True)


def _pad(rows: list[list[int]], cap: int) -> np.ndarray:
    width = max(1, min(cap, max((len(r) for r in rows), default=1)))
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        r = r[:width]
        out[i, : len(r)] = r
    return out
