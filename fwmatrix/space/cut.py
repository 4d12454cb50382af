"""Cutting boxes by many others: what of each box no indexed box covers."""

from __future__ import annotations

from operator import itemgetter
from typing import Iterable

from fwmatrix.intervals import Intervals, iv_norm, iv_sub
from fwmatrix.space.box import Box, box_size
from fwmatrix.space.index import BoxIndex, may_contain, may_overlap, meeting


MANY_NEAR = 8  # from this many boxes near one, they are taken out by _minus_many (a sweep, or largest first)


def _common_size(a: Box, b: Box) -> int:
    """How many packets of `a` box `b` holds (0 when they miss each other)."""
    common = a.intersect(b)
    return 0 if common is None else box_size(common)


def _largest_first(a: Box, near: list[Box]) -> list[Box] | None:
    """`a` minus the boxes, cut by the largest share first, when they may cover it; None when they
    certainly do not (what they hold of it is less than it). Largest share first: a wide opening
    that earlier, narrower rules punched holes in is then one cut (its holes left), and each hole
    one more, where the order of the index cuts it into hundreds of pieces. The pieces left are
    the answer: a finding's regions are canonical (fwmatrix.space.canon), a function of the set
    of packets, not of how it was cut."""
    sized = [(size, b) for b in near if (size := _common_size(a, b))]
    if sum(size for size, _ in sized) < box_size(a):
        return None  # what they hold of it, even counted twice where they overlap, is less than it
    sized.sort(key=lambda pair: -pair[0])
    return _minus_each(a, [b for _, b in sized])


def _minus_each(a: Box, boxes: list[Box]) -> list[Box]:
    """`a` minus the boxes one after the other, as pieces (none once it is used up)."""
    return _pieces_minus_each([a], boxes)


def _pieces_minus_each(pieces: list[Box], boxes: list[Box]) -> list[Box]:
    """Disjoint pieces minus the boxes one after the other (the pieces left, disjoint)."""
    for at, b in enumerate(boxes):  # a box that misses a piece leaves it whole (minus would give it back)
        if len(pieces) > MANY_PIECES:
            return _Pieces(pieces).minus_each(boxes[at:])
        nxt: list[Box] = []
        for piece in pieces:
            if may_overlap(piece, b):
                nxt.extend(piece.minus(b))
            else:
                nxt.append(piece)
        pieces = nxt
        if not pieces:
            break
    return pieces


MANY_PIECES = 24  # from this many pieces a cut looks only at the pieces near it (_Pieces), not at each
PIECE_BUCKETS = 8  # a cut wider than this many buckets of a size class takes the whole class


class _Pieces:
    """The pieces of `_minus_each` for boxes that cut a box into many (a wide rule after many host
    rules): each cut replaces in place only the pieces it meets, found by the outer bounds of an
    address side, so the pieces and their order are those of cutting every piece.

    Pieces are a linked list in their order (ids are positions in `box`, `after`, `before`).
    For each side, a piece whose outer bounds [low, high] have c = (high - low).bit_length() is
    filed under class c and bucket low >> c: one that meets [qlow, qhigh] is in a bucket from
    (qlow >> c) - 1 to qhigh >> c."""

    __slots__ = ("box", "after", "before", "by_src", "by_dst")

    HEAD = 0  # the list's ends: ids 0 and 1 hold no piece

    def __init__(self, pieces: list[Box]):
        self.box: list[Box | None] = [None, None]
        self.after: list[int] = [1, -1]
        self.before: list[int] = [-1, 0]
        self.by_src: dict[int, dict[int, set[int]]] = {}
        self.by_dst: dict[int, dict[int, set[int]]] = {}
        last = self.HEAD
        for piece in pieces:
            last = self._add_after(last, piece)

    def _add_after(self, where: int, piece: Box) -> int:
        pid = len(self.box)
        self.box.append(piece)
        nxt = self.after[where]
        self.after.append(nxt)
        self.before.append(where)
        self.after[where] = pid
        self.before[nxt] = pid
        for table, side in ((self.by_src, piece.src), (self.by_dst, piece.dst)):
            low, high = side[0][0], side[-1][1]
            size_class = (high - low).bit_length()
            buckets = table.get(size_class)
            if buckets is None:
                buckets = table[size_class] = {}
            bucket = buckets.get(low >> size_class)
            if bucket is None:
                buckets[low >> size_class] = {pid}
            else:
                bucket.add(pid)
        return pid

    def _drop(self, pid: int) -> None:
        piece = self.box[pid]
        assert piece is not None
        self.box[pid] = None
        before, after = self.before[pid], self.after[pid]
        self.after[before] = after
        self.before[after] = before
        for table, side in ((self.by_src, piece.src), (self.by_dst, piece.dst)):
            low, high = side[0][0], side[-1][1]
            size_class = (high - low).bit_length()
            table[size_class][low >> size_class].discard(pid)

    def _near(self, b: Box) -> set[int]:
        """The pieces whose outer bounds meet `b`'s on its narrower address side."""
        src_low, src_high, dst_low, dst_high = b.src[0][0], b.src[-1][1], b.dst[0][0], b.dst[-1][1]
        if src_high - src_low <= dst_high - dst_low:
            table, low, high = self.by_src, src_low, src_high
        else:
            table, low, high = self.by_dst, dst_low, dst_high
        near: set[int] = set()
        for size_class, buckets in table.items():
            first, last = (low >> size_class) - 1, high >> size_class
            if last - first > PIECE_BUCKETS:
                for bucket in buckets.values():
                    near |= bucket
            else:
                for key in range(first, last + 1):
                    bucket = buckets.get(key)
                    if bucket:
                        near |= bucket
        return near

    def minus_each(self, boxes: list[Box]) -> list[Box]:
        box = self.box
        for b in boxes:
            for pid in self._near(b):
                piece = box[pid]
                if piece is None or not may_overlap(piece, b):
                    continue
                rest = piece.minus(b)
                if len(rest) == 1 and rest[0] is piece:
                    continue  # it misses the piece
                where = pid
                for part in rest:
                    where = self._add_after(where, part)
                self._drop(pid)
            if self.after[self.HEAD] == 1:
                return []
        out = []
        pid = self.after[self.HEAD]
        while pid != 1:
            out.append(box[pid])
            pid = self.after[pid]
        return out  # type: ignore[return-value]


def subtract_boxes(boxes: Iterable[Box], index: BoxIndex) -> list[Box]:
    """Each box minus every indexed box that may overlap it."""
    out: list[Box] = []
    for a in boxes:
        if index.in_huge(a) or index.covers_alike(a, renting=True):
            continue  # covered whole by a box of everything (e.g. every established packet), or by its like
        near = meeting(a, index.overlapping(a))
        if any(may_contain(b, a) and b.contains(a) for b in near):
            continue  # covered whole: no need to intersect or cut it into pieces
        out.extend(_minus_many(a, near) if len(near) > MANY_NEAR else _minus_each(a, near))
    return out


CUTTERS_PER_CLASS = 8  # cutters of some of a box's ports are swept per port class from this many per class
SWEEP_FROM = 8  # from this many boxes that hold `a` in all but its addresses, they are taken out in one sweep


def _minus_many(a: Box, near: list[Box]) -> list[Box]:
    """`a` minus many boxes. Most of them (host rules before a wide rule) hold `a` in every
    dimension but the addresses: those cut it in two dimensions only, a rectangle each, and one
    sweep takes out their union (`_sweep`); the others then cut what is left piece by piece. Those
    that hold only some of a's ports (rules of one service after a wider one), when many, are swept
    too, one sweep per class of a's ports (`_port_classes`): cut piece by piece they split the
    sweep's pieces one cut at a time (two boxes of the naive 100k audit: 1.2 s, 6,635 and 9,986
    pieces, 3,865 and 2,695 per class); when few, they add fewer pieces than a sweep per class."""
    rects: list[tuple[Intervals, Intervals]] = []
    partial: list[Box] = []  # the others, in their order (with those of some ports)
    some_ports: dict[Intervals, list[tuple[Intervals, Intervals]]] = {}  # rectangles of cutters that hold some of a's ports, by port set
    of_some_ports: set[int] = set()  # those cutters' ids
    iif, oif, ct, proto, dport = a.iif, a.oif, a.ct, a.proto, a.dport
    # protocol sets and port sets (few) by whether they hold a's: two tables, as a set of ports
    # may be the same tuple as a set of protocols
    holds_proto: dict[Intervals, bool] = {}
    holds_dport: dict[Intervals, Intervals | None] = {}  # a port set -> a's ports outside it, None when it misses them all
    for b in near:
        if not (iif & ~b.iif or oif & ~b.oif or ct & ~b.ct):
            within = holds_proto.get(b.proto)
            if within is None:
                within = holds_proto[b.proto] = not iv_sub(proto, b.proto)
            if within:
                outside = holds_dport.get(b.dport, False)
                if outside is False:
                    outside = iv_sub(dport, b.dport)
                    outside = holds_dport[b.dport] = None if outside == dport else outside
                if outside == ():
                    rects.append((b.src, b.dst))
                    continue
                if outside is not None:  # holds some of a's ports (one that misses them all is one cut that gives a back)
                    if (group := some_ports.get(b.dport)) is None:
                        some_ports[b.dport] = [(b.src, b.dst)]
                    else:
                        group.append((b.src, b.dst))
                    of_some_ports.add(id(b))
        partial.append(b)
    if len(rects) < SWEEP_FROM:
        inside = _within_common_masks(a, partial)
        if inside is not None:
            # many cutters hold `a` but in some of its interfaces or states (a chain's bans reached
            # after `ct state established,related accept`: new connections only): within those `a`
            # is swept, outside them they cut nothing; cut one after the other, each was a
            # subtraction from a growing list (quadratic in them)
            outside = a.outside_masks(inside, inside.iif, inside.oif, inside.ct)
            return _minus_many(inside, near) + [p for piece in outside for p in _minus_many(piece, near)]
        rest = _largest_first(a, near)
        return _minus_each(a, near) if rest is None else rest
    classes = _port_classes(dport, some_ports) if some_ports else []
    if classes and len(classes) * CUTTERS_PER_CLASS <= sum(map(len, some_ports.values())):
        # those of some ports swept per class; with fewer, cut one by one they add fewer pieces than
        # a sweep per class (as many pieces as one sweep, each)
        partial = [b for b in partial if id(b) not in of_some_ports]
    else:
        classes = []
    swept, partial = _masks_first(a, partial)
    if swept is None:
        return []
    if classes:
        pieces = [piece for ports, cuts in classes for piece in _sweep(swept, rects + cuts, ports)]
    else:
        pieces = _sweep(swept, rects)
    return _pieces_minus_cutters(a, pieces, partial) if partial and pieces else pieces


def _within_common_masks(a: Box, cutters: list[Box]) -> Box | None:
    """`a` within the interfaces and states that the most cutters share with it, when those are
    fewer than a's and at least SWEEP_FROM cutters share them; else None. Each call on what it
    gives (and on the rest of `a`) has fewer interface or state bits, so cutting recurses finitely."""
    counts: dict[tuple[int, int, int], int] = {}
    whole = (a.iif, a.oif, a.ct)
    for b in cutters:
        masks = (a.iif & b.iif, a.oif & b.oif, a.ct & b.ct)
        if masks[0] and masks[1] and masks[2] and masks != whole:
            counts[masks] = counts.get(masks, 0) + 1
    if not counts:
        return None
    masks, count = max(counts.items(), key=_COUNT)
    return Box(masks[0], masks[1], a.src, a.dst, a.proto, a.dport, masks[2]) if count >= SWEEP_FROM else None


_COUNT = itemgetter(1)


def _masks_first(a: Box, cutters: list[Box]) -> tuple[Box | None, list[Box]]:
    """The cutters first in line that hold `a` but in its interfaces and states (the established
    box) and leave it one box, taken from `a` (None when they take all of it), and the cutters
    after them. Taken from `a` before its sweep, not from each of the sweep's thousands of pieces:
    the very pieces, in their order (each piece would lose the same interfaces and states)."""
    held = 0
    while held < len(cutters) and _holds_but_masks(cutters[held], a):
        rest = _minus_masks(a, cutters[held])
        if len(rest) != 1:
            if not rest:
                return None, []
            break
        a = rest[0]
        held += 1
    return a, cutters[held:] if held else cutters


def _port_classes(dport: Intervals, some_ports: dict[Intervals, list[tuple[Intervals, Intervals]]]) -> list[tuple[Intervals, list[tuple[Intervals, Intervals]]]]:
    """a's ports split into classes by the port sets of the cutters that hold some of them: the
    ports of a class lie in the same of those sets, so those cutters hold all of a class or none of
    it. Each class with the rectangles of the cutters that hold it."""
    sets = list(some_ports)
    bounds = sorted({x for ports in [dport, *sets] for iv in ports for x in (iv[0], iv[1] + 1)})
    # the elementary ranges between bounds that lie in a's ports, by which sets hold them
    classes: dict[tuple[bool, ...], list[tuple[int, int]]] = {}
    for low, after in zip(bounds, bounds[1:]):
        if iv_sub(((low, low),), dport):
            continue
        point = ((low, low),)
        key = tuple(not iv_sub(point, ports) for ports in sets)
        classes.setdefault(key, []).append((low, after - 1))
    return [(iv_norm(ranges), [cut for held, ports in zip(key, sets) if held for cut in some_ports[ports]])
            for key, ranges in classes.items()]


def _pieces_minus_cutters(a: Box, pieces: list[Box], cutters: list[Box]) -> list[Box]:
    """Pieces of `a` minus the cutters one after the other, as _pieces_minus_each. A cutter that
    holds `a` in every dimension but the interfaces and states (the box of established connections
    of every address: a rule `ct state established,related accept` first) takes from each piece
    only those, one box each: cut piece by piece in place, without the index of pieces that the
    cutters near a few of them need."""
    start = 0
    for at, b in enumerate(cutters):
        if _holds_but_masks(b, a):
            if at > start:
                pieces = _pieces_minus_each(pieces, cutters[start:at])
            pieces = [rest for piece in pieces for rest in _minus_masks(piece, b)]
            start = at + 1
            if not pieces:
                return []
    return _pieces_minus_each(pieces, cutters[start:]) if start < len(cutters) else pieces


def _minus_masks(piece: Box, b: Box) -> list[Box]:
    """piece.minus(b) for a box b whose addresses, protocols and ports hold the piece's, without
    the intervals compared."""
    iif, oif, ct = piece.iif & b.iif, piece.oif & b.oif, piece.ct & b.ct
    return piece.outside_masks(b, iif, oif, ct) if iif and oif and ct else [piece]


def _holds_but_masks(b: Box, a: Box) -> bool:
    """Whether b's addresses, protocols and ports hold a's."""
    return (b.src[0][0] <= a.src[0][0] and a.src[-1][1] <= b.src[-1][1] and b.dst[0][0] <= a.dst[0][0] and a.dst[-1][1] <= b.dst[-1][1]
            and not iv_sub(a.src, b.src) and not iv_sub(a.dst, b.dst) and not iv_sub(a.proto, b.proto) and not iv_sub(a.dport, b.dport))


def _all_hold(other: Intervals, rects: list[tuple[Intervals, Intervals]]) -> bool:
    """Whether every rectangle's destinations hold `other`: sources dropped before a wide accept
    (an nftables blocklist set, fail2ban's bans), each cutting a's sources only. The sweep then
    keeps a's destinations whole wherever it keeps anything, and its steps (a few µs a rectangle,
    a blocklist's thousands for each later accept) add nothing."""
    held: dict[Intervals, bool] = {}  # by a rectangle's destinations: rules repeat a few
    last = None
    for _, cut in rects:
        if cut is last:
            continue  # a set's elements share one
        last = cut
        holds = held.get(cut)
        if holds is None:
            holds = held[cut] = not iv_sub(other, cut)
        if not holds:
            return False
    return True


def _sweep(a: Box, rects: list[tuple[Intervals, Intervals]], dport: Intervals | None = None) -> list[Box]:
    """`a` minus the union of products of (source, destination) interval sets, every other
    dimension as a's. Swept along the source: the rectangles' interval ends cut it into
    elementary segments, each crossed by the same rectangles; a segment keeps a's destinations
    minus the union of theirs. The segments that keep them all are one box, neighbouring
    segments that keep the same are one box. Disjoint boxes of one family, as a's (with the
    ports `dport` when given: a's minus the rectangles within those ports)."""
    # along the source always: the pieces then have the shape cutting one box after another gave
    # them (the sources outside the cuts, then sources with their destinations left), which the
    # audit's within tests read fast; along the side of fewer intervals, the naive 100k audit
    # took 154-174 s against 124 before (bench/results/audit.md, "Cutting a box by many")
    along, other = a.src, a.dst
    if dport is None:
        dport = a.dport
    if _all_hold(other, rects):  # sources alone cut: what the sweep gives, in one subtraction
        left = iv_sub(along, iv_norm([iv for side, _ in rects for iv in side]))
        return [Box(a.iif, a.oif, left, other, a.proto, dport, a.ct)] if left else []
    low, high = along[0][0], along[-1][1]
    # the other side of the rectangles by each interval of their sweep side within a's bounds
    groups: dict[tuple[int, int], list[Intervals]] = {}
    for side, cut in rects:
        for iv in side:
            if iv[1] < low or iv[0] > high:
                continue
            group = groups.get(iv)
            if group is None:
                groups[iv] = [cut]
            else:
                group.append(cut)
    # events: at each point the groups that start and end there, and a's own intervals (toggles)
    starts: dict[int, list[tuple[int, int]]] = {}
    ends: dict[int, list[tuple[int, int]]] = {}
    for iv in groups:
        starts.setdefault(iv[0], []).append(iv)
        ends.setdefault(iv[1] + 1, []).append(iv)
    edges = {x for iv in along for x in (iv[0], iv[1] + 1)}
    points = sorted(edges.union(starts, ends))
    covering: set[tuple[int, int]] = set()  # the groups that cross the segment
    # what the other side keeps under a set of groups: groups nest (networks), so the sweep comes
    # back to a set it met before once a narrower group ends, and a group that starts takes its
    # cut from what the set before kept, not from the whole side again
    kept: dict[frozenset[tuple[int, int]], Intervals] = {frozenset(): other}
    rest = other
    inside = False
    runs: dict[tuple[Intervals, int], list[tuple[int, int]]] = {}  # (what segments keep, run) -> the segments, touching ones joined
    serial = 0
    last: Intervals = ()
    for at, x in enumerate(points[:-1]):
        ending = ends.get(x)
        starting = starts.get(x)
        if ending:
            covering.difference_update(ending)
        if starting:
            covering.update(starting)
        key = frozenset(covering)
        known = kept.get(key)
        if known is not None:
            rest = known
        else:
            if ending:  # from the whole side
                cuts = [cut for iv in covering for cut in groups[iv]]
                rest = other
            else:  # from what the groups before kept
                cuts = [cut for iv in starting for cut in groups[iv]]  # type: ignore[union-attr]
            if rest:
                rest = iv_sub(rest, cuts[0] if len(cuts) == 1 else iv_norm([iv for cut in cuts for iv in cut]))
            kept[key] = rest
        if x in edges:
            inside = not inside
        if not inside:
            continue
        if not rest:
            last = ()
            continue
        if rest is other:  # untouched: one box whatever lies between (as cutting one cut after another leaves it)
            run_key = (rest, 0)
        else:  # a run of neighbouring segments that keep the same: the boxes stay as narrow as the cuts
            if rest != last:
                serial += 1
            run_key = (rest, serial)
        last = rest
        segment_high = points[at + 1] - 1
        run = runs.get(run_key)
        if run is None:
            runs[run_key] = [(x, segment_high)]
        elif run[-1][1] + 1 == x:
            run[-1] = (run[-1][0], segment_high)
        else:
            run.append((x, segment_high))
    return [Box(a.iif, a.oif, tuple(run), rest, a.proto, dport, a.ct) for (rest, _), run in runs.items()]
