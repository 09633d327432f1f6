"""Where a verb writes a table: checked before the work starts, never an input or a model's own file, never
a device, FIFO or folder; written atomically in the format its extension names, or as CSV to stdout (`-`)."""

from __future__ import annotations

import csv
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
        text = df.select_dtypes(include=["object", "string"])
        breaks = {c: text[c].astype(str).str.contains("[\t\r\n]") for c in text.columns}
        if self.format == "tsv" and any(b.any() for b in breaks.values()):
            column = next(c for c, b in breaks.items() if b.any())
            raise InputError(str(self), f"a {column} value holds a tab or a line break, which TSV cannot hold",
                             "write .csv or .parquet")
        # a value holding a carriage return is quoted only when \r ends lines too (else it reads as a break)
        crlf = any(text[c].astype(str).str.contains("\r", regex=False).any() for c in text.columns)
        options = {"index": False, "float_format": float_format, "lineterminator": "\r\n" if crlf else "\n",
                   "sep": "\t" if self.format == "tsv" else ",",
                   "quoting": csv.QUOTE_NONE if self.format == "tsv" else csv.QUOTE_MINIMAL}
        if self.path is None:
            df.to_csv(sys.stdout, **options)
            sys.stdout.flush()
            return
        with atomic_path(self.path) as tmp:
            if self.format == "parquet":
                df.to_parquet(tmp, index=False)
            else:
                df.to_csv(tmp, compression="gzip" if self.path.name.lower().endswith(".gz") else None, **options)


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
