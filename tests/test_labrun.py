"""`fwmatrix lab` (fwmatrix/ops/labrun.py): the seed's openings proven with real packets.

The seed runs once per backend (module fixture); every row of the source
document's table must pass, and so must every closed sample, among them the
internet sending to a port forward's target directly at its own address (the
forward rules of a port forward ask for the translation: `ct status dnat`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click
import pytest
from click.testing import CliRunner
from conftest import SEED
from hypothesis import HealthCheck, given, settings
from rich.console import Console

from fwmatrix.cli.lab import COMMANDS
from fwmatrix.compile.ruleset import compile_firewall
from fwmatrix.errors import FwmatrixError
from fwmatrix.compile.intent import build_intent
from fwmatrix.ops.labrun import LabReport, _Judge, lab_markdown, plan_checks, print_lab, run_lab
from fwmatrix.matrix.loader import load_matrix
from strategies import matrix_yaml

SOURCE_ROWS = {  # the source document's table: opening -> its services, part by part
    "operator-https": ["tcp/443"],
    "operator-sip": ["tcp/5060", "tcp/5061", "udp/5060"],
    "operator-rtp": ["udp/10000-30000"],
    "nginx-to-bal": ["tcp/80"],
    "sipproxy-to-cti1": ["tcp/5060", "udp/5060"],
    "rtpproxy-to-msa": ["udp/4000-9999"],
    "cti-to-sipproxy": ["tcp/5060", "udp/5060"],
    "msa-to-rtpproxy": ["udp/10000-30000"],
}
NAT_TARGETS = {"operator-https": "172.16.10.10", "operator-sip": "172.16.10.21", "operator-rtp": "172.16.10.22"}
DIRECT = "directly, without NAT"


def group() -> click.Group:
    return click.Group("fwmatrix", commands={c.name: c for c in COMMANDS})


@pytest.fixture(scope="module")
def seed_reports() -> dict[str, LabReport]:
    from conftest import require_kernel

    require_kernel()
    intent = build_intent(load_matrix(str(SEED)))
    reports = {backend: run_lab(intent, "edge", backend) for backend in ("nftables", "iptables")}
    for report in reports.values():
        print_lab(report, Console(width=220, force_terminal=False))
    return reports


# -- what is probed ----------------------------------------------------------------------------


def test_every_row_of_the_source_document_is_a_check() -> None:
    checks = plan_checks(build_intent(load_matrix(str(SEED))), "edge")
    opened = [c for c in checks if c.kind == "open"]
    assert {name: [c.service for c in opened if c.name == name] for name in SOURCE_ROWS} == SOURCE_ROWS
    for check in opened:
        if check.name in NAT_TARGETS:  # sent to the public address, expected at the NAT target
            assert {(p.dst, p.expect_dst) for p in check.probes} == {("203.0.113.10", NAT_TARGETS[check.name])}
        if check.service.endswith("-30000"):
            assert sorted(p.dport for p in check.probes) == [10000, 30000]


def test_closed_samples_are_closed_in_the_matrix() -> None:
    intent = build_intent(load_matrix(str(SEED)))
    closed = [c for c in plan_checks(intent, "edge") if c.kind == "closed"]
    judge = _Judge(intent.firewalls["edge"])
    assert closed and not any(judge.opens(p) for c in closed for p in c.probes)
    names = " | ".join(c.name for c in closed)
    for expected in ("operator-sip: next port", "dmz-ext → internet: new connection", "operator-https: nginx " + DIRECT,
                     "203.0.113.10: a port nothing forwards", "nginx-to-bal: reversed"):
        assert expected in names
    next_sip = next(c for c in closed if c.name == "operator-sip: next port")
    assert next_sip.service == "tcp/5062"  # 5061 is forwarded too
    assert not any(c.name == "cti-to-sipproxy: reversed" for c in closed)  # sipproxy-to-cti1 opens it


def test_the_internet_host_lies_outside_every_network_of_the_matrix(write_matrix) -> None:
    """The lab's internet client and the firewall's made-up address are computed: outside every
    zone, host, firewall address and literal network of the matrix (a client inside the
    transit zone would be treated as the transit zone by the ruleset), the lab's link nets too."""
    from netaddr import IPAddress

    from fwmatrix.ops.labaddresses import lab_addresses, matrix_networks

    text = "\n".join([
        "fwmatrix: 1", "name: crowded",
        "zones: {internet: any, transit: 198.51.100.0/24, dmz: [203.0.113.0/25, '2001:db8:ffff::/48']}",
        "hosts: {web: [203.0.113.10, '2001:db8:ffff::10'], odd: 192.0.2.1}",
        "firewalls:", "  fw:", "    interfaces: {wan0: internet, tr0: {zone: transit, address: 198.51.100.1}, dmz0: dmz}",
        "    public: 192.0.2.254",
        "openings:",
        "  - {from: internet, to: web, service: tcp/443}",
        "  - {from: 203.0.113.128/26, to: internet, service: tcp/80}",  # a literal network outside every zone
        "  - {from: transit, to: fw, service: tcp/22}",
    ]) + "\n"
    intent = build_intent(load_matrix(write_matrix(text)))
    free = lab_addresses(intent)
    taken = matrix_networks(intent.matrix)
    chosen = [*free.internet.values(), *free.firewall.values()]
    assert len(set(chosen)) == 4 and not any(IPAddress(a) in taken for a in chosen), free
    assert free.internet[4] == "203.0.113.192"  # 198.51.100.0/24 is transit, 203.0.113.0/25 the dmz, .128/26 a literal
    assert free.internet[6] == "2001:db8::1"  # 2001:db8:ffff::7 is in the dmz
    assert free.firewall[4] == "192.0.2.2"  # 192.0.2.254 is the public address, .1 a host
    checks = plan_checks(intent, "fw")
    from_internet = [p for c in checks for p in c.probes if p.iif == "wan0"]
    to_internet = [p for c in checks for p in c.probes if p.oif == "wan0"]
    assert from_internet and to_internet
    assert {p.src for p in from_internet} | {p.dst for p in to_internet} <= {free.internet[4], free.internet[6]}


def test_the_perimeter_lab_sends_from_outside_the_transit_zone() -> None:
    """examples/perimeter's transit zone is 198.51.100.0/29: the old fixed 198.51.100.7 was inside."""
    from conftest import ROOT

    checks = plan_checks(build_intent(load_matrix(str(ROOT / "examples/perimeter/matrix.yaml"))), "perimeter")
    sources = {p.src for c in checks for p in c.probes if p.iif == "wan0"}
    assert sources == {"198.51.100.8"}


# -- the seed, with real packets -----------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_every_opening_of_the_seed_works(seed_reports, backend: str) -> None:
    report = seed_reports[backend]
    opened = report.of_kind("open")
    assert {name: [r.check.service for r in opened if r.check.name == name] for name in SOURCE_ROWS} == SOURCE_ROWS
    failed = [f"{r.check.name} {r.check.service}: {r.detail()}" for r in opened if not r.passed]
    assert not failed, failed
    for r in opened:
        assert all(x.answered for x in r.results)  # handshakes completed, UDP replies came back
        if r.check.name in NAT_TARGETS:
            assert {x.at_oif.dst for x in r.results} == {NAT_TARGETS[r.check.name]}  # landed on the NAT target


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_what_must_stay_closed_stays_closed(seed_reports, backend: str) -> None:
    closed = seed_reports[backend].of_kind("closed")
    assert len(closed) >= 10
    failed = [f"{r.check.name}: {r.detail()}" for r in closed if not r.passed]
    assert not failed, failed


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_the_internet_cannot_reach_a_nat_target_directly(seed_reports, backend: str) -> None:
    direct = [r for r in seed_reports[backend].of_kind("closed") if DIRECT in r.check.name]
    assert len(direct) == 3
    assert all(r.passed for r in direct), [r.detail() for r in direct if not r.passed]


@pytest.mark.kernel
def test_a_missing_opening_fails_its_row(write_matrix) -> None:
    intent = build_intent(load_matrix(str(SEED)))
    text = SEED.read_text()
    without = text.replace("  - name: nginx-to-bal\n    from: nginx\n    to: bal\n    service: http\n", "")
    assert without != text
    other = build_intent(load_matrix(write_matrix(without)))
    report = run_lab(intent, "edge", "nftables", timeout=0.4, ruleset=compile_firewall(other, other.firewalls["edge"]))
    failed = [r for r in report.results if not r.passed]
    assert any(r.check.name == "nginx-to-bal" and r.check.kind == "open" for r in failed)
    row = next(r for r in failed if r.check.name == "nginx-to-bal")
    assert "not seen on any side" in row.detail()
    assert not report.passed


# -- the command --------------------------------------------------------------------------------

SMALL = """fwmatrix: 1
name: small
zones: {lan: 10.1.0.0/16, dmz: 10.2.0.0/24}
hosts: {web: 10.2.0.10, dns: 10.2.0.53}
firewalls:
  fw:
    interfaces: {lan0: lan, dmz0: dmz}
openings:
  - {name: web, from: lan, to: web, service: tcp/443}
  - {name: dns, from: lan, to: dns, service: [udp/53, tcp/53]}
"""


@pytest.mark.kernel
def test_lab_command_prints_the_table_and_exits_0(write_matrix) -> None:
    result = CliRunner().invoke(group(), ["lab", write_matrix(SMALL), "--timeout", "0.4"])
    assert result.exit_code == 0, result.output
    for text in ("lab: matrix small, firewall fw, nftables", "web", "dns", "udp/53", "pass open: handshake completed",
                 "pass open: reply came back", "pass closed", "3/3 opening rows work"):
        assert text in result.output
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert f"-{os.getpid()}-" not in listed  # every namespace is gone


def test_lab_needs_root(monkeypatch, write_matrix) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(group(), ["lab", write_matrix(SMALL)])
    assert result.exit_code == 2
    assert result.output.strip() == "error: fwmatrix lab needs root: it creates network namespaces"


@pytest.mark.kernel
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_lab_deletes_its_namespaces(write_matrix, sig: signal.Signals) -> None:
    code = "import click; from fwmatrix.cli.lab import COMMANDS; click.Group('fwmatrix', commands={c.name: c for c in COMMANDS})()"
    # a long timeout keeps the lab busy in its closed samples long enough to be interrupted
    proc = subprocess.Popen([sys.executable, "-c", code, "lab", write_matrix(SMALL), "--timeout", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mine = f"-{proc.pid}-"

    def namespaces() -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        return [line.split()[0] for line in out.splitlines() if mine in line]

    try:
        deadline = time.monotonic() + 30
        while len(namespaces()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(namespaces()) == 3, "the lab did not come up"
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert namespaces() == []


@pytest.mark.kernel
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=matrix_yaml())
def test_generated_matrices_pass_their_lab(write_matrix, text: str) -> None:
    """Whatever the matrix (IPv6, port forwards with a new port, networks, several firewalls),
    its compiled ruleset lets every opening through and keeps the closed samples closed."""
    try:
        intent = build_intent(load_matrix(write_matrix(text)))
    except FwmatrixError:
        return  # the generator may write a matrix the loader refuses (its own tests cover that)
    for firewall in intent.firewalls:
        for backend in ("nftables", "iptables"):
            report = run_lab(intent, firewall, backend, timeout=0.3)
            assert report.passed, [f"{r.check.name} {r.check.service}: {r.detail()}" for r in report.results if not r.passed]


# -- report formats -----------------------------------------------------------------------------


@pytest.mark.kernel
def test_lab_reports_follow_their_schemas(seed_reports, write_matrix) -> None:
    import json

    import jsonschema
    from test_formats import JUNIT, SARIF, SCHEMAS

    from fwmatrix.report.ci import junit, lab_outcome, sarif

    validator = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "lab.schema.json").read_text()))
    matrix = load_matrix(str(SEED))
    for report in seed_reports.values():
        validator.validate(report.to_json())
        JUNIT.validate(junit([lab_outcome(report, matrix)], "high"))
        SARIF.validate(json.loads(sarif([lab_outcome(report, matrix)])))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(seed_reports["nftables"].to_json() | {"backend": "pf"})


@pytest.mark.kernel
def test_a_failed_check_fails_its_junit_case_and_points_at_its_row(write_matrix) -> None:
    import xml.etree.ElementTree as ET

    from fwmatrix.report.ci import junit, lab_outcome

    intent = build_intent(load_matrix(str(SEED)))
    without = SEED.read_text().replace("  - name: nginx-to-bal\n    from: nginx\n    to: bal\n    service: http\n", "")
    other = build_intent(load_matrix(write_matrix(without)))
    report = run_lab(intent, "edge", "iptables", timeout=0.4, ruleset=compile_firewall(other, other.firewalls["edge"]))
    outcome = lab_outcome(report, intent.matrix)
    (issue,) = outcome.issues
    assert issue.case == "open: nginx-to-bal tcp/80" and issue.where == intent.matrix.openings[3].where
    root = ET.fromstring(junit([outcome], "high"))
    failed = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert failed == ["open: nginx-to-bal tcp/80"] and root.get("failures") == "1"
    assert "| 4 | open | `nginx-to-bal` | nginx → bal | tcp/80 | **FAIL**: " in lab_markdown(report)
    assert lab_markdown(report).startswith("### 🧪 fwmatrix lab: ❌ FAIL")


@pytest.mark.kernel
def test_lab_command_writes_json(write_matrix, tmp_path) -> None:
    import json

    out = tmp_path / "lab.json"
    result = CliRunner().invoke(group(), ["lab", write_matrix(SMALL), "--timeout", "0.3", "--format", "json", "--output", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["firewall"] == "fw"
    assert [(c["kind"], c["name"], c["service"]) for c in data["checks"] if c["kind"] == "open"] == [
        ("open", "web", "tcp/443"), ("open", "dns", "tcp/53"), ("open", "dns", "udp/53")]
