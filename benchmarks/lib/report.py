"""How the benchmarks print: wide enough for their tables when the output goes to a file or a pipe (Rich
would wrap every column at 80 characters there)."""

from __future__ import annotations

import sys

from rich.console import Console

LOG_WIDTH = 160


def console() -> Console:
    """The terminal's width on a terminal, else LOG_WIDTH."""
    return Console(width=None if sys.stdout.isatty() else LOG_WIDTH)
