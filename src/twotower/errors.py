"""The one error type users see: it names what is wrong, where, and how to fix it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


class InputError(ValueError):
    """Bad user input (a file, a column, a row, a config key).

    The message always says where (file, row or column) and what to do about it; the CLI prints it and
    exits non-zero without a traceback.
    """

    def __init__(self, where: str, problem: str, fix: str):
        self.where, self.problem, self.fix = where, problem, fix
        super().__init__(f"{where}: {problem}. Fix: {fix}")


def read_stored(path: Path, reader: Callable[[Path], T], fix: str) -> T:
    """`reader(path)` for a file or folder the product wrote (a model's files, an index, a store), or one
    InputError naming it when it is missing or damaged."""
    if not path.exists():
        raise InputError(str(path), "is missing", fix)
    try:
        return reader(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(str(path), f"is damaged and cannot be read ({first_line(exc)})", fix) from exc


def first_line(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
