"""Issue 14, the whole perimeter (examples/perimeter), compiled for every backend, each
backend's checker accepting it, and proven with real packets: source NAT (the internet side
sees the public address, or the firewall's own address for masquerade, as the source), the
firewalls' own services (an input chain, policy drop: the firewall answers what is declared,
and nothing else), and management accesses placed on every firewall they cross."""

from __future__ import annotations

import re

from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from fwmatrix.backends import iptables, nftables, pf
from fwmatrix.compile.intent import build_intent
from fwmatrix.compile.ruleset import compile_firewall
from fwmatrix.errors import MatrixError
from fwmatrix.ir import Ruleset
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.ops.labrun import LabReport, print_lab, run_lab

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "perimeter" / "matrix.yaml"
PUBLIC = "203.0.113.10"


@pytest.fixture(scope="module")
def intent():
    return build_intent(load_matrix(str(EXAMPLE)))


def test_source_nat_is_placed_on_the_firewall_that_owns_the_address(intent) -> None:
    perimeter, internal = intent.firewalls["perimeter"], intent.firewalls["internal"]
    assert not internal.snats  # the LAN's traffic is translated once, by the perimeter
    by_opening = {(s.opening.name, s.out_iface, s.family): s.address for s in perimeter.snats}
    assert by_opening == {("lan-browsing", "wan0", 4): load_matrix(str(EXAMPLE)).firewalls["perimeter"].public["public"],
                          ("guest-browsing", "wan0", 4): None}


def test_every_backend_writes_the_source_nat(intent) -> None:
    ruleset = compile_firewall(intent, intent.firewalls["perimeter"])
    nft = nftables.render(ruleset)
    assert "type nat hook postrouting priority srcnat; policy accept;" in nft
    assert f"@snat_wan0_v4_net16_any snat ip to {PUBLIC}" in nft
    assert "@masq_wan0_v4_net16_any masquerade" in nft
    ipt4 = iptables.render_files(ruleset)[".ipt4"]
    assert f"-A FWM-POSTROUTING -s 10.40.0.0/16 -o wan0 -p udp -m udp --dport 53 -m comment --comment lan-browsing -j SNAT --to-source {PUBLIC}" in ipt4
    assert "-A FWM-POSTROUTING -s 10.41.0.0/16 -o wan0 -p tcp -m multiport --dports 80,443 -m comment --comment guest-browsing -j MASQUERADE" in ipt4
    conf = pf.render(ruleset, "openbsd")
    assert f"pass out quick on $wan0_if inet proto udp from 10.40.0.0/16 to any port 53 nat-to {PUBLIC} received-on $transit0_if" in conf
    assert "nat-to ($wan0_if) received-on $transit0_if" in conf
    assert pf.check(conf) == []
    freebsd = pf.render(ruleset, "freebsd")  # nat rules before the filter rules, each tagging what it translates
    assert pf.check(freebsd, "freebsd") == []
    assert f"nat on $wan0_if inet proto udp from 10.40.0.0/16 to any port 53 tag fwm_snat_3 tagged fwm_in_transit0 -> {PUBLIC}" in freebsd
    assert "nat on $wan0_if inet proto tcp from 10.41.0.0/16 to any port { 80 443 } tag fwm_snat_1 tagged fwm_in_transit0 -> ($wan0_if)" in freebsd
    assert 'pass out quick on $wan0_if inet proto udp from any to any port 53 tagged fwm_snat_3 label "lan-browsing"' in freebsd
    assert freebsd.index("nat on ") < freebsd.index("block drop log all")


def test_without_snat_nothing_is_written_for_it(intent) -> None:
    """The seed's shape stays: no postrouting chain when no opening asks for source NAT."""
    fw = intent.firewalls["internal"]
    text = nftables.render(compile_firewall(intent, fw))
    assert "postrouting" not in text and "snat" not in text and "masquerade" not in text


def test_pf_refuses_an_accept_partly_inside_a_source_nat(write_matrix) -> None:
    """pf translates on the pass rule: a pass rule only partly inside the translated packets
    would translate others than netfilter, so it is not written."""
    matrix = write_matrix(EXAMPLE.read_text() + "  - {name: wide, from: lan, to: internet, service: tcp/443-444}\n")
    intent = build_intent(load_matrix(matrix))
    with pytest.raises(pf.RenderError, match="partly inside a source NAT"):
        pf.render(compile_firewall(intent, intent.firewalls["perimeter"]), "openbsd")


@pytest.mark.parametrize(("change", "line", "words"), [
    ("    snat: perimeter.public\n", "    snat: web\n", "is not a public address of a firewall"),
    ("    snat: perimeter.public\n", "    snat: [a, b]\n", "must be a string"),
    ("    nat: web\n", "    nat: web\n    snat: masquerade\n", "both 'nat' and 'snat'"),
])
def test_bad_snat_names_its_line(write_matrix, change: str, line: str, words: str) -> None:
    text = EXAMPLE.read_text()
    path = write_matrix(text.replace(change, line))
    with pytest.raises(MatrixError) as caught:
        build_intent(load_matrix(path))
    expected = text.replace(change, line).splitlines().index(line.splitlines()[-1]) + 1
    assert words in caught.value.message
    assert caught.value.line == expected


def test_snat_to_a_firewall_off_the_path_is_refused(write_matrix) -> None:
    text = EXAMPLE.read_text().replace("      guest0: {zone: guests, address: 10.41.0.1}\n",
                                       "      guest0: {zone: guests, address: 10.41.0.1}\n    public: 198.51.100.6\n")
    text = text.replace("    snat: perimeter.public\n", "    snat: internal.public\n    # the address is internal's\n")
    path = write_matrix(text.replace("  - name: lan-browsing\n    from: lan", "  - name: lan-browsing\n    from: dmz"))
    with pytest.raises(MatrixError, match="does not cross"):
        build_intent(load_matrix(path))


# -- real packets ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def perimeter_reports(intent) -> dict[tuple[str, str], LabReport]:
    from conftest import require_kernel

    require_kernel()
    reports = {(fw, backend): run_lab(intent, fw, backend) for fw in ("perimeter", "internal") for backend in ("nftables", "iptables")}
    for report in reports.values():
        print_lab(report, Console(width=220, force_terminal=False))
    return reports


# family -> opening -> the source its probes must arrive with on the internet side; masquerade: the
# firewall's own address on the lab's wan0 link; the LAN's IPv6 leaves untranslated (snat to an IPv4 address)
SNAT_SOURCES = {4: {"lan-browsing": PUBLIC, "guest-browsing": "169.254.0.1"},
                6: {"lan-browsing": "2001:db8:40::64", "guest-browsing": "fe80::1"}}


def dual_stack() -> str:
    """The example with an IPv6 network in every zone, IPv6 addresses for the hosts and the
    firewalls' interfaces: both families through the same rows."""
    text = EXAMPLE.read_text()
    for old, new in (("dmz: 192.0.2.0/25", "dmz: [192.0.2.0/25, 2001:db8:d::/64]"), ("transit: 198.51.100.0/29", "transit: [198.51.100.0/29, 2001:db8:7::/64]"),
                     ("lan: 10.40.0.0/16", "lan: [10.40.0.0/16, 2001:db8:40::/48]"), ("guests: 10.41.0.0/16", "guests: [10.41.0.0/16, 2001:db8:41::/48]"),
                     ("web: 192.0.2.10", "web: [192.0.2.10, 2001:db8:d::10]"), ("app: 10.40.1.10", "app: [10.40.1.10, 2001:db8:40:1::10]"),
                     ("admin-ws: 10.40.9.5", "admin-ws: [10.40.9.5, 2001:db8:40:9::5]"),
                     ("address: 203.0.113.2}", "address: [203.0.113.2, 2001:db8:ff::2]}"), ("address: 192.0.2.1}", "address: [192.0.2.1, 2001:db8:d::1]}"),
                     ("address: 198.51.100.1}", "address: [198.51.100.1, 2001:db8:7::1]}"), ("address: 198.51.100.2}", "address: [198.51.100.2, 2001:db8:7::2]}"),
                     ("address: 10.40.0.1}", "address: [10.40.0.1, 2001:db8:40::1]}"), ("address: 10.41.0.1}", "address: [10.41.0.1, 2001:db8:41::1]}")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_lab_proves_source_nat(perimeter_reports, backend: str) -> None:
    report = perimeter_reports[("perimeter", backend)]
    assert report.passed, [r.detail() for r in report.results if not r.passed]
    rows = [r for r in report.of_kind("open") if r.check.name in SNAT_SOURCES[4]]
    assert {r.check.service for r in rows if r.check.name == "lan-browsing"} == {"tcp/53", "tcp/80", "tcp/443", "udp/53"}
    _assert_sources(rows, (4,))


def _assert_sources(rows, families: tuple[int, ...]) -> None:
    seen_families = set()
    for row in rows:
        for result in row.results:
            seen, family = result.at_oif, result.probe.family
            seen_families.add((row.check.name, family))
            assert seen is not None and seen.src == SNAT_SOURCES[family][row.check.name], result.outcome()
            assert result.answered, result.outcome()
    assert seen_families == {(name, family) for family in families for name in SNAT_SOURCES[family]}  # every family probed


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_lab_proves_ipv6_source_nat_own_services_and_management(write_matrix, backend: str) -> None:
    """Dual stack: the same rows in IPv6 with real packets — the guests masqueraded (the firewall's
    address on the outgoing link), the LAN's IPv6 untranslated (its snat address is IPv4), the
    firewalls' own services and the admins' SSH answered at their IPv6 addresses, the
    perimeter's management forwarded by the internal firewall."""
    intent = build_intent(load_matrix(write_matrix(dual_stack())))
    reports = {fw: run_lab(intent, fw, backend) for fw in ("perimeter", "internal")}
    for fw, report in reports.items():
        assert report.passed, [f"{r.check.name}: {r.detail()}" for r in report.results if not r.passed]
        v6 = [res for r in report.of_kind("open") if r.check.name in OWN_ROWS[fw] for res in r.results if res.probe.family == 6]
        assert {res.probe.dst for res in v6} >= ({"2001:db8:40::1"} if fw == "internal" else {"2001:db8:7::1"}), v6
        assert all(res.probe.oif == "(firewall)" and res.answered for res in v6)
    _assert_sources([r for r in reports["perimeter"].of_kind("open") if r.check.name in SNAT_SOURCES[4]], (4, 6))
    (crossing,) = [r for r in reports["internal"].of_kind("open") if r.check.name == "perimeter-management-1"]
    assert {res.probe.family for res in crossing.results} == {4, 6}
    assert all(res.at_oif is not None and res.at_oif.side == "outside0" and res.answered for res in crossing.results)


@pytest.mark.kernel
def test_lab_finds_a_missing_source_nat(intent) -> None:
    """The same firewall compiled without its source NAT: the rows that need it fail (the packets
    leave with their inside source), so the lab's check can fail."""
    fw = intent.firewalls["perimeter"]
    bare = compile_firewall(intent, replace(fw, snats=()))
    report = run_lab(intent, "perimeter", "nftables", ruleset=bare)
    failed = {r.check.name for r in report.results if not r.passed}
    assert failed == set(SNAT_SOURCES[4])


# -- the firewalls' own services, and management across firewalls ----------------------


def test_own_services_and_management_are_placed(intent) -> None:
    internal, perimeter = intent.firewalls["internal"], intent.firewalls["perimeter"]
    assert internal.filters_input and perimeter.filters_input
    inputs = {(i.opening.name, i.in_iface, i.management) for i in internal.inputs}
    assert inputs == {("lan-dns", "lan0", False), ("lan-dns", "guest0", False), ("internal-management-1", "lan0", True)}
    assert {(i.opening.name, i.in_iface) for i in perimeter.inputs} == {("perimeter-ntp", "transit0"), ("perimeter-management-1", "transit0")}
    # the perimeter's management crosses the internal firewall: forwarded there to the perimeter's addresses
    ssh = [f for f in internal.flows if f.opening.name == "perimeter-management-1"]
    assert [(f.in_iface, f.out_iface, [str(d) for d in f.destinations]) for f in ssh] == [
        ("lan0", "outside0", ["203.0.113.2/32", "192.0.2.1/32", "198.51.100.1/32", "203.0.113.10/32"])]  # every address of the perimeter
    assert not intent.warnings


def test_every_backend_writes_the_input_chain(intent, write_matrix) -> None:
    ruleset = compile_firewall(intent, intent.firewalls["internal"])
    nft = nftables.render(ruleset)
    chain = nft[nft.index("chain input {"):nft.index("}", nft.index("chain input {"))]
    assert chain.splitlines()[1:6] == [
        "\t\ttype filter hook input priority filter; policy drop;",
        '\t\tiifname "lo" accept comment "loopback of the firewall"',
        '\t\tct state established,related accept comment "replies pass by connection tracking"',
        "\t\tct state invalid drop",
        '\t\tmeta l4proto ipv6-icmp accept comment "ICMPv6: neighbour discovery, packet too big"',
    ]
    assert "10.40.9.5 . 10.40.0.1 . tcp . 22 comment \"internal-management-1\"" in nft
    ipt4 = iptables.render_files(ruleset)[".ipt4"]
    assert ":INPUT DROP [0:0]" in ipt4
    assert "-A FWM-INPUT -s 10.40.9.5/32 -d 10.40.0.1/32 -i lan0 -p tcp -m tcp --dport 22 -m comment --comment internal-management-1 -j ACCEPT" in ipt4
    for dialect in pf.DIALECTS:
        conf = pf.render(ruleset, dialect)
        assert pf.check(conf) == [], dialect
        lines = conf.splitlines()
        block = lines.index("block drop in quick from any to self")
        services = [i for i, line in enumerate(lines) if "to self port" in line or "to 10.40.0.1 port 22" in line]
        forwards = [i for i, line in enumerate(lines) if line.startswith("pass in quick") and "lan-browsing" in line]
        assert services and max(services) < block < min(forwards), dialect  # services, then the rest to self dropped, then forwarding
    # a firewall without own services keeps its input as it was: no chain
    bare = replace(intent.firewalls["internal"], inputs=())
    assert "hook input" not in nftables.render(compile_firewall(intent, bare))


@pytest.mark.kernel
def test_every_checker_accepts_the_example() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "fwmatrix", "check", "-b", "all", str(EXAMPLE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for firewall in ("internal", "perimeter"):
        for backend in ("nftables", "iptables", "pf"):
            assert any(line.strip().startswith(f"✓ {backend}: {firewall}.") for line in proc.stdout.splitlines()), proc.stdout


def test_check_counts_source_nat_and_inputs() -> None:
    """`check` says, per firewall, its SNAT mappings, own services and management accesses (per
    interface and family), as it says its DNAT mappings."""
    import json
    import subprocess
    import sys

    run = [sys.executable, "-m", "fwmatrix", "check", "--no-kernel", str(EXAMPLE)]
    data = json.loads(subprocess.run(run + ["--format", "json"], capture_output=True, text=True, check=True).stdout)
    counts = {fw["name"]: (fw["dnats"], fw["snats"], fw["inputs"], fw["management"]) for fw in data["firewalls"]}
    # perimeter: www's port forward; lan and guests leave by wan0; NTP on transit0; the admins' ssh on transit0
    # internal: DNS/NTP for lan0 and guest0; the admins' ssh on lan0
    assert counts == {"perimeter": (1, 2, 1, 1), "internal": (0, 0, 2, 1)}
    text = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert "firewall 'perimeter': 4 flows on 3 interface pairs, 1 DNAT mapping, 2 SNAT mappings, 1 own-service input, 1 management input" in text


def _perimeter_without_addresses() -> str:
    """The example with no address of the perimeter known (no public one, none on its interfaces)."""
    text = EXAMPLE.read_text().replace("      wan0: {zone: internet, address: 203.0.113.2}\n      dmz0: {zone: dmz, address: 192.0.2.1}\n"
                                       "      transit0: {zone: transit, address: 198.51.100.1}\n    public: 203.0.113.10\n",
                                       "      wan0: internet\n      dmz0: dmz\n      transit0: transit\n")
    text = text.replace("    to: perimeter.public\n    service: https\n    nat: web\n", "    to: web\n    service: https\n")
    return text.replace("    snat: perimeter.public\n", "    snat: masquerade\n").replace("    to: perimeter.transit0\n", "    to: 198.51.100.1\n")


def test_management_a_firewall_on_the_way_cannot_forward_is_flagged(write_matrix) -> None:
    """No address of the perimeter is known: the internal firewall, on the admins' way, cannot
    open their access, so it would drop it. `check` says so (intent warning)."""
    text = _perimeter_without_addresses()
    intent = build_intent(load_matrix(write_matrix(text)))
    (warning,) = [w.message for w in intent.warnings]
    assert "perimeter management access #1 crosses firewall 'internal', which drops it" in warning
    assert not any(f.opening.name == "perimeter-management-1" for f in intent.firewalls["internal"].flows)


@pytest.mark.parametrize(("old", "new", "words"), [
    ("    to: perimeter.transit0\n", "    to: perimeter.dmz1\n", "firewall 'perimeter' has no public address named 'dmz1'"),
    ("    from: [lan, guests]\n", "    from: internal\n", "comes from firewall 'internal' itself"),
    ("    to: internal\n", "    to: [internal, app]\n", "goes to a firewall itself and to other places"),
])
def test_bad_own_service_names_its_line(write_matrix, old: str, new: str, words: str) -> None:
    text = EXAMPLE.read_text().replace(old, new)
    with pytest.raises(MatrixError) as caught:
        build_intent(load_matrix(write_matrix(text)))
    assert words in caught.value.message
    assert caught.value.line == text.splitlines().index(new.rstrip("\n")) + 1


OWN_ROWS = {"internal": {"lan-dns", "internal-management-1"}, "perimeter": {"perimeter-ntp", "perimeter-management-1"}}


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
@pytest.mark.parametrize("firewall", ["internal", "perimeter"])
def test_lab_proves_own_services_and_management(perimeter_reports, firewall: str, backend: str) -> None:
    report = perimeter_reports[(firewall, backend)]
    assert report.passed, [f"{r.check.name}: {r.detail()}" for r in report.results if not r.passed]
    own = [r for r in report.of_kind("open") if r.check.name in OWN_ROWS[firewall]]
    assert {r.check.name for r in own} == OWN_ROWS[firewall]
    assert all(res.probe.oif == "(firewall)" and res.answered for r in own for res in r.results)
    # the firewall answers nothing else: a port nothing opens, from behind every interface
    itself = [r for r in report.of_kind("closed") if r.check.name == f"{firewall} itself: a port nothing opens"]
    assert len(itself) == 3 and all(r.passed for r in itself)
    if firewall == "internal":  # the perimeter's management crosses it, forwarded
        (crossing,) = [r for r in report.of_kind("open") if r.check.name == "perimeter-management-1"]
        assert all(res.at_oif is not None and res.at_oif.side == "outside0" and res.answered for res in crossing.results)


@pytest.mark.kernel
def test_lab_finds_a_management_access_the_input_chain_drops(intent) -> None:
    """The internal firewall compiled without its management access in the input chain: the
    admins' SSH row fails (nothing answers), every other row still passes."""
    fw = intent.firewalls["internal"]
    cut = compile_firewall(intent, replace(fw, inputs=tuple(i for i in fw.inputs if not i.management)))
    report = run_lab(intent, "internal", "iptables", ruleset=cut)
    assert {r.check.name for r in report.results if not r.passed} == {"internal-management-1"}


def test_lint_flags_the_dropped_management_access_and_counts_management_as_use(write_matrix) -> None:
    from fwmatrix.review.lint import lint

    clean = lint(build_intent(load_matrix(str(EXAMPLE))))
    assert not [f for f in clean.findings if f.kind in ("unused", "management-dropped")], clean.findings  # admin-ws, ssh: used by management
    text = _perimeter_without_addresses()
    report = lint(build_intent(load_matrix(write_matrix(text))))
    (dropped,) = [f for f in report.findings if f.kind == "management-dropped"]
    assert dropped.level == "high" and "crosses firewall 'internal'" in dropped.message
    assert dropped.where.line == text.splitlines().index("      - from: admin-ws") + 1


# -- logging and counters ------------------------------------------------------------------


def test_freebsd_logs_an_opening_on_its_pass_in_rules(intent) -> None:
    """FreeBSD's pf has no match rules: an opening's log is `log` on the pass in rules of its
    packets (pf logs the packet that creates the state), and on nothing else."""
    conf = pf.render(compile_firewall(intent, intent.firewalls["internal"]), "freebsd")
    assert pf.check(conf, "freebsd") == []
    logged = [line for line in conf.splitlines() if " log " in line]
    assert logged == ['pass in log quick on $guest0_if inet proto tcp from 10.41.0.0/16 to any port { 80 443 } tag fwm_in_guest0 label "guest-browsing"']
    assert "match " not in conf


def test_every_backend_writes_the_logs(intent) -> None:
    ruleset = compile_firewall(intent, intent.firewalls["perimeter"])
    nft = nftables.render(ruleset)
    assert 'counter limit rate 10/minute log prefix "fwm drop forward: " comment "log what the policy drops"\n\t}' in nft  # last in forward
    assert 'counter limit rate 10/minute log prefix "fwm drop input: "' in nft
    assert '@log_wan0_to_dmz0_v4_dnat_any_host counter limit rate 10/minute log prefix "fwm www: "' in nft
    ipt4 = iptables.render_files(ruleset)[".ipt4"]
    assert '-A FWM-FORWARD -m comment --comment "log what the policy drops" -m limit --limit 10/min -j LOG --log-prefix "fwm drop forward: "' in ipt4
    conf = pf.render(ruleset, "openbsd")
    assert "block drop log all" in conf and "block drop in log quick from any to self" in conf
    assert 'match in log on $wan0_if inet proto tcp from any to 192.0.2.10 port 443 tagged fwm_dnat label "www"' in conf
    assert pf.check(conf) == []
    # internal logs guest-browsing (an opening with log: true) but not its drops (no log on the firewall)
    internal = nftables.render(compile_firewall(intent, intent.firewalls["internal"]))
    assert 'log prefix "fwm guest-browsing: "' in internal and "fwm drop" not in internal


def test_log_must_be_true_or_false(write_matrix) -> None:
    text = EXAMPLE.read_text().replace("    log: true                  # log (rate-limited) and count its new", '    log: "yes"                 # log (rate-limited) and count its new')
    with pytest.raises(MatrixError) as caught:
        load_matrix(write_matrix(text))
    assert "must be true or false" in caught.value.message
    assert caught.value.line == text.splitlines().index('    log: "yes"                 # log (rate-limited) and count its new connections') + 1


def _counter(listing: str, prefix: str) -> int:
    """The packets counted by the rule that logs with this prefix (`nft list ruleset` text)."""
    line = next(line for line in listing.splitlines() if f'log prefix "{prefix}"' in line)
    return int(line.split("counter packets ")[1].split()[0])


@pytest.mark.kernel
def test_log_rules_count_in_the_kernel(intent) -> None:
    """Loaded into a kernel: a dropped connection is counted by the drop log rule, a port forward
    with log: true by its own; nothing else is. (A network namespace's netfilter log messages
    do not reach the kernel log unless net.netfilter.nf_log_all_netns is set: the counters are
    what a test can read.)"""
    from fwmatrix.ops.lab import Lab, Probe

    fw = intent.firewalls["perimeter"]
    with Lab(list(fw.firewall.interfaces)) as lab:
        lab.load_nft(compile_firewall(intent, fw))
        before = lab.fw.run(["nft", "list", "ruleset"]).stdout
        assert _counter(before, "fwm drop forward: ") == 0 and _counter(before, "fwm www: ") == 0
        www, closed = lab.run([Probe("wan0", "dmz0", "198.51.100.7", PUBLIC, "tcp", 443, "192.0.2.10"),
                               Probe("wan0", "dmz0", "198.51.100.7", "192.0.2.10", "tcp", 444)])
        assert www.arrived and not closed.seen
        after = lab.fw.run(["nft", "list", "ruleset"]).stdout
        assert _counter(after, "fwm www: ") == 1  # the SYN; the rest of the connection passes by state first
        assert _counter(after, "fwm drop forward: ") >= 1
        assert _counter(after, "fwm guest-browsing: ") == 0


# -- the audit: source NAT and the input chain -------------------------------------------


DRIFTED = EXAMPLE.parent / "drifted" / "perimeter.nft"


@pytest.mark.parametrize("firewall", ["perimeter", "internal"])
def test_compiled_rulesets_audit_clean(intent, firewall: str) -> None:
    from fwmatrix.audit.findings import audit

    report = audit(intent, firewall, compile_firewall(intent, intent.firewalls[firewall]), "compiled")
    assert report.findings == [], [f.to_json() for f in report.findings]


@pytest.mark.kernel
@pytest.mark.parametrize("firewall", ["perimeter", "internal"])
def test_compiled_rulesets_read_back_audit_clean(intent, firewall: str) -> None:
    """The rendered files as `fwmatrix audit` reads them (nft through nft, iptables-save text),
    the translations and the input chain read back too."""
    from fwmatrix.audit.findings import audit

    ruleset = compile_firewall(intent, intent.firewalls[firewall])
    files = iptables.render_files(ruleset, mode="full")
    parsed = [iptables.parse_save(files[suffix], family, suffix) for family, suffix in ((4, ".ipt4"), (6, ".ipt6"))]
    for live in [nftables.parse_text(nftables.render(ruleset)), Ruleset(parsed[0].tables + parsed[1].tables)]:
        report = audit(intent, firewall, live, "read back")
        assert report.findings == [], [f.to_json() for f in report.findings]


@pytest.mark.kernel
def test_audit_of_the_drifted_twin_finds_each_planted_drift(intent) -> None:
    """examples/perimeter/drifted/perimeter.nft: the compiled ruleset with five drifts by hand."""
    from fwmatrix.audit.findings import audit

    report = audit(intent, "perimeter", nftables.parse_text(DRIFTED.read_text()), str(DRIFTED))
    found = {(f.kind, f.opening.name if f.opening else "", (f.regions or ("",))[0]) for f in report.findings}
    assert ("missing", "perimeter-ntp", "transit0 → (firewall)  10.40.0.0/16 → 198.51.100.1  udp/123  ct new") in found  # drift 1
    (ssh,) = [f for f in report.findings if f.kind == "excess"]  # drift 2
    assert ssh.regions == ("wan0 → (firewall)  ::/0 → ::/0  tcp/22  ct new", "wan0 → (firewall)  0.0.0.0/0 → 0.0.0.0/0  tcp/22  ct new")
    nat = {f.opening.name if f.opening else f.rule: f.regions for f in report.findings if f.kind == "nat"}
    assert all("translated to 203.0.113.99, not 203.0.113.10" in line for line in nat["lan-browsing"])  # drift 3
    # drift 4: judged for what the forward chain may pass out of wan0 (from transit0 only): what it drops is never translated
    assert nat["guest-browsing"] == ("transit0 → wan0  10.41.0.0/16 → 0.0.0.0/0  tcp/80,443  ct new,new dnat: not translated (the matrix says masquerade)",)
    (extra,) = [regions for name, regions in nat.items() if name not in ("lan-browsing", "guest-browsing")]  # drift 5
    assert extra == ("wan0 → dmz0  0.0.0.0/0 → 192.0.2.10  tcp/443  ct new dnat",)
    assert len(report.findings) == 5


def test_snat_is_never_needed_for_replies_from_the_dmz(intent) -> None:
    """The seed's rule stays true with source NAT: the DMZ's answers to the internet need no
    opening and no translation, and the audit asks for none."""
    from fwmatrix.audit.findings import audit

    fw = intent.firewalls["perimeter"]
    assert not [s for s in fw.snats if any(str(n).startswith("192.0.2.") for n in s.sources)]
    assert not [f for f in fw.flows if f.in_iface == "dmz0" and f.out_iface == "wan0"]
    report = audit(intent, "perimeter", compile_firewall(intent, fw), "compiled")
    assert not [f for f in report.findings if f.kind in ("nat", "reply-blocked")]


def test_audit_finds_iptables_drifts_of_snat_and_input(intent) -> None:
    """The same judgement from iptables-save text: a wrong --to-source, a MASQUERADE gone, and an
    INPUT accept nobody asked for."""
    from fwmatrix.audit.findings import audit

    ipt4 = iptables.render_files(compile_firewall(intent, intent.firewalls["perimeter"]), mode="full")[".ipt4"]
    masquerade = next(line for line in ipt4.splitlines() if line.endswith("-j MASQUERADE"))
    drifted = (ipt4.replace("--to-source 203.0.113.10", "--to-source 203.0.113.99").replace(masquerade + "\n", "")
               .replace("-A INPUT -p ipv6-icmp", "-A INPUT -i wan0 -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -p ipv6-icmp"))
    assert drifted.count("\n") == ipt4.count("\n") and "203.0.113.99" in drifted
    report = audit(intent, "perimeter", iptables.parse_save(drifted, 4, "drifted.ipt4"), "drifted.ipt4")  # IPv4 only: not-audited says so
    kinds = sorted((f.kind, f.opening.name if f.opening else "") for f in report.findings if f.kind != "not-audited")
    assert kinds == [("excess", ""), ("nat", "guest-browsing"), ("nat", "lan-browsing")], [f.to_json() for f in report.findings]


def test_audit_follows_the_own_chains_jump_to_the_source_nat(intent, tmp_path) -> None:
    """The default iptables output (own chains: POSTROUTING -j FWM-POSTROUTING, the jump apply
    adds) audits clean as compiled, and a wrong --to-source in FWM-POSTROUTING is a nat finding:
    the source NAT judgement follows the jump (it took it for an unknown translation)."""
    import json

    from click.testing import CliRunner

    from fwmatrix.cli import main

    files = iptables.render_files(compile_firewall(intent, intent.firewalls["perimeter"]))
    for drift in ("", "203.0.113.99"):
        for suffix, text in files.items():
            (tmp_path / f"p{suffix}").write_text(text.replace(f"--to-source {PUBLIC}", f"--to-source {drift}") if drift else text)
        run = CliRunner().invoke(main, ["audit", str(EXAMPLE), "-f", "perimeter", "-r", str(tmp_path / "p.ipt4"), "-r", str(tmp_path / "p.ipt6"),
                                        "--format", "json"])
        findings = json.loads(run.stdout)["findings"]
        if not drift:
            assert findings == [], findings
        else:
            assert [(f["kind"], f["opening"]["name"]) for f in findings] == [("nat", "lan-browsing")], findings
            assert all("translated to 203.0.113.99, not 203.0.113.10" in r for r in findings[0]["regions"])


def test_show_places_own_services_source_nat_and_management_on_the_way() -> None:
    from click.testing import CliRunner

    from fwmatrix.cli import main

    result = CliRunner().invoke(main, ["show", str(EXAMPLE)], terminal_width=240)
    assert result.exit_code == 0, result.output
    openings_table, management_table = result.output.split("management access to the firewalls")
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in openings_table.splitlines() if line.startswith("│")]
    placed = {}
    current = None
    for cells in rows:
        if len(cells) == 8 and cells[0].isdigit():
            current = cells[1]
        if len(cells) == 8 and current is not None and cells[6]:
            placed.setdefault(current, []).append(cells[6])
    assert placed["lan-dns"] == ["internal: guest0→itself", "internal: lan0→itself"]
    assert placed["perimeter-ntp"] == ["internal: lan0→outside0", "perimeter: transit0→itself"]
    assert "perimeter: source NAT out of wan0" in placed["lan-browsing"]
    accesses = [[cell.strip() for cell in line.split("│")[1:-1]] for line in management_table.splitlines() if line.startswith("│")]
    (access,) = [cells for cells in accesses if cells[0] == "perimeter" and cells[1] == "1"]
    assert access[5] == "transit0" and access[7] == "internal: lan0→outside0"  # arrives on transit0, forwarded by internal


def _pf_parse(intent, firewall: str, text: str, addresses: tuple[str, ...] = ()) -> Ruleset:
    """A pf.conf as `fwmatrix audit -r FILE --pf-anchor local=EMPTY [--pf-interface ...]` reads it:
    the matrix gives every interface's address, so `self` is known without the flag."""
    facts = dict(pf.firewall_facts(intent.matrix, firewall), anchors={"local": ""})
    facts["addresses"] = {**facts["addresses"], **pf.interface_options(addresses, ())["addresses"]}  # type: ignore[dict-item]
    return pf.parse_ruleset(text, f"{firewall}.pf.conf", **facts)  # type: ignore[arg-type]


def _pf_audit(intent, firewall: str, text: str, addresses: tuple[str, ...] = ()):
    from fwmatrix.audit.findings import audit

    return audit(intent, firewall, _pf_parse(intent, firewall, text, addresses), f"{firewall}.pf.conf")


@pytest.mark.parametrize("dialect", pf.DIALECTS)
@pytest.mark.parametrize("firewall", ["internal", "perimeter"])
def test_pf_reads_back_its_source_nat_and_input_chain(intent, firewall: str, dialect: str) -> None:
    """nat-to on the pass-out rules (freebsd: the nat rules, and the pass out rules of what they
    tag) becomes the postrouting snat/masquerade, `pass in ... to self` the input chain: the
    compiled pf.conf audits clean, nothing left not-audited."""
    conf = pf.render(compile_firewall(intent, intent.firewalls[firewall]), dialect)
    report = _pf_audit(intent, firewall, conf)
    assert report.findings == [], [f.to_json() for f in report.findings]
    (table,) = _pf_parse(intent, firewall, conf).tables
    hooks = {c.hook for c in table.chains}
    assert "input" in hooks and ("postrouting" in hooks) == (firewall == "perimeter")


def test_pf_own_services_without_the_firewalls_addresses_are_said_not_audited(write_matrix) -> None:
    """`self` not known (the matrix gives wan0 and dmz0 no address): no input chain is read, and
    the audit says so once, naming the interfaces and the flag, rather than judging the own
    services against a guess. Source NAT is still judged. With the flag, it is audited."""
    text = EXAMPLE.read_text().replace("      wan0: {zone: internet, address: 203.0.113.2}\n      dmz0: {zone: dmz, address: 192.0.2.1}\n",
                                       "      wan0: internet\n      dmz0: dmz\n")
    intent = build_intent(load_matrix(write_matrix(text)))
    conf = pf.render(compile_firewall(intent, intent.firewalls["perimeter"]), "openbsd")
    (finding,) = _pf_audit(intent, "perimeter", conf).findings
    assert finding.kind == "not-audited" and "perimeter-ntp, perimeter-management-1" in finding.message
    assert "the matrix gives no address to wan0, dmz0" in finding.message and "--pf-interface wan0=ADDR/PREFIX" in finding.message
    assert _pf_audit(intent, "perimeter", conf, ("wan0=203.0.113.2/24", "dmz0=192.0.2.1/25")).findings == []


def test_audit_finds_freebsd_drifts_of_snat(intent) -> None:
    """FreeBSD's nat rules read back: a wrong address and a masquerade turned into an address are
    nat findings; a nat rule gone leaves its tag unset, so the guests are not forwarded at all
    (pf passes only what the rule tagged); a pass in to self port 22, excess."""
    conf = pf.render(compile_firewall(intent, intent.firewalls["perimeter"]), "freebsd")
    masquerade = next(line for line in conf.splitlines() if line.endswith("-> ($wan0_if)"))
    drifted = conf.replace(f"-> {PUBLIC}", "-> 203.0.113.99").replace("-> ($wan0_if)", f"-> {PUBLIC}").replace(
        "block drop in log quick from any to self", "pass in quick on $wan0_if proto tcp from any to self port 22\nblock drop in log quick from any to self")
    report = _pf_audit(intent, "perimeter", drifted)
    kinds = sorted((f.kind, f.opening.name if f.opening else "") for f in report.findings)
    assert kinds == [("excess", ""), ("nat", "guest-browsing"), ("nat", "lan-browsing")], [f.to_json() for f in report.findings]
    nat = {f.opening.name: f.regions for f in report.findings if f.kind == "nat"}
    assert all("translated to 203.0.113.99, not 203.0.113.10" in line for line in nat["lan-browsing"])
    assert all(f"translated to {PUBLIC}, not masquerade" in line for line in nat["guest-browsing"])
    gone = _pf_audit(intent, "perimeter", conf.replace(masquerade + "\n", ""))
    assert [(f.kind, f.opening.name) for f in gone.findings] == [("missing", "guest-browsing")], [f.to_json() for f in gone.findings]


def test_audit_finds_pf_drifts_of_snat_and_input(intent) -> None:
    """The pf twin of the iptables drifts: a wrong nat-to address, a nat-to gone, and a `pass in
    ... to self port 22` nobody asked for give the findings the nftables and iptables twins give."""
    from fwmatrix.audit.findings import audit

    ruleset = compile_firewall(intent, intent.firewalls["perimeter"])
    conf = pf.render(ruleset, "openbsd")
    drifted = (conf.replace("nat-to 203.0.113.10", "nat-to 203.0.113.99").replace(" nat-to ($wan0_if)", "")
               .replace("block drop in log quick from any to self", "pass in quick on $wan0_if proto tcp from any to self port 22\n"
                        "block drop in log quick from any to self"))
    assert drifted.count("203.0.113.99") == 2 and "nat-to ($wan0_if)" not in drifted
    report = _pf_audit(intent, "perimeter", drifted)
    kinds = sorted((f.kind, f.opening.name if f.opening else "") for f in report.findings)
    assert kinds == [("excess", ""), ("nat", "guest-browsing"), ("nat", "lan-browsing")], [f.to_json() for f in report.findings]
    nat = {f.opening.name: f.regions for f in report.findings if f.kind == "nat"}
    assert all("translated to 203.0.113.99, not 203.0.113.10" in line for line in nat["lan-browsing"])
    assert nat["guest-browsing"] == ("transit0 → wan0  10.41.0.0/16 → 0.0.0.0/0  tcp/80,443  ct new,new dnat: not translated (the matrix says masquerade)",)
    (ssh,) = [f for f in report.findings if f.kind == "excess"]
    assert all(region.startswith("wan0 → (firewall)") and "tcp/22" in region for region in ssh.regions), ssh.regions
    assert ssh.rule == f"perimeter.pf.conf:{drifted.splitlines().index('pass in quick on $wan0_if proto tcp from any to self port 22') + 1}"
    # the same drifts in nftables: the same findings
    nft = nftables.render(ruleset)
    masquerade = next(line for line in nft.splitlines() if line.endswith('masquerade comment "source NAT out of wan0"'))
    input_policy = "type filter hook input priority filter; policy drop;\n"
    nft_drifted = (nft.replace("snat ip to 203.0.113.10", "snat ip to 203.0.113.99").replace(masquerade + "\n", "")
                   .replace(input_policy, input_policy + '\t\tiifname "wan0" tcp dport 22 accept\n'))
    assert nft_drifted.count("\n") == nft.count("\n") and "203.0.113.99" in nft_drifted
    nft_report = audit(intent, "perimeter", nftables.parse_text(nft_drifted), "nft")
    assert sorted((f.kind, f.opening.name if f.opening else "") for f in nft_report.findings) == kinds, [f.to_json() for f in nft_report.findings]


def _old_style_nat(intent, out_from: str, target: str = "203.0.113.10") -> str:
    """The compiled pf.conf with FreeBSD's `nat on IF ... -> ADDRESS` / `-> (IF)` (before the
    filter rules) in place of the pass-out rules' nat-to, the pass-out rules matching the source
    as it arrived (`out_from="original"`) or as translated (`"translated"`)."""
    conf = pf.render(compile_firewall(intent, intent.firewalls["perimeter"]), "openbsd")
    lines, nats = [], []
    for line in conf.splitlines():
        found = re.match(r"(pass out quick on \$wan0_if inet proto \w+ from )(\S+)( to any port .*?) nat-to (\S+) (received-on .*)$", line)
        if found:
            to = found[4].replace("203.0.113.10", target)
            nats.append(f"{found[1].replace('pass out quick on', 'nat on')}{found[2]}{found[3]} -> {to}")
            line = f"{found[1]}{found[2] if out_from == 'original' else to}{found[3]} {found[5]}"
        lines.append(line)
    assert len(nats) == 3 and any(n.endswith("-> ($wan0_if)") for n in nats)
    first = next(i for i, line in enumerate(lines) if line.startswith(("pass", "block")))
    return "\n".join(lines[:first] + nats + lines[first:]) + "\n"


def test_pf_old_style_nat_is_judged_as_the_matrix_source_nat(intent) -> None:
    """Old-style nat translates before the filter rules, which see the translated source (pf.conf(5),
    TRANSLATION): pass-out rules from the translated source (203.0.113.10, ($wan0_if), wan0's
    address known from the matrix) audit clean, and a wrong address is found as for nftables.
    Pass-out rules from the source as it arrived never match what the nat rules translated: pf
    forwards none of it, and the audit says so (missing), exactly."""
    report = _pf_audit(intent, "perimeter", _old_style_nat(intent, "translated"))
    assert report.findings == [], [f.to_json() for f in report.findings]
    drifted = _pf_audit(intent, "perimeter", _old_style_nat(intent, "translated", "203.0.113.99")).findings
    (nat,) = [f for f in drifted if f.kind == "nat"]
    assert nat.opening.name == "lan-browsing" and all("translated to 203.0.113.99, not 203.0.113.10" in r for r in nat.regions)
    untranslated = _pf_audit(intent, "perimeter", _old_style_nat(intent, "original")).findings
    assert {f.opening.name for f in untranslated if f.kind == "missing"} >= {"lan-browsing", "guest-browsing"}
    assert [f for f in untranslated if f.kind in ("unmodelled", "nat")] == []


def test_pf_source_nat_fwmatrix_cannot_follow_is_a_nat_finding(intent) -> None:
    """A `match out ... nat-to` translates before the pass rules decide, and a later rule may
    replace it: not followed, so the translation of what it matches is unknown (judged a `nat`
    finding), never taken as right."""
    conf = pf.render(compile_firewall(intent, intent.firewalls["perimeter"]), "openbsd")
    lan = 'pass out quick on $wan0_if inet proto tcp from 10.40.0.0/16 to any port { 53 80 443 } nat-to 203.0.113.10'
    assert lan in conf
    drifted = conf.replace(lan, "match out on $wan0_if inet from 10.40.0.0/16 nat-to 203.0.113.10\n" + lan.replace(" nat-to 203.0.113.10", ""))
    report = _pf_audit(intent, "perimeter", drifted)
    (nat,) = [f for f in report.findings if f.kind == "nat"]
    assert nat.opening.name == "lan-browsing" and all("translated as fwmatrix cannot tell" in line for line in nat.regions)
