"""`fwmatrix lab`: prove a firewall's compiled ruleset with real packets through a real kernel.

The lab is `fwmatrix.ops.lab.Lab`: the firewall's network namespace with one link
per interface of the matrix, and a namespace behind each link standing for
the zone it faces (host addresses are put there as probes need them; the
internet's client, behind the interface facing the `any` zone, has an address
outside every network of the matrix: `labaddresses`). The compiled ruleset is loaded into the firewall's namespace,
and then:

  every opening, one row per part of its service, must work end to end: a
  NEW connection from a host of its sources to a host of its destinations
  (the first and last port of a range) leaves by the right interface, and
  the answer comes back through the firewall: the TCP handshake completes,
  the UDP datagram is echoed back, the ICMP echo is answered. A port
  forward is sent to the public address and must arrive at the NAT
  target's own address (and port); with source NAT it must arrive from
  the translated source (the public address; masquerade: the firewall's
  address on the outgoing link). Openings to the firewall itself and its
  management accesses are sent to the firewall's own address and must be
  answered by a listener there (`lab.FIREWALL`);

  a sample of what must stay closed stays closed, each a NEW connection
  that no side may see: the port just past each opening's service, a new
  connection from each inside interface towards the internet, the internet
  reaching each NAT target directly at its own address instead of through
  the public address, the public address on a port nothing forwards, each
  internal opening the other way round, and (where the firewall has own
  services) the firewall itself on a port nothing opens to it. A sample is taken only where
  the matrix really leaves it closed.

Every namespace goes when the lab ends, whatever ended it (the CLI turns
SIGTERM and SIGHUP into the same interrupt as SIGINT).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from netaddr import IPAddress, IPNetwork
from rich.console import Console
from rich.markup import escape
from fwmatrix.report.tables import Table

from fwmatrix.compile.ruleset import compile_firewall
from fwmatrix.errors import FwmatrixError
from fwmatrix.compile.intent import Dnat, FirewallIntent, Flow, Input, Intent
from fwmatrix.ir import Ruleset
from fwmatrix.ops.lab import DEFAULT_TIMEOUT, FIREWALL, Lab, Probe, ProbeResult, firewall_link_address
from fwmatrix.ops.labaddresses import LabAddresses, lab_addresses
from fwmatrix.matrix.model import Opening, ServicePart
from fwmatrix.report.text import _md

LAB_BACKENDS = ("nftables", "iptables")
INSIDE_OUT = (("tcp", 443), ("udp", 53))  # new connections from inside towards the internet
UNFORWARDED = (22, 8080, 3389, 2222)  # a port of the public address nothing forwards: the first one free


@dataclass(frozen=True)
class Check:
    """One row of the lab's table: probes that must all work (open) or all be unseen (closed)."""

    kind: str  # "open" or "closed"
    name: str  # the opening's name, or what the sample is
    row: int | None  # the opening's row in the matrix
    route: str  # from → to, as the matrix names them
    service: str
    probes: tuple[Probe, ...]


@dataclass(frozen=True)
class CheckResult:
    check: Check
    results: tuple[ProbeResult, ...]
    seconds: float  # the wall time of the probes' run (closed samples share one run)

    @property
    def passed(self) -> bool:
        if self.check.kind == "open":
            return all(_works(r) for r in self.results)
        return not any(r.reached for r in self.results)

    def detail(self) -> str:
        if not self.passed:
            bad = next(r for r in self.results if (not _works(r) if self.check.kind == "open" else r.seen))
            return f"{bad.probe}: {bad.outcome()}"
        if self.check.kind == "closed" and all(r.probe.oif == FIREWALL for r in self.results):
            return "the firewall did not answer" + (f" ({len(self.results)} probes)" if len(self.results) > 1 else "")
        if self.check.kind == "closed":
            return "not seen on any side" + (f" ({len(self.results)} probes)" if len(self.results) > 1 else "")
        words = {"tcp": "handshake completed", "udp": "reply came back", "icmp": "echo answered", "sctp": "INIT arrived"}
        first = self.results[0].probe
        text = words[first.proto]
        if first.expect_dst is not None:
            text = f"arrived at {first.arrival_dst}" + (f":{first.arrival_dport}" if first.arrival_dport is not None else "") + f", {text}"
        if first.expect_src is not None:
            text = f"arrived from {first.expect_src}, {text}"
        ports = sorted({r.probe.dport for r in self.results if r.probe.dport is not None})
        return text + (f" (ports {', '.join(map(str, ports))})" if len(ports) > 1 else "")


def _works(r: ProbeResult) -> bool:
    """Arrived where it should, and the answer came back (sctp: the answer is not watched)."""
    return r.arrived and r.answered is not False


@dataclass
class LabReport:
    matrix: str
    firewall: str
    backend: str
    results: list[CheckResult] = field(default_factory=list)
    namespaces: int = 0
    build_seconds: float = 0.0
    load_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def of_kind(self, kind: str) -> list[CheckResult]:
        return [r for r in self.results if r.check.kind == kind]

    def to_json(self) -> dict:
        return {
            "schema": "fwmatrix.lab/1",
            "matrix": self.matrix,
            "firewall": self.firewall,
            "backend": self.backend,
            "passed": self.passed,
            "summary": self.summary(),
            "seconds": {"build": round(self.build_seconds, 4), "load": round(self.load_seconds, 4), "total": round(self.total_seconds, 4)},
            "checks": [
                {
                    "kind": r.check.kind,
                    "name": r.check.name,
                    "row": r.check.row,
                    "route": r.check.route,
                    "service": r.check.service,
                    "passed": r.passed,
                    "detail": r.detail(),
                    "seconds": round(r.seconds, 4),
                    "probes": [{"probe": str(x.probe), "outcome": x.outcome()} for x in r.results],
                }
                for r in self.results
            ],
        }

    def summary(self) -> str:
        opened, closed = self.of_kind("open"), self.of_kind("closed")
        return (f"{sum(r.passed for r in opened)}/{len(opened)} opening rows work, "
                f"{sum(r.passed for r in closed)}/{len(closed)} closed samples stay closed; "
                f"lab of {self.namespaces} namespaces built in {self.build_seconds:.2f} s, ruleset loaded in "
                f"{self.load_seconds * 1000:.0f} ms, {self.total_seconds:.2f} s in all")


# -- what to probe ------------------------------------------------------------------------------


def host_in(net: IPNetwork, free: LabAddresses) -> str:
    """An address to probe with inside a network: itself for a host, for the whole internet
    one outside every network of the matrix, else a fixed host of the network."""
    if net.prefixlen == 0:
        return free.internet[net.version]
    if net.size <= 2:
        return str(net.ip)
    return str(net[min(net.size - 2, 100)])


def lab_proto(part: ServicePart) -> str:
    return "icmp" if part.protocol in ("icmp", "icmpv6") else part.protocol


def sample_ports(part: ServicePart) -> list[int | None]:
    if part.ports is None:
        return [None]
    low, high = max(part.ports.low, 1), part.ports.high
    return [low] if low == high else [low, high]


def _covers(part: ServicePart, proto: str, port: int | None) -> bool:
    if lab_proto(part) != proto:
        return False
    return part.ports is None or (port is not None and part.ports.low <= port <= part.ports.high)


class _Judge:
    """Whether the matrix opens a NEW connection, as the lab sends it (before any DNAT)."""

    def __init__(self, fw: FirewallIntent):
        self.fw = fw
        self.translated_only = {(d.opening.index, d.in_iface) for d in fw.dnats}  # flows meant for translated packets

    def opens(self, p: Probe) -> bool:
        src, dst = IPAddress(p.src), IPAddress(p.dst)
        if p.oif == FIREWALL:
            return any(i.in_iface == p.iif and any(src in n for n in i.sources) and any(dst in n for n in i.destinations)
                       and any(_covers(x, p.proto, p.dport) for x in i.parts) for i in self.fw.inputs)
        for d in self.fw.dnats:
            if d.in_iface == p.iif and d.public == dst and any(src in n for n in d.sources) and any(_covers(x, p.proto, p.dport) for x in d.parts):
                return True
        for f in self.fw.flows:
            if (f.opening.index, f.in_iface) in self.translated_only:
                continue
            if (f.in_iface, f.out_iface) == (p.iif, p.oif) and any(src in n for n in f.sources) and any(dst in n for n in f.destinations) \
                    and any(_covers(x, p.proto, p.dport) for x in f.parts):
                return True
        return False


def _route(opening: Opening) -> str:
    text = f"{', '.join(opening.sources)} → {', '.join(opening.destinations)}"
    return text + (f" ⇒ {opening.nat.target}" if opening.nat is not None else "")


def _dnats_of(fw: FirewallIntent, flow: Flow) -> list[Dnat]:
    return [d for d in fw.dnats if d.opening.index == flow.opening.index and d.in_iface == flow.in_iface
            and d.family == flow.family and any(IPAddress(d.target) in n for n in flow.destinations)]


def plan_checks(intent: Intent, firewall: str) -> list[Check]:
    """The rows: every opening part (open), then the closed samples."""
    fw = intent.firewalls[firewall]
    free = lab_addresses(intent)
    opened = _opening_checks(fw, free)
    judge = _Judge(fw)
    closed: list[Check] = []
    for name, row, route, probes in _closed_candidates(intent, fw, opened, free):
        kept = tuple(p for p in dict.fromkeys(probes) if not judge.opens(p))  # only what the matrix leaves closed
        if kept:
            service = ", ".join(dict.fromkeys(f"{p.proto}/{p.dport}" if p.dport else p.proto for p in kept))
            closed.append(Check("closed", name, row, route, service, kept))
    return opened + closed


def _opening_checks(fw: FirewallIntent, free: LabAddresses) -> list[Check]:
    """One check per opening and part of its service, with probes for each flow it has here."""
    rows: dict[tuple[int, ServicePart], list[Probe]] = {}
    openings: dict[int, Opening] = {}
    for flow in fw.flows:
        openings[flow.opening.index] = flow.opening
        src = host_in(flow.sources[0], free)
        dnats = _dnats_of(fw, flow)  # port forwards: sent to the public address, expected at the target
        targets = [(d.parts, str(d.public), str(d.target), d.target_port) for d in dnats] or [(flow.parts, host_in(flow.destinations[0], free), None, None)]
        source = _source_after_snat(fw, flow)
        for parts, dst, expect, expect_port in targets:
            for part in parts:
                for port in sample_ports(part):
                    probe = Probe(flow.in_iface, flow.out_iface, src, dst, lab_proto(part), port, expect, expect_port if port is not None else None,
                                  source)
                    rows.setdefault((flow.opening.index, part), []).append(probe)
    for item in fw.inputs:  # the firewall's own services and management accesses: to the firewall itself
        openings[item.opening.index] = item.opening
        dst = own_address(fw, item.in_iface, item.family, item.destinations[0], free)
        for part in item.parts:
            for port in sample_ports(part):
                probe = Probe(item.in_iface, FIREWALL, host_in(item.sources[0], free), dst, lab_proto(part), port)
                rows.setdefault((item.opening.index, part), []).append(probe)
    order = sorted(rows.items(), key=lambda kv: (kv[0][0] < 0, abs(kv[0][0]), str(kv[0][1])))  # openings, then management
    return [Check("open", openings[i].name, i if i > 0 else None, _route(openings[i]), str(part), tuple(dict.fromkeys(probes)))
            for (i, part), probes in order]


def own_address(fw: FirewallIntent, iface: str, family: int, wanted: IPNetwork, free: LabAddresses) -> str:
    """An address of the firewall to probe it at: the one wanted, else the one the matrix gives
    the interface (then any it gives the firewall), else one outside the matrix's networks."""
    if wanted.prefixlen:
        return host_in(wanted, free)
    firewall = fw.firewall
    for address in list(firewall.addresses.get(iface, ())) + list(firewall.own_addresses()):
        if address.version == family:
            return str(address)
    return free.firewall[family]


def _source_after_snat(fw: FirewallIntent, flow: Flow) -> str | None:
    """The source a flow's connections leave with when this firewall translates it: the address,
    or (masquerade) the firewall's own address on the outgoing link of the lab."""
    for snat in fw.snats:
        if (snat.opening.index, snat.out_iface, snat.family) == (flow.opening.index, flow.out_iface, flow.family):
            if snat.address is not None:
                return str(snat.address)
            return firewall_link_address(list(fw.firewall.interfaces).index(flow.out_iface), flow.family)
    return None


Candidate = tuple[str, int | None, str, list[Probe]]  # name, row, route, probes


def _closed_candidates(intent: Intent, fw: FirewallIntent, opened: list[Check], free: LabAddresses) -> Iterator[Candidate]:
    judge = _Judge(fw)
    openings = {c.row: c for c in reversed(opened) if c.row is not None}  # each opening's first check
    # the port just past each opening's first service
    for row, first in sorted(openings.items()):
        probe = first.probes[0]
        if probe.dport is None:
            continue
        top = max(p.dport or 0 for p in first.probes)
        port = top + 1 if top < 65535 else probe.dport - 1
        while port < 65535 and judge.opens(replace(probe, dport=port, expect_dst=None, expect_dport=None)):
            port += 1  # past the ports the opening (or another) forwards
        yield f"{first.name}: next port", row, first.route, [Probe(probe.iif, probe.oif, probe.src, probe.dst, probe.proto, port)]
    # new connections from inside towards the internet
    interfaces = fw.firewall.interfaces
    internet = [i for i, zone in interfaces.items() if intent.matrix.zones[zone].is_any]
    behind = _hosts_behind(fw, free)
    for iface, zone in sorted(interfaces.items()):
        if iface in internet or not behind.get(iface):
            continue
        src = behind[iface][0]
        for wan in internet:
            yield (f"{zone} → internet: new connection", None, f"{src} ({zone}) → {interfaces[wan]}",
                   [Probe(iface, wan, src, free.internet[IPAddress(src).version], proto, port) for proto, port in INSIDE_OUT])
    # the internet straight at each NAT target, then the public address where nothing forwards
    forwards = [(d, next(f for f in fw.flows if d in _dnats_of(fw, f))) for d in fw.dnats if any(d in _dnats_of(fw, f) for f in fw.flows)]
    for d, flow in forwards:
        part = d.parts[0]
        target = d.opening.nat.target if d.opening.nat else str(d.target)
        yield (f"{d.opening.name}: {target} directly, without NAT", d.opening.index, f"{', '.join(d.opening.sources)} → {d.target}",
               [Probe(d.in_iface, flow.out_iface, host_in(d.sources[0], free), str(d.target), lab_proto(part), sample_ports(part)[0])])
    for d, flow in {(d.public, d.in_iface): (d, flow) for d, flow in forwards}.values():  # once per address and interface
        tries = [Probe(d.in_iface, flow.out_iface, host_in(d.sources[0], free), str(d.public), "tcp", port) for port in UNFORWARDED]
        idle = next((p for p in tries if not judge.opens(p)), None)
        if idle is not None:
            yield f"{d.public}: a port nothing forwards", None, f"{', '.join(d.opening.sources)} → {d.public}", [idle]
    # the firewall itself, on a port nothing opens to it, from behind each interface
    if fw.filters_input:
        for iface, zone in sorted(interfaces.items()):
            src = behind.get(iface, [free.internet[4]] if iface in internet else [None])[0]
            if src is None:
                continue
            family = IPAddress(src).version
            dst = own_address(fw, iface, family, IPNetwork("0.0.0.0/0" if family == 4 else "::/0"), free)
            tries = [Probe(iface, FIREWALL, src, dst, "tcp", port) for port in UNFORWARDED]
            idle = next((p for p in tries if not judge.opens(p)), None)
            if idle is not None:
                yield f"{fw.firewall.name} itself: a port nothing opens", None, f"{src} ({zone}) → {fw.firewall.name}", [idle]
    # internal openings the other way round
    for row, first in sorted(openings.items()):
        probe = first.probes[0]
        if probe.oif == FIREWALL:
            continue  # the firewall's own services: not a way through it
        opening = next(f.opening for f in fw.flows if f.opening.index == row)
        if opening.nat is None and probe.dport is not None:
            yield (f"{opening.name}: reversed", row, f"{', '.join(opening.destinations)} → {', '.join(opening.sources)}",
                   [Probe(probe.oif, probe.iif, probe.dst, probe.src, probe.proto, probe.dport)])


def _hosts_behind(fw: FirewallIntent, free: LabAddresses) -> dict[str, list[str]]:
    """Per interface, addresses of hosts the openings name behind it (as probe sources)."""
    out: dict[str, list[str]] = {}
    for flow in fw.flows:
        for iface, nets in ((flow.in_iface, flow.sources), (flow.out_iface, flow.destinations)):
            for net in nets:
                if net.prefixlen:
                    out.setdefault(iface, [])
                    if host_in(net, free) not in out[iface]:
                        out[iface].append(host_in(net, free))
    for d in fw.dnats:
        for flow in fw.flows:
            if d in _dnats_of(fw, flow):
                out.setdefault(flow.out_iface, [])
                if str(d.target) not in out[flow.out_iface]:
                    out[flow.out_iface].insert(0, str(d.target))
    return out


# -- running ------------------------------------------------------------------------------------


def run_lab(intent: Intent, firewall: str, backend: str = "nftables", timeout: float = DEFAULT_TIMEOUT,
            progress: Callable[[CheckResult], None] | None = None, ruleset: Ruleset | None = None) -> LabReport:
    """Build the lab, load the firewall's ruleset (default: compiled from `intent`), run every
    check of the intent; the namespaces go in any case."""
    if backend not in LAB_BACKENDS:
        raise FwmatrixError(f"the lab loads {' or '.join(LAB_BACKENDS)} rulesets, not {backend!r}")
    if firewall not in intent.firewalls:
        raise FwmatrixError(f"no firewall named '{firewall}' in the matrix; it has: {', '.join(intent.firewalls)}")
    start = time.monotonic()
    checks = plan_checks(intent, firewall)
    if ruleset is None:
        ruleset = compile_firewall(intent, intent.firewalls[firewall])
    report = LabReport(intent.matrix.name, firewall, backend)
    with Lab(list(intent.firewalls[firewall].firewall.interfaces), timeout=timeout) as lab:
        report.namespaces = len(lab.namespaces)
        report.build_seconds = time.monotonic() - start
        loaded = time.monotonic()
        if backend == "nftables":
            lab.load_nft(ruleset)
        else:
            from fwmatrix.backends import iptables

            lab.load_iptables(iptables.render_files(ruleset))
        report.load_seconds = time.monotonic() - loaded

        def record(result: CheckResult) -> None:
            report.results.append(result)
            if progress is not None:
                progress(result)

        for check in (c for c in checks if c.kind == "open"):
            began = time.monotonic()
            results = lab.run(list(check.probes), retries=1)  # a probe lost to a busy moment is sent once more
            record(CheckResult(check, tuple(results), time.monotonic() - began))
        closed = [c for c in checks if c.kind == "closed"]
        if closed:  # one run: each closed probe waits out the timeout, so they wait together
            began = time.monotonic()
            results = lab.run([p for c in closed for p in c.probes])
            seconds = time.monotonic() - began
            at = 0
            for check in closed:
                record(CheckResult(check, tuple(results[at:at + len(check.probes)]), seconds))
                at += len(check.probes)
    report.total_seconds = time.monotonic() - start
    return report


# -- printing -----------------------------------------------------------------------------------


def _seconds(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def print_lab(report: LabReport, console: Console) -> None:
    table = Table(title=f"lab: matrix {report.matrix}, firewall {report.firewall}, {report.backend} — real packets through a kernel",
                  title_justify="left", show_lines=False)
    for column in ("#", "opening", "from → to", "service", "result", "time"):
        table.add_column(column, overflow="fold", no_wrap=column in ("#", "time"))
    kind = None
    for r in report.results:
        if kind is not None and r.check.kind != kind:
            table.add_section()
        kind = r.check.kind
        verdict = "[bold green]pass[/]" if r.passed else "[bold red]FAIL[/]"
        what = "open" if kind == "open" else "closed"
        table.add_row(
            str(r.check.row) if r.check.row is not None else "",
            escape(r.check.name),
            escape(r.check.route),
            escape(r.check.service),
            f"{verdict} {what}: {escape(r.detail())}",
            _seconds(r.seconds),
        )
    console.print(table)
    style = "bold green" if report.passed else "bold red"
    console.print(f"[{style}]{'PASS' if report.passed else 'FAIL'}[/]: {escape(report.summary())}")
    if report.of_kind("closed"):
        console.print("closed samples run together: each waits out the timeout, so they share one time", style="dim")


def lab_markdown(report: LabReport) -> str:
    """The lab's table for a pull request comment or a CI summary."""
    verdict = "✅ PASS" if report.passed else "❌ FAIL"
    lines = [f"### 🧪 fwmatrix lab: {verdict} — matrix `{_md(report.matrix)}`, firewall `{_md(report.firewall)}`, {report.backend}", "",
             _md(report.summary()), "", "| # | check | opening | from → to | service | result |", "|---|---|---|---|---|---|"]
    for r in report.results:
        result = ("pass" if r.passed else "**FAIL**") + f": {_md(r.detail())}"
        lines.append(f"| {r.check.row or ''} | {r.check.kind} | `{_md(r.check.name)}` | {_md(r.check.route)} | {_md(r.check.service)} | {result} |")
    return "\n".join(lines) + "\n"


__all__ = ["Check", "CheckResult", "LabReport", "lab_markdown", "plan_checks", "print_lab", "run_lab"]
