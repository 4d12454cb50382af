"""A box minus many boxes (fwmatrix.space.cut): the sweep of the cutters that hold the box in all
but its addresses, then the others piece by piece, against a brute-force reading of the
packets on a small universe whose every value is seen, and against cutting one box after the
other (the algorithm before the sweep)."""

from __future__ import annotations

import itertools
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from fwmatrix.space import NO_PORT, V4_BASE, Box, iv_and, iv_norm
from fwmatrix.space import cut
from fwmatrix.space.canon import canonical_boxes

FAMILIES = (0, V4_BASE)  # IPv6 addresses 0..15, IPv4 addresses V4_BASE + 0..15
SPAN = 16
PROTOS = (6, 17, 47)
PORTS = (22, 23, 24, 25, NO_PORT)


def _side(family: int) -> st.SearchStrategy:
    """An address set of one family: a few intervals of 0..15 joined (often several)."""
    interval = st.tuples(st.integers(0, SPAN - 1), st.integers(0, SPAN - 1)).map(lambda t: (family + min(t), family + max(t)))
    return st.lists(interval, min_size=1, max_size=4).map(iv_norm)


def _mask(bits: int) -> st.SearchStrategy:
    return st.integers(1, (1 << bits) - 1)


@st.composite
def _box(draw: st.DrawFn, family: int | None = None) -> Box:
    """A physical box: one family, port protocols with ports or another protocol without."""
    family = draw(st.sampled_from(FAMILIES)) if family is None else family
    if draw(st.booleans()):
        proto = iv_norm((p, p) for p in draw(st.lists(st.sampled_from((6, 17)), min_size=1)))
        low, high = sorted(draw(st.tuples(st.integers(22, 25), st.integers(22, 25))))
        dport = ((low, high),)
    else:
        proto, dport = ((47, 47),), ((NO_PORT, NO_PORT),)
    return Box(draw(_mask(3)), draw(_mask(3)), draw(_side(family)), draw(_side(family)), proto, dport, draw(_mask(2)))


@st.composite
def _case(draw: st.DrawFn) -> tuple[Box, list[Box]]:
    """A box and boxes near it: most hold it in every dimension but the addresses (a wide rule
    after host rules), some do not (other states, interfaces, ports, families; many in some of its
    interfaces or states, as bans after `ct state established,related accept`)."""
    a = draw(_box(FAMILIES[draw(st.integers(0, 1))]))
    near = []
    for kind in draw(st.lists(st.sampled_from(["alike", "alike", "alike", "wider", "partial", "other family", "established", "some ports", "some states"]), max_size=24)):
        if kind == "alike":
            family = V4_BASE if a.src[0][0] >= V4_BASE else 0
            near.append(Box(a.iif, a.oif, draw(_side(family)), draw(_side(family)), a.proto, a.dport, a.ct))
        elif kind == "some ports":  # as a in all but the addresses and ports: one or two ranges of 21..26 (a's, some, none)
            family = V4_BASE if a.src[0][0] >= V4_BASE else 0
            ports = iv_norm(sorted(draw(st.tuples(st.integers(21, 26), st.integers(21, 26)))) for _ in range(draw(st.integers(1, 2))))
            near.append(Box(a.iif, a.oif, draw(_side(family)), draw(_side(family)), a.proto, ports, a.ct))
        elif kind == "some states":  # as a in all but the addresses and some of its interfaces or states (bans after established)
            family = V4_BASE if a.src[0][0] >= V4_BASE else 0
            iif, ct = (a.iif & draw(_mask(3))) or a.iif, (a.ct & draw(_mask(2))) or a.ct
            near.append(Box(iif, a.oif, draw(_side(family)), draw(_side(family)), a.proto, a.dport, ct))
        elif kind == "wider":  # more interfaces and states than a, and a's services (or all ports)
            family = V4_BASE if a.src[0][0] >= V4_BASE else 0
            dport = a.dport if a.dport[0][0] == NO_PORT else ((20, 30),)
            near.append(Box(a.iif | draw(_mask(3)), a.oif | draw(_mask(3)), draw(_side(family)), draw(_side(family)), a.proto, dport, 3))
        elif kind == "established":  # every address of a's family, a's services, other states (and interfaces)
            family = ((V4_BASE, V4_BASE + SPAN - 1),) if a.src[0][0] >= V4_BASE else ((0, SPAN - 1),)
            near.append(Box(draw(_mask(3)), draw(_mask(3)), family, family, a.proto, a.dport, draw(_mask(2))))
        elif kind == "partial":
            near.append(draw(_box(V4_BASE if a.src[0][0] >= V4_BASE else 0)))
        else:
            near.append(draw(_box(0 if a.src[0][0] >= V4_BASE else V4_BASE)))
    return a, near


def _values(dim: str, value: object) -> list:
    if dim in ("iif", "oif", "ct"):
        return [bit for bit in range(4) if value >> bit & 1]  # type: ignore[operator]
    return [v for low, high in value for v in range(low, high + 1)]  # type: ignore[attr-defined]


DIMS = ("iif", "oif", "src", "dst", "proto", "dport", "ct")


def _packets(boxes: list[Box]) -> set[tuple]:
    out: set[tuple] = set()
    for b in boxes:
        out |= set(itertools.product(*(_values(dim, getattr(b, dim)) for dim in DIMS)))
    return out


def _assert_disjoint_physical(boxes: list[Box]) -> None:
    """Pieces a Space keeps: one family per box (both sides the same), no empty dimension, no two meeting."""
    for b in boxes:
        assert b.iif and b.oif and b.ct and b.src and b.dst and b.proto and b.dport
        family = b.src[0][0] >= V4_BASE
        assert (b.src[-1][1] >= V4_BASE) == family and (b.dst[0][0] >= V4_BASE) == family and (b.dst[-1][1] >= V4_BASE) == family
        assert b.src == iv_norm(b.src) and b.dst == iv_norm(b.dst)
    for x, y in itertools.combinations(boxes, 2):
        assert x.intersect(y) is None


@settings(max_examples=300, deadline=None)
@given(case=_case())
def test_minus_many_is_the_packets_left(case: tuple[Box, list[Box]]) -> None:
    """Whatever the threshold, the pieces are exactly a's packets that no near box holds, disjoint
    and physical, and the same set as cutting by one box after the other."""
    a, near = case
    saved = cut.SWEEP_FROM
    try:
        for threshold in (1, 3, 8):
            cut.SWEEP_FROM = threshold
            got = cut._minus_many(a, near)
            assert _packets(got) == _packets([a]) - _packets([c for b in near if (c := a.intersect(b)) is not None])
            _assert_disjoint_physical(got)
            assert canonical_boxes(got) == canonical_boxes(cut._minus_each(a, near))
    finally:
        cut.SWEEP_FROM = saved


@st.composite
def _ports_case(draw: st.DrawFn) -> tuple[Box, list[Box]]:
    """A box of several ports and boxes near it of which many hold only some of its ports (rules
    of one service after a wider rule), the rest as `_case` draws them."""
    a, near = draw(_case())
    family = V4_BASE if a.src[0][0] >= V4_BASE else 0
    low, high = sorted(draw(st.tuples(st.integers(21, 24), st.integers(23, 26))))
    a = Box(a.iif, a.oif, a.src, a.dst, ((6, 6),), ((low, high),), a.ct)
    for kind in draw(st.lists(st.sampled_from(["alike", "some ports", "some ports"]), min_size=4, max_size=20)):
        ports = a.dport if kind == "alike" else iv_norm(sorted(draw(st.tuples(st.integers(21, 26), st.integers(21, 26)))) for _ in range(draw(st.integers(1, 2))))
        near.append(Box(a.iif, a.oif, draw(_side(family)), draw(_side(family)), a.proto, ports, a.ct))
    return a, draw(st.permutations(near))


@settings(max_examples=300, deadline=None)
@given(case=_ports_case())
def test_cutters_of_some_ports_swept_per_class_are_the_packets_left(case: tuple[Box, list[Box]]) -> None:
    """The cutters that hold only some of a's ports, swept once per class of its ports (whatever
    their number per class) or cut piece by piece: the pieces are a's packets that no near box
    holds, disjoint and physical."""
    a, near = case
    saved = cut.SWEEP_FROM, cut.CUTTERS_PER_CLASS
    try:
        for threshold, per_class in itertools.product((1, 3), (0, 2, 8)):
            cut.SWEEP_FROM, cut.CUTTERS_PER_CLASS = threshold, per_class
            got = cut._minus_many(a, near)
            assert _packets(got) == _packets([a]) - _packets([c for b in near if (c := a.intersect(b)) is not None])
            _assert_disjoint_physical(got)
    finally:
        cut.SWEEP_FROM, cut.CUTTERS_PER_CLASS = saved


@settings(max_examples=300, deadline=None)
@given(dport=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)).map(sorted), min_size=1, max_size=3).map(iv_norm),
       sets=st.lists(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)).map(sorted), min_size=1, max_size=3).map(iv_norm), min_size=1, max_size=4, unique=True))
def test_port_classes_split_the_ports_by_the_sets_that_hold_them(dport: tuple, sets: list[tuple]) -> None:
    """The classes are a's ports cut into parts that each set holds whole or misses, one class for
    each distinct choice of sets, with the rectangles of the sets that hold it."""
    rect = {ports: [(((i, i),), ((i, i),))] for i, ports in enumerate(sets)}
    classes = cut._port_classes(dport, rect)
    assert sorted(p for ports, _ in classes for p in _values("dport", ports)) == _values("dport", dport)
    choices = set()
    for ports, cuts in classes:
        held = frozenset(i for i, s in enumerate(sets) if iv_and(ports, s))
        assert all(not iv_and(ports, s) or iv_and(ports, s) == ports for s in sets)
        assert sorted(cuts) == sorted(rect[sets[i]][0] for i in held)
        assert held not in choices
        choices.add(held)


@settings(max_examples=300, deadline=None)
@given(case=_case())
def test_cutters_of_masks_only_cut_as_one_after_the_other(case: tuple[Box, list[Box]]) -> None:
    """The pieces of a sweep minus the cutters that stay: the cutters that hold a's addresses and
    services taken out by their interfaces and states alone give the very pieces, in their order,
    of cutting each piece by each cutter."""
    a, near = case
    pieces = cut._sweep(a, [(b.src, b.dst) for b in near]) or [a]
    assert cut._pieces_minus_cutters(a, pieces, near) == cut._pieces_minus_each(pieces, near)
    for b in near:
        if cut._holds_but_masks(b, a):
            assert all(cut._minus_masks(piece, b) == piece.minus(b) for piece in pieces)


@settings(max_examples=300, deadline=None)
@given(case=_case())
def test_cutters_of_masks_first_taken_from_the_box_give_the_very_pieces(case: tuple[Box, list[Box]]) -> None:
    """The established box first in line taken from a before the sweep: the pieces, in their order,
    of sweeping a and cutting each piece by it."""
    a, near = case
    rects = [(b.src, b.dst) for b in near if b.iif == a.iif and b.oif == a.oif and b.ct == a.ct][:6]
    cutters = [b for b in near if cut._holds_but_masks(b, a)][:2] + near
    want = cut._pieces_minus_cutters(a, cut._sweep(a, rects), cutters)
    first, rest = cut._masks_first(a, cutters)
    assert (first is None and not want) or (first is not None and cut._pieces_minus_cutters(first, cut._sweep(first, rects), rest) == want)


@settings(max_examples=300, deadline=None)
@given(a=_box(V4_BASE), rects=st.lists(st.tuples(_side(V4_BASE), _side(V4_BASE)), max_size=30))
def test_sweep_is_the_rectangles_taken_out(a: Box, rects: list[tuple]) -> None:
    """The sweep alone: a's addresses minus the
    union of the rectangles, a's other dimensions untouched; neighbouring segments that keep the
    same are one box."""
    got = cut._sweep(a, rects)
    want = {(s, d) for s in _values("src", a.src) for d in _values("dst", a.dst)}
    want -= {(s, d) for src, dst in rects for s in _values("src", iv_and(src, a.src)) for d in _values("dst", iv_and(dst, a.dst))}
    assert {(s, d) for b in got for s in _values("src", b.src) for d in _values("dst", b.dst)} == want
    _assert_disjoint_physical(got)
    for b in got:
        assert (b.iif, b.oif, b.proto, b.dport, b.ct) == (a.iif, a.oif, a.proto, a.dport, a.ct)
    for x, y in itertools.combinations(got, 2):  # neighbours along the source that keep the same are one box
        (x_along, x_other), (y_along, y_other) = (x.src, x.dst), (y.src, y.dst)
        if x_other == y_other:
            assert not any(h + 1 == l for (_, h) in x_along for (l, _) in y_along)
            assert not any(h + 1 == l for (_, h) in y_along for (l, _) in x_along)


@settings(max_examples=300, deadline=None)
@given(a=_box(V4_BASE), sides=st.lists(st.tuples(_side(V4_BASE), _side(V4_BASE)), max_size=30))
def test_a_sweep_of_sources_alone_gives_the_general_sweeps_boxes(a: Box, sides: list[tuple]) -> None:
    """Rectangles whose destinations hold a's (sources dropped before an accept: a blocklist) take
    the sweep's shortcut, one subtraction: the very boxes the general sweep gives."""
    rects = [(src, iv_norm(a.dst + extra)) for src, extra in sides]
    assert cut._all_hold(a.dst, rects)
    got = cut._sweep(a, rects)
    with patch.object(cut, "_all_hold", lambda other, rects: False):
        assert got == cut._sweep(a, rects)
    assert len(got) <= 1


def test_sweep_of_hosts_in_a_network_keeps_few_boxes() -> None:
    """A wide rule after a thousand host pairs in it (a naive ruleset): the rest is a box per
    distinct destination rest, not a piece per cut."""
    net = ((V4_BASE + (10 << 24), V4_BASE + (10 << 24) + 0xFFFF),)
    a = Box(1, 1, net, net, ((6, 6),), ((443, 443),), 1)
    hosts = [V4_BASE + (10 << 24) + 7 * i for i in range(1000)]
    near = [Box(1, 3, ((h, h),), ((h + 1, h + 1),), ((6, 6),), ((0, 65535),), 1) for h in hosts]
    got = cut._minus_many(a, near)
    assert len(got) == 1001  # each host's source keeps the net but its one destination; the others all of it
    assert sum((s[1] - s[0] + 1) * sum(h - l + 1 for l, h in b.dst) for b in got for s in b.src) == 0x10000 * 0x10000 - 1000
    _assert_disjoint_physical(got[:50])


def test_a_port_set_equal_to_a_protocol_set_is_not_taken_for_it() -> None:
    """TCP port 6 is the tuple of protocol 6 (tcp): whether a cutter's ports hold a's is not
    read from what was found for its protocols (it would take ports 5 and 7 out too)."""
    net = ((V4_BASE, V4_BASE + 255),)
    a = Box(1, 1, net, net, ((6, 6),), ((5, 7),), 1)
    near = [Box(1, 1, ((V4_BASE + i, V4_BASE + i),), net, ((6, 6),), ((6, 6),), 1) for i in range(256)]
    near += [Box(1, 1, net, ((V4_BASE + i, V4_BASE + i),), ((6, 6),), ((0, 65535),), 1) for i in range(0, 256, 2)]
    got = cut._minus_many(a, near)
    assert {b.dport for b in got} == {((5, 5),), ((7, 7),)} or {b.dport for b in got} == {((5, 5), (7, 7))}
    assert _packets(got) == _packets([a]) - _packets([c for b in near if (c := a.intersect(b)) is not None])
