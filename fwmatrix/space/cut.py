"""Cutting boxes by many others: what of each box no indexed box covers."""

from __future__ import annotations

from typing import Iterable

from fwmatrix.space.box import Box, box_size
from fwmatrix.space.index import BoxIndex, may_contain, may_overlap, meeting


MANY_NEAR = 8  # from this many boxes near one, whether they cover it is asked first, largest first


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
    pieces = [a]
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
        rest = _largest_first(a, near) if len(near) > MANY_NEAR else None
        out.extend(_minus_each(a, near) if rest is None else rest)
    return out
