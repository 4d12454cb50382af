"""audit/within.py's cheap test against the brute-force oracle of test_space.py: when it says
a box lies within a space, every packet of the box is in the space; and when the space's boxes
that meet the box hold it in every dimension but the addresses, it says so whenever it does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import fwmatrix.audit.within as within_module
from fwmatrix.audit.findings import CT_ESTABLISHED, CT_NEW, CT_NEW_DNAT, _Arrivals, _in_states
from fwmatrix.audit.within import Within
from fwmatrix.space import CT_ALL, V4_BASE, Box, Space, iv_and, iv_norm, iv_sub
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
    # the hosts' boxes to more servers: their destination is no interval of the box (the exact keys miss)
    hosts = Space(IFACES, [Box(1, 2, (_host(n),), ((V4_BASE + 100, V4_BASE + 116),), TCP, HTTP, 1) for n in range(16)])
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


# The lookups by exact keys that answer most boxes before the search (Within._in_wide, _held_exactly
# with its blocks, and the boxes the search showed): each "within" checked against the exact
# subtraction, on spaces made of the box's own intervals with other sides, states, interfaces,
# protocols and ports near its own, so that the lookups meet both holding and near-miss entries.

V4 = V4_BASE
sides = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 6)), min_size=1, max_size=5).map(
    lambda made: iv_norm((V4 + start, V4 + start + length) for start, length in made))
services = st.sampled_from([(TCP, HTTP), (TCP, ((80, 81),)), (((17, 17),), HTTP), (TCP, ((0, 65535),)), (((6, 6), (17, 17)), HTTP)])
states = st.sampled_from([1, 2, 3, 5])
asked = st.builds(lambda iif, oif, src, dst, service, ct: Box(iif, oif, src, dst, *service, ct),
                  st.sampled_from([1, 2, 3]), st.sampled_from([1, 2]), sides, sides, services, states)


def held_around(box: Box, draw) -> list[Box]:
    """Space boxes of the asked box's intervals along one side or both, each with another side,
    states, interfaces or service drawn near the box's own."""
    out = []
    for on_src in (True, False):
        side, other = (box.src, box.dst) if on_src else (box.dst, box.src)
        for interval in side:
            if draw(st.integers(0, 4)) == 0:
                continue  # an interval left out
            theirs = draw(st.sampled_from([other, iv_norm(other + ((other[-1][1] + 1, other[-1][1] + 3),)), other[:-1] or other,
                                           ((other[0][0], other[-1][1]),), draw(sides)]))
            ct = draw(st.sampled_from([box.ct, box.ct | 2, 1, 2]))
            iif = draw(st.sampled_from([box.iif, box.iif, box.iif | 4, 4]))
            proto, dport = draw(st.sampled_from([(box.proto, box.dport), (box.proto, box.dport), (TCP, HTTP), (TCP, ((80, 81),))]))
            src, dst = ((interval,), theirs) if on_src else (theirs, (interval,))
            out.append(Box(iif, box.oif, src, dst, proto, dport, ct))
    return out


def wide_around(box: Box, draw) -> list[Box]:
    """Boxes of every IPv4 or IPv6 address (as `ct state established` accepted for all), in drawn states and services."""
    every = [((V4_BASE, V4_BASE + (1 << 32) - 1),), ((0, (1 << 128) - 1),)]
    return [Box(draw(st.sampled_from([box.iif, 7])), 3, *draw(st.sampled_from([(every[0], every[0]), (every[1], every[1]), (every[0], every[1])])),
                *draw(services), draw(states)) for _ in range(draw(st.integers(0, 2)))]


def lies_within(box: Box, space: Space) -> bool:
    return not Space(IFACES, [box]).subtract(space)


@settings(max_examples=400, deadline=None)
@given(box=asked, data=st.data())
def test_lookups_say_within_only_when_the_subtraction_does(box: Box, data) -> None:
    space = Space(IFACES, held_around(box, data.draw) + wide_around(box, data.draw) + data.draw(st.lists(asked, max_size=3)))
    test = Within(space)
    exact = lies_within(box, space)
    for shortcut in (test._in_wide, test._held_exactly, test.holds, test.holds):  # twice: the second from what the first showed
        if shortcut(box):
            assert exact, f"{shortcut.__name__} says within, the subtraction leaves {Space(IFACES, [box]).subtract(space).boxes}"


@settings(max_examples=200, deadline=None)
@given(box=asked)
def test_each_interval_held_along_one_side_is_shown(box: Box) -> None:
    """The exact keys are used: each interval of one side in a box of the same interfaces and
    service, in more states, with a wider other side; and not shown when one interval is missing."""
    for on_src in (True, False):
        side, other = (box.src, box.dst) if on_src else (box.dst, box.src)
        wider = iv_norm(other + ((other[-1][1] + 1, other[-1][1] + 2),))
        held = [Box(box.iif, box.oif, (i,) if on_src else wider, wider if on_src else (i,), box.proto, box.dport, box.ct | 2) for i in side]
        if len(box.proto) == 1 and len(box.dport) == 1:
            assert Within(Space(IFACES, held))._held_exactly(box)
        if len(side) > 1:
            assert not Within(Space(IFACES, held[1:]))._held_exactly(box) or lies_within(box, Space(IFACES, held[1:]))


@settings(max_examples=200, deadline=None)
@given(box=asked, data=st.data())
def test_a_wide_box_holds_by_its_bounds(box: Box, data) -> None:
    wide = wide_around(box, data.draw)
    space = Space(IFACES, wide)
    shown = Within(space)._in_wide(box)
    assert shown == any(w.contains(box) for w in wide)
    assert lies_within(box, space) or not shown


@settings(max_examples=500, deadline=None)
@given(rest=sides, theirs=sides, split=st.booleans())
def test_inside_is_the_empty_difference(rest, theirs, split: bool) -> None:
    """within._inside, the bisection that tells whether one interval set lies within another,
    against the difference: equal on normalized sets; on a set cut where nothing is missing
    (adjacent intervals left apart) it may say no, never a wrong yes."""
    if split:  # an interval cut in two adjacent halves
        low, high = theirs[0]
        theirs = ((low, low), (low + 1, high), *theirs[1:]) if high > low else theirs
    inside = within_module._inside(rest, theirs)
    empty = not iv_sub(rest, iv_norm(theirs))
    assert inside == empty if not split else (empty or not inside)


# the cell sweep alone (within._covers), both ways of testing a cell, against every point

cells = st.integers(0, 12)
interval_sets = st.lists(st.tuples(cells, cells).map(sorted).map(tuple), min_size=1, max_size=4).map(iv_norm)


@st.composite
def pieces_of(draw):
    low = draw(st.integers(0, 4))
    high = low + draw(st.integers(0, 8))
    other = draw(interval_sets)
    shared = draw(st.lists(interval_sets, min_size=1, max_size=3))  # other sides several pieces share (a space box's)
    pieces = []
    for _ in range(draw(st.integers(0, 12))):
        start = draw(st.integers(low, high))
        end = draw(st.integers(start, high))
        theirs = draw(st.sampled_from(shared) | interval_sets)
        pieces.append((start, end, theirs))
    return pieces, low, high, other


@settings(max_examples=600, deadline=None)
@given(case=pieces_of())
def test_the_cell_sweep_covers_exactly_what_the_pieces_cover(case) -> None:
    """By counting segments, by testing each cell by bisection, or as their costs choose: the
    same answer as every point of [low, high] x other looked up in the pieces."""
    pieces, low, high, other = case
    every = all(any(start <= x <= end and any(a <= y <= b for a, b in theirs) for start, end, theirs in pieces)
                for x in range(low, high + 1) for a_, b_ in other for y in range(a_, b_ + 1))
    assert within_module._covers(list(pieces), low, high, other) == every
    assert within_module._sweep(list(pieces), low, high, other) == every
    if pieces:
        assert within_module._Counting(list(pieces), other).sweep(low, high) == every


def test_counting_past_its_budget_is_not_shown(monkeypatch) -> None:
    """Both ways give up past the budget ("not shown"), and the caller subtracts."""
    pieces = [(n, n, ((0, 100),)) for n in range(16)]
    assert within_module._covers(list(pieces), 0, 15, ((0, 100),))
    monkeypatch.setattr(within_module, "WORK_BUDGET", 8)
    assert not within_module._covers(list(pieces), 0, 15, ((0, 100),))
    assert not within_module._Counting(list(pieces), ((0, 100),)).sweep(0, 15)
    assert within_module._sweep(list(pieces), 0, 15, ((0, 100),)) is None
