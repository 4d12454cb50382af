"""How text output reads anywhere: tables as wide as COLUMNS or the terminal, never a word cut
in two; colour on a terminal only, NO_COLOR and --color."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import jsonschema
import pytest
from click.testing import CliRunner

from conftest import ROOT, SEED
from fwmatrix.cli import main

DRIFT = ROOT / "examples" / "drift" / "edge.nft"
ESCAPE = "\x1b["
BORDERS = "│┃║|"


def invoke(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(main, list(args), env={"NO_COLOR": None, "COLUMNS": None, **(env or {})})
    assert result.exit_code in (0, 1), result.output
    return result.output


def cell_words(output: str) -> set[str]:
    """Every word inside a table's cells (the borders taken out)."""
    return {word for line in output.splitlines() for word in re.split(f"[\\s{BORDERS}━─┏┓┗┛┡┩└┘├┤┼╇╈┳┻┃]+", line) if word}


def widest(output: str) -> int:
    """The widest table line (prose lines are soft-wrapped: left whole for the terminal to wrap)."""
    return max(len(line) for line in output.splitlines() if line[:1] in "┏┃┡│├└")


@pytest.mark.parametrize("columns", ["40", "80", "120"])
def test_show_never_cuts_a_name_or_a_port(columns: str) -> None:
    out = invoke("show", str(SEED), env={"COLUMNS": columns})
    words = cell_words(out)
    for whole in ("operator-rtp", "operator-sip", "sipproxy-to-cti1", "(udp/10000-30000)", "tcp/5061,", "sipproxy.ext", "wan0→dmz0"):
        assert whole in words, (whole, out)
    for piece in ("-rtp", "tcp/506", "operator", "sipproxy-to-"):
        assert piece not in words, (piece, out)


def test_show_honours_columns_when_piped() -> None:
    wide, narrow = invoke("show", str(SEED), env={"COLUMNS": "200"}), invoke("show", str(SEED), env={"COLUMNS": "120"})
    assert widest(narrow) <= 120 < widest(wide)
    assert widest(invoke("show", str(SEED))) == widest(wide)  # a pipe without COLUMNS: 200


def test_a_table_grows_wider_than_columns_rather_than_cut_a_word() -> None:
    out = invoke("show", str(SEED), env={"COLUMNS": "40"})
    longest_words = len("sipproxy-to-cti1") + len("(udp/10000-30000)") + len("sipproxy.ext")  # three of the eight columns
    assert widest(out) > longest_words > 40


@pytest.mark.parametrize("args", [
    ("audit", str(SEED), "--firewall", "edge", "--ruleset", str(DRIFT)),
    ("lint", str(SEED)),
    ("diff", str(SEED), str(ROOT / "examples" / "two-firewalls" / "matrix.yaml")),
])
def test_every_table_fits_columns_or_keeps_its_words(args: tuple[str, ...]) -> None:
    wide = invoke(*args, env={"COLUMNS": "250"})
    narrow = invoke(*args, env={"COLUMNS": "70"})
    assert cell_words(narrow) <= cell_words(wide) | {"…"}, cell_words(narrow) - cell_words(wide)


def test_output_to_a_file_honours_columns(tmp_path) -> None:
    report = tmp_path / "audit.txt"
    invoke("audit", str(SEED), "-f", "edge", "-r", str(DRIFT), "-o", str(report), env={"COLUMNS": "90"})
    text = report.read_text()
    assert "operator-sip" in cell_words(text) and widest(text) < 200


def test_user_text_with_brackets_prints_as_written(write_matrix) -> None:
    path = write_matrix(SEED.read_text().replace("note: NAT verso NGINX (NAT to NGINX)", "note: '[bold]kept[/] [red] as written'"))
    out = invoke("show", path)
    assert "[bold]kept[/] [red] as written" in out


# -- colour ------------------------------------------------------------------------------------


def test_piped_output_has_no_escape_codes() -> None:
    assert ESCAPE not in invoke("lint", str(SEED))
    assert ESCAPE not in invoke("--color", "never", "lint", str(SEED))


def test_color_always_colours_a_pipe_even_with_no_color() -> None:
    assert ESCAPE in invoke("--color", "always", "lint", str(SEED))
    assert ESCAPE in invoke("--color", "always", "lint", str(SEED), env={"NO_COLOR": "1"})


def on_a_terminal(*args: str, env: dict[str, str]) -> str:
    """The command's output when its standard output is a terminal (a pseudo-terminal)."""
    leader, follower = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS")} | {"TERM": "xterm-256color"} | env
    proc = subprocess.Popen([sys.executable, "-m", "fwmatrix", *args], stdout=follower, stderr=subprocess.PIPE, env=environ)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait() in (0, 1), proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode()


def test_a_terminal_is_coloured_unless_no_color_says_otherwise() -> None:
    assert ESCAPE in on_a_terminal("lint", str(SEED), env={})
    assert ESCAPE not in on_a_terminal("lint", str(SEED), env={"NO_COLOR": "1"})
    assert ESCAPE in on_a_terminal("lint", str(SEED), env={"NO_COLOR": ""})  # set but empty: no effect
    assert ESCAPE not in on_a_terminal("--color", "never", "lint", str(SEED), env={})


# -- --format compact: one line per finding ------------------------------------------------------


def test_audit_compact_is_one_line_per_finding_with_its_packets() -> None:
    args = ("audit", str(SEED), "-f", "edge", "-r", str(DRIFT))
    report = json.loads(invoke(*args, "--format", "json"))
    lines = invoke(*args, "--format", "compact", env={"COLUMNS": "60"}).splitlines()  # never wrapped
    assert lines[0].startswith(report["verdict"])
    assert len(lines) == 1 + len(report["findings"])
    for line, finding in zip(lines[1:], report["findings"]):  # in the report's order
        assert line.startswith("  ") and line.split()[:2] == [finding["kind"], finding["severity"]]
        assert finding["message"] in line
        if finding.get("rule"):
            assert f"live rule: {finding['rule']}" in line
        if finding.get("regions"):
            assert finding["regions"][0] in line


def test_lint_and_diff_compact_name_the_matrix_line(tmp_path) -> None:
    two = str(ROOT / "examples" / "two-firewalls" / "matrix.yaml")
    lint = invoke("lint", two, "--format", "compact").splitlines()
    assert lint[1].split()[:3] == ["no-firewall", "medium", f"{two}:81:"]
    out = tmp_path / "diff.txt"
    invoke("diff", str(SEED), two, "--format", "compact", "-o", str(out))
    lines = out.read_text().splitlines()
    review = json.loads(invoke("diff", str(SEED), two, "--format", "json"))
    assert lines[0] == review["summary"]
    assert any(line.startswith("  removed  info  opening 'operator-sip' removed on firewall edge") for line in lines)


def test_the_readme_and_docs_show_real_compact_output(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the paths as the docs write them
    readme = (ROOT / "README.md").read_text()
    audit = invoke("audit", "matrices/contact-highway-7.yaml", "--ruleset", "examples/drift/edge.nft", "--format", "compact")
    assert f"```\n{audit}```" in readme
    lint = invoke("lint", "examples/two-firewalls/matrix.yaml", "--format", "compact")
    assert f"--format compact\n{lint}```" in (ROOT / "docs" / "reports.md").read_text()


# -- JSON findings: their regions as data ---------------------------------------------------------

AUDIT_SCHEMA = jsonschema.Draft202012Validator(json.loads((ROOT / "docs" / "schemas" / "audit.schema.json").read_text()))


def read_back(region: str, packets: dict) -> str:
    """The readable line, written again from the fields alone (space.Space.describe's form)."""
    parts = []
    if packets["in"] is not None or packets["out"] is not None:
        parts.append(f"{'/'.join(packets['in'] or ['any'])} → {'/'.join(packets['out'] or ['any'])}")
    parts.append(f"{', '.join(packets['source'])} → {', '.join(packets['destination'])}")
    protocols = "+".join(packets["protocols"]) if packets["protocols"] is not None else "any protocol"
    ports = ",".join(str(a) if a == b else f"{a}-{b}" for a, b in packets["ports"] or [])
    parts.append(f"{protocols}/{ports}" if ports else protocols)
    if packets["state"] is not None:
        parts.append("ct " + ",".join(packets["state"]))
    return "  ".join(parts) + (f": {packets['note']}" if "note" in packets else "")


def test_audit_json_findings_carry_their_regions_as_data() -> None:
    report = json.loads(invoke("audit", str(SEED), "-f", "edge", "-r", str(DRIFT), "--format", "json"))
    AUDIT_SCHEMA.validate(report)
    with_regions = [f for f in report["findings"] if f.get("regions")]
    assert len(with_regions) >= 15
    for finding in with_regions:
        assert len(finding["packets"]) == len(finding["regions"])
        for region, packets in zip(finding["regions"], finding["packets"]):
            assert read_back(region, packets) == region
    missing = next(f for f in report["findings"] if f["kind"] == "missing")
    assert missing["packets"] == [{"in": ["wan0"], "out": ["dmz0"], "family": 4, "source": ["0.0.0.0/0"], "destination": ["172.16.10.21"],
                                   "protocols": ["tcp"], "ports": [[5061, 5061]], "state": ["new dnat"]}]


def test_source_nat_regions_carry_what_the_finding_says_of_them(tmp_path) -> None:
    perimeter = str(ROOT / "examples" / "perimeter" / "matrix.yaml")
    nft = invoke("compile", perimeter, "--firewall", "perimeter")
    drifted = tmp_path / "drifted.nft"
    drifted.write_text(nft.replace("snat ip to 203.0.113.10", "snat ip to 203.0.113.99"))
    report = json.loads(invoke("audit", perimeter, "-f", "perimeter", "-r", str(drifted), "--format", "json"))
    AUDIT_SCHEMA.validate(report)
    notes = [(region, packets) for f in report["findings"] if f["kind"] == "nat" for region, packets in zip(f["regions"], f["packets"])]
    assert notes and all(p["note"].startswith("translated to 203.0.113.99, not 203.0.113.10") for _, p in notes)
    assert all(read_back(region, packets) == region for region, packets in notes)


def test_the_schema_refuses_packets_that_are_not_regions() -> None:
    report = json.loads(invoke("audit", str(SEED), "-f", "edge", "-r", str(DRIFT), "--format", "json"))
    packets = next(f for f in report["findings"] if f.get("packets"))["packets"][0]
    for bad in ({"ports": [[0, 70000]]}, {"state": ["new translated"]}, {"family": 5}, {"source": []}, {"protocol": ["tcp"]}):
        broken = json.loads(json.dumps(report))
        next(f for f in broken["findings"] if f.get("packets"))["packets"][0] = packets | bad
        with pytest.raises(jsonschema.ValidationError):
            AUDIT_SCHEMA.validate(broken)
