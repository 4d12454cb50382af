"""Trust (issue 11): what the kernel lets through, the audit reports as a finding that fails CI.

Three classes of ruleset once audited as closed while real packets passed
(the kernel-agreement cases in tests/test_kernel_agreement.py send them):
notrack with an untracked accept, sets the packet path fills, and a DNAT of
one family in an inet table. And the invariant that keeps new constructs
from failing open: whatever fwmatrix cannot model is judged both ways, and
what it may open is `excess`, what it may cut `missing`, both at least
medium, naming the rule (docs/audit.md, "Judged both ways").
"""

from __future__ import annotations

import dataclasses

import pytest
from netaddr import IPNetwork

from conftest import SEED
from fwmatrix.audit.findings import AuditReport, audit, fail
from fwmatrix.severity import SEVERITIES
from fwmatrix.backends import iptables, nftables
from fwmatrix.compile.intent import build_intent
from fwmatrix.compile.ruleset import compile_intent
from fwmatrix.ir import Action, DnatMap, Match, Rule, Ruleset, SetDef, Table, Unmodelled, UnmodelledAction, Verdict, VerdictMap
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.matrix.model import PortRange
from fwmatrix.netns import NetNamespace

INTENT = build_intent(load_matrix(str(SEED)))
COMPILED = compile_intent(INTENT)["edge"]
SEED_TEXT = nftables.render(COMPILED)
ESTABLISHED = '\t\tct state established,related accept comment "replies pass by connection tracking"\n'
INVALID = "\t\tct state invalid drop\n"
NAT_CHAIN = "\tchain prerouting {"
PORT_FORWARDS = 'comment "port forwards of the matrix"\n'


def raw_chain(rule: str) -> tuple[str, str]:
    """An edit that adds a raw-priority prerouting chain with one rule before the nat chain."""
    return NAT_CHAIN, f"\tchain raw {{\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t\t{rule}\n\t}}\n\n{NAT_CHAIN}"


def audit_nft(*edits: tuple[str, str]) -> AuditReport:
    """The audit of the compiled seed ruleset with `edits`, loaded into a namespace and listed back."""
    text = SEED_TEXT
    for old, new in edits:
        assert old in text, f"the compiled seed changed: {old!r}"
        text = text.replace(old, new, 1)
    with NetNamespace() as ns:
        nftables.load(ns, text)
        live = nftables.parse_json(nftables.list_ruleset_json(ns))
    return audit(INTENT, "edge", live, "kernel")


def at_least(finding, severity: str) -> bool:
    return SEVERITIES.index(finding.level) >= SEVERITIES.index(severity)


def shown(report: AuditReport) -> list[dict]:
    return [f.to_json() for f in report.findings]


# -- notrack + an untracked accept --------------------------------------------------------------

UNTRACKED_ACCEPTS = {
    "untracked in the established line": (ESTABLISHED, ESTABLISHED.replace("established,related", "established,related,untracked")),
    "untracked alone": (INVALID, INVALID + "\t\tct state untracked accept\n"),
    "negated states": (INVALID, INVALID + "\t\tct state != { new, invalid } accept\n"),
}


@pytest.mark.kernel
@pytest.mark.parametrize("edit", list(UNTRACKED_ACCEPTS.values()), ids=list(UNTRACKED_ACCEPTS))
def test_notrack_and_an_untracked_accept_are_a_high_excess(edit: tuple[str, str]) -> None:
    report = audit_nft(raw_chain('iifname "wan0" tcp dport 22 notrack'), edit)
    excess = [f for f in report.findings if f.kind == "excess"]
    assert excess, shown(report)
    for finding in excess:
        assert finding.level == "high", finding.to_json()
        assert "inet fwmatrix forward handle" in finding.rule and "inet fwmatrix raw handle" in finding.rule and "notrack" in finding.rule
        assert all(line.startswith("wan0 → any") and "tcp/22  ct new" in line for line in finding.regions), finding.regions
    assert {f.kind for f in report.findings} == {"excess"}, shown(report)
    assert fail(report, "high")


@pytest.mark.kernel
def test_notrack_without_an_untracked_accept_cuts_a_port_forward() -> None:
    # untracked packets are never translated (the forward chain would accept them translated:
    # as when the DNAT rule is gone, the finding is the port forward's)
    report = audit_nft(raw_chain('iifname "wan0" tcp dport 443 notrack'))
    assert [(f.kind, f.level) for f in report.findings] == [("nat", "high")], shown(report)
    assert "is missing" in report.findings[0].message
    assert all(f.opening is not None and f.opening.name == "operator-https" for f in report.findings)


def iptables_untracked(target: str, states: str = "RELATED,ESTABLISHED,UNTRACKED") -> str:
    """iptables-save text: a raw rule sends wan0's tcp/22 to `target`; forward accepts only `states`."""
    return (
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        f"-A PREROUTING -i wan0 -p tcp -m tcp --dport 22 {target}\nCOMMIT\n"
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        f"-A FORWARD -m conntrack --ctstate {states} -j ACCEPT\nCOMMIT\n"
    )


@pytest.mark.parametrize("target", ["-j CT --notrack", "-j NOTRACK"])
def test_iptables_notrack_and_untracked_accept_are_a_high_excess(target: str) -> None:
    report = audit(INTENT, "edge", iptables.parse_save(iptables_untracked(target), 4, "edge.rules"), "edge.rules")
    # (IPv6 is not given: what is said of it is another matter)
    (excess,) = [f for f in report.findings if f.kind == "excess" and "0.0.0.0/0" in f.regions[0]]
    assert excess.level == "high" and excess.rule == "edge.rules:10, untracked by edge.rules:4 (notrack)", excess.to_json()
    assert excess.regions == ("wan0 → any  0.0.0.0/0 → 0.0.0.0/0  tcp/22  ct new",)
    assert not [f for f in report.findings if f.kind == "unmodelled"]


def test_an_unmodelled_action_before_conntrack_may_untrack() -> None:
    # `-j CT --zone 1 --notrack`: CT with options is not modelled, and it may untrack
    report = audit(INTENT, "edge", iptables.parse_save(iptables_untracked("-j CT --zone 1 --notrack", "UNTRACKED"), 4, "edge.rules"), "edge.rules")
    excess = [f for f in report.findings if f.kind == "excess" and any("tcp/22  ct new" in line for line in f.regions)]
    assert excess and all(at_least(f, "medium") for f in excess), shown(report)
    assert all("untracked by edge.rules:4" in f.rule for f in excess), shown(report)


# -- sets the packet path fills ------------------------------------------------------------------

KNOCK_SET = "\tset knock {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 1m\n\t}\n\n\tset dmz0_to_lan0_v4 {"


@pytest.mark.kernel
@pytest.mark.parametrize("statement", ["update", "add"])
def test_a_set_the_packet_path_fills_may_hold_anything(statement: str) -> None:
    knock = (f'\t\tiifname "wan0" tcp dport 7000 {statement} @knock {{ ip saddr }}\n'
             '\t\tiifname "wan0" oifname "lan0" ip saddr @knock accept\n')
    report = audit_nft(("\tset dmz0_to_lan0_v4 {", KNOCK_SET), (INVALID, INVALID + knock))
    excess = [f for f in report.findings if f.kind == "excess"]
    assert excess and all(f.level == "medium" for f in excess), shown(report)
    assert any("0.0.0.0/0 → 0.0.0.0/0  any protocol  ct new" in line for f in excess for line in f.regions)
    assert all(line.startswith("wan0 → lan0") for f in excess for line in f.regions)
    (note,) = [f for f in report.findings if f.kind == "unmodelled"]
    assert "@knock" in note.message and note.rule == excess[0].rule
    assert fail(report, "medium")


IPTABLES_KNOCK = (
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    "-A FORWARD -i wan0 -p tcp -m tcp --dport 7000 -j SET --add-set knock src\n"
    "-A FORWARD -i wan0 -m set --match-set knock src -j ACCEPT\nCOMMIT\n"
)
KNOCK_IPSET = "create knock hash:ip family inet hashsize 1024 maxelem 65536 timeout 60\n"


def test_an_ipset_the_packet_path_fills_may_hold_anything() -> None:
    report = audit(INTENT, "edge", iptables.parse_save(IPTABLES_KNOCK, 4, "edge.rules", KNOCK_IPSET), "edge.rules")
    excess = [f for f in report.findings if f.kind == "excess" and "0.0.0.0/0" in f.regions[0]]
    assert excess and all(f.level == "medium" and f.rule == "edge.rules:6" for f in excess), shown(report)
    assert any(line.startswith("wan0 → any  0.0.0.0/0 → 0.0.0.0/0  any protocol") for f in excess for line in f.regions), shown(report)


# -- DNAT of one family in an inet table ----------------------------------------------------------


@pytest.mark.kernel
def test_a_dnat_of_one_family_leaves_the_other_to_the_next_rule() -> None:
    both = "\t\ttcp dport 8443 dnat ip to 172.16.10.10:443\n\t\ttcp dport 8443 dnat ip6 to [fd00:10::10]:443\n"
    report = audit_nft((PORT_FORWARDS, PORT_FORWARDS + both))
    assert not [f for f in report.findings if f.kind == "shadowed"], shown(report)
    nat = sorted((f.regions, f.message) for f in report.findings if f.kind == "nat")
    assert nat == [
        (("0.0.0.0/0 → 0.0.0.0/0  tcp/8443  ct new",), "port forward to 172.16.10.10 port 443 that no opening asks for"),
        (("::/0 → ::/0  tcp/8443  ct new",), "port forward to fd00:10::10 port 443 that no opening asks for"),
    ], shown(report)


@pytest.mark.kernel
def test_a_dnat_map_of_one_family_translates_only_its_family() -> None:
    report = audit_nft((PORT_FORWARDS, PORT_FORWARDS + "\t\tdnat ip to tcp dport map { 8443 : 172.16.10.10 }\n"))
    (nat,) = [f for f in report.findings if f.kind == "nat"]
    assert nat.regions == ("0.0.0.0/0 → 0.0.0.0/0  tcp/8443  ct new",), nat.to_json()


# -- the invariant: whatever fwmatrix cannot model is judged both ways, with consequences ----------

WAN_LAN = (Match(("iif",), (("wan0",),)), Match(("oif",), (("lan0",),)))  # the matrix opens nothing wan0 → lan0
WAN_DMZ = (Match(("iif",), (("wan0",),)), Match(("oif",), (("dmz0",),)))  # where the port forwards go
KNOCK = SetDef("knock", ("ip.saddr",), (), dynamic=True)
KNOCK_MAP = SetDef("knock_map", ("ip.saddr",), (), data=("verdict",), dynamic=True)


def _constructs(where: tuple[Match, ...], verdict: str) -> dict[str, tuple[tuple, Action]]:
    """Every kind of construct fwmatrix cannot model, as (matches, action) over `where`."""
    return {
        "an unmodelled match": ((Unmodelled("meta mark 0x1"), *where), Verdict(verdict)),
        "a source port": ((Match(("sport",), ((PortRange(1024, 65535),),)), *where), Verdict(verdict)),
        "a ct status but dnat": ((Match(("ct.status",), (("confirmed",),)), *where), Verdict(verdict)),
        "a set the packet path fills": ((Match(("ip.saddr",), set_name="knock"), *where), Verdict(verdict)),
        "an unmodelled action": (where, UnmodelledAction("queue num 1")),
        "an unknown verdict": (where, Verdict("queue")),
        "a verdict map the packet path fills": (where, VerdictMap(("ip.saddr",), map_name="knock_map")),
    }


def audit_with(*rules: Rule) -> AuditReport:
    """The compiled seed with `rules` first in its forward chain, after the state rules."""
    (table,) = COMPILED.tables
    forward = table.chain("forward")
    new = dataclasses.replace(forward, rules=forward.rules[:2] + rules + forward.rules[2:])
    table = dataclasses.replace(table, chains=tuple(new if c.name == "forward" else c for c in table.chains), sets=table.sets + (KNOCK, KNOCK_MAP))
    return audit(INTENT, "edge", Ruleset((table,)), "mutated")


ACCEPTING = _constructs(WAN_LAN, "accept")
DROPPING = _constructs(WAN_DMZ, "drop")


@pytest.mark.parametrize("construct", list(ACCEPTING), ids=list(ACCEPTING))
def test_what_an_unmodelled_construct_may_open_is_excess(construct: str) -> None:
    matches, action = ACCEPTING[construct]
    report = audit_with(Rule(matches, action, origin="the-rule"))
    excess = [f for f in report.findings if f.kind == "excess"]
    assert excess, f"{construct}: only {shown(report)}"
    assert all(at_least(f, "medium") for f in excess)
    assert all(line.startswith("wan0 → lan0") for f in excess for line in f.regions), shown(report)
    assert all("the-rule" in f.rule or "the-rule" in f.message for f in excess)
    assert any(f.kind == "unmodelled" and f.rule == "the-rule" for f in report.findings)
    assert fail(report, "medium")


@pytest.mark.parametrize("construct", list(DROPPING), ids=list(DROPPING))
def test_what_an_unmodelled_construct_may_cut_is_missing(construct: str) -> None:
    matches, action = DROPPING[construct]
    report = audit_with(Rule(matches, action, origin="the-rule"))
    missing = {f.opening.name for f in report.findings if f.kind == "missing" and at_least(f, "medium")}
    assert missing == {"operator-https", "operator-sip", "operator-rtp"}, f"{construct}: {shown(report)}"
    assert any(f.kind == "unmodelled" and f.rule == "the-rule" for f in report.findings)


def test_a_rule_no_packet_reaches_in_one_reading_is_still_judged_both_ways() -> None:
    # in the reading where the mark matches, its drop takes every packet before the queue;
    # in the kernel the mark is 0 and the queue's program decides: it may accept
    marked = Rule((Unmodelled("meta mark 0x1"), *WAN_LAN), Verdict("drop"), origin="mark-rule")
    queued = Rule(WAN_LAN, Verdict("queue"), origin="queue-rule")
    report = audit_with(marked, queued)
    excess = [f for f in report.findings if f.kind == "excess"]
    assert excess and all(at_least(f, "medium") for f in excess), shown(report)
    assert any("queue-rule" in f.rule + f.message for f in excess), shown(report)


def test_exact_rules_stay_exact() -> None:
    # the invariant adds doubt only where a construct is unmodelled: an exact accept is a high excess
    ssh = Rule((*WAN_LAN, Match(("ip.daddr",), ((IPNetwork("10.20.0.10/32"),),))), Verdict("accept"), origin="ssh-rule")
    report = audit_with(ssh)
    assert [(f.kind, f.level, f.rule) for f in report.findings] == [("excess", "high", "ssh-rule")], shown(report)


def test_a_dnat_map_the_packet_path_fills_may_translate_anywhere() -> None:
    (table,) = COMPILED.tables
    nat = table.chain("prerouting")
    lookup = Rule((Match(("iif",), (("wan0",),)), Match(("l4proto",), ((6,),))), DnatMap(4, ("dport",), map_name="dnat_knock"), origin="dnat-rule")
    filled = SetDef("dnat_knock", ("dport",), (), data=("ip.daddr",), dynamic=True)
    chains = tuple(dataclasses.replace(nat, rules=(lookup, *nat.rules)) if c is nat else c for c in table.chains)
    report = audit(INTENT, "edge", Ruleset((dataclasses.replace(table, chains=chains, sets=table.sets + (filled,)),)), "mutated")
    nat_findings = [f for f in report.findings if f.kind == "nat"]
    assert nat_findings and all(f.level == "medium" for f in nat_findings), shown(report)
    extra = [f for f in nat_findings if "that no opening asks for" in f.message]
    assert extra and extra[0].rule == "dnat-rule" and "0.0.0.0/0" in extra[0].message, shown(report)
    assert {f.opening.name for f in nat_findings if f.opening is not None} == {"operator-https", "operator-sip"}
