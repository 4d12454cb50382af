"""Owner, ticket and expiry of openings and groups, through the CLI: lint reports
what has expired (and what expires soon), reports and `show` carry them, and the
compiled rulesets name the ticket in the rule's comment, sanitised."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import jsonschema
from click.testing import CliRunner

from conftest import ROOT
from fwmatrix.cli import main

LINT_SCHEMA = jsonschema.Draft202012Validator(json.loads((ROOT / "docs" / "schemas" / "lint.schema.json").read_text()))
SOON = (date.today() + timedelta(days=10)).isoformat()
MATRIX = f"""
fwmatrix: 1
name: meta
zones:
  internet: any
  lan: 10.0.0.0/24
  dmz: 10.1.0.0/24
hosts:
  web: 10.1.0.10
  app: 10.0.0.5
  old: 10.0.0.6
groups:
  legacy:
    members: [old]
    owner: ops
    ticket: CHG-77
    expires: 2001-01-01
firewalls:
  fw:
    interfaces: {{eth0: internet, eth1: lan, eth2: dmz}}
openings:
  - name: app-to-web
    from: app
    to: web
    service: tcp/443
    owner: web team
    ticket: 'CHG-1234"; drop'
    expires: {SOON}
  - name: legacy-to-web
    from: legacy
    to: web
    service: tcp/8080
    owner: ops
    expires: 2020-02-02
"""


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_lint_reports_expired_and_expiring(write_matrix) -> None:
    path = write_matrix(MATRIX)
    code, out = run("lint", str(path), "--format", "json")
    report = json.loads(out)
    LINT_SCHEMA.validate(report)
    found = [(f["kind"], f["severity"], f["line"], f.get("opening", {}).get("name") or f["definition"]["name"]) for f in report["findings"]]
    lines = MATRIX.splitlines()
    expires_lines = [i for i, line in enumerate(lines, start=1) if "expires:" in line]
    assert found == [("expired", "medium", expires_lines[0], "legacy"), ("expiring", "info", expires_lines[1], "app-to-web"),
                     ("expired", "medium", expires_lines[2], "legacy-to-web")], found
    assert code == 1
    assert report["findings"][1]["message"] == (f"opening 'app-to-web' (row 1) expires on {SOON} (owner web team, ticket CHG-1234\"; drop), "
                                                "within the 30 days lint looks ahead: is it still needed?")
    opening = report["findings"][1]["opening"]
    assert (opening["owner"], opening["ticket"], opening["expires"]) == ("web team", 'CHG-1234"; drop', SOON)
    # nearer than the window only
    _, out = run("lint", str(path), "--format", "json", "--expiring-within", "5")
    assert "expiring" not in [f["kind"] for f in json.loads(out)["findings"]]


def test_compiled_comments_carry_the_ticket_sanitised(write_matrix, tmp_path: Path) -> None:
    path = write_matrix(MATRIX)
    code, out = run("compile", str(path), "--backend", "all", "--out-dir", str(tmp_path))
    assert code == 0, out
    for name in ("fw.nft", "fw.ipt4", "fw.pf.conf"):
        text = (tmp_path / name).read_text()
        assert "app-to-web (CHG-1234drop)" in text, name
        assert "legacy-to-web (" not in text  # no ticket, no parentheses
    assert run("check", str(path))[0] == 0


def test_show_and_audit_reports_show_them(write_matrix, tmp_path: Path) -> None:
    path = write_matrix(MATRIX)
    code, out = run("show", str(path))
    assert code == 0 and "owner web team, ticket" in " ".join(out.split())
    assert run("compile", str(path), "--backend", "iptables", "--out-dir", str(tmp_path))[0] == 0
    (tmp_path / "fw.ipt4").write_text((tmp_path / "fw.ipt4").read_text().replace("--dport 443", "--dport 444"))
    code, out = run("audit", str(path), "-r", str(tmp_path / "fw.ipt4"), "-r", str(tmp_path / "fw.ipt6"), "--format", "json")
    missing = [f for f in json.loads(out)["findings"] if f["kind"] == "missing"]
    assert missing and missing[0]["opening"]["owner"] == "web team"


def test_a_bad_expiry_is_refused_at_its_line(write_matrix) -> None:
    path = write_matrix(MATRIX.replace("expires: 2020-02-02", "expires: next year"))
    code, out = run("lint", str(path))
    line = MATRIX.splitlines().index("    expires: 2020-02-02") + 1
    assert code == 2 and out.strip() == f"error: {path}:{line}: 'expires' of opening 'legacy-to-web' must be a date written YYYY-MM-DD, not 'next year'"
