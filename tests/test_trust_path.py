"""Issue 11, items 4-6, at the level of the audit: chains on the whole path of a forwarded
packet (postrouting, ingress, egress), address families the input does not cover, and
IPv6 that neighbour discovery dropped by the firewall makes impossible.

What the kernel does with these rulesets is proven with real packets in
tests/test_kernel_agreement.py (the `path` and `neighbour discovery` cases)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fwmatrix.audit.findings import audit, fail
from fwmatrix.backends import iptables, nftables
from fwmatrix.backends.nftables.binding import with_devices
from fwmatrix.compile.intent import build_intent
from fwmatrix.compile.ruleset import compile_intent
from fwmatrix.ir import Ruleset
from fwmatrix.matrix.loader import load_matrix

DUAL_STACK = """\
fwmatrix: 1
name: trust-path
zones:
  internet: any
  dmz:
    networks: [172.16.10.0/24, fd00:10::/64]
  lan:
    networks: [10.20.0.0/16, fd00:20::/64]
hosts:
  web:
    addresses: [172.16.10.10, "fd00:10::10"]
services:
  https: tcp/443
  ssh: tcp/22
firewalls:
  edge:
    interfaces: {wan0: internet, dmz0: dmz, lan0: lan}
openings:
  - name: internet-to-web
    from: internet
    to: web
    service: https
  - name: lan-to-web
    from: lan
    to: web
    service: ssh
"""


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "matrix.yaml"
    path.write_text(DUAL_STACK)
    return path


@pytest.fixture(scope="module")
def compiled(matrix: Path):
    intent = build_intent(load_matrix(str(matrix)))
    return intent, compile_intent(intent)["edge"]


def nft_audit(compiled, extra: str):
    """The compiled ruleset with `extra` tables beside it, read back through nft, audited."""
    intent, ruleset = compiled
    live = nftables.parse_text(nftables.render(ruleset) + "\n" + extra, "extra.nft")
    return audit(intent, "edge", live, "extra.nft")


def found(report) -> list[tuple[str, str, str]]:
    return sorted((f.kind, f.level, f.opening.name if f.opening else "") for f in report.findings)


# -- item 4: chains read but never evaluated ------------------------------------------------------

PATH_DROPS = {
    "postrouting": 'table inet t {\n chain post {\n  type filter hook postrouting priority 0; policy accept;\n  oifname "dmz0" tcp dport 443 drop\n }\n}\n',
    "netdev-ingress": 'table netdev t {\n chain in {\n  type filter hook ingress device "wan0" priority 0; policy accept;\n  tcp dport 443 drop\n }\n}\n',
    "inet-ingress": 'table inet t {\n chain in {\n  type filter hook ingress device "wan0" priority 0; policy drop;\n  tcp dport 22 accept\n }\n}\n',
    "netdev-egress": 'table netdev t {\n chain out {\n  type filter hook egress devices = { dmz0 } priority 0; policy accept;\n  tcp dport 443 drop\n }\n}\n',
}


@pytest.mark.kernel
@pytest.mark.parametrize("case", list(PATH_DROPS))
def test_a_drop_beyond_the_forward_hook_is_a_missing_opening(compiled, case: str) -> None:
    report = nft_audit(compiled, PATH_DROPS[case])
    expected = [("missing", "high", "internet-to-web")]
    if case == "inet-ingress":  # its policy drops neighbour discovery on wan0 too
        expected.append(("nd-blocked", "high", "internet-to-web"))
    assert found(report) == expected, [f.to_json() for f in report.findings]
    assert "not forwarded at all" in report.findings[0].message


@pytest.mark.kernel
def test_interfaces_a_hook_does_not_know_never_match(compiled) -> None:
    # before routing there is no out-interface, at egress no in-interface: `oifname "x"` never
    # matches there (the kernel agrees: tests/test_kernel_agreement.py, inet-ingress)
    extra = (
        'table inet t {\n chain pre {\n  type filter hook prerouting priority -150; policy accept;\n  oifname "dmz0" drop\n }\n}\n'
        'table netdev n {\n chain out {\n  type filter hook egress device "dmz0" priority 0; policy accept;\n  iifname "wan0" drop\n }\n}\n'
    )
    assert nft_audit(compiled, extra).findings == []


def test_an_unnamed_device_is_judged_both_ways(compiled) -> None:
    # nft's JSON before 1.0.7 leaves out an ingress chain's device: any interface may be it
    intent, ruleset = compiled
    extra = {"nftables": [
        {"table": {"family": "netdev", "name": "t"}},
        {"chain": {"family": "netdev", "table": "t", "name": "in", "type": "filter", "hook": "ingress", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "netdev", "table": "t", "chain": "in", "handle": 2, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 443}}, {"drop": None}]}},
    ]}
    live = Ruleset(ruleset.tables + nftables.parse_json(extra).tables)
    report = audit(intent, "edge", live, "listing")
    # on whichever interface it is, it may drop answers to clients that use port 443 too
    assert found(report) == [("missing", "high", "internet-to-web"), ("reply-blocked", "high", "internet-to-web"),
                             ("reply-blocked", "high", "lan-to-web"), ("unmodelled", "medium", "")]
    missing = next(f for f in report.findings if f.kind == "missing")
    assert "depends on rules fwmatrix cannot model" in missing.message
    assert "device" in next(f for f in report.findings if f.kind == "unmodelled").message


def test_devices_come_from_the_text_listing() -> None:
    listing = json.dumps({"nftables": [
        {"chain": {"family": "netdev", "table": "t", "name": "in", "hook": "ingress", "prio": 0}},
        {"chain": {"family": "inet", "table": "x y", "name": "out", "hook": "egress", "prio": 0}},
        {"chain": {"family": "inet", "table": "f", "name": "fwd", "hook": "forward", "prio": 0}},
    ]})
    text = (
        "table netdev t {\n\tchain in {\n\t\ttype filter hook ingress devices = { lan0, wan0 } priority filter; policy accept;\n\t}\n}\n"
        'table inet "x y" {\n\tchain out {\n\t\ttype filter hook egress device "dmz0" priority filter; policy accept;\n\t}\n}\n'
    )
    chains = [item["chain"] for item in json.loads(with_devices(listing, text))["nftables"]]
    assert [c.get("dev") for c in chains] == [["lan0", "wan0"], ["dmz0"], None]


IPT_MANGLE_POSTROUTING = """\
# Generated by iptables-save v1.8.9
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o dmz0 -p tcp -m tcp --dport 22 -j DROP
COMMIT
"""


def test_iptables_mangle_postrouting_drop_is_a_missing_opening(compiled) -> None:
    intent, ruleset = compiled
    files = iptables.render_files(ruleset, mode="full")
    tables = [t for suffix, family in ((".ipt4", 4), (".ipt6", 6)) for t in iptables.parse_save(files[suffix], family, f"edge{suffix}").tables]
    tables += iptables.parse_save(IPT_MANGLE_POSTROUTING, 4, "mangle.ipt4").tables
    report = audit(intent, "edge", Ruleset(tuple(tables)), "iptables")
    assert found(report) == [("missing", "high", "lan-to-web")]
    assert report.findings[0].regions == ("lan0 → dmz0  10.20.0.0/16 → 172.16.10.10  tcp/22  ct new",)


# -- item 5: families absent from the input -------------------------------------------------------


def ipt_files(compiled) -> dict[str, str]:
    return iptables.render_files(compiled[1], mode="full")


def test_an_ipv4_iptables_save_alone_does_not_judge_ipv6(compiled) -> None:
    intent, _ = compiled
    v4 = iptables.parse_save(ipt_files(compiled)[".ipt4"], None, "edge.ipt4")
    assert v4.families == frozenset({4})
    report = audit(intent, "edge", v4, "edge.ipt4")
    assert found(report) == [("not-audited", "info", "")]
    (note,) = report.findings
    assert "no IPv6 ruleset was given (ip6tables-save output)" in note.message
    assert "pass it with a second -r" in note.message
    assert "internet-to-web, lan-to-web" in note.message  # their IPv6 addresses were not checked
    assert not fail(report, "low")


def test_a_lone_ipv4_iptables_save_still_judges_ipv4(compiled) -> None:
    intent, _ = compiled
    text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    report = audit(intent, "edge", iptables.parse_save(text, None, "open.ipt4"), "open.ipt4")
    kinds = {f.kind for f in report.findings}
    assert kinds == {"excess", "dmz-to-internet", "not-audited"}
    assert all("::" not in line for f in report.findings for line in f.regions)  # nothing about IPv6


def test_an_empty_ip6tables_save_is_ipv6_given_and_wide_open(compiled) -> None:
    # given, but with no tables: IPv6 is not filtered at all, and that is judged (fail closed)
    intent, _ = compiled
    v4 = iptables.parse_save(ipt_files(compiled)[".ipt4"], None, "edge.ipt4")
    v6 = iptables.parse_save("# Generated by ip6tables-save v1.8.9 on Sun Dec  6 20:00:00 2026\n", None, "empty6")
    assert v6.families == frozenset({6})
    report = audit(intent, "edge", Ruleset(v4.tables + v6.tables, families=v4.families | v6.families), "both")
    assert "excess" in {f.kind for f in report.findings} and "not-audited" not in {f.kind for f in report.findings}


@pytest.mark.kernel
def test_an_nftables_ruleset_without_ip6_tables_still_judges_ipv6(compiled) -> None:
    # one nftables ruleset is the whole input: a family without tables is not filtered
    intent, _ = compiled
    text = "table ip f {\n chain forward {\n  type filter hook forward priority 0; policy drop;\n }\n}\n"
    report = audit(intent, "edge", nftables.parse_text(text, "v4.nft"), "v4.nft")
    kinds = {f.kind for f in report.findings}
    assert "not-audited" not in kinds and "excess" in kinds


def run(*args: str) -> subprocess.CompletedProcess[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "fwmatrix")
    return subprocess.run([exe, *args], capture_output=True, text=True)


def test_the_cli_says_what_was_not_audited(compiled, matrix: Path, tmp_path: Path) -> None:
    files = ipt_files(compiled)
    for suffix in (".ipt4", ".ipt6"):
        (tmp_path / f"edge{suffix}").write_text(files[suffix])
    alone = run("audit", str(matrix), "-r", str(tmp_path / "edge.ipt4"), "--fail-on", "low")
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert "Not audited" in alone.stdout and "ip6tables-save" in alone.stdout
    both = run("audit", str(matrix), "-r", str(tmp_path / "edge.ipt4"), "-r", str(tmp_path / "edge.ipt6"), "--format", "json")
    assert both.returncode == 0 and json.loads(both.stdout)["findings"] == []


# -- item 6: IPv6 that cannot work ---------------------------------------------------------------

NO_ND = 'table inet host {\n chain input {\n  type filter hook input priority 0; policy drop;\n  ct state established,related accept\n  iifname "lan0" tcp dport 22 accept\n }\n}\n'
WITH_ND = 'table inet host {\n chain input {\n  type filter hook input priority 0; policy drop;\n  ct state established,related accept\n  icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n }\n}\n'
ADVERT_DROPPED_ON_WAN = 'table inet host {\n chain input {\n  type filter hook input priority 0; policy accept;\n  iifname "wan0" icmpv6 type nd-neighbor-advert drop\n }\n}\n'
MAYBE_ND = 'table inet host {\n chain input {\n  type filter hook input priority 0; policy drop;\n  meta mark 0x1 accept\n }\n}\n'


@pytest.mark.kernel
def test_nd_dropped_everywhere_makes_every_ipv6_opening_impossible(compiled) -> None:
    report = nft_audit(compiled, NO_ND)
    assert found(report) == [("nd-blocked", "high", "internet-to-web"), ("nd-blocked", "high", "lan-to-web")]
    web = report.findings[0]
    assert "cannot work" in web.message
    assert "it can learn the address of no host on dmz0" in web.message and "no host on wan0" in web.message
    assert web.regions == ("wan0 → dmz0  ::/0 → fd00:10::10  tcp/443  ct new",)  # its IPv6 part only


@pytest.mark.kernel
def test_excess_ipv6_through_a_dead_interface_is_still_reported(compiled) -> None:
    # static neighbour entries would forward it: said, at medium, never hidden
    intent, _ = compiled
    wide_open = 'table inet open {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n }\n}\n'
    report = audit(intent, "edge", nftables.parse_text(NO_ND + wide_open, "open.nft"), "open.nft")
    excess = {f.level: f for f in report.findings if f.kind == "excess"}
    assert "static neighbour entries" in excess["medium"].message
    assert "wan0 → dmz0  ::/0 → fd00:10::10  udp+dccp+sctp+udplite  ct new" in excess["medium"].regions
    # forwarded for sure: IPv4, and IPv6 between interfaces the firewall does not know to be dead
    assert all("::" not in line or line.startswith("lo/*other* → lo/*other*") for line in excess["high"].regions)
    assert [f for f in report.findings if f.kind in ("missing", "reply-blocked")] == []  # nd-blocked says it


@pytest.mark.kernel
@pytest.mark.parametrize("text", [WITH_ND, MAYBE_ND], ids=["nd-accepted", "nd-maybe-accepted"])
def test_nd_accepted_or_maybe_accepted_is_no_finding(compiled, text: str) -> None:
    # a claim that IPv6 is dead must be certain: a rule fwmatrix cannot model may accept ND
    assert [f.kind for f in nft_audit(compiled, text).findings if f.kind == "nd-blocked"] == []


@pytest.mark.kernel
@pytest.mark.parametrize("iface", ["wan0", "dmz0"])
def test_advertisements_dropped_on_one_interface_is_unreliable(compiled, iface: str) -> None:
    # the firewall still learns those hosts from their solicitations and router solicitations,
    # until it must confirm them: in the lab the first packets pass, so this is no certain failure
    report = nft_audit(compiled, ADVERT_DROPPED_ON_WAN.replace("wan0", iface))
    expected = {"wan0": ["internet-to-web"], "dmz0": ["internet-to-web", "lan-to-web"]}[iface]
    assert found(report) == [("nd-blocked", "medium", name) for name in expected]
    assert "is unreliable" in report.findings[0].message
    assert f"neighbour discovery with the hosts on {iface} works only in part (their advertisements are dropped)" in report.findings[0].message


@pytest.mark.kernel
def test_router_solicitations_alone_dropped_is_no_finding(compiled) -> None:
    text = ADVERT_DROPPED_ON_WAN.replace("nd-neighbor-advert", "nd-router-solicit")
    assert nft_audit(compiled, text).findings == []


IP6_INPUT = """\
# Generated by ip6tables-save v1.8.9
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
{nd}COMMIT
"""


@pytest.mark.parametrize("nd, severity", [
    ("", "high"),
    ("-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT\n-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-advertisement -j ACCEPT\n", None),
    ("-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT\n", "medium"),  # advertisements still dropped
    ("-A INPUT -p ipv6-icmp -j ACCEPT\n", None),
])
def test_ip6tables_input_without_nd(compiled, nd: str, severity: str | None) -> None:
    intent, ruleset = compiled
    files = ipt_files(compiled)
    tables = iptables.parse_save(files[".ipt4"], 4, "edge.ipt4").tables + iptables.parse_save(files[".ipt6"], 6, "edge.ipt6").tables
    tables += iptables.parse_save(IP6_INPUT.replace("{nd}", nd), 6, "input.ipt6").tables
    got = [(f.kind, f.level) for f in audit(intent, "edge", Ruleset(tables), "iptables").findings]
    assert got == ([("nd-blocked", severity)] * 2 if severity else [])


def test_an_ipv4_only_matrix_hears_nothing_of_nd(tmp_path: Path) -> None:
    from conftest import SEED

    intent = build_intent(load_matrix(str(SEED)))
    ruleset = compile_intent(intent)["edge"]
    tables = iptables.parse_save(IP6_INPUT.replace("{nd}", ""), 6, "input.ipt6").tables
    assert audit(intent, "edge", Ruleset(ruleset.tables + tables), "x").findings == []
