"""An index of boxes: which of many boxes may overlap (or cover) one, without asking each."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from functools import lru_cache
from typing import Sequence

from fwmatrix.intervals import Intervals, iv_overlaps, iv_sub, iv_widest
from fwmatrix.space.box import Box


class _Sorted:
    """Boxes of one interface pair and one size class, sorted by where an address side starts
    (equal starts in the order they came: what inserting each at bisect_right gives)."""

    __slots__ = ("_starts", "_boxes", "_tail")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._boxes: list[Box] = []
        # (start, box) added since the last read (_Bucket.file appends), sorted when read: an
        # index built whole (an intersection's, a combine's) is sorted once, not by one
        # list.insert per box (quadratic at 100,000 rules)
        self._tail: list[tuple[int, Box]] = []

    def _sort(self) -> None:
        tail = self._tail
        starts, boxes = self._starts, self._boxes
        if len(tail) <= SMALL_TAIL:  # a chain's walk adds a rule's boxes between reads
            for start, box in tail:
                if not starts or start >= starts[-1]:
                    starts.append(start)
                    boxes.append(box)
                else:
                    at = bisect_right(starts, start)
                    starts.insert(at, start)
                    boxes.insert(at, box)
        else:
            # the tail sorted (stably: equal starts in the order they came), then merged in by
            # slices of the sorted part, each new box after the equal starts before it: what
            # inserting each at bisect_right gives, in one copy of the group, not a sort of it all
            tail.sort(key=_start_of)
            new_starts: list[int] = []
            new_boxes: list[Box] = []
            done = 0
            for start, box in tail:
                at = bisect_right(starts, start, done)
                if at > done:
                    new_starts += starts[done:at]
                    new_boxes += boxes[done:at]
                    done = at
                new_starts.append(start)
                new_boxes.append(box)
            new_starts += starts[done:]
            new_boxes += boxes[done:]
            self._starts, self._boxes = new_starts, new_boxes
        tail.clear()

    @property
    def starts(self) -> list[int]:
        if self._tail:
            self._sort()
        return self._starts

    @property
    def boxes(self) -> list[Box]:
        if self._tail:
            self._sort()
        return self._boxes

    def window(self, low: int, high: int) -> list[Box]:
        starts = self.starts
        return self._boxes[bisect_left(starts, low) : bisect_right(starts, high)]


def _start_of(filed: tuple[int, Box]) -> int:
    return filed[0]


SMALL_TAIL = 16  # up to this many new boxes are inserted one by one; more, and the group is sorted again


class _Bucket:
    """The boxes of one interface pair, protocol set and port bucket, in the order they came, and
    each address side's intervals by size class (`_Sorted` groups), filed from `boxes` when a lookup
    that walks that side first visits the bucket: a lookup visits the buckets of its service, so
    the intervals no later lookup walks are never filed (at naive 100k, 22% of the walk's entries,
    which asks most buckets on one side only, and 61% of its certain-remaining index's, asked ~1,000
    times for 68,000 boxes). Both sides share the buckets: a box is put in them once."""

    __slots__ = ("boxes", "classes", "filed")

    def __init__(self) -> None:
        self.boxes: list[Box] = []
        self.classes: tuple[dict[int, _Sorted], dict[int, _Sorted]] = ({}, {})  # by side: [False] source, [True] destination
        self.filed = [0, 0]  # boxes of `boxes` filed in classes, by side

    def file(self, by_dst: bool) -> None:
        classes, boxes = self.classes[by_dst], self.boxes
        upto = self.filed[by_dst]
        for box in boxes[upto:] if upto else boxes:
            for low, high in box.dst if by_dst else box.src:
                # grouped by size: class 0 holds single addresses, class c > 0 intervals of
                # fewer than 2**(4*c) addresses (see _reach)
                size_class = 0 if low == high else 1 + (high - low).bit_length() // 4
                group = classes.get(size_class)
                if group is None:
                    group = classes[size_class] = _Sorted()
                group._tail.append((low, box))
        self.filed[by_dst] = len(boxes)


def _reach(size_class: int) -> int:
    """How far before a lookup's start an interval of this class may start and still overlap it."""
    return 0 if size_class == 0 else 1 << (4 * size_class)


REACH = tuple(_reach(c) for c in range(2 + 129 // 4))  # by size class (addresses have 129 bits), looked up per group


HUGE = (1 << 32) - 1  # the widest interval of a box of every address of a family, at least
SMALL_GROUP = 8  # a group of at most this many boxes is taken whole, not bisected
MAX_BLOCK_PAIRS = 64  # more source and destination block sizes of one service than this, and covers_alike does not ask them
ALIKE_RENT = 16  # boxes filed in `alike` per renting lookup that asked (see covers_alike)
MAX_MEETS = 1 << 12  # lookups of more distinct interfaces and protocols than this, and an index forgets which met which
PORT_BUCKET_BITS = 4  # ports are filed by 16s: well-known ports tell openings apart
MAX_BUCKETS = 8  # a port set in more buckets than this is filed as WIDE
WIDE = -1


@lru_cache(maxsize=1 << 16)  # asked for every box filed and looked up; rulesets have few distinct port sets
def _port_buckets(dport: Intervals) -> tuple[int, ...]:
    """The port buckets a port set's values fall in (a list of ports: each port's), or (WIDE,)
    when they are many (a range)."""
    buckets: list[int] = []
    for low, high in dport:
        first, last = low >> PORT_BUCKET_BITS, high >> PORT_BUCKET_BITS
        buckets += range(first if not buckets or first > buckets[-1] else buckets[-1] + 1, last + 1)
        if len(buckets) > MAX_BUCKETS:
            return (WIDE,)
    return tuple(buckets)


class BoxIndex:
    """Finds the boxes that may overlap a box.

    Boxes are filed by interface pair, then by protocol set, then by
    destination-port bucket (ports tell openings apart well; a list of ports
    is filed under each port's bucket), then, for every interval of the box's
    destination (and separately of its source), by the interval's size class,
    sorted by where it starts: an interval of class c that overlaps
    [low, high] starts in [low - _reach(c), high], a window found by
    bisection. A lookup walks the query's side with the narrower intervals;
    a bucket's intervals of a side are filed when a lookup first walks that
    side there (see _Bucket).
    Openings name hosts, networks and ports, so a lookup touches the few
    boxes near them, not all; never one of another protocol."""

    def __init__(self, boxes: Sequence[Box] = ()):
        # (iif, oif) -> proto -> port bucket -> the boxes, and by side and size class their sorted intervals
        self.table: dict[tuple[int, int], dict[Intervals, dict[int, _Bucket]]] = {}
        self.all: list[Box] = []
        # boxes of every source and destination, checked first (they cover much), by their
        # interfaces and states (few of them): most lookups miss each there
        self.huge: dict[tuple[int, int, int], list[Box]] = {}
        # by interfaces and service (iif, oif, proto, dport), the boxes alike: most boxes a lookup asks
        # about lie within boxes that differ from them in one address side only, often in more states
        # (a walk's undecided packets, new connections; of a side of many boxes, the union of their other
        # sides), or within boxes whose address sides are one
        # block each (a network: 2**k addresses from a multiple of 2**k) that hold its — a naive
        # ruleset's host rules inside an earlier zone or network rule of their service: found by a
        # few dict lookups, not by a search of the boxes near them
        self.alike: dict[tuple, _Alike] = {}
        self._alike_upto = 0  # boxes of `all` filed in `alike` (when first asked: most indexes never are)
        self._alike_asked = 0  # renting lookups since (see covers_alike)
        self._upto = 0  # boxes of `all` put in their buckets of `table`
        # (iif, oif, proto) -> the port tables of the interface pairs and protocol sets that meet them:
        # a lookup walks a few of the many (emptied when a pair or a protocol set is added)
        self._meets: dict[tuple[int, int, Intervals], list[dict[int, _Bucket]]] = {}
        for box in boxes:
            self.add(box)

    def add(self, box: Box) -> None:
        self.all.append(box)
        src, dst = box.src, box.dst
        if (src[-1][1] - src[0][0] >= HUGE and dst[-1][1] - dst[0][0] >= HUGE  # cheap bounds first
                and iv_widest(src) >= HUGE and iv_widest(dst) >= HUGE):  # a whole family at least
            self.huge.setdefault((box.iif, box.oif, box.ct), []).append(box)

    def _buckets(self) -> dict[tuple[int, int], dict[Intervals, dict[int, _Bucket]]]:
        """The table with every box added put in its buckets (a list of ports in each port's), in the
        order they came; their intervals are filed per side when a lookup visits the bucket."""
        table, boxes = self.table, self.all
        for box in boxes[self._upto:] if self._upto else boxes:
            pair = (box.iif, box.oif)
            by_proto = table.get(pair)
            if by_proto is None:
                by_proto = table[pair] = {}
            by_port = by_proto.get(box.proto)
            if by_port is None:
                by_port = by_proto[box.proto] = {}
                self._meets.clear()
            for bucket in _port_buckets(box.dport):
                filed = by_port.get(bucket)
                if filed is None:
                    filed = by_port[bucket] = _Bucket()
                filed.boxes.append(box)
        self._upto = len(boxes)
        return table

    def in_huge(self, box: Box) -> bool:
        """Whether an indexed box of every source and destination contains `box`."""
        iif, oif, ct = box.iif, box.oif, box.ct
        for (h_iif, h_oif, h_ct), huge in self.huge.items():
            if not (iif & ~h_iif or oif & ~h_oif or ct & ~h_ct) and any(h.contains(box) for h in huge):
                return True
        return False

    def covers_alike(self, box: Box, renting: bool = False) -> bool:
        """Whether indexed boxes that differ from `box` in one address side and the conntrack states
        cover it (one box of its source in states that hold its, or of many such their destinations
        together; or the same by destination), or indexed boxes of its interfaces and service whose address
        sides are two blocks that hold its (one box each or, in different states, together) cover it.
        `renting`: for a lookup that can do without (False: not
        shown), boxes added since the last filing are filed only once lookups have asked about
        them often enough (ALIKE_RENT per box) to pay for filing them: a walk adds a set's
        thousands of elements, and the few boxes of later rules ask."""
        boxes = self.all
        if self._alike_upto < len(boxes):
            if renting:
                self._alike_asked += 1
                if len(boxes) - self._alike_upto > ALIKE_RENT * self._alike_asked:
                    return False
            self._alike_asked = 0
            alike = self.alike
            for b in boxes[self._alike_upto:]:
                key = (b.iif, b.oif, b.proto, b.dport)
                filed = alike.get(key)
                if filed is None:
                    filed = alike[key] = _Alike()
                filed.add(b)
            self._alike_upto = len(boxes)
        filed = self.alike.get((box.iif, box.oif, box.proto, box.dport))
        return filed is not None and filed.covers(box)

    def overlapping(self, box: Box) -> list[Box]:
        """The indexed boxes that may overlap `box` (every one that does, once; in no particular order)."""
        dst, src = box.dst, box.src
        wide_dst = dst[0][1] - dst[0][0] if len(dst) == 1 else iv_widest(dst)
        wide_src = src[0][1] - src[0][0] if len(src) == 1 else iv_widest(src)
        by_dst = wide_dst < wide_src or (wide_dst == wide_src and len(dst) <= len(src))  # fewer windows
        table = self.table if self._upto == len(self.all) else self._buckets()
        side = dst if by_dst else src
        iif, oif, proto = box.iif, box.oif, box.proto
        key = (iif, oif, proto)
        meets = self._meets.get(key)
        if meets is None:
            if len(self._meets) >= MAX_MEETS:
                self._meets.clear()
            meets = self._meets[key] = [
                by_port for (pair_iif, pair_oif), by_proto in table.items() if pair_iif & iif and pair_oif & oif
                for filed, by_port in by_proto.items() if iv_overlaps(filed, proto)]
        buckets = _port_buckets(box.dport)
        keys = None if buckets[0] == WIDE else (*buckets, WIDE)
        first, last = side[0][0], side[-1][1]
        several = len(side) > 1
        found: list[Box] = []
        for by_port in meets:
            for filed in by_port.values() if keys is None else [by_port[b] for b in keys if b in by_port]:
                if filed.filed[by_dst] < len(filed.boxes):
                    filed.file(by_dst)
                for size_class, group in filed.classes[by_dst].items():
                    if group._tail:
                        group._sort()
                    starts = group._starts
                    reach = REACH[size_class]
                    if starts[0] > last or starts[-1] < first - reach:
                        continue  # nothing of this group starts near the side
                    boxes = group._boxes
                    if len(starts) <= SMALL_GROUP:  # fewer than the bisections would cost: callers check overlap
                        found += boxes
                    elif several:
                        for low, high in side:
                            found += boxes[bisect_left(starts, low - reach) : bisect_right(starts, high)]
                    else:
                        found += boxes[bisect_left(starts, first - reach) : bisect_right(starts, last)]
        if len(found) > 1:  # a box filed under several buckets or intervals may be found more than once
            return list({id(b): b for b in found}.values())
        return found


class _Alike:
    """The boxes of one interface pair and service (see BoxIndex.alike): by source (a few as a list,
    more as the unions of their destinations by conntrack states: `_Unions`), by destination the
    same; and, those whose address sides are one block each, the states of each pair of blocks
    together, by source block, with the block sizes (k) of their sources and of their destinations."""

    __slots__ = ("by_src", "by_dst", "src_bits", "dst_bits", "blocks")

    def __init__(self) -> None:
        self.by_src: dict[Intervals, list[Box] | _Unions] = {}
        self.by_dst: dict[Intervals, list[Box] | _Unions] = {}
        self.src_bits: set[int] = set()
        self.dst_bits: set[int] = set()
        self.blocks: dict[tuple[int, int], dict[tuple[int, int], int]] = {}  # (s_low, s_bits) -> (d_low, d_bits) -> states

    def add(self, b: Box) -> None:
        src, dst, ct = b.src, b.dst, b.ct
        for table, side, other in ((self.by_src, src, "dst"), (self.by_dst, dst, "src")):
            same = table.get(side)
            if same is None:
                table[side] = [b]
            elif same.__class__ is list:
                same.append(b)  # type: ignore[union-attr]
                if len(same) > FEW_ALIKE:
                    table[side] = _Unions(same, other)  # type: ignore[arg-type]
            else:
                same.add(b)  # type: ignore[union-attr]
        if len(src) == 1 and len(dst) == 1:
            (s_low, s_high), (d_low, d_high) = src[0], dst[0]
            s_size, d_size = s_high - s_low + 1, d_high - d_low + 1
            if not (s_size & (s_size - 1) or d_size & (d_size - 1) or s_low & (s_size - 1) or d_low & (d_size - 1)):
                s_bits, d_bits = s_size.bit_length() - 1, d_size.bit_length() - 1
                self.src_bits.add(s_bits)
                self.dst_bits.add(d_bits)
                by_dst = self.blocks.get((s_low, s_bits))
                if by_dst is None:
                    by_dst = self.blocks[s_low, s_bits] = {}
                at = (d_low, d_bits)
                by_dst[at] = by_dst.get(at, 0) | ct

    def covers(self, box: Box) -> bool:
        ct = box.ct
        same = self.by_src.get(box.src)
        if same is not None and _held_by_side(same, ct, box.dst, "dst"):
            return True
        same = self.by_dst.get(box.dst)
        if same is not None and _held_by_side(same, ct, box.src, "src"):
            return True
        if not self.blocks or len(self.src_bits) * len(self.dst_bits) > MAX_BLOCK_PAIRS:
            return False
        # the blocks of each size filed that hold the box's outer bounds, each side: boxes of those
        # two blocks hold it when their states do
        src, dst = box.src, box.dst
        s_low, s_high, d_low, d_high = src[0][0], src[-1][1], dst[0][0], dst[-1][1]
        blocks = self.blocks
        d_blocks: list[tuple[int, int]] | None = None
        for s_bits in self.src_bits:
            s_at = s_low >> s_bits << s_bits
            if s_at + (1 << s_bits) <= s_high:
                continue
            by_dst = blocks.get((s_at, s_bits))
            if by_dst is None:
                continue
            if d_blocks is None:
                d_blocks = [(at, bits) for bits in self.dst_bits if (at := d_low >> bits << bits) + (1 << bits) > d_high]
            for at in d_blocks:
                states = by_dst.get(at)
                if states is not None and not ct & ~states:
                    return True
        return False


def _held_by_side(same: list[Box] | _Unions, ct: int, other: Intervals, other_side: str) -> bool:
    """Whether the boxes of one address side (a list, or their `_Unions`) hold states `ct` and `other` on their other side."""
    if same.__class__ is list:
        return any(not ct & ~b.ct and not iv_sub(other, getattr(b, other_side)) for b in same)  # type: ignore[union-attr]
    return same.holds(ct, other)  # type: ignore[union-attr]


FEW_ALIKE = 8  # boxes of one side kept as a list, scanned; more, and their other sides are joined by states (_Unions)


class _Unions:
    """The boxes of one address side (of one interface pair and service): the union of their other
    sides, by their conntrack states. A box of that side is covered when the union of boxes in
    states that hold its holds its other side (boxes in different states are not joined): a
    source's rules to many destinations hold a box of several, each found by bisection, not by
    scanning the boxes."""

    __slots__ = ("other", "by_states")

    def __init__(self, boxes: list[Box], other: str):
        self.other = other  # the side joined: "src" or "dst"
        self.by_states: dict[int, _Union] = {}
        for b in boxes:
            self.add(b)

    def add(self, b: Box) -> None:
        union = self.by_states.get(b.ct)
        if union is None:
            union = self.by_states[b.ct] = _Union()
        union.add(b.dst if self.other == "dst" else b.src)

    def holds(self, ct: int, other: Intervals) -> bool:
        return any(not ct & ~states and union.holds(other) for states, union in self.by_states.items())


class _Union:
    """A union of address intervals, as sorted starts and ends (disjoint, not touching)."""

    __slots__ = ("lows", "highs")

    def __init__(self) -> None:
        self.lows: list[int] = []
        self.highs: list[int] = []

    def add(self, intervals: Intervals) -> None:
        lows, highs = self.lows, self.highs
        for low, high in intervals:
            first = bisect_left(highs, low - 1)  # the first that ends where this starts, or after
            end = bisect_right(lows, high + 1, first)  # past the last that starts where this ends, or before
            if first < end:
                low = min(low, lows[first])
                high = max(high, highs[end - 1])
            lows[first:end] = (low,)
            highs[first:end] = (high,)

    def holds(self, intervals: Intervals) -> bool:
        lows, highs = self.lows, self.highs
        for low, high in intervals:
            at = bisect_right(lows, low) - 1
            if at < 0 or highs[at] < high:
                return False
        return True


def may_overlap(a: Box, b: Box) -> bool:
    """A quick test on the outer bounds of each dimension: False means certainly disjoint."""
    return bool(  # ports and protocols first: most boxes an index finds near a box miss it there
        a.iif & b.iif and a.oif & b.oif and a.ct & b.ct
        and a.dport[0][0] <= b.dport[-1][1] and b.dport[0][0] <= a.dport[-1][1]
        and a.proto[0][0] <= b.proto[-1][1] and b.proto[0][0] <= a.proto[-1][1]
        and a.dst[0][0] <= b.dst[-1][1] and b.dst[0][0] <= a.dst[-1][1]
        and a.src[0][0] <= b.src[-1][1] and b.src[0][0] <= a.src[-1][1]
    )


def meeting(a: Box, boxes: list[Box]) -> list[Box]:
    """The boxes of which may_overlap(a, box) holds, in their order: its test with a's bounds
    read once, without a call per box (a lookup's hits are many, most miss)."""
    iif, oif, ct = a.iif, a.oif, a.ct
    dport_low, dport_high = a.dport[0][0], a.dport[-1][1]
    proto_low, proto_high = a.proto[0][0], a.proto[-1][1]
    dst_low, dst_high = a.dst[0][0], a.dst[-1][1]
    src_low, src_high = a.src[0][0], a.src[-1][1]
    return [
        b for b in boxes
        # the tests that fail most first: an index's hits are near one address side and of the
        # lookup's interfaces and protocols; the other side's bounds, a side's other intervals and
        # the other ports of a bucket rule out most (interfaces, states and protocols almost none)
        if src_low <= b.src[-1][1] and b.src[0][0] <= src_high
        and dst_low <= b.dst[-1][1] and b.dst[0][0] <= dst_high
        and dport_low <= b.dport[-1][1] and b.dport[0][0] <= dport_high
        and b.iif & iif and b.oif & oif and b.ct & ct
        and proto_low <= b.proto[-1][1] and b.proto[0][0] <= proto_high
    ]


class _Holder:
    """Whether a box lies within one box `a`, exactly: its masks within a's, each interval set
    within a's (by the bounds where a's is one interval, else asked once per distinct set: boxes
    share their protocol and port sets)."""

    __slots__ = ("box", "iif", "oif", "ct", "src_low", "src_high", "dst_low", "dst_high", "protos", "dports")

    def __init__(self, a: Box):
        self.box = a
        self.iif, self.oif, self.ct = a.iif, a.oif, a.ct
        # (1, 0), a bound no interval meets: ask iv_sub
        self.src_low, self.src_high = a.src[0] if len(a.src) == 1 else (1, 0)
        self.dst_low, self.dst_high = a.dst[0] if len(a.dst) == 1 else (1, 0)
        self.protos: dict[Intervals, bool] = {}
        self.dports: dict[Intervals, bool] = {}

    def holds(self, b: Box) -> bool:
        if b.iif & ~self.iif or b.oif & ~self.oif or b.ct & ~self.ct:
            return False
        src, dst = b.src, b.dst
        if not (self.src_low <= src[0][0] and src[-1][1] <= self.src_high) and (self.src_low <= self.src_high or iv_sub(src, self.box.src)):
            return False
        if not (self.dst_low <= dst[0][0] and dst[-1][1] <= self.dst_high) and (self.dst_low <= self.dst_high or iv_sub(dst, self.box.dst)):
            return False
        within = self.protos.get(b.proto)
        if within is None:
            within = self.protos[b.proto] = not iv_sub(b.proto, self.box.proto)
        if not within:
            return False
        within = self.dports.get(b.dport)
        if within is None:
            within = self.dports[b.dport] = not iv_sub(b.dport, self.box.dport)
        return within


def meet_all(asking: list[Box], boxes: list[Box]) -> list[tuple[Box, Box]]:
    """Each of the boxes that meets one of the `asking` boxes, with a box of their common packets
    (together, the same set as every `a.intersect(box)`), without an index: for a few boxes (a
    chain's scope) asked of many (a set's elements, a chain's accepts) once. A box within one
    asking box (most: the many lie within the few) is its own common part (a copy, new like an
    intersection's: callers tell boxes apart by identity); the others are intersected with each
    asking box they meet."""
    if not asking:
        return []
    holders = [_Holder(a) for a in asking]
    last = holders[0]  # the holder of the box before: boxes come in runs of one family and service
    out: list[tuple[Box, Box]] = []
    rest: list[Box] = []
    for b in boxes:
        if not last.holds(b):
            for holder in holders:
                if holder is not last and holder.holds(b):
                    last = holder
                    break
            else:
                rest.append(b)
                continue
        out.append((b, Box(b.iif, b.oif, b.src, b.dst, b.proto, b.dport, b.ct)))
    if rest:
        for a in asking:
            out += [(b, c) for b in meeting(a, rest) if (c := a.intersect(b)) is not None]
    return out


def may_contain(a: Box, b: Box) -> bool:
    """A quick test on the outer bounds: False means `a` certainly does not contain `b`."""
    return (
        b.iif & ~a.iif == 0 and b.oif & ~a.oif == 0 and b.ct & ~a.ct == 0
        and a.dst[0][0] <= b.dst[0][0] and b.dst[-1][1] <= a.dst[-1][1]
        and a.src[0][0] <= b.src[0][0] and b.src[-1][1] <= a.src[-1][1]
        and a.dport[0][0] <= b.dport[0][0] and b.dport[-1][1] <= a.dport[-1][1]
        and a.proto[0][0] <= b.proto[0][0] and b.proto[-1][1] <= a.proto[-1][1]
    )
