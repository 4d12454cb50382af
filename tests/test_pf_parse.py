"""Reading pf rulesets into the IR, with netfilter's semantics (backends/pf/reader.py and convert.py, parse_ruleset).

pf evaluates every rule and the last match decides (unless `quick`); netfilter's chains
take the first match. The parser rewrites one into the other, splits a forwarded packet's
two passes (in, out) into two forward base chains and turns translation into prerouting
DNAT. These tests check that against a small pf simulator written from pf.conf(5) (random
rulesets, sampled packets), round-trip the renderer's output through the audit, mutate it,
read a corpus of hand-written rulesets and listings, and check the errors.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SEED
from fwmatrix.backends import pf
from hypothesis import HealthCheck, given, settings
from netaddr import IPAddress, IPNetwork
from strategies import matrix_yaml

from fwmatrix.audit.findings import AuditReport, audit
from fwmatrix.compile.ruleset import compile_intent
from fwmatrix.errors import BackendError
from fwmatrix.audit.evaluate import evaluate, interfaces_of
from fwmatrix.compile.intent import Intent, build_intent
from fwmatrix.ir import (
    Chain,
    Dnat,
    Match,
    Rule,
    Ruleset,
    Unmodelled,
    UnmodelledAction,
    Verdict,
)
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.matrix.model import PortRange
from fwmatrix.space import ECHO_REQUEST, NO_PORT, Space, addr_interval, ct_bits

CORPUS = Path(__file__).resolve().parent / "corpus" / "pf"
EXAMPLES = sorted((ROOT / "examples").glob("*/matrix.yaml"))  # two-firewalls, shared-proxy, ...
NO_ANCHORS = {"local": ""}  # the renderer's anchor for the firewall's own traffic, known empty here


def parse(text: str, **kw) -> Ruleset:
    return pf.parse_ruleset(text, "t.conf", **kw)


def chain(ruleset: Ruleset, name: str) -> Chain:
    (table,) = ruleset.tables
    return table.chain(name)


ESTABLISHED_MATCH = Match(("ct.state",), (("established",), ("related",)))


def rules_at(ruleset: Ruleset, name: str, line: int, source: str = "t.conf") -> list[Rule]:
    """The IR rules a line became (not the rules about its replies)."""
    return [r for r in chain(ruleset, name).rules if r.origin == f"{source}:{line}" and ESTABLISHED_MATCH not in r.matches]


def net(text: str) -> IPNetwork:
    return IPNetwork(text)


def m(field_name: str, *values, negate: bool = False) -> Match:
    typed = []
    for v in values:
        if field_name.startswith("ip"):
            v = IPNetwork(v)
        elif field_name == "dport":
            low, _, high = str(v).partition("-")
            v = PortRange(int(low), int(high or low))
        typed.append((v,))
    return Match((field_name,), tuple(typed), negate=negate)


def unmodelled_texts(rule: Rule) -> list[str]:
    return [x.text for x in rule.matches if isinstance(x, Unmodelled)]


# -- judging packets with the real evaluator ------------------------------------------------


class Judge:
    """What fwmatrix's evaluator says about single packets (first packet of a connection)."""

    def __init__(self, ruleset: Ruleset, ifaces: tuple[str, ...] = ()) -> None:
        self.effective = evaluate(ruleset, interfaces_of(ruleset, list(ifaces)))
        self.full = Space.full(self.effective.ifaces)
        self.forwarded = self.effective.forwarded_space()
        self.uncertain = Space(self.effective.ifaces, [b for g in self.effective.uncertain for b in g.space.boxes])

    def point(self, iif: str, oif: str, src: str, dst: str, proto: int, dport: int | None, ct: int = 1) -> Space:
        ifaces = self.effective.ifaces
        port = ECHO_REQUEST.get(proto, ((NO_PORT, NO_PORT),)) if dport is None else ((dport, dport),)
        return self.full.intersect(self.full.make(
            iif=ifaces.mask(iif), oif=ifaces.mask(oif), src=(addr_interval(IPNetwork(src)),), dst=(addr_interval(IPNetwork(dst)),),
            proto=((proto, proto),), dport=port, ct=ct))

    def translate(self, iif: str, oif: str, src: str, dst: str, proto: int, dport: int | None) -> tuple[str, int | None, str]:
        """The destination after DNAT (and the rule that translated, or '')."""
        here = self.point(iif, oif, src, dst, proto, dport)
        for region in self.effective.dnats:
            if region.space.intersect(here):
                ((low, _),) = region.target
                version = 4 if low >= 1 << 128 else 6
                address = str(IPAddress(low - (1 << 128) if version == 4 else low, version))
                return address, (region.port.low if region.port else dport), region.origin
        return dst, dport, ""

    def fate(self, iif: str, oif: str, src: str, dst: str, proto: int, dport: int | None = None, ct: int = 1) -> str:
        """'pass', 'block' or 'maybe' (depends on what fwmatrix cannot model), after translation
        (a translated packet is `ct new dnat`)."""
        if ct == 1:
            dst, dport, by = self.translate(iif, oif, src, dst, proto, dport)
            ct = ct_bits("new", translated=bool(by))
        here = self.point(iif, oif, src, dst, proto, dport, ct)
        if self.forwarded.intersect(here):
            return "pass"
        return "maybe" if self.uncertain.intersect(here) else "block"


TCP, UDP, ICMP = 6, 17, 1
ESTABLISHED = 2


# -- 1. last match -> first match, against a direct pf simulator -------------------------------
# The simulator follows pf.conf(5) literally: every rule is evaluated in order, the last
# matching pass/block decides unless a matching rule is quick, no match passes; a list is
# expanded by pfctl into one rule per item (so it matches if any item does, a negated item
# only packets of its own family); `match ... rdr-to` translates at once and later rules
# see the new packet; `pass ... rdr-to` translates when it is the rule that decides; old-style
# rdr rules translate first, first match, and `rdr pass` passes the packet in without the
# filter rules. A forwarded packet passes in on its input interface, then out on its output
# interface, where the rules see the translated packet.

IFS = ("if0", "if1", "if2")
NETS = ("10.0.0.0/24", "10.0.0.0/16", "10.0.1.0/24", "10.1.0.0/16", "192.0.2.0/24", "10.0.0.7", "2001:db8::/48", "2001:db8::7")
TABLE = ("10.0.0.0/16", "!10.0.1.0/24", "2001:db8::/48")
ADDRS = ("10.0.0.7", "10.0.0.8", "10.0.1.9", "10.1.2.3", "192.0.2.5", "198.51.100.1", "2001:db8::7", "2001:db8::8", "2001:db8:2::1")
PORTS = (0, 22, 79, 80, 81, 443, 1023, 1024, 2000, 2001, 8080, 65535)
TARGETS = ("10.0.0.7", "10.1.2.3", "192.0.2.5")


def in_table(addr: IPAddress) -> bool:
    best = None
    for entry in TABLE:
        n = IPNetwork(entry.lstrip("!"))
        if n.version == addr.version and addr in n and (best is None or n.prefixlen > best[0]):
            best = (n.prefixlen, not entry.startswith("!"))
    return bool(best and best[1])


@dataclass
class SimRule:
    action: str  # pass, block, match (with rdr), rdr, no-rdr (old style)
    direction: str | None = None
    quick: bool = False
    on: tuple[str, bool] | None = None  # (interface, negated)
    af: int | None = None
    protos: tuple[int, ...] | None = None
    src: list[tuple[bool, str]] | None = None  # (negated, network or "<t>")
    dst: list[tuple[bool, str]] | None = None
    ports: list[tuple] | None = None  # (op, a) or (op, a, b)
    rdr: tuple[str, int | None] | None = None
    reject: bool = False
    passes: bool = False  # `rdr pass`

    def text(self) -> str:
        head = {"pass": "pass", "block": "block return" if self.reject else "block drop", "match": "match", "rdr": "rdr", "no-rdr": "no rdr"}[self.action]
        words = [head] + (["pass"] if self.passes else [])
        if self.direction and self.action not in ("rdr", "no-rdr"):
            words.append(self.direction)
        if self.quick:
            words.append("quick")
        if self.on:
            words.append(f"on {'! ' if self.on[1] else ''}{self.on[0]}")
        if self.af:
            words.append("inet" if self.af == 4 else "inet6")
        if self.protos:
            names = [{6: "tcp", 17: "udp", 1: "icmp"}[p] for p in self.protos]
            words.append("proto " + (names[0] if len(names) == 1 else "{ " + " ".join(names) + " }"))
        words.append("from " + hosts_text(self.src))
        words.append("to " + hosts_text(self.dst))
        if self.ports:
            items = [ports_text(p) for p in self.ports]
            words.append("port " + (items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"))
        if self.rdr and self.action in ("match", "pass"):
            words.append(f"rdr-to {self.rdr[0]}" + (f" port {self.rdr[1]}" if self.rdr[1] else ""))
        if self.rdr and self.action == "rdr":
            words.append(f"-> {self.rdr[0]}" + (f" port {self.rdr[1]}" if self.rdr[1] else ""))
        return " ".join(words)


def hosts_text(items: list[tuple[bool, str]] | None) -> str:
    if items is None:
        return "any"
    texts = [("!" if neg else "") + value for neg, value in items]
    return texts[0] if len(texts) == 1 else "{ " + " ".join(texts) + " }"


def ports_text(p: tuple) -> str:
    if len(p) == 2:
        return f"{p[0]} {p[1]}"
    return f"{p[1]}:{p[2]}" if p[0] == ":" else f"{p[1]} {p[0]} {p[2]}"


def host_matches(items: list[tuple[bool, str]] | None, addr: IPAddress) -> bool:
    if items is None:
        return True
    for neg, value in items:
        if value == "<t>":
            if in_table(addr) != neg:
                return True
            continue
        n = IPNetwork(value)
        if n.version == addr.version and (addr in n) != neg:
            return True
    return False


def port_matches(items: list[tuple] | None, port: int | None) -> bool:
    if items is None:
        return True
    if port is None:
        return False
    for item in items:
        op, a = item[0], item[1]
        b = item[2] if len(item) > 2 else None
        ok = {"=": port == a, "!=": port != a, "<": port < a, "<=": port <= a, ">": port > a, ">=": port >= a,
              ":": b is not None and a <= port <= b, "><": b is not None and a < port < b,
              "<>": b is not None and (port < a or port > b)}[op]
        if ok:
            return True
    return False


def sim_matches(r: SimRule, pkt: dict, direction: str, iface: str) -> bool:
    return ((r.direction in (None, direction)) and (r.on is None or (iface == r.on[0]) != r.on[1])
            and (r.af is None or r.af == pkt["src"].version) and (r.protos is None or pkt["proto"] in r.protos)
            and host_matches(r.src, pkt["src"]) and host_matches(r.dst, pkt["dst"]) and port_matches(r.ports, pkt["dport"]))


def moved(pkt: dict, rdr: tuple[str, int | None]) -> dict:
    return dict(pkt, dst=IPAddress(rdr[0]), dport=rdr[1] if rdr[1] is not None else pkt["dport"])


def sim_pass(rules: list[SimRule], pkt: dict, direction: str, iface: str) -> tuple[bool, dict]:
    decision: SimRule | None = None
    for r in rules:
        if r.action in ("rdr", "no-rdr") or not sim_matches(r, pkt, direction, iface):
            continue
        if r.action == "match":
            if r.rdr:
                pkt = moved(pkt, r.rdr)
            continue
        decision = r
        if r.quick:
            break
    if decision is not None and decision.rdr:
        pkt = moved(pkt, decision.rdr)  # `pass ... rdr-to`: the rule that decides translates
    return decision is None or decision.action == "pass", pkt


def sim_forward(rules: list[SimRule], pkt: dict) -> tuple[bool, str, int | None]:
    skip = False
    for r in rules:  # old style: first matching rdr / no rdr, before any filter rule
        if r.action in ("rdr", "no-rdr") and sim_matches(r, pkt, "in", pkt["iif"]):
            if r.action == "rdr":
                pkt = moved(pkt, r.rdr)  # type: ignore[arg-type]
                skip = r.passes  # `rdr pass`: in without the filter rules
            break
    passed = True
    if not skip:
        passed, pkt = sim_pass(rules, pkt, "in", pkt["iif"])
    if passed:
        passed, _ = sim_pass(rules, pkt, "out", pkt["oif"])
    return passed, str(pkt["dst"]), pkt["dport"]


def random_rule(rng: random.Random, action: str) -> SimRule:
    if action in ("pass-rdr", "rdr-pass"):
        r = random_rule(rng, "match" if action == "pass-rdr" else "rdr")
        r.action, r.passes = ("pass", False) if action == "pass-rdr" else ("rdr", True)
        r.quick = action == "pass-rdr" and rng.random() < 0.35
        return r
    r = SimRule(action, rng.choice((None, "in", "out")) if action in ("pass", "block") else "in", rng.random() < 0.35)
    if action not in ("pass", "block"):
        r.quick = False
    if action == "block":
        r.reject = rng.random() < 0.3
    if rng.random() < 0.7:
        r.on = (rng.choice(IFS), rng.random() < 0.25)
    r.af = rng.choice((None, None, 4, 6)) if action in ("pass", "block") else 4
    if rng.random() < 0.6 or action in ("match", "rdr"):
        r.protos = rng.choice(((TCP,), (UDP,), (TCP, UDP), (ICMP,))) if action in ("pass", "block") else (TCP,)
    family_ok = (lambda n: r.af is None or IPNetwork(n.lstrip("!")).version == r.af)

    def hosts() -> list[tuple[bool, str]] | None:
        if rng.random() < 0.45:
            return None
        pool = [n for n in NETS if family_ok(n)] + ["<t>"]
        return [(rng.random() < 0.3, rng.choice(pool)) for _ in range(rng.choice((1, 1, 1, 2, 3)))]

    r.src, r.dst = hosts(), hosts()
    if r.protos and ICMP not in r.protos and (rng.random() < 0.6 or action in ("match", "rdr")):
        ops = [("=", rng.choice(PORTS)), ("!=", rng.choice(PORTS)), ("<", 1024), ("<=", 80), (">", 1023), (">=", 2000),
               (":", 79, 81), ("><", 79, 443), ("<>", 80, 2000)]
        r.ports = rng.sample(ops, rng.choice((1, 1, 2)))
    if action in ("match", "rdr"):
        r.rdr = (rng.choice(TARGETS), rng.choice((None, 80, 8080)))
    return r


def random_ruleset(seed: int, translation: str | None) -> list[SimRule]:
    rng = random.Random(seed)
    rules = [random_rule(rng, rng.choice(("pass", "block", "block"))) for _ in range(rng.randint(3, 10))]
    if translation == "match":
        for _ in range(rng.randint(1, 3)):
            rules.insert(rng.randint(0, len(rules)), random_rule(rng, "match"))
    elif translation == "pass-rdr":
        for _ in range(rng.randint(1, 3)):
            rules.insert(rng.randint(0, len(rules)), random_rule(rng, rng.choice(("pass-rdr", "pass-rdr", "match"))))
    elif translation == "rdr":
        rules[:0] = [random_rule(rng, rng.choice(("rdr", "rdr-pass", "no-rdr"))) for _ in range(rng.randint(1, 3))]
    return rules


def packets(rng: random.Random, count: int) -> list[dict]:
    out = []
    for _ in range(count):
        src = IPAddress(rng.choice(ADDRS))
        dst = IPAddress(rng.choice([a for a in ADDRS + TARGETS if IPAddress(a).version == src.version]))
        proto = rng.choice((TCP, TCP, UDP, ICMP))
        iif, oif = rng.sample(IFS, 2)
        out.append({"iif": iif, "oif": oif, "src": src, "dst": dst, "proto": proto, "dport": rng.choice(PORTS) if proto != ICMP else None})
    return out


@pytest.mark.parametrize("translation", [None, "match", "pass-rdr", "rdr"])
@pytest.mark.parametrize("seed", range(40))
def test_last_match_as_first_match_agrees_with_a_pf_simulator(seed: int, translation: str | None) -> None:
    rules = random_ruleset(seed, translation)
    table = "table <t> { " + " ".join(TABLE) + " }\n"
    text = table + "\n".join(r.text() for r in rules) + "\n"
    judge = Judge(parse(text, dialect="freebsd" if translation == "rdr" else "openbsd"), IFS)
    rng = random.Random(1000 + seed)
    decided = 0
    for pkt in packets(rng, 150):
        passed, dst, dport = sim_forward(rules, pkt)
        args = (pkt["iif"], pkt["oif"], str(pkt["src"]), str(pkt["dst"]), pkt["proto"], pkt["dport"])
        fate = judge.fate(*args)
        if fate == "maybe":
            continue  # a filter rule before a `match ... rdr-to` that saw the untranslated packet
        decided += 1
        assert fate == ("pass" if passed else "block"), f"{pkt} -> pf {passed}, IR {fate}\n{text}"
        if passed:
            got_dst, got_port, _ = judge.translate(*args)
            assert (got_dst, got_port) == (dst, dport), f"{pkt} -> pf {dst}:{dport}, IR {got_dst}:{got_port}\n{text}"
    assert decided >= 40, f"only {decided} of 150 packets decided\n{text}"


def test_a_later_rule_overrides_an_earlier_one() -> None:
    """The simulator and the IR agree on the smallest case where file-order first match
    (what the parser must not do) would pass the packet."""
    rules = [SimRule("pass", "in", on=("if0", False)), SimRule("block", "in", src=[(False, "10.0.0.7")]), SimRule("pass", "out")]
    judge = Judge(parse("\n".join(r.text() for r in rules)), IFS)
    for src, passed in (("10.0.0.7", False), ("10.0.0.8", True)):
        pkt = {"iif": "if0", "oif": "if1", "src": IPAddress(src), "dst": IPAddress("10.1.2.3"), "proto": TCP, "dport": 80}
        assert sim_forward(rules, pkt)[0] is passed
        assert judge.fate("if0", "if1", src, "10.1.2.3", TCP, 80) == ("pass" if passed else "block")


# -- 2. the renderer's output, audited ---------------------------------------------------------


def compiled(path: Path | str) -> tuple[Intent, dict[str, Ruleset]]:
    intent = build_intent(load_matrix(str(path)))
    return intent, compile_intent(intent)


def neighbour_discovery_line(text: str) -> int | None:
    """The renderer's rule for the firewall's own IPv6 neighbour discovery, which fwmatrix
    cannot model exactly without the firewall's addresses (`from self`): its one expected finding."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("pass out quick inet6 proto icmp6 from self to any icmp6-type"):
            return number
    return None


def round_trip(intent: Intent, firewall: str, text: str) -> AuditReport:
    """The audit as `fwmatrix audit -r FILE --pf-anchor local=EMPTY` reads it: knowing what the
    matrix says of the firewall (its interfaces, their addresses: `self` where all are given)."""
    facts = dict(pf.firewall_facts(intent.matrix, firewall), anchors=NO_ANCHORS)
    return audit(intent, firewall, pf.parse_ruleset(text, "rendered.conf", **facts), "test")  # type: ignore[arg-type]


def assert_round_trip(intent: Intent, firewall: str, text: str) -> AuditReport:
    """Zero findings, but for two things of the renderer's. With IPv6, its out rule for the
    firewall's own neighbour discovery cannot be modelled where the matrix gives not all of
    the firewall's addresses (`from self`; its icmp6 types are exact); it decides nothing
    while no in rule passes icmp6 (the in pass blocks every forwarded packet it could judge),
    else it is reported as unmodelled, and what depends on it as uncertain (the evaluator,
    judging it both ways, may also call rules after it shadowed: an issue of the evaluator);
    the ruleset without it is checked. And its `pass in` pre-filter drops
    the output interface, so one in rule can cover another: that shadowing is real, and
    reported."""
    lines = text.splitlines()
    nd = neighbour_discovery_line(text)
    if nd is not None:
        findings = round_trip(intent, firewall, text).findings
        unmodelled = [f.rule for f in findings if f.kind == "unmodelled"]
        may_pass_icmp6 = any(line.startswith("pass in quick on ") and "inet " not in line and ("icmp6" in line or "proto" not in line)
                             for line in lines)
        fw = intent.matrix.firewalls[firewall]
        self_known = set(fw.addresses) == set(fw.interfaces)  # then the rule is exact
        assert set(unmodelled) == ({f"rendered.conf:{nd}"} if may_pass_icmp6 and not self_known else set()), findings
        if unmodelled:
            assert all(f.kind in ("unmodelled", "shadowed") or "depends on" in f.message for f in findings), findings
            text = "\n".join(lines[:nd - 1] + [""] + lines[nd:]) + "\n"
    report = round_trip(intent, firewall, text)
    redundant_in = [f for f in report.findings if f.kind == "shadowed" and lines[int(f.rule.rsplit(":", 1)[1]) - 1].startswith("pass in quick on ")]
    # source NAT (nat-to) and the firewall's own services (pass in ... to self) are read back and judged
    rest = [f.to_json() for f in report.findings if f not in redundant_in]
    assert rest == [], "\n".join(map(str, rest)) + "\n\n" + text
    return report


@pytest.mark.parametrize("dialect", pf.DIALECTS)
@pytest.mark.parametrize("path", [SEED] + EXAMPLES, ids=["seed"] + [p.parent.name for p in EXAMPLES])
def test_rendered_rulesets_audit_clean(path: Path, dialect: str) -> None:
    intent, rulesets = compiled(path)
    for firewall, ruleset in rulesets.items():
        text = pf.render(ruleset, dialect)
        report = assert_round_trip(intent, firewall, text)
        assert report.openings_checked > 0


def test_dual_stack_neighbour_discovery_is_exact_when_self_is_known(tmp_path: Path) -> None:
    """The renderer's `pass out … from self … icmp6-type { neighbrsol neighbradv }` with every
    address of the firewall given: `self` is known and the icmp6 types are a packet space's, so
    the dual-stack ruleset audits with no finding, the rule kept."""
    doc = yaml.safe_load((ROOT / "examples" / "two-firewalls" / "matrix.yaml").read_text())
    doc["firewalls"]["perimeter"]["interfaces"] = {
        "wan0": {"zone": "internet", "address": ["203.0.113.1", "2001:db8:ffff::1"]},
        "dmz0": {"zone": "dmz", "address": "192.0.2.1"},
        "dmz6": {"zone": "dmz6", "address": "2001:db8:10::1"},
        "transit0": {"zone": "transit", "address": "198.51.100.1"},
    }
    path = tmp_path / "dual.yaml"
    path.write_text(yaml.safe_dump(doc))
    intent, rulesets = compiled(path)
    for dialect in pf.DIALECTS:
        text = pf.render(rulesets["perimeter"], dialect)
        assert neighbour_discovery_line(text) is not None
        assert round_trip(intent, "perimeter", text).findings == []


def test_seed_audits_with_no_finding_at_all() -> None:
    intent, rulesets = compiled(SEED)
    for dialect in pf.DIALECTS:
        report = audit(intent, "edge", pf.parse_ruleset(pf.render(rulesets["edge"], dialect), "edge.conf", anchors=NO_ANCHORS), "t")
        assert report.findings == [], [f.to_json() for f in report.findings]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=matrix_yaml())
def test_random_matrices_audit_clean(tmp_path: Path, text: str) -> None:
    path = tmp_path / "random.yaml"
    path.write_text(text)
    intent, rulesets = compiled(path)
    for firewall, ruleset in rulesets.items():
        for dialect in pf.DIALECTS:
            try:
                rendered = pf.render(ruleset, dialect)
            except pf.RenderError as exc:
                assert "protocol 132" in str(exc), exc  # OpenBSD's pf matches no sctp ports
                continue
            assert_round_trip(intent, firewall, rendered)


def test_renderer_anchor_left_unknown_is_reported() -> None:
    intent, rulesets = compiled(SEED)
    report = audit(intent, "edge", pf.parse_ruleset(pf.render(rulesets["edge"]), "edge.conf"), "t")
    unmodelled = [f for f in report.findings if f.kind == "unmodelled"]
    assert unmodelled and all("anchor 'local'" in f.message for f in unmodelled)
    # what the anchor may pass is uncertain, never missing; it may also match nothing,
    # so the rules it comes before in the chains are not shadowed
    assert not {f.kind for f in report.findings} & {"missing", "nat", "reply-blocked", "shadowed"}


# -- 3. mutations: each names what changed ------------------------------------------------------


@pytest.fixture(scope="module")
def seed_texts() -> dict[str, str]:
    _, rulesets = compiled(SEED)
    return {d: pf.render(rulesets["edge"], d) for d in pf.DIALECTS}


def audit_text(text: str) -> list:
    intent, _ = compiled(SEED)
    return audit(intent, "edge", pf.parse_ruleset(text, "edge.conf", anchors=NO_ANCHORS), "t").findings


def line_of(text: str, fragment: str) -> int:
    (number,) = [n for n, line in enumerate(text.splitlines(), 1) if fragment in line]
    return number


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_deleting_a_pass_rule_is_a_missing_opening(seed_texts: dict[str, str], dialect: str) -> None:
    text = seed_texts[dialect]
    out_rule = next(line for line in text.splitlines() if line.startswith("pass out quick on $dmz0_if") and "port 443" in line)
    findings = audit_text(edit(text, out_rule + "\n", ""))
    assert [(f.kind, f.opening.name) for f in findings] == [("missing", "operator-https")], findings


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_widening_a_port_range_is_excess_named_by_its_rule(seed_texts: dict[str, str], dialect: str) -> None:
    text = seed_texts[dialect].replace("port 4000:9999", "port 4000:10999")  # the in and the out rule
    findings = audit_text(text)
    out_line = line_of(text, "pass out quick on $lan0_if inet proto udp from 172.16.20.22 to 10.20.0.30 port 4000:10999")
    assert [(f.kind, f.rule) for f in findings] == [("excess", f"edge.conf:{out_line}")], findings
    assert findings[0].regions == ("dmz1 → lan0  172.16.20.22 → 10.20.0.30  udp/10000-10999  ct new",)


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_changing_a_translation_target_is_a_nat_finding(seed_texts: dict[str, str], dialect: str) -> None:
    old = "rdr-to 172.16.10.10" if dialect == "openbsd" else "-> 172.16.10.10"
    text = edit(seed_texts[dialect], old, old.replace("172.16.10.10", "172.16.10.99"))
    findings = audit_text(text)
    line = line_of(text, "172.16.10.99")
    assert [(f.kind, f.rule, f.opening.name) for f in findings] == [("nat", f"edge.conf:{line}", "operator-https")], findings
    assert "goes to 172.16.10.99, the matrix says 172.16.10.10" in findings[0].message


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_an_extra_pass_is_excess_named_by_its_rule(seed_texts: dict[str, str], dialect: str) -> None:
    extra = "pass quick inet proto tcp from any to 172.16.10.10 port 22 received-on $wan0_if\n"
    text = edit(seed_texts[dialect], '\nanchor "local"', "\n" + extra + 'anchor "local"')
    findings = audit_text(text)
    line = line_of(text, extra.strip())
    assert [(f.kind, f.rule) for f in findings] == [("excess", f"edge.conf:{line}")], findings
    assert all("tcp/22" in region for region in findings[0].regions)


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_a_block_quick_before_a_pass_is_missing(seed_texts: dict[str, str], dialect: str) -> None:
    text = seed_texts[dialect]
    sip = next(line for line in text.splitlines() if line.startswith("pass in quick on $wan0_if") and "port 5060:5061" in line)
    block = "block drop in quick on $wan0_if inet proto tcp from any to 172.16.10.21 port 5061"
    findings = audit_text(edit(text, sip, block + "\n" + sip))
    assert [(f.kind, f.opening.name) for f in findings] == [("missing", "operator-sip")], findings
    assert "only partly forwarded" in findings[0].message
    assert findings[0].regions == ("wan0 → dmz0  0.0.0.0/0 → 172.16.10.21  tcp/5061  ct new dnat",)


def test_a_block_quick_covering_a_pass_also_shadows_it(seed_texts: dict[str, str]) -> None:
    text = seed_texts["openbsd"]
    https = next(line for line in text.splitlines() if line.startswith("pass in quick on $wan0_if") and "port 443" in line)
    text = edit(text, https, "block drop in quick on $wan0_if inet proto tcp from any to 172.16.10.10 port 443\n" + https)
    findings = audit_text(text)
    assert sorted((f.kind, f.rule or f.opening.name) for f in findings) == [
        ("missing", "operator-https"), ("shadowed", f"edge.conf:{line_of(text, https)}")], findings


@pytest.mark.parametrize("nat", ["on egress inet nat-to (egress)", "on wan0 inet nat-to 192.0.2.1"])
def test_an_anchor_not_given_shadows_no_rule_before_it(nat: str) -> None:
    """pf's last match: the anchor at the end is first in the chains, so it may decide every
    packet before `pass out ... nat-to` and `block drop all`. Its rules are not given: it may
    also match nothing, and then they decide. Neither 'can never match' (the postrouting nat
    chain read the anchor's unknown translation as a certain accept: both were shadowed)."""
    text = f'block drop all\npass out {nat}\nanchor "x/*"\n'
    ruleset = pf.parse_ruleset(text, "rt.conf")
    effective = evaluate(ruleset, interfaces_of(ruleset, ["wan0", "lan0"]))
    assert "rt.conf:3" in {n.origin for n in effective.unmodelled}
    assert effective.shadowed == []


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_a_port_forward_passed_without_the_tag_is_reachable_directly(seed_texts: dict[str, str], dialect: str) -> None:
    """A hand-written pf.conf whose pass rules for a port forward do not ask for the
    translation's tag: the target is open to packets sent to it directly."""
    text = seed_texts[dialect]
    # openbsd: the in and the out rule; freebsd: the in rule (the out rule then asks for a tag
    # that no longer says translated)
    lines = [line.replace(" tagged fwm_dnat", "") if "to 172.16.10.10 port 443" in line else line for line in text.splitlines()]
    text = "\n".join(lines) + "\n"
    assert text.count("to 172.16.10.10 port 443") == 2 and text.count("tagged fwm_dnat") == (6 if dialect == "openbsd" else 3)
    findings = audit_text(text)
    assert [f.kind for f in findings] == ["excess"], findings
    assert "reachable directly" in findings[0].message
    assert findings[0].regions == ("wan0 → dmz0  0.0.0.0/0 → 172.16.10.10  tcp/443  ct new",)
    out_line = line_of(text, "pass out quick on $dmz0_if inet proto tcp from any to 172.16.10.10 port 443")
    assert findings[0].rule == f"edge.conf:{out_line}"


TRANSLATIONS = ("rdr on em0 proto tcp to 192.0.2.1 port 80 tag FWD -> 10.0.0.5\n"
                "rdr on em0 proto tcp to 192.0.2.1 port 2222 tag FWD -> 10.0.0.5 port 22\n")
FILTER = ("block all\npass in quick on em0 proto tcp to 10.0.0.5 port { 22 80 } tagged FWD\n"
          "pass out quick on em1 proto tcp to 10.0.0.5 port { 22 80 } tagged FWD\n")


@pytest.mark.parametrize("text, exact", [
    (TRANSLATIONS + FILTER, True),
    # openbsd: match rules tag what they translate; the filter rules come after them
    ("block all\nmatch in on em0 proto tcp to 192.0.2.1 port 80 rdr-to 10.0.0.5 tag FWD\n" + FILTER.split("\n", 1)[1], True),
    # a filter rule sets it too: it can mark packets that were not translated
    (TRANSLATIONS + FILTER + "pass in on em2 tag FWD\n", False),
    # one translation does not set it: a packet it translates is translated, untagged
    (TRANSLATIONS + "rdr on em0 proto tcp to 192.0.2.1 port 8080 -> 10.0.0.5 port 80\n" + FILTER, False),
    # `no rdr` tags what it does not translate
    ("no rdr on em0 proto tcp from 198.51.100.1 tag FWD\n" + TRANSLATIONS + FILTER, False),
    # binat tags the packets of its outbound half too
    (TRANSLATIONS.replace("-> 10.0.0.5\n", "-> 10.0.0.5\nbinat on em0 from 10.0.0.6 to any tag FWD -> 192.0.2.6\n") + FILTER, False),
    # a non-quick rule that sets another tag may replace it before `tagged` is read
    (TRANSLATIONS + FILTER + "pass in on em0 proto tcp tag OTHER\n", False),
])
def test_a_tag_set_by_translation_rules_only_is_ct_status_dnat(text: str, exact: bool) -> None:
    rs = parse(text)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.startswith("pass in quick on em0"))
    (rule,) = rules_at(rs, "in", line)
    translated = Match(("ct.status",), (("dnat",),))
    if exact:
        assert rule.matches == (m("iif", "em0"), translated, m("l4proto", 6), m("ip.daddr", "10.0.0.5/32"), m("dport", 22, 80))
        (out,) = rules_at(rs, "out", line + 1)
        assert translated in out.matches and not unmodelled_texts(out)
        judge = Judge(rs, ("em0", "em1"))
        assert judge.fate("em0", "em1", "198.51.100.9", "192.0.2.1", TCP, 80) == "pass"  # translated
        assert judge.fate("em0", "em1", "198.51.100.9", "10.0.0.5", TCP, 80) == "block"  # sent to directly
    else:
        assert translated not in rule.matches and "tagged FWD" in unmodelled_texts(rule)[0]


def test_the_renderers_freebsd_tags_read_back() -> None:
    """fwm_in_IF_dnat (set by rules for translated packets) is "in on IF and translated";
    fwm_in_IF, whose rules all have a twin before them, "in on IF and not"; without the twins,
    just "in on IF", and the twins' packets are left open where they may meet the rule."""
    text = ("rdr on em0 proto tcp to 192.0.2.1 port 80 tag fwm_dnat -> 10.0.0.5\nblock all\n"
            "pass in quick on em0 proto tcp to 10.0.0.0/24 port 80 tagged fwm_dnat tag fwm_in_em0_dnat\n"
            "pass in quick on em0 proto tcp to 10.0.0.0/24 port 80 tag fwm_in_em0\n"
            "pass out quick on em1 proto tcp to 10.0.0.5 port 80 tagged fwm_in_em0_dnat\n"
            "pass out quick on em2 proto tcp to 10.0.0.0/24 port 80 tagged fwm_in_em0\n")
    rs = parse(text, dialect="freebsd")
    translated = Match(("ct.status",), (("dnat",),))
    assert rules_at(rs, "out", 5)[0].matches[:3] == (m("oif", "em1"), m("iif", "em0"), translated)
    assert rules_at(rs, "out", 6)[0].matches[:3] == (m("oif", "em2"), m("iif", "em0"), m("ct.status", "dnat", negate=True))
    judge = Judge(rs, ("em0", "em1", "em2"))
    assert judge.fate("em0", "em1", "198.51.100.9", "192.0.2.1", TCP, 80) == "pass"
    assert judge.fate("em0", "em1", "198.51.100.9", "10.0.0.5", TCP, 80) == "block"  # not translated: fwm_in_em0
    assert judge.fate("em0", "em2", "198.51.100.9", "192.0.2.1", TCP, 80) == "block"  # translated: fwm_in_em0_dnat
    assert judge.fate("em0", "em2", "198.51.100.9", "10.0.0.7", TCP, 80) == "pass"
    # without a twin (a rule for translated packets that covers it), a translated packet may
    # get the plain tag: fwm_in_em0 is "in on em0", and what the other rule passes is left open
    lonely = parse(edit(text, "to 10.0.0.0/24 port 80 tagged fwm_dnat", "to 10.0.0.5 port 80 tagged fwm_dnat"), dialect="freebsd")
    (plain,) = [r for r in rules_at(lonely, "out", 6) if isinstance(r.action, Verdict)]
    assert plain.matches[:2] == (m("oif", "em2"), m("iif", "em0")) and not any(x.fields == ("ct.status",) for x in plain.matches)
    judge = Judge(lonely, ("em0", "em1", "em2"))
    assert judge.fate("em0", "em2", "198.51.100.9", "192.0.2.1", TCP, 80) == "maybe"  # pf: blocked (fwm_in_em0_dnat)
    assert judge.fate("em0", "em1", "198.51.100.9", "192.0.2.1", TCP, 80) == "maybe"  # pf: passed (the narrow rule is first)
    assert judge.fate("em0", "em2", "198.51.100.9", "10.0.0.7", TCP, 80) == "pass"


# -- 4. the corpus ----------------------------------------------------------------------------


def corpus(name: str, **kw) -> Ruleset:
    return pf.parse_ruleset((CORPUS / name).read_text(), name, **kw)


def test_every_corpus_file_parses() -> None:
    names = sorted(p.name for p in CORPUS.iterdir())
    assert len(names) >= 6
    for name in names:
        ruleset = corpus(name)
        assert {c.name for c in ruleset.tables[0].chains} >= {"in", "out"}


def test_openbsd_home_gateway() -> None:
    rs = corpus("openbsd-home-gateway.conf")
    name = "openbsd-home-gateway.conf"
    # set skip on lo: loopback forwards nothing, so no rule; `match ... scrub`, nat-to: nothing
    assert not any(isinstance(x, Match) and x.fields == ("iif",) and ("lo",) in x.values for r in chain(rs, "in").rules for x in r.matches)
    # the macro list expands: both interfaces, IPv4 only
    (lan_dmz,) = rules_at(rs, "in", 30, name)
    assert lan_dmz.matches == (m("nfproto", 4), m("iif", "em1", "em2")) and lan_dmz.action == Verdict("accept")
    # egress is a group: unmodelled, never guessed; the martians table loses what is never forwarded
    (martians,) = rules_at(rs, "in", 25, name)
    assert "interface group 'egress'" in unmodelled_texts(martians)[0]
    assert IPNetwork("127.0.0.0/8") not in [k[0] for k in martians.matches[0].values] and (IPNetwork("10.0.0.0/8"),) in martians.matches[0].values
    # antispoof: networks of the interface, unknown here
    assert any("em1:network (antispoof)" in t for r in rules_at(rs, "in", 22, name) for t in unmodelled_texts(r))
    # the port forward through the uplink: DNAT to the web server, judged both ways
    (dnat,) = rules_at(rs, "rdr", 31, name)
    assert dnat.action == Dnat(4, net("192.168.20.80/32"), None)
    assert m("dport", 80, 443) in dnat.matches and "(egress)" in unmodelled_texts(dnat)[0]
    # bruteforce table filled at run time, state limits: unmodelled
    assert any("added at run time" in t for r in rules_at(rs, "in", 38, name) for t in unmodelled_texts(r))
    (ssh,) = rules_at(rs, "in", 36, name)
    assert isinstance(ssh.action, UnmodelledAction) and "state limits" in ssh.action.text  # pass, or drop past them
    # last match: the DMZ may not reach the LAN (the block comes after the pass)
    judge = Judge(rs, ("em0", "em1", "em2"))
    assert judge.fate("em2", "em1", "192.168.20.9", "192.168.10.7", TCP, 80) != "pass"  # blocked, or uncertain (antispoof)
    assert judge.fate("em2", "em1", "192.168.20.80", "192.168.10.5", TCP, 80) != "pass"  # only ssh is let back
    assert judge.fate("em1", "em2", "192.168.10.7", "192.168.20.9", TCP, 443) == "maybe"  # <bruteforce>, antispoof
    assert judge.fate("em1", "em2", "192.168.10.7", "192.168.20.9", TCP, 443, ct=ESTABLISHED) == "pass"


def test_pfsense_like() -> None:
    name = "pfsense-like.conf"
    rs = corpus(name)
    judge = Judge(rs, ("em0", "em1", "em2"))
    # rdr (no pass) then a filter rule for the translated packet: forwarded exactly
    assert judge.translate("em0", "em2", "192.0.2.100", "198.51.100.10", TCP, 443, )[:2] == ("10.20.0.80", 443)
    assert judge.fate("em0", "em2", "192.0.2.100", "198.51.100.10", TCP, 443) == "pass"
    # the same host's ssh via port 8022 -> 22: only from the admin net
    assert judge.translate("em0", "em2", "192.0.2.3", "198.51.100.10", TCP, 8022)[:2] == ("10.20.0.80", 22)
    assert judge.fate("em0", "em2", "192.0.2.3", "198.51.100.10", TCP, 8022) == "pass"
    assert judge.fate("em0", "em2", "192.0.2.30", "198.51.100.10", TCP, 8022) == "block"
    # the table with a hole: 203.0.113.77 is not blocked, its neighbours are (block return)
    assert judge.fate("em0", "em2", "203.0.113.77", "198.51.100.10", TCP, 80) == "pass"
    assert judge.fate("em0", "em2", "203.0.113.76", "198.51.100.10", TCP, 80) == "block"
    (blocked,) = rules_at(rs, "in", 26, name)
    assert blocked.action == Verdict("reject")  # block without drop/return: set block-policy return
    # rdr pass: the translated packet skips the in rules (the block from <blocked> too), and
    # no other translation makes its image: exact, by `ct status dnat`
    (accept,) = [r for r in chain(rs, "in").rules if r.origin == f"{name}:18 (translated)"]
    assert not unmodelled_texts(accept) and m("ct.status", "dnat") in accept.matches
    assert judge.fate("em0", "em2", "192.0.2.100", "198.51.100.10", TCP, 25) == "pass"
    assert judge.fate("em0", "em2", "203.0.113.76", "198.51.100.10", TCP, 25) == "pass"
    assert judge.fate("em0", "em2", "192.0.2.100", "10.20.0.25", TCP, 25) == "block"  # the mail server itself
    # `no rdr` before the hairpin rdr on the LAN side
    assert judge.translate("em1", "em2", "10.10.3.4", "198.51.100.10", TCP, 8022)[:2] == ("198.51.100.10", 8022)
    assert judge.translate("em1", "em2", "10.10.3.4", "198.51.100.10", TCP, 80)[:2] == ("10.20.0.80", 80)
    # nat is skipped (source NAT); skip on pfsync0: not filtered there
    assert judge.fate("pfsync0", "em2", "10.9.9.9", "10.20.0.80", UDP, 8370) == "pass"


def test_last_match_wins() -> None:
    rs = corpus("last-match-wins.conf")
    judge = Judge(rs, ("vio0", "vio1"))
    out = partial(judge.fate, "vio1", "vio0")
    inward = partial(judge.fate, "vio0", "vio1")
    assert out("10.1.0.5", "192.0.2.1", TCP, 443) == "pass"
    assert out("10.1.0.66", "192.0.2.1", TCP, 443) == "block"  # the later block
    assert out("10.1.0.66", "192.0.2.1", UDP, 53) == "pass"  # the even later pass
    assert out("10.2.0.5", "192.0.2.1", TCP, 443) == "block"  # only the first rule: block in all
    assert inward("198.51.100.7", "10.1.0.10", TCP, 80) == "pass"
    assert inward("198.51.100.7", "10.1.0.11", TCP, 80) == "block"
    assert inward("198.51.100.7", "10.1.0.11", TCP, 443) == "pass"
    assert inward("198.51.100.7", "10.1.0.20", TCP, 1023) == "block"
    assert inward("198.51.100.7", "10.1.0.20", TCP, 6000) == "pass"  # >< excludes its ends
    assert inward("198.51.100.7", "10.1.0.20", TCP, 6005) == "block"
    assert inward("198.51.100.7", "10.1.0.20", TCP, 6010) == "pass"
    assert inward("198.51.100.7", "10.1.0.20", UDP, 53) == "block"
    assert inward("198.51.100.7", "10.1.0.20", UDP, 5353) == "pass"
    # `no state`: the replies meet the rules, which fwmatrix leaves open
    assert judge.fate("vio1", "vio0", "10.1.0.20", "198.51.100.7", UDP, 40000, ct=ESTABLISHED) == "maybe"
    assert judge.fate("vio1", "vio0", "10.1.0.10", "198.51.100.7", TCP, 40000, ct=ESTABLISHED) == "pass"
    # IR order: the first rule of the file is the last rule of the chain
    assert chain(rs, "in").rules[-1].origin == "last-match-wins.conf:6"
    assert chain(rs, "in").rules[-1].matches == ()


def test_pfctl_sr_listing() -> None:
    name = "pfctl-sr-openbsd.txt"
    rs = corpus(name, tables={"abusers": "203.0.113.66\n198.51.100.0/24"}, anchors={"ops": "pass in quick on em2 proto tcp to port 2222\n"})
    judge = Judge(rs, ("em0", "em1", "em2"))
    # `@N` prefixes and counter lines dropped, line numbers kept
    assert rules_at(rs, "in", 9, name)[0].matches == (m("iif", "em0"), m("l4proto", 6), m("ip.daddr", "172.16.10.10/32"), m("dport", 443))
    assert judge.translate("em0", "em1", "192.0.2.1", "203.0.113.10", TCP, 443)[:2] == ("172.16.10.10", 443)
    assert judge.fate("em0", "em1", "192.0.2.1", "203.0.113.10", TCP, 443) == "pass"
    assert judge.fate("em0", "em1", "198.51.100.9", "203.0.113.10", TCP, 443) == "block"  # the table given
    assert judge.fate("em0", "em2", "192.0.2.1", "203.0.113.10", TCP, 443) == "block"  # received-on
    assert judge.fate("em2", "em1", "10.20.1.1", "172.16.10.5", TCP, 22) == "pass"
    assert judge.fate("em2", "em1", "10.20.1.1", "172.16.10.5", TCP, 2222) == "block"  # out: the anchor is only in
    (anchored,) = rules_at(rs, "in", 1, f"{name}[ops]")
    assert anchored.matches[0] == m("iif", "em2")
    # without the tables and anchors given: unmodelled, not guessed
    bare = corpus(name)
    assert any("table <abusers>" in t for r in rules_at(bare, "in", 8, name) for t in unmodelled_texts(r))
    assert [r.action for r in rules_at(bare, "in", 17, name)] == [UnmodelledAction("anchor 'ops' (its rules are not in the file)")]


def test_pfctl_sa_listing() -> None:
    name = "pfctl-sa-freebsd.txt"
    rs = corpus(name)
    judge = Judge(rs, ("vtnet0", "vtnet1"))
    assert judge.translate("vtnet0", "vtnet1", "198.51.100.4", "192.0.2.1", UDP, 51820)[:2] == ("10.0.0.51", 51820)
    assert judge.fate("vtnet0", "vtnet1", "198.51.100.4", "192.0.2.1", UDP, 51820) == "pass"
    assert judge.translate("vtnet0", "vtnet1", "198.51.100.4", "192.0.2.1", TCP, 2222)[:2] == ("10.0.0.22", 22)
    assert judge.fate("vtnet0", "vtnet1", "198.51.100.4", "192.0.2.1", TCP, 2222) == "pass"  # rdr pass
    assert judge.fate("vtnet0", "vtnet1", "198.51.100.4", "10.0.0.22", TCP, 22) == "block"
    assert judge.fate("vtnet1", "vtnet0", "10.0.0.9", "192.0.2.99", TCP, 443) == "pass"
    assert judge.fate("vtnet0", "vtnet1", "198.51.100.4", "10.0.0.9", TCP, 443) == "block"
    # the states, info, timeouts, limits and tables sections are not rules
    origins = {r.origin for c in rs.tables[0].chains for r in c.rules}
    assert max(int(o.rsplit(":", 1)[1]) for o in origins if o.rsplit(":", 1)[1].isdigit()) == 15


def test_openbsd_translations() -> None:
    name = "openbsd-translations.conf"
    rs = corpus(name)
    judge = Judge(rs, ("ix0", "ix1", "ix2"))
    t = judge.translate
    # the proxy's own web traffic: the first match rule already sent it to port 3128, so
    # the second (meant to exempt the proxy) never matches it
    assert t("ix1", "ix0", "10.5.0.3", "192.0.2.1", TCP, 80) == ("10.5.0.3", 3128, f"{name}:14")
    assert t("ix1", "ix0", "10.5.0.9", "192.0.2.1", TCP, 80)[:2] == ("10.5.0.3", 3128)
    # two match rules in a row: the second sees the first one's packet; last match wins
    assert t("ix0", "ix1", "192.0.2.1", "198.51.100.20", TCP, 8443) == ("10.5.0.41", 443, f"{name}:20")
    assert t("ix0", "ix1", "192.0.2.1", "10.5.0.40", TCP, 443)[:2] == ("10.5.0.41", 443)
    # pass ... rdr-to translates only when it decides: not for the source a later rule passes
    assert t("ix0", "ix1", "192.0.2.1", "198.51.100.20", TCP, 25) == ("10.5.0.25", 25, f"{name}:24")
    assert t("ix0", "ix1", "192.0.2.99", "198.51.100.20", TCP, 25)[:2] == ("198.51.100.20", 25)
    # the translated web packet is passed in (rule 21 sees it translated) and out
    assert judge.fate("ix0", "ix1", "192.0.2.1", "198.51.100.20", TCP, 8443) == "pass"
    # tags: INSIDE is set only in on ix1 (and every packet in on ix1 meets a block rule):
    # tagged INSIDE is "received on ix1", except where rule 34, which sets no tag, passes
    assert judge.fate("ix1", "ix0", "10.5.0.9", "192.0.2.1", UDP, 53) == "pass"
    assert judge.fate("ix2", "ix0", "10.6.0.9", "192.0.2.1", UDP, 53) == "block"
    assert judge.fate("ix2", "ix1", "10.6.0.9", "10.5.0.9", UDP, 53) == "pass"  # received-on
    assert judge.fate("ix1", "ix0", "10.7.0.1", "10.5.0.41", TCP, 443) == "maybe"
    (exact,) = [r for r in rules_at(rs, "out", 32, name) if isinstance(r.action, Verdict)]
    assert exact.matches == (m("oif", "ix0"), m("iif", "ix1"))


# -- 5. grammar and semantics, piece by piece ---------------------------------------------------


@pytest.mark.parametrize("spec, ranges", [
    ("port 80", ["80"]), ("port = 80", ["80"]), ("port != 80", ["0-79", "81-65535"]), ("port < 1024", ["0-1023"]),
    ("port <= 1024", ["0-1024"]), ("port > 1023", ["1024-65535"]), ("port >= 1024", ["1024-65535"]),
    ("port 80:90", ["80-90"]), ("port 80 : 90", ["80-90"]), ("port 1000 >< 2000", ["1001-1999"]),
    ("port 1000 <> 2000", ["0-999", "2001-65535"]), ("port { 80, 443 8080:8081 }", ["80", "443", "8080-8081"]),
    ("port { 80 != 443 }", ["0-442", "444-65535"]), ("port https", ["443"]), ("port { www ssh }", ["22", "80"]),
])
def test_port_operators(spec: str, ranges: list[str]) -> None:
    (rule,) = chain(parse(f"pass in quick proto tcp to any {spec}\n"), "in").rules[1:]
    assert rule.matches == (m("l4proto", 6), m("dport", *ranges))


def test_service_names_the_bsds_agree_on() -> None:
    """`mdns` is 5353 wherever pfctl can read it (FreeBSD's and IANA's lists, which macOS ships; OpenBSD's
    has no such name, so pfctl refuses it there); `imap4-ssl` is 585 in IANA's list and 993 in others,
    `privoxy` only in IANA's: which the firewall has is not in the file, so both stay unmodelled."""
    (mdns,) = chain(parse("pass in quick proto udp to 10.0.0.5 port mdns\n"), "in").rules[1:]
    assert mdns.matches == (m("l4proto", 17), m("ip.daddr", "10.0.0.5/32"), m("dport", "5353"))
    for name in ("imap4-ssl", "privoxy"):
        (rule,) = chain(parse(f"pass in quick proto tcp to port {name}\n"), "in").rules[1:]
        assert unmodelled_texts(rule) == [f"port {name} (a service name fwmatrix does not know)"]


def test_prio_pair_only_queues_and_prio_alone_stays_open() -> None:
    """`prio (X, Y)` assigned the queueing priorities before pfctl wrote it `set prio (X, Y)` (OpenBSD 5.0,
    regress pf101): it queues and never decides, so the rule is exact. `prio N` alone assigned one then
    and matches the packet's priority now (pf.conf(5)), which the audit's packets do not carry (a vlan's
    priority field may set it): judged both ways."""
    rs = parse("pass in quick proto tcp to port 22 prio (5, 2)\npass in quick proto tcp to port 23 prio 3\n")
    (pair,) = rules_at(rs, "in", 1)
    assert pair.matches == (m("l4proto", 6), m("dport", "22")) and isinstance(pair.action, Verdict)
    assert [unmodelled_texts(r) for r in rules_at(rs, "in", 2)] == [["prio 3"]]


def test_lists_negations_and_families() -> None:
    rs = parse("pass in quick proto { tcp udp } from { 10.0.0.0/8 !10.1.0.0/16 2001:db8::/32 } to any\n")
    rules = chain(rs, "in").rules[1:]
    assert [r.matches for r in rules] == [
        (m("l4proto", 6, 17), m("ip.saddr", "10.0.0.0/8")),
        (m("l4proto", 6, 17), m("ip.saddr", "10.1.0.0/16", negate=True)),
        (m("l4proto", 6, 17), m("ip6.saddr", "2001:db8::/32")),
    ]
    assert all(r.origin == "t.conf:1" for r in rules)


def test_tables_longest_prefix_and_families() -> None:
    rs = parse("table <t> const { 10.0.0.0/8, !10.1.0.0/16, 10.1.2.0/24 fd00::/8 }\nblock in quick from ! <t>\n")
    v4, v6 = rules_at(rs, "in", 2)
    assert v4.matches[0].negate and set(v4.matches[0].values) >= {(net("10.1.2.0/24"),), (net("10.0.0.0/16"),)}
    assert (net("10.1.0.0/16"),) not in v4.matches[0].values
    assert v6.matches == (m("ip6.saddr", "fd00::/8", negate=True),)


def test_address_forms() -> None:
    rs = parse("pass in quick from 10.0.0.3 - 10.0.0.6 to 10/8\npass in quick inet6 from any to ! self\npass in quick to { self 10.9.9.9 }\n")
    a, b, c = chain(rs, "in").rules[1:]
    assert a.matches == (m("ip.saddr", "10.0.0.3/32", "10.0.0.4/31", "10.0.0.6/32"), m("ip.daddr", "10.0.0.0/8"))
    assert b.matches == (m("nfproto", 6),)  # a forwarded packet never goes to the firewall itself
    assert c.matches == (m("ip.daddr", "10.9.9.9/32"),)


def test_macros_continuations_and_comments() -> None:
    text = 'ifs = "{ em0 em1 }"\nports = "{ 22 443 }"  # a comment \\\nstill the comment\nall_ifs = "{" $ifs em2 "}"\n' \
           "pass in quick on $ifs proto tcp \\\n  to any port $ports\n"
    (rule,) = chain(parse(text), "in").rules[1:]
    assert rule.origin == "t.conf:5"
    assert rule.matches == (m("iif", "em0", "em1"), m("l4proto", 6), m("dport", 22, 443))


def test_interfaces_and_groups() -> None:
    rs = parse("block in quick on ! em0\npass in quick on { em1 em2 } received-on em1\npass in quick on egress\npass in quick on any\n")
    a, b, c, d = (rules_at(rs, "in", line)[0] for line in (1, 2, 3, 4))
    assert a.matches == (m("iif", "em0", negate=True),)
    assert b.matches == (m("iif", "em1", "em2"), m("iif", "em1"))
    assert "interface group 'egress'" in unmodelled_texts(c)[0]
    assert d.matches == ()
    # FreeBSD may rename interfaces: a name without a unit number is an interface there
    (lan,) = chain(parse("pass in quick on lan\n", dialect="freebsd"), "in").rules[1:]
    assert lan.matches == (m("iif", "lan"),)


def test_directions_make_two_chains() -> None:
    rs = parse("pass quick on em0 proto udp\npass in quick on em1\npass out quick on em2\n")
    assert [r.matches for r in chain(rs, "in").rules[1:]] == [(m("iif", "em0"), m("l4proto", 17)), (m("iif", "em1"),)]
    assert [r.matches for r in chain(rs, "out").rules[1:]] == [(m("oif", "em0"), m("l4proto", 17)), (m("oif", "em2"),)]
    assert (chain(rs, "in").priority, chain(rs, "out").priority) == (-1, 0)
    assert all(c.policy == "accept" and c.hook == "forward" for c in (chain(rs, "in"), chain(rs, "out")))
    assert chain(rs, "in").rules[0].matches == (ESTABLISHED_MATCH,)


def test_block_policies() -> None:
    rs = parse("block in quick from 10.0.0.1\nblock return-rst in quick proto tcp from 10.0.0.2\nset block-policy return\nblock in quick from 10.0.0.3\nblock drop in quick from 10.0.0.4\n")
    assert [rules_at(rs, "in", line)[0].action for line in (1, 2, 4, 5)] == [Verdict("drop"), Verdict("reject"), Verdict("reject"), Verdict("drop")]


def test_anchors_inline_quick_and_unknown() -> None:
    text = ("block all\nanchor \"a\" in on em0 {\n  pass proto tcp to port 22\n  block proto tcp to port 23\n}\n"
            "anchor \"b\" quick on em1 {\n  pass all\n  block from 10.0.0.1\n}\nanchor \"c\"\n")
    rs = parse(text)
    origins = [r.origin for r in chain(rs, "in").rules[1:]]
    # quick anchor b (its own last match first) and the opaque anchor c come first, then the
    # non-quick rules reversed: a's rules are inline
    assert origins == ["t.conf:8", "t.conf:7", "t.conf:10", "t.conf:4", "t.conf:3", "t.conf:1"]
    assert rules_at(rs, "in", 3)[0].matches == (m("iif", "em0"), m("l4proto", 6), m("dport", 22))
    assert rules_at(rs, "in", 8)[0].matches == (m("iif", "em1"), m("ip.saddr", "10.0.0.1/32"))
    assert rules_at(rs, "out", 7)[0].matches == (m("oif", "em1"),)  # `pass all` in b: both passes
    assert not rules_at(rs, "out", 3)  # a is for `in` only
    assert rules_at(rs, "in", 10)[0].action == UnmodelledAction("anchor 'c' (its rules are not in the file)")
    given = parse(text, anchors={"c": "pass in quick proto udp\n"})
    assert rules_at(given, "in", 1, "t.conf[c]")[0].matches == (m("l4proto", 17),)


def test_unmodelled_constructs_are_kept() -> None:
    text = "\n".join([
        "pass in quick proto icmp icmp-type echoreq code 0",      # 1
        "pass in quick proto tcp from any port 1024:65535",       # 2
        "pass in quick proto tcp user root",                       # 3
        "pass in quick proto tcp from any os \"OpenBSD\"",         # 4
        "pass in quick probability 20%",                           # 5
        "pass in quick route-to (em3 192.0.2.1) from 10.0.0.0/8",  # 6
        "pass in quick from (em0)",                                # 7
        "pass in quick from em0:network",                          # 8
        "pass in quick from www.example.org",                      # 9
        "pass in quick from no-route",                             # 10
        "pass in quick from self",                                 # 11
        "table <f> persist file \"/etc/pf.blocked\"",              # 12
        "block in quick from <f>",                                 # 13
        "pass in quick tos lowdelay",                              # 14
        "pass in quick on rdomain 2",                              # 15
        "pass in quick af-to inet6 from 2001:db8::1",              # 16
        "pass in quick proto tcp divert-to 127.0.0.1 port 8080",   # 17
        "pass in quick proto xyzzy",                               # 18
        "pass in quick proto tcp to port fancy-service",           # 19
        "pass in quick all max-pkt-rate 100/10",                   # 20
        "pass in quick proto tcp keep state (max 100)",            # 21
        "pass in quick tagged FOO",                                # 22
        "include \"/etc/pf.extra\"",                               # 23
    ]) + "\n"
    rs = parse(text)
    for line in [3, 4, 5, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20]:
        rules = rules_at(rs, "in", line)
        assert rules and all(unmodelled_texts(r) for r in rules), (line, rules)
    assert Match(("icmp.type", "icmp.code"), ((8, 0),)) in rules_at(rs, "in", 1)[0].matches  # echoreq code 0 (tests/test_pf_icmp.py)
    # route-to em3: exact where the route leads out of em3 already (tests/test_pf_route.py)
    assert sorted(bool(unmodelled_texts(r)) for r in rules_at(rs, "in", 6)) == [False, True]
    # state limits: the rule decides, pass or drop past them (an unmodelled verdict, not a match)
    assert all(isinstance(r.action, UnmodelledAction) for r in rules_at(rs, "in", 21))
    # source ports are written as the IR's sport, which the evaluator judges both ways
    assert rules_at(rs, "in", 2)[0].matches == (m("l4proto", 6), Match(("sport",), ((PortRange(1024, 65535),),)))
    assert rules_at(rs, "in", 22) == []  # no rule sets the tag: `tagged FOO` never matches
    # text that is no file: nothing to resolve the include from (tests/test_pf_include.py reads files)
    assert rules_at(rs, "in", 23)[0].action == UnmodelledAction(
        "include /etc/pf.extra (its rules are not read: the ruleset is no file, so there is no directory to resolve it from as pfctl would)")


def test_no_catch_all_block_leaves_replies_open() -> None:
    judge = Judge(parse("block in quick on em0 from 10.0.0.1\n"), ("em0", "em1"))
    # a packet no rule matches passes without state: its reply meets the rules
    assert judge.fate("em0", "em1", "10.0.0.1", "10.9.9.9", TCP, 80, ct=ESTABLISHED) == "maybe"
    assert judge.fate("em0", "em1", "10.0.0.2", "10.9.9.9", TCP, 80, ct=ESTABLISHED) == "pass"
    closed = Judge(parse("block all\npass quick\n"), ("em0", "em1"))
    assert closed.fate("em0", "em1", "10.0.0.1", "10.9.9.9", TCP, 80, ct=ESTABLISHED) == "pass"


def test_set_skip_passes_everything_on_that_interface() -> None:
    judge = Judge(parse("set skip on { lo0 enc0 }\nblock all\n"), ("em0", "enc0"))
    assert judge.fate("enc0", "em0", "10.0.0.1", "10.0.0.2", TCP, 80) == "block"  # out on em0 is filtered
    assert judge.fate("enc0", "enc0", "10.0.0.1", "10.0.0.2", TCP, 80) == "pass"
    assert judge.fate("em0", "em0", "10.0.0.1", "10.0.0.2", TCP, 80) == "block"


def test_nat_pass_and_binat() -> None:
    text = ("nat pass on em0 from 10.0.0.0/24 to any -> 192.0.2.1\nbinat on em0 from 10.0.0.5 to any -> 192.0.2.5\n"
            "block all\npass in quick on em0 proto tcp to 10.0.0.5 port 80\npass in quick on em1\n")
    judge = Judge(parse(text), ("em0", "em1"))
    assert judge.fate("em1", "em0", "10.0.0.9", "198.51.100.1", TCP, 443) == "pass"  # nat pass: out unfiltered
    assert judge.fate("em1", "em0", "10.0.1.9", "198.51.100.1", TCP, 443) == "block"
    assert judge.translate("em0", "em1", "198.51.100.1", "192.0.2.5", TCP, 80)[:2] == ("10.0.0.5", 80)
    assert judge.fate("em0", "em1", "198.51.100.1", "192.0.2.5", TCP, 80) == "block"  # in passes, out: block all
    newer = parse("pass on em0 from 10.0.0.6 to any binat-to 192.0.2.6\n")
    assert rules_at(newer, "rdr", 1)[0].action == Dnat(4, net("10.0.0.6/32"), None)
    assert rules_at(newer, "rdr", 1)[0].matches == (m("iif", "em0"), m("ip.daddr", "192.0.2.6/32"))


def test_translation_targets_that_are_not_one_address_are_unmodelled() -> None:
    rs = parse("match in on em0 proto tcp to port 80 rdr-to { 10.0.0.1 10.0.0.2 } round-robin\n"
               "rdr on em0 proto tcp to port 2000:2999 -> 10.0.0.3 port 4000:*\n")
    actions = [r.action for r in chain(rs, "rdr").rules]
    assert all(isinstance(a, UnmodelledAction) for a in actions) and len(actions) == 2


@pytest.mark.parametrize("key", ["hex-key", "0x0123456789abcdef0123456789abcdef", '"a phrase"'])
def test_a_source_hash_key_is_any_word_but_a_keyword(key: str) -> None:
    """pf.conf(5): `source-hash [key]`, the key a hex number or a string pfctl hashes; the keyword
    after it (static-port) is still an option, not a key."""
    rs = parse(f"nat on em0 inet from any to any -> 192.0.2.16/28 source-hash {key} static-port\n"
               "pass out on em0 from any to any nat-to 192.0.2.16/28 source-hash\n")
    assert [r.origin for r in chain(rs, "snat").rules if r.origin != "t.conf: state table"] == ["t.conf:1", "t.conf:2"]


def test_filter_rules_before_a_match_translation() -> None:
    text = ("block all\npass in quick on em0 proto tcp to 198.51.100.1 port 80\npass in on em0 proto udp\n"
            "match in on em0 proto tcp to 198.51.100.1 port 80 rdr-to 10.0.0.80\npass out quick\n")
    rs = parse(text)
    # rule 2 saw the untranslated packet: its verdict on translated packets is left open,
    # and it stays exact on the others
    (variant,) = [r for r in chain(rs, "in").rules if r.origin == "t.conf:2 (untranslated)"]
    (exact,) = rules_at(rs, "in", 2)
    assert variant.action == UnmodelledAction("t.conf:2 judged these packets before the translation at t.conf:4, untranslated")
    assert set(variant.matches) == {m("iif", "em0"), m("l4proto", 6), m("ip.daddr", "10.0.0.80/32"), m("dport", 80)}
    assert exact.matches == (m("iif", "em0"), m("l4proto", 6), m("ip.daddr", "198.51.100.1/32"), m("dport", 80))
    assert len(rules_at(rs, "in", 3)) == 1  # udp: cannot meet a tcp translation
    assert len(rules_at(rs, "in", 1)) == 1  # any destination: the same verdict either way
    # ...and, quick, it ended the evaluation before the match rule: no translation at all
    assert chain(rs, "rdr").rules[0].action == Verdict("accept") and chain(rs, "rdr").rules[0].origin == "t.conf:2"


# -- 6. errors: one line, file and line -------------------------------------------------------


@pytest.mark.parametrize("text, line, message", [
    ("pass in on $nope\n", 1, "macro 'nope' is not defined"),
    ("block all\npass in frm any\n", 2, "unknown option 'frm'"),
    ("pass in proto tcp to any port 70000\n", 1, "port 70000 is out of range"),
    ("pass in to any port 80\n", 1, "'port' needs 'proto tcp' or 'proto udp'"),
    ("\n\nfrobnicate all\n", 3, "unknown statement 'frobnicate'"),
    ("pass in from { 10.0.0.1\n", 1, "'{' is never closed"),
    ("}\n", 1, "'}' without '{'"),
    ('pass in label "open\n', 1, "unterminated quoted string"),
    ("pass in from 10.0.0.9 - 10.0.0.1\n", 1, "bad address range"),
    ("rdr on em0 proto tcp to port 80\n", 1, "rdr without '-> ADDRESS'"),
    ("table foo { 10.0.0.1 }\n", 1, "expected a table name"),
    ("table <block these> persist\n", 1, "a table name in <angle brackets> holds no blank"),
    ("pass in quick proto 300\n", 1, "protocol 300 is out of range"),
    ("pass in $\n", 1, "unexpected character '$'"),
])
def test_malformed_input_is_one_line_error(text: str, line: int, message: str) -> None:
    with pytest.raises(BackendError) as caught:
        pf.parse_ruleset(text, "bad.conf")
    rendered = str(caught.value)
    assert rendered.startswith(f"bad.conf:{line}: ") and message in rendered and "\n" not in rendered, rendered


def test_unknown_dialect_is_refused() -> None:
    with pytest.raises(BackendError, match="unknown pf dialect"):
        pf.parse_ruleset("", dialect="netbsd")


def test_dialect_detection() -> None:
    assert pf.detect_dialect("rdr on em0 proto tcp to port 80 -> 10.0.0.1\n") == "freebsd"
    assert pf.detect_dialect("match in on em0 proto tcp to port 80 rdr-to 10.0.0.1\n") == "openbsd"
    assert pf.detect_dialect("# pf dialect: freebsd (FreeBSD pf)\npass\n") == "freebsd"
    assert chain(parse(""), "in").rules[1:] == ()


def test_rdr_pass_skips_the_in_rules_but_not_the_out_rules() -> None:
    text = "rdr pass on em0 proto tcp to 192.0.2.1 port 80 -> 10.0.0.5\nblock all\npass out quick on em1 proto tcp to 10.0.0.5 port 80\n"
    judge = Judge(parse(text), ("em0", "em1", "em2"))
    assert judge.translate("em0", "em1", "198.51.100.1", "192.0.2.1", TCP, 80)[:2] == ("10.0.0.5", 80)
    assert judge.fate("em0", "em1", "198.51.100.1", "192.0.2.1", TCP, 80) == "pass"  # in: skipped, out: passed
    assert judge.fate("em0", "em2", "198.51.100.1", "192.0.2.1", TCP, 80) == "block"  # out on em2: no rule passes it
    assert judge.fate("em0", "em1", "198.51.100.1", "10.0.0.5", TCP, 80) == "block"  # sent to the target directly


@pytest.mark.parametrize("dialect, text", [
    ("openbsd", "block all\npass out quick on em1\nmatch in on em0 proto tcp to 192.0.2.2 port 80 rdr-to 10.0.0.5\n"
                "pass in on em0 proto tcp to 192.0.2.1 port 80 rdr-to 10.0.0.5\n"),
    ("freebsd", "rdr on em0 proto tcp to 192.0.2.2 port 80 -> 10.0.0.5\nrdr pass on em0 proto tcp to 192.0.2.1 port 80 -> 10.0.0.5\n"
                "block all\npass out quick on em1\n"),
])
def test_a_passing_translation_is_left_open_where_another_makes_the_same_packet(dialect: str, text: str) -> None:
    """`ct status dnat` says translated, not by which rule: where a translation that leaves its
    packets to the filter rules makes the same image, the passing one's accept is judged both ways."""
    judge = Judge(parse(text, dialect=dialect), ("em0", "em1"))
    assert judge.translate("em0", "em1", "198.51.100.1", "192.0.2.2", TCP, 80)[:2] == ("10.0.0.5", 80)
    assert judge.fate("em0", "em1", "198.51.100.1", "192.0.2.2", TCP, 80) == "maybe"  # pf: blocked
    assert judge.fate("em0", "em1", "198.51.100.1", "192.0.2.1", TCP, 80) == "maybe"  # pf: passed
    assert judge.fate("em0", "em1", "198.51.100.1", "10.0.0.5", TCP, 80) == "block"


def test_generated_firewall_idioms() -> None:
    """What pfSense/OPNsense-style generated rulesets say: trackers, per-family default
    blocks, reply-to before the family, anchors of every kind (given or not)."""
    text = "\n".join([
        'WAN = "em0"',
        'LAN = "em1"',
        "set skip on pfsync0",
        "table <bogons> persist file \"/etc/bogons\"",
        'nat-anchor "natrules/*"',
        'rdr-anchor "tftp-proxy/*"',
        "antispoof for $LAN tracker 1000001570",
        "block in log inet all tracker 1000000103 label \"Default deny rule IPv4\"",
        "block out log inet all tracker 1000000104",
        "block in log inet6 all tracker 1000000105",
        "block out log inet6 all tracker 1000000106",
        "block in log quick on $WAN from <bogons> to any tracker 1000000001",
        "pass in quick on $LAN inet from 192.168.1.0/24 to any tracker 1000002811 flags S/SA keep state",
        "pass in quick on $WAN reply-to ( em0 198.51.100.1 ) inet proto tcp from any to 192.168.1.10 port 443 flags S/SA keep state",
        "pass out quick on { $WAN $LAN } all keep state",
        'anchor "userrules/*"',
    ]) + "\n"
    bare = parse(text, dialect="freebsd")
    assert [r.action for r in rules_at(bare, "out", 5)] == [UnmodelledAction("nat-anchor 'natrules/*' (its rules are not in the file)")]
    assert [r.action for r in rules_at(bare, "rdr", 6)] == [UnmodelledAction("rdr-anchor 'tftp-proxy/*' (its rules are not in the file)")]
    (lan,) = rules_at(bare, "in", 13)
    assert lan.matches == (m("iif", "em1"), m("ip.saddr", "192.168.1.0/24"))
    assert unmodelled_texts(rules_at(bare, "in", 14)[0]) == []  # reply-to routes the replies, which the state passes
    # both families have a block for every packet: no reply is left to the rules
    assert not [r for r in chain(bare, "in").rules if ESTABLISHED_MATCH in r.matches and isinstance(r.action, UnmodelledAction)]
    given = parse(text, dialect="freebsd", anchors={"natrules/*": "", "tftp-proxy/*": "", "userrules/*": ""})
    judge = Judge(given, ("em0", "em1"))
    assert judge.fate("em1", "em0", "192.168.1.7", "198.51.100.9", TCP, 443) == "pass"  # quick: antispoof comes too late
    assert judge.fate("em1", "em0", "192.168.2.7", "198.51.100.9", TCP, 443) == "block"
    assert judge.fate("em0", "em1", "198.51.100.9", "192.168.1.10", TCP, 443) == "maybe"  # <bogons>
    assert judge.fate("em0", "em1", "198.51.100.9", "192.168.1.10", TCP, 22) != "pass"  # blocked (an uncertain block first)


# -- 6. grammar of public rulesets that pfctl reads ---------------------------------------------


def ir_rules(ruleset: Ruleset) -> list[tuple[str, tuple, object]]:
    """Every IR rule, without its origin's file name."""
    return [(c.name, r.matches, r.action) for t in ruleset.tables for c in t.chains for r in t.chain(c.name).rules]


def test_a_macro_glued_to_a_modifier_is_expanded_first() -> None:
    """pfctl expands `$int_if` in its input and reads `em1:network` as one word."""
    literal = parse("pass in on em1 from em1:network to em1:network\n")
    expanded = parse('int_if = "em1"\npass in on $int_if from $int_if:network to $int_if:network\n')
    assert ir_rules(expanded) == ir_rules(literal)
    assert any("em1:network" in t for r in rules_at(expanded, "in", 2) for t in unmodelled_texts(r))
    glued = parse('a = "10.0"\nb = ".0.0/16"\npass in on em0 from $a$b\n')
    assert rules_at(glued, "in", 3)[0].matches == (m("iif", "em0"), m("ip.saddr", "10.0.0.0/16"))


@pytest.mark.parametrize("spec", ["($ext_if)", "{ ($ext_if) ($int_if) }", "{ $ext_if, ($int_if) }"])
def test_antispoof_for_an_interface_in_parentheses(spec: str) -> None:
    plain = parse('ext_if = "em0"\nint_if = "em1"\nantispoof quick for { $ext_if $int_if }\n')
    dynamic = parse(f'ext_if = "em0"\nint_if = "em1"\nantispoof quick for {spec}\n')
    want = ir_rules(plain)
    if spec == "($ext_if)":
        want = ir_rules(parse('ext_if = "em0"\nantispoof quick for $ext_if\n'))
    assert ir_rules(dynamic) == want


def test_quoted_strings_span_lines_as_pfctl_reads_them() -> None:
    """A newline inside quotes is dropped, so is `\\` + newline; single quotes quote too; the
    line numbers after it stay true."""
    text = ('trusted = "{\n  192.0.2.0/24\n  198.51.100.0/24\n}" # a comment\n'
            "ports = '{ 22, 80,\t\\\n  443 }'\n"
            "pass in on em0 proto tcp from $trusted to any port $ports\n")
    rs = parse(text)
    (rule,) = rules_at(rs, "in", 7)
    assert m("ip.saddr", "192.0.2.0/24", "198.51.100.0/24") in rule.matches
    assert m("dport", 22, 80, 443) in rule.matches
    with pytest.raises(BackendError, match="t.conf:2: unterminated quoted string"):
        parse('pass in on em0\nx = "{ 10.0.0.1\n')


@pytest.mark.parametrize("host", ["(em0)", "(em0:0)", "em0", "em0:0", "(egress)", "self"])
def test_the_firewall_s_own_addresses_are_never_a_forwarded_packet_s_destination(host: str) -> None:
    """As `self`: a packet to the firewall's own address that is not translated is for the firewall."""
    rs = parse(f"block all\npass in on em0 proto tcp to {host} port 22\npass out on em1\n")
    assert rules_at(rs, "in", 2) == []
    judge = Judge(rs, ("em0", "em1"))
    assert judge.fate("em0", "em1", "192.0.2.1", "10.0.0.9", TCP, 22) == "block"


def test_what_may_be_a_host_name_or_a_network_stays_unmodelled() -> None:
    rs = parse("block all\npass in on em1 proto tcp to mailhost port 25\npass in on em1 from em2:network\n"
               "pass in on em1 from lo0:network\n")
    assert "mailhost (an interface's addresses or a host name" in unmodelled_texts(rules_at(rs, "in", 2)[0])[0]
    assert "em2:network (the addresses of an interface)" in unmodelled_texts(rules_at(rs, "in", 3)[0])[0]
    assert rules_at(rs, "in", 4) == []  # loopback addresses: never forwarded


def test_interface_groups_and_names_the_caller_knows() -> None:
    """A group whose members are given is those members (`! group`: none of them); a name the
    firewall's interfaces hold is an interface, unit number or not; other groups stay unmodelled."""
    text = "pass in on egress proto tcp\npass in on ! egress proto udp\npass in on lan\npass in on wg proto tcp\n"
    known = parse(text, interfaces=("em0", "lan"), groups={"egress": ("em0",)})
    assert rules_at(known, "in", 1)[0].matches == (m("iif", "em0"), m("l4proto", 6))
    assert rules_at(known, "in", 2)[0].matches == (m("iif", "em0", negate=True), m("l4proto", 17))
    assert rules_at(known, "in", 3)[0].matches == (m("iif", "lan"),)
    assert "interface group 'wg'" in unmodelled_texts(rules_at(known, "in", 4)[0])[0]
    bare = parse(text)
    assert all(unmodelled_texts(r) for line in (1, 2, 3) for r in rules_at(bare, "in", line))
    assert rules_at(parse("pass in on egress\n", groups={"egress": ()}), "in", 1) == []  # an empty group


@pytest.mark.parametrize("extra, reached", [
    ("", False),
    ("pass in on em0 inet6 proto icmp6\n", True),  # an in rule passes what it judges
    ("set skip on em2\n", True),  # not filtered in on em2
    ("anchor ops\n", True),  # rules not seen
])
def test_an_out_rule_that_cannot_be_modelled_and_judges_nothing_passed_in_is_left_out(extra: str, reached: bool) -> None:
    text = extra + "block all\npass in on em0 proto tcp\npass out on em1 inet6 proto icmp6 from self icmp6-type echoreq\n"
    rs = parse(text)
    line = 3 + extra.count("\n")
    assert bool(rules_at(rs, "out", line)) == reached
    if reached:
        assert unmodelled_texts(rules_at(rs, "out", line)[0])
