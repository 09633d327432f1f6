"""Read events/items/users from CSV or Parquet and check them against the data contract.

Every problem raises one `InputError` naming the file, the row or column, and the fix.
"""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES

from ..config import MAX_WEIGHT, DataConfig
from ..errors import InputError

log = logging.getLogger(__name__)

EVENT_COLUMNS = ("user_id", "item_id", "timestamp")
RESERVED_EVENT_COLUMNS = {"user_id", "item_id", "timestamp", "action", "query"}
TEXT_COLUMNS = ("user_id", "item_id", "query", "action")   # read verbatim from text: never numbers, never NA
TIMESTAMP_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
EARLIEST, LATEST = -2_208_988_800.0, 7_258_118_400.0     # 1900-01-01 and 2200-01-01 in unix seconds


def table_format(path: str | Path) -> str | None:
    """'csv', 'tsv' or 'parquet' from a file name's extension (compressed text included), else None."""
    name = Path(path).name.lower()
    for fmt, suffixes in (("parquet", (".parquet", ".pq")), ("tsv", (".tsv", ".tsv.gz")), ("csv", (".csv", ".csv.gz"))):
        if name.endswith(suffixes):
            return fmt
    return None


def read_text_table(path: Path, sep: str) -> pd.DataFrame:
    """CSV (RFC 4180 quoting) or TSV (literal: no quoting, so a quote is part of the value) with the id, query
    and action columns read as the exact strings in the file (`007`, `1.5` and `NA` stay themselves); other
    columns get pandas' usual type inference and missing values."""
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    header = [str(c) for c in pd.read_csv(path, sep=sep, nrows=0, quoting=quoting).columns]
    verbatim = [c for c in header if c.strip() in TEXT_COLUMNS]
    df = pd.read_csv(path, sep=sep, low_memory=False, dtype={c: str for c in verbatim}, keep_default_na=False,
                     na_values={c: sorted(STR_NA_VALUES) for c in header if c not in verbatim}, quoting=quoting)
    for c in verbatim:       # an unmatched quote makes one "value" of the rows after it: refuse, name the line
        multi = df[c].str.contains("\n", regex=False)
        if multi.any():
            swallowed = [v for v in df[c][multi] if any(line.count(sep) >= len(header) - 1
                                                         for line in v.split("\n")[1:])]
            if swallowed:
                i = df.index[multi & df[c].isin(swallowed)][0]
                raise InputError(str(path), f"a quote opened in column {c} at {_where(path, i)} is never closed and "
                                 "swallows the rows after it", "close or remove the stray quote (\") there")
    return df


def read_items(path: str | Path) -> pd.DataFrame:
    """An items table, with each `<stem>.<column>.npy` beside it (one row per table row: image or other
    precomputed embeddings) as a vector column of that name."""
    path = Path(path)
    table = read_table(path, id_column="item_id")
    stem = path.name[:-len("".join(path.suffixes))] if path.suffixes else path.name
    for extra in sorted(path.parent.glob(f"{stem}.*.npy")):
        column = extra.name[len(stem) + 1:-len(".npy")]
        try:
            vectors = np.load(extra, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(str(extra), f"is not a readable .npy array ({exc})", "save it with numpy.save") from exc
        if vectors.ndim != 2 or len(vectors) != len(table) or column in table.columns:
            raise InputError(str(extra), f"holds an array of shape {vectors.shape} for a table of {len(table)} rows"
                             + (f" that already has a column {column!r}" if column in table.columns else ""),
                             "give one row per item, in the items table's order, named after a new column")
        table[column] = list(vectors.astype(np.float32))
    return table


def read_table(path: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """Read one CSV or Parquet file; ids in `id_column` become strings and must be present and unique."""
    path = Path(path)
    require_file(path)
    fmt = table_format(path)
    try:
        if fmt == "parquet":
            df = pd.read_parquet(path)
        elif fmt is not None:
            df = read_text_table(path, "\t" if fmt == "tsv" else ",")
        else:
            suffix = "".join(path.suffixes) or "(none)"
            raise InputError(str(path), f"unknown file type '{suffix}'", "give a .csv, .tsv or .parquet file")
    except InputError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise InputError(str(path), "the file is empty", "give a file with a header row and data rows") from exc
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"is not UTF-8 text (line {first_non_utf8_line(path)})",
                         "save the file as UTF-8") from exc
    except Exception as exc:  # parser errors from pandas/pyarrow carry the line
        raise InputError(str(path), f"cannot be parsed ({exc})", "check the file is valid CSV or Parquet") from exc
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise InputError(str(path), "has a header but no rows", "give a file with data rows")
    return validate_table(df, id_column, path) if id_column is not None else df


def require_file(path: Path, fix: str = "check the path") -> None:
    """A clear error unless `path` is a regular file (a folder or a device is named as such)."""
    if not path.exists():
        raise InputError(str(path), "file not found", fix)
    if path.is_dir():
        raise InputError(str(path), "is a folder", "give the path of a file inside it")
    if not path.is_file():
        raise InputError(str(path), "is not a regular file (a device, FIFO or socket)", "give the path of a file")


def first_non_utf8_line(path: Path) -> int:
    """The 1-based line of the first byte sequence that is not UTF-8 (0 if there is none)."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


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
    for reserved in ("weight", "order"):
        if reserved in df.columns:
            raise InputError(str(path), f"column '{reserved}' is a name twotower uses for itself",
                             "give label weights as numbers in the action column, and rename any other such "
                             "column")
    for col in ("user_id", "item_id"):
        df[col] = _ids(df[col], col, path)
    df["timestamp"] = parse_timestamps(df["timestamp"], path, config.timestamp_unit)
    df["weight"] = action_weights(df["action"], config, path) if "action" in df.columns else config.default_weight
    df["weight"] = df["weight"].astype("float32")
    df["order"] = np.arange(len(df), dtype=np.int64)
    return df


def validate_event_rows(rows: list[dict], config: DataConfig) -> dict[str, np.ndarray] | None:
    """`validate_events` for the common small batch a service receives (non-blank string ids, timestamps as
    unix seconds, actions the config names), checked without pandas: the same columns (`event_columns`), or
    None when anything needs `validate_events` itself (which then names the problem)."""
    if config.timestamp_unit not in ("auto", "s") or not rows:
        return None
    names = {k.lower(): v for k, v in config.actions.items()}
    with_action = "action" in rows[0]
    weights = []
    for row in rows:
        if "weight" in row or "order" in row or ("action" in row) != with_action:
            return None
        for key in ("user_id", "item_id"):
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                return None
        t = row.get("timestamp")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not EARLIEST <= t <= LATEST:
            return None
        action = row.get("action", None)
        if with_action and (not isinstance(action, str) or action.strip().lower() not in names):
            return None
        weights.append(names[action.strip().lower()] if with_action else config.default_weight)
    if not all(0 <= w <= MAX_WEIGHT for w in weights):
        return None
    columns = list(dict.fromkeys(key for row in rows for key in row))       # each row's keys, first seen first
    out = {c: _column_array([row.get(c) for row in rows]) for c in columns}
    out["timestamp"] = np.array([row["timestamp"] for row in rows], dtype=np.float64)
    return {**out, "weight": np.array(weights, dtype=np.float32), "order": np.arange(len(rows), dtype=np.int64)}


def _column_array(values: list) -> np.ndarray:
    """Numbers as numbers, anything else (text, missing values, mixed) as objects, as a frame would type them."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.asarray(values)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def context_columns(events: pd.DataFrame) -> list[str]:
    """Event columns that describe the request (device, page, ...), not the interaction itself."""
    return [c for c in events.columns if c not in RESERVED_EVENT_COLUMNS | {"weight", "order"} and not c.startswith("_")]


def parse_timestamps(col: pd.Series, path: Path, unit: str = "auto") -> pd.Series:
    """Unix times (numbers) or date-time strings -> float seconds since the epoch, each between 1900 and 2200.

    Numbers are seconds unless `unit` says otherwise; with "auto", a column whose median is too large for
    seconds is read in the first of ms, us, ns that brings it into range (a warning says so)."""
    empty = _blank(col)
    if empty.any():
        i = col.index[empty][0]
        raise InputError(str(path), f"timestamp is empty at {_where(path, i)}",
                         "give every event a unix time in seconds or an ISO 8601 date-time")
    if pd.api.types.is_datetime64_any_dtype(col):
        parsed = col if getattr(col.dt, "tz", None) is not None else col.dt.tz_localize("UTC")
        seconds = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        numbers = pd.Series(np.nan, index=col.index)
    else:
        if pd.api.types.is_bool_dtype(col):
            raise InputError(str(path), f"cannot parse timestamp '{col.iloc[0]}' at {_where(path, col.index[0])}",
                             "give every event a unix time in seconds or an ISO 8601 date-time")
        numbers = pd.to_numeric(col, errors="coerce").astype("float64")
        seconds = _dates_to_seconds(col.where(numbers.isna()))
    bad = (seconds.isna() & numbers.isna()) | np.isinf(numbers)
    if bad.any():
        i = col.index[bad][0]
        raise InputError(str(path), f"cannot parse timestamp '{col[i]}' at {_where(path, i)}",
                         "give every event a unix time in seconds or an ISO 8601 date-time such as "
                         "2024-05-01T12:30:00")
    if numbers.notna().any():
        scale = _timestamp_scale(numbers.dropna(), unit, path)
        seconds = seconds.fillna(numbers / scale)
    out_of_range = (seconds < EARLIEST) | (seconds > LATEST)
    if out_of_range.any():
        i = col.index[out_of_range][0]
        raise InputError(str(path), f"timestamp '{col[i]}' at {_where(path, i)} is not between the years 1900 and "
                         "2200", "give unix seconds (or set data.timestamp_unit to ms, us or ns) or an ISO 8601 "
                         "date-time")
    return seconds.astype("float64")


def _dates_to_seconds(text: pd.Series) -> pd.Series:
    """Date-time strings -> unix seconds (NaN where there is none): vectorised, and value by value for
    those pandas cannot hold (years outside 1677-2262), so the range check can name them."""
    try:
        with warnings.catch_warnings():        # pandas warns about every format it tries
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
        seconds = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().astype("float64")
    except (OverflowError, pd.errors.OutOfBoundsDatetime):
        seconds = pd.Series(np.nan, index=text.index)
    retry = seconds.isna() & text.notna()
    seconds[retry] = [_date_seconds(v) for v in text[retry]]
    return seconds


def _date_seconds(value) -> float:
    """One date-time string -> unix seconds (UTC unless it says otherwise), NaN when it is no date."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stamp = pd.Timestamp(str(value).strip())
        if stamp is pd.NaT:
            return np.nan
        return (stamp if stamp.tzinfo is not None else stamp.tz_localize("UTC")).timestamp()
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
        return _far_date_seconds(str(value))


def _far_date_seconds(text: str) -> float:
    """Seconds of an ISO date outside pandas' range (e.g. 0001-01-01 or 9999-12-31), NaN if it is no date."""
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return np.nan
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds()


def _timestamp_scale(numbers: pd.Series, unit: str, path: Path) -> float:
    """How many of the column's units make a second: given, or guessed from the median's size."""
    if unit != "auto":
        return TIMESTAMP_UNITS[unit]
    median = float(numbers.abs().median())
    for name, scale in TIMESTAMP_UNITS.items():
        if median / scale <= LATEST:
            if name != "s":
                log.warning("%s: numeric timestamps are too large for seconds (median %.4g); reading them as %s "
                            "(set data.timestamp_unit to say so and silence this)", path, median, name)
            return scale
    return 1.0   # too large in every unit: the range check names the row


def action_weights(col: pd.Series, config: DataConfig, path: Path) -> pd.Series:
    """Map action names (or numbers) to label weights; an unknown name is an error listing the known ones."""
    empty = _blank(col)
    if empty.any():
        i = col.index[empty][0]
        raise InputError(str(path), f"action is empty at {_where(path, i)}",
                         "give every event an action (click, purchase, ...) or a number, or drop the column")
    numeric = pd.Series(np.nan, index=col.index) if pd.api.types.is_bool_dtype(col) else \
        pd.to_numeric(col, errors="coerce")
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
    if (weights > MAX_WEIGHT).any():
        i = col.index[weights > MAX_WEIGHT][0]
        raise InputError(str(path), f"action weight {weights[i]:g} at {_where(path, i)} is not a finite number up "
                         f"to {MAX_WEIGHT:g}", "give label weights on a small scale (click 1, purchase 5)")
    return weights


def _ids(col: pd.Series, name: str, path: Path) -> pd.Series:
    """Ids as exact strings. Text files are read verbatim; typed columns (Parquet, frames) print as their
    values, a whole float as the integer it holds (Parquet 7.0 is id 7, 1e20 is 100000000000000000000)."""
    bad = _blank(col)
    if bad.any():
        raise InputError(str(path), f"{name} is empty at {_where(path, col.index[bad][0])}", f"give every row a {name}")
    if pd.api.types.is_float_dtype(col):      # a whole float is spelled as the integer it holds: 7.0 is id 7
        return col.map(lambda x: str(int(x)) if float(x).is_integer() else str(x)).astype(str)
    return col.astype(str)


def _blank(col: pd.Series) -> pd.Series:
    """True where a cell is missing, empty or only whitespace."""
    return col.isna() | (col.astype("string").str.strip() == "")


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
    """Ids from a table (CSV/TSV/Parquet with `column`) or a text file with one id per line (each line is an
    id exactly as written; blank lines and a first line that is the column name are skipped)."""
    path = Path(path)
    if table_format(path):
        return read_table(path, id_column=column)[column].tolist()
    require_file(path, f"pass a file of {column}s, one per line or as a table")
    try:
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"is not UTF-8 text (line {first_non_utf8_line(path)})",
                         "save the file as UTF-8") from exc
    ids = [line.removesuffix("\r") for line in lines]
    ids = [i for i in ids if i.strip()]
    if ids and ids[0] == column:
        ids = ids[1:]
    if not ids:
        raise InputError(str(path), f"no {column}s in the file", "put one id per line")
    return ids
