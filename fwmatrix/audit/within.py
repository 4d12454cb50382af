"""Whether a box lies within a space: a cheap test, exact when it says yes.

The comparison asks of every opening whether what it asks for is forwarded, of every grant
whether what it forwards is asked for, of every opening whether its replies come back: on a
ruleset that does what the matrix says, all of them are. Subtracting (Space.subtract) cuts
boxes and looks each up in an index of every interface pair and port bucket; here the
space's boxes are filed by their exact protocols and ports, and by where each address
interval starts, and a box is within when the boxes of its service (or of a wider one) that
hold it in every dimension but the addresses cover its two address sides: along the side
with the narrower intervals, cell by cell, the other side minus theirs. "No" means only
"not shown": the caller then works it out as before, so no finding depends on this test.

Two lookups by exact keys answer most boxes before that search: a box is within when, along
one of its address sides, each of its intervals is an interval of a space box of the same
interfaces, protocols and ports that holds its states and its whole other side (a grant's set
elements inside the openings' hosts, an opening's host inside a rule's hosts); and a box is
within one of the few space boxes of every address (`ct state established` accepted for all).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from heapq import heappop, heappush
from operator import itemgetter
from typing import Iterable

from fwmatrix.space import Box, Intervals, Space, iv_and, iv_norm, iv_sub, iv_widest

Service = tuple[Intervals, Intervals]  # (protocols, ports)


class _Starts:
    """One address side's intervals of some boxes, grouped by size class (shorter than
    2**c addresses) and sorted by start: those meeting [low, high] start in [low - 2**c, high].
    Each entry: the interval, the box's interfaces and states complemented (what a box must not
    have to be held), its other address side's first and last address, and that side, or None
    when it is one interval (its bounds are then all of it)."""

    __slots__ = ("classes",)

    def __init__(self, boxes: list[Box], src: bool):
        by_class: dict[int, list[_Entry]] = {}
        for box in boxes:
            side, other = (box.src, box.dst) if src else (box.dst, box.src)
            with_gaps = other if len(other) > 1 else None
            for low, high in side:
                by_class.setdefault((high - low).bit_length(), []).append(
                    (low, high, ~box.iif, ~box.oif, ~box.ct, other[0][0], other[-1][1], with_gaps, other))
        self.classes: list[tuple[int, int, int, list[int], list[_Entry]]] = []
        for size_class, entries in by_class.items():
            entries.sort(key=_start)
            starts = [entry[0] for entry in entries]
            # with the first start and the last start plus the reach: a class of the other family's sizes is passed by two comparisons
            self.classes.append((1 << size_class, starts[0], starts[-1] + (1 << size_class), starts, entries))


_Kind = tuple[int, int, int, int, int, int]  # interfaces, one protocol interval, one port interval
_Held = tuple[int, int, int, "Intervals | None", Intervals]  # states complemented, the other side's bounds, it when it has gaps, it
_Table = dict[tuple[int, int], list[_Held]]  # by an address interval of one side
_Block = tuple[int, int, int, int, int]  # states complemented, the source's bounds, the destination's
_Entry = tuple[int, int, int, int, int, int, int, "Intervals | None", Intervals]
_start = itemgetter(0)


class Within:
    """Tests boxes against one space (see the module doc)."""

    def __init__(self, space: Space):
        # the space's boxes of one protocol interval and one port interval by their interfaces and
        # service, and (when a box of theirs is first asked, each side when first asked: one side
        # answers most boxes) by each address interval of their sources, and of their destinations
        self._alike: dict[_Kind, list[Box]] = {}
        self._tables: dict[_Kind, list] = {}  # [by source or None, by destination or None, blocks, the boxes]
        for box in space.boxes:
            if len(box.proto) == 1 and len(box.dport) == 1:
                kind = (box.iif, box.oif, *box.proto[0], *box.dport[0])
                alike = self._alike.get(kind)
                if alike is None:
                    self._alike[kind] = [box]
                else:
                    alike.append(box)
        self._wide = [b for b in space.boxes if _spans_a_family(b.src) and _spans_a_family(b.dst)]  # of every address of a family
        self._wide_for: dict[tuple, list[Box]] = {}  # by a box's interfaces, states and service: the wide boxes that hold them
        self._shown: set[tuple] = set()  # boxes the search below showed within (openings share some)
        self._space = space
        self._by_service: dict[Service, list[Box]] | None = None  # the search's, made when first asked (_services)
        self._bounds: list[tuple] = []
        self._parts: dict[tuple, list[_Part]] = {}
        self._starts: dict[tuple[Service, bool], _Starts] = {}

    def holds_all(self, boxes: Iterable[Box]) -> bool:
        """True: every box lies within the space. False: not shown (it may still)."""
        holds = self.holds
        for box in boxes:
            if not holds(box):
                return False
        return True

    def holds(self, box: Box) -> bool:
        """True: the box lies within the space. False: not shown (it may still)."""
        if self._held_exactly(box) or (self._wide and self._in_wide(box)):
            return True
        key = (box.iif, box.oif, box.src, box.dst, box.proto, box.dport, box.ct)
        if key in self._shown:
            return True
        if self._held_in_parts(box):
            self._shown.add(key)
            return True
        return False

    def _held_exactly(self, box: Box) -> bool:
        """Whether, along one address side, each interval of the box is an interval of space
        boxes of its interfaces, protocols and ports that hold its states and (one, or together)
        its other side."""
        proto, dport = box.proto, box.dport
        if len(proto) != 1 or len(dport) != 1:
            return False
        kind = (box.iif, box.oif, *proto[0], *dport[0])
        tables = self._tables.get(kind)
        if tables is None:
            alike = self._alike.get(kind)
            if alike is None:
                return False
            # a few boxes of one interval each side, not two hosts (a rule of networks): they hold a box by their bounds
            blocks = [(~b.ct, b.src[0][0], b.src[0][1], b.dst[0][0], b.dst[0][1]) for b in alike
                      if len(b.src) == 1 and len(b.dst) == 1 and (b.src[0][0] != b.src[0][1] or b.dst[0][0] != b.dst[0][1])][:MAX_BLOCKS]
            tables = self._tables[kind] = [None, None, blocks, alike]
        ct, src, dst = box.ct, box.src, box.dst
        if tables[2]:
            s_first, s_last, d_first, d_last = src[0][0], src[-1][1], dst[0][0], dst[-1][1]
            for n_ct, s_low, s_high, d_low, d_high in tables[2]:
                if not ct & n_ct and s_low <= s_first and s_last <= s_high and d_low <= d_first and d_last <= d_high:
                    return True
        # along the side of more intervals first: the other side, the one each entry must hold, is then the shorter
        sides = ((src, dst, 0), (dst, src, 1)) if len(src) >= len(dst) else ((dst, src, 1), (src, dst, 0))
        for side, other, by in sides:
            table = tables[by]
            if table is None:
                table = tables[by] = _by_interval(tables[3], by == 0)
            first, last = other[0][0], other[-1][1]
            for interval in side:
                entries = table.get(interval)
                if entries is None:
                    break
                for n_ct, t_first, t_last, with_gaps, _ in entries:
                    if not ct & n_ct and t_first <= first and last <= t_last and (with_gaps is None or _inside(other, with_gaps)):
                        break  # this interval held
                else:  # by several together? (a network's rule with holes where other rules took hosts)
                    if len(entries) == 1 or not _within_union([theirs for n_ct, _, _, _, theirs in entries if not ct & n_ct], other):
                        break
            else:
                return True
        return False

    def _in_wide(self, box: Box) -> bool:
        """Whether a space box of every address of a family holds the box (replies within `ct state established`)."""
        key = (box.iif, box.oif, box.ct, box.proto, box.dport)
        holding = self._wide_for.get(key)
        if holding is None:
            holding = self._wide_for[key] = [
                w for w in self._wide if not (box.iif & ~w.iif or box.oif & ~w.oif or box.ct & ~w.ct or iv_sub(box.proto, w.proto) or iv_sub(box.dport, w.dport))]
        src, dst = box.src, box.dst
        return any(not iv_sub(src, w.src) and not iv_sub(dst, w.dst) for w in holding)

    def _held_in_parts(self, box: Box) -> bool:
        """The search of the module doc: the box's service in parts, each covered cell by cell."""
        parts = self._service_parts(box)
        if not parts:
            return False
        # cells along the side whose widest interval is narrower (hosts, not a network or "any")
        src, dst = box.src, box.dst
        on_src = (src[0][1] - src[0][0] if len(src) == 1 else iv_widest(src)) <= (dst[0][1] - dst[0][0] if len(dst) == 1 else iv_widest(dst))
        side, other = (src, dst) if on_src else (dst, src)
        for part in parts:
            indexes = part[on_src]
            if indexes is None:
                indexes = part[on_src] = [self._index(service, on_src) for service in part[2]]
            for low, high in side:
                pieces = _pieces(indexes, low, high, box, other)
                if pieces is not None and not _covers(pieces, low, high, other):
                    return False
        return True

    def _service_parts(self, box: Box) -> list[_Part]:
        """A box's protocols and ports cut where the services of the space's boxes that hold
        its interfaces and states start and end, as the services holding each part (each such
        service meeting a part holds it); none when some part meets no service, or when there
        are too many parts to try."""
        key = (box.proto, box.dport, box.iif, box.oif, box.ct)
        parts = self._parts.get(key)
        if parts is None:
            if self._by_service is None:
                self._services()
            proto, dport, iif, oif, ct = key
            p_low, p_high, d_low, d_high = proto[0][0], proto[-1][1], dport[0][0], dport[-1][1]
            meeting = [s for pl, ph, dl, dh, s, kinds in self._bounds if pl <= p_high and p_low <= ph and dl <= d_high and d_low <= dh
                       and iv_and(proto, s[0]) and iv_and(dport, s[1])
                       and any(not (iif & ~i or oif & ~o or ct & ~c) for i, o, c in kinds)]
            protos = _cut(proto, [p for p, _ in meeting])
            ports = _cut(dport, [d for _, d in meeting])
            parts = []
            if meeting and len(protos) * len(ports) <= MAX_PARTS:
                for p_part in protos:
                    for d_part in ports:
                        holding = [s for s in meeting if iv_and(p_part, s[0]) and iv_and(d_part, s[1])]
                        if not holding:
                            parts = []
                            break
                        parts.append([None, None, holding])  # the indexes by each address side, made when first asked
                    else:
                        continue
                    break
            self._parts[key] = parts
        return parts

    def _services(self) -> None:
        """The space's boxes by service, and each service's bounds: the search's first step,
        made when a box first needs the search (most are answered by the exact keys)."""
        self._by_service = {}
        for box in self._space.boxes:
            self._by_service.setdefault((box.proto, box.dport), []).append(box)
        # (first protocol, last protocol, first port, last port, service, its boxes' interfaces and states)
        self._bounds = [(p[0][0], p[-1][1], d[0][0], d[-1][1], (p, d), {(b.iif, b.oif, b.ct) for b in boxes})
                        for (p, d), boxes in self._by_service.items()]

    def _index(self, service: Service, src: bool) -> _Starts:
        index = self._starts.get((service, src))
        if index is None:
            index = self._starts[(service, src)] = _Starts(self._by_service[service], src)
        return index


def _by_interval(boxes: list[Box], src: bool) -> _Table:
    """Boxes by each interval of their sources (or destinations), each with what of it holds a box."""
    table: _Table = {}
    for box in boxes:
        side, other = (box.src, box.dst) if src else (box.dst, box.src)
        held = (~box.ct, other[0][0], other[-1][1], other if len(other) > 1 else None, other)
        for interval in side:
            entries = table.get(interval)
            if entries is None:
                table[interval] = [held]
            else:
                entries.append(held)
    return table


MAX_PARTS = 256
MAX_BLOCKS = 4


def _spans_a_family(side: Intervals) -> bool:
    return side[-1][1] - side[0][0] >= FAMILY_SPAN


FAMILY_SPAN = (1 << 32) - 1  # all IPv4 addresses, the fewest a side of every address of a family spans


_Part = list  # [indexes by destination or None, indexes by source or None, services]: a part of a box's service


def _pieces(indexes: list[_Starts], low: int, high: int, box: Box, other: Intervals) -> list[tuple[int, int, Intervals]] | None:
    """Where the indexed boxes that hold `box`'s interfaces and states meet [low, high] (of its
    side), each with their other side; None when one of them holds [low, high] x `other` whole."""
    iif, oif, ct = box.iif, box.oif, box.ct
    first, last = other[0][0], other[-1][1]
    pieces = []
    for index in indexes:
        for reach, first_start, past_reach, starts, entries in index.classes:
            if high < first_start or past_reach < low:
                continue
            for at in range(bisect_left(starts, low - reach), bisect_right(starts, high)):
                start, end, n_iif, n_oif, n_ct, t_first, t_last, with_gaps, theirs = entries[at]
                if end < low or iif & n_iif or oif & n_oif or ct & n_ct or t_first > last or t_last < first:
                    continue  # misses it, or does not hold its interfaces and states
                if start <= low and high <= end and t_first <= first and last <= t_last and (with_gaps is None or _inside(other, with_gaps)):
                    return None  # the usual case
                pieces.append((max(start, low), min(end, high), theirs))
    return pieces


def _cut(values: Intervals, sets: list[Intervals]) -> list[Intervals]:
    """`values` cut wherever an interval of the sets starts or ends: parts that each set holds whole or misses."""
    cuts = {end + 1 for theirs in sets for _, end in theirs} | {start for theirs in sets for start, _ in theirs}
    parts = []
    for low, high in values:
        points = sorted(point for point in cuts if low < point <= high)
        for start, end in zip([low, *points], [point - 1 for point in points] + [high]):
            parts.append(((start, end),))
    return parts


def _minus(rest: Intervals, theirs: Intervals) -> Intervals:
    """`iv_sub(rest, theirs)` for a short `rest` and a long `theirs` (a coalesced box's hosts):
    each interval of `rest` looks up where it falls by bisection, not by walking `theirs`."""
    if len(theirs) <= 4:
        return iv_sub(rest, theirs)
    out: list[tuple[int, int]] = []
    for low, high in rest:
        at = bisect_left(theirs, low, key=_end)  # the first of theirs that ends at or after low
        cur = low
        while at < len(theirs) and theirs[at][0] <= high:
            start, end = theirs[at]
            if start > cur:
                out.append((cur, start - 1))
            cur = max(cur, end + 1)
            at += 1
        if cur <= high:
            out.append((cur, high))
    return tuple(out)


_end = itemgetter(1)


def _inside(rest: Intervals, theirs: Intervals) -> bool:
    """`not _minus(rest, theirs)` without making what is left: each interval of `rest` within
    one of `theirs` (normalized: apart, so an interval within their union is within one of
    them), found by bisection; the first that is not ends it. A host inside a network whose
    thousands of holes (other rules' hosts) `_minus` would walk is one bisection here."""
    for low, high in rest:
        at = bisect_left(theirs, low, key=_end)  # the first of theirs that ends at or after low
        if at == len(theirs) or theirs[at][0] > low or theirs[at][1] < high:
            return False
    return True


def _covers(pieces: list[tuple[int, int, Intervals]], low: int, high: int, other: Intervals) -> bool:
    """Whether [low, high] x `other` lies within the union of the pieces' products (each piece
    a part of [low, high] and an interval set of the other side); False also when that is too
    much work to tell. A sweep along [low, high], cell by cell (between where pieces start and
    end), in one of two ways: counting, for each segment of `other` between the pieces' bounds,
    the active pieces that hold it (a piece costs the segments it spans when it starts and when
    it ends: a network rule cut by hundreds of host rules is pieces of hundreds of intervals,
    each active in many cells), or, when the pieces' intervals span many segments each (the
    bounds of thousands of other pieces inside them), testing each cell's other side against
    the active pieces by bisection."""
    if not pieces:
        return False
    if all(start == low and end == high for start, end, _ in pieces):  # one cell: every piece spans [low, high]
        return _within_union([theirs for _, _, theirs in pieces], other)
    counting = _Counting(pieces, other)
    # their costs as measured (naive 100k): about 0.04 us a segment count and 0.55 us a piece's
    # interval counting, 0.26 us an interval the bisection looks at
    if 4 * counting.touches + 55 * counting.spans <= 26 * _tests(counting.clipped, low, high):
        return counting.sweep(low, high)
    verdict = _sweep(pieces, low, high, other)
    if verdict is None and counting.touches <= WORK_BUDGET:
        verdict = counting.sweep(low, high)
    return bool(verdict)


class _Counting:
    """The pieces' other sides within `other`'s bounds, `other` cut into segments at their bounds."""

    __slots__ = ("clipped", "segment", "needed", "touches", "spans")

    def __init__(self, pieces: list[tuple[int, int, Intervals]], other: Intervals):
        first, last = other[0][0], other[-1][1]
        self.clipped: list[tuple[int, int, list[tuple[int, int]]]] = []
        points = {first, last + 1}
        spans_of: dict[int, list[tuple[int, int]]] = {}  # by the id of a piece's other side: a space box's, shared by its pieces
        for start, end, theirs in pieces:
            spans = spans_of.get(id(theirs))
            if spans is None:
                whole = theirs
                if len(theirs) > 4:
                    theirs = theirs[bisect_left(theirs, first, key=_end) : bisect_right(theirs, last, key=_start)]
                spans = spans_of[id(whole)] = [(max(t_low, first), min(t_high, last)) for t_low, t_high in theirs if t_low <= last and first <= t_high]
                for t_low, t_high in spans:
                    points.add(t_low)
                    points.add(t_high + 1)
            self.clipped.append((start, end, spans))
        for o_low, o_high in other:
            points.add(o_low)
            points.add(o_high + 1)
        segment = self.segment = {point: at for at, point in enumerate(sorted(points))}  # segment `at`: from that point to the next
        self.needed = needed = [False] * len(segment)
        for o_low, o_high in other:
            for at in range(segment[o_low], segment[o_high + 1]):
                needed[at] = True
        cost = {key: sum(segment[t_high + 1] - segment[t_low] for t_low, t_high in spans) for key, spans in spans_of.items()}
        uses = {key: 0 for key in spans_of}
        for _, _, theirs in pieces:
            uses[id(theirs)] += 1
        self.touches = 2 * sum(cost[key] * n for key, n in uses.items())  # segment counts made, as each piece starts and ends
        self.spans = sum(len(spans_of[key]) * n for key, n in uses.items()) + len(pieces)

    def sweep(self, low: int, high: int) -> bool:
        segment, needed, clipped = self.segment, self.needed, self.clipped
        count = [0] * len(needed)
        short = sum(needed)  # segments of `other` no active piece holds
        work = 0
        clipped.sort(key=_start)
        ends: list[tuple[int, int]] = []  # (end, piece) of the pieces started, a heap: the next to leave first
        at, point = 0, low
        while point <= high:
            while at < len(clipped) and clipped[at][0] <= point:
                heappush(ends, (clipped[at][1], at))
                for t_low, t_high in clipped[at][2]:
                    first_at, past = segment[t_low], segment[t_high + 1]
                    work += past - first_at
                    for seg in range(first_at, past):
                        if not count[seg] and needed[seg]:
                            short -= 1
                        count[seg] += 1
                at += 1
            while ends and ends[0][0] < point:
                for t_low, t_high in clipped[heappop(ends)[1]][2]:
                    first_at, past = segment[t_low], segment[t_high + 1]
                    work += past - first_at
                    for seg in range(first_at, past):
                        count[seg] -= 1
                        if not count[seg] and needed[seg]:
                            short += 1
            if short or work > WORK_BUDGET:
                return False
            # the cell: up to the next piece's start or the first active piece's end
            point = min(clipped[at][0] - 1 if at < len(clipped) else high, ends[0][0] if ends else high) + 1
        return True


def _tests(clipped: list[tuple[int, int, list[tuple[int, int]]]], low: int, high: int) -> int:
    """About how many intervals `_sweep` would look at: each piece's, in each cell it is active in."""
    cuts = sorted({start for start, _, _ in clipped} | {end + 1 for _, end, _ in clipped})
    return sum((bisect_left(cuts, end + 1) - bisect_left(cuts, start)) * (1 + len(spans)) for start, end, spans in clipped)


def _sweep(pieces: list[tuple[int, int, Intervals]], low: int, high: int, other: Intervals) -> bool | None:
    """`_covers` along [low, high], each cell's other side tested against the pieces active in
    it (`_within_union`); None past its budget of piece tests."""
    pieces.sort(key=_start)
    ends: list[tuple[int, int]] = []  # (end, piece) of the pieces started, a heap: the next to leave first
    active: dict[int, Intervals] = {}  # piece -> its other side, in the order they started
    at, work, point = 0, 0, low
    while point <= high:
        while at < len(pieces) and pieces[at][0] <= point:
            heappush(ends, (pieces[at][1], at))
            active[at] = pieces[at][2]
            at += 1
        while ends and ends[0][0] < point:
            active.pop(heappop(ends)[1])
        # the cell: up to the next piece's start or the first active piece's end
        end = min(pieces[at][0] - 1 if at < len(pieces) else high, ends[0][0] if ends else high)
        work += len(active)
        if work > WORK_BUDGET >> 6:
            return None
        if not active or not _within_union(list(active.values()), other):
            return False
        point = end + 1
    return True


# at most this many segment counts for one interval of a box (a few tenths of a second), or a
# 64th of it in piece tests: past it, "not shown" (left to the exact subtraction)
WORK_BUDGET = 1 << 22


def _within_union(sets: list[Intervals], other: Intervals) -> bool:
    """Whether `other` lies within the union of the interval sets."""
    rest = other
    at = 0
    # one set at a time while what is left is a few intervals (often one of the first holds it
    # whole, or the rest is a few hosts that other rules forward): a bisection each
    while at < len(sets) and (at < FIRST_TRIES or len(rest) <= FEW_LEFT):
        rest = _minus(rest, sets[at])
        if not rest:
            return True
        at += 1
    if at == len(sets):
        return False
    # many sets (hosts coalesced in each) and much left: their parts within the rest's bounds, united once
    low, high = rest[0][0], rest[-1][1]
    spans: list[tuple[int, int]] = []
    for theirs in sets[at:]:
        if len(theirs) > 4:
            theirs = theirs[bisect_left(theirs, low, key=_end) : bisect_right(theirs, high, key=_start)]
        spans.extend(theirs)
    return _inside(rest, iv_norm(spans))


FEW_LEFT = 4
FIRST_TRIES = 2
