"""Errors a user can cause. Each carries the place in the input it is about."""

from __future__ import annotations

import difflib
import re
from typing import Iterable

# characters that would break a one-line message or drive a terminal: C0 and C1
# controls, DEL, and Unicode's line and paragraph separators
_UNPRINTABLE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """User text as it may appear in a message: its control characters escaped
    (`\\n`, `\\x00`), so a message stays one line and prints what the input holds."""
    return _UNPRINTABLE_RE.sub(lambda m: repr(m.group())[1:-1], text)


class FwmatrixError(Exception):
    """An error the user can fix: printed as one line (user text in it escaped), exit code 2."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        return one_line(f"{where}{self.message}")


class MatrixError(FwmatrixError):
    """The matrix file is not valid."""


class RulesetError(FwmatrixError):
    """A ruleset file fwmatrix is given (to audit) cannot be read: an input error, exit 2."""


class BackendError(FwmatrixError):
    """A backend tool (nft, iptables-restore) refused or failed."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
