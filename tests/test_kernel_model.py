"""Constructs modelled exactly for what the audit asks, proved with real packets.

TCP flags: the first packet of a NEW connection carries SYN without FIN, RST and
ACK, so `--syn` (`tcp flags & (fin|syn|rst|ack) == syn`), `tcp flags syn` and any
flags test on those four bits decide NEW packets exactly; on packets of other
states they are judged both ways. ICMP types: a type match implies its protocol,
so it decides every TCP/UDP packet exactly and is judged both ways within ICMP
only. Address scopes: a link-local source never leaves its link (the kernel refuses
to forward it to another interface before any forward chain), a site-local one does.
Each kernel case loads a ruleset in a lab, sends real probes (NEW
connections) and requires the evaluator's verdicts to be the kernel's, and exact
(compared, not "uncertain") where the model says so.
"""

from __future__ import annotations

import pytest
from netaddr import IPNetwork
from test_kernel_agreement import SEED_IFACES, TIMEOUT, check_agreement, judge

from fwmatrix.audit.evaluate import evaluate, interfaces_of
from fwmatrix.audit.local import LOCAL, as_forward
from fwmatrix.backends import iptables, nftables
from fwmatrix.ir import Match, Ruleset, TcpFlags, Unmodelled
from fwmatrix.ops.lab import Lab, Probe
from fwmatrix.space import Box, Space, addr_interval, ct_bits
from test_kernel_agreement import packet_space

WAN, DMZ = ("wan0", "198.51.100.7"), ("dmz0", "172.16.10.10")


def probe(proto: str, port: int | None) -> Probe:
    return Probe(WAN[0], DMZ[0], WAN[1], DMZ[1], proto, port)


# -- parsing -----------------------------------------------------------------------------------


def _matches(ruleset: Ruleset) -> list[tuple]:
    return [rule.matches for table in ruleset.tables for chain in table.chains for rule in chain.rules]


IPT_FLAGS = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m tcp --dport 22 -j ACCEPT
-A FORWARD -p tcp -m tcp ! --syn -m conntrack --ctstate NEW -j DROP
-A FORWARD -p tcp -m tcp --tcp-flags ALL NONE -j DROP
-A FORWARD -p icmp -m icmp --icmp-type echo-request -j ACCEPT
-A FORWARD -p icmp -m icmp --icmp-type 3/4 -j ACCEPT
-A FORWARD -p icmp -m icmp --icmp-type any -j ACCEPT
COMMIT
"""


def test_iptables_tcp_flags_and_icmp_types_are_read() -> None:
    rules = _matches(iptables.parse_save(IPT_FLAGS, 4))
    tcp, icmp = Match(("l4proto",), ((6,),)), Match(("l4proto",), ((1,),))
    assert Match(("tcp.flags",), ((TcpFlags(0x17, 0x02),),)) in rules[0] and tcp in rules[0]
    assert Match(("tcp.flags",), ((TcpFlags(0x17, 0x02),),), negate=True) in rules[1]
    assert Match(("tcp.flags",), ((TcpFlags(0x3F, 0),),)) in rules[2]
    assert rules[3] == (icmp, Match(("icmp.type",), ((8,),)))
    assert rules[4] == (icmp, Match(("icmp.type", "icmp.code"), ((3, 4),)))  # a type/code pair, read as one
    assert rules[5] == (icmp,)


def test_iptables_unknown_tcp_flag_is_refused_in_one_line() -> None:
    with pytest.raises(Exception) as caught:
        iptables.parse_save(IPT_FLAGS.replace("ALL NONE", "ALL BOGUS"), 4, "x.ipt")
    assert "x.ipt:7:" in str(caught.value) and "BOGUS" in str(caught.value)


NFT_FLAGS = {
    "tcp flags syn": TcpFlags(0x02, 0x02),
    "tcp flags & (fin|syn|rst|ack) == syn": TcpFlags(0x17, 0x02),
    "tcp flags syn / fin,syn,rst,ack": TcpFlags(0x17, 0x02),
    "tcp flags == syn": TcpFlags(0xFF, 0x02),
    "tcp flags & (syn|ack) == syn": TcpFlags(0x12, 0x02),
}


@pytest.mark.kernel
def test_nftables_tcp_flags_icmp_types_are_read() -> None:
    body = "\n".join(f"  {text} accept" for text in NFT_FLAGS) + "\n  tcp flags != syn drop\n  icmp type { echo-request, echo-reply } accept\n"
    ruleset = nftables.parse_text("table inet t {\n chain forward {\n  type filter hook forward priority 0;\n" + body + " }\n}\n")
    rules = _matches(ruleset)
    for matches, flags in zip(rules, NFT_FLAGS.values()):
        assert matches == (Match(("l4proto",), ((6,),)), Match(("tcp.flags",), ((flags,),)))
    assert rules[5][1] == Match(("tcp.flags",), ((TcpFlags(0xFF, 0x02),),), negate=True)
    assert rules[6] == (Match(("l4proto",), ((1,),)), Match(("icmp.type",), ((0,), (8,))))


# -- evaluation --------------------------------------------------------------------------------


def _effective(text: str):
    ruleset = iptables.parse_save(text, 4)
    return evaluate(ruleset, interfaces_of(ruleset, list(SEED_IFACES)))


def _state(effective, proto: str, port: int | None, state: str) -> str:
    ifaces = effective.ifaces
    one = packet_space(ifaces, WAN[0], DMZ[0], WAN[1], DMZ[1], proto, port)
    (box,) = one.boxes
    one = Space(ifaces, [Box(box.iif, box.oif, box.src, box.dst, box.proto, box.dport, ct_bits(state, translated=False))])
    if any(g.space.intersect(one) for g in effective.forwarded):
        return "forwarded"
    return "uncertain" if any(g.space.intersect(one) for g in effective.uncertain) else "not"


def test_syn_decides_new_exactly_and_other_states_both_ways() -> None:
    effective = _effective(IPT_FLAGS)
    assert _state(effective, "tcp", 22, "new") == "forwarded"
    assert _state(effective, "tcp", 22, "established") == "uncertain"  # flags of a later packet: unknown
    assert _state(effective, "tcp", 80, "new") == "not"  # `! --syn` NEW and ALL NONE drop nothing NEW
    assert _state(effective, "udp", 22, "new") == "not"
    assert _state(effective, "icmp", None, "new") == "forwarded"  # a ping is an echo request: types are exact


def test_flags_beyond_fin_syn_rst_ack_stay_unmodelled_for_new() -> None:
    text = IPT_FLAGS.replace("--tcp-flags FIN,SYN,RST,ACK SYN -m tcp --dport 22", "--tcp-flags SYN,PSH SYN -m tcp --dport 22")
    assert _state(_effective(text), "tcp", 22, "new") == "uncertain"


def test_a_flags_test_no_syn_passes_matches_no_new_packet() -> None:
    text = IPT_FLAGS.replace("--tcp-flags FIN,SYN,RST,ACK SYN -m tcp --dport 22", "--tcp-flags SYN,ACK SYN,ACK -m tcp --dport 22")
    effective = _effective(text)
    assert _state(effective, "tcp", 22, "new") == "not"
    assert _state(effective, "tcp", 22, "established") == "uncertain"


# -- real packets ------------------------------------------------------------------------------

NFT_SYN = """table inet t {
 chain forward {
  type filter hook forward priority 0; policy drop;
  tcp flags & (fin|syn|rst|ack) == syn ct state new tcp dport 22 accept
  tcp flags & (fin|syn|rst|ack) != syn ct state new drop
  tcp flags syn tcp dport { 80, 443 } accept
  tcp flags & (fin|syn) == fin|syn drop
  tcp flags & (syn|ack) == syn|ack tcp dport 8080 accept
  icmp type echo-request accept
  udp dport 5060 accept
 }
}
"""
EXACT = [probe("tcp", 22), probe("tcp", 80), probe("tcp", 443), probe("tcp", 8080), probe("tcp", 25), probe("udp", 53), probe("udp", 5060)]


@pytest.mark.kernel
def test_tcp_flags_and_icmp_types_in_the_kernel_nftables() -> None:
    with Lab(SEED_IFACES, timeout=TIMEOUT) as lab:
        lab.load_raw_nft(NFT_SYN)
        live = lab.read_nft()
        tally = check_agreement(lab, live, EXACT + [probe("icmp", None)], "tcp flags, icmp type (nftables)")
    assert not tally.disagreements, "\n".join(tally.disagreements)
    effective = evaluate(live, interfaces_of(live, list(SEED_IFACES)))
    verdicts = [judge(effective, p).forwarded for p in EXACT]
    assert verdicts == [True, True, True, False, False, False, True]  # every TCP/UDP probe compared
    assert judge(effective, probe("icmp", None)).forwarded is True  # a ping: `icmp type echo-request` decides it


IPT_SYN = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m tcp --dport 22 -j ACCEPT
-A FORWARD -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP
-A FORWARD -p tcp -m tcp --tcp-flags ALL NONE -j DROP
-A FORWARD -p tcp -m tcp --syn -m multiport --dports 80,443 -j ACCEPT
-A FORWARD -p tcp -m tcp --tcp-flags SYN,RST SYN,RST -j DROP
-A FORWARD -p tcp -m tcp --tcp-flags SYN,ACK SYN,ACK --dport 8080 -j ACCEPT
-A FORWARD -p icmp -m icmp --icmp-type echo-request -j ACCEPT
-A FORWARD -p udp -m udp --dport 5060 -j ACCEPT
COMMIT
"""


@pytest.mark.kernel
def test_tcp_flags_and_icmp_types_in_the_kernel_iptables() -> None:
    with Lab(SEED_IFACES, timeout=TIMEOUT) as lab:
        lab.load_iptables({iptables.FAMILY_SUFFIX[4]: IPT_SYN})
        live = lab.read_iptables()
        tally = check_agreement(lab, live, EXACT + [probe("icmp", None)], "tcp flags, icmp type (iptables)")
    assert not tally.disagreements, "\n".join(tally.disagreements)
    effective = evaluate(live, interfaces_of(live, list(SEED_IFACES)))
    assert [judge(effective, p).forwarded for p in EXACT] == [True, True, True, False, False, False, True]
    assert judge(effective, probe("icmp", None)).forwarded is True


def test_whole_flags_byte_is_judged_both_ways_for_new() -> None:
    # `tcp flags == syn` also tests ECN and CWR, which an ECN-setup SYN carries: not exact
    text = IPT_FLAGS.replace("--tcp-flags FIN,SYN,RST,ACK SYN -m tcp --dport 22", "--tcp-flags ALL SYN -m tcp --dport 22")
    assert _state(_effective(text), "tcp", 22, "new") == "uncertain"


# -- the address family and the IPv6 next header -------------------------------------------------

NFT_FAMILY = """table inet t {
 chain forward {
  type filter hook forward priority 0; policy drop;
  ip6 nexthdr tcp tcp dport 22 accept
  ip6 nexthdr != tcp udp dport 53 accept
  meta nfproto ipv4 udp dport 5060 accept
  ip6 nexthdr { udp, sctp } th dport 9 accept
 }
}
"""
V6 = ("lan0", "wan0", "fd00:20::21", "2001:db8:ffff::7")
V4 = ("wan0", "dmz0", "198.51.100.7", "172.16.10.10")
FAMILY_PROBES = {
    Probe(*V6, "tcp", 22): True, Probe(*V6, "tcp", 80): False, Probe(*V6, "udp", 53): True,
    Probe(*V4, "udp", 53): False, Probe(*V4, "udp", 5060): True, Probe(*V6, "udp", 5060): False,
    Probe(*V6, "udp", 9): True, Probe(*V6, "tcp", 9): False, Probe(*V4, "udp", 9): False,
}


def test_ip6_nexthdr_reads_as_the_protocol_but_extension_headers_stay_unmodelled() -> None:
    ruleset = nftables.parse_json(
        '{"nftables": [{"table": {"family": "inet", "name": "t"}}, {"chain": {"family": "inet", "table": "t", "name": "f",'
        ' "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},'
        ' {"rule": {"family": "inet", "table": "t", "chain": "f", "expr": [{"match": {"op": "==", "left": {"payload":'
        ' {"protocol": "ip6", "field": "nexthdr"}}, "right": {"set": ["tcp", "udp"]}}}, {"accept": null}]}},'
        ' {"rule": {"family": "inet", "table": "t", "chain": "f", "expr": [{"match": {"op": "==", "left": {"payload":'
        ' {"protocol": "ip6", "field": "nexthdr"}}, "right": "hopopts"}}, {"drop": null}]}}]}'
    )
    plain, hop = _matches(ruleset)
    assert plain == (Match(("nfproto",), ((6,),)), Match(("l4proto",), ((6,), (17,))))
    assert hop[0] == Match(("nfproto",), ((6,),)) and isinstance(hop[1], Unmodelled) and "extension header" in hop[1].text


@pytest.mark.kernel
def test_nfproto_and_ip6_nexthdr_in_the_kernel() -> None:
    with Lab(SEED_IFACES, timeout=TIMEOUT) as lab:
        lab.load_raw_nft(NFT_FAMILY)
        live = lab.read_nft()
        tally = check_agreement(lab, live, list(FAMILY_PROBES), "meta nfproto, ip6 nexthdr")
    assert not tally.disagreements, "\n".join(tally.disagreements)
    effective = evaluate(live, interfaces_of(live, list(SEED_IFACES)))
    assert {p: judge(effective, p).forwarded for p in FAMILY_PROBES} == FAMILY_PROBES  # all compared, none uncertain


# -- audits of the compiled seed with these constructs added -------------------------------------

AFTER_INVALID = "\t\tct state invalid drop\n"


def _seed_audit(added: str):
    from test_audit_nftables import SEED_TEXT, audit_text

    from conftest import SEED

    assert AFTER_INVALID in SEED_TEXT, "the compiled seed changed: update this test"
    report = audit_text(SEED, "edge", SEED_TEXT.replace(AFTER_INVALID, AFTER_INVALID + added, 1))
    return [f.to_json() for f in report.findings]


@pytest.mark.kernel
def test_a_syn_check_before_the_openings_audits_clean() -> None:
    # the common "NEW without SYN: drop" rule changes nothing for the openings: no finding
    assert _seed_audit("\t\ttcp flags & (fin|syn|rst|ack) != syn ct state new drop\n") == []


@pytest.mark.kernel
def test_a_syn_accept_towards_the_internet_is_found_exactly() -> None:
    findings = _seed_audit('\t\ttcp flags syn iifname "dmz0" oifname "wan0" accept\n')
    assert [f["kind"] for f in findings if f["kind"] != "unmodelled"] == ["dmz-to-internet"], findings


@pytest.mark.kernel
def test_an_icmp_type_accept_is_judged_within_icmp_only() -> None:
    findings = _seed_audit('\t\ticmp type echo-request iifname "dmz0" oifname "wan0" accept\n')
    assert findings, "an ICMP accept towards the internet may forward: it must be found"
    text = str(findings)
    assert "icmp" in text and "tcp" not in text and "udp" not in text, findings


# -- address scopes ----------------------------------------------------------------------------

ACCEPT_ALL_V6 = "table ip6 f {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n }\n}\n"
LINK_LOCAL_SOURCES = ("fe80::5", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff")  # the first host and the last of fe80::/10
# fec0::/10 (site-local, deprecated by RFC 3879) just beyond it: fec0:: was once thought a source the lab cannot send
OTHER_SOURCES = ("fec0::", "fec0::1", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fd00:1::7")


def _snmp6(ns) -> dict[str, int]:
    """A namespace's IPv6 counters (its own /proc/net/snmp6)."""
    return {name: int(value) for name, value in (line.split() for line in ns.run(["cat", "/proc/net/snmp6"]).stdout.splitlines() if line.strip())}


@pytest.mark.kernel
def test_link_local_sources_never_leave_their_link_site_local_ones_do() -> None:
    """A forward chain that accepts everything: the kernel forwards site-local and global
    sources, and refuses link-local ones before the forward hook (an address error, answered
    with ICMPv6 destination unreachable); the evaluator says exactly that, and so does query."""
    probes = [Probe("wan0", "dmz0", src, "fd00:2::7", proto, 80) for src in LINK_LOCAL_SOURCES + OTHER_SOURCES for proto in ("tcp", "udp")]
    with Lab(("wan0", "dmz0"), timeout=TIMEOUT) as lab:
        lab.load_raw_nft(ACCEPT_ALL_V6)
        tally = check_agreement(lab, lab.read_nft(), probes, "link-local and site-local sources", query=True)
        firewall, sender = _snmp6(lab.fw), _snmp6(lab.side("wan0"))
    assert not tally.disagreements, "\n".join(tally.disagreements)
    assert (tally.forwarded, tally.dropped, tally.uncertain) == (2 * len(OTHER_SOURCES), 2 * len(LINK_LOCAL_SOURCES), 0), tally.summary()
    # the link-local probes were sent, and refused by the firewall's IPv6 stack, not lost on the way
    refused = 2 * len(LINK_LOCAL_SOURCES)
    assert firewall["Ip6InAddrErrors"] >= refused and firewall["Icmp6OutType1"] >= refused, firewall
    assert sender["Icmp6InType1"] >= refused, sender


def test_input_judged_as_forward_keeps_link_local_sources() -> None:
    """Only forwarding between two interfaces loses link-local sources: the firewall itself takes
    them (its input chain, judged on the forward hook with the firewall as the out-interface)."""
    text = ("table ip6 f {\n chain input {\n  type filter hook input priority 0; policy accept;\n }\n"
            " chain forward {\n  type filter hook forward priority 0; policy accept;\n }\n}\n")
    ruleset = nftables.parse_text(text, "scopes.nft")
    link_local = (addr_interval(IPNetwork("fe80::/10")),)
    ifaces = interfaces_of(ruleset, ["wan0", "dmz0", LOCAL])
    full = Space.full(ifaces)
    to_self = full.make(iif=ifaces.mask("wan0"), oif=ifaces.mask(LOCAL), src=link_local)
    across = full.make(iif=ifaces.mask("wan0"), oif=ifaces.mask("dmz0"), src=link_local)
    back = full.make(iif=ifaces.mask("wan0"), oif=ifaces.mask("wan0"), src=link_local)  # out where it came in: the kernel lets it be
    inbound = evaluate(as_forward(ruleset, "input"), ifaces).forwarded_space()
    forwarded = evaluate(ruleset, ifaces).forwarded_space()
    assert inbound.contains(to_self)
    assert not forwarded.intersect(across) and forwarded.contains(back)


@pytest.mark.kernel
def test_an_opening_from_anywhere_misses_no_link_local_source() -> None:
    """The example's IPv6 web opening comes from the internet, fe80::/10 too; a ruleset that drops
    link-local sources first forwards all of it the kernel forwards: no `missing` finding (was
    one, 'fe80::/10 → 2001:db8:10::10'). A drop of more than them is still found, in the rule's words."""
    from test_audit import TWO
    from test_audit_nftables import audit_text

    from fwmatrix.compile.intent import build_intent
    from fwmatrix.compile.ruleset import compile_intent
    from fwmatrix.matrix.loader import load_matrix

    text = nftables.render(compile_intent(build_intent(load_matrix(str(TWO))))["perimeter"])
    assert AFTER_INVALID.strip() in text, "the compiled example changed: update this test"

    def findings(rule: str) -> list[dict]:
        changed = text.replace(AFTER_INVALID.strip(), AFTER_INVALID.strip() + "\n\t\t" + rule, 1)
        return [f.to_json() for f in audit_text(TWO, "perimeter", changed).findings]

    assert findings("ip6 saddr fe80::/10 drop") == []
    missing = [f for f in findings("ip6 saddr fe80::/9 drop") if f["kind"] == "missing"]
    assert any("fe80::/9 → 2001:db8:10::10" in r for f in missing for r in f["regions"]), missing  # as the rule has it
