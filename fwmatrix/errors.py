"""Errors a user can cause. Each carries the place in the input it is about."""

from __future__ import annotations

import difflib
from typing import Iterable


class FwmatrixError(Exception):
    """An error the user can fix: printed as one line, exit code 2."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        return f"{where}{self.message}"


class MatrixError(FwmatrixError):
    """The matrix file is not valid."""


class BackendError(FwmatrixError):
    """A backend tool (nft, iptables-restore) refused or failed."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
