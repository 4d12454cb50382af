"""A space's canonical boxes: one decomposition per set of packets, whatever boxes made it.

The dimensions are taken in the order ORDER: conntrack state, out-interface,
destination, in-interface, source, protocol, port (the states first, so that a
port forward's translated packets are boxes of their own; where packets go
before where they come from; the services last, where the reading conventions
of fwmatrix.space.as_read apply; of the orders of the first five, the one that
printed the fewest regions for the test suite's findings). The values of the first
dimension fall into classes: two values are in one class when the packets
that have them are the same in every other dimension (equal cross-sections).
Each class is one value set of that dimension (an interval set, or a bitmask),
and its cross-section is written canonically in the same way, dimension after
dimension; the last dimension's values are one set. A box is a class's value
with a box of its cross-section. So the boxes are disjoint, their union is the
set, and they are the same for the same set given in any boxes (shuffled,
split, repeated, overlapping). They are sorted by ORDER.

The classes of an interval dimension come from a sweep: the boundaries of the
boxes' intervals cut the line into segments; a segment tree over the segments
holds each box at the O(log n) nodes its intervals cover, and a node's
cross-section is its parent's (already canonical, so small where the answer
is small) joined with its own boxes. Many boxes over one segment (10,000
overlapping boxes) thus cost what their distinct cross-sections cost, not
a segment times the boxes over it.
"""

from __future__ import annotations

from operator import attrgetter, itemgetter
from typing import Iterable, Sequence

from fwmatrix.intervals import iv_norm
from fwmatrix.space.box import Box

ORDER = ("ct", "oif", "dst", "iif", "src", "proto", "dport")
_MASKS = frozenset({"iif", "oif", "ct"})  # bitmask dimensions; the others are interval sets
_KIND = tuple(dim in _MASKS for dim in ORDER)  # by column of a whole row: a bitmask?
_ROW = attrgetter(*ORDER)
_BOX_ARGS = itemgetter(*(ORDER.index(d) for d in ("iif", "oif", "src", "dst", "proto", "dport", "ct")))  # Box's own order

Row = tuple  # a box's values in ORDER (or in the order of the dimensions a step works on)


def canonical_boxes(boxes: Sequence[Box]) -> list[Box]:
    """The canonical boxes of the boxes' union (see the module doc), sorted by ORDER."""
    if len(boxes) < 2:
        return list(boxes)  # one box is its own canonical form (its values are canonical sets)
    rows = list(dict.fromkeys(map(_ROW, boxes)))
    return [Box(*_BOX_ARGS(row)) for row in _canon(rows, _KIND)]


def _canon(rows: Sequence[Row], kinds: tuple[bool, ...]) -> tuple[Row, ...]:
    """The canonical rows (sorted) of the union of `rows`, whose columns are dimensions of the kinds
    `kinds` (True: a bitmask), in ORDER; no two rows are equal and none is empty in any dimension."""
    if len(rows) == 1:
        return (rows[0],)
    columns = list(zip(*rows))
    varying = [j for j, column in enumerate(columns) if column.count(column[0]) < len(column)]
    if len(varying) < len(kinds):
        # a dimension that every row has the same value in has that value in every canonical box:
        # the others' canonical rows, with it put back
        template = list(rows[0])
        out = []
        for sub in _canon(list(dict.fromkeys(tuple(row[j] for j in varying) for row in rows)), tuple(kinds[j] for j in varying)):
            for j, value in zip(varying, sub):
                template[j] = value
            out.append(tuple(template))
        return tuple(out)
    if len(kinds) == 1:
        return ((join_values(columns[0], kinds[0]),),)
    classes = _bit_classes(rows, kinds) if kinds[0] else _segment_classes(rows, kinds)
    out = []
    for value, cross in sorted(classes, key=_first):
        out += [(value,) + sub for sub in cross]
    return tuple(out)


def _first(pair: tuple) -> object:
    return pair[0]


def join_values(values: Sequence, mask: bool) -> object:
    """The union of one dimension's values: bitmasks ORed, interval sets normalized together."""
    if mask:
        joined = 0
        for value in values:
            joined |= value
        return joined
    return iv_norm(pair for value in values for pair in value)


def _bit_classes(rows: Sequence[Row], kinds: tuple[bool, ...]) -> list[tuple[int, tuple[Row, ...]]]:
    """A bitmask dimension's classes: bit by bit (interfaces and states are few), the rows that have it."""
    bits = join_values([row[0] for row in rows], True)
    assert isinstance(bits, int)
    crosses: dict[tuple[int, ...], tuple[Row, ...]] = {}  # by the rows that have a bit
    values: dict[tuple[Row, ...], int] = {}
    bit = 1
    while bit <= bits:
        if bits & bit:
            having = tuple(i for i, row in enumerate(rows) if row[0] & bit)
            cross = crosses.get(having)
            if cross is None:
                cross = crosses[having] = _canon(list(dict.fromkeys(rows[i][1:] for i in having)), kinds[1:])
            values[cross] = values.get(cross, 0) | bit
        bit <<= 1
    return [(value, cross) for cross, value in values.items()]


def _segment_classes(rows: Sequence[Row], kinds: tuple[bool, ...]) -> list[tuple[tuple[tuple[int, int], ...], tuple[Row, ...]]]:
    """An interval dimension's classes, by a segment tree over the segments its boundaries make."""
    pieces = sorted((low, high, i) for i, row in enumerate(rows) for low, high in row[0])
    if all(pieces[j][0] > pieces[j - 1][1] for j in range(1, len(pieces))):
        # no two rows share a value (hosts, say): a value's cross-section is its row's rest
        by_rest: dict[Row, list[tuple[int, int]]] = {}
        for low, high, i in pieces:
            by_rest.setdefault(rows[i][1:], []).append((low, high))
        return [(iv_norm(pairs), (rest,)) for rest, pairs in by_rest.items()]
    points = sorted({p for row in rows for low, high in row[0] for p in (low, high + 1)})
    at = {p: i for i, p in enumerate(points)}
    segments = len(points) - 1
    size = 1
    while size < segments:
        size <<= 1
    held: dict[int, list[Row]] = {}  # node -> the rests of the rows whose intervals cover it whole
    for row in rows:
        rest = row[1:]
        for low, high in row[0]:
            left, right = at[low] + size, at[high + 1] + size
            while left < right:
                if left & 1:
                    held.setdefault(left, []).append(rest)
                    left += 1
                if right & 1:
                    right -= 1
                    held.setdefault(right, []).append(rest)
                left >>= 1
                right >>= 1
    # a node's cross-section: its parent's joined with its own rows (parents come first by number)
    cross: dict[int, tuple[Row, ...]] = {}
    for node in sorted(held):
        above = node >> 1
        while above and above not in cross:
            above >>= 1
        inherited = cross.get(above, ()) if above else ()
        cross[node] = _canon(list(dict.fromkeys(inherited + tuple(held[node]))), kinds[1:])
    values: dict[tuple[Row, ...], list[tuple[int, int]]] = {}
    for segment in range(segments):
        node = segment + size
        while node and node not in cross:
            node >>= 1
        if node:
            values.setdefault(cross[node], []).append((points[segment], points[segment + 1] - 1))
    return [(iv_norm(pairs), c) for c, pairs in values.items()]
