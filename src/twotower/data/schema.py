"""Read events/items/users from CSV or Parquet and check them against the data contract.

Every problem raises one `InputError` naming the file, the row or column, and the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import DataConfig
from ..errors import InputError

EVENT_COLUMNS = ("user_id", "item_id", "timestamp")
RESERVED_EVENT_COLUMNS = {"user_id", "item_id", "timestamp", "action", "query"}


def read_table(path: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """Read one CSV or Parquet file; ids in `id_column` become strings and must be present and unique."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "file not found", "check the path")
    suffixes = "".join(path.suffixes).lower()
    try:
        if suffixes.endswith(".parquet") or suffixes.endswith(".pq"):
            df = pd.read_parquet(path)
        elif any(suffixes.endswith(s) for s in (".csv", ".csv.gz", ".tsv", ".tsv.gz")):
            df = pd.read_csv(path, sep="\t" if ".tsv" in suffixes else ",", low_memory=False)
        else:
            raise InputError(str(path), f"unknown file type '{suffixes or '(none)'}'", "give a .csv, .tsv or .parquet file")
    except InputError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise InputError(str(path), "the file is empty", "give a file with a header row and data rows") from exc
    except Exception as exc:  # parser errors from pandas/pyarrow carry the line
        raise InputError(str(path), f"cannot be parsed ({exc})", "check the file is valid CSV or Parquet") from exc
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise InputError(str(path), "has a header but no rows", "give a file with data rows")
    return validate_table(df, id_column, path) if id_column is not None else df


def validate_table(df: pd.DataFrame, id_column: str, path: Path) -> pd.DataFrame:
    """Check an item or user table: the id column is present, filled and unique; ids become strings."""
    df = df.copy()
    _require_columns(df, [id_column], path)
    df[id_column] = _ids(df[id_column], id_column, path)
    dup = df[id_column].duplicated(keep=False)
    if dup.any():
        first = df.index[dup][:2].tolist()
        raise InputError(
            str(path),
            f"{id_column} '{df[id_column][first[0]]}' appears more than once ({_where(path, first[0])} and {_where(path, first[1])})",
            f"keep one row per {id_column}",
        )
    return df


def read_events(path: str | Path, config: DataConfig) -> pd.DataFrame:
    """Read and validate an event log into columns user_id, item_id (str), timestamp (float seconds), weight, ... .

    Rows keep their file order in column `order`, which breaks ties between equal timestamps.
    """
    return validate_events(read_table(path), config, Path(path))


def validate_events(df: pd.DataFrame, config: DataConfig, path: Path) -> pd.DataFrame:
    """Check an event table already in memory (from a file at `path` or a loader) and add weight/order."""
    df = df.copy()
    _require_columns(df, EVENT_COLUMNS, path)
    for col in ("user_id", "item_id"):
        df[col] = _ids(df[col], col, path)
    df["timestamp"] = parse_timestamps(df["timestamp"], path)
    df["weight"] = action_weights(df["action"], config, path) if "action" in df.columns else config.default_weight
    df["weight"] = df["weight"].astype("float32")
    df["order"] = np.arange(len(df), dtype=np.int64)
    return df


def context_columns(events: pd.DataFrame) -> list[str]:
    """Event columns that describe the request (device, page, ...), not the interaction itself."""
    return [c for c in events.columns if c not in RESERVED_EVENT_COLUMNS | {"weight", "order"} and not c.startswith("_")]


def parse_timestamps(col: pd.Series, path: Path) -> pd.Series:
    """Unix seconds (numbers) or date-time strings -> float seconds since the epoch."""
    if pd.api.types.is_numeric_dtype(col):
        bad = col.isna() | ~np.isfinite(col.astype("float64"))
        if bad.any():
            raise InputError(str(path), f"timestamp is missing or not finite at {_where(path, col.index[bad][0])}",
                             "give every event a unix time in seconds or an ISO date-time")
        return col.astype("float64")
    if pd.api.types.is_datetime64_any_dtype(col):
        parsed = col if getattr(col.dt, "tz", None) is not None else col.dt.tz_localize("UTC")
        return (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().astype("float64")
    numbers = pd.to_numeric(col, errors="coerce")
    parsed = pd.to_datetime(col.where(numbers.isna()), errors="coerce", utc=True, format="mixed")
    seconds = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().fillna(numbers)
    bad = seconds.isna()
    if bad.any():
        i = col.index[bad][0]
        raise InputError(str(path), f"cannot parse timestamp '{col[i]}' at {_where(path, i)}",
                         "use unix seconds or an ISO 8601 date-time such as 2024-05-01T12:30:00")
    return seconds.astype("float64")


def action_weights(col: pd.Series, config: DataConfig, path: Path) -> pd.Series:
    """Map action names (or numbers) to label weights; an unknown name is an error listing the known ones."""
    numeric = pd.to_numeric(col, errors="coerce")
    names = col.astype("string").str.strip().str.lower()
    weights = names.map({k.lower(): v for k, v in config.actions.items()}).astype("float64")
    weights = weights.fillna(numeric)
    bad = weights.isna()
    if bad.any():
        i = col.index[bad][0]
        known = ", ".join(f"{k}={v:g}" for k, v in config.actions.items())
        raise InputError(str(path), f"unknown action '{col[i]}' at {_where(path, i)}",
                         f"use one of [{known}] or a number, or add it under [data.actions] in the config")
    if (weights < 0).any():
        i = col.index[weights < 0][0]
        raise InputError(str(path), f"negative action weight {weights[i]:g} at {_where(path, i)}",
                         "weights are >= 0: 0 marks a shown-but-not-chosen item")
    return weights


def _ids(col: pd.Series, name: str, path: Path) -> pd.Series:
    bad = col.isna() | (col.astype("string").str.strip() == "")
    if bad.any():
        raise InputError(str(path), f"{name} is empty at {_where(path, col.index[bad][0])}", f"give every row a {name}")
    if pd.api.types.is_float_dtype(col) and (col == col.round()).all():
        col = col.astype("int64")
    return col.astype(str).str.strip()


def _require_columns(df: pd.DataFrame, needed, path: Path) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputError(str(path), f"missing column(s) {', '.join(missing)} (found: {', '.join(df.columns)})",
                         f"rename your columns to {', '.join(needed)} or add them")


def _where(path: Path, index) -> str:
    """A row index as a person finds it: data row number, and the line in a CSV with a header."""
    if str(path).lower().endswith((".parquet", ".pq")):
        return f"row {index}"
    return f"line {int(index) + 2}"


def read_id_list(path: Path, column: str) -> list[str]:
    """Ids from a table (CSV/TSV/Parquet with `column`) or a text file with one id per line."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".parquet", ".pq", ".tsv"):
        return read_table(path, id_column=column)[column].astype(str).tolist()
    if not path.is_file():
        raise InputError(str(path), "file not found", f"pass a file of {column}s, one per line or as a table")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise InputError(str(path), f"no {column}s in the file", "put one id per line")
    return ids
