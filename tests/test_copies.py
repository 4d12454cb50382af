"""Copies of packets (iptables `-j TEE --gateway G`, nft `dup to G`, pf `dup-to`) read one way
(ir.packet_copies): the original's fate is the rest of the chain's, exact; the copy is a named
unmodelled action that decides nothing, so the audit says a copy leaves towards G and keeps
the copied packets uncertain (fail closed), as pf's reading does (tests/test_pf_route.py). In
the kernel a copy does not change the original's verdict: the same probes, with and without it."""

from __future__ import annotations

import pytest
from conftest import kernel_cannot
from test_kernel_agreement import SEED_IFACES, TIMEOUT, check_agreement, judge
from test_nftables_parse import listing, match

from fwmatrix.audit.evaluate import evaluate, interfaces_of
from fwmatrix.backends import iptables, nftables
from fwmatrix.ir import Verdict, packet_copies
from fwmatrix.ops.lab import Lab, Probe

WAN, DMZ = ("wan0", "198.51.100.7"), ("dmz0", "172.16.10.10")
PROBES = [Probe(WAN[0], DMZ[0], WAN[1], DMZ[1], "tcp", port) for port in (80, 443, 22, 25)]
KERNEL = [True, False, True, False]  # what the filter rules alone decide
WITH_COPIES = [None, False, True, False]  # port 80 is copied and accepted: uncertain; 443 copied, dropped either way

IPT = """*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
{copies}COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 80 -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
"""
IPT_COPIES = "-A FORWARD -p tcp -m tcp --dport {port} -j TEE --gateway {gateway}\n"

NFT = """table ip t {{
 chain forward {{
  type filter hook forward priority 0; policy drop;
{copies}  tcp dport {{ 80, 22 }} accept
 }}
}}
"""
NFT_COPIES = "  tcp dport {port} dup to {gateway}\n"


def _ipt(gateway: str | None) -> str:
    return IPT.format(copies="".join(IPT_COPIES.format(port=p, gateway=gateway) for p in (80, 443)) if gateway else "")


def _nft(gateway: str | None) -> str:
    return NFT.format(copies="".join(NFT_COPIES.format(port=p, gateway=gateway) for p in (80, 443)) if gateway else "")


def test_iptables_tee_is_a_named_copy_that_decides_nothing() -> None:
    ruleset = iptables.parse_save(_ipt("10.9.9.9"), 4)
    (mangle,) = [c for t in ruleset.tables for c in t.chains if t.name == "mangle" and c.name == "FORWARD"]
    assert [r.action for r in mangle.rules] == [packet_copies("-j TEE --gateway 10.9.9.9", "each packet the rule matches")] * 2
    assert not mangle.rules[0].action.terminal
    effective = evaluate(ruleset, interfaces_of(ruleset, list(SEED_IFACES)))
    assert [judge(effective, p).forwarded for p in PROBES] == WITH_COPIES
    notes = [n for n in effective.unmodelled if "TEE --gateway 10.9.9.9: a copy" in n.text]
    assert notes and all("leaves towards the target" in n.text for n in notes)


def test_nft_dup_is_a_rule_of_its_own_before_the_verdict() -> None:
    dport = {"payload": {"protocol": "tcp", "field": "dport"}}
    rules = list(nftables.parse_json(listing([match(dport, 80), {"dup": {"addr": "10.9.9.9", "dev": "lan0"}}, {"accept": None}],
                                             [match(dport, 443), {"dup": {"addr": "10.9.9.9"}}])).tables[0].chains[0].rules)
    copy = packet_copies("dup to 10.9.9.9 device lan0", "each packet the rule matches")
    assert [(r.origin, r.action) for r in rules] == [
        ("inet t c handle 10 (copies)", copy), ("inet t c handle 10", Verdict("accept")),
        ("inet t c handle 11 (copies)", packet_copies("dup to 10.9.9.9", "each packet the rule matches")),
    ]
    assert rules[0].matches == rules[1].matches


def _kernel(lab: Lab, backend: str, gateway: str | None):
    if backend == "iptables":
        lab.load_iptables({iptables.FAMILY_SUFFIX[4]: _ipt(gateway)})
        return lab.read_iptables()
    lab.load_raw_nft(_nft(gateway))
    return lab.read_nft()


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_copies_do_not_change_the_originals_verdict_in_the_kernel(backend: str) -> None:
    with Lab(SEED_IFACES, timeout=TIMEOUT) as lab:
        gateway = str(lab.links["dmz1"].side_v4)  # a neighbour of the firewall: the copies leave by dmz1
        _kernel(lab, backend, None)
        without = [r.delivered for r in lab.run(PROBES)]
        try:
            live = _kernel(lab, backend, gateway)
        except Exception as exc:  # noqa: BLE001 - the kernel may lack xt_TEE / nft_dup_ipv4
            kernel_cannot(f"the lab cannot load {backend} copies: {exc}")
        results = lab.run(PROBES)
        copied = [r.delivered for r in results]
        # the copies were made: the dmz1 neighbour saw the first packets of ports 80 and 443
        assert [any(s.side == "dmz1" for s in r.seen) for r in results] == [True, True, False, False]
        tally = check_agreement(lab, live, PROBES, f"copies ({backend})")
    assert without == copied == KERNEL
    assert not tally.disagreements, "\n".join(tally.disagreements)
    effective = evaluate(live, interfaces_of(live, list(SEED_IFACES)))
    assert [judge(effective, p).forwarded for p in PROBES] == WITH_COPIES
