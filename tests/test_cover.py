"""The forwarded set's cover (audit/evaluate/chains.py): each accept's whole match within the
chain's entry where no earlier decision but an accept took any of it, else its grant. The audit
asks "is this opening forwarded?" of it, so a cover larger than the forwarded set would hide a
missing opening: it must be the grants' union exactly, through drops, returns, jumps, gotos and
verdict maps, and the audit's findings must be what the grants alone give."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netaddr import IPNetwork

from conftest import SEED
from fwmatrix.audit.evaluate import evaluate, interfaces_of
from fwmatrix.audit.evaluate import effective as effective_module
from fwmatrix.audit.findings import audit
from fwmatrix.compile.intent import build_intent
from fwmatrix.compile.ruleset import compile_intent
from fwmatrix.ir import Chain, Jump, Match, Rule, Ruleset, Table, Unmodelled, UnmodelledAction, Verdict, VerdictMap
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.matrix.model import PortRange
from fwmatrix.space import Space, addr_interval

IFACES = ["wan0", "lan0", "dmz0"]
# nested and overlapping networks: host rules inside network rules, as hand-written rulesets have them
NETWORKS = ["10.0.0.0/16", "10.0.1.0/24", "10.0.1.5/32", "10.0.1.6/31", "10.0.2.0/24", "10.0.2.9/32", "0.0.0.0/0"]


def where(src: str | None = None, dst: str | None = None, port: int | None = None, iif: str | None = None) -> tuple[Match, ...]:
    matches = []
    if iif is not None:
        matches.append(Match(("iif",), ((iif,),)))
    if src is not None:
        matches.append(Match(("ip.saddr",), ((IPNetwork(src),),)))
    if dst is not None:
        matches.append(Match(("ip.daddr",), ((IPNetwork(dst),),)))
    if port is not None:
        matches += [Match(("l4proto",), ((6,),)), Match(("dport",), ((PortRange(port, port),),))]
    return tuple(matches)


def ruleset(forward: list[Rule], sub: list[Rule] = (), policy: str = "drop") -> Ruleset:
    chains = (Chain("forward", tuple(forward), hook="forward", priority=0, policy=policy), Chain("sub", tuple(sub)))
    return Ruleset((Table("inet", "t", chains),))


def evaluated(rules: Ruleset):
    return evaluate(rules, interfaces_of(rules, IFACES))


def grants_union(effective) -> Space:
    return Space(effective.ifaces, [b for g in effective.forwarded for b in g.space.boxes])


def test_a_network_accept_after_host_accepts_is_one_whole_box() -> None:
    hosts = [Rule(where(src=f"10.0.2.{i}/32", dst=f"10.0.1.{2 * i}/32", port=443), Verdict("accept")) for i in range(1, 40)]
    effective = evaluated(ruleset(hosts + [Rule(where(src="10.0.2.0/24", dst="10.0.1.0/24", port=443), Verdict("accept"))]))
    cover = effective.forwarded_cover()
    assert cover.equals(grants_union(effective))
    # the network rule's grant is cut by the 39 hosts before it; its whole match is one box
    sides = ((addr_interval(IPNetwork("10.0.2.0/24")),), (addr_interval(IPNetwork("10.0.1.0/24")),))
    assert [b for b in cover.boxes if (b.src, b.dst) == sides]
    assert not [b for b in grants_union(effective).boxes if (b.src, b.dst) == sides]


def test_what_a_drop_took_stays_out_of_a_later_accepts_whole_match() -> None:
    rules = ruleset([Rule(where(dst="10.0.1.5/32"), Verdict("drop")), Rule(where(dst="10.0.1.0/24"), Verdict("accept"))])
    effective = evaluated(rules)
    cover = effective.forwarded_cover()
    assert cover.equals(grants_union(effective))
    assert not cover.intersect(Space.full(effective.ifaces).make(dst=(addr_interval(IPNetwork("10.0.1.5/32")),)))


def test_what_a_called_chain_returned_and_its_caller_dropped_stays_out() -> None:
    # the sub chain returns host .5 undecided; the caller drops it; then accepts the network
    sub = [Rule(where(dst="10.0.1.5/32"), Verdict("return")), Rule(where(dst="10.0.2.0/24"), Verdict("accept"))]
    forward = [Rule(where(), Jump("sub")), Rule(where(dst="10.0.1.5/32"), Verdict("drop")), Rule(where(dst="10.0.0.0/16"), Verdict("accept"))]
    effective = evaluated(ruleset(forward, sub))
    assert effective.forwarded_cover().equals(grants_union(effective))
    assert not effective.forwarded_cover().intersect(Space.full(effective.ifaces).make(dst=(addr_interval(IPNetwork("10.0.1.5/32")),)))


def test_a_wrong_cover_is_caught_when_checking(monkeypatch: pytest.MonkeyPatch) -> None:
    effective = evaluated(ruleset([Rule(where(dst="10.0.1.0/24"), Verdict("accept"))]))
    wrong = dataclasses.replace(effective, cover=(effective.forwarded, Space.full(effective.ifaces)))
    monkeypatch.setattr(effective_module, "CHECK_COVER", True)
    with pytest.raises(AssertionError):
        wrong.forwarded_cover()


def test_a_cover_made_for_other_grants_is_not_used() -> None:
    effective = evaluated(ruleset([Rule(where(dst="10.0.1.0/24"), Verdict("accept"))]))
    other = dataclasses.replace(effective, forwarded=[])  # the cover was made for the first list
    assert other.cover is not None and not other.forwarded_cover()


def test_the_audit_still_finds_an_opening_a_drop_takes_before_a_wide_accept() -> None:
    # the seed's compiled ruleset with a drop of one opening's target, then an accept of everything
    intent = build_intent(load_matrix(str(SEED)))
    (table,) = compile_intent(intent)["edge"].tables
    forward = table.chain("forward")
    dropped = Rule(where(dst="10.20.0.21/32"), Verdict("drop"), origin="the-drop")
    everything = Rule((), Verdict("accept"), origin="the-accept")
    new = dataclasses.replace(forward, rules=forward.rules[:2] + (dropped, everything) + forward.rules[2:])
    table = dataclasses.replace(table, chains=tuple(new if c.name == "forward" else c for c in table.chains))
    report = audit(intent, "edge", Ruleset((table,)), "mutated")
    assert any(f.kind == "missing" for f in report.findings), [f.to_json() for f in report.findings]


# -- random chains: the cover is the grants' union ---------------------------------------

def _rule(draw, in_sub: bool) -> Rule:
    matches = where(src=draw(st.sampled_from([None] + NETWORKS)), dst=draw(st.sampled_from([None] + NETWORKS)),
                    port=draw(st.sampled_from([None, 22, 443])), iif=draw(st.sampled_from([None] + IFACES)))
    kinds = ["accept", "accept", "drop", "vmap"] + (["return"] if in_sub else ["jump", "goto"])
    kind = draw(st.sampled_from(kinds))
    if kind == "jump":
        return Rule(matches, Jump("sub"))
    if kind == "goto":
        return Rule(matches, Jump("sub", goto=True))
    if kind == "vmap":
        entries = tuple(((IPNetwork(net),), Verdict(draw(st.sampled_from(["accept", "drop"]))))
                        for net in draw(st.lists(st.sampled_from(NETWORKS[1:-1]), min_size=1, max_size=3, unique=True)))
        return Rule(matches, VerdictMap(("ip.daddr",), entries))
    return Rule(matches, Verdict(kind))


@st.composite
def chains(draw) -> Ruleset:
    forward = [_rule(draw, in_sub=False) for _ in range(draw(st.integers(1, 8)))]
    sub = [_rule(draw, in_sub=True) for _ in range(draw(st.integers(0, 5)))]
    return ruleset(forward, sub, policy=draw(st.sampled_from(["drop", "accept"])))


@settings(max_examples=300, deadline=None)
@given(rules=chains())
def test_the_cover_is_the_grants_union(rules: Ruleset) -> None:
    effective = evaluated(rules)
    assert effective.cover is not None and effective.cover[0] is effective.forwarded
    assert effective.cover[1].equals(grants_union(effective))


@pytest.mark.parametrize("action", [UnmodelledAction("queue num 1"), Verdict("accept")])
def test_a_rule_judged_both_ways_reaches_its_own_packets(action) -> None:
    """A rule fwmatrix cannot model reaches every packet of its match that earlier rules left
    undecided, its own hit included: the walk's undecided packets stand for the certain ones
    only while every removal was certain, so the rule's removals must not count before it is
    judged (chains._CertainRemaining)."""
    host, network = where(src="10.0.2.9/32", dst="10.0.1.5/32", port=443), where(src="10.0.2.0/24", dst="10.0.1.0/24", port=443)
    mark = (Unmodelled("meta mark 0x1"),) if isinstance(action, Verdict) else ()
    effective = evaluated(ruleset([Rule(host, Verdict("drop")), Rule(network + mark, action, origin="doubtful")]))
    reach = Space(effective.ifaces, [b for g in effective.doubtful if g.origin == "doubtful" for b in g.space.boxes])
    want = grants_union(evaluated(ruleset([Rule(network, Verdict("accept"))]))).subtract(grants_union(evaluated(ruleset([Rule(host, Verdict("accept"))]))))
    assert reach.subtract(want).is_empty() and want.subtract(reach).is_empty()
