"""The packets of a rule's matches and of a set's elements (fwmatrix/audit/evaluate/matches.py),
against the same packets built one key at a time with `key_space` and the space algebra."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st
from netaddr import IPNetwork, IPRange

from fwmatrix.audit.evaluate.effective import EvaluationError
from fwmatrix.audit.evaluate.matches import _meet_bounds, _values_allowed, key_space, rule_space, set_space
from fwmatrix.audit.evaluate.reading import Reading
from fwmatrix.ir import Chain, Element, Match, Rule, Ruleset, SetDef, Table, Verdict
from fwmatrix.matrix.model import PortRange
from fwmatrix.intervals import V4_BASE, addr_interval, iv_and, iv_norm
from fwmatrix.space import ADDR_ALL, CT_ALL, PORT_DIM_ALL, PROTO_ALL, V4_ALL, V6_ALL, Interfaces, Space, physical

IFACES = Interfaces.of(["eth0", "eth1", "wan0"])
NAMES = ["eth0", "eth1", "wan0", "lo", "eth*", "tun9"]

v4_net = st.builds(lambda a, p: IPNetwork((a, p), version=4), st.integers(0, (1 << 32) - 1), st.sampled_from([0, 8, 16, 24, 28, 31, 32]))
v6_net = st.builds(lambda a, p: IPNetwork((a, p), version=6), st.integers(0, (1 << 128) - 1), st.sampled_from([0, 10, 64, 120, 128]))
v4_range = st.tuples(st.integers(0, (1 << 32) - 1), st.integers(0, 1 << 12)).map(
    lambda t: IPRange(t[0], min(t[0] + t[1], (1 << 32) - 1)))
address = st.one_of(v4_net, v6_net, v4_range)  # either family in any address field: the wrong one selects nothing
port = st.one_of(st.integers(0, 65535), st.tuples(st.integers(0, 65535), st.integers(0, 300)).map(
    lambda t: PortRange(t[0], min(t[0] + t[1], 65535))))
VALUES = {
    "iif": st.sampled_from(NAMES), "oif": st.sampled_from(NAMES),
    "ip.saddr": address, "ip.daddr": address, "ip6.saddr": address, "ip6.daddr": address,
    "l4proto": st.sampled_from([1, 6, 17, 47, 58, 132]), "dport": port,
    "ct.state": st.sampled_from(["new", "established", "related", "invalid", "untracked"]),
    "nfproto": st.sampled_from([4, 6]), "icmp.type": st.integers(0, 20), "icmpv6.type": st.integers(125, 140),
}
FIELDS = sorted(VALUES)


def _reading() -> Reading:
    return Reading(Ruleset(()), IFACES, True)


def _key_boxes(reading: Reading, fields: tuple[str, ...], keys: list[tuple]) -> list[tuple]:
    return [tuple(b.__dict__.values()) for key in keys for b in key_space(reading, fields, key).boxes]


@st.composite
def set_keys(draw) -> tuple[tuple[str, ...], list[tuple]]:
    """The fields of a set (often a compiled ruleset's: addresses, protocol, port) and its keys;
    values repeat, as a compiled set's protocols and ports do."""
    fields = tuple(draw(st.one_of(
        st.just(["ip.saddr", "ip.daddr", "l4proto", "dport"]), st.just(["iif", "ip6.saddr", "ip6.daddr", "l4proto", "dport"]),
        st.just(["ip.daddr"]), st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4))))
    pools = [draw(st.lists(VALUES[f], min_size=1, max_size=3)) for f in fields]
    keys = draw(st.lists(st.tuples(*[st.sampled_from(pool) if "addr" not in f else VALUES[f] for f, pool in zip(fields, pools)]),
                         max_size=12))
    return fields, keys


@settings(max_examples=400, deadline=None)
@given(set_keys())
def test_set_space_is_its_keys_boxes_in_order(case):
    """Each element's boxes as key_space makes them, in the elements' order: the same boxes,
    whatever the set's values (families that exclude each other, addresses of the other family,
    a protocol without ports, ICMP types, interfaces and states)."""
    fields, keys = case
    reading = _reading()
    space = set_space(reading, fields, SetDef("s", fields, tuple(Element(key) for key in keys)))
    assert [tuple(b.__dict__.values()) for b in space.boxes] == _key_boxes(reading, fields, keys)


plain_match = st.sampled_from(FIELDS).flatmap(
    lambda f: st.lists(VALUES[f], min_size=1, max_size=4).map(lambda values: Match((f,), tuple((v,) for v in values))))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["ip", "ip6", "inet"]), st.lists(plain_match, max_size=5))
def test_rule_space_of_value_lists_is_the_union_of_their_values(family, matches):
    """A rule of plain matches (`ip saddr { a, b } tcp dport { 22, 80 }`) selects the packets of
    its table's family that each match's union of single values selects."""
    reading = _reading()
    table = Table(family, "t", (Chain("c", (Rule(tuple(matches), Verdict("accept")),)),))
    found = rule_space(reading, table, table.chains[0].rules[0], "t")
    assert found is not None
    space, uncertain = found
    assert not uncertain
    expected = reading.family_space(table)
    for match in matches:
        expected = expected.intersect(Space(IFACES, [b for key in match.values for b in key_space(reading, match.fields, key).boxes]))
    assert space.equals(expected)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["ip", "ip6", "inet"]), set_keys(), st.lists(plain_match, max_size=4), st.booleans())
def test_rule_space_of_a_set_lookup_is_its_elements_within_the_other_matches(family, case, matches, lookup_first):
    """A set lookup with other matches (`iifname "lan0" ip saddr . ip daddr . th dport @allowed`): its
    elements' packets within what the other matches and the table's family select, whichever
    comes first in the rule."""
    fields, keys = case
    reading = _reading()
    lookup = Match(fields, set_name="allowed")
    rule = Rule((lookup, *matches) if lookup_first else (*matches, lookup), Verdict("accept"))
    set_def = SetDef("allowed", fields, tuple(Element(key) for key in keys))
    table = Table(family, "t", (Chain("c", (rule,)),), (set_def,))
    found = rule_space(reading, table, rule, "t")
    assert found is not None
    space, _ = found
    expected = reading.family_space(table).intersect(Space(IFACES, [b for key in keys for b in key_space(reading, fields, key).boxes]))
    for match in matches:
        expected = expected.intersect(Space(IFACES, [b for key in match.values for b in key_space(reading, match.fields, key).boxes]))
    assert space.equals(expected)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(address, st.builds(lambda a, p: IPNetwork((a, p), version=6), st.integers(0, (1 << 128) - 1), st.integers(0, 128)),
                 st.builds(lambda a, p: IPNetwork((a, p), version=4), st.integers(0, (1 << 32) - 1), st.integers(0, 32))))
def test_addr_interval_is_what_netaddr_says(net):
    """An address's interval, read from what the netaddr object holds, is its first and last
    address as netaddr's own properties give them (IPv4 past V4_BASE)."""
    base = V4_BASE if net.version == 4 else 0
    assert addr_interval(net) == (base + net.first, base + net.last)


def test_a_field_without_evaluation_is_named_in_the_rules_order():
    """Plain matches are narrowed by together, and still the first match fwmatrix cannot evaluate
    is the one the error names."""
    reading = _reading()
    for first, second in (("meta.mark", "meta.priority"), ("meta.priority", "meta.mark")):
        rule = Rule((Match(("iif",), (("eth0",),)), Match((first,), ((1,),)), Match((second,), ((2,),)), Match(("dport",), ((22,),))),
                    Verdict("accept"))
        table = Table("inet", "t", (Chain("c", (rule,)),))
        with pytest.raises(EvaluationError, match=first):
            rule_space(reading, table, rule, "t")


def _meet(bounds: dict, allowed: dict) -> None:
    """_meet_bounds' meaning, dimension by dimension: a mask by AND, intervals by intersection."""
    for dim, value in allowed.items():
        if dim == "_empty":
            bounds["_empty"] = True
            continue
        if dim in bounds:
            value = bounds[dim] & value if isinstance(value, int) else iv_and(bounds[dim], value)
        bounds[dim] = value
        if not value:
            bounds["_empty"] = True


def _bounds_one_match_at_a_time(table: Table, matches: list[Match]) -> dict:
    """A rule's bounds the slow way: its family, then each match's union of single values met in turn."""
    bounds: dict = {}
    if table.family != "inet":
        bounds["src"] = bounds["dst"] = V4_ALL if table.family == "ip" else V6_ALL
    for match in matches:
        union = _values_allowed(match.fields[0], match.values, IFACES)
        _meet(bounds, union if union else {"_empty": True})
    return bounds


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["ip", "ip6", "inet"]), st.lists(plain_match, max_size=6), st.integers(0, 3))
def test_rule_space_of_plain_matches_is_their_bounds_met_one_at_a_time(family, matches, repeats):
    """The boxes, in order, of the bounds met match by match: what the quick paths give (the rest of a
    rule's matches combined and remembered, an address side left as it is within the other's family,
    bounds taken whole when they share no dimension), asked again as a ruleset repeats them."""
    table = Table(family, "t", (Chain("c", (Rule(tuple(matches), Verdict("accept")),)),))
    reading = _reading()
    bounds = _bounds_one_match_at_a_time(table, matches)
    expected = [] if bounds.pop("_empty", False) else physical(
        bounds.get("iif", IFACES.all), bounds.get("oif", IFACES.all), bounds.get("src", ADDR_ALL), bounds.get("dst", ADDR_ALL),
        bounds.get("proto", PROTO_ALL), bounds.get("dport", PORT_DIM_ALL), bounds.get("ct", CT_ALL))
    for _ in range(1 + repeats):
        found = rule_space(reading, table, table.chains[0].rules[0], "t")
        assert found is not None
        assert [tuple(b.__dict__.values()) for b in found[0].boxes] == [tuple(b.__dict__.values()) for b in expected]


masks = st.integers(0, 7)
intervals = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 8)), max_size=4).map(lambda t: iv_norm((a, a + w) for a, w in t))
dims = st.fixed_dictionaries({}, optional={"iif": masks, "ct": masks, "src": intervals, "dport": intervals, "_empty": st.just(True)})


@given(dims, dims)
def test_meet_bounds_is_the_meet_dimension_by_dimension(bounds, allowed):
    expected = dict(bounds)
    _meet(expected, allowed)
    _meet_bounds(bounds, allowed)
    assert bounds == expected
