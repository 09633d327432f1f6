"""One progress-bar style for every long job: description, bar, count, rate, elapsed and ETA."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(enabled: bool = True) -> Progress:
    """A rich progress bar (on stderr); hidden when disabled or when TWOTOWER_QUIET is set.

    Tasks take a `rate` field, e.g. `bar.add_task("training", total=n, rate="")`.
    """
    quiet = not enabled or bool(os.environ.get("TWOTOWER_QUIET"))
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=Console(stderr=True), disable=quiet,
    )
