"""The one kind of table fwmatrix prints: a rich table that wraps between words only.

Rich fits a table to the console by narrowing its widest columns, and folds a
word that no longer fits (`operator-rtp` as `operator` / `-rtp`, `tcp/5060` as
`tcp/506` / `0`). A name, an address or a port cut in two reads as another
one, so `Table` gives each column at least its longest word and narrows the
widest columns first, as rich does, down to that; when even
the longest words do not fit side by side, the table grows wider than the
console (consoles print soft-wrapped: lines are never cut) rather than split
a word.
"""

from __future__ import annotations

from typing import Iterable

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.table import Column
from rich.table import Table as RichTable
from rich.text import Text


class Table(RichTable):
    """rich.table.Table whose columns are never narrower than their longest word."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        spans = [self._span(console, column) for column in self.columns]
        borders = self._extra_width  # rich's own count of the vertical lines
        widths = _share(options.max_width - borders, spans)
        fixed = [column.width for column in self.columns]
        try:
            for column, width, (least, _) in zip(self.columns, widths, spans):
                if column.width is None:
                    column.width = width - self._get_padding_width(column._index)
            # wider than the console only when the longest words need it
            wide = options.update_width(max(options.max_width, sum(widths) + borders))
            lines = list(super().__rich_console__(console, wide))
        finally:
            for column, width in zip(self.columns, fixed):
                column.width = width
        yield from lines

    def _span(self, console: Console, column: Column) -> tuple[int, int]:
        """The column's least width (its longest word, or line when it does not wrap) and its
        natural width (its longest line), padding included."""
        padding = self._get_padding_width(column._index)
        if column.width is not None:
            return column.width + padding, column.width + padding
        texts = [_plain(console, column.header), *(_plain(console, cell) for cell in column.cells)]
        lines = [line for text in texts for line in text.splitlines()] or [""]
        longest = max(cell_len(line) for line in lines)
        words = lines if column.no_wrap else [word for line in lines for word in line.split()]
        least = max((cell_len(word) for word in words), default=0)
        least = max(least, column.min_width or 0)
        return least + padding, max(longest, least) + padding


def _plain(console: Console, cell: RenderableType) -> str:
    if isinstance(cell, str):
        return console.render_str(cell).plain  # markup read as it will be printed
    if isinstance(cell, Text):
        return cell.plain
    return ""  # another renderable: rich measures it itself


def _share(room: int, spans: Iterable[tuple[int, int]]) -> list[int]:
    """Column widths: each natural, then the widest narrowed a cell at a time (rich's order:
    short columns keep their lines whole), none below its least width."""
    spans = list(spans)
    widths = [natural for _, natural in spans]
    for _ in range(sum(widths) - room):
        narrowable = [i for i, (least, _) in enumerate(spans) if widths[i] > least]
        if not narrowable:
            break
        widths[max(narrowable, key=lambda i: widths[i])] -= 1
    return widths
