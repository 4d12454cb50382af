"""Packet spaces: exact sets of packets, with union, intersection, difference.

A packet, as a firewall's forward path judges it, has these dimensions:

  iif, oif   the interfaces it enters and leaves by: a bitmask over a finite
             universe of interface names (the firewall's own, from the matrix,
             plus "lo" and OTHER, which stands for every other name; when a
             ruleset matches MAC sources, each interface is split by them,
             intervals.Interfaces);
  src, dst   addresses, in one integer line: IPv6 addresses are 0 .. 2**128-1,
             IPv4 addresses are 2**128 + address, so one interval set holds
             both families and a box never mixes them;
  proto      the IP protocol number, 0 .. 255;
  dport      the destination port, 0 .. 65535, or NO_PORT for protocols that
             have none, or for ICMP and ICMPv6 the type and code, ICMP_BASE +
             type * 256 + code: a box has port protocols and real ports, or
             ICMP protocols and types, or other protocols and NO_PORT;
  ct         connection tracking: a bitmask over CT_STATES, then the same
             states of connections whose destination this firewall translated
             (`ct status dnat`), which only new, established and related
             packets can be. A port forward's packets are forwarded as
             translated: a rule that asks for `ct status dnat` lets them
             through, and not the same packets sent to the target directly.

A box is one value set per dimension (their product); a space is a union of
boxes. Boxes are kept "physical": single address family, ports consistent
with the protocol, no empty dimension — so a space is empty exactly when it
has no box, and equality is decided by two differences.

Interval sets are tuples of (low, high) pairs, sorted, disjoint and not
touching: the canonical form makes equal sets equal tuples.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import lru_cache
from operator import attrgetter
from typing import Iterable, Iterator, Sequence

from fwmatrix.intervals import (  # noqa: F401 (the dimensions' values, re-exported)
    V4_BASE, V6_ALL, V4_ALL, ADDR_ALL, NO_PORT, PORTS_ALL, PORT_DIM_ALL, PROTO_ALL, PORT_PROTOCOLS, CT_STATES,
    ICMP_BASE, ICMP_TYPES_ALL, PORTLESS_ALL, ECHO_REQUEST, ICMP_PROTOCOLS, icmp_values, icmp_text,
    CT_TRANSLATABLE, CT_DNAT_SHIFT, CT_ALL, CT_DNAT, PROTO_NAMES, Intervals, ct_bits, ct_translated, ct_text,
    iv_norm, iv_and, iv_or, iv_sub, iv_overlaps, iv_size, iv_widest, addr_interval, addrs, family_of, addr_text, OTHER,
    Interfaces,
)

NOT_PORTLESS = iv_or(PORT_PROTOCOLS, ICMP_PROTOCOLS)

# -- boxes and spaces ----------------------------------------------------------------


@dataclass(frozen=True, init=False)
class Box:
    iif: int
    oif: int
    src: Intervals
    dst: Intervals
    proto: Intervals
    dport: Intervals
    ct: int

    def __init__(self, iif: int, oif: int, src: Intervals, dst: Intervals, proto: Intervals, dport: Intervals, ct: int):
        # the audit makes boxes by the hundred thousand: one dict update, not the seven
        # object.__setattr__ calls of a frozen dataclass's own __init__ (still frozen after)
        self.__dict__.update(iif=iif, oif=oif, src=src, dst=dst, proto=proto, dport=dport, ct=ct)

    def intersect(self, other: "Box") -> "Box | None":
        iif = self.iif & other.iif
        if not iif:
            return None
        oif = self.oif & other.oif
        if not oif:
            return None
        ct = self.ct & other.ct
        if not ct:
            return None
        # protocols and ports first: short, and where boxes that meet in their bounds differ most
        proto = iv_and(self.proto, other.proto)
        if not proto:
            return None
        dport = iv_and(self.dport, other.dport)
        if not dport:
            return None
        src = iv_and(self.src, other.src)
        if not src:
            return None
        dst = iv_and(self.dst, other.dst)
        if not dst:
            return None
        return Box(iif, oif, src, dst, proto, dport, ct)

    def minus(self, other: "Box") -> list["Box"]:
        """self - other as disjoint boxes (at most one per dimension)."""
        common = self.intersect(other)
        if common is None:
            return [self]
        out: list[Box] = []
        cur = self
        # peel one dimension at a time: the part outside `other` in that dimension,
        # restricted to the common part in the dimensions already peeled
        rest = self.iif & ~other.iif
        if rest:
            out.append(Box(rest, cur.oif, cur.src, cur.dst, cur.proto, cur.dport, cur.ct))
        cur = Box(common.iif, cur.oif, cur.src, cur.dst, cur.proto, cur.dport, cur.ct)
        rest = cur.oif & ~other.oif
        if rest:
            out.append(Box(cur.iif, rest, cur.src, cur.dst, cur.proto, cur.dport, cur.ct))
        cur = Box(cur.iif, common.oif, cur.src, cur.dst, cur.proto, cur.dport, cur.ct)
        rest = cur.ct & ~other.ct
        if rest:
            out.append(Box(cur.iif, cur.oif, cur.src, cur.dst, cur.proto, cur.dport, rest))
        cur = Box(cur.iif, cur.oif, cur.src, cur.dst, cur.proto, cur.dport, common.ct)
        rest_iv = iv_sub(cur.src, other.src)
        if rest_iv:
            out.append(Box(cur.iif, cur.oif, rest_iv, cur.dst, cur.proto, cur.dport, cur.ct))
        cur = Box(cur.iif, cur.oif, common.src, cur.dst, cur.proto, cur.dport, cur.ct)
        rest_iv = iv_sub(cur.dst, other.dst)
        if rest_iv:
            out.append(Box(cur.iif, cur.oif, cur.src, rest_iv, cur.proto, cur.dport, cur.ct))
        cur = Box(cur.iif, cur.oif, cur.src, common.dst, cur.proto, cur.dport, cur.ct)
        rest_iv = iv_sub(cur.proto, other.proto)
        if rest_iv:
            out.append(Box(cur.iif, cur.oif, cur.src, cur.dst, rest_iv, cur.dport, cur.ct))
        cur = Box(cur.iif, cur.oif, cur.src, cur.dst, common.proto, cur.dport, cur.ct)
        rest_iv = iv_sub(cur.dport, other.dport)
        if rest_iv:
            out.append(Box(cur.iif, cur.oif, cur.src, cur.dst, cur.proto, rest_iv, cur.ct))
        return out

    def contains(self, other: "Box") -> bool:
        return (
            other.iif & ~self.iif == 0
            and other.oif & ~self.oif == 0
            and other.ct & ~self.ct == 0
            and not iv_sub(other.src, self.src)
            and not iv_sub(other.dst, self.dst)
            and not iv_sub(other.proto, self.proto)
            and not iv_sub(other.dport, self.dport)
        )


def physical(iif: int, oif: int, src: Intervals, dst: Intervals, proto: Intervals, dport: Intervals, ct: int) -> list[Box]:
    """The boxes of packets that can exist within these bounds (see the module doc)."""
    if not (iif and oif and ct):
        return []
    services = _services(proto, dport)
    if not services:
        return []
    out = []
    for family in (V4_ALL, V6_ALL):
        fsrc, fdst = iv_and(src, family), iv_and(dst, family)
        if not fsrc or not fdst:
            continue
        for with_proto, values in services:
            out.append(Box(iif, oif, fsrc, fdst, with_proto, values, ct))
    return out


@lru_cache(maxsize=1 << 12)  # a ruleset has few distinct protocol and port sets; its set elements repeat them
def _services(proto: Intervals, dport: Intervals) -> tuple[tuple[Intervals, Intervals], ...]:
    """The protocols and port values of physical boxes within these bounds, in `physical`'s
    order: port protocols and real ports, ICMP protocols and types, other protocols without a port."""
    out = []
    with_ports = iv_and(proto, PORT_PROTOCOLS)
    ports = iv_and(dport, PORTS_ALL)
    if with_ports and ports:
        out.append((with_ports, ports))
    with_types = iv_and(proto, ICMP_PROTOCOLS)
    types = iv_and(dport, ICMP_TYPES_ALL)
    if with_types and types:
        out.append((with_types, types))
    portless = iv_sub(proto, NOT_PORTLESS)
    if portless and iv_and(dport, ((NO_PORT, NO_PORT),)):
        out.append((portless, ((NO_PORT, NO_PORT),)))
    return tuple(out)


class Space:
    """A union of boxes, over one interface universe."""

    __slots__ = ("ifaces", "boxes", "_index")

    def __init__(self, ifaces: Interfaces, boxes: Sequence[Box] = ()):
        self.ifaces = ifaces
        self.boxes: list[Box] = list(boxes)
        self._index: BoxIndex | None = None

    def index(self) -> "BoxIndex":
        """An index of the boxes, built once (a space is not changed after it is made)."""
        if self._index is None:
            self._index = BoxIndex(self.boxes)
        return self._index

    # construction
    @classmethod
    def full(cls, ifaces: Interfaces) -> "Space":
        return cls(ifaces, physical(ifaces.all, ifaces.all, ADDR_ALL, ADDR_ALL, PROTO_ALL, PORT_DIM_ALL, CT_ALL))

    @classmethod
    def empty(cls, ifaces: Interfaces) -> "Space":
        return cls(ifaces)

    def make(self, **bounds: object) -> "Space":
        """A space of one product, with every dimension not given left whole."""
        return Space(self.ifaces, physical(
            bounds.get("iif", self.ifaces.all),  # type: ignore[arg-type]
            bounds.get("oif", self.ifaces.all),  # type: ignore[arg-type]
            bounds.get("src", ADDR_ALL),  # type: ignore[arg-type]
            bounds.get("dst", ADDR_ALL),  # type: ignore[arg-type]
            bounds.get("proto", PROTO_ALL),  # type: ignore[arg-type]
            bounds.get("dport", PORT_DIM_ALL),  # type: ignore[arg-type]
            bounds.get("ct", CT_ALL),  # type: ignore[arg-type]
        ))

    # algebra
    def __bool__(self) -> bool:
        return bool(self.boxes)

    def is_empty(self) -> bool:
        return not self.boxes

    def union(self, other: "Space") -> "Space":
        return Space(self.ifaces, self.boxes + other.boxes)

    def intersect(self, other: "Space") -> "Space":
        if not self.boxes or not other.boxes:
            return Space(self.ifaces)
        small, large = (self, other) if len(self.boxes) <= len(other.boxes) else (other, self)
        if len(large.boxes) <= 8 and large._index is None:  # too few boxes for an index to pay
            pairs = [a.intersect(b) for a in small.boxes for b in large.boxes if may_overlap(a, b)]
            return Space(self.ifaces, [c for c in pairs if c is not None])
        index = large.index()
        out = []
        for a in small.boxes:
            for b in index.overlapping(a):
                if may_overlap(a, b):
                    c = a.intersect(b)
                    if c is not None:
                        out.append(c)
        return Space(self.ifaces, out)

    def subtract(self, other: "Space") -> "Space":
        if not other.boxes or not self.boxes:
            return Space(self.ifaces, self.boxes)
        if len(other.boxes) <= 8 and other._index is None:  # too few boxes for an index to pay
            out: list[Box] = []
            for a in self.boxes:
                pieces = [a]
                for b in other.boxes:
                    if may_overlap(a, b):
                        pieces = [p for piece in pieces for p in piece.minus(b)]
                out.extend(pieces)
            return Space(self.ifaces, out)
        return Space(self.ifaces, subtract_boxes(self.boxes, other.index()))

    def equals(self, other: "Space") -> bool:
        return self.subtract(other).is_empty() and other.subtract(self).is_empty()

    def contains(self, other: "Space") -> bool:
        return other.subtract(self).is_empty()

    def disjoint(self) -> "Space":
        """The same set as pairwise disjoint boxes: each box minus the pieces kept before it."""
        out: list[Box] = []
        index: BoxIndex | None = None  # of `out`, grown with it: an index built afresh per box made this quadratic
        for box in self.boxes:
            if index is None and len(out) > 8:  # the size from which subtract asks an index
                index = BoxIndex(out)
            if index is None:
                pieces = Space(self.ifaces, [box]).subtract(Space(self.ifaces, out)).boxes
            else:
                # what subtract does against Space(out).index(): an index grown box by box returns
                # the boxes in the order one built whole does (its groups sort stably when read)
                pieces = subtract_boxes([box], index)
                for piece in pieces:
                    index.add(piece)
            out.extend(pieces)
        return Space(self.ifaces, out)

    def coalesced(self) -> "Space":
        """The same set in fewer boxes, cheaply: boxes equal in every dimension but one
        become one box with the union of that dimension (exact, a union stays a union),
        one dimension after the other. Not disjoint and not canonical (see `simplified`):
        for asking whether something is covered, where the fragments a chain's walk leaves
        (each rule's packets minus the earlier rules') would cost a search each."""
        boxes = self.boxes
        for dim in _COALESCE:
            if len(boxes) < 2:
                break
            boxes, _ = _merge_along(boxes, dim)
        return Space(self.ifaces, boxes)

    def size(self) -> int:
        """How many packets (counting each dimension's values); for tests and ordering."""
        return sum(_box_size(b) for b in self.disjoint().boxes)

    def simplified(self) -> "Space":
        """Fewer, larger boxes for the same set: disjoint, then merged where boxes
        differ in one dimension only (repeated until nothing changes)."""
        boxes = self.disjoint().boxes
        changed = True
        while changed and len(boxes) > 1:
            changed = False
            for dim in _DIMS:
                boxes, merged = _merge_along(boxes, dim)
                changed = changed or merged
        return Space(self.ifaces, sorted(boxes, key=_box_order))

    # reading
    def describe(self, box: Box) -> str:
        parts = []
        if box.iif != self.ifaces.all or box.oif != self.ifaces.all:
            parts.append(f"{'/'.join(self.ifaces.text(box.iif))} → {'/'.join(self.ifaces.text(box.oif))}")
        parts.append(f"{', '.join(addr_text(box.src))} → {', '.join(addr_text(box.dst))}")
        parts.append(service_text(box.proto, box.dport))
        if box.ct != CT_ALL:
            parts.append("ct " + ct_text(box.ct))
        return "  ".join(parts)

    def fields(self, box: Box) -> dict[str, object]:
        """A box as data, each dimension a list (None: every value): the interfaces it comes
        `in` and goes `out` by, its address `family`, `source` and `destination` networks,
        `protocols` (by name, else number), destination `ports` as [first, last] ranges, and
        conntrack `state`s ('new', 'established', 'new dnat': translated by a port forward);
        `mac_source` when the packets come in by only some MACs of an interface (Interfaces.mac_sources)."""
        sources = self.ifaces.mac_sources(box.iif)
        return {
            "in": None if box.iif == self.ifaces.all else self.ifaces.interfaces(box.iif),
            "out": None if box.oif == self.ifaces.all else self.ifaces.interfaces(box.oif),
            "family": family_of(box.src[0]),
            "source": addr_text(box.src),
            "destination": addr_text(box.dst),
            "protocols": None if box.proto == PROTO_ALL else [PROTO_NAMES.get(p, str(p)) for low, high in box.proto for p in range(low, high + 1)],
            "ports": None if box.dport in (PORT_DIM_ALL, PORTS_ALL, ((NO_PORT, NO_PORT),)) or box.dport[0][0] >= NO_PORT
            else [[low, high] for low, high in box.dport if low < NO_PORT],
            "state": None if box.ct == CT_ALL else ct_text(box.ct).split(","),
        } | ({"icmp": icmp_text(_one_proto(box.proto), box.dport)} if box.dport[0][0] >= ICMP_BASE else {}) | (
            {"mac_source": sources} if sources else {})

    def lines(self) -> list[str]:
        return [self.describe(b) for b in self._reading()]

    def regions(self) -> tuple["Region", ...]:
        """`lines`, each carrying its box as `fields` (a finding's packets in every report)."""
        return tuple(Region(self.describe(b), self.fields(b)) for b in self._reading())

    def _reading(self) -> list[Box]:
        return _whole_protocols(Space(self.ifaces, _any_type_as_portless(self.boxes)).simplified().boxes)

    def __iter__(self) -> Iterator[Box]:
        return iter(self.boxes)

    def __len__(self) -> int:
        return len(self.boxes)


class Region(str):
    """One box of a space as people read it (the string itself: `Space.describe`) and as
    data (`fields`), made from the same box: whatever compares, matches or prints a region
    (acceptances, baselines, tables) reads the line, the JSON reports the fields too."""

    fields: dict[str, object]

    def __new__(cls, text: str, fields: dict[str, object]) -> "Region":
        region = super().__new__(cls, text)
        region.fields = fields
        return region

    def noted(self, note: str) -> "Region":
        """The line with what the finding says of it after a colon, the note among the fields."""
        return Region(f"{self}: {note}", self.fields | {"note": note})


_DIMS = ("iif", "oif", "src", "dst", "proto", "dport", "ct")
_COALESCE = ("dst", "src")  # address sides: rules cut each other there
_ALL_BUT = {dim: attrgetter(*(d for d in _DIMS if d != dim)) for dim in _DIMS}  # a box's other dimensions, in order


def _any_type_as_portless(boxes: list[Box]) -> list[Box]:
    """For reading: ICMP of every type as a protocol without ports (not a physical box:
    only for `describe`), so that it joins the other portless protocols."""
    return [Box(b.iif, b.oif, b.src, b.dst, b.proto, ((NO_PORT, NO_PORT),), b.ct) if b.dport == ICMP_TYPES_ALL else b for b in boxes]


def _one_proto(proto: Intervals) -> int | None:
    return proto[0][0] if len(proto) == 1 and proto[0][0] == proto[0][1] else None


def _whole_protocols(boxes: list[Box]) -> list[Box]:
    """For reading: a box of every port protocol on every port and its portless twin
    are one box of every protocol (not a physical box: only for `describe`)."""
    portless = {(b.iif, b.oif, b.src, b.dst, b.ct): b for b in boxes if b.dport == ((NO_PORT, NO_PORT),) and b.proto == iv_sub(PROTO_ALL, PORT_PROTOCOLS)}
    out = []
    for b in boxes:
        key = (b.iif, b.oif, b.src, b.dst, b.ct)
        if b.proto == PORT_PROTOCOLS and b.dport == PORTS_ALL and key in portless:
            out.append(Box(b.iif, b.oif, b.src, b.dst, PROTO_ALL, PORT_DIM_ALL, b.ct))
            portless.pop(key)
        elif not (b.dport == ((NO_PORT, NO_PORT),) and portless.get(key) is b and any(
            o.proto == PORT_PROTOCOLS and o.dport == PORTS_ALL and (o.iif, o.oif, o.src, o.dst, o.ct) == key for o in boxes
        )):
            out.append(b)
    return out


def _merge_along(boxes: list[Box], dim: str) -> tuple[list[Box], bool]:
    """Boxes equal in every dimension but `dim` as one box with the union of `dim`
    (the same set); and whether any were merged."""
    groups: dict[tuple, list[Box]] = {}
    key = _ALL_BUT[dim]
    for box in boxes:
        groups.setdefault(key(box), []).append(box)
    if len(groups) == len(boxes):
        return boxes, False
    merged = []
    for group in groups.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        values = [getattr(b, dim) for b in group]
        if dim in ("iif", "oif", "ct"):
            joined: object = 0
            for v in values:
                joined |= v  # type: ignore[operator]
        else:
            joined = iv_norm(p for v in values for p in v)
        merged.append(_with(group[0], dim, joined))
    return merged, True


def _with(box: Box, dim: str, value: object) -> Box:
    fields = {d: getattr(box, d) for d in _DIMS}
    fields[dim] = value
    return Box(**fields)  # type: ignore[arg-type]


def _box_order(box: Box) -> tuple:
    return (box.iif, box.oif, box.src, box.dst, box.proto, box.dport, box.ct)


def service_text(proto: Intervals, dport: Intervals) -> str:
    if proto == PROTO_ALL and dport == PORT_DIM_ALL:
        return "any protocol"
    if iv_size(proto) > 128:  # most protocols: say which are left out
        left_out = iv_sub(PROTO_ALL, proto)
        names = [PROTO_NAMES.get(p, f"proto {p}") for low, high in left_out for p in range(low, high + 1)]
        text = "any protocol but " + ", ".join(names) if names else "any protocol"
        return text if dport in (((NO_PORT, NO_PORT),), PORT_DIM_ALL) else f"{text}, port {_ports_text(dport)}"
    protos = []
    for low, high in proto:
        protos += [PROTO_NAMES.get(p, f"proto {p}") for p in range(low, high + 1)] if high - low < 8 else [f"proto {low}-{high}"]
    if dport in (((NO_PORT, NO_PORT),), PORT_DIM_ALL, PORTS_ALL, ICMP_TYPES_ALL):
        return "+".join(protos)
    if dport[0][0] >= ICMP_BASE:
        return f"{'+'.join(protos)} {icmp_text(_one_proto(proto), dport)}"
    return f"{'+'.join(protos)}/{_ports_text(dport)}"


def _ports_text(dport: Intervals) -> str:
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in dport if low != NO_PORT)


class _Sorted:
    """Boxes of one interface pair and one size class, sorted by where an address side starts
    (equal starts in the order they came: what inserting each at bisect_right gives)."""

    __slots__ = ("_starts", "_boxes", "_tail")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._boxes: list[Box] = []
        # (start, box) added since the last read (BoxIndex._table appends), sorted when read: an
        # index built whole (an intersection's, a combine's) is sorted once, not by one
        # list.insert per box (quadratic at 100,000 rules)
        self._tail: list[tuple[int, Box]] = []

    def _sort(self) -> None:
        tail = self._tail
        if len(tail) <= SMALL_TAIL:  # a chain's walk adds a rule's boxes between reads
            starts, boxes = self._starts, self._boxes
            for start, box in tail:
                if not starts or start >= starts[-1]:
                    starts.append(start)
                    boxes.append(box)
                else:
                    at = bisect_right(starts, start)
                    starts.insert(at, start)
                    boxes.insert(at, box)
        else:  # a stable sort keeps equal starts in the order they came, as the insertions would
            starts = self._starts + [start for start, _ in tail]
            boxes = self._boxes + [box for _, box in tail]
            # the positions in start order (the sorted part is one run: a merge), then both lists by them
            order = sorted(range(len(starts)), key=starts.__getitem__)
            self._starts = list(map(starts.__getitem__, order))
            self._boxes = list(map(boxes.__getitem__, order))
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


SMALL_TAIL = 16  # up to this many new boxes are inserted one by one; more, and the group is sorted again


def _reach(size_class: int) -> int:
    """How far before a lookup's start an interval of this class may start and still overlap it."""
    return 0 if size_class == 0 else 1 << (4 * size_class)


REACH = tuple(_reach(c) for c in range(2 + 129 // 4))  # by size class (addresses have 129 bits), looked up per group


HUGE = (1 << 32) - 1  # the widest interval of a box of every address of a family, at least
SMALL_GROUP = 8  # a group of at most this many boxes is taken whole, not bisected
PORT_BUCKET_BITS = 4  # ports are filed by 16s: well-known ports tell openings apart
WIDE = -1


@lru_cache(maxsize=1 << 16)  # asked for every box filed and looked up; rulesets have few distinct port sets
def _port_buckets(dport: Intervals) -> tuple[int, ...]:
    """The port buckets a port set touches, or (WIDE,) when it spans many."""
    low, high = dport[0][0], dport[-1][1]
    first, last = low >> PORT_BUCKET_BITS, high >> PORT_BUCKET_BITS
    return tuple(range(first, last + 1)) if last - first < 8 else (WIDE,)


class BoxIndex:
    """Finds the boxes that may overlap a box.

    Boxes are filed by interface pair, then by destination-port bucket (ports
    tell openings apart well), then, for every interval of the box's
    destination (and separately of its source), by the interval's size class,
    sorted by where it starts: an interval of class c that overlaps
    [low, high] starts in [low - _reach(c), high], a window found by
    bisection. A lookup walks the query's side with the narrower intervals.
    Openings name hosts, networks and ports, so a lookup touches the few
    boxes near them, not all."""

    def __init__(self, boxes: Sequence[Box] = ()):
        # (iif, oif) -> port bucket -> size class -> sorted intervals
        self.by_dst: dict[tuple[int, int], dict[int, dict[int, _Sorted]]] = {}
        self.by_src: dict[tuple[int, int], dict[int, dict[int, _Sorted]]] = {}
        self.all: list[Box] = []
        self.huge: list[Box] = []  # boxes of every source and destination: checked first, they cover much
        # boxes by every dimension but the destination (and but the source) and the conntrack
        # states: most boxes a lookup asks about lie within one that differs from them in one
        # address side only, often in more states (a walk's undecided packets, new connections)
        self.same_src: dict[tuple, list[Box]] = {}
        self.same_dst: dict[tuple, list[Box]] = {}
        self._alike_upto = 0  # boxes of `all` filed in same_src and same_dst (when first asked: most indexes never are)
        self._dst_upto = self._src_upto = 0  # boxes of `all` filed in by_dst, in by_src
        for box in boxes:
            self.add(box)

    def add(self, box: Box) -> None:
        self.all.append(box)
        src, dst = box.src, box.dst
        if (src[-1][1] - src[0][0] >= HUGE and dst[-1][1] - dst[0][0] >= HUGE  # cheap bounds first
                and iv_widest(src) >= HUGE and iv_widest(dst) >= HUGE):  # a whole family at least
            self.huge.append(box)

    def _table(self, side: str) -> dict[tuple[int, int], dict[int, dict[int, _Sorted]]]:
        """The boxes by one address side, filed when a lookup first walks that side (many
        indexes are only ever asked by one side, or never), in the order they were added."""
        table, upto = (self.by_dst, self._dst_upto) if side == "dst" else (self.by_src, self._src_upto)
        boxes = self.all
        if upto == len(boxes):
            return table
        for box in boxes[upto:] if upto else boxes:
            pair = (box.iif, box.oif)
            by_port = table.get(pair)
            if by_port is None:
                by_port = table[pair] = {}
            for bucket in _port_buckets(box.dport):
                classes = by_port.get(bucket)
                if classes is None:
                    classes = by_port[bucket] = {}
                for low, high in box.dst if side == "dst" else box.src:
                    # grouped by size: class 0 holds single addresses, class c > 0 intervals of
                    # fewer than 2**(4*c) addresses (see _reach)
                    size_class = 0 if low == high else 1 + (high - low).bit_length() // 4
                    group = classes.get(size_class)
                    if group is None:
                        group = classes[size_class] = _Sorted()
                    group._tail.append((low, box))
        if side == "dst":
            self._dst_upto = len(boxes)
        else:
            self._src_upto = len(boxes)
        return table

    def covers_alike(self, box: Box) -> bool:
        """Whether one indexed box that differs from `box` in at most one address side and the
        conntrack states contains it."""
        boxes = self.all
        if self._alike_upto < len(boxes):
            same_src, same_dst = self.same_src, self.same_dst
            for b in boxes[self._alike_upto:]:
                same_src.setdefault((b.iif, b.oif, b.proto, b.dport, b.src), []).append(b)
                same_dst.setdefault((b.iif, b.oif, b.proto, b.dport, b.dst), []).append(b)
            self._alike_upto = len(boxes)
        ct = box.ct
        alike = self.same_src.get((box.iif, box.oif, box.proto, box.dport, box.src))
        if alike and any(not ct & ~b.ct and not iv_sub(box.dst, b.dst) for b in alike):
            return True
        alike = self.same_dst.get((box.iif, box.oif, box.proto, box.dport, box.dst))
        return bool(alike) and any(not ct & ~b.ct and not iv_sub(box.src, b.src) for b in alike)

    def overlapping(self, box: Box) -> list[Box]:
        dst, src = box.dst, box.src
        wide_dst = dst[0][1] - dst[0][0] if len(dst) == 1 else iv_widest(dst)
        wide_src = src[0][1] - src[0][0] if len(src) == 1 else iv_widest(src)
        if wide_dst < wide_src or (wide_dst == wide_src and len(dst) <= len(src)):  # fewer windows
            table = self.by_dst if self._dst_upto == len(self.all) else self._table("dst")
            side = dst
        else:
            table = self.by_src if self._src_upto == len(self.all) else self._table("src")
            side = src
        buckets = _port_buckets(box.dport)
        keys = None if buckets[0] == WIDE else (*buckets, WIDE)
        first, last = side[0][0], side[-1][1]
        iif, oif = box.iif, box.oif
        # first seen first: a box filed under several buckets or intervals is kept where it is first met
        # (the order matters: a subtraction cuts by the boxes in this order, and findings print its pieces)
        found: dict[int, Box] = {}
        for (pair_iif, pair_oif), by_port in table.items():
            if not (pair_iif & iif and pair_oif & oif):
                continue
            for classes in by_port.values() if keys is None else [by_port[b] for b in keys if b in by_port]:
                for size_class, group in classes.items():
                    if group._tail:
                        group._sort()
                    starts = group._starts
                    reach = REACH[size_class]
                    if starts[0] > last or starts[-1] < first - reach:
                        continue  # nothing of this group starts near the side
                    boxes = group._boxes
                    if len(starts) <= SMALL_GROUP:  # fewer than the bisections would cost: callers check overlap
                        found.update(zip(map(id, boxes), boxes))
                        continue
                    for low, high in side:
                        hits = boxes[bisect_left(starts, low - reach) : bisect_right(starts, high)]
                        found.update(zip(map(id, hits), hits))
        return list(found.values())


def may_overlap(a: Box, b: Box) -> bool:
    """A quick test on the outer bounds of each dimension: False means certainly disjoint."""
    return bool(  # ports and protocols first: most boxes an index finds near a box miss it there
        a.iif & b.iif and a.oif & b.oif and a.ct & b.ct
        and a.dport[0][0] <= b.dport[-1][1] and b.dport[0][0] <= a.dport[-1][1]
        and a.proto[0][0] <= b.proto[-1][1] and b.proto[0][0] <= a.proto[-1][1]
        and a.dst[0][0] <= b.dst[-1][1] and b.dst[0][0] <= a.dst[-1][1]
        and a.src[0][0] <= b.src[-1][1] and b.src[0][0] <= a.src[-1][1]
    )


def may_contain(a: Box, b: Box) -> bool:
    """A quick test on the outer bounds: False means `a` certainly does not contain `b`."""
    return (
        b.iif & ~a.iif == 0 and b.oif & ~a.oif == 0 and b.ct & ~a.ct == 0
        and a.dst[0][0] <= b.dst[0][0] and b.dst[-1][1] <= a.dst[-1][1]
        and a.src[0][0] <= b.src[0][0] and b.src[-1][1] <= a.src[-1][1]
        and a.dport[0][0] <= b.dport[0][0] and b.dport[-1][1] <= a.dport[-1][1]
        and a.proto[0][0] <= b.proto[0][0] and b.proto[-1][1] <= a.proto[-1][1]
    )


MANY_NEAR = 8  # from this many boxes near one, whether they cover it is asked first, largest first


def _box_size(box: Box) -> int:
    return (bin(box.iif).count("1") * bin(box.oif).count("1") * bin(box.ct).count("1")
            * iv_size(box.src) * iv_size(box.dst) * iv_size(box.proto) * iv_size(box.dport))


def _common_size(a: Box, b: Box) -> int:
    """How many packets of `a` box `b` holds (0 when they miss each other)."""
    common = a.intersect(b)
    return 0 if common is None else _box_size(common)


def _covered(a: Box, near: list[Box]) -> bool:
    """Whether the boxes cover `a` whole. Largest share first: a wide opening that earlier,
    narrower rules punched holes in is then one cut (its holes left), and each hole one more,
    where the order of the index cuts it into hundreds of pieces. Whatever the order, the
    rest is empty exactly when covered; a rest that is not empty is worked out again in the
    index's order by the caller, so that what is reported does not depend on this."""
    sized = [(size, b) for b in near if (size := _common_size(a, b))]
    if sum(size for size, _ in sized) < _box_size(a):
        return False  # what they hold of it, even counted twice where they overlap, is less than it
    sized.sort(key=lambda pair: -pair[0])
    return not _minus_each(a, [b for _, b in sized])


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
        if any(h.contains(a) for h in index.huge) or index.covers_alike(a):
            continue  # covered whole by a box of everything (e.g. every established packet), or by its like
        near = [b for b in index.overlapping(a) if may_overlap(a, b)]
        if any(may_contain(b, a) and b.contains(a) for b in near):
            continue  # covered whole: no need to intersect or cut it into pieces
        if len(near) > MANY_NEAR and _covered(a, near):
            continue  # covered whole by several boxes together
        out.extend(_minus_each(a, near))
    return out


class Remaining:
    """`base` minus every space subtracted so far, kept lazy: what is still
    undecided in a chain. Asking what of it matches a rule costs the overlap
    with earlier rules, not the size of their union."""

    def __init__(self, base: Space):
        self.base = base
        self.removed = BoxIndex()

    def remove(self, space: Space) -> None:
        for box in space.boxes:
            self.removed.add(box)

    def intersect(self, space: Space) -> Space:
        hit = self.base.intersect(space)
        if not self.removed.all or not hit:
            return hit
        return Space(self.base.ifaces, subtract_boxes(hit.boxes, self.removed))

    def materialize(self) -> Space:
        return self.intersect(Space.full(self.base.ifaces))
