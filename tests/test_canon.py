"""Canonical regions (fwmatrix.space.canon): a function of the set of packets only, checked
against a brute-force reading of the definition on a small universe whose every value is seen."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fwmatrix.space import (
    ICMP_TYPES_ALL, NO_PORT, PORT_DIM_ALL, V4_BASE, Box, Interfaces, Space, icmp_values, iv_norm, physical,
)
from fwmatrix.space.canon import ORDER, canonical_boxes

IFACES = Interfaces.of(["wan0", "dmz0"])  # four interface bits with lo and OTHER
ADDRS = [V4_BASE + 10, V4_BASE + 11, V4_BASE + 12, 5, 6, 7]
PROTOS = [1, 6, 17, 47]
ICMP_POINTS = [icmp_values(5, 0)[0][0], icmp_values(8, 0)[0][0], icmp_values(8, 1)[0][0]]
PORTS = [22, 23, 24, NO_PORT, *ICMP_POINTS]
CTS = [1, 2]
VALUES = {"iif": range(4), "oif": range(4), "src": ADDRS, "dst": ADDRS, "proto": PROTOS, "dport": PORTS, "ct": CTS}


def _points_of(values: list[int]) -> st.SearchStrategy:
    """A set of the universe's values only (every value of it a point the oracle sees)."""
    return st.lists(st.sampled_from(values), min_size=1, max_size=len(values)).map(lambda vs: iv_norm((v, v) for v in vs))


def _range_of(values: list[int]) -> st.SearchStrategy:
    return st.tuples(st.sampled_from(values), st.sampled_from(values)).map(lambda t: ((min(t), max(t)),))


_boxes = st.builds(
    physical,
    st.integers(1, 15), st.integers(1, 15),
    st.one_of(_points_of(ADDRS), _range_of(ADDRS[:3]), _range_of(ADDRS[3:])),
    st.one_of(_points_of(ADDRS), _range_of(ADDRS[:3]), _range_of(ADDRS[3:])),
    _points_of(PROTOS), st.one_of(_points_of(PORTS), _range_of(PORTS[:3])), st.sampled_from([1, 2, 3]),
)
spaces = st.lists(_boxes, max_size=5).map(lambda lists: Space(IFACES, [b for bl in lists for b in bl]))


def _values(dim: str, value: object) -> frozenset[int]:
    """A box's value in one dimension as the universe's points."""
    if dim in ("iif", "oif"):
        return frozenset(v for v in VALUES[dim] if value >> v & 1)  # type: ignore[operator]
    if dim == "ct":
        return frozenset(v for v in CTS if value & v)  # type: ignore[operator]
    return frozenset(v for v in VALUES[dim] if any(low <= v <= high for low, high in value))  # type: ignore[attr-defined]


def _packets(boxes: list[Box]) -> set[tuple]:
    out: set[tuple] = set()
    for b in boxes:
        out |= set(itertools.product(*(_values(dim, getattr(b, dim)) for dim in ORDER)))
    return out


def _oracle(packets: set[tuple]) -> set[tuple]:
    """The definition, point by point: a dimension's values grouped by equal cross-section,
    each group with the canonical boxes of its cross-section."""
    if not packets:
        return set()
    if len(next(iter(packets))) == 1:
        return {(frozenset(p[0] for p in packets),)}
    cross: dict[int, set[tuple]] = {}
    for p in packets:
        cross.setdefault(p[0], set()).add(p[1:])
    groups: dict[frozenset, set[int]] = {}
    for value, rest in cross.items():
        groups.setdefault(frozenset(rest), set()).add(value)
    return {(frozenset(values),) + sub for rest, values in groups.items() for sub in _oracle(set(rest))}


def _as_points(boxes: list[Box]) -> set[tuple]:
    return {tuple(_values(dim, getattr(b, dim)) for dim in ORDER) for b in boxes}


@settings(max_examples=300, deadline=None)
@given(a=spaces)
def test_canonical_boxes_are_the_definition(a: Space) -> None:
    canon = canonical_boxes(a.boxes)
    packets = _packets(a.boxes)
    assert _packets(canon) == packets
    assert sum(len(_packets([b])) for b in canon) == len(packets)  # disjoint
    assert _as_points(canon) == _oracle(packets)
    assert all(physical(*(getattr(b, d) for d in ("iif", "oif", "src", "dst", "proto", "dport", "ct"))) == [b] for b in canon)


def _cut(boxes: list[Box], rng: random.Random) -> list[Box]:
    """The same set in other boxes: each box split by a random box (its common part and the rest),
    some repeated, some given again as a part of themselves (overlapping), all shuffled."""
    full = Space.full(IFACES)
    out: list[Box] = []
    for box in boxes:
        knife = full.make(**{dim: _random_value(dim, rng) for dim in rng.sample(ORDER, 2)}).boxes
        pieces = [box]
        for k in knife:
            pieces = [p for piece in pieces for p in piece.minus(k)] + [c for k2 in knife if (c := box.intersect(k2))]
        out += pieces
        if rng.random() < 0.3:
            out.append(box)
    rng.shuffle(out)
    return out


def _random_value(dim: str, rng: random.Random) -> object:
    if dim in ("iif", "oif"):
        return rng.randrange(1, 16)
    if dim == "ct":
        return rng.choice([1, 2, 3])
    values = sorted(rng.sample(VALUES[dim], rng.randrange(1, len(VALUES[dim]) + 1)))
    return iv_norm((v, v) for v in values) if rng.random() < 0.5 else ((values[0], values[-1]),)


@settings(max_examples=200, deadline=None)
@given(a=spaces, seed=st.integers(0, 2**32))
def test_the_same_set_in_other_boxes_reads_the_same(a: Space, seed: int) -> None:
    rng = random.Random(seed)
    other = Space(IFACES, _cut(a.boxes, rng))
    assert _packets(other.boxes) == _packets(a.boxes)
    assert other.lines() == a.lines()
    assert [r.fields for r in other.regions()] == [r.fields for r in a.regions()]
    assert canonical_boxes(other.boxes) == canonical_boxes(a.boxes)


def test_icmp_of_every_type_reads_portless_however_its_types_were_cut() -> None:
    full = Space.full(IFACES)
    addresses = {"src": ((V4_BASE, V4_BASE + 255),), "dst": ((V4_BASE + 256, V4_BASE + 256),)}
    whole = full.make(proto=((1, 1), (47, 47)), dport=PORT_DIM_ALL, **addresses)
    low, high = ICMP_TYPES_ALL[0]
    cut = Space(IFACES, full.make(proto=((47, 47),), **addresses).boxes + full.make(proto=((1, 1),), dport=((low, low + 999),), **addresses).boxes
                + full.make(proto=((1, 1),), dport=((low + 1000, high),), **addresses).boxes)
    assert whole.lines() == cut.lines() == ["0.0.0.0/24 → 0.0.1.0  icmp+gre"]


def test_every_protocol_reads_as_any_protocol_however_it_was_cut() -> None:
    full = Space.full(IFACES)
    addresses = {"src": ((V4_BASE, V4_BASE),), "dst": ((V4_BASE + 1, V4_BASE + 1),)}
    whole = full.make(**addresses)
    by_protocol = Space(IFACES, [b for p in range(256) for b in full.make(proto=((p, p),), **addresses).boxes])
    by_port = Space(IFACES, [b for low in range(0, 65536, 4096) for b in full.make(proto=((6, 6),), dport=((low, low + 4095),), **addresses).boxes]
                    + full.make(proto=((0, 5), (7, 255)), **addresses).boxes)
    assert whole.lines() == by_protocol.lines() == by_port.lines() == ["0.0.0.0 → 0.0.0.1  any protocol"]
    assert whole.regions()[0].fields["protocols"] is None and whole.regions()[0].fields["ports"] is None
    assert Space(IFACES, by_protocol.boxes[:-1]).lines() != whole.lines()  # one protocol short: not every protocol


def test_a_class_of_values_is_one_box_whatever_the_order() -> None:
    full = Space.full(IFACES)
    ssh = [full.make(src=((V4_BASE + h, V4_BASE + h),), dst=((V4_BASE + 100, V4_BASE + 100),), proto=((6, 6),), dport=((22, 22),)).boxes[0]
           for h in (1, 3, 2, 7)]
    web = full.make(src=((V4_BASE + 3, V4_BASE + 3),), dst=((V4_BASE + 100, V4_BASE + 100),), proto=((6, 6),), dport=((80, 80),)).boxes
    lines = Space(IFACES, ssh + web).lines()
    assert lines == Space(IFACES, web + ssh[::-1]).lines() == [
        "0.0.0.1, 0.0.0.2, 0.0.0.7 → 0.0.0.100  tcp/22",
        "0.0.0.3 → 0.0.0.100  tcp/22,80",
    ]
