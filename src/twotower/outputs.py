"""Where a verb writes a table: checked before the work starts, never an input or a model's own file, never
a device, FIFO or folder; written atomically in the format its extension names, or as CSV to stdout (`-`)."""

from __future__ import annotations

import csv
import gzip
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from .atomic import atomic_path
from .data.schema import table_format
from .errors import InputError

STDOUT_NAMES = ("-", "/dev/stdout")


@dataclass(frozen=True)
class TableOutput:
    """A checked output: a regular file (existing or to be made; a symlink is followed) or stdout."""

    path: Path | None          # None: standard output
    format: str                # csv, tsv or parquet

    def __str__(self) -> str:
        return "standard output" if self.path is None else str(self.path)

    def write(self, df: pd.DataFrame, float_format: str | None = None) -> None:
        """Write `df` whole: a crash leaves the previous file (or none), never half a table. CSV quotes as RFC
        4180 does; TSV is literal (no quoting), so a value holding a tab or a line break is refused."""
        self.write_chunks([df], float_format, crlf=_has_carriage_return(df), columns=list(df.columns))

    def write_chunks(self, chunks: Iterable[pd.DataFrame], float_format: str | None = None, crlf: bool = False,
                     columns: list[str] | None = None) -> int:
        """Write a table that arrives in chunks of the same columns, each written as it comes: memory holds
        one chunk, not the table; the file appears whole or not at all, as with `write`. `crlf`: some value
        holds a carriage return (lines then end in CRLF, so it can be quoted); `columns` heads a table with
        no chunk. Returns the rows written."""
        options = {"index": False, "float_format": float_format, "lineterminator": "\r\n" if crlf else "\n",
                   "sep": "\t" if self.format == "tsv" else ",",
                   "quoting": csv.QUOTE_NONE if self.format == "tsv" else csv.QUOTE_MINIMAL}
        if self.path is None:
            def to_stdout(df: pd.DataFrame, first: bool) -> None:
                df.to_csv(sys.stdout, header=first, **options)
                sys.stdout.flush()
            return _stream(chunks, to_stdout, columns)
        with atomic_path(self.path) as tmp:
            if self.format == "parquet":
                return _parquet_chunks(tmp, chunks, columns)
            gz = self.path.name.lower().endswith(".gz")
            with (gzip.open(tmp, "wt", newline="") if gz else open(tmp, "w", newline="")) as fh:
                return _stream(chunks, lambda df, first: df.to_csv(fh, header=first, **options), columns,
                               self if self.format == "tsv" else None)


def _has_carriage_return(df: pd.DataFrame) -> bool:
    text = df.select_dtypes(include=["object", "string"])
    return any(text[c].astype(str).str.contains("\r", regex=False).any() for c in text.columns)


def _check_tsv(df: pd.DataFrame, out: TableOutput) -> None:
    """TSV has no quoting: a value holding a tab or a line break is refused."""
    text = df.select_dtypes(include=["object", "string"])
    for column in text.columns:
        if text[column].astype(str).str.contains("[\t\r\n]").any():
            raise InputError(str(out), f"a {column} value holds a tab or a line break, which TSV cannot hold",
                             "write .csv or .parquet")


def _stream(chunks: Iterable[pd.DataFrame], write, columns: list[str] | None, tsv: TableOutput | None = None) -> int:
    """write(chunk, first) for each chunk (the header with the first); a header alone when none came."""
    rows, first = 0, True
    for df in chunks:
        if tsv is not None:
            _check_tsv(df, tsv)
        write(df, first)
        rows, first = rows + len(df), False
    if first:
        write(pd.DataFrame(columns=columns or []), True)
    return rows


def _parquet_chunks(path: Path, chunks: Iterable[pd.DataFrame], columns: list[str] | None) -> int:
    """One Parquet file, a row group per chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer, rows = None, 0
    try:
        for df in chunks:
            table = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table.cast(writer.schema))
            rows += len(df)
        if writer is None:
            pd.DataFrame(columns=columns or []).to_parquet(path, index=False)
    finally:
        if writer is not None:
            writer.close()
    return rows


def table_output(path: str | Path | TableOutput, flag: str = "--out", inputs: Iterable[str | Path | None] = (),
                 protected: Iterable[str | Path] = ()) -> TableOutput:
    """Check an output path before any work: a table extension (.csv, .tsv, .parquet, .csv.gz) or `-`; not
    one of `inputs` (a link to one included); not inside `protected` (a model's own files); not a folder,
    device or FIFO; in a folder that exists or can be made, and can be written."""
    if isinstance(path, TableOutput):
        return path
    if str(path) in STDOUT_NAMES:
        return TableOutput(None, "csv")
    given = Path(path)
    fmt = table_format(given)
    if fmt is None:
        raise InputError(flag, f"'{given}' does not end in .csv, .tsv or .parquet",
                         "name the file with the extension of the format you want, or give - for standard output")
    try:
        real = given.resolve()     # a symlink is written through: its target gets the table
    except (OSError, RuntimeError) as exc:      # a symlink loop
        raise InputError(flag, f"'{given}' cannot be resolved ({exc})", "give the path of a file to write") from exc
    if real.exists() and not real.is_file():
        what = "a folder" if real.is_dir() else "not a regular file (a device, FIFO or socket)"
        raise InputError(flag, f"'{given}' is {what}", "give the path of a file to write, or - for standard output")
    for source in inputs:
        if source is not None and Path(source).exists() and real.exists() and os.path.samefile(real, source):
            raise InputError(flag, f"'{given}' is the input file {source}", "write the output to another file")
    for owned in protected:
        owned = Path(owned).resolve()
        if real == owned or owned in real.parents:
            raise InputError(flag, f"'{given}' is part of the model ({owned})", "write the output elsewhere")
    folder = next(p for p in real.parents if p.exists())
    try:                            # the one sure test that a file can be made there: make one
        os.rmdir(tempfile.mkdtemp(prefix=".twotower-check-", dir=folder))
    except OSError as exc:
        raise InputError(flag, f"cannot write in '{folder}' ({exc.strerror})", "choose a folder you can write "
                         "to") from exc
    return TableOutput(real, fmt)
