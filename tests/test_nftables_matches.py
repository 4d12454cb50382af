"""The nftables reader's match statements read once per table: every shortcut reads a
statement as `_parse_match` does (backends/nftables/matches.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fwmatrix.backends.nftables.matches import _parse_match, _TableContext
from fwmatrix.backends.nftables.values import Scalars


def payload(protocol: str, field: str) -> dict:
    return {"payload": {"protocol": protocol, "field": field}}


SIMPLE_LEFTS = [
    *(payload(p, f) for p in ("ip", "ip6") for f in ("saddr", "daddr", "ttl", "hoplimit", "hdrlength", "protocol", "nexthdr")),
    *(payload(p, f) for p in ("tcp", "udp", "th", "sctp") for f in ("sport", "dport", "flags")),
    *(payload(p, f) for p in ("icmp", "icmpv6") for f in ("type", "code")),
    payload("ether", "saddr"),
    *({"meta": {"key": k}} for k in ("iifname", "oifname", "iif", "oif", "l4proto", "nfproto", "protocol", "skuid", "mark")),
    {"ct": {"key": "state"}}, {"ct": {"key": "status"}}, {"ct": {"key": "state", "dir": "original"}}, {"ct": {"key": "mark"}},
    {"fib": {"result": "type", "flags": ["daddr"]}}, {"fib": {"result": "type", "flags": ["saddr", "iif"]}},
    {"exthdr": {"name": "rt", "field": "type"}}, {"exthdr": {"name": "frag"}}, {"exthdr": {"name": "nope"}},
    {"&": [payload("tcp", "flags"), ["syn", "ack"]]},
    "x", 1, None, [payload("ip", "saddr")],
]
lefts = st.one_of(
    st.sampled_from(SIMPLE_LEFTS),
    st.lists(st.sampled_from(SIMPLE_LEFTS[:20] + [{"meta": {"key": "skgid"}}]), min_size=2, max_size=3).map(lambda parts: {"concat": parts}),
)
SCALARS = ["10.0.0.1", "10.0.0.2", "2001:db8::1", "10.0.0.0/8", "lan0", "wan0", "@s", "established", "new", "local", "ssh",
           "tcp", "udp", "ipv4", "ip6", "syn", "echo-request", "01:02:03:04:05:06", "unicast", "broadcast", "", 0, 1, 6, 22, 443, 70000, -1, True, None, 1.0]
scalars = st.sampled_from(SCALARS)
OPS = ["==", "!=", "in", "<", ">=", "&"]
rights = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(lambda items: {"set": items}),
        st.tuples(inner, inner).map(lambda pair: {"range": list(pair)}),
        st.tuples(scalars, st.sampled_from([8, 24, 64, 200, "x"])).map(lambda p: {"prefix": {"addr": p[0], "len": p[1]}}),
        st.lists(inner, min_size=2, max_size=3).map(lambda parts: {"concat": parts}),
        inner.map(lambda v: {"elem": {"val": v}}),
    ),
    max_leaves=6,
)
statements = st.one_of(
    st.fixed_dictionaries({"op": st.sampled_from(OPS), "left": lefts, "right": rights}),
    st.fixed_dictionaries({"op": st.just("=="), "left": lefts, "right": rights, "extra": scalars}),
    st.fixed_dictionaries({"left": lefts, "right": rights}),
)


def context() -> _TableContext:
    return _TableContext("inet", "t", {}, Scalars())


@settings(max_examples=400, deadline=None)
@given(st.lists(statements, min_size=1, max_size=12))
def test_statements_read_through_the_table_s_caches_read_as_parse_match_reads_them(args: list[Any]) -> None:
    """Each statement read alone in a fresh table is what one table gives it, first time or
    again, in any order: the readings by left side and operator (_plain) included."""
    alone = [tuple(_parse_match(arg, context())) for arg in args]
    ctx = context()
    assert [ctx.match(arg) for arg in args] == alone
    assert [ctx.match(arg) for arg in reversed(args)] == alone[::-1]


def test_every_left_side_operator_and_value_reads_as_parse_match_reads_it() -> None:
    """The product of the strategy's sides, operators and plain values, one table for all."""
    args = [{"op": op, "left": left, "right": right} for left in SIMPLE_LEFTS for op in OPS
            for right in [*SCALARS, {"set": ["10.0.0.1", "10.0.0.2"]}, {"set": [22, "ssh"]}, ["established", "related"]]]
    ctx = context()
    for arg in args:
        assert ctx.match(arg) == tuple(_parse_match(arg, context())), arg


def test_a_plain_comparison_keeps_what_its_left_side_implies() -> None:
    """`ip saddr != 10.0.0.1` in an inet table still matches IPv4 only; `tcp dport 22` TCP only."""
    ctx = context()
    saddr = {"op": "!=", "left": payload("ip", "saddr"), "right": "10.0.0.1"}
    dport = {"op": "==", "left": payload("tcp", "dport"), "right": 22}
    for arg in (saddr, dport, {**saddr, "right": "10.0.0.2"}, {**dport, "right": 23}):
        assert ctx.match(arg) == tuple(_parse_match(arg, context()))
    assert [m.fields for m in ctx.match(saddr)] == [("nfproto",), ("ip.saddr",)]
    assert [m.fields for m in ctx.match(dport)] == [("l4proto",), ("dport",)]
