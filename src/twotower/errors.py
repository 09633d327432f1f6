"""The one error type users see: it names what is wrong, where, and how to fix it."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (a file, a column, a row, a config key).

    The message always says where (file, row or column) and what to do about it; the CLI prints it and
    exits non-zero without a traceback.
    """

    def __init__(self, where: str, problem: str, fix: str):
        self.where, self.problem, self.fix = where, problem, fix
        super().__init__(f"{where}: {problem}. Fix: {fix}")
