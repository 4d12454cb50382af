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

from operator import attrgetter
from typing import Iterator, Sequence

from fwmatrix.intervals import (  # noqa: F401 (the dimensions' values, re-exported)
    V4_BASE, V6_ALL, V4_ALL, ADDR_ALL, NO_PORT, PORTS_ALL, PORT_DIM_ALL, PROTO_ALL, PORT_PROTOCOLS, CT_STATES,
    ICMP_BASE, ICMP_TYPES_ALL, PORTLESS_ALL, ECHO_REQUEST, ICMP_PROTOCOLS, icmp_values, icmp_text,
    CT_TRANSLATABLE, CT_DNAT_SHIFT, CT_ALL, CT_DNAT, PROTO_NAMES, Intervals, ct_bits, ct_translated, ct_text,
    iv_norm, iv_and, iv_or, iv_sub, iv_overlaps, iv_size, iv_widest, addr_interval, addrs, family_of, addr_text, OTHER,
    Interfaces,
)
from fwmatrix.space.box import NOT_PORTLESS, Box, box_size, physical  # noqa: F401 (re-exported)
from fwmatrix.space.index import BoxIndex, may_contain, may_overlap, meet_all  # noqa: F401 (re-exported)
from fwmatrix.space.cut import subtract_boxes  # noqa: F401 (re-exported)
from fwmatrix.space.canon import canonical_boxes, join_values


FEW_ASKING = 4  # an intersection asking at most this many boxes of a space without an index tests each of its boxes


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
            pairs = [a.intersect(b) for a in small.boxes for b in large.boxes]
            return Space(self.ifaces, [c for c in pairs if c is not None])
        asking = small.boxes
        if len(asking) > 1 and large._index is None:
            # a box of protocols none of the other side's has meets nothing: not looked up (a chain's
            # scope has a box per service; a set's elements are of one), a pass no dearer than indexing
            protocols = {b.proto for b in large.boxes}
            asking = [a for a in asking if any(iv_overlaps(a.proto, p) for p in protocols)]
        if len(asking) <= FEW_ASKING and large._index is None:
            # a few boxes (a chain's scope) asked of many (a set's elements): each box tested on the
            # bounds of each costs less than filing them all in an index asked only these few times
            return Space(self.ifaces, [c for _, c in meet_all(asking, large.boxes)])
        index = large.index()
        out = []
        for a in asking:
            for b in index.overlapping(a):
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
        return sum(box_size(b) for b in self.disjoint().boxes)

    def simplified(self) -> "Space":
        """The same set as its canonical boxes (fwmatrix.space.canon): disjoint, as few as one
        class of values per dimension allows, and the same for the same set however it was cut."""
        return Space(self.ifaces, canonical_boxes(self.boxes))

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
        """The space as people read it: a line per box of `_reading`, a function of the set only."""
        return [self.describe(b) for b in self._reading()]

    def regions(self) -> tuple["Region", ...]:
        """`lines`, each carrying its box as `fields` (a finding's packets in every report)."""
        return tuple(Region(self.describe(b), self.fields(b)) for b in self._reading())

    def _reading(self) -> list[Box]:
        return as_read(canonical_boxes(self.boxes))

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


def _one_proto(proto: Intervals) -> int | None:
    return proto[0][0] if len(proto) == 1 and proto[0][0] == proto[0][1] else None


_PORTLESS = ((NO_PORT, NO_PORT),)
_EVERY_SERVICE = sorted([(PORT_PROTOCOLS, PORTS_ALL), (iv_sub(PROTO_ALL, PORT_PROTOCOLS), _PORTLESS)])  # with ICMP read portless


def as_read(canonical: list[Box]) -> list[Box]:
    """Canonical boxes (ORDER: the services last) as they are read: the services of each run of
    boxes equal but for them (the one cross-section of those packets) with ICMP of every type as
    a protocol without ports, joining the other portless protocols, and every port protocol on
    every port with every other protocol as one box of any protocol. Neither is a physical box,
    only for `describe`; each changes one set of services into another that no physical set is,
    so the reading stays a function of the packets."""
    if not any(b.dport == ICMP_TYPES_ALL or b.dport == PORTS_ALL for b in canonical):
        return sorted(canonical, key=_box_order)  # nothing either convention reads otherwise
    out: list[Box] = []
    start = 0
    while start < len(canonical):
        first = canonical[start]
        end = start + 1
        while end < len(canonical) and _outside_services(canonical[end]) == _outside_services(first):
            end += 1
        services = [(b.proto, b.dport) for b in canonical[start:end]]
        if any(dport == ICMP_TYPES_ALL for _, dport in services):
            portless = iv_norm(p for proto, dport in services if dport in (ICMP_TYPES_ALL, _PORTLESS) for p in proto)
            services = sorted([s for s in services if s[1] not in (ICMP_TYPES_ALL, _PORTLESS)] + [(portless, _PORTLESS)])
        if sorted(services) == _EVERY_SERVICE:
            services = [(PROTO_ALL, PORT_DIM_ALL)]
        if len(services) == end - start and all(b.proto == s[0] and b.dport == s[1] for b, s in zip(canonical[start:end], services)):
            out += canonical[start:end]
        else:
            out += [Box(first.iif, first.oif, first.src, first.dst, proto, dport, first.ct) for proto, dport in services]
        start = end
    return sorted(out, key=_box_order)


def _outside_services(box: Box) -> tuple:
    return (box.iif, box.oif, box.src, box.dst, box.ct)


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
        merged.append(_with(group[0], dim, join_values([getattr(b, dim) for b in group], dim in ("iif", "oif", "ct"))))
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
        return self.split(space)[1]

    def split(self, space: Space) -> tuple[Space, Space]:
        """The packets of `space` within the base, and of those the ones still undecided."""
        within = self.base.intersect(space)
        if not self.removed.all or not within:
            return within, within
        return within, Space(self.base.ifaces, subtract_boxes(within.boxes, self.removed))

    def materialize(self) -> Space:
        return self.intersect(Space.full(self.base.ifaces))
