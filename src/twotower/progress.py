"""One progress-bar style for every long job: description, bar, count, rate, elapsed and ETA."""

from __future__ import annotations

import os
import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(enabled: bool = True) -> Progress:
    """A rich progress bar; hidden when disabled or when TWOTOWER_QUIET is set."""
    quiet = not enabled or bool(os.environ.get("TWOTOWER_QUIET"))
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        disable=quiet, transient=False, console=None if sys.stderr.isatty() else None,
    )
