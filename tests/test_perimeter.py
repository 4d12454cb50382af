"""Issue 14, the whole perimeter (examples/perimeter): source NAT, compiled for every backend,
each backend's checker accepting it, and proven with real packets (the internet side sees the
public address, or the firewall's own address for masquerade, as the source)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from fwmatrix.backends import iptables, nftables, pf
from fwmatrix.compile.intent import build_intent
from fwmatrix.compile.ruleset import compile_firewall
from fwmatrix.errors import MatrixError
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
    with pytest.raises(pf.RenderError, match="openbsd dialect only"):
        pf.render(ruleset, "freebsd")


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
    text = EXAMPLE.read_text().replace("    interfaces: {outside0: transit, lan0: lan, guest0: guests}\n",
                                       "    interfaces: {outside0: transit, lan0: lan, guest0: guests}\n    public: 198.51.100.6\n")
    text = text.replace("    snat: perimeter.public\n", "    snat: internal.public\n    # the address is internal's\n")
    path = write_matrix(text.replace("  - name: lan-browsing\n    from: lan", "  - name: lan-browsing\n    from: dmz"))
    with pytest.raises(MatrixError, match="does not cross"):
        build_intent(load_matrix(path))


# -- real packets ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def perimeter_reports(intent) -> dict[str, LabReport]:
    from conftest import require_kernel

    require_kernel()
    reports = {backend: run_lab(intent, "perimeter", backend) for backend in ("nftables", "iptables")}
    for report in reports.values():
        print_lab(report, Console(width=220, force_terminal=False))
    return reports


SNAT_SOURCES = {"lan-browsing": PUBLIC, "guest-browsing": "169.254.0.1"}  # masquerade: the lab's wan0 address


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_lab_proves_source_nat(perimeter_reports, backend: str) -> None:
    report = perimeter_reports[backend]
    assert report.passed, [r.detail() for r in report.results if not r.passed]
    rows = [r for r in report.of_kind("open") if r.check.name in SNAT_SOURCES]
    assert {r.check.service for r in rows if r.check.name == "lan-browsing"} == {"tcp/53", "tcp/80", "tcp/443", "udp/53"}
    for row in rows:
        for result in row.results:
            seen = result.at_oif
            assert seen is not None and seen.src == SNAT_SOURCES[row.check.name], result.outcome()
            assert result.answered, result.outcome()


@pytest.mark.kernel
def test_lab_finds_a_missing_source_nat(intent) -> None:
    """The same firewall compiled without its source NAT: the rows that need it fail (the packets
    leave with their inside source), so the lab's check can fail."""
    fw = intent.firewalls["perimeter"]
    bare = compile_firewall(intent, replace(fw, snats=()))
    report = run_lab(intent, "perimeter", "nftables", ruleset=bare)
    failed = {r.check.name for r in report.results if not r.passed}
    assert failed == set(SNAT_SOURCES)
