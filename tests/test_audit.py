"""The audit on the IR: compiled rulesets match their matrix, and each kind of drift
gives exactly its finding. (Parsing live rulesets into the IR is tested per backend.)"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from netaddr import IPNetwork

from conftest import ROOT, SEED
from fwmatrix.audit.findings import audit, fail
from fwmatrix.compile.ruleset import TRANSLATED, compile_intent
from fwmatrix.compile.intent import build_intent
from fwmatrix.ir import Chain, Dnat, Jump, Match, Rule, Ruleset, Table, Unmodelled, Verdict, VerdictMap
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.matrix.model import PortRange
from strategies import matrix_yaml

TWO = ROOT / "examples" / "two-firewalls" / "matrix.yaml"
TCP, UDP = 6, 17


def setup(path=SEED):
    intent = build_intent(load_matrix(str(path)))
    return intent, compile_intent(intent)


def kinds(report) -> list[str]:
    return sorted(f.kind for f in report.findings)


def replace_table(ruleset: Ruleset, table: Table) -> Ruleset:
    return dataclasses.replace(ruleset, tables=(table,))


def test_compiled_seed_matches_its_matrix() -> None:
    intent, rulesets = setup()
    report = audit(intent, "edge", rulesets["edge"], "compiled")
    assert report.findings == []
    assert "matches the matrix" in report.verdict()


@pytest.mark.parametrize("path", [SEED, TWO, ROOT / "examples" / "shared-proxy" / "matrix.yaml"], ids=lambda p: p.parent.name)
def test_compiled_examples_match(path) -> None:
    intent, rulesets = setup(path)
    for name, ruleset in rulesets.items():
        assert audit(intent, name, ruleset, "compiled").findings == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=matrix_yaml())
def test_generated_matrices_round_trip_with_no_findings(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("m") / "m.yaml"
    path.write_text(text)
    intent, rulesets = setup(path)
    for name, ruleset in rulesets.items():
        report = audit(intent, name, ruleset, "compiled")
        assert report.findings == [], [f.to_json() for f in report.findings]


def _set(table: Table, prefix: str):
    return next(s for s in table.sets if s.name.startswith(prefix))


def _with_set(table: Table, new_set) -> Table:
    return dataclasses.replace(table, sets=tuple(new_set if s.name == new_set.name else s for s in table.sets))


def test_dropped_element_is_missing_and_names_the_part() -> None:
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    wan = _set(table, "wan0_to_dmz0")
    kept = tuple(e for e in wan.elements if e.key[3] != PortRange(5061, 5061))
    report = audit(intent, "edge", replace_table(rulesets["edge"], _with_set(table, dataclasses.replace(wan, elements=kept))), "mutated")
    assert kinds(report) == ["missing"]
    (finding,) = report.findings
    assert finding.opening is not None and finding.opening.name == "operator-sip"
    assert "partly" in finding.message
    assert finding.regions == ("wan0 → dmz0  0.0.0.0/0 → 172.16.10.21  tcp/5061  ct new dnat",)  # as translated


def test_widened_port_range_is_excess_with_its_rule() -> None:
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    lan = _set(table, "dmz1_to_lan0")
    widened = tuple(dataclasses.replace(e, key=e.key[:3] + (PortRange(4000, 9999 + 10),)) if e.key[3] == PortRange(4000, 9999) else e for e in lan.elements)
    report = audit(intent, "edge", replace_table(rulesets["edge"], _with_set(table, dataclasses.replace(lan, elements=widened))), "mutated")
    assert kinds(report) == ["excess"]
    (finding,) = report.findings
    assert finding.rule == "inet fwmatrix fwd_dmz1_to_lan0 rule 1"
    assert finding.regions == ("dmz1 → lan0  172.16.20.22 → 10.20.0.30  udp/10000-10009  ct new",)


def test_wrong_dnat_target_is_a_nat_finding() -> None:
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    dnat = _set(table, "dnat_v4")
    moved = tuple(dataclasses.replace(e, data=(IPNetwork("172.16.10.99/32"),)) if e.comment == "operator-rtp" else e for e in dnat.elements)
    report = audit(intent, "edge", replace_table(rulesets["edge"], _with_set(table, dataclasses.replace(dnat, elements=moved))), "mutated")
    assert kinds(report) == ["nat"]
    (finding,) = report.findings
    assert "goes to 172.16.10.99" in finding.message and "the matrix says 172.16.10.22" in finding.message
    assert finding.opening is not None and finding.opening.name == "operator-rtp"


def _forward_with(table: Table, rules_before: tuple[Rule, ...] = (), rules_after: tuple[Rule, ...] = ()) -> Table:
    forward = table.chain("forward")
    new = dataclasses.replace(forward, rules=rules_before + forward.rules + rules_after)
    return dataclasses.replace(table, chains=tuple(new if c.name == "forward" else c for c in table.chains))


def _m(field: str, *values) -> Match:
    return Match((field,), tuple((v,) for v in values))


def test_extra_accept_is_excess_and_dmz_to_internet_is_its_own_kind() -> None:
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    ssh = Rule((_m("iif", "wan0"), _m("oif", "dmz0"), _m("ip.daddr", IPNetwork("172.16.10.10/32")), _m("l4proto", TCP), _m("dport", PortRange(22, 22))), Verdict("accept"), origin="ssh-rule")
    outbound = Rule((_m("iif", "dmz0"), _m("oif", "wan0")), Verdict("accept"), origin="outbound-rule")
    report = audit(intent, "edge", replace_table(rulesets["edge"], _forward_with(table, rules_after=(ssh, outbound))), "mutated")
    assert kinds(report) == ["dmz-to-internet", "excess"]
    by_kind = {f.kind: f for f in report.findings}
    assert by_kind["excess"].rule == "ssh-rule"
    assert by_kind["excess"].regions == ("wan0 → dmz0  0.0.0.0/0 → 172.16.10.10  tcp/22  ct new",)
    assert by_kind["dmz-to-internet"].rule == "outbound-rule"
    assert "connection tracking" in by_kind["dmz-to-internet"].message


def test_drop_before_accept_makes_missing_and_shadows() -> None:
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    block = Rule((_m("iif", "lan0"),), Verdict("drop"), origin="block-lan")
    # the new rule goes after established/related (so replies still pass) but before the jumps
    forward = table.chain("forward")
    rules = forward.rules[:2] + (block,) + forward.rules[2:]
    table = dataclasses.replace(table, chains=tuple(dataclasses.replace(c, rules=rules) if c.name == "forward" else c for c in table.chains))
    report = audit(intent, "edge", replace_table(rulesets["edge"], table), "mutated")
    missing = {f.opening.name for f in report.findings if f.kind == "missing"}
    assert missing == {"cti-to-sipproxy", "msa-to-rtpproxy"}
    assert {f.kind for f in report.findings} == {"missing"}


def test_no_established_rule_blocks_replies() -> None:
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    forward = table.chain("forward")
    table = dataclasses.replace(table, chains=tuple(dataclasses.replace(c, rules=c.rules[1:]) if c.name == "forward" else c for c in table.chains))
    report = audit(intent, "edge", replace_table(rulesets["edge"], table), "mutated")
    blocked = {f.opening.name for f in report.findings if f.kind == "reply-blocked"}
    assert blocked == {o.name for o in intent.matrix.openings}
    assert forward.rules[0].matches[0].fields == ("ct.state",)


def test_unmodelled_is_reported_and_judged_both_ways() -> None:
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    marked = Rule((Unmodelled("meta mark 0x1"), _m("iif", "wan0"), _m("oif", "dmz0")), Verdict("accept"), origin="mark-rule")
    report = audit(intent, "edge", replace_table(rulesets["edge"], _forward_with(table, rules_after=(marked,))), "mutated")
    assert sorted(f.kind for f in report.findings) == ["excess", "unmodelled"]
    (finding,) = [f for f in report.findings if f.kind == "unmodelled"]
    assert finding.rule == "mark-rule" and "meta mark" in finding.message
    # what the rule may let through beyond the openings is reported, as uncertain
    (maybe,) = [f for f in report.findings if f.kind == "excess"]
    assert maybe.level == "medium" and "may be forwarded" in maybe.message and maybe.rule == "mark-rule"
    assert all(line.startswith("wan0 → dmz0") for line in maybe.regions)


def test_unmodelled_rules_are_judged_one_by_one() -> None:
    """Mixed readings: the first never matches, the second always does (marks are 0).
    Neither 'all match' nor 'none match' forwards; the kernel does. The audit must not
    call the openings certainly missing."""
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    forward = Chain("forward", (Rule((Unmodelled("meta mark 0x1"),), Verdict("drop"), origin="mark1-drop"),
                                Rule((Unmodelled("meta mark 0x0"),), Verdict("accept"), origin="mark0-accept")),
                    hook="forward", policy="drop")
    table = dataclasses.replace(table, chains=tuple(forward if c.name == "forward" else c for c in table.chains))
    report = audit(intent, "edge", replace_table(rulesets["edge"], table), "marks")
    missing = [f for f in report.findings if f.kind == "missing"]
    assert missing and all("depends on rules fwmatrix cannot model" in f.message for f in missing)
    assert any(f.kind == "excess" and f.level == "medium" and f.rule == "mark0-accept" for f in report.findings)


def test_dnat_behind_an_unmodelled_match_is_uncertain() -> None:
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    extra = Rule((Unmodelled("meta mark 0x1"), _m("iif", "wan0"), _m("ip.daddr", IPNetwork("203.0.113.10/32")), _m("l4proto", TCP), _m("dport", PortRange(8080, 8080))),
                 Dnat(4, IPNetwork("172.16.10.10/32"), PortRange(80, 80)), origin="marked-forward")
    table = dataclasses.replace(table, chains=tuple(dataclasses.replace(c, rules=(extra,) + c.rules) if c.name == "prerouting" else c for c in table.chains))
    report = audit(intent, "edge", replace_table(rulesets["edge"], table), "m")
    (nat,) = [f for f in report.findings if f.kind == "nat"]
    assert nat.level == "medium" and nat.rule == "marked-forward" and "cannot model" in nat.message


def test_missing_port_forward_and_extra_port_forward() -> None:
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    dnat = _set(table, "dnat_v4")
    without_https = tuple(e for e in dnat.elements if e.comment != "operator-https")
    table = _with_set(table, dataclasses.replace(dnat, elements=without_https))
    extra = Rule((_m("iif", "wan0"), _m("ip.daddr", IPNetwork("203.0.113.10/32")), _m("l4proto", TCP), _m("dport", PortRange(8080, 8080))),
                 Dnat(4, IPNetwork("172.16.10.10/32"), PortRange(8080, 8080)), origin="extra-forward")
    prerouting = table.chain("prerouting")
    table = dataclasses.replace(table, chains=tuple(dataclasses.replace(c, rules=c.rules + (extra,)) if c.name == "prerouting" else c for c in table.chains))
    report = audit(intent, "edge", replace_table(rulesets["edge"], table), "mutated")
    nat = [f for f in report.findings if f.kind == "nat"]
    assert len(nat) == 2
    assert any("operator-https" in f.message and "missing" in f.message for f in nat)
    assert any(f.rule == "extra-forward" and "no opening asks for" in f.message for f in nat)
    assert prerouting.hook == "prerouting"


def test_several_forward_chains_all_judge() -> None:
    """An accept ends one base chain only: a later chain's drop still drops."""
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    late_drop = Rule((_m("iif", "dmz0"), _m("oif", "lan0"), _m("ip.daddr", IPNetwork("10.20.0.10/32"))), Verdict("drop"), origin="late-drop")
    later = Table("ip", "other", (Chain("fwd", (late_drop,),
                                        hook="forward", type="filter", priority=10, policy="accept"),))
    report = audit(intent, "edge", Ruleset((table, later)), "two tables")
    assert kinds(report) == ["missing"]
    assert report.findings[0].opening.name == "nginx-to-bal"


def test_jump_and_return() -> None:
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    # a user chain that returns for the nginx host and drops the rest of dmz0 -> lan0
    guard = Chain("guard", (Rule((_m("ip.saddr", IPNetwork("172.16.10.10/32")),), Verdict("return")), Rule((), Verdict("drop"), origin="guard-drop")))
    jump = Rule((), VerdictMap(("iif", "oif"), ((("dmz0", "lan0"), Jump("guard")),)))
    forward = table.chain("forward")
    table = dataclasses.replace(table, chains=tuple(
        dataclasses.replace(c, rules=c.rules[:2] + (jump,) + c.rules[2:]) if c.name == "forward" else c for c in table.chains) + (guard,))
    report = audit(intent, "edge", replace_table(rulesets["edge"], table), "jump/return")
    assert report.findings == []
    assert forward.policy == "drop"


def test_fail_threshold() -> None:
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    report = audit(intent, "edge", replace_table(rulesets["edge"], _forward_with(table, rules_after=(
        Rule((Unmodelled("limit rate 10/second"), TRANSLATED, _m("iif", "wan0"), _m("oif", "dmz0"), _m("ip.daddr", IPNetwork("172.16.10.10/32")),
              _m("l4proto", TCP), _m("dport", PortRange(443, 443))), Verdict("accept"), origin="x"),))), "m")
    # unmodelled (medium), and shadowed (low): the compiled rules already accept what it would
    assert sorted(f.level for f in report.findings) == ["low", "medium"], [f.to_json() for f in report.findings]
    assert fail(report, "medium") and not fail(report, "high")


def test_rules_that_decide_nothing_are_not_findings() -> None:
    """A counter or a log (action None) cannot change a verdict, whatever it matches."""
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    counter = Rule((Unmodelled("tcp flags syn"), _m("iif", "wan0")), None, origin="mss-clamp")
    report = audit(intent, "edge", replace_table(rulesets["edge"], _forward_with(table, rules_before=(counter,))), "m")
    assert report.findings == []


def test_drops_before_dnat_count() -> None:
    """A raw or mangle prerouting drop ends the packet before NAT and forward."""
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    raw = Table("ip", "raw", (Chain("pre", (Rule((_m("iif", "dmz0"), _m("ip.daddr", IPNetwork("10.20.0.10/32")), _m("l4proto", TCP), _m("dport", PortRange(80, 80))),
                                               Verdict("drop"), origin="raw-drop"),), hook="prerouting", type="filter", priority=-300, policy="accept"),))
    report = audit(intent, "edge", Ruleset((raw, table)), "with raw")
    missing = [f.opening.name for f in report.findings if f.kind == "missing"]
    assert missing == ["nginx-to-bal"]
    # the drop also hits answers to internet clients that happen to use 10.20.0.10:80
    assert {f.kind for f in report.findings} == {"missing", "reply-blocked"}


def test_a_rule_after_an_unmodelled_one_is_not_called_shadowed() -> None:
    from fwmatrix.audit.evaluate import evaluate
    from fwmatrix.ir import UnmodelledAction
    from fwmatrix.space import Interfaces

    chain = Chain("forward", (Rule((), UnmodelledAction("anchor"), origin="L1"), Rule((), Verdict("drop"), origin="L2")), hook="forward", policy="accept")
    effective = evaluate(Ruleset((Table("inet", "t", (chain,)),)), Interfaces.of(["a", "b"]))
    assert effective.shadowed == []
    # while a rule that certain rules cover is
    chain = Chain("forward", (Rule((), Verdict("drop"), origin="L1"), Rule((_m("iif", "a"),), Verdict("accept"), origin="L2")), hook="forward", policy="accept")
    effective = evaluate(Ruleset((Table("inet", "t", (chain,)),)), Interfaces.of(["a", "b"]))
    assert [n.origin for n in effective.shadowed] == ["L2"]


@pytest.mark.parametrize("jumped", [False, True], ids=["inline", "behind-a-jump"])
def test_a_rule_after_an_unmodelled_translation_is_not_called_shadowed(jumped: bool) -> None:
    """A postrouting nat chain's unknown translation (an anchor whose rules are not given,
    an unknown target) lets the packet on, but may not be what decides it: the accept after
    it (no translation for what leaves by b) may be, so it is not 'a rule that can never
    match' (the walk that looks for the nat chain's drops read it as a certain accept)."""
    from fwmatrix.audit.evaluate import evaluate
    from fwmatrix.ir import Masquerade, UnmodelledAction
    from fwmatrix.space import Interfaces

    unknown = Rule((), UnmodelledAction("anchor"), origin="L1")
    first = (Rule((), Jump("own"), origin="J"),) if jumped else (unknown,)
    own = (Chain("own", (unknown,)),) if jumped else ()
    forward = Chain("forward", (), hook="forward", policy="accept")

    def shadowed(later: Rule) -> list[str]:
        nat = Chain("post", first + (later,), hook="postrouting", type="nat", priority=100, policy="accept")
        effective = evaluate(Ruleset((Table("inet", "t", (forward, nat) + own),)), Interfaces.of(["a", "b"]))
        return [n.origin for n in effective.shadowed]

    assert shadowed(Rule((_m("oif", "b"),), Verdict("accept"), origin="L2")) == []
    # while a certain translation before it still hides it
    first = (Rule((), Masquerade(), origin="L1"),)
    own = ()
    assert shadowed(Rule((_m("oif", "b"),), Verdict("accept"), origin="L2")) == ["L2"]


def _without_translation(table: Table) -> Table:
    """The compiled table with its port forwards' forward rules not asking for the translation."""
    chains = tuple(dataclasses.replace(c, rules=tuple(dataclasses.replace(r, matches=tuple(m for m in r.matches if m != TRANSLATED))
                                                      for r in c.rules)) for c in table.chains)
    return dataclasses.replace(table, chains=chains)


def test_a_port_forward_target_reachable_directly_is_excess() -> None:
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    report = audit(intent, "edge", replace_table(rulesets["edge"], _without_translation(table)), "m")
    direct = [f for f in report.findings if "reachable directly" in f.message]
    assert [f.kind for f in report.findings] == ["excess"] * len(direct) and direct
    regions = {line for f in direct for line in f.regions}
    assert "wan0 → dmz0  0.0.0.0/0 → 172.16.10.10  tcp/443  ct new" in regions  # nginx at its own address
    assert all(line.endswith("ct new") for line in regions)  # untranslated only: the translated part is asked for


def test_translated_connections_are_what_a_port_forward_asks_for() -> None:
    """A forward rule that accepts what was translated towards the DMZ (docker's idiom) opens no
    target directly, and what it accepts beyond the live port forwards' translations cannot
    arrive: no finding."""
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    extra = Rule((TRANSLATED, _m("oif", "dmz0")), Verdict("accept"), origin="all translated")
    report = audit(intent, "edge", replace_table(rulesets["edge"], _forward_with(table, rules_after=(extra,))), "m")
    assert report.findings == [], [f.to_json() for f in report.findings]
    # another port forward to the same target: a nat finding; what it translates lands on
    # packets an opening asks for, so the same forward rule grants nothing in excess
    other = Rule((_m("iif", "wan0"), _m("ip.daddr", IPNetwork("203.0.113.10/32")), _m("l4proto", TCP), _m("dport", PortRange(8443, 8443))),
                 Dnat(4, IPNetwork("172.16.10.10/32"), PortRange(443, 443)), origin="extra dnat")
    widened = _forward_with(table, rules_after=(extra,))
    widened = dataclasses.replace(widened, chains=tuple(
        dataclasses.replace(c, rules=(other,) + c.rules) if c.name == "prerouting" else c for c in widened.chains))
    report = audit(intent, "edge", replace_table(rulesets["edge"], widened), "m")
    assert sorted(f.kind for f in report.findings) == ["nat"], [f.to_json() for f in report.findings]


SAME_TARGET = """fwmatrix: 1
name: same-target
zones: {internet: any, dmz: 10.0.0.0/16}
hosts: {web: 10.0.0.1}
firewalls:
  fw:
    interfaces: {wan0: internet, dmz0: dmz}
    public: 203.0.113.1
openings:
  - {name: direct, from: internet, to: web, service: [tcp/1000-1010, tcp/1011-1020]}
  - {name: forwarded, from: internet, to: fw.public, service: tcp/1005-1015, nat: web}
"""


def test_a_port_forward_a_plain_opening_already_covers_adds_no_rule(write_matrix) -> None:
    """The plain opening accepts the target's ports translated or not (two ranges between them):
    a translated element for the same packets would be a rule that can never match."""
    intent, rulesets = setup(write_matrix(SAME_TARGET))
    (table,) = rulesets["fw"].tables
    assert not any("_dnat" in s.name for s in table.sets)
    assert audit(intent, "fw", rulesets["fw"], "compiled").findings == []
    wider = SAME_TARGET.replace("tcp/1005-1015, nat", "tcp/1005-1025, nat")  # 1021-1025 only translated
    intent, rulesets = setup(write_matrix(wider, "wider.yaml"))
    (table,) = rulesets["fw"].tables
    assert [len(s.elements) for s in table.sets if "_dnat" in s.name] == [1]
    assert audit(intent, "fw", rulesets["fw"], "compiled").findings == []


def test_an_uncertain_excess_names_only_the_unmodelled_rules_that_reach_it() -> None:
    """The rules with unmodelled constructs an uncertain finding depends on are those whose
    packets meet the finding's, in the chain's order (findings._Doubtful's index)."""
    intent, rulesets = setup()
    (table,) = rulesets["edge"].tables
    out = (_m("iif", "wan0"), _m("oif", "dmz0"), _m("l4proto", TCP), _m("dport", PortRange(9999, 9999)))
    rules = tuple(Rule((Unmodelled(f"meta mark 0x{i}"), *out, _m("ip.daddr", IPNetwork(net))), Verdict("drop"), origin=f"mark-{i}")
                  for i, net in enumerate(["192.0.2.0/28", "198.51.100.0/25", "192.0.2.64/28", "198.51.100.0/24"]))
    after = Rule((*out, _m("ip.daddr", IPNetwork("198.51.100.0/24"))), Verdict("accept"), origin="accept-after")
    report = audit(intent, "edge", replace_table(rulesets["edge"], _forward_with(table, rules_after=rules + (after,))), "mutated")
    (maybe,) = [f for f in report.findings if f.kind == "excess" and f.rule == "accept-after"]
    assert maybe.message.endswith("(see 'unmodelled'; accept-after, mark-1, mark-3)")
