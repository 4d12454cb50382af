"""The packet-space algebra against a brute-force oracle on a small domain."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st
from netaddr import IPAddress, IPNetwork, iprange_to_cidrs

import fwmatrix.space.cut as cut_module
from fwmatrix.schemas import schema_text
from fwmatrix.space import (
    ADDR_ALL, ICMP_TYPES_ALL, Box, NO_PORT, PORT_DIM_ALL, PROTO_ALL, V4_ALL, V4_BASE, V6_ALL, icmp_values, Interfaces, Space, addr_text, addrs, iv_and, iv_norm, iv_or, iv_sub, physical, service_text,
)

IFACES = Interfaces.of(["wan0", "dmz0"])  # wan0? sorted: dmz0, wan0, lo, other
ADDRS = [V4_BASE + 10, V4_BASE + 11, V4_BASE + 12, 5, 6, 7]  # three IPv4, three IPv6 addresses
PROTOS = [1, 6, 17, 47]  # icmp (types in the port dimension), two port protocols, gre (no port)
ICMP_POINTS = [icmp_values(5)[0][0], icmp_values(8)[0][0], icmp_values(8, 1)[0][0]]  # redirect, echo-request code 0 and 1
PORTS = [22, 23, 24, NO_PORT, *ICMP_POINTS]
CTS = [1, 2]  # new, established
POINTS = [
    p for p in itertools.product(range(4), range(4), ADDRS, ADDRS, PROTOS, PORTS, CTS)
    # physical packets only: one family, ports exactly for port protocols
    if (p[2] >= V4_BASE) == (p[3] >= V4_BASE) and (p[5] < NO_PORT) == (p[4] in (6, 17)) and (p[5] > NO_PORT) == (p[4] == 1)
]


def intervals_from(values: list[int]) -> st.SearchStrategy:
    return st.lists(st.sampled_from(values), min_size=1, max_size=len(values)).map(lambda vs: iv_norm((v, v) for v in vs))


def contiguous(values: list[int]) -> st.SearchStrategy:
    """A range between two values of one block (the oracle sees every point of it)."""
    return st.tuples(st.sampled_from(values), st.sampled_from(values)).map(lambda t: iv_norm([(min(t), max(t))]))


V4_BLOCK, V6_BLOCK, PORT_BLOCK = ADDRS[:3], ADDRS[3:], PORTS[:3]


boxes = st.builds(
    lambda iif, oif, src, dst, proto, dport, ct: physical(iif, oif, src, dst, proto, dport, ct),
    st.integers(1, 15), st.integers(1, 15),
    st.one_of(intervals_from(ADDRS), contiguous(V4_BLOCK), contiguous(V6_BLOCK)),
    st.one_of(intervals_from(ADDRS), contiguous(V4_BLOCK), contiguous(V6_BLOCK)),
    intervals_from(PROTOS), st.one_of(intervals_from(PORTS), contiguous(PORT_BLOCK), contiguous(ICMP_POINTS), st.just(icmp_values(8)),
                                      st.just(PORT_DIM_ALL)), st.sampled_from([1, 2, 3]),
)
spaces = st.lists(boxes, max_size=4).map(lambda lists: Space(IFACES, [b for bl in lists for b in bl]))


def member(space: Space, p: tuple) -> bool:
    iif, oif, src, dst, proto, dport, ct = p
    for b in space.boxes:
        if (b.iif >> iif & 1 and b.oif >> oif & 1 and b.ct & ct
                and any(lo <= src <= hi for lo, hi in b.src) and any(lo <= dst <= hi for lo, hi in b.dst)
                and any(lo <= proto <= hi for lo, hi in b.proto) and any(lo <= dport <= hi for lo, hi in b.dport)):
            return True
    return False


def points(space: Space) -> set:
    return {p for p in POINTS if member(space, p)}


@settings(max_examples=150, deadline=None)
@given(a=spaces, b=spaces)
def test_algebra_matches_the_oracle(a: Space, b: Space) -> None:
    pa, pb = points(a), points(b)
    assert points(a.union(b)) == pa | pb
    assert points(a.intersect(b)) == pa & pb
    assert points(a.subtract(b)) == pa - pb
    assert a.subtract(b).is_empty() == (pa <= pb)
    assert a.equals(b) == (pa == pb)


@settings(max_examples=100, deadline=None)
@given(a=spaces)
def test_simplified_and_disjoint_keep_the_set(a: Space) -> None:
    pa = points(a)
    assert points(a.simplified()) == pa
    d = a.disjoint()
    assert points(d) == pa
    for x, y in itertools.combinations(d.boxes, 2):
        assert x.intersect(y) is None


@settings(max_examples=200, deadline=None)
@given(a=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50))), b=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50))))
def test_interval_sets(a, b) -> None:
    na, nb = iv_norm(a), iv_norm(b)
    sa = {x for lo, hi in na for x in range(lo, hi + 1)}
    sb = {x for lo, hi in nb for x in range(lo, hi + 1)}
    assert sa == {x for lo, hi in a for x in range(lo, hi + 1)}
    assert {x for lo, hi in iv_and(na, nb) for x in range(lo, hi + 1)} == sa & sb
    assert {x for lo, hi in iv_or(na, nb) for x in range(lo, hi + 1)} == sa | sb
    assert {x for lo, hi in iv_sub(na, nb) for x in range(lo, hi + 1)} == sa - sb
    # in the canonical form, whichever path (one interval, bisected, walked in step) gave them
    assert iv_and(na, nb) == iv_norm((x, x) for x in sa & sb)
    assert iv_sub(na, nb) == iv_norm((x, x) for x in sa - sb)
    # canonical: sorted, disjoint, not touching
    for (l1, h1), (l2, h2) in zip(iv_or(na, nb), iv_or(na, nb)[1:]):
        assert h1 + 1 < l2


def _peeled(a: Box, b: Box) -> list[Box]:
    """Box.minus's definition: dimension by dimension, the part of what is left outside `b` in
    that dimension, then what is left within it."""
    if a.intersect(b) is None:
        return [a]
    out, cur = [], a
    for dim in ("iif", "oif", "ct", "src", "dst", "proto", "dport"):
        mine, theirs = getattr(cur, dim), getattr(b, dim)
        rest, common = (mine & ~theirs, mine & theirs) if isinstance(mine, int) else (iv_sub(mine, theirs), iv_and(mine, theirs))
        if rest:
            out.append(replace(cur, **{dim: rest}))
        cur = replace(cur, **{dim: common})
    return out


@settings(max_examples=150, deadline=None)
@given(a=spaces, b=spaces)
def test_box_minus_peels_in_order(a: Space, b: Space) -> None:
    """The pieces of a cut and their order (findings print them), as defined."""
    for x in a.boxes:
        for y in b.boxes + a.boxes:
            assert x.minus(y) == _peeled(x, y)


@settings(max_examples=100, deadline=None)
@given(a=spaces, b=spaces)
def test_meeting_is_may_overlap_for_many(a: Space, b: Space) -> None:
    from fwmatrix.space.index import may_overlap, meeting

    others = b.boxes + a.boxes
    for x in a.boxes:
        assert meeting(x, others) == [y for y in others if may_overlap(x, y)]


def test_boxes_never_mix_families_or_fake_ports() -> None:
    full = Space.full(IFACES)
    for b in full.boxes:
        assert (b.src[0][0] >= V4_BASE) == (b.dst[0][0] >= V4_BASE)
        assert (b.dport == ((NO_PORT, NO_PORT),)) == (b.proto == iv_sub(PROTO_ALL, ((1, 1), (6, 6), (17, 17), (33, 33), (58, 58), (132, 132), (136, 136))))
        assert (b.dport == ICMP_TYPES_ALL) == (b.proto == ((1, 1), (58, 58)))
        assert (b.dport == ((0, 65535),)) == bool(iv_and(b.proto, ((6, 6),)))
    assert len(full.boxes) == 6  # 2 families x (port protocols, ICMP with types, other protocols)


def test_readable_rendering() -> None:
    s = Space.full(IFACES).make(
        iif=IFACES.mask("wan0"), oif=IFACES.mask("dmz0"),
        dst=addrs([IPNetwork("172.16.10.10/32")]), proto=((6, 6),), dport=((443, 443),), ct=1,
    )
    assert s.lines() == ["wan0 → dmz0  0.0.0.0/0 → 172.16.10.10  tcp/443  ct new"]
    assert addr_text(addrs([IPNetwork("10.0.0.0/24"), IPNetwork("10.0.1.0/24")])) == ["10.0.0.0/23"]
    assert addr_text(ADDR_ALL) == ["any"]
    assert service_text(((6, 6), (17, 17)), ((5060, 5061),)) == "tcp+udp/5060-5061"


def _netaddr_text(low: int, high: int) -> list[str]:
    """An interval's text as netaddr renders it (the oracle of addr_text's integer blocks)."""
    version, base = (4, V4_BASE) if low >= V4_BASE else (6, 0)
    first, last = IPAddress(low - base, version), IPAddress(high - base, version)
    cidrs = iprange_to_cidrs(first, last)
    return [f"{first}-{last}"] if len(cidrs) > 4 else [str(c.ip) if c.size == 1 else str(c) for c in cidrs]


def _family_interval(draw, version: int) -> tuple[int, int]:
    width, base = (32, V4_BASE) if version == 4 else (128, 0)
    # ends near block boundaries (where the blocks change) as often as anywhere
    def end() -> int:
        bits = draw(st.integers(0, width))
        return min(draw(st.sampled_from([0, 1 << bits, (1 << bits) - 1, (1 << bits) + 1])) + draw(st.integers(0, 3)) * (1 << max(bits - 2, 0)), (1 << width) - 1)
    low, high = sorted((end(), end() if draw(st.booleans()) else draw(st.integers(0, (1 << width) - 1))))
    return base + low, base + high


@st.composite
def _intervals(draw) -> tuple[int, int]:
    return _family_interval(draw, draw(st.sampled_from([4, 6])))


@settings(max_examples=600, deadline=None)
@given(_intervals())
def test_addr_text_is_netaddrs_cidrs(interval: tuple[int, int]) -> None:
    """addr_text works its CIDR blocks out with integers; netaddr's iprange_to_cidrs says the same."""
    low, high = interval
    if (low, high) in (V4_ALL[0], V6_ALL[0]):
        return  # named as /0 before any block is worked out
    assert addr_text(((low, high),)) == _netaddr_text(low, high)


def test_addr_text_at_the_ends_of_each_family() -> None:
    for low, high in [(V4_BASE, V4_BASE), (V4_BASE + 2**32 - 1, V4_BASE + 2**32 - 1), (V4_BASE + 1, V4_BASE + 2**32 - 1),
                      (V4_BASE, V4_BASE + 2**32 - 2), (0, 0), (2**128 - 1, 2**128 - 1), (1, 2**128 - 1), (0, 2**128 - 2),
                      (V4_BASE + 10, V4_BASE + 13), (V4_BASE + 9, V4_BASE + 14), (2**64, 2**65 - 1)]:
        assert addr_text(((low, high),)) == _netaddr_text(low, high)


def test_wildcard_interfaces() -> None:
    ifaces = Interfaces.of(["eth0", "eth1", "wan0"])
    bits = ifaces.mask("eth*")
    assert ifaces.text(bits) == ["eth0", "eth1", "*other*"]
    assert ifaces.mask("unknown0") == ifaces.mask("another0")  # both are "some other interface"


@settings(max_examples=100, deadline=None)
@given(a=spaces, removed=st.lists(spaces, max_size=3), probe=spaces)
def test_remaining_is_lazy_subtraction(a: Space, removed: list[Space], probe: Space) -> None:
    from fwmatrix.space import Remaining

    lazy, eager = Remaining(a), a
    for r in removed:
        lazy.remove(r)
        eager = eager.subtract(r)
    assert points(lazy.intersect(probe)) == points(eager.intersect(probe))


@settings(max_examples=100, deadline=None)
@given(a=spaces, parts=st.lists(spaces, min_size=3, max_size=6))
def test_indexed_subtraction_and_coalescing(a: Space, parts: list[Space]) -> None:
    """Many boxes: subtraction goes through the index (and, with many near one box, asks
    first whether they cover it, largest first); coalescing keeps the set in fewer boxes."""
    other = Space(IFACES, [b for p in parts for b in p.boxes])
    pa, po = points(a), points(other)
    assert points(a.subtract(other)) == pa - po
    many_near = cut_module.MANY_NEAR
    cut_module.MANY_NEAR = 0  # the cover check on every box (the domain is too small for many near)
    try:
        assert points(a.subtract(other)) == pa - po
        assert points(other.subtract(a)) == po - pa
        cover = Space(IFACES, other.boxes + a.subtract(other).boxes)  # covers `a` only together
        assert a.subtract(cover).is_empty()
    finally:
        cut_module.MANY_NEAR = many_near
    few = other.coalesced()
    assert points(few) == po
    assert len(few.boxes) <= len(other.boxes)
    assert points(a.subtract(few)) == pa - po
    assert points(other.subtract(a)) == po - pa


def _cut_every_piece(a, cuts):
    """_minus_each's definition: each cut tests every piece so far."""
    pieces = [a]
    for b in cuts:
        pieces = [p for piece in pieces for p in (piece.minus(b) if cut_module.may_overlap(piece, b) else [piece])]
    return pieces


@settings(max_examples=150, deadline=None)
@given(a=spaces, parts=st.lists(spaces, min_size=1, max_size=8))
def test_pieces_found_by_an_index_are_the_pieces_of_cutting_each(a: Space, parts: list[Space]) -> None:
    """A box cut into many pieces looks only at the pieces a cut meets (space/cut.py's _Pieces): the same
    pieces in the same order as testing every piece (findings print them), whether a cut's
    buckets are looked at one by one or its size class whole."""
    cuts = [b for p in parts for b in p.boxes]
    saved = cut_module.MANY_PIECES, cut_module.PIECE_BUCKETS
    try:
        for many, buckets in ((0, 8), (0, 0), (2, 1)):
            cut_module.MANY_PIECES, cut_module.PIECE_BUCKETS = many, buckets
            for box in a.boxes:
                assert cut_module._minus_each(box, cuts) == _cut_every_piece(box, cuts)
    finally:
        cut_module.MANY_PIECES, cut_module.PIECE_BUCKETS = saved


def test_icmp_types_read_by_name() -> None:
    """ICMP types and codes in the port dimension, as the audit's text and fields say them."""
    full = Space.full(IFACES)
    ping = full.make(src=((V4_BASE, V4_BASE + 255),), dst=((V4_BASE, V4_BASE + 255),), proto=((1, 1),), dport=icmp_values(8))
    assert ping.lines() == ["0.0.0.0/24 → 0.0.0.0/24  icmp echo-request"]
    assert ping.regions()[0].fields["icmp"] == "echo-request" and ping.regions()[0].fields["ports"] is None
    audit_schema = json.loads(schema_text("audit"))  # the JSON reports' `packets` allow the field
    jsonschema.validate(ping.regions()[0].fields, audit_schema["$defs"]["packets"] | {"$defs": audit_schema["$defs"]})
    rest = full.make(src=((V4_BASE, V4_BASE + 255),), dst=((V4_BASE, V4_BASE + 255),), proto=((1, 1),)).subtract(ping)
    assert rest.lines() == ["0.0.0.0/24 → 0.0.0.0/24  icmp all but echo-request"]
    nd = full.make(src=((5, 5),), dst=((6, 6),), proto=((58, 58),), dport=iv_or(icmp_values(135), icmp_values(136)))
    assert nd.lines()[0].endswith("icmpv6 nd-neighbor-solicit,nd-neighbor-advert")
    code = full.make(src=((5, 5),), dst=((6, 6),), proto=((58, 58),), dport=icmp_values(1, 4))
    assert code.lines()[0].endswith("icmpv6 destination-unreachable code 4")
    # every type of ICMP joins the other protocols without ports, as before types were modelled
    assert full.lines() == ["::/0 → ::/0  any protocol", "0.0.0.0/0 → 0.0.0.0/0  any protocol"]
    # a type implies its protocol: nothing of it is a port protocol's port
    assert not full.make(proto=((6, 6),), dport=icmp_values(8))
