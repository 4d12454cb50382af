"""`fwmatrix query`, through the CLI: every row of the seed is allowed (with its
port forward) and every closed sample of the lab is denied, by the matrix and by
the compiled rulesets of the three backends, read back as the audit reads them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from conftest import ROOT, SEED, require_kernel
from fwmatrix.cli import main
from fwmatrix.compile.intent import build_intent
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.ops.labrun import plan_checks

INTENT = build_intent(load_matrix(str(SEED)))
CHECKS = plan_checks(INTENT, "edge")
OPEN = [c for c in CHECKS if c.kind == "open"]
CLOSED = [(c, p) for c in CHECKS if c.kind == "closed" for p in c.probes]
SCHEMA = jsonschema.Draft202012Validator(json.loads((ROOT / "docs" / "schemas" / "query.schema.json").read_text()))


def query(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["query", str(SEED), *args, "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.output)
    SCHEMA.validate(report)
    return result.exit_code, report


def service_of(proto: str, dport: int | None) -> str:
    return proto if dport is None else f"{proto}/{dport}"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled")
    result = CliRunner().invoke(main, ["compile", str(SEED), "--backend", "all", "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    (out / "empty").write_text("")
    return out


RULESETS = {
    "matrix": [],
    "nftables": ["-r", "edge.nft"],
    "iptables": ["-r", "edge.ipt4", "-r", "edge.ipt6"],
    "pf": ["-r", "edge.pf.conf", "--pf-anchor", "local=empty"],
}


def against(backend: str, folder: Path) -> list[str]:
    if backend == "nftables":
        require_kernel()  # nft reads a .nft file in a private network namespace
    return [str(folder / a) if a.startswith("edge.") else a.replace("=empty", f"={folder / 'empty'}") for a in RULESETS[backend]]


@pytest.mark.parametrize("backend", list(RULESETS))
def test_every_seed_row_is_allowed_with_its_port_forward(backend: str, compiled: Path) -> None:
    extra = against(backend, compiled)
    for check in OPEN:
        first = check.probes[0]
        code, report = query("--from", first.src, "--to", first.dst, "--service", check.service, *extra)
        assert (code, report["verdict"]) == (0, "allowed"), (check.name, check.service, json.dumps(report, indent=1))
        (answer,) = report["answers"]
        if first.expect_dst is None:
            continue
        if backend == "matrix":
            nats = [hop["nat"] for hop in answer["path"] if hop["nat"]]
            assert [(n["target"], n["opening"]["name"]) for n in nats] == [(first.expect_dst, check.name)]
            assert nats[0]["opening"]["line"] == INTENT.matrix.openings[check.row - 1].where.line
        else:
            assert answer["nat"].startswith(f"→ {first.expect_dst}:"), answer
            assert any(step["action"].startswith(("dnat", "jump")) for step in answer["trace"] if step["hook"] == "prerouting")
            assert answer["trace"][-1]["action"].startswith("accept"), answer["trace"]


# The seed opens nothing to edge itself: the matrix gives it no input chain (uncertain), the
# compiled nftables and iptables rulesets leave its input open (allowed: the host's sockets decide),
# and pf's in rules are read as its input only when `self` is known and named (uncertain).
TO_EDGE_ITSELF = {"matrix": "uncertain", "nftables": "allowed", "iptables": "allowed", "pf": "uncertain"}


@pytest.mark.parametrize("backend", list(RULESETS))
def test_every_closed_sample_is_denied_by_what_drops_it(backend: str, compiled: Path) -> None:
    extra = against(backend, compiled)
    assert len(CLOSED) >= 10
    for check, probe in CLOSED:
        code, report = query("--from", probe.src, "--to", probe.dst, "--service", service_of(probe.proto, probe.dport), *extra)
        (answer,) = report["answers"]
        if probe.dst == "203.0.113.10":  # to the firewall itself: not forwarded, its input decides
            assert report["verdict"] == TO_EDGE_ITSELF[backend], (backend, json.dumps(report, indent=1))
            if backend == "matrix":
                assert answer["path"][-1]["out"] == "(firewall)" and "no input chain" in answer["reason"]
            else:
                assert answer["nat"] is None and "goes to its input chain" in answer["reason"]
            continue
        assert (code, report["verdict"]) == (1, "denied"), (check.name, probe, json.dumps(report, indent=1))
        if backend == "matrix":
            assert answer["reason"] or any(not hop["openings"] for hop in answer["path"]), answer
        else:  # the last step is what drops it: a drop rule or a policy drop
            last = answer["trace"][-1]
            assert last["action"].startswith(("drop", "reject")), answer["trace"]


def test_rtp_row_trace_on_nftables(compiled: Path) -> None:
    code, report = query("--from", "198.51.100.7", "--to", "edge.public", "--service", "rtp-ext", *against("nftables", compiled))
    (answer,) = report["answers"]
    assert code == 0 and answer["nat"].startswith("→ 172.16.10.22:10000-30000 by inet fwmatrix prerouting handle")
    assert [s["hook"] for s in answer["trace"]] == ["prerouting", "forward", "forward"]
    assert answer["trace"][1]["action"] == "verdict map: jump fwd_wan0_to_dmz0"


def test_names_ipv6_and_neighbours(write_matrix) -> None:
    path = write_matrix("""
fwmatrix: 1
name: six
zones:
  internet: any
  lan: [10.0.0.0/24, "fd00::/64"]
  dmz: [10.1.0.0/24, "fd01::/64"]
hosts:
  web: [10.1.0.10, "fd01::10"]
  db: [10.1.0.20, "fd01::20"]
  app: [10.0.0.5, "fd00::5"]
services:
  https: tcp/443
firewalls:
  fw:
    interfaces: {eth0: internet, eth1: lan, eth2: dmz}
openings:
  - name: app-to-web
    from: app
    to: web
    service: [https, tcp/8443]
  - name: app-to-db
    from: app
    to: db
    service: tcp/5432
""")
    runner = CliRunner()
    result = runner.invoke(main, ["query", str(path), "--from", "app", "--to", "web", "--service", "https", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [(a["packet"]["source"], a["verdict"]) for a in report["answers"]] == [("10.0.0.5", "allowed"), ("fd00::5", "allowed")]
    # denied: the nearest openings, other ports first, then other hosts
    result = runner.invoke(main, ["query", str(path), "--from", "fd00::5", "--to", "fd01::10", "--service", "tcp/5432", "--format", "json"])
    assert result.exit_code == 1
    (answer,) = json.loads(result.output)["answers"]
    kinds = [(n["kind"], n["opening"]["name"]) for n in answer["nearest"]]
    assert kinds[0] == ("other port", "app-to-web") and ("other host", "app-to-db") in kinds
    # --expect makes it an assertion
    assert runner.invoke(main, ["query", str(path), "--from", "app", "--to", "db", "--service", "tcp/5432", "--expect", "deny"]).exit_code == 1
    assert runner.invoke(main, ["query", str(path), "--from", "app", "--to", "db", "--service", "tcp/22", "--expect", "deny"]).exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["--from", "internet", "--to", "edge.public", "--service", "https"], "zone 'internet' is more than one address"),
    (["--from", "nobody", "--to", "bal", "--service", "https"], "unknown name 'nobody'"),
    (["--from", "cti1", "--to", "bal", "--service", "tcp/99999"], "out of range"),
    (["--from", "cti1", "--to", "2001:db8::1", "--service", "https"], "share no address family"),
    (["--from", "cti1", "--to", "bal", "--service", "https", "-r", "/nonexistent"], "/nonexistent"),
])
def test_input_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["query", str(SEED), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_two_firewalls_and_source_nat(tmp_path: Path) -> None:
    """examples/perimeter: the LAN reaches the internet through both firewalls, and leaves
    the perimeter with its public address; a query against the internal firewall's ruleset
    arrives and leaves by that firewall's interfaces."""
    matrix = str(ROOT / "examples" / "perimeter" / "matrix.yaml")
    runner = CliRunner()
    result = runner.invoke(main, ["query", matrix, "--from", "app", "--to", "198.51.100.200", "--service", "https", "--format", "json"])
    assert result.exit_code == 0, result.output
    (answer,) = json.loads(result.output)["answers"]
    assert [(h["firewall"], h["in"], h["out"], h["source"], h["snat"]) for h in answer["path"]] == [
        ("internal", "lan0", "outside0", "10.40.1.10", None), ("perimeter", "transit0", "wan0", "10.40.1.10", "203.0.113.10")]
    assert runner.invoke(main, ["compile", matrix, "--backend", "iptables", "--out-dir", str(tmp_path)]).exit_code == 0
    rules = ["-f", "internal", "-r", str(tmp_path / "internal.ipt4"), "-r", str(tmp_path / "internal.ipt6"), "--format", "json"]
    result = runner.invoke(main, ["query", matrix, "--from", "app", "--to", "198.51.100.200", "--service", "https", *rules])
    (answer,) = json.loads(result.output)["answers"]
    assert result.exit_code == 0 and (answer["in"], answer["out"]) == ("lan0", "outside0"), result.output
    result = runner.invoke(main, ["query", matrix, "--from", "web", "--to", "198.51.100.200", "--service", "https", *rules])
    assert result.exit_code == 2 and "does not cross firewall 'internal'" in result.output
    result = runner.invoke(main, ["query", matrix, "--from", "app", "--to", "198.51.100.200", "--service", "https", *rules[2:]])
    assert result.exit_code == 2 and result.output == f"error: {matrix}: the matrix has several firewalls (internal, perimeter): say which with --firewall NAME\n"


def test_shell_completion_offers_the_matrix_names() -> None:
    from click.shell_completion import ShellComplete

    complete = ShellComplete(main, {}, "fwmatrix", "_FWMATRIX_COMPLETE")

    def offered(args: list[str], incomplete: str) -> list[str]:
        return [item.value for item in complete.get_completions(["query", str(SEED), *args], incomplete)]

    assert offered(["--from"], "sip") == ["sipproxy", "sipproxy.ext", "sipproxy.int"]
    assert offered(["--from", "cti1", "--to", "bal", "--service"], "rtp") == ["rtp-ext", "rtp-int"]
    assert offered(["--firewall"], "") == ["edge"]


GOLDEN = ROOT / "tests" / "golden" / "contact-highway-7"


def test_ruleset_read_with_what_only_the_firewall_knows(tmp_path: Path) -> None:
    """The audit's ruleset options, through one definition: a Docker-style gate (`-m addrtype
    --dst-type LOCAL`) is exact for the matrix's public address, and for every other address
    once --local-address lists the firewall's; a pf `($wan0_if)` once --pf-interface says it."""
    docker = tmp_path / "edge.ipt4"
    docker.write_text((GOLDEN / "edge.iptables.full.ipt4").read_text().replace("-d 203.0.113.10/32 -i wan0", "-i wan0 -m addrtype --dst-type LOCAL"))
    rules = ["-r", str(docker), "-r", str(GOLDEN / "edge.iptables.full.ipt6")]
    code, report = query("--from", "198.51.100.7", "--to", "edge.public", "--service", "https", *rules)
    assert (code, report["verdict"]) == (0, "allowed") and report["answers"][0]["nat"].startswith("→ 172.16.10.10:443 by "), report
    code, report = query("--from", "198.51.100.7", "--to", "10.20.0.5", "--service", "https", *rules)
    assert report["verdict"] == "uncertain" and "(may)" in report["answers"][0]["nat"]  # 10.20.0.5 may be the firewall's
    code, report = query("--from", "198.51.100.7", "--to", "10.20.0.5", "--service", "https", *rules, "--local-address", "203.0.113.10")
    assert (code, report["verdict"], report["answers"][0]["nat"]) == (1, "denied", None)
    result = CliRunner().invoke(main, ["query", str(SEED), "--from", "cti1", "--to", "bal", "--service", "https", *rules, "--local-address", "10.0.0.1/24"])
    assert result.exit_code == 2 and "host bits are set" in result.output
    pf_conf = tmp_path / "edge.pf.conf"
    pf_conf.write_text((GOLDEN / "edge.pf.conf").read_text().replace("to 203.0.113.10 port 443 rdr-to", "to ($wan0_if) port 443 rdr-to"))
    (tmp_path / "empty").write_text("")
    rules = ["-r", str(pf_conf), "--pf-anchor", f"local={tmp_path / 'empty'}"]
    _, report = query("--from", "198.51.100.7", "--to", "edge.public", "--service", "https", *rules)
    assert report["verdict"] == "uncertain"  # the address of wan0 is not known
    code, report = query("--from", "198.51.100.7", "--to", "edge.public", "--service", "https", *rules, "--pf-interface", "wan0=203.0.113.10/24")
    assert (code, report["verdict"]) == (0, "allowed") and report["answers"][0]["nat"].startswith("→ 172.16.10.10:443 by "), report


def test_query_and_audit_share_one_definition_of_the_ruleset_options() -> None:
    from fwmatrix.cli.audit import audit_command
    from fwmatrix.cli.query import query_command

    def options(command: object) -> dict[str, str]:
        return {p.name: p.help for p in command.params if p.name in _RULESET_OPTIONS}  # type: ignore[attr-defined]

    assert options(query_command) == options(audit_command) and set(options(query_command)) == set(_RULESET_OPTIONS)


_RULESET_OPTIONS = ("live", "paths", "backend", "pf_tables", "pf_anchors", "pf_interfaces", "pf_groups", "local_addresses")


@pytest.mark.parametrize("backend", ["matrix", "nftables", "iptables", "pf"])
def test_packets_to_the_firewall_itself(backend: str, tmp_path: Path) -> None:
    """examples/perimeter: 'perimeter' has own services (ntp) and a management access (ssh from
    admin-ws, forwarded by 'internal'): the matrix answers by the opening or access, the
    compiled rulesets by their input chain (pf: its in rules read for `self`)."""
    matrix = str(ROOT / "examples" / "perimeter" / "matrix.yaml")
    runner = CliRunner()
    extra: list[str] = []
    if backend != "matrix":
        if backend == "nftables":
            require_kernel()
        assert runner.invoke(main, ["compile", matrix, "--backend", backend, "--out-dir", str(tmp_path)]).exit_code == 0
        files = {"nftables": ["perimeter.nft"], "iptables": ["perimeter.ipt4", "perimeter.ipt6"], "pf": ["perimeter.pf.conf"]}[backend]
        extra = ["-f", "perimeter"] + [a for f in files for a in ("-r", str(tmp_path / f))]
        if backend == "pf":
            (tmp_path / "empty").write_text("")
            extra += ["--pf-anchor", f"local={tmp_path / 'empty'}"]

    def ask(source: str, service: str) -> tuple[int, dict]:
        result = runner.invoke(main, ["query", matrix, "--from", source, "--to", "perimeter.transit0", "--service", service, "--format", "json", *extra])
        assert result.exit_code in (0, 1), result.output
        report = json.loads(result.output)
        SCHEMA.validate(report)
        return result.exit_code, report["answers"][0]

    code, ssh = ask("admin-ws", "ssh")
    assert code == 0 and ssh["verdict"] == "allowed", ssh
    code, ntp = ask("app", "ntp")
    assert code == 0 and ntp["verdict"] == "allowed", ntp
    code, other = ask("app", "tcp/8080")
    assert code == 1 and other["verdict"] == "denied", other
    if backend == "matrix":
        assert [(h["firewall"], h["out"]) for h in ssh["path"]] == [("internal", "outside0"), ("perimeter", "(firewall)")]
        assert [o["name"] for o in ssh["path"][-1]["openings"]] == ["perimeter-management-1"]
        assert [o["name"] for o in ntp["path"][-1]["openings"]] == ["perimeter-ntp"]
        assert other["path"][-1]["openings"] == [] and "perimeter itself" not in other["reason"] and "'perimeter' itself" in other["reason"]
    else:
        inputs = [s for s in ssh["trace"] if s["hook"] == "input"]
        assert inputs and inputs[-1]["action"].startswith("accept"), ssh["trace"]
        assert [s for s in ntp["trace"] if s["hook"] == "input"][-1]["action"].startswith("accept"), ntp["trace"]
        last = [s for s in other["trace"] if s["hook"] == "input"][-1]
        assert last["action"].startswith(("drop", "reject")), other["trace"]


@pytest.mark.parametrize("backend", ["matrix", "iptables", "pf"])
def test_a_port_range_crossing_port_forwards_is_answered_per_sub_range(backend: str, compiled: Path) -> None:
    """udp/5000-10005 to edge.public meets operator-sip (udp/5060) and operator-rtp (from 10000):
    four answers, each with its own NAT; the rest goes to edge itself (see TO_EDGE_ITSELF)."""
    _, report = query("--from", "198.51.100.7", "--to", "edge.public", "--service", "udp/5000-10005", *against(backend, compiled))
    itself = TO_EDGE_ITSELF[backend]

    def nat(answer: dict) -> str | None:
        if backend == "matrix":
            return next((h["nat"]["target"] for h in answer["path"] if h["nat"]), None)
        return answer["nat"] and answer["nat"].split(" ")[1].split(":")[0]

    assert [(a["packet"]["ports"], a["verdict"], nat(a)) for a in report["answers"]] == [
        ([5000, 5059], itself, None), ([5060, 5060], "allowed", "172.16.10.21"),
        ([5061, 9999], itself, None), ([10000, 10005], "allowed", "172.16.10.22")]


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_verdicts_to_the_firewall_itself_agree_with_the_kernel(backend: str, tmp_path: Path) -> None:
    """examples/perimeter in the lab: every probe to 'perimeter' itself (its own services, its
    management access, the ports next to them and a port nothing opens, from behind each
    interface) answered by the kernel, and asked of `fwmatrix query` on the same compiled ruleset."""
    require_kernel()
    from fwmatrix.ops.lab import FIREWALL
    from fwmatrix.ops.labrun import run_lab

    matrix = str(ROOT / "examples" / "perimeter" / "matrix.yaml")
    report = run_lab(build_intent(load_matrix(matrix)), "perimeter", backend)
    runner = CliRunner()
    assert runner.invoke(main, ["compile", matrix, "--backend", backend, "--out-dir", str(tmp_path)]).exit_code == 0
    files = ["perimeter.nft"] if backend == "nftables" else ["perimeter.ipt4", "perimeter.ipt6"]
    rules = ["-f", "perimeter"] + [a for f in files for a in ("-r", str(tmp_path / f))]
    seen: list[str] = []
    for result in report.results:
        for r in result.results:
            p = r.probe
            if p.oif != FIREWALL:
                continue
            kernel = "allowed" if r.reached else "denied"
            out = runner.invoke(main, ["query", matrix, "--from", p.src, "--to", p.dst, "--service", f"{p.proto}/{p.dport}", "--format", "json", *rules])
            said = json.loads(out.output)["verdict"]
            assert said == kernel, (str(p), r.outcome(), out.output)
            seen.append(kernel)
    assert seen.count("allowed") >= 2 and seen.count("denied") >= 3, seen  # services and management; closed ports
