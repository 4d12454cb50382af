"""The box index and the walk's scans against brute force (the strategies and the oracle are test_space's)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from fwmatrix.space import Box, BoxIndex, Space, meet_all
from fwmatrix.space.index import _port_buckets, may_overlap, meeting
from test_space import IFACES, points, spaces


@settings(max_examples=200, deadline=None)
@given(a=spaces, parts=st.lists(spaces, min_size=1, max_size=6))
def test_index_finds_every_box_that_overlaps(a: Space, parts: list[Space]) -> None:
    """Filed by interface pair, protocol set and port bucket (a list of ports under each port's),
    grown box by box between lookups or built whole: every box that meets a lookup is found, once."""
    others = [b for p in parts for b in p.boxes]
    grown = BoxIndex()
    for part in parts:
        for box in a.boxes:
            grown.overlapping(box)  # files what was added so far, then more is added
        for b in part.boxes:
            grown.add(b)
    for index in (BoxIndex(others), grown):
        for box in a.boxes:
            found = index.overlapping(box)
            assert len({id(b) for b in found}) == len(found)
            assert {id(b) for b in others if box.intersect(b) is not None} <= {id(b) for b in found}


def _both_ways(box: Box) -> tuple[Box, Box]:
    """The box, and the box with its address sides swapped: a lookup walks its narrower side, so
    of the two one walks the source and the other the destination (unless they are alike)."""
    return box, Box(box.iif, box.oif, box.dst, box.src, box.proto, box.dport, box.ct)


def _found_right(box: Box, found: list[Box], added: list[Box]) -> None:
    """Each once; every added box that meets `box` among them, and of them those near it on every
    dimension's bounds (meeting) only boxes that are (brute force over every box added)."""
    assert len({id(b) for b in found}) == len(found)
    near = {id(b) for b in meeting(box, found)}
    assert {id(b) for b in added if box.intersect(b) is not None} <= near <= {id(b) for b in added if may_overlap(box, b)}


@settings(max_examples=300, deadline=None)
@given(asked=st.lists(spaces, min_size=1, max_size=3), parts=st.lists(spaces, min_size=1, max_size=6))
def test_a_grown_index_finds_what_one_built_whole_does_in_its_order(asked: list[Space], parts: list[Space]) -> None:
    """A bucket files a side's intervals when a lookup first walks that side there: an index grown
    box by box and asked by either side between additions (so buckets are filed on one side, then
    grow, then are filed on the other) finds every box that meets a lookup, each once, and for
    every box the same boxes in the same order as one built whole (callers cut in that order)."""
    added: list[Box] = []
    grown = BoxIndex()
    for part, ask in zip(parts, itertools.cycle(asked)):
        for box in ask.boxes:
            for way in _both_ways(box):
                _found_right(way, grown.overlapping(way), added)
        for b in part.boxes:
            grown.add(b)
            added.append(b)
    whole = BoxIndex(added)
    for ask in asked:
        for box in ask.boxes:
            for way in _both_ways(box):
                found = grown.overlapping(way)
                _found_right(way, found, added)
                assert [id(b) for b in found] == [id(b) for b in whole.overlapping(way)]


@settings(max_examples=300, deadline=None)
@given(a=spaces, b=spaces)
def test_meet_all_is_every_intersection(a: Space, b: Space) -> None:
    """The scan without an index: each box that meets an asking box, with common parts that
    together are the packets of every pairwise intersection (a box within an asking box as a
    new box equal to it), each within its box."""
    pairs = meet_all(a.boxes, b.boxes)
    assert {id(y) for y, _ in pairs} == {id(y) for y in b.boxes if any(x.intersect(y) is not None for x in a.boxes)}
    assert all(c is not y and points(Space(IFACES, [c])) <= points(Space(IFACES, [y])) for y, c in pairs)
    assert points(Space(IFACES, [c for _, c in pairs])) == points(a) & points(b)


@settings(max_examples=150, deadline=None)
@given(a=spaces, b=spaces)
def test_few_asking_boxes_meet_many_without_an_index(a: Space, b: Space) -> None:
    import fwmatrix.space as space_module

    saved = space_module.FEW_ASKING
    try:
        for few in (0, 100):  # through the index; by scanning the boxes
            space_module.FEW_ASKING = few
            assert points(Space(IFACES, a.boxes).intersect(Space(IFACES, b.boxes))) == points(a) & points(b)
    finally:
        space_module.FEW_ASKING = saved


def test_port_buckets_of_lists_and_ranges() -> None:
    assert _port_buckets(((80, 80), (443, 443))) == (5, 27)  # a list: each port's bucket
    assert _port_buckets(((0, 15), (16, 20))) == (0, 1)
    assert _port_buckets(((5, 5), (7, 7))) == (0,)
    assert _port_buckets(((1024, 65535),)) == (-1,)  # a range over many buckets: WIDE
    assert _port_buckets(tuple((p, p) for p in range(0, 16 * 10, 16))) == (-1,)


def test_index_never_returns_another_protocol() -> None:
    tcp = Box(1, 1, ((10, 10),), ((20, 20),), ((6, 6),), ((80, 80),), 1)
    udp = Box(1, 1, ((10, 10),), ((20, 20),), ((17, 17),), ((80, 80),), 1)
    both = Box(1, 1, ((10, 10),), ((20, 20),), ((6, 6), (17, 17)), ((80, 80),), 1)
    index = BoxIndex([udp, both])
    assert index.overlapping(tcp) == [both]


@settings(max_examples=300, deadline=None)
@given(asked=spaces, parts=st.lists(spaces, min_size=1, max_size=5))
def test_covers_alike_only_when_covered(asked: Space, parts: list[Space]) -> None:
    """covers_alike says a box is covered only when the indexed boxes cover it (by one box alike,
    or by the boxes of two blocks that hold its address sides, in states together); asked between
    additions, so that what was filed since is filed before it answers."""
    index = BoxIndex()
    added: list[Box] = []
    for part in parts:
        for b in part.boxes:
            index.add(b)
            added.append(b)
        covered = points(Space(IFACES, added))
        for box in asked.boxes + added:
            if index.covers_alike(box):
                assert points(Space(IFACES, [box])) <= covered


def test_covers_alike_by_blocks() -> None:
    """A host rule after a network rule of its interfaces and service: held by the network's block
    on both sides (in the states of two boxes together); not by a block of another port, nor by
    a range that is not a block (from an odd start), nor when the states are not all held."""
    host = Box(1, 2, ((0x0A000105, 0x0A000105),), ((0x0B000007, 0x0B000007),), ((6, 6),), ((443, 443),), 3)
    net = ((0x0A000100, 0x0A0001FF),)  # a /24
    other = ((0x0B000000, 0x0B0000FF),)
    new, established = Box(1, 2, net, other, ((6, 6),), ((443, 443),), 1), Box(1, 2, net, other, ((6, 6),), ((443, 443),), 2)
    assert not BoxIndex([new]).covers_alike(host)
    assert BoxIndex([new, established]).covers_alike(host)
    assert not BoxIndex([Box(1, 2, net, other, ((6, 6),), ((80, 80),), 3)]).covers_alike(host)
    assert not BoxIndex([Box(1, 2, ((0x0A000101, 0x0A0001FF),), other, ((6, 6),), ((443, 443),), 3)]).covers_alike(host)
    wider = Box(1, 2, ((0x0A000000, 0x0A00FFFF),), ((0x0B000000, 0x0B00FFFF),), ((6, 6),), ((443, 443),), 3)  # /16s
    assert BoxIndex([new, wider]).covers_alike(host)
    two_hosts = Box(1, 2, ((0x0A000105, 0x0A000105), (0x0A000107, 0x0A000107)), ((0x0B000007, 0x0B000007),), ((6, 6),), ((443, 443),), 1)
    assert BoxIndex([new]).covers_alike(two_hosts)  # its outer bounds within the blocks
    across = Box(1, 2, ((0x0A0001F0, 0x0A000210),), ((0x0B000007, 0x0B000007),), ((6, 6),), ((443, 443),), 1)
    assert not BoxIndex([new]).covers_alike(across)  # the /24 holds where it starts, not where it ends
    assert BoxIndex([new, wider]).covers_alike(across)
    across = Box(1, 2, ((0x0A000105, 0x0A000105),), ((0x0B0000F0, 0x0B000110),), ((6, 6),), ((443, 443),), 1)
    assert not BoxIndex([new]).covers_alike(across)
    assert BoxIndex([new, wider]).covers_alike(across)


def test_covers_alike_by_the_union_of_many_boxes_of_one_side() -> None:
    """More boxes of one source than FEW_ALIKE: their destinations joined by states, so that a box
    whose destinations several of them hold is covered, and one that a gap or a state misses is not."""
    from fwmatrix.space.index import FEW_ALIKE

    src = ((0x0A000001, 0x0A000001),)
    boxes = [Box(1, 2, src, ((0x0B000000 + 4 * i, 0x0B000000 + 4 * i + 1),), ((6, 6),), ((443, 443),), 1 if i % 2 else 3)
             for i in range(FEW_ALIKE + 4)]
    index = BoxIndex(boxes)
    two = Box(1, 2, src, ((0x0B000008, 0x0B000009), (0x0B000010, 0x0B000011)), ((6, 6),), ((443, 443),), 1)
    assert index.covers_alike(two)  # by two boxes in states 3
    assert not index.covers_alike(Box(1, 2, src, ((0x0B000008, 0x0B000011),), ((6, 6),), ((443, 443),), 1))  # gaps
    assert not index.covers_alike(Box(1, 2, src, ((0x0B000004, 0x0B000005),), ((6, 6),), ((443, 443),), 2))  # in states 1 only
    assert index.covers_alike(Box(1, 2, src, ((0x0B000008, 0x0B000009),), ((6, 6),), ((443, 443),), 2))
    # boxes in different states are not joined: each holds one of these in state 1, neither both
    assert not index.covers_alike(Box(1, 2, src, ((0x0B000004, 0x0B000005), (0x0B000008, 0x0B000009)), ((6, 6),), ((443, 443),), 1))
