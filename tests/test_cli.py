"""The command line as a user meets it: exit codes, messages, files written whole or not at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import ROOT, SEED, SMALL
from fwmatrix.cli import main

TWO = ROOT / "examples" / "two-firewalls" / "matrix.yaml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    exe = os.path.join(os.path.dirname(sys.executable), "fwmatrix")
    return subprocess.run([exe, *args], capture_output=True, text=True)


@pytest.mark.parametrize("command", [[], ["compile"], ["check"], ["show"]])
def test_help_everywhere(command: list[str]) -> None:
    result = CliRunner().invoke(main, command + ["--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_compile_to_stdout_is_the_nft_script() -> None:
    proc = run("compile", str(SEED))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("#!/usr/sbin/nft -f\n")
    assert "table inet fwmatrix {" in proc.stdout


@pytest.mark.parametrize("args", [["--version"], ["compile", str(SEED)], ["compile", str(SEED), "--firewall", "nope"]])
def test_commands_that_print_nothing_through_rich_never_import_it(args: list[str]) -> None:
    """rich.console is a fifth of every command's start-up: imported only when a console is made."""
    probe = ("import sys\nfrom fwmatrix.cli import main\ntry:\n    main(prog_name='fwmatrix')\nfinally:\n"
             "    print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich'), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
    assert proc.stderr.splitlines()[-1] == "[]", proc.stderr
    assert proc.returncode == (2 if "nope" in args else 0)


DRIFT = ROOT / "examples" / "drift"


@pytest.mark.parametrize("args", [
    ["audit", str(SEED), "-r", str(DRIFT / "edge.json"), "--format", "json"],
    ["audit", str(SEED), "-r", str(DRIFT / "edge.json"), "--format", "markdown"],
    ["lint", str(SEED), "--format", "json"],
])
def test_reports_for_tools_never_import_rich(args: list[str]) -> None:
    """JSON and Markdown are written without a console: neither rich nor JUnit and SARIF's module is imported
    (they were, at the top of report/text.py and report/ci.py, for every audit)."""
    probe = ("import sys\nfrom fwmatrix.cli import main\ntry:\n    main(prog_name='fwmatrix')\nfinally:\n"
             "    print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich' or m == 'fwmatrix.report.ci' and 'lint' not in sys.argv),"
             " file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
    assert proc.stderr.splitlines()[-1] == "[]", proc.stderr
    assert proc.returncode in (0, 1) and proc.stdout.strip(), proc.stderr


def test_compile_to_a_directory_writes_one_file_per_firewall(tmp_path) -> None:
    proc = run("compile", str(TWO), "--out-dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["internal.nft", "perimeter.nft"]
    proc = run("compile", str(TWO), "--firewall", "internal", "--out-dir", str(tmp_path / "one"))
    assert sorted(os.listdir(tmp_path / "one")) == ["internal.nft"]


def test_compile_dash_o_still_writes_the_directory_and_says_out_dir(tmp_path) -> None:
    """-o was compile's directory; every other command's -o is a file: it works, deprecated, one line."""
    old = run("compile", str(TWO), "-o", str(tmp_path / "old"))
    assert old.returncode == 0, old.stderr
    assert sorted(os.listdir(tmp_path / "old")) == ["internal.nft", "perimeter.nft"]
    warning, *wrote = old.stderr.splitlines()
    assert warning == f"warning: compile -o is deprecated: use --out-dir {tmp_path / 'old'} (-o names a file for every other command)"
    assert all(line.startswith("wrote ") for line in wrote) and len(wrote) == 2
    new = run("compile", str(TWO), "--out-dir", str(tmp_path / "new"))
    assert new.stderr.splitlines() == wrote_lines(tmp_path / "new", ["internal.nft", "perimeter.nft"])
    to_stdout = run("compile", str(SEED), "-o", "-")
    assert to_stdout.returncode == 0 and to_stdout.stdout == run("compile", str(SEED)).stdout
    assert to_stdout.stderr == "warning: compile -o is deprecated: leave it out for standard output (-o names a file for every other command)\n"
    both = run("compile", str(SEED), "-o", str(tmp_path / "a"), "--out-dir", str(tmp_path / "b"))
    assert both.returncode == 2 and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert "-o, --output" not in run("compile", "--help").stdout  # hidden: --out-dir is the one shown


def wrote_lines(directory, names: list[str]) -> list[str]:
    return [f"wrote {directory / name}" for name in names]


def test_bad_matrix_is_one_line_exit_2_and_writes_nothing(tmp_path, write_matrix) -> None:
    bad = write_matrix(SEED.read_text().replace("to: bal", "to: bla"))
    out = tmp_path / "out"
    proc = run("compile", bad, "--out-dir", str(out))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: {bad}:")
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_existing_output_survives_a_failed_compile(tmp_path, write_matrix) -> None:
    out = tmp_path / "out"
    assert run("compile", str(SEED), "--out-dir", str(out)).returncode == 0
    before = (out / "edge.nft").read_text()
    bad = write_matrix(SEED.read_text().replace("tcp/443", "tcp/0"))
    assert run("compile", bad, "--out-dir", str(out)).returncode == 2
    assert (out / "edge.nft").read_text() == before
    assert sorted(os.listdir(out)) == ["edge.nft"]  # no temporary files left behind


def test_unknown_firewall_is_a_usage_error() -> None:
    proc = run("compile", str(SEED), "--firewall", "edg")
    assert proc.returncode == 2
    assert "did you mean 'edge'" in proc.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["nosuch"], "fwmatrix: no such command 'nosuch'"),
    (["--bogus"], "fwmatrix: no such option '--bogus'"),
    (["compile"], "fwmatrix compile: missing argument 'MATRIX'"),
    (["compile", str(SEED), "--backend", "cisco"], "fwmatrix compile: invalid value for '--backend' / '-b': 'cisco' is not one of 'nftables', 'iptables', 'pf', 'all'"),
    (["compile", str(SEED), "--firewal", "edge"], "fwmatrix compile: no such option '--firewal' (did you mean '--firewall'?)"),
    (["apply", str(SEED)], "fwmatrix apply: missing option '--firewall' / '-f'"),
    (["audit", str(SEED)], "fwmatrix audit: give exactly one of --live or --ruleset FILE"),
    (["diff", str(SEED)], "fwmatrix diff: give OLD and NEW, or one matrix with --git REV"),
    (["lint", str(SEED), str(TWO), "--format", "json"], "fwmatrix lint: --format json reports on one matrix: run once per matrix (junit and sarif take several)"),
])
def test_usage_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    """Click's usage errors read as every other user error: `error: ...`, one line, exit 2."""
    proc = run(*args)
    command = message.split(":")[0]
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"error: {message} (see {command} --help)\n")


@pytest.mark.parametrize("command", ["audit", "lab", "query"])
def test_a_firewall_to_name_is_one_line_naming_the_matrix(command: str) -> None:
    """Where a command needs one firewall and the matrix has several, it says so in the documented one line."""
    extra = {"audit": ["-r", str(ROOT / "examples" / "drift" / "edge.json")], "lab": [],
             "query": ["--from", "app", "--to", "db", "--service", "tcp/5432", "-r", str(ROOT / "examples" / "drift" / "edge.json")]}[command]
    proc = run(command, str(TWO), *extra)
    if command == "lab" and os.geteuid() != 0:
        assert proc.stderr == "error: fwmatrix lab needs root: it creates network namespaces\n"
        return
    assert (proc.returncode, proc.stderr) == (2, f"error: {TWO}: the matrix has several firewalls (internal, perimeter): say which with --firewall NAME\n")
    unknown = run(command, str(TWO), *extra, "--firewall", "edge")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert unknown.stderr.startswith(f"error: {TWO}: no firewall named 'edge' in the matrix")


def test_missing_file_and_bad_option() -> None:
    proc = run("check", "/nonexistent/matrix.yaml")
    assert proc.returncode == 2 and "cannot read" in proc.stderr
    proc = run("compile", str(SEED), "--backend", "cisco")
    assert proc.returncode == 2


def test_check_without_kernel_validation() -> None:
    proc = run("check", str(SEED), "--no-kernel")
    assert proc.returncode == 0, proc.stderr
    assert "8 openings" in proc.stdout


def test_check_validates_with_nft(kernel) -> None:
    proc = run("check", str(SEED), "--backend", "nftables")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nftables" in proc.stdout and "accepted" in proc.stdout


def test_check_reports_warnings() -> None:
    proc = run("check", str(TWO), "--no-kernel")
    assert proc.returncode == 0
    assert "app-to-db" in proc.stdout and "crosses no firewall" in proc.stdout


def test_show_prints_the_matrix_and_its_placement() -> None:
    result = CliRunner().invoke(main, ["show", str(SEED)], terminal_width=200)
    assert result.exit_code == 0, result.output
    for word in ("operator-sip", "sipproxy.ext", "udp/10000-30000", "wan0→dmz0", "NAT verso NGINX"):
        assert word in result.output


def test_check_and_show_take_a_matrix_with_management(write_matrix) -> None:
    """The `management` key is part of the format: the commands that read a matrix take it."""
    path = write_matrix(SEED.read_text().replace("    public: 203.0.113.10\n", "    public: 203.0.113.10\n    management: [{from: lan, service: tcp/22}]\n"))
    proc = run("check", path, "--no-kernel")
    assert proc.returncode == 0, proc.stderr
    assert "8 openings" in proc.stdout
    result = CliRunner().invoke(main, ["show", path], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "operator-sip" in result.output
    # the access is shown with the interface it arrives on (lan faces lan0)
    row = next(line for line in result.output.splitlines() if "│ edge" in line and "tcp/22" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")][:6] == ["edge", "1", "lan", "(any address of it)", "tcp/22", "lan0"]
    plain = CliRunner().invoke(main, ["show", str(SEED)], terminal_width=200)
    assert "management access" not in plain.output  # no table when the matrix declares none


def test_the_commands_that_change_a_firewall_are_registered() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("apply", "confirm", "rollback", "lab"):
        assert f"  {command} " in result.output
    assert run("apply", "--help").returncode == 0


def test_audit_of_rulesets_that_run_together(tmp_path) -> None:
    """iptables-save and ip6tables-save of one firewall: audited together, IPv6 is judged too."""
    out = tmp_path / "out"
    assert run("compile", str(SEED), "--backend", "iptables", "--iptables-mode", "full", "--out-dir", str(out)).returncode == 0
    both = run("audit", str(SEED), "-r", str(out / "edge.ipt4"), "-r", str(out / "edge.ipt6"), "--format", "json")
    assert both.returncode == 0, both.stdout
    # the IPv4 file alone says nothing of IPv6: not audited, and said so (issue 11, item 5)
    alone = run("audit", str(SEED), "-r", str(out / "edge.ipt4"), "--backend", "iptables", "--format", "json")
    assert alone.returncode == 0, alone.stdout
    assert [(f["kind"], f["severity"]) for f in json.loads(alone.stdout)["findings"]] == [("not-audited", "info")]
    assert "no IPv6 ruleset was given (ip6tables-save output)" in alone.stdout


def test_pf_dialect_option(tmp_path) -> None:
    proc = run("compile", str(SEED), "--backend", "pf", "--pf-dialect", "freebsd")
    assert proc.returncode == 0
    assert "rdr on $wan0_if inet proto tcp from any to 203.0.113.10 port 443 tag fwm_dnat -> 172.16.10.10" in proc.stdout
    assert " rdr-to " not in proc.stdout


def test_python_dash_m_fwmatrix_is_the_command(tmp_path) -> None:
    """`python -m fwmatrix` (fwmatrix/__main__.py) answers as the console script does, under its name."""
    version = subprocess.run([sys.executable, "-m", "fwmatrix", "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, "fwmatrix, version 0.2.0\n")
    by_module = subprocess.run([sys.executable, "-m", "fwmatrix", "check", str(SEED), "--no-kernel"], capture_output=True, text=True, cwd=tmp_path)
    assert by_module.returncode == 0, by_module.stderr
    assert "matrix 'contact-highway-7' is valid" in by_module.stdout and "8 openings" in by_module.stdout
    assert by_module.stdout == run("check", str(SEED), "--no-kernel").stdout
    usage = subprocess.run([sys.executable, "-m", "fwmatrix", "nosuch"], capture_output=True, text=True, cwd=tmp_path)
    assert (usage.returncode, usage.stderr) == (2, "error: fwmatrix: no such command 'nosuch' (see fwmatrix --help)\n")


def test_lint_and_diff_narrowed_to_one_firewall(tmp_path) -> None:
    """--firewall on lint and diff: what concerns the openings placed on that firewall."""
    whole = run("lint", str(TWO))
    assert whole.returncode == 1 and "app-to-db" in whole.stdout  # crosses no firewall: on none
    internal = run("lint", str(TWO), "--firewall", "internal", "--format", "json")
    assert internal.returncode == 0, internal.stderr
    report = json.loads(internal.stdout)
    assert (report["firewall"], report["findings"]) == ("internal", [])
    assert report["verdict"] == "matrix 'two-firewalls' on firewall 'internal' is clean: 3 openings, nothing to report"
    changed = tmp_path / "changed.yaml"
    changed.write_text(TWO.read_text().replace("smtp: tcp/25", "smtp: tcp/587"))  # mx: the perimeter only
    assert run("diff", str(TWO), str(changed), "--fail-on", "info").returncode == 1
    calm = run("diff", str(TWO), str(changed), "--firewall", "internal", "--fail-on", "info", "--format", "json")
    assert calm.returncode == 0, calm.stderr
    assert [fw["name"] for fw in json.loads(calm.stdout)["firewalls"]] == ["internal"]
    moved = run("diff", str(TWO), str(changed), "-f", "perimeter", "--fail-on", "info", "--format", "json")
    assert moved.returncode == 1 and json.loads(moved.stdout)["summary"].endswith("on firewall perimeter")
    for command in (["lint", str(TWO)], ["diff", str(TWO), str(changed)]):
        unknown = run(*command, "--firewall", "internl")
        assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "(did you mean 'internal'?)" in unknown.stderr


def complete(line: str, shell: str = "bash") -> list[str]:
    """What the shell's completion script gets for `line` (the word under the cursor is its last,
    empty after a trailing space), asked as the script asks: _FWMATRIX_COMPLETE=bash_complete etc."""
    words = line.split(" ")
    cword = words[-1] if shell == "fish" else str(len(words) - 1)
    env = {**os.environ, "_FWMATRIX_COMPLETE": f"{shell}_complete", "COMP_WORDS": line, "COMP_CWORD": cword}
    exe = os.path.join(os.path.dirname(sys.executable), "fwmatrix")
    proc = subprocess.run([exe], env=env, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    if shell == "zsh":
        return proc.stdout.splitlines()[1::3]  # type, value, help
    return [item.partition(",")[2] for item in proc.stdout.splitlines() if item]  # bash, fish: type,value


TWO_REL = "examples/two-firewalls/matrix.yaml"


@pytest.mark.parametrize(("line", "offered"), [
    ("fwmatrix li", ["lint"]),
    (f"fwmatrix audit {TWO_REL} --firewall ", ["internal", "perimeter"]),
    (f"fwmatrix lint {TWO_REL} -f p", ["perimeter"]),
    (f"fwmatrix diff {TWO_REL} {TWO_REL} --firewall i", ["internal"]),
    ("fwmatrix sh", ["show"]),
    (f"fwmatrix show {TWO_REL} --firewall ", ["internal", "perimeter"]),
    (f"fwmatrix apply {TWO_REL} -f int", ["internal"]),
    (f"fwmatrix compile {TWO_REL} --firewall ", ["internal", "perimeter"]),
    ("fwmatrix query matrices/contact-highway-7.yaml --service rtp", ["rtp-ext", "rtp-int"]),
    ("fwmatrix lint no/such/matrix.yaml --firewall ", []),  # no matrix: nothing offered, no error
])
def test_shell_completion_as_the_shell_asks(line: str, offered: list[str]) -> None:
    assert complete(line) == offered


def test_shell_completion_zsh_and_fish_and_their_scripts() -> None:
    line = f"fwmatrix lint {TWO_REL} --firewall i"
    assert complete(line, "zsh") == complete(line, "fish") == ["internal"]
    for shell, first in (("bash", "_fwmatrix_completion() {"), ("zsh", "#compdef fwmatrix"), ("fish", "function _fwmatrix_completion;")):
        script = subprocess.run([os.path.join(os.path.dirname(sys.executable), "fwmatrix")], env={**os.environ, "_FWMATRIX_COMPLETE": f"{shell}_source"},
                                capture_output=True, text=True)
        assert script.returncode == 0 and script.stdout.startswith(first) and "_FWMATRIX_COMPLETE" in script.stdout


def test_show_formats_opening_and_firewall(tmp_path) -> None:
    """show --format json (its schema), markdown, --opening (completed too) and --firewall."""
    import jsonschema

    from fwmatrix.schemas import schema_text

    proc = run("show", str(ROOT / "examples" / "perimeter" / "matrix.yaml"), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(json.loads(schema_text("show")), format_checker=jsonschema.FormatChecker()).validate(view)
    rows = {row["name"]: row for row in view["openings"]}
    assert rows["web-to-app"]["placed_on"] == ["internal: outside0→lan0", "perimeter: dmz0→transit0"]
    assert (rows["www"]["nat"], rows["www"]["ports"]) == ("web", ["tcp/443"]) and view["management"]
    one = json.loads(run("show", str(TWO), "--opening", "app-to-db", "--opening", "www", "--format", "json").stdout)
    assert [(r["name"], r["placed_on"]) for r in one["openings"]] == [("www", ["perimeter: wan0→dmz0"]), ("app-to-db", [])]
    assert one["management"] == []
    internal = json.loads(run("show", str(TWO), "-f", "internal", "--format", "json").stdout)
    assert internal["firewall"] == "internal" and [r["name"] for r in internal["openings"]] == ["web-to-app", "admin-ssh", "partner-api"]
    markdown = run("show", str(TWO), "--opening", "web-to-app", "--format", "markdown", "-o", str(tmp_path / "show.md"))
    assert markdown.returncode == 0 and markdown.stdout == ""
    assert (tmp_path / "show.md").read_text().splitlines()[2:5] == [
        "| # | opening | from | to | service | NAT | placed on | note |", "|---|---|---|---|---|---|---|---|",
        "| 4 | web-to-app | web | app-servers | app-api<br>(tcp/8443) |  | internal: outside0→lan0<br>perimeter: dmz0→transit0<br>"
        "perimeter: dmz6→transit0 | crosses both firewalls (IPv4 and IPv6) |"]
    unknown = run("show", str(TWO), "--opening", "web-to-ap")
    assert (unknown.returncode, unknown.stderr) == (2, f"error: {TWO}: no opening named 'web-to-ap' in the matrix (did you mean 'web-to-app'?)\n")
    assert complete(f"fwmatrix show {TWO_REL} --opening w") == ["web-to-app", "www", "www6"]


# -- source NAT fwmatrix cannot read (issue 12) -------------------------------------------------

PERIMETER = ROOT / "examples" / "perimeter" / "matrix.yaml"

def _findings(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)["findings"]


def test_an_unknown_source_nat_target_is_an_unmodelled_finding_where_the_matrix_asks_no_translation(tmp_path) -> None:
    """-j FULLCONENAT (a fullcone-nat kernel module) in nat POSTROUTING: the source address the
    connections leave with is unknown, and the audit says so, never clean."""
    matrix = tmp_path / "small.yaml"
    matrix.write_text(SMALL)
    rules = tmp_path / "edge.ipt4"
    rules.write_text("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
                     "-A POSTROUTING -o wan0 -j FULLCONENAT\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                     "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
                     "-A FORWARD -s 10.0.0.0/24 -i lan0 -o wan0 -p tcp --dport 443 -j ACCEPT\nCOMMIT\n")
    proc = run("audit", str(matrix), "-f", "edge", "-r", str(rules), "--format", "json")
    assert proc.returncode == 1
    (unmodelled,) = [f for f in _findings(proc) if f["kind"] == "unmodelled"]
    assert unmodelled["rule"] == f"{rules}:6", unmodelled
    assert "-j FULLCONENAT (a target fwmatrix does not know) in a source NAT chain" in unmodelled["message"]
    assert "judged both ways" in unmodelled["message"]


@pytest.mark.parametrize(("written", "unread"), [
    ("-j FULLCONENAT", "-j FULLCONENAT (a target fwmatrix does not know)"),
    ("-j SNAT --to-source 203.0.113.10-203.0.113.11", "-j SNAT --to-source 203.0.113.10-203.0.113.11 (source NAT to a range"),
])
def test_a_source_nat_fwmatrix_cannot_read_is_judged_both_ways_and_says_why(tmp_path, written: str, unread: str) -> None:
    """The perimeter's own iptables files with lan-browsing's SNAT replaced: its translation is
    unknown (a `nat` finding pointing to 'unmodelled'), never right and never 'not translated'."""
    out = tmp_path / "out"
    assert run("compile", str(PERIMETER), "-b", "iptables", "--out-dir", str(out)).returncode == 0
    text = (out / "perimeter.ipt4").read_text()
    assert text.count("-j SNAT --to-source 203.0.113.10\n") == 2
    changed = tmp_path / "perimeter.ipt4"
    changed.write_text(text.replace("-j SNAT --to-source 203.0.113.10\n", written + "\n"))
    lines = [n for n, line in enumerate(changed.read_text().splitlines(), 1) if line.endswith(written)]
    findings = _findings(run("audit", str(PERIMETER), "-f", "perimeter", "-r", str(changed), "-r", str(out / "perimeter.ipt6"), "--format", "json"))
    assert sorted(f["rule"] for f in findings if f["kind"] == "unmodelled") == [f"{changed}:{n}" for n in lines]
    assert all(unread in f["message"] for f in findings if f["kind"] == "unmodelled")
    (nat,) = [f for f in findings if f["kind"] == "nat"]
    assert "lan-browsing" in nat["message"] and nat["regions"]
    assert all("translated as fwmatrix cannot tell" in r and "see 'unmodelled'" in r for r in nat["regions"]), nat["regions"]


def test_an_nft_snat_to_a_range_is_judged_both_ways_and_says_why(tmp_path) -> None:
    out = tmp_path / "out"
    assert run("compile", str(PERIMETER), "-b", "nftables", "--out-dir", str(out)).returncode == 0
    text = (out / "perimeter.nft").read_text()
    assert text.count("snat ip to 203.0.113.10 ") == 1
    changed = tmp_path / "perimeter.nft"
    changed.write_text(text.replace("snat ip to 203.0.113.10 ", "snat ip to 203.0.113.10-203.0.113.11 "))
    proc = run("audit", str(PERIMETER), "-f", "perimeter", "-r", str(changed), "--format", "json")
    if proc.returncode == 2 and ("cannot run" in proc.stderr or "namespace" in proc.stderr):
        pytest.skip(f"nft cannot run here: {proc.stderr}")
    findings = _findings(proc)
    (unmodelled,) = [f for f in findings if f["kind"] == "unmodelled"]
    assert "snat ip to 203.0.113.10/31 (source NAT to a range or a map" in unmodelled["message"]
    (nat,) = [f for f in findings if f["kind"] == "nat"]
    assert all("translated as fwmatrix cannot tell" in r for r in nat["regions"]), nat["regions"]


# -- pf anchors and tables given by name (issue 12) ---------------------------------------------

PF_CONF = """table <abusers> persist
block in quick from <abusers>
anchor "filter/*"
anchor "local"
pass in on lan0 proto tcp from 10.0.0.0/24 to any port 443
"""


def _pf_audit(tmp_path, *given: str) -> subprocess.CompletedProcess[str]:
    matrix, conf, empty = tmp_path / "small.yaml", tmp_path / "edge.pf.conf", tmp_path / "empty"
    matrix.write_text(SMALL)
    conf.write_text(PF_CONF)
    empty.write_text("")
    (tmp_path / "table").write_text("192.0.2.66\n")
    (tmp_path / "uses").write_text("block in quick from <later>\n")  # an anchor's own table
    return run("audit", str(matrix), "-f", "edge", "-r", str(conf), *given)


@pytest.mark.parametrize(("given", "message"), [
    (("--pf-anchor", "lcoal={empty}"),
     "--pf-anchor lcoal: the ruleset never reads anchor 'lcoal' (the file would be ignored); it reads anchors 'local', 'filter/*'"),
    (("--pf-table", "abuser={table}"),
     "--pf-table abuser: the ruleset never reads table 'abuser' (the file would be ignored); it reads table 'abusers'"),
    (("--pf-anchor", "filter/a/deep={empty}"), "--pf-anchor filter/a/deep: the ruleset never reads anchor 'filter/a/deep'"),
    (("--pf-anchor", "local={empty}", "--pf-table", "later={table}"), "--pf-table later: the ruleset never reads table 'later'"),
])
def test_a_pf_anchor_or_table_the_ruleset_never_reads_is_refused_naming_what_it_reads(tmp_path, given: tuple[str, ...], message: str) -> None:
    proc = _pf_audit(tmp_path, *(g.format(empty=tmp_path / "empty", table=tmp_path / "table") for g in given))
    assert (proc.returncode, proc.stderr.count("\n")) == (2, 1), proc.stderr
    assert proc.stderr.startswith(f"error: {message}"), proc.stderr


def test_a_pf_anchor_or_table_the_ruleset_reads_is_taken(tmp_path) -> None:
    """The names it reads: its anchors, a child of its wildcard anchor (as pf reads `filter/*`),
    its tables, and a table only an anchor given reads."""
    proc = _pf_audit(tmp_path, "--pf-anchor", f"local={tmp_path / 'empty'}", "--pf-anchor", f"filter/a={tmp_path / 'uses'}",
                     "--pf-table", f"abusers={tmp_path / 'table'}", "--pf-table", f"later={tmp_path / 'table'}", "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    assert "abusers" not in proc.stdout and "'local'" not in proc.stdout  # read, not unmodelled


@pytest.mark.parametrize(("given", "message"), [
    (("--pf-anchor", "local={empty}"), "--pf-anchor local: "),
    (("--pf-table", "abusers={empty}"), "--pf-table abusers: "),
    (("--pf-interface", "lan0=10.0.0.1/24"), "--pf-interface lan0: "),
    (("--pf-group", "egress=wan0"), "--pf-group egress: "),
])
@pytest.mark.parametrize("command", ["audit", "query"])
def test_pf_facts_beside_live_are_refused_before_reading_the_kernel(tmp_path, command: str, given: tuple[str, ...], message: str) -> None:
    """pf is never read live: a pf fact beside --live would be ignored without a word (it was)."""
    matrix = tmp_path / "small.yaml"
    matrix.write_text(SMALL)
    (tmp_path / "empty").write_text("")
    packet = ("--from", "10.0.0.5", "--to", "192.0.2.80", "--service", "tcp/443") if command == "query" else ()
    proc = run(command, str(matrix), "-f", "edge", "--live", *packet, *(g.format(empty=tmp_path / "empty") for g in given))
    assert (proc.returncode, proc.stderr.count("\n")) == (2, 1), proc.stderr
    assert proc.stderr.startswith(f"error: {message}pf facts describe a saved pf ruleset (--ruleset); --live reads"), proc.stderr


def test_a_pf_anchor_given_for_a_ruleset_that_is_not_pf_is_refused(tmp_path) -> None:
    matrix, rules = tmp_path / "small.yaml", tmp_path / "edge.ipt4"
    matrix.write_text(SMALL)
    rules.write_text("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    (tmp_path / "empty").write_text("")
    proc = run("audit", str(matrix), "-f", "edge", "-r", str(rules), "--pf-anchor", f"local={tmp_path / 'empty'}")
    assert (proc.returncode, proc.stderr) == (2, "error: --pf-anchor local: the ruleset never reads anchor 'local' (the file would be ignored); it reads no anchor\n")
