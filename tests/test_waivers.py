"""Accepted findings, through the CLI: the matrix's `accept:` list and the audit's
baseline mark findings in every format, fail nothing until they expire, and a
baseline lets only new findings fail."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import xml.etree.ElementTree as ET
from click.testing import CliRunner

from conftest import ROOT, SEED
from fwmatrix.cli import main

DRIFTED = ROOT / "examples" / "drift" / "edge.json"
SCHEMAS = ROOT / "docs" / "schemas"
AUDIT_SCHEMA = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "audit.schema.json").read_text()))
LINT_SCHEMA = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "lint.schema.json").read_text()))
DMZ_OUT = """
  - kind: dmz-to-internet
    rule: inet filter forward handle 18
    reason: nginx fetches its updates from the vendor's mirror
    owner: netops@example.com
    expires: {expires}
"""


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def audit_json(matrix: Path | str, *extra: str) -> tuple[int, dict]:
    code, out = run("audit", str(matrix), "-r", str(DRIFTED), "--format", "json", *extra)
    assert code in (0, 1), out
    report = json.loads(out)
    AUDIT_SCHEMA.validate(report)
    return code, report


def with_accept(tmp_path: Path, entries: str) -> Path:
    path = tmp_path / "matrix.yaml"
    path.write_text(SEED.read_text() + "\naccept:" + entries)
    return path


def test_an_accepted_finding_is_marked_in_every_format_and_fails_nothing(tmp_path: Path) -> None:
    matrix = with_accept(tmp_path, DMZ_OUT.format(expires="2999-12-31"))
    _, before = audit_json(SEED)
    code, report = audit_json(matrix)
    accepted = [f for f in report["findings"] if "accepted" in f]
    assert [f["kind"] for f in accepted] == ["dmz-to-internet"]
    assert accepted[0]["accepted"] == {"reason": "nginx fetches its updates from the vendor's mirror", "owner": "netops@example.com",
                                       "expires": "2999-12-31", "file": str(matrix), "line": SEED.read_text().count("\n") + 3}
    assert report["counts"]["dmz-to-internet"] == 0 and before["counts"]["dmz-to-internet"] == 1
    assert report["accepted"] == 1 and len(report["findings"]) == len(before["findings"])
    # the threshold: medium fails only through other findings; the accepted one alone would pass
    assert run("audit", str(SEED), "-r", str(DRIFTED), "--fail-on", "high")[0] == 1
    code, table = run("audit", str(matrix), "-r", str(DRIFTED))
    assert "ACCEPTED (netops@example.com, until 2999-12-31: nginx fetches" in " ".join(table.split())
    assert "(1 accepted finding not counted)" in table
    _, md = run("audit", str(matrix), "-r", str(DRIFTED), "--format", "markdown")
    assert "ACCEPTED (netops@example.com" in md
    _, sarif = run("audit", str(matrix), "-r", str(DRIFTED), "--format", "sarif")
    results = json.loads(sarif)["runs"][0]["results"]
    suppressed = [r for r in results if "suppressions" in r]
    assert [r["ruleId"] for r in suppressed] == ["dmz-to-internet"]
    assert suppressed[0]["suppressions"] == [{"kind": "external", "status": "accepted",
                                              "justification": "netops@example.com, until 2999-12-31: nginx fetches its updates from the vendor's mirror"}]
    _, junit = run("audit", str(matrix), "-r", str(DRIFTED), "--format", "junit")
    failures = [f.get("type") for f in ET.fromstring(junit).iter("failure")]
    _, junit_before = run("audit", str(SEED), "-r", str(DRIFTED), "--format", "junit")
    assert "dmz-to-internet" not in failures and "dmz-to-internet" in [f.get("type") for f in ET.fromstring(junit_before).iter("failure")]


def test_an_expired_acceptance_brings_the_finding_back(tmp_path: Path) -> None:
    matrix = with_accept(tmp_path, DMZ_OUT.format(expires="2001-01-31"))
    code, report = audit_json(matrix, "--fail-on", "medium")
    (finding,) = [f for f in report["findings"] if f["kind"] == "dmz-to-internet"]
    assert "accepted" not in finding and finding["expired_acceptance"]["expires"] == "2001-01-31"
    assert report["counts"]["dmz-to-internet"] == 1 and report["accepted"] == 0 and code == 1
    _, table = run("audit", str(matrix), "-r", str(DRIFTED))
    assert "acceptance EXPIRED on 2001-01-31" in " ".join(table.split())


def test_baseline_lets_only_new_findings_fail(tmp_path: Path) -> None:
    baseline = tmp_path / "edge.baseline.yaml"
    code, out = run("audit", str(SEED), "-r", str(DRIFTED), "--baseline", str(baseline), "--write-baseline", "--baseline-owner", "netops")
    assert code == 0, out
    code, report = audit_json(SEED, "--baseline", str(baseline))
    assert code == 0 and report["accepted"] == len(report["findings"]) > 10
    assert all(f["accepted"]["owner"] == "netops" for f in report["findings"])
    assert set(report["counts"].values()) == {0}
    # a change of the matrix: the ruleset now forwards what no opening asks for
    changed = tmp_path / "changed.yaml"
    text = SEED.read_text()
    changed.write_text(text[: text.index("  - name: msa-to-rtpproxy")])
    code, report = audit_json(changed, "--baseline", str(baseline))
    standing = [f for f in report["findings"] if "accepted" not in f]
    assert code == 1 and standing and all(f["kind"] == "excess" and "10.20.0.30 → 172.16.20.22" in f["regions"][0] for f in standing), standing
    # a baseline that has expired accepts nothing
    old = tmp_path / "old.yaml"
    assert run("audit", str(SEED), "-r", str(DRIFTED), "--baseline", str(old), "--write-baseline", "--baseline-expires", "2000-01-01")[0] == 1
    code, report = audit_json(SEED, "--baseline", str(old))
    assert code == 1 and report["accepted"] == 0 and all("expired_acceptance" in f for f in report["findings"])


def test_lint_findings_are_accepted_too(write_matrix) -> None:
    base = """
fwmatrix: 1
name: lintme
zones:
  internet: any
  dmz: 172.16.10.0/24
hosts:
  web: 172.16.10.10
firewalls:
  fw:
    interfaces: {eth0: internet, eth1: dmz}
openings:
  - name: web-in
    from: internet
    to: web
    service: tcp/443
  - name: web-updates
    from: web
    to: internet
    service: tcp/443
"""
    plain = write_matrix(base)
    assert run("lint", str(plain))[0] == 1
    accepted = write_matrix(base + """accept:
  - kind: dmz-to-internet
    opening: web-updates
    reason: the web server fetches its updates
    owner: web team
    expires: 2999-01-01
""")
    code, out = run("lint", str(accepted), "--format", "json")
    report = json.loads(out)
    LINT_SCHEMA.validate(report)
    assert code == 0 and report["accepted"] == 1 and [f["accepted"]["owner"] for f in report["findings"]] == ["web team"], out


@pytest.mark.parametrize("entry, message", [
    ("  - {kind: excess, rule: x, owner: me, expires: 2999-01-01}", "needs 'reason'"),
    ("  - {kind: excess, rule: x, reason: why, owner: me, expires: soon}", "'expires' must be a date"),
    ("  - {kind: excess, reason: why, owner: me, expires: 2999-01-01}", "needs at least one of opening, rule, regions, message"),
    ("  - {kind: excesss, rule: x, reason: why, owner: me, expires: 2999-01-01}", "unknown kind 'excesss' (did you mean 'excess'?)"),
    ("  - {kind: excess, rule: x, reason: '', owner: me, expires: 2999-01-01}", "'reason' of an accepted finding is empty"),
])
def test_bad_acceptances_are_refused_at_their_line(tmp_path: Path, entry: str, message: str) -> None:
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(SEED.read_text() + "\naccept:\n" + entry + "\n")
    line = SEED.read_text().count("\n") + 3
    code, out = run("audit", str(matrix), "-r", str(DRIFTED))
    assert code == 2 and out.startswith(f"error: {matrix}:{line}: ") and message in out and len(out.splitlines()) == 1, out


@pytest.mark.parametrize("command", [["check", "--no-kernel"], ["lint"], ["audit", "-r", str(DRIFTED)]])
def test_an_unknown_kind_is_refused_by_check_lint_and_audit_alike(tmp_path: Path, command: list[str]) -> None:
    matrix = tmp_path / "matrix.yaml"
    entry = "  - {kind: reply-blockd, rule: x, reason: why, owner: me, expires: 2999-01-01}"
    matrix.write_text(SEED.read_text() + "\naccept:\n" + entry + "\n")
    line = SEED.read_text().count("\n") + 3
    code, out = run(command[0], str(matrix), *command[1:])
    assert code == 2 and out.startswith(f"error: {matrix}:{line}: accepted finding of unknown kind 'reply-blockd' (did you mean 'reply-blocked'?)"), out
    assert len(out.splitlines()) == 1 and out.count("dmz-to-internet") == 1  # each kind named once
    matrix.write_text(matrix.read_text().replace("reply-blockd", "management-dropped"))  # a lint kind: known to check too
    assert run("check", str(matrix), "--no-kernel")[0] == 0
