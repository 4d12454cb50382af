"""The consoles every command prints to: how wide, and whether in colour.

Width: `COLUMNS` when it is set (on a terminal, into a pipe or a file alike),
else the terminal's width, else 200 (a CI log or a file: wide enough that
tables rarely wrap). Tables never cut a word to fit (fwmatrix/report/tables.py).

Colour: `fwmatrix --color auto|always|never` (default auto). auto colours on
a terminal only, and not at all when NO_COLOR is set and not empty
(https://no-color.org); always colours even into a pipe (`| less -R`), NO_COLOR
or not — a flag given for one run outranks the environment; never prints no
escape codes at all. Without colour the text is the same, styles and all
dropped.

rich is imported when a console is made, not with this module: every command
imports it (`fwmatrix.cli` does), and a command that prints nothing through
rich (`--version`, `compile` to standard output) never pays for rich.console.
"""

from __future__ import annotations

import io
import os
import sys
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from rich.console import Console

COLORS = ("auto", "always", "never")
PLAIN_WIDTH = 200  # a pipe or a file without COLUMNS

_color = "auto"


def set_color(choice: str) -> None:
    """The `--color` of this run (fwmatrix's group sets it before the command runs)."""
    global _color
    _color = choice


def _columns() -> int | None:
    value = os.environ.get("COLUMNS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def _colours(stream: Any) -> bool:
    if _color != "auto":
        return _color == "always"
    return not os.environ.get("NO_COLOR") and _isatty(stream)


def make_console(stderr: bool = False) -> Console:
    """A console on standard output (or error), soft-wrapped: lines are never cut."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = _columns() or (None if _isatty(stream) else PLAIN_WIDTH)
    if _colours(stream):
        console = Console(stderr=stderr, width=width, highlight=False, soft_wrap=True, force_terminal=True, no_color=False)
        if console.color_system is None:  # TERM says dumb or nothing: colour was asked for all the same
            console = Console(stderr=stderr, width=width, highlight=False, soft_wrap=True, force_terminal=True, no_color=False,
                              color_system="standard")
        return console
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=True, color_system=None)


def recorded(printer: Callable[[Console], None]) -> str:
    """What a printer writes to a console, as plain text (a table report written with --output FILE)."""
    from rich.console import Console

    console = Console(record=True, width=_columns() or PLAIN_WIDTH, file=io.StringIO(), highlight=False, soft_wrap=True)
    printer(console)
    return console.export_text()


def _isatty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _ErrorConsole:
    """Standard error as a console made when something is printed: after `--color` is known,
    and on the stream of the moment (click's test runner swaps it)."""

    def print(self, *objects: Any, **options: Any) -> None:
        make_console(stderr=True).print(*objects, **options)


err_console = _ErrorConsole()
