"""Kernel agreement for issue 11, items 4 and 6: real packets through a namespace lab.

Chains on the whole path of a forwarded packet — ingress (netdev, inet) on the
in-interface, prerouting, forward, postrouting, egress on the out-interface —
are judged as the kernel runs them (`test_chains_on_the_path_beyond_forward`,
with the helpers of test_kernel_agreement.py); drops in nat chains, which the
kernel may not run, are judged both ways; and neighbour discovery dropped by
the firewall makes IPv6 through an interface impossible, which the audit says
(`nd-blocked`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fwmatrix.audit.evaluate import evaluate, interfaces_of
from fwmatrix.audit.findings import audit
from fwmatrix.backends import iptables
from fwmatrix.compile.intent import build_intent
from fwmatrix.compile.ruleset import compile_intent
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.ops.lab import Lab, Probe
from test_trust_path import DUAL_STACK, IPT_MANGLE_POSTROUTING
from test_kernel_agreement import SEED_IFACES, TIMEOUT, assert_agreement, check_agreement, explain, judge, known_bug_case

pytestmark = pytest.mark.kernel


# -- chains after forward and before prerouting (issue 11, item 4) -----------------------------------
#
# Filter chains on the postrouting hook, ingress and egress chains (netdev, inet) and drops in
# nat prerouting chains: the kernel runs them on a forwarded packet's way, so the evaluator must.

PATH_PROBES = [
    Probe(iif, oif, src, dst, proto, port)
    for iif, oif, src, dst in (
        ("wan0", "dmz0", "198.51.100.7", "172.16.10.10"),
        ("lan0", "dmz0", "10.20.0.30", "172.16.10.10"),
        ("wan0", "lan0", "198.51.100.7", "10.20.0.30"),
        ("lan0", "wan0", "fd00:20::21", "2001:db8:ffff::7"),
        ("wan0", "dmz0", "2001:db8:ffff::7", "fd00:10::10"),
    )
    for proto, port in (("tcp", 443), ("tcp", 22), ("udp", 53))
]

PATH_CHAINS = {
    "postrouting": (
        "table inet post {\n chain post {\n  type filter hook postrouting priority 0; policy accept;\n"
        "  iifname \"wan0\" udp dport 53 drop\n"  # postrouting knows no in-interface: never matches
        "  oifname \"dmz0\" tcp dport 443 drop\n }\n}\n"
    ),
    "postrouting-policy-drop": (
        "table ip post {\n chain post {\n  type filter hook postrouting priority 10; policy drop;\n"
        "  oifname != \"dmz0\" accept\n  tcp dport 22 accept\n }\n}\n"
    ),
    "netdev-ingress": (
        "table netdev edge {\n chain in {\n  type filter hook ingress device \"wan0\" priority 0; policy accept;\n"
        "  tcp dport 443 drop\n  ip6 saddr 2001:db8:ffff::/48 udp dport 53 drop\n }\n}\n"
    ),
    "netdev-ingress-two-devices": (
        "table netdev edge {\n chain in {\n  type filter hook ingress devices = { lan0, wan0 } priority 0; policy accept;\n"
        "  ip saddr 10.20.0.0/16 tcp dport 22 drop\n  ip daddr 10.20.0.30 drop\n }\n}\n"
    ),
    "inet-ingress": (
        "table inet edge {\n chain in {\n  type filter hook ingress device \"lan0\" priority 0; policy accept;\n"
        "  oifname \"dmz0\" drop\n"  # ingress knows no out-interface: never matches
        "  meta l4proto udp drop\n }\n}\n"
    ),
    "netdev-egress": (
        "table netdev edge {\n chain out {\n  type filter hook egress device \"dmz0\" priority 0; policy accept;\n"
        "  tcp dport 22 drop\n }\n}\n"
    ),
}


@pytest.mark.parametrize("case", list(PATH_CHAINS))
def test_chains_on_the_path_beyond_forward(case: str) -> None:
    with Lab(SEED_IFACES, timeout=TIMEOUT) as lab:
        try:
            lab.load_raw_nft(PATH_CHAINS[case])
        except Exception as exc:  # an egress hook needs CONFIG_NETFILTER_EGRESS
            if "egress" in case:
                pytest.skip(f"the kernel refuses an egress chain: {exc}")
            raise
        live = lab.read_nft()
        assert all(c.devices for t in live.tables for c in t.chains if c.hook in ("ingress", "egress")), "devices read back"
        tally = check_agreement(lab, live, PATH_PROBES, f"path {case}")
    assert tally.uncertain == 0, tally.summary()
    assert_agreement(tally)


NAT_DROP = (
    "table ip nat {\n chain pre {\n  type nat hook prerouting priority dstnat; policy accept;\n"
    "  iifname \"wan0\" tcp dport 443 drop\n }\n}\n"
)


@pytest.mark.parametrize("with_dnat", [False, True])
def test_drops_in_a_nat_chain_are_judged_both_ways(with_dnat: bool) -> None:
    # Linux 6.18 runs a nat chain only once the namespace has a nat statement: the same
    # drop drops (with a dnat rule beside it) or not (alone). The evaluator cannot know
    # which, so it must not call those packets forwarded, nor dropped.
    text = NAT_DROP.replace(" }\n}", "  tcp dport 8080 dnat to 172.16.10.10:80\n }\n}") if with_dnat else NAT_DROP
    probe = Probe("wan0", "dmz0", "198.51.100.7", "172.16.10.10", "tcp", 443)
    j, r = known_bug_case(text, probe)
    assert r.delivered is (not with_dnat), explain(j, r)
    assert j.forwarded is None, explain(j, r)


# mangle POSTROUTING drops tcp/22 out of dmz0 (the audit-level case), raw PREROUTING udp from lan0
IPT_MANGLE_AND_RAW = IPT_MANGLE_POSTROUTING + """\
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -i lan0 -p udp -j DROP
COMMIT
"""


def test_iptables_mangle_postrouting_and_raw_drops() -> None:
    with Lab(SEED_IFACES, timeout=TIMEOUT) as lab:
        lab.load_iptables({iptables.FAMILY_SUFFIX[4]: IPT_MANGLE_AND_RAW, iptables.FAMILY_SUFFIX[6]: IPT_MANGLE_AND_RAW})
        tally = check_agreement(lab, lab.read_iptables(), PATH_PROBES, "path iptables mangle/raw")
    assert tally.uncertain == 0, tally.summary()
    assert_agreement(tally)


# -- neighbour discovery dropped by the firewall (issue 11, item 6) --------------------------------------


ND_CASES = {
    # every neighbour solicitation and advertisement for the firewall dropped: IPv6 is dead everywhere
    "nd-dropped": ('table inet host {\n chain input {\n  type filter hook input priority 0; policy drop;\n'
                   '  ct state established,related accept\n }\n}\n', {"internet-to-web", "lan-to-web"}),
    # ND is untracked: `ct state untracked drop` drops all of it
    "untracked-dropped": ('table inet host {\n chain input {\n  type filter hook input priority 0; policy accept;\n'
                          '  ct state untracked drop\n }\n}\n', {"internet-to-web", "lan-to-web"}),
    # (advertisements dropped on one interface only: the firewall still learns hosts from their
    # router solicitations, so the first packets pass; the audit calls that unreliable, not dead)
    "nd-accepted": ('table inet host {\n chain input {\n  type filter hook input priority 0; policy drop;\n'
                    '  ct state established,related accept\n  icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n }\n}\n', set()),
    # accepted only with the hop limit every ND message carries (255, as ufw does): IPv6 works;
    # only with another hop limit: none of it is accepted, IPv6 is dead
    "nd-hoplimit-255": ('table inet host {\n chain input {\n  type filter hook input priority 0; policy drop;\n'
                        '  ct state established,related accept\n  icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept\n }\n}\n', set()),
    "nd-hoplimit-1": ('table inet host {\n chain input {\n  type filter hook input priority 0; policy drop;\n'
                      '  ct state established,related accept\n  icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 1 accept\n }\n}\n',
                      {"internet-to-web", "lan-to-web"}),
}
ND_PROBES = {  # opening -> its IPv6 probe and, for contrast, its IPv4 one
    "internet-to-web": (Probe("wan0", "dmz0", "2001:db8:ffff::7", "fd00:10::10", "tcp", 443), Probe("wan0", "dmz0", "198.51.100.7", "172.16.10.10", "tcp", 443)),
    "lan-to-web": (Probe("lan0", "dmz0", "fd00:20::21", "fd00:10::10", "tcp", 22), Probe("lan0", "dmz0", "10.20.0.21", "172.16.10.10", "tcp", 22)),
}


@pytest.mark.parametrize("case", list(ND_CASES))
def test_ipv6_without_neighbour_discovery(case: str, tmp_path: Path) -> None:
    text, dead = ND_CASES[case]
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(DUAL_STACK)
    intent = build_intent(load_matrix(str(matrix)))
    with Lab(("wan0", "dmz0", "lan0"), timeout=TIMEOUT) as lab:
        lab.load_nft(compile_intent(intent)["edge"])
        lab.fw.run(["nft", "-f", "-"], stdin=text)
        live = lab.read_nft()
        probes = [p for pair in ND_PROBES.values() for p in pair]
        results = dict(zip(probes, lab.run(probes, retries=1)))
    effective = evaluate(live, interfaces_of(live, ["wan0", "dmz0", "lan0"]))
    for name, (v6, v4) in ND_PROBES.items():
        assert results[v4].answered, str(results[v4])  # IPv4 is untouched
        works = bool(results[v6].delivered and results[v6].answered)
        assert works is (name not in dead), f"{case}: {results[v6]}"
        # the evaluator no longer calls it forwarded (uncertain: static neighbour entries would forward it)
        verdict = judge(effective, v6)
        assert verdict.forwarded is (None if name in dead else True), explain(verdict, results[v6])
    report = audit(intent, "edge", live, "lab")
    blocked = {f.opening.name for f in report.findings if f.kind == "nd-blocked" and f.opening and f.level == "high"}
    assert blocked == dead, [f.to_json() for f in report.findings]


@pytest.mark.parametrize("hook", ["egress", "late-postrouting"])
def test_a_source_match_after_source_nat_is_judged_both_ways(hook: str) -> None:
    # masquerade rewrites the source to the firewall's link address on dmz0 (169.254.0.x): a drop
    # of that source at egress, or in postrouting after srcnat, drops what arrived from the internet
    chain = ('table netdev late {\n chain out {\n  type filter hook egress device "dmz0" priority 0; policy accept;\n'
             if hook == "egress" else
             'table ip late {\n chain out {\n  type filter hook postrouting priority 200; policy accept;\n')
    text = (
        'table ip nat {\n chain post {\n  type nat hook postrouting priority srcnat; policy accept;\n'
        '  oifname "dmz0" masquerade\n }\n}\n'
        + chain + '  ip saddr 169.254.0.0/16 tcp dport 443 drop\n }\n}\n'
    )
    j, r = known_bug_case(text, Probe("wan0", "dmz0", "198.51.100.7", "172.16.10.10", "tcp", 443))
    assert not r.delivered, explain(j, r)  # the kernel drops it
    assert j.forwarded is not True, explain(j, r)  # before: "forwarded", judged on the source before masquerade
