"""audit/within.py's cheap test against the brute-force oracle of test_space.py: when it says
a box lies within a space, every packet of the box is in the space; and when the space's boxes
that meet the box hold it in every dimension but the addresses, it says so whenever it does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import fwmatrix.audit.within as within_module
from fwmatrix.audit.findings import CT_ESTABLISHED, CT_NEW, CT_NEW_DNAT, _Arrivals, _in_states
from fwmatrix.audit.within import Within
from fwmatrix.space import CT_ALL, V4_BASE, Box, Space, iv_and, iv_sub
from test_space import IFACES, POINTS, boxes, member, points, spaces

TCP, HTTP = ((6, 6),), ((80, 80),)


def holds_in_all_but_addresses(b: Box, a: Box) -> bool:
    return not (a.iif & ~b.iif or a.oif & ~b.oif or a.ct & ~b.ct or iv_sub(a.proto, b.proto) or iv_sub(a.dport, b.dport))


@settings(max_examples=300, deadline=None)
@given(a=spaces, b=spaces, parts=st.lists(spaces, max_size=4))
def test_within_says_yes_only_when_the_oracle_does(a: Space, b: Space, parts: list[Space]) -> None:
    # near misses: a's boxes in other states, by other interfaces, on other ports, beside boxes that cover part of them
    near = [Box(x.iif ^ 1 or 2, x.oif, x.src, x.dst, x.proto, x.dport, x.ct) for x in a.boxes[:2]]
    near += [Box(x.iif, x.oif, x.src, x.dst, x.proto, x.dport, x.ct ^ 3 or 4) for x in a.boxes[:2]]
    near += [Box(x.iif, x.oif, x.src, x.dst, x.proto, ((x.dport[-1][1] + 1, x.dport[-1][1] + 1),), x.ct) for x in a.boxes[:1]]
    # beside them, a box of the same service, interfaces and states from an address of no other box
    near += [Box(x.iif, x.oif, ((x.src[0][0] - 1,) * 2,), x.dst, x.proto, x.dport, x.ct) for x in a.boxes[:2]]
    space = Space(IFACES, b.boxes + [x for p in parts for x in p.boxes] + near + a.subtract(b).boxes[:2])
    test = Within(space)
    inside = points(space)
    for box in a.boxes:
        oracle = points(Space(IFACES, [box])) <= inside
        if test.holds(box):
            assert oracle
        elif oracle and all(holds_in_all_but_addresses(x, box) for x in space.boxes if x.intersect(box)):
            raise AssertionError(f"not shown, though the boxes meeting it cover it in its service: {box}")
    assert test.holds_all(a.boxes) == all(test.holds(box) for box in a.boxes)


@settings(max_examples=300, deadline=None)
@given(box=boxes.filter(bool).map(lambda made: made[0]), cuts=st.lists(st.tuples(st.booleans(), st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=3))
def test_boxes_that_each_hold_part_of_one_address_side(box: Box, cuts: list) -> None:
    """The box's own packets, each space box cut to part of one address side (as hosts forwarded
    one by one cover part of a network): within only when the parts leave nothing out."""
    space = []
    for on_src, a, b in cuts:
        side = box.src if on_src else box.dst
        low = side[0][0] + min(a, b)
        part = iv_and(side, ((low, low + abs(a - b)),))
        if part:
            space.append(Box(box.iif, box.oif, part if on_src else box.src, box.dst if on_src else part, box.proto, box.dport, box.ct))
    space_ = Space(IFACES, space)
    if Within(space_).holds(box):
        assert points(Space(IFACES, [box])) <= points(space_)


def test_one_box_holding_part_of_the_narrower_side_is_not_enough() -> None:
    """A regression (found in review of 6dede23): one space box meeting only part of the box's
    narrower address side was taken as a single cell, and its other side alone was compared:
    the box was said to lie within though source 10 is forwarded nowhere (fail-open)."""
    part = Box(1, 2, ((V4_BASE + 11, V4_BASE + 12),), ((V4_BASE + 100, V4_BASE + 200),), TCP, HTTP, 1)
    box = Box(1, 2, ((V4_BASE + 10, V4_BASE + 12),), ((V4_BASE + 100, V4_BASE + 200),), TCP, HTTP, 1)
    assert not Within(Space(IFACES, [part])).holds(box)
    assert Within(Space(IFACES, [part, Box(1, 2, (_host(10),), ((V4_BASE + 100, V4_BASE + 200),), TCP, HTTP, 1)])).holds(box)


def _host(n: int) -> tuple[int, int]:
    return (V4_BASE + n, V4_BASE + n)


def test_hosts_covered_only_together() -> None:
    """A network to three hosts, forwarded by boxes of some hosts each, which together leave
    one source unforwarded towards one destination: not within; with that gap filled, within."""
    box = Box(1, 2, ((V4_BASE + 0, V4_BASE + 15),), (_host(100), _host(102), _host(104)), TCP, HTTP, 1)
    pieces = [
        Box(1, 2, ((V4_BASE + 0, V4_BASE + 7),), (_host(100), _host(102), _host(104)), TCP, HTTP, 3),
        Box(3, 2, ((V4_BASE + 8, V4_BASE + 15),), (_host(100), _host(102)), TCP, ((80, 81),), 1),
        Box(1, 2, (_host(8), (V4_BASE + 10, V4_BASE + 15)), (_host(104),), TCP, HTTP, 1),
    ]
    assert not Within(Space(IFACES, pieces)).holds(box)
    assert Space(IFACES, [box]).subtract(Space(IFACES, pieces))  # the exact algebra agrees
    filled = pieces + [Box(1, 2, (_host(9),), (_host(103), _host(104)), TCP, HTTP, 1)]
    assert Within(Space(IFACES, filled)).holds(box)
    assert not Space(IFACES, [box]).subtract(Space(IFACES, filled))


def test_ports_cut_by_the_space_are_tried_part_by_part() -> None:
    """A port range forwarded by one box below one port, one at it and one above (as a walk
    leaves a range that an earlier rule cut)."""
    box = Box(1, 2, (_host(1),), (_host(2),), TCP, ((8000, 8099),), 1)
    parts = [((8000, 8079),), ((8080, 8080),), ((8081, 8099),)]
    space = Space(IFACES, [Box(1, 2, (_host(1),), (_host(2),), TCP, ports, 1) for ports in parts])
    assert Within(space).holds(box)
    assert not Within(Space(IFACES, space.boxes[:2])).holds(box)


def test_too_much_work_is_not_shown(monkeypatch) -> None:
    """Past the budget the test gives up ("not shown"), and the caller subtracts."""
    servers = ((V4_BASE + 100, V4_BASE + 115),)
    box = Box(1, 2, ((V4_BASE + 0, V4_BASE + 15),), servers, TCP, HTTP, 1)
    hosts = Space(IFACES, [Box(1, 2, (_host(n),), servers, TCP, HTTP, 1) for n in range(16)])
    assert Within(hosts).holds(box)
    monkeypatch.setattr(within_module, "WORK_BUDGET", 4)
    assert not Within(hosts).holds(box)


# the audit's boxes around a grant's new connections (findings._Arrivals) and its forwarded set
# in new states (findings._in_states): the oracle above, with translated new connections too

CT_POINTS = [CT_NEW, CT_ESTABLISHED, CT_NEW_DNAT]
DNAT_POINTS = [p[:6] + (ct,) for p in POINTS if p[6] == CT_NEW for ct in CT_POINTS]


def points_in_states(space: Space) -> set:
    return {p for p in DNAT_POINTS if member(space, p)}


in_some_states = st.tuples(spaces, st.lists(st.sampled_from([CT_NEW, CT_ESTABLISHED, CT_NEW_DNAT, CT_NEW | CT_NEW_DNAT, CT_ALL]), min_size=4, max_size=4)).map(
    lambda made: Space(IFACES, [Box(b.iif, b.oif, b.src, b.dst, b.proto, b.dport, ct) for b, ct in zip(made[0].boxes, made[1] * 4)]))


@settings(max_examples=200, deadline=None)
@given(grant=in_some_states, targets=spaces)
def test_boxes_around_arrivals_hold_every_arriving_packet(grant: Space, targets: Space) -> None:
    translated = Space(IFACES, [Box(b.iif, b.oif, b.src, b.dst, b.proto, b.dport, CT_NEW_DNAT) for b in targets.boxes])
    arriving = grant.intersect(Space.full(IFACES).make(ct=CT_NEW).union(translated))
    around = Space(IFACES, _Arrivals(translated).around(grant))
    assert points_in_states(arriving) <= points_in_states(around) <= points_in_states(grant)


@settings(max_examples=150, deadline=None)
@given(space=in_some_states, ct=st.sampled_from([CT_NEW, CT_NEW | CT_NEW_DNAT, CT_ESTABLISHED]))
def test_a_space_in_some_states_is_its_meet_with_them(space: Space, ct: int) -> None:
    assert points_in_states(_in_states(space, ct)) == points_in_states(space.intersect(Space.full(IFACES).make(ct=ct)))
