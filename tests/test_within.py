"""audit/within.py's cheap test against the brute-force oracle of test_space.py: when it says
a box lies within a space, every packet of the box is in the space; and when the space's boxes
that meet the box hold it in every dimension but the addresses, it says so whenever it does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import fwmatrix.audit.within as within_module
from fwmatrix.audit.within import Within
from fwmatrix.space import V4_BASE, Box, Space, iv_sub
from test_space import IFACES, points, spaces

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
