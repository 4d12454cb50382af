"""The port-forward idiom of pf.conf(5), audited exactly, and found drifted exactly as its
nftables twin is.

pf.conf(5) writes a port forward as `block all`, then `pass in on $ext_if ... to $public_ip
port P rdr-to $server` and `pass out on $dmz_if ... to $server port P`: the rule that matches
last on the way in translates and creates state, the out rules see the translated packet, and
a packet sent to the server's own address never matches the pass-in rule. The same firewall
is written four ways (OpenBSD `pass ... rdr-to` and `match ... rdr-to tag` + `tagged`,
FreeBSD `rdr pass` and `rdr ... tag` + `tagged`) and once in nftables (DNAT in prerouting,
`ct status dnat` in forward). Each drift is made in all five, and the audit must report the
same findings for each pf text as for the nftables one; and a lab running the nftables twin
forwards, packet by packet, what the IR read from the pf text says.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from conftest import ROOT

from fwmatrix.audit.findings import AuditReport, audit
from fwmatrix.compile.intent import Intent, build_intent
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.ops.lab import Lab, Probe
from fwmatrix.targets import parse_text
from test_kernel_agreement import TIMEOUT, _rng, assert_agreement, check_agreement, matrix_probes

MATRIX = Path(__file__).resolve().parent / "idiom" / "perimeter.yaml"
PUBLIC = "203.0.113.7"
HOSTS = {"web": "192.168.10.10", "mail": "192.168.10.25", "voip": "192.168.10.50", "other": "192.168.10.99"}


@dataclass(frozen=True)
class Forward:
    proto: str
    ports: tuple[int, int]  # what the translation takes
    to: str  # where it sends it (a key of HOSTS)
    out_to: str = ""  # what the out rule (nft: the forward rule) lets through, when not `to`
    out_ports: tuple[int, int] | None = None
    direct: bool = False  # the forward rule does not ask for translated packets

    @property
    def opened(self) -> tuple[str, tuple[int, int]]:
        return self.out_to or self.to, self.out_ports or self.ports


@dataclass(frozen=True)
class Firewall:
    forwards: tuple[Forward, ...]
    dmz_out: tuple[str, tuple[int, int]] | None = None  # a pass from the DMZ to the internet (proto, ports)
    extra: tuple[str, ...] = field(default=())


CORRECT = Firewall((Forward("tcp", (443, 443), "web"), Forward("tcp", (25, 25), "mail"), Forward("udp", (10000, 20000), "voip")))
DRIFTS = {
    "wrong rdr target": replace(CORRECT, forwards=(replace(CORRECT.forwards[0], to="other"),) + CORRECT.forwards[1:]),
    "narrowed port range": replace(CORRECT, forwards=CORRECT.forwards[:2] + (replace(CORRECT.forwards[2], ports=(10000, 19999)),)),
    "an extra forward": replace(CORRECT, forwards=CORRECT.forwards + (Forward("tcp", (8080, 8080), "web"),)),
    "a DMZ to internet pass": replace(CORRECT, dmz_out=("tcp", (443, 443))),
    "the server reachable directly": replace(CORRECT, forwards=(replace(CORRECT.forwards[0], direct=True),) + CORRECT.forwards[1:]),
}
PF_STYLES = ("openbsd pass rdr-to", "openbsd match rdr-to", "freebsd rdr pass", "freebsd rdr")


def _pf_ports(ports: tuple[int, int]) -> str:
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}:{ports[1]}"


def _nft_ports(ports: tuple[int, int]) -> str:
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"


def pf_text(fw: Firewall, style: str) -> str:
    """The firewall as pf.conf, in one of PF_STYLES."""
    head = ['ext_if = "em0"', 'dmz_if = "em1"', f'public_ip = "{PUBLIC}"', 'dmz_net = "192.168.10.0/24"']
    head += [f'{name} = "{address}"' for name, address in HOSTS.items()]
    translations, filters = [], ["block all"]
    tagged = style in ("openbsd match rdr-to", "freebsd rdr")
    for f in fw.forwards:
        what = f"proto {f.proto} to $public_ip port {_pf_ports(f.ports)}"
        if style == "openbsd pass rdr-to":
            filters.append(f"pass in on $ext_if {what} rdr-to ${f.to}")
        elif style == "openbsd match rdr-to":
            filters.append(f"match in on $ext_if {what} rdr-to ${f.to} tag FWD")
        elif style == "freebsd rdr pass":
            translations.append(f"rdr pass on $ext_if {what} -> ${f.to}")
        else:
            translations.append(f"rdr on $ext_if {what} tag FWD -> ${f.to}")
    if tagged:
        filters.append("pass in on $ext_if tagged FWD")
    for f in fw.forwards:
        host, ports = f.opened
        filters.append(f"pass out on $dmz_if proto {f.proto} to ${host} port {_pf_ports(ports)}")
        if f.direct:  # the in rule for the server's own address: untranslated packets pass in too
            filters.append(f"pass in on $ext_if proto {f.proto} to ${host} port {_pf_ports(ports)}")
    if fw.dmz_out is not None:
        proto, ports = fw.dmz_out
        # `! $dmz_net`: else the out rule would also pass port forwards back out on $ext_if
        filters += [f"pass in on $dmz_if proto {proto} from $dmz_net to ! $dmz_net port {_pf_ports(ports)}",
                    f"pass out on $ext_if proto {proto} from $dmz_net to ! $dmz_net port {_pf_ports(ports)}"]
    return "\n".join(head + translations + filters + list(fw.extra)) + "\n"


def nft_text(fw: Firewall) -> str:
    """The same firewall as nftables."""
    dnat = [f'iifname "em0" ip daddr {PUBLIC} {f.proto} dport {_nft_ports(f.ports)} dnat ip to {HOSTS[f.to]}' for f in fw.forwards]
    forward = ["ct state established,related accept"]
    for f in fw.forwards:
        host, ports = f.opened
        status = "" if f.direct else "ct status dnat "
        forward.append(f'iifname "em0" oifname "em1" {status}ip daddr {HOSTS[host]} {f.proto} dport {_nft_ports(ports)} accept')
    if fw.dmz_out is not None:
        proto, ports = fw.dmz_out
        forward.append(f'iifname "em1" oifname "em0" ip saddr 192.168.10.0/24 ip daddr != 192.168.10.0/24 {proto} dport {_nft_ports(ports)} accept')
    return ("table inet gw {\n  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n"
            + "".join(f"    {line}\n" for line in dnat)
            + "  }\n  chain forward {\n    type filter hook forward priority filter; policy drop;\n"
            + "".join(f"    {line}\n" for line in forward) + "  }\n}\n")


@pytest.fixture(scope="module")
def intent() -> Intent:
    return build_intent(load_matrix(str(MATRIX)))


def run_audit(intent: Intent, backend: str, text: str) -> AuditReport:
    return audit(intent, "gw", parse_text(backend, text, f"gw.{backend}"), f"gw.{backend}")


def findings(report: AuditReport) -> list[tuple[str, str, tuple[str, ...]]]:
    """What was found, without where (the rule's origin differs between the two texts)."""
    return sorted((f.kind, f.opening.name if f.opening else "", f.regions) for f in report.findings)


@pytest.mark.parametrize("style", PF_STYLES)
def test_the_idiom_audits_clean(intent: Intent, style: str) -> None:
    report = run_audit(intent, "pf", pf_text(CORRECT, style))
    assert findings(report) == []
    assert findings(run_audit(intent, "nftables", nft_text(CORRECT))) == []


@pytest.mark.parametrize("style", PF_STYLES)
@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_a_drift_is_found_as_in_its_nftables_twin(intent: Intent, style: str, drift: str) -> None:
    fw = DRIFTS[drift]
    twin = findings(run_audit(intent, "nftables", nft_text(fw)))
    assert twin, f"the nftables twin of '{drift}' audits clean"
    assert not [f for f in twin if f[0] == "unmodelled"]
    assert findings(run_audit(intent, "pf", pf_text(fw, style))) == twin


def test_the_drifts_are_the_findings_they_should_be(intent: Intent) -> None:
    kinds = {drift: {kind for kind, _, _ in findings(run_audit(intent, "nftables", nft_text(fw)))} for drift, fw in DRIFTS.items()}
    assert kinds["wrong rdr target"] >= {"nat", "excess"}
    assert "missing" in kinds["narrowed port range"]
    assert "excess" in kinds["an extra forward"]
    assert "dmz-to-internet" in kinds["a DMZ to internet pass"] or "excess" in kinds["a DMZ to internet pass"]
    assert "excess" in kinds["the server reachable directly"]


@pytest.mark.parametrize("style", ["openbsd pass rdr-to", "freebsd rdr pass"])
def test_the_idiom_audits_clean_through_the_cli(tmp_path: Path, style: str) -> None:
    path = tmp_path / "gw.pf.conf"
    path.write_text(pf_text(CORRECT, style))
    done = subprocess.run([sys.executable, "-m", "fwmatrix", "audit", str(MATRIX), "-r", str(path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "matches the matrix" in done.stdout


# -- through the CLI, with what the matrix and the options say of the firewall ------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fwmatrix", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("dialect", ["openbsd", "freebsd"])
@pytest.mark.parametrize("matrix", ["matrices/contact-highway-7.yaml", "examples/two-firewalls/matrix.yaml"])
def test_fwmatrix_s_own_pf_conf_audits_clean_through_the_cli(tmp_path: Path, matrix: str, dialect: str) -> None:
    """The renderer's `anchor "local"` holds the firewall's own rules: given (here empty), nothing
    is left to judge both ways; not given, it is."""
    done = cli("compile", matrix, "-b", "pf", "--pf-dialect", dialect, "--out-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    empty = tmp_path / "local.conf"
    empty.write_text("")
    compiled = sorted(tmp_path.glob("*.pf.conf"))
    assert compiled
    for path in compiled:
        firewall = path.name.removesuffix(".pf.conf")
        done = cli("audit", matrix, "-f", firewall, "-r", str(path), "--pf-anchor", f"local={empty}")
        assert done.returncode == 0 and "matches the matrix" in done.stdout, done.stdout + done.stderr
        done = cli("audit", matrix, "-f", firewall, "-r", str(path))
        assert done.returncode == 1 and "anchor 'local'" in done.stdout


def test_tables_and_the_egress_group_through_the_cli(tmp_path: Path) -> None:
    """`egress` is the interfaces facing the matrix's `any` zone; a table's addresses come from
    --pf-table. Without it the table is unmodelled."""
    text = pf_text(CORRECT, "openbsd pass rdr-to").replace("on $ext_if", "on egress")
    text = text.replace("block all\n", "table <abusers> persist\nblock all\nblock in quick on egress from <abusers>\n")
    ruleset = tmp_path / "gw.pf.conf"
    ruleset.write_text(text)
    abusers = tmp_path / "abusers.txt"
    abusers.write_text("   192.0.2.0/24\n   !192.0.2.7\n")
    done = cli("audit", str(MATRIX), "-r", str(ruleset), "--pf-table", f"abusers={abusers}")
    assert done.returncode == 1, done.stdout + done.stderr
    # the quick block decides before a pass rule translates: the forwards are missing for
    # exactly the table's addresses, on egress (em0) only
    assert "3 nat" in done.stdout.splitlines()[0] and "unmodelled" not in done.stdout, done.stdout
    report = cli("audit", str(MATRIX), "-r", str(ruleset), "--pf-table", f"abusers={abusers}", "--format", "markdown").stdout
    assert report.count("`em0 → any  192.0.2.0/30, 192.0.2.4/31, 192.0.2.6, 192.0.2.8-192.0.2.255 → 203.0.113.7") == 3
    done = cli("audit", str(MATRIX), "-r", str(ruleset))
    assert done.returncode == 1 and "table <abusers>" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--pf-anchor", "local"], "expected NAME=FILE, not 'local'"),
    (["--pf-table", "t=/nonexistent/t.txt"], "error: /nonexistent/t.txt: cannot read: No such file or directory"),
])
def test_bad_pf_options_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    ruleset = tmp_path / "gw.pf.conf"
    ruleset.write_text(pf_text(CORRECT, "openbsd pass rdr-to"))
    done = cli("audit", str(MATRIX), "-r", str(ruleset), *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr


# -- the kernel, running the nftables twin, forwards what the pf reading says ----------------------


@pytest.mark.kernel
@pytest.mark.parametrize("case", ["correct"] + sorted(DRIFTS))
def test_the_kernel_running_the_nftables_twin_agrees_with_the_pf_reading(intent: Intent, case: str) -> None:
    """Real packets through the nftables twin in a lab, judged by the IR read from the pf text:
    the port forwards, the server sent to directly, other ports, the DMZ towards the internet."""
    fw = CORRECT if case == "correct" else DRIFTS[case]
    read = parse_text("pf", pf_text(fw, "openbsd pass rdr-to"), "gw.pf.conf")
    aimed = [Probe("em0", "em1", "198.51.100.9", PUBLIC, "tcp", 443), Probe("em0", "em1", "198.51.100.9", HOSTS["web"], "tcp", 443),
             Probe("em0", "em1", "198.51.100.9", PUBLIC, "tcp", 8080), Probe("em0", "em1", "198.51.100.9", PUBLIC, "udp", 20000),
             Probe("em0", "em1", "198.51.100.9", PUBLIC, "udp", 19999), Probe("em1", "em0", HOSTS["web"], "198.51.100.9", "tcp", 443)]
    with Lab(intent.matrix.firewalls["gw"].interfaces, timeout=TIMEOUT) as lab:
        lab.load_nft(nft_text(fw))
        probes = aimed + matrix_probes(intent, "gw", _rng("pf-idiom", case), extra=40)
        tally = check_agreement(lab, read, probes, f"pf idiom/{case}")
    assert_agreement(tally, min_each=5)
    assert tally.uncertain == 0 and tally.translated >= 3
