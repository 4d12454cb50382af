"""REDIRECT (iptables `-j REDIRECT [--to-ports P]`, nft `redirect [to :P]`) read as what it is:
a DNAT to the firewall itself. A redirected new connection is delivered locally (or dropped,
on an interface without an address), never forwarded: the audit takes it out of the forwarded
space exactly; where the firewall's own input is judged it is judged both ways (the input
chain sees it translated). Proved with real packets: the redirected port is not forwarded,
the others are."""

from __future__ import annotations

import pytest
from test_kernel_agreement import SEED_IFACES, TIMEOUT, check_agreement, judge, packet_space

from fwmatrix.audit.evaluate import evaluate, interfaces_of
from fwmatrix.audit.local import LOCAL, as_forward
from fwmatrix.backends import iptables, nftables
from fwmatrix.ir import Redirect, UnmodelledAction
from fwmatrix.matrix.model import PortRange
from fwmatrix.ops.lab import FIREWALL, Lab, Probe

WAN, DMZ = ("wan0", "198.51.100.7"), ("dmz0", "172.16.10.10")

IPT = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i wan0 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 3128
-A PREROUTING -i wan0 -p tcp -m tcp --dport 8080 -j REDIRECT
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
"""

NFT = """table ip nat {
 chain prerouting {
  type nat hook prerouting priority -100; policy accept;
  iifname "wan0" tcp dport 80 redirect to :3128
  iifname "wan0" tcp dport 8080 redirect
 }
}
table ip filter {
 chain forward {
  type filter hook forward priority 0; policy accept;
 }
}
"""


def probe(port: int) -> Probe:
    return Probe(WAN[0], DMZ[0], WAN[1], DMZ[1], "tcp", port)


PROBES = [probe(80), probe(8080), probe(443), probe(22)]


def test_iptables_reads_redirect_and_its_ports() -> None:
    text = IPT.replace("--dport 8080 -j REDIRECT\n", "--dport 8080 -j REDIRECT\n-A PREROUTING -p tcp --dport 1 -j REDIRECT --to-ports 1000-2000 --random\n"
                       "-A PREROUTING -p tcp --dport 2 -j REDIRECT --to-ports 0x50\n")
    actions = [r.action for t in iptables.parse_save(text, 4).tables for c in t.chains if c.name == "PREROUTING" for r in c.rules]
    assert actions[:3] == [Redirect(PortRange(3128, 3128)), Redirect(None), Redirect(PortRange(1000, 2000))]
    assert isinstance(actions[3], UnmodelledAction) and "firewall itself" in actions[3].text


def test_redirected_ports_are_not_forwarded_and_the_others_are() -> None:
    ruleset = iptables.parse_save(IPT, 4)
    effective = evaluate(ruleset, interfaces_of(ruleset, list(SEED_IFACES)))
    assert [judge(effective, p).forwarded for p in PROBES] == [False, False, True, True]
    assert not effective.unmodelled and not effective.dnats  # exact, and no port forward
    # from another interface the rule does not match: forwarded
    assert judge(effective, Probe("lan0", DMZ[0], "10.0.0.5", DMZ[1], "tcp", 80)).forwarded is True


def test_redirect_behind_an_unmodelled_match_is_judged_both_ways() -> None:
    ruleset = iptables.parse_save(IPT.replace("--dport 80 -j", "--dport 80 -m mark --mark 1 -j"), 4)
    effective = evaluate(ruleset, interfaces_of(ruleset, list(SEED_IFACES)))
    assert judge(effective, probe(80)).forwarded is None  # the mark may or may not match
    assert judge(effective, probe(8080)).forwarded is False


def _inbound(input_rules: str):
    text = IPT.replace("*filter\n:INPUT ACCEPT [0:0]\n", "*filter\n:INPUT DROP [0:0]\n").replace(
        ":OUTPUT ACCEPT [0:0]\nCOMMIT\n", f":OUTPUT ACCEPT [0:0]\n{input_rules}COMMIT\n")
    assert ":INPUT DROP" in text
    ruleset = iptables.parse_save(text, 4)
    ifaces = interfaces_of(ruleset, list(SEED_IFACES) + [LOCAL])
    inbound = evaluate(as_forward(ruleset, "input"), ifaces)

    def fate(iif: str, src: str, port: int) -> str:
        one = packet_space(ifaces, iif, LOCAL, src, "198.51.100.1", "tcp", port)
        if any(g.space.intersect(one) for g in inbound.forwarded):
            return "accepted"
        return "uncertain" if any(g.space.intersect(one) for g in inbound.uncertain) else "not"
    return inbound, fate


@pytest.mark.parametrize(("input_rules", "redirected", "plain"), [
    # the chain accepts port 80, but the redirected packet reaches it on 3128: exactly not accepted
    ("-A INPUT -p tcp --dport 80 -j ACCEPT\n", "not", "accepted"),
    # it accepts 3128 (to any of its addresses): exactly accepted, and 80 from another interface too
    ("-A INPUT -p tcp -m multiport --dports 80,3128 -j ACCEPT\n", "accepted", "accepted"),
])
def test_the_input_chain_sees_redirected_packets_translated(input_rules: str, redirected: str, plain: str) -> None:
    inbound, fate = _inbound(input_rules)
    assert fate(WAN[0], WAN[1], 80) == redirected
    assert fate("lan0", "10.0.0.5", 80) == plain  # not redirected
    assert not inbound.unmodelled


def test_the_input_chain_deciding_by_the_address_is_judged_both_ways() -> None:
    # which address the redirected packet gets (its interface's primary one) is not worked out
    inbound, fate = _inbound("-A INPUT -d 198.51.100.1 -p tcp --dport 3128 -j ACCEPT\n")
    assert fate(WAN[0], WAN[1], 80) == "uncertain"
    assert any("input chain sees the packet translated" in n.text and "port 3128" in n.text for n in inbound.unmodelled)


@pytest.mark.kernel
def test_nft_reads_redirect() -> None:
    ruleset = nftables.parse_text(NFT)
    actions = [r.action for t in ruleset.tables for c in t.chains if c.hook == "prerouting" for r in c.rules]
    assert actions == [Redirect(PortRange(3128, 3128)), Redirect(None)]


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_redirect_in_the_kernel(backend: str) -> None:
    with Lab(SEED_IFACES, timeout=TIMEOUT) as lab:
        if backend == "iptables":
            lab.load_iptables({iptables.FAMILY_SUFFIX[4]: IPT})
            live = lab.read_iptables()
        else:
            lab.load_raw_nft(NFT)
            live = lab.read_nft()
        tally = check_agreement(lab, live, PROBES, f"redirect ({backend})")
    assert not tally.disagreements, "\n".join(tally.disagreements)
    assert tally.probes == len(PROBES) and not tally.uncertain
    effective = evaluate(live, interfaces_of(live, list(SEED_IFACES)))
    assert [judge(effective, p).forwarded for p in PROBES] == [False, False, True, True]  # every probe compared


@pytest.mark.kernel
@pytest.mark.parametrize(("input_rules", "reached"), [
    ("-A INPUT -p tcp --dport 80 -j ACCEPT\n", [False, False]),  # port 80 arrives on 3128, which it drops
    ("-A INPUT -p tcp --dport 3128 -j ACCEPT\n", [True, True]),
])
def test_the_input_chain_sees_the_redirected_packet_in_the_kernel(input_rules: str, reached: list[bool]) -> None:
    """Probes to the firewall itself on port 80 (redirected to 3128) and 3128 (not redirected):
    the kernel's input chain judges the translated packet, as the evaluator does."""
    text = IPT.replace("*filter\n:INPUT ACCEPT [0:0]\n", "*filter\n:INPUT DROP [0:0]\n").replace(
        ":OUTPUT ACCEPT [0:0]\nCOMMIT\n", f":OUTPUT ACCEPT [0:0]\n{input_rules}COMMIT\n")
    probes = [Probe(WAN[0], FIREWALL, WAN[1], "198.51.100.1", "tcp", port) for port in (80, 3128)]
    with Lab(SEED_IFACES, timeout=TIMEOUT) as lab:
        lab.load_iptables({iptables.FAMILY_SUFFIX[4]: text})
        live = lab.read_iptables()
        kernel = [r.reached for r in lab.run(probes)]
    inbound = evaluate(as_forward(live, "input"), interfaces_of(live, list(SEED_IFACES) + [LOCAL]))
    assert kernel == reached
    assert [judge(inbound, p).forwarded for p in probes] == reached
