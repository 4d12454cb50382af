"""The pf backend: golden files, determinism, injection, the structural checker,
scale, IPv6, refusals, and a packet-by-packet comparison of the rendered pf
rules (simulated) with the IR they came from (interpreted).

pfctl does not run on Linux; on a BSD host `pfctl -nf FILE` checks the golden
files for real. Regenerate them with FWMATRIX_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from netaddr import IPAddress, IPNetwork, IPRange

from conftest import GOLDEN, SEED, check_golden
from fwmatrix.backends import pf
from fwmatrix.compile.ruleset import compile_intent
from fwmatrix.compile.intent import build_intent
from fwmatrix.ir import (
    Chain,
    Dnat,
    DnatMap,
    Element,
    Header,
    Jump,
    Match,
    Rule,
    Ruleset,
    SetDef,
    Table,
    Unmodelled,
    UnmodelledAction,
    Verdict,
    VerdictMap,
)
from fwmatrix.errors import MatrixError
from fwmatrix.matrix import loader
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.matrix.model import PortRange
from strategies import matrix_yaml

GOLDEN_FILES = {"openbsd": "edge.pf.conf", "freebsd": "edge.pf.freebsd.conf"}


def compile_file(path: Path | str) -> dict[str, Ruleset]:
    return compile_intent(build_intent(load_matrix(str(path))))


@pytest.fixture(scope="module")
def seed() -> Ruleset:
    return compile_file(SEED)["edge"]


# -- golden files and determinism -------------------------------------------------


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_golden(seed: Ruleset, dialect: str) -> None:
    files = pf.render_files(seed, dialect=dialect)
    assert list(files) == [pf.SUFFIX]
    check_golden(files[pf.SUFFIX], GOLDEN / "contact-highway-7" / GOLDEN_FILES[dialect])
    assert pf.check_files(files) == []


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_seed_content(seed: Ruleset, dialect: str) -> None:
    text = pf.render(seed, dialect)
    conf = pf.parse(text)
    assert conf.dialect == dialect
    assert "# matrix sha256: " + seed.header.content_hash in text  # type: ignore[union-attr]
    assert "contact-highway-7" in text and "'edge'" in text
    assert conf.macros == {"dmz0_if": "dmz0", "dmz1_if": "dmz1", "lan0_if": "lan0", "wan0_if": "wan0"}
    assert "block drop all" in text.splitlines()
    # Nothing is opened from the DMZ towards the internet: no rule goes out on wan0.
    assert not [r for r in conf.rules if r.direction == "out" and r.on == "wan0"]
    if dialect == "openbsd":
        assert "match in on $wan0_if inet proto tcp from any to 203.0.113.10 port 443 rdr-to 172.16.10.10 tag fwm_dnat" in text
        assert "received-on $wan0_if" in text and " rdr " not in text
    else:
        assert "rdr on $wan0_if inet proto tcp from any to 203.0.113.10 port 443 tag fwm_dnat -> 172.16.10.10" in text
        assert "tag fwm_in_lan0 " in text and "tagged fwm_in_lan0 " in text
        assert text.index("rdr on") < text.index("block drop all")  # translation before filtering
    # Filter rules match the translated destination (the DMZ host), not the public address.
    assert "pass out quick on $dmz0_if inet proto tcp from any to 172.16.10.10 port 443" in text
    assert not [r for r in conf.rules if r.action == "pass" and "203.0.113.10" in r.dst]
    assert all(r.quick for r in conf.rules if r.action == "pass")


FORWARDED = {"172.16.10.10", "172.16.10.21", "172.16.10.22"}  # the port forwards' targets


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_port_forwards_pass_translated_packets_only(seed: Ruleset, dialect: str) -> None:
    """`ct status dnat`: every translation rule tags what it translates, and the pass rules of
    the port forwards ask for the tag (freebsd: the in rule for it, and sets the interface's
    _dnat tag, which the out rule asks for); no other rule does."""
    conf = pf.parse(pf.render(seed, dialect))
    translations = [r for r in conf.rules if r.rdr_to is not None]
    assert len(translations) == 4 and all(r.tag == "fwm_dnat" for r in translations)
    forwards = [r for r in conf.rules if r.action == "pass" and set(r.dst) & FORWARDED]
    assert [(r.direction, r.on) for r in forwards] == [("in", "wan0")] * 4 + [("out", "dmz0")] * 4
    others = [r for r in conf.rules if r.action == "pass" and r not in forwards]
    if dialect == "openbsd":
        assert all(r.tagged == "fwm_dnat" and r.tag is None for r in forwards)
        assert all(r.received_on == "wan0" for r in forwards if r.direction == "out")
        assert not [r for r in others if r.tagged or r.tag]
    else:
        assert all(r.tagged == "fwm_dnat" and r.tag == "fwm_in_wan0_dnat" for r in forwards if r.direction == "in")
        assert all(r.tagged == "fwm_in_wan0_dnat" for r in forwards if r.direction == "out")
        assert not [r for r in others if "dnat" in (r.tagged or "") + (r.tag or "")]
    # the target sent to directly: not forwarded; through the public address: forwarded
    direct = {"iif": "wan0", "oif": "dmz0", "family": 4, "saddr": IPAddress("198.51.100.7"),
              "daddr": IPAddress("172.16.10.10"), "proto": 6, "dport": 443}
    assert not pf_forward(conf, direct)[0] and not ir_forward(seed, direct)[0]
    public = dict(direct, daddr=IPAddress("203.0.113.10"))
    assert pf_forward(conf, public) == ir_forward(seed, public) == (True, IPAddress("172.16.10.10"), 443)


def test_deterministic(seed: Ruleset) -> None:
    for dialect in pf.DIALECTS:
        first = pf.render(seed, dialect)
        again = pf.render(compile_file(SEED)["edge"], dialect)
        assert first == again


def test_rule_counts(seed: Ruleset) -> None:
    # block, 4 translations, 9 in, 9 out; pfctl expands the 4 'proto { tcp udp }' rules.
    for dialect in pf.DIALECTS:
        assert pf.rule_counts(pf.render(seed, dialect)) == (23, 27)


# -- a small interpreter of the IR and a small simulator of pf ----------------------
#
# Both are written from the definitions (netfilter's chains; pf.conf(5)), not from
# backends/pf/lower.py's lowering, so that comparing them checks the lowering.


def _field(pkt: dict, f: str):
    if f in ("ip.saddr", "ip.daddr", "ip6.saddr", "ip6.daddr"):
        want = 4 if f.startswith("ip.") else 6
        return pkt[f.split(".")[1]] if pkt["family"] == want else None
    return {"iif": pkt["iif"], "oif": pkt["oif"], "l4proto": pkt["proto"], "dport": pkt["dport"], "ct.state": "new",
            "ct.status": "dnat" if pkt.get("translated") else None, "nfproto": pkt["family"]}[f]


def _value_matches(f: str, pv, v) -> bool:
    if pv is None:
        return False
    if isinstance(v, (IPNetwork, IPRange)):
        return pv.version == v.version and pv in v
    if isinstance(v, PortRange):
        return v.low <= pv <= v.high
    return pv == v


def _key_matches(pkt: dict, fields, key) -> bool:
    return all(_value_matches(f, _field(pkt, f), v) for f, v in zip(fields, key))


def _ir_chain(table: Table, chain: Chain, pkt: dict):
    for rule in chain.rules:
        ok = True
        for m in rule.matches:
            keys = [e.key for e in table.set(m.set_name).elements] if m.set_name else list(m.values)
            hit = any(_key_matches(pkt, m.fields, k) for k in keys)
            if hit == m.negate:
                ok = False
                break
        if not ok:
            continue
        act = rule.action
        if isinstance(act, VerdictMap):
            entries = act.entries if act.map_name is None else [(e.key, e.data[0]) for e in table.set(act.map_name).elements]
            act = next((a for k, a in entries if _key_matches(pkt, act.fields, k)), None)
        if isinstance(act, Dnat):
            return ("dnat", (act.address,) + ((act.port,) if act.port else ()))
        if isinstance(act, DnatMap):
            entries = act.entries if act.map_name is None else [(e.key, e.data) for e in table.set(act.map_name).elements]
            data = next((d for k, d in entries if _key_matches(pkt, act.fields, k)), None)
            if data is not None:
                return ("dnat", data)
            continue
        if isinstance(act, Verdict):
            return None if act.kind == "return" else act.kind
        if isinstance(act, Jump):
            result = _ir_chain(table, table.chain(act.chain), pkt)
            if result is not None:
                return result
    return None


def ir_forward(ruleset: Ruleset, pkt: dict) -> tuple[bool, IPAddress, int | None]:
    """What netfilter does with the first packet of a connection: (forwarded, destination, port)."""
    pkt = dict(pkt)
    for table in ruleset.tables:
        for chain in table.chains:
            if chain.hook == "prerouting":
                result = _ir_chain(table, chain, pkt)
                if result is not None:
                    data = result[1]
                    pkt["translated"] = True  # ct status dnat, for the forward chain
                    pkt["daddr"] = IPAddress(data[0].first, data[0].version)
                    if len(data) > 1:
                        pkt["dport"] = data[1].low if isinstance(data[1], PortRange) else data[1]
    for table in ruleset.tables:
        for chain in table.chains:
            if chain.hook == "forward":
                verdict = _ir_chain(table, chain, pkt) or chain.policy
                if verdict != "accept":
                    return False, pkt["daddr"], pkt["dport"]
    return True, pkt["daddr"], pkt["dport"]


def _pf_addr(conf: pf.PfConf, items, addr: IPAddress) -> bool:
    for item in items:
        if item == "any":
            return True
        if item == "self":
            continue  # forwarded packets are never to or from the firewall itself here
        members = conf.tables[item[1:-1]] if item.startswith("<") else (item,)
        if any(addr.version == IPNetwork(m).version and addr in IPNetwork(m) for m in members):
            return True
    return False


def _pf_matches(conf: pf.PfConf, r: pf.PfRule, pkt: dict, direction: str, iface: str, received: str | None, tag: str | None) -> bool:
    if r.direction not in (None, direction) or (r.on is not None and r.on != iface):
        return False
    if r.af is not None and (r.af == "inet") != (pkt["family"] == 4):
        return False
    if r.protos and pkt["proto"] not in {pf.PROTO_NUMBERS.get(p) or int(p) for p in r.protos}:
        return False
    if r.icmp6_types:
        return False  # the simulated packets are no neighbour discovery
    if r.received_on is not None and r.received_on != received:
        return False
    if r.tagged is not None and r.tagged != tag:
        return False
    if r.all:
        return True
    if not _pf_addr(conf, r.src, pkt["saddr"]) or not _pf_addr(conf, r.dst, pkt["daddr"]):
        return False
    if r.ports:
        if pkt["dport"] is None:
            return False
        spans = [(int(p.split(":")[0]), int(p.split(":")[-1])) for p in r.ports]
        if not any(lo <= pkt["dport"] <= hi for lo, hi in spans):
            return False
    return True


def _pf_pass(conf: pf.PfConf, pkt: dict, direction: str, iface: str, received: str | None, tag: str | None):
    """Evaluate the filter for one direction: (passed, packet after translation, tag).

    pf.conf(5): a packet holds one tag; a matching rule's `tag` replaces it at once, even if
    the rule is not the last to match ("sticky"), and later rules' `tagged` see the new one;
    translation rules (rdr, match) tag the packets they translate."""
    pkt = dict(pkt)
    if direction == "in":  # FreeBSD: rdr rules, first match, before any filter rule
        for r in conf.rules:
            if r.action == "rdr" and _pf_matches(conf, r, pkt, "in", iface, None, tag):
                pkt["daddr"] = IPAddress(r.rdr_to)
                pkt["dport"] = r.rdr_port if r.rdr_port is not None else pkt["dport"]
                tag = r.tag if r.tag is not None else tag
                break
    decision = "pass"  # pf passes what no rule matches
    for r in conf.rules:
        if r.action not in ("pass", "block", "match") or not _pf_matches(conf, r, pkt, direction, iface, received, tag):
            continue
        if r.tag is not None:
            tag = r.tag
        if r.action == "match":  # OpenBSD: translated at once; later rules see the new packet
            pkt["daddr"] = IPAddress(r.rdr_to)
            pkt["dport"] = r.rdr_port if r.rdr_port is not None else pkt["dport"]
            continue
        decision = r.action
        if r.quick:
            break
    return decision == "pass", pkt, tag


def pf_forward(conf: pf.PfConf, pkt: dict) -> tuple[bool, IPAddress, int | None]:
    passed, inner, tag = _pf_pass(conf, pkt, "in", pkt["iif"], None, None)
    if not passed:
        return False, inner["daddr"], inner["dport"]
    passed, outer, _ = _pf_pass(conf, inner, "out", pkt["oif"], pkt["iif"], tag)
    return passed, outer["daddr"], outer["dport"]


def _samples(ruleset: Ruleset, count: int, seed: int = 0) -> list[dict]:
    """Packets at and around every address and port the IR names, plus random ones."""
    nets, ports, ifaces = set(), {1, 65535}, {"other0", "other1"}
    for table in ruleset.tables:
        items = [e.key + e.data for s in table.sets for e in s.elements]
        for chain in table.chains:
            for rule in chain.rules:
                for m in rule.matches:
                    items += list(m.values)
                if isinstance(rule.action, VerdictMap):
                    items += [k for k, _ in rule.action.entries]
        for item in items:
            for v in item:
                if isinstance(v, IPNetwork):
                    nets.add(v)
                elif isinstance(v, PortRange):
                    ports.update({v.low, v.high, max(v.low - 1, 1), min(v.high + 1, 65535)})
                elif isinstance(v, str) and v not in ("established", "related", "new", "invalid", "dnat"):
                    ifaces.add(v)
    addrs = {4: {IPAddress("198.51.100.7")}, 6: {IPAddress("2001:db8:ffff::7")}}
    for net in nets:
        addrs[net.version].update({IPAddress(net.first, net.version), IPAddress(net.last, net.version)})
        if net.prefixlen > 0:
            addrs[net.version].update({IPAddress(max(net.first - 1, 1), net.version), IPAddress(net.last + 1, net.version)})
    pools = {v: sorted(a) for v, a in addrs.items()}
    ifs, port_list = sorted(ifaces), sorted(ports)
    rng = random.Random(seed)
    out = []
    # Every element of every set, sent between every pair of interfaces: a tuple opened on
    # one pair must not cross another (small rulesets only; the random packets cover the rest).
    elements = [e for table in ruleset.tables for s in table.sets for e in s.elements]
    if len(elements) * len(ifs) ** 2 <= 20000:
        for table in ruleset.tables:
            for s in table.sets:
                for e in s.elements:
                    value = dict(zip(s.key, e.key))
                    dst = value.get("ip.daddr", value.get("ip6.daddr"))
                    if dst is None:
                        continue
                    src = value.get("ip.saddr") or value.get("ip6.saddr") or IPNetwork("0.0.0.0/0" if dst.version == 4 else "::/0")
                    proto = value.get("l4proto", 6)
                    port = value.get("dport", PortRange(1, 1))
                    for iif in ifs:
                        for oif in ifs:
                            if iif != oif:
                                out.append({"iif": iif, "oif": oif, "family": dst.version, "saddr": IPAddress(src.last, src.version),
                                            "daddr": IPAddress(dst.first, dst.version), "proto": proto,
                                            "dport": port.low if proto in (6, 17) else None})
    for _ in range(count):
        family = rng.choice((4, 4, 4, 6)) if len(pools[6]) > 1 else 4
        iif, oif = rng.sample(ifs, 2)
        proto = rng.choice((6, 17, 6, 17, 1 if family == 4 else 58))
        out.append({"iif": iif, "oif": oif, "family": family, "saddr": rng.choice(pools[family]),
                    "daddr": rng.choice(pools[family]), "proto": proto,
                    "dport": rng.choice(port_list) if proto in (6, 17) else None})
    return out


def assert_same_policy(ruleset: Ruleset, dialect: str, count: int = 4000) -> int:
    conf = pf.parse(pf.render(ruleset, dialect))
    assert conf.problems == []
    accepted = 0
    for pkt in _samples(ruleset, count):
        want = ir_forward(ruleset, pkt)
        got = pf_forward(conf, pkt)
        assert got[0] == want[0], f"{dialect}: {pkt} -> IR {want}, pf {got}"
        if want[0]:
            assert got == want, f"{dialect}: {pkt} translated differently: IR {want}, pf {got}"
            accepted += 1
    return accepted


def _element_packets(ruleset: Ruleset) -> list[tuple[dict, bool]]:
    """One packet per set element of the seed, sent to the address the element names, and
    whether its rule asks for translated connections (a port forward's: `ct status dnat`)."""
    table = ruleset.tables[0]
    pairs = {k: a.chain for r in table.chain("forward").rules if isinstance(r.action, VerdictMap) for k, a in r.action.entries}
    out = []
    for (iif, oif), chain in pairs.items():
        for rule in table.chain(chain).rules:
            lookup = rule.matches[-1]
            translated = Match(("ct.status",), (("dnat",),)) in rule.matches
            for e in table.set(lookup.set_name).elements:
                src, dst, proto, ports = e.key
                out.append(({"iif": iif, "oif": oif, "family": dst.version, "saddr": IPAddress(src.last, src.version),
                             "daddr": dst.ip, "proto": proto, "dport": ports.high}, translated))
    return out


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_seed_same_policy_as_ir(seed: Ruleset, dialect: str) -> None:
    assert assert_same_policy(seed, dialect) > 0
    conf = pf.parse(pf.render(seed, dialect))
    elements = _element_packets(seed)
    assert {translated for _, translated in elements} == {True, False}
    for pkt, translated in elements:
        # a port forward's target is open to translated connections only, not sent to directly
        assert ir_forward(seed, pkt)[0] == pf_forward(conf, pkt)[0] == (not translated), pkt
    # The NAT rows: the public address is translated and forwarded to the DMZ host.
    https = {"iif": "wan0", "oif": "dmz0", "family": 4, "saddr": IPAddress("198.51.100.7"),
             "daddr": IPAddress("203.0.113.10"), "proto": 6, "dport": 443}
    assert pf_forward(conf, https) == (True, IPAddress("172.16.10.10"), 443)
    # Wrong way in (the DMZ answering is a reply; a new connection out is not opened).
    out = dict(https, iif="dmz0", oif="wan0", saddr=IPAddress("172.16.10.10"), daddr=IPAddress("198.51.100.7"))
    assert not pf_forward(conf, out)[0]
    # Right tuple, wrong input interface: the out rule's received-on / tagged refuses it.
    spoof = {"iif": "lan0", "oif": "dmz0", "family": 4, "saddr": IPAddress("198.51.100.7"),
             "daddr": IPAddress("172.16.10.10"), "proto": 6, "dport": 443}
    assert not pf_forward(conf, spoof)[0]


# -- hand-built IR: the constructs compile does not use yet ----------------------------


def _table(chains, sets=(), family="inet") -> Ruleset:
    return Ruleset((Table(family, "t", tuple(chains), tuple(sets)),), Header("m", "0" * 64, "fw", "test"))


ESTABLISHED = Rule((Match(("ct.state",), (("established",), ("related",))),), Verdict("accept"))
V4 = IPNetwork


def _forward(rules, policy="drop") -> Chain:
    return Chain("forward", (ESTABLISHED,) + tuple(rules), hook="forward", priority=0, policy=policy)


def tricky_ruleset() -> Ruleset:
    """Drops before accepts that overlap, drops that depend on the output interface, reject,
    nested jumps, an unconditional return, a rule without an input interface, and DNAT with a
    port change."""
    web = SetDef("web", ("ip.saddr", "ip.daddr", "l4proto", "dport"), (
        Element((V4("0.0.0.0/0"), V4("10.1.0.10/32"), 6, PortRange(80, 80)), comment="web"),
        Element((V4("0.0.0.0/0"), V4("10.1.0.10/32"), 6, PortRange(8443, 8443)), comment="web-alt"),
        Element((V4("192.0.2.0/24"), V4("10.1.0.0/24"), 17, PortRange(1000, 2000)), comment="range"),
        # The same tuple as dmz_to_lan opens, on another interface pair: only the out rule's
        # input interface (received-on, tagged) keeps wan0 -> lan0 closed for it.
        Element((V4("0.0.0.0/0"), V4("10.2.0.5/32"), 6, PortRange(5432, 5432)), comment="odd"),
    ))
    dmz_to_lan = Chain("dmz_to_lan", (
        Rule((Match(("ip.daddr", "l4proto", "dport"), ((V4("10.2.0.0/16"), 6, PortRange(5432, 5432)),)),), Verdict("accept"), "db"),
    ))
    key = ("iif", "ip.saddr", "ip.daddr", "l4proto", "dport")
    dnat_port = SetDef("dnat_v4_port", key, (
        Element(("wan0", V4("0.0.0.0/0"), V4("203.0.113.5/32"), 6, PortRange(443, 443)), (V4("10.1.0.10/32"), PortRange(8443, 8443)), "alt"),
    ), data=("ip.daddr", "dport"))
    dnat = SetDef("dnat_v4", key, (
        Element(("wan0", V4("0.0.0.0/0"), V4("203.0.113.5/32"), 6, PortRange(80, 80)), (V4("10.1.0.10/32"),), "plain"),
        Element(("wan0", V4("0.0.0.0/0"), V4("203.0.113.5/32"), 17, PortRange(1000, 1999)), (V4("10.1.0.20/32"),), "udp range"),
    ), data=("ip.daddr",))
    inner = Chain("inner", (
        Rule((Match(("ip.saddr",), ((V4("192.0.2.66/32"),),)),), Verdict("reject"), "one bad host"),
        Rule((Match(("ip.saddr", "ip.daddr", "l4proto", "dport"), set_name="web"),), Verdict("accept"), "web"),
        Rule((), Verdict("return")),
    ))
    pair = Chain("wan_to_dmz", (
        Rule((Match(("l4proto",), ((17,),)), Match(("dport",), ((PortRange(1500, 1600),),))), Verdict("drop"), "no 1500-1600"),
        Rule((), Jump("inner"), "inner"),
        Rule((Match(("l4proto",), ((1,),)),), Verdict("accept"), "ping"),
    ))
    forward = _forward((
        Rule((Match(("oif",), (("lan0",),)), Match(("ip.daddr",), ((V4("10.2.0.99/32"),),))), Verdict("drop"), "never to 10.2.0.99 via lan0"),
        Rule((), VerdictMap(("iif", "oif"), ((("wan0", "dmz0"), Jump("wan_to_dmz")), (("dmz0", "lan0"), Jump("dmz_to_lan"))))),
        Rule((Match(("oif",), (("lan0",),)), Match(("l4proto", "dport"), ((6, PortRange(22, 22)),))), Verdict("accept"), "ssh to lan from anywhere"),
    ))
    nat = Chain("prerouting", (
        Rule((Match(("l4proto",), ((6,), (17,))),), DnatMap(4, key, "dnat_v4_port"), "forwards with a new port"),
        Rule((Match(("l4proto",), ((6,), (17,))),), DnatMap(4, key, "dnat_v4"), "forwards"),
    ), hook="prerouting", type="nat", priority=-100, policy="accept")
    return _table((nat, forward, pair, inner, dmz_to_lan), (web, dnat_port, dnat))


def test_tricky_ir_same_policy_openbsd() -> None:
    rs = tricky_ruleset()
    text = pf.render(rs, "openbsd")
    assert pf.check(text) == []
    assert "block return out quick" in text and "rdr-to 10.1.0.10 port 8443" in text
    assert assert_same_policy(rs, "openbsd", 6000) > 0
    odd = {"iif": "wan0", "oif": "lan0", "family": 4, "saddr": IPAddress("198.51.100.7"),
           "daddr": IPAddress("10.2.0.5"), "proto": 6, "dport": 5432}
    assert not ir_forward(rs, odd)[0] and not pf_forward(pf.parse(text), odd)[0]
    assert pf_forward(pf.parse(text), dict(odd, iif="dmz0"))[0]


def test_tricky_ir_freebsd_refuses_accept_without_input_interface() -> None:
    # The out rules learn the input interface from a tag, which needs the interface.
    with pytest.raises(pf.RenderError, match="without an input interface"):
        pf.render(tricky_ruleset(), "freebsd")


def test_tricky_ir_freebsd_without_that_rule() -> None:
    rs = tricky_ruleset()
    table = rs.tables[0]
    forward = table.chain("forward")
    chains = tuple(c if c.name != "forward" else Chain(c.name, c.rules[:-1], c.hook, c.type, c.priority, c.policy) for c in table.chains)
    rs = Ruleset((Table(table.family, table.name, chains, table.sets),), rs.header)
    assert forward.rules[-1].comment.startswith("ssh")
    assert pf.check(pf.render(rs, "freebsd")) == []
    assert assert_same_policy(rs, "freebsd", 6000) > 0


@pytest.mark.parametrize("bad, message", [
    (Rule((Match(("ip.saddr",), ((V4("10.0.0.1/32"),),), negate=True),), Verdict("accept")), "negated"),
    (Rule((), Jump("nowhere")), "not a regular chain"),
    (Rule((), Jump("loop", goto=True)), "goto"),
    (Rule((Match(("meta.mark",), ((1,),)),), Verdict("accept")), "meta.mark"),
    (Rule((Match(("l4proto", "dport"), ((132, PortRange(5000, 5000)),)),), Verdict("accept")), "tcp and udp only"),
    (Rule((Match(("dport",), ((PortRange(22, 22),),)),), Verdict("accept")), "tcp and udp only"),
    (Rule((Match(("ct.state",), (("established",),)), Match(("iif",), (("wan0",),))), Verdict("drop")), "ct state"),
    (Rule((Match(("ip.saddr",), ((V4("10.0.0.1/32"),),)),), Verdict("return")), "return"),
    (Rule((Match(("iif",), (('wan0" pass all',),)),), Verdict("accept")), "interface name"),
])
def test_refuses_what_it_cannot_write(bad: Rule, message: str) -> None:
    loop = Chain("loop", (Rule((), Jump("loop")),))
    with pytest.raises(pf.RenderError, match=message):
        pf.render(_table((_forward((bad,)), loop)))


def test_set_lookups_lowered_by_column_as_by_row(seed: Ruleset) -> None:
    """A rule of one set lookup is lowered column by column (_column_cells): the same cells, in the
    same order, as row by row; a set with refused elements is refused with the first row's error
    (its port on icmp), not the first error a column finds (its IPv6 address, a later row)."""
    from fwmatrix.backends.pf.lower import _cells, _column_cells, _flatten, _row_cells

    for rs in (seed, tricky_ruleset()):
        table = rs.tables[0]
        flats = [flat for chain in table.chains if chain.hook == "forward" for flat in _flatten(table, chain)]
        assert any(_column_cells(flat, table) is not None for flat in flats)
        for flat in flats:
            assert _cells(flat, table) == list(_row_cells(flat, table))
    bad = SetDef("s", ("ip.saddr", "l4proto", "dport"), (
        Element((V4("10.0.0.1/32"), 6, PortRange(22, 22)), comment="fine"),
        Element((V4("10.0.0.2/32"), 1, PortRange(22, 22)), comment="a port on icmp"),
        Element((IPNetwork("2001:db8::1/128"), 6, PortRange(22, 22)), comment="ip6 in an ip field"),
    ))
    rule = Rule((Match(("iif", "oif"), (("wan0", "lan0"),)), Match(bad.key, set_name="s")), Verdict("accept"))
    with pytest.raises(pf.RenderError, match="a port match on protocol 1"):
        pf.render(_table((_forward((rule,)),), (bad,)))


def test_refuses_chain_shapes() -> None:
    with pytest.raises(pf.RenderError, match="policy accept"):
        pf.render(_table((_forward((), policy="accept"),)))
    with pytest.raises(pf.RenderError, match="established,related"):
        pf.render(_table((Chain("forward", (Rule((), Verdict("accept")),), hook="forward", policy="drop"),)))
    with pytest.raises(pf.RenderError, match="input chains with policy drop only"):
        pf.render(_table((Chain("input", (), hook="input", policy="accept"),)))
    with pytest.raises(pf.RenderError, match="output"):
        pf.render(_table((Chain("output", (), hook="output", policy="drop"),)))
    with pytest.raises(pf.RenderError, match="jump loop"):
        pf.render(_table((_forward((Rule((), Jump("loop")),)), Chain("loop", (Rule((), Jump("loop")),)))))
    two = _table((_forward(()),))
    with pytest.raises(pf.RenderError, match="more than one"):
        pf.render(Ruleset(two.tables * 2, two.header))


DNAT_KEY = ("iif", "ip.saddr", "ip.daddr", "l4proto", "dport")


def _nat_ruleset(*rules: Rule) -> Ruleset:
    nat = Chain("prerouting", rules, hook="prerouting", type="nat", priority=-100, policy="accept")
    anything = Rule((Match(("iif", "oif"), (("wan0", "lan0"),)),), Verdict("accept"))
    return _table((nat, _forward((anything,))))


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_overlapping_dnat_keeps_first_match(dialect: str) -> None:
    # A narrow source first, then everyone: netfilter takes the first DNAT that matches.
    rs = _nat_ruleset(
        Rule((), DnatMap(4, DNAT_KEY, entries=((("wan0", V4("198.51.100.0/24"), V4("203.0.113.5/32"), 6, PortRange(443, 443)), (V4("10.0.0.2/32"),)),))),
        Rule((), DnatMap(4, DNAT_KEY, entries=((("wan0", V4("0.0.0.0/0"), V4("203.0.113.5/32"), 6, PortRange(1, 1000)), (V4("10.0.0.1/32"),)),))),
    )
    text = pf.render(rs, dialect)
    assert text.index("10.0.0.2") < text.index("10.0.0.1")
    conf = pf.parse(text)
    pkt = {"iif": "wan0", "oif": "lan0", "family": 4, "saddr": IPAddress("198.51.100.9"), "daddr": IPAddress("203.0.113.5"), "proto": 6, "dport": 443}
    assert pf_forward(conf, pkt) == ir_forward(rs, pkt) == (True, IPAddress("10.0.0.2"), 443)
    other = dict(pkt, saddr=IPAddress("192.0.2.1"))
    assert pf_forward(conf, other) == ir_forward(rs, other) == (True, IPAddress("10.0.0.1"), 443)
    assert_same_policy(rs, dialect, 2000)


def test_openbsd_refuses_a_translation_that_feeds_another() -> None:
    # 203.0.113.5 -> 203.0.113.6 -> 10.0.0.2: netfilter translates once; OpenBSD's match rules twice.
    rs = _nat_ruleset(
        Rule((Match(DNAT_KEY, (("wan0", V4("0.0.0.0/0"), V4("203.0.113.5/32"), 6, PortRange(80, 80)),)),), Dnat(4, V4("203.0.113.6/32"))),
        Rule((Match(DNAT_KEY, (("wan0", V4("0.0.0.0/0"), V4("203.0.113.6/32"), 6, PortRange(80, 80)),)),), Dnat(4, V4("10.0.0.2/32"))),
    )
    with pytest.raises(pf.RenderError, match="would match the translation"):
        pf.render(rs, "openbsd")
    assert_same_policy(rs, "freebsd", 2000)  # rdr rules translate once, as netfilter does


def test_newer_ir_forms() -> None:
    """Named verdict maps, single DNAT targets, address ranges and nfproto are lowered."""
    vmap = SetDef("pairs", ("iif", "oif"), (Element(("wan0", "dmz0"), (Jump("in"),)), Element(("dmz0", "lan0"), (Verdict("accept"),))))
    inner = Chain("in", (Rule((Match(("nfproto",), ((4,),)), Match(("ip.daddr", "l4proto", "dport"),
                                                                      ((IPRange("10.1.0.3", "10.1.0.9"), 6, PortRange(22, 22)),))), Verdict("accept")),))
    nat = Chain("prerouting", (Rule((Match(("iif", "ip.daddr", "l4proto", "dport"), (("wan0", V4("203.0.113.5/32"), 6, PortRange(2222, 2222)),)),),
                                    Dnat(4, IPRange("10.1.0.4", "10.1.0.4"), PortRange(22, 22)), "ssh"),),
                hook="prerouting", type="nat", priority=-100, policy="accept")
    rs = _table((nat, _forward((Rule((), VerdictMap(("iif", "oif"), map_name="pairs")),)), inner), (vmap,))
    for dialect in pf.DIALECTS:
        text = pf.render(rs, dialect)
        assert pf.check(text) == []
        assert "{ 10.1.0.3 10.1.0.4/30 10.1.0.8/31 }" in text  # the range, as the networks that cover it
        assert "pass in quick on $dmz0_if from any to any" in text  # the map's plain verdict
        assert_same_policy(rs, dialect, 3000)


TRANSLATED = Match(("ct.status",), (("dnat",),))


def translated_ruleset(*extra: Rule) -> Ruleset:
    """Rules that ask for translated connections (ct status dnat) among plain ones on the same
    input interfaces, across runs of one verdict, with drops of both kinds: what the freebsd
    dialect's two tags per interface must carry exactly."""
    def tcp(*ports: int) -> Match:
        return Match(("l4proto", "dport"), tuple((6, PortRange(p, p)) for p in ports))

    def pair(iif: str, oif: str) -> Match:
        return Match(("iif", "oif"), ((iif, oif),))

    nat = Chain("prerouting", (
        Rule((Match(DNAT_KEY, (("wan0", V4("0.0.0.0/0"), V4("203.0.113.5/32"), 6, PortRange(80, 80)),
                               ("lan0", V4("0.0.0.0/0"), V4("203.0.113.5/32"), 6, PortRange(80, 80)))),), Dnat(4, V4("10.1.0.10/32")), "web"),
        Rule((Match(DNAT_KEY, (("wan0", V4("0.0.0.0/0"), V4("203.0.113.5/32"), 6, PortRange(2222, 2222)),)),),
             Dnat(4, V4("10.1.0.10/32"), PortRange(22, 22)), "ssh"),
    ), hook="prerouting", type="nat", priority=-100, policy="accept")
    forward = _forward((
        # a plain accept on wan0 that a translated packet for dmz0 meets on the way in first
        Rule((pair("wan0", "lan0"), Match(("ip.daddr",), ((V4("10.1.0.0/16"),),)), tcp(80)), Verdict("accept"), "plain to lan"),
        Rule((Match(("iif",), (("wan0",),)), Match(("ip.saddr",), ((V4("192.0.2.66/32"),),))), Verdict("drop"), "one bad host"),
        Rule((TRANSLATED, pair("wan0", "dmz0"), Match(("ip.saddr",), ((V4("198.51.100.0/25"),),))), Verdict("drop"), "not translated for them"),
        Rule((TRANSLATED, pair("wan0", "dmz0"), Match(("ip.daddr",), ((V4("10.1.0.10/32"),),)), tcp(80, 22)), Verdict("accept"), "forwards"),
        Rule((pair("wan0", "dmz0"), Match(("ip.saddr", "ip.daddr"), ((V4("192.0.2.0/24"), V4("10.1.0.10/32")),)), tcp(22)),
             Verdict("accept"), "admins, directly"),
        Rule((pair("wan0", "dmz0"), tcp(443)), Verdict("drop"), "no 443 from outside"),
        Rule((TRANSLATED, pair("lan0", "dmz0"), Match(("ip.daddr",), ((V4("10.1.0.10/32"),),)), tcp(80)), Verdict("accept"), "hairpin"),
        Rule((pair("lan0", "dmz0"), Match(("ip.daddr",), ((V4("10.1.0.0/16"),),)), tcp(443, 80)), Verdict("accept"), "lan to dmz"),
    ) + extra)
    return _table((nat, forward))


def translated_packets() -> list[dict]:
    ifaces = ("wan0", "lan0", "dmz0", "other0")
    out = []
    for iif in ifaces:
        for oif in ifaces:
            for src in ("192.0.2.66", "192.0.2.5", "198.51.100.7", "198.51.100.200", "10.1.0.99"):
                for dst in ("203.0.113.5", "10.1.0.10", "10.1.0.11"):
                    for port in (22, 80, 443, 2222):
                        if iif != oif:
                            out.append({"iif": iif, "oif": oif, "family": 4, "saddr": IPAddress(src), "daddr": IPAddress(dst),
                                        "proto": 6, "dport": port})
    return out


def assert_same_on(ruleset: Ruleset, text: str, packets: list[dict]) -> tuple[int, int]:
    """pf (simulated) and the IR (interpreted) agree on every packet: (forwarded, of them translated)."""
    conf = pf.parse(text)
    assert conf.problems == []
    passed = translated = 0
    for pkt in packets:
        want, got = ir_forward(ruleset, pkt), pf_forward(conf, pkt)
        assert got == want if want[0] else not got[0], f"{pkt} -> IR {want}, pf {got}\n{text}"
        passed += want[0]
        translated += want[0] and want[1] != pkt["daddr"]
    return passed, translated


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_translated_connections_same_policy(dialect: str) -> None:
    rs = translated_ruleset()
    text = pf.render(rs, dialect)
    passed, translated = assert_same_on(rs, text, translated_packets())
    assert passed > translated > 0
    assert assert_same_policy(rs, dialect, 3000) > 0
    if dialect == "freebsd":
        # the plain accepts on wan0 and lan0 have twins for translated packets, before them
        twin = "pass in quick on $wan0_if inet proto tcp from any to 10.1.0.0/16 port 80 tagged fwm_dnat tag fwm_in_wan0_dnat\n"
        plain = "pass in quick on $wan0_if inet proto tcp from any to 10.1.0.0/16 port 80 tag fwm_in_wan0\n"
        assert text.index(twin) < text.index(plain)
        # a plain out rule from wan0 is written for both of its tags (a drop too: never fail-open)
        assert "block drop out quick on $dmz0_if proto tcp from any to any port 443 tagged fwm_in_wan0\n" in text
        assert "block drop out quick on $dmz0_if proto tcp from any to any port 443 tagged fwm_in_wan0_dnat\n" in text


def test_freebsd_without_the_twins_would_lose_translated_packets() -> None:
    """The twin is what makes the tag exact: without it, a translated packet that a plain rule
    passes in gets the plain tag, and the out rule for translated packets refuses it."""
    rs = translated_ruleset()
    text = pf.render(rs, "freebsd")
    twins = [line for line in text.splitlines() if line.startswith("pass in") and "tagged fwm_dnat" in line
             and line.replace("tagged fwm_dnat tag fwm_in_wan0_dnat", "tag fwm_in_wan0") in text]
    assert twins
    broken = pf.parse("\n".join(line for line in text.splitlines() if line not in twins) + "\n")
    lost = {"iif": "wan0", "oif": "dmz0", "family": 4, "saddr": IPAddress("192.0.2.5"), "daddr": IPAddress("203.0.113.5"), "proto": 6, "dport": 80}
    assert ir_forward(rs, lost) == (True, IPAddress("10.1.0.10"), 80)
    assert pf_forward(pf.parse(text), lost)[0] and not pf_forward(broken, lost)[0]


def test_translated_connections_without_an_input_interface() -> None:
    # openbsd: the tag stays on the packet to the out rules; freebsd: it rides on the input
    # interface's tag, so a rule without one is refused (as an accept without one is)
    extra = Rule((TRANSLATED, Match(("oif",), (("other0",),)), Match(("l4proto", "dport"), ((6, PortRange(80, 80)),))), Verdict("accept"), "anywhere")
    rs = translated_ruleset(extra)
    text = pf.render(rs, "openbsd")
    assert "pass out quick on $other0_if proto tcp from any to any port 80 tagged fwm_dnat\n" in text
    _, translated = assert_same_on(rs, text, translated_packets())
    assert translated > 0
    with pytest.raises(pf.RenderError, match="translated connections .ct status dnat. without an input interface"):
        pf.render(rs, "freebsd")


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_a_translated_cell_a_plain_one_covers_is_left_out(dialect: str) -> None:
    """A port forward to a tuple a plain opening already opens (the same run of accepts): the
    plain rule takes translated packets too, so the translated one is not written. Across a
    drop, order matters and it stays."""
    nat = Chain("prerouting", (Rule((Match(DNAT_KEY, (("wan0", V4("0.0.0.0/0"), V4("203.0.113.5/32"), 6, PortRange(80, 80)),)),),
                                    Dnat(4, V4("10.0.0.2/32"))),), hook="prerouting", type="nat", priority=-100, policy="accept")
    tuple_ = (Match(("iif", "oif"), (("wan0", "lan0"),)), Match(("ip.daddr", "l4proto", "dport"), ((V4("10.0.0.0/24"), 6, PortRange(80, 80)),)))
    forward = Match(("ip.daddr", "l4proto", "dport"), ((V4("10.0.0.2/32"), 6, PortRange(80, 80)),))
    plain = Rule(tuple_, Verdict("accept"), "plain")
    translated = Rule((TRANSLATED, Match(("iif", "oif"), (("wan0", "lan0"),)), forward), Verdict("accept"), "port-forward")
    drop = Rule((Match(("ip.saddr",), ((V4("192.0.2.66/32"),),)),), Verdict("drop"), "bad")
    same_run = _table((nat, _forward((plain, translated))))
    text = pf.render(same_run, dialect)
    assert "fwm_dnat" not in text and "port-forward" not in text
    assert_same_on(same_run, text, translated_packets())
    apart = _table((nat, _forward((plain, drop, translated))))
    text = pf.render(apart, dialect)
    assert "tagged fwm_dnat" in text
    assert_same_on(apart, text, translated_packets())


def test_translation_rules_are_tagged_only_when_a_rule_asks() -> None:
    rs = _nat_ruleset(Rule((), DnatMap(4, DNAT_KEY, entries=((("wan0", V4("0.0.0.0/0"), V4("203.0.113.5/32"), 6, PortRange(443, 443)),
                                                               (V4("10.0.0.2/32"),)),))))
    for dialect in pf.DIALECTS:
        assert "fwm_dnat" not in pf.render(rs, dialect)


@pytest.mark.parametrize("rule, message", [
    (Rule((Unmodelled("meta mark 0x1"),), Verdict("accept"), origin="inet filter forward handle 9"), "meta mark 0x1"),
    (Rule((), UnmodelledAction("queue num 3")), "unmodelled"),
    (Rule((Match(("l4proto", "sport"), ((6, PortRange(53, 53)),)),), Verdict("accept")), "source ports"),
    (Rule((Match(("ct.status",), (("dnat",),), negate=True),), Verdict("accept")), "negated match on ct.status"),
    (Rule((Match(("ct.status",), (("snat",),)),), Verdict("accept")), "ct status 'snat'"),
    (Rule((Match(("ct.status", "iif"), (("confirmed", "wan0"),)),), Verdict("accept")), "ct status 'confirmed'"),
    (Rule((Match(("iif",), (("eth*",),)),), Verdict("accept")), "interface name"),
    (Rule((Match(("ct.state",), (("untracked",),)),), Verdict("accept")), "connection state"),
])
def test_refuses_newer_ir_forms_it_cannot_write(rule: Rule, message: str) -> None:
    with pytest.raises(pf.RenderError, match=message):
        pf.render(_table((_forward((rule,)),)))


def test_unknown_dialect(seed: Ruleset) -> None:
    with pytest.raises(ValueError, match="dialect"):
        pf.render_files(seed, dialect="netbsd")


# -- no injection -------------------------------------------------------------------


@pytest.mark.parametrize("iface", ['wan0"\npass all', "wan0 quick", "any", "all", "0wan", "wan$x", "wan0#", "a" * 16, "lo\\"])
def test_hostile_interface_refused(iface: str) -> None:
    fwd = _forward((Rule((Match(("iif", "oif"), ((iface, "lan0"),)),), Verdict("accept")),))
    with pytest.raises(pf.RenderError):
        pf.render(_table((fwd,)))


def test_hostile_text_sanitised() -> None:
    evil = 'x"\npass in all # \\'
    web = SetDef("s", ("ip.daddr",), (Element((V4("10.0.0.1/32"),), comment=evil + " $if $srcaddr"),))
    fwd = _forward((Rule((Match(("iif", "oif"), (("wan0", "lan0"),)), Match(("ip.daddr",), set_name="s")),
                         Verdict("accept"), evil),))
    header = Header("m\npass all", "not a hash\n" + "pass all", "fw\\", "gen\r\nblock all")
    rs = Ruleset((Table("inet", "t", (fwd,), (web,)),), header)
    for dialect in pf.DIALECTS:
        text = pf.render(rs, dialect)
        assert pf.check(text) == []
        for line in text.splitlines():
            assert not line.startswith(("pass all", "pass in all", "block all"))
            assert "\\" not in line and "\r" not in line
        labels = [r.label for r in pf.parse(text).rules if r.label]
        assert labels and all('"' not in lb and "$" not in lb and len(lb) <= pf.LABEL_MAX for lb in labels)
        # the hostile text is there, defanged, one line each time
        assert sum("pass in all" in line for line in text.splitlines()) >= 2


def test_matrix_interface_pf_cannot_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pf would read '0wan' as a number. The loader refuses it (tests/test_hostile_input.py);
    # the renderer is the second wall: with the loader's check off, refused, never mangled.
    text = SEED.read_text().replace("wan0:", "0wan:")
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(MatrixError, match="0wan"):
        load_matrix(str(path))
    monkeypatch.setattr(loader, "IFACE_RE", re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\Z"))  # Linux's rule alone
    monkeypatch.setattr(loader, "interface_name_refusal", lambda name: None)
    with pytest.raises(pf.RenderError, match="0wan"):
        pf.render(compile_file(path)["edge"])


# -- the structural checker -------------------------------------------------------------


@pytest.fixture(scope="module")
def grouped_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small matrix whose groups become tables."""
    path = tmp_path_factory.mktemp("grouped") / "g.yaml"
    path.write_text(GROUPED)
    text = pf.render(compile_file(path)["fw"])
    assert "table <fwm_1> const" in text
    return text


GROUPED = """\
fwmatrix: 1
name: grouped
zones:
  internet: any
  lan: 10.0.0.0/16
  dmz: 10.1.0.0/16
hosts:
  a: 10.0.0.1
  b: 10.0.0.2
  c: 10.0.0.3
  web: 10.1.0.10
  db: 10.1.0.20
groups:
  admins: [a, b, c]
firewalls:
  fw:
    interfaces: {eth0: internet, eth1: lan, eth2: dmz}
openings:
  - {name: admin-ssh, from: admins, to: [web, db], service: tcp/22}
  - {name: admin-web, from: admins, to: web, service: [tcp/80, tcp/443]}
"""


def _mutate(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize("old, new, message", [
    ("table <fwm_1> const", "table <fwm_9> const", "table <fwm_1> is not defined"),
    ('eth1_if = "eth1"', "", "macro 'eth1_if' is not defined"),
    ("const { ", "const ", "unbalanced braces"),
    ("block drop all", "# no default", "no default 'block drop all'"),
    ("port 22", "port 70000", "out of range"),
    ("port 22", "port 22:21", "out of range"),
    ("pass in quick on", "pass in on", "without 'quick'"),
    ("proto tcp", "proto tcp udp", "expected 'from'"),
    ("proto tcp", "proto gre", "unknown protocol"),
    ('anchor "local"', 'anchor "local" # \\', "backslash"),
    ("to 10.1.0.10", "to 10.1.0.300", "not an address"),
    ("inet proto", "inet6 proto", "does not belong"),
    ("set skip on lo", "set skip on lo\npass in quick on $eth1_if inet proto tcp from any to 10.9.9.9 port 80", "before the default"),
])
def test_check_catches_broken_files(grouped_text: str, old: str, new: str, message: str) -> None:
    assert pf.check_files({pf.SUFFIX: grouped_text}) == []
    problems = pf.check_files({pf.SUFFIX: _mutate(grouped_text, old, new)})
    assert any(message in p for p in problems), problems
    assert all(p.startswith(pf.SUFFIX + ":") for p in problems)


def test_check_catches_dialect_mixups(seed: Ruleset) -> None:
    openbsd, freebsd = pf.render(seed, "openbsd"), pf.render(seed, "freebsd")
    assert any("removed in OpenBSD 4.7" in p for p in pf.check(freebsd, "openbsd"))
    assert any("OpenBSD syntax" in p for p in pf.check(openbsd, "freebsd"))
    moved = _mutate(freebsd, "block drop all\n", "") + "block drop all\n"
    assert pf.check(moved) != []  # filter rules before the default block
    late_rdr = freebsd + "rdr on $wan0_if inet proto tcp from any to 203.0.113.10 port 22 -> 172.16.10.10\n"
    assert any("require-order" in p for p in pf.check(late_rdr))


@pytest.mark.parametrize("dialect, old, new, message", [
    ("freebsd", "tag fwm_dnat -> 172.16.10.10", "-> 172.16.10.10 tag fwm_dnat", "unexpected 'tag' in a rdr rule"),  # tag before ->
    ("freebsd", "tagged fwm_in_lan0 label \"cti-to-sipproxy\"", "tagged fwm_in_lan0 tagged x label \"cti-to-sipproxy\"", "'tagged' twice"),
    ("freebsd", "tag fwm_in_lan0 label \"cti-to-sipproxy\"", "tag fwm_in_lan0 tag x label \"cti-to-sipproxy\"", "'tag' twice"),
    ("freebsd", "tag fwm_dnat -> 172.16.10.10", "tag pass -> 172.16.10.10", "bad tag 'pass'"),
    ("openbsd", "rdr-to 172.16.10.10 tag fwm_dnat", "rdr-to 172.16.10.10 tag " + "x" * 64, "bad tag"),
    ("openbsd", "port 5060 received-on $lan0_if label", "port 5060 received-on $lan0_if tag x label", "unexpected 'tag' in a pass rule"),
])
def test_check_reads_tags(seed: Ruleset, dialect: str, old: str, new: str, message: str) -> None:
    text = pf.render(seed, dialect)
    assert pf.check(text) == []
    problems = pf.check(_mutate(text, old, new))
    assert any(message in p for p in problems), problems


# -- scale --------------------------------------------------------------------------------


def big_matrix(openings: int = 2000, seed: int = 7) -> str:
    rng = random.Random(seed)
    zones = [f"z{i}" for i in range(8)]
    lines = ["fwmatrix: 1", "name: big", "zones:", "  internet: any"]
    lines += [f"  {z}: 10.{i}.0.0/16" for i, z in enumerate(zones)]
    hosts: dict[str, int] = {}
    lines.append("hosts:")
    for n in range(400):
        zone = n % len(zones)
        hosts[f"h{n}"] = zone
        lines.append(f"  h{n}: 10.{zone}.{n // 250}.{n % 250 + 1}")
    groups: dict[str, int] = {}
    lines.append("groups:")
    for g in range(60):
        zone = g % len(zones)
        members = rng.sample([h for h, z in hosts.items() if z == zone], 6)
        groups[f"g{g}"] = zone
        lines.append(f"  g{g}: [{', '.join(members)}]")
    lines.append("services:")
    for s in range(80):
        kind = s % 3
        if kind == 0:
            lines.append(f"  s{s}: tcp/{1000 + s}")
        elif kind == 1:
            lines.append(f"  s{s}: [tcp/{2000 + s}, udp/{2000 + s}]")
        else:
            lines.append(f"  s{s}: udp/{10000 + 100 * s}-{10049 + 100 * s}")
    ifaces = ", ".join(f"eth{i}: {z}" for i, z in enumerate(zones))
    public = ", ".join(f"p{k}: 203.0.113.{k + 1}" for k in range(10))
    lines += ["firewalls:", "  fw:", f"    interfaces: {{wan0: internet, {ifaces}}}", f"    public: {{{public}}}", "openings:"]
    names = list(hosts) + list(groups)
    zone_of = {**hosts, **groups}
    for n in range(openings):
        if n % 40 == 0:
            k = n // 40
            target = rng.choice(list(hosts))
            lines.append(f"  - {{name: nat{n}, from: internet, to: fw.p{k % 10}, service: tcp/{8000 + k}, nat: {target}}}")
            continue
        src = rng.choice(names)
        dst = rng.choice([x for x in names if zone_of[x] != zone_of[src]])
        lines.append(f"  - {{name: o{n}, from: {src}, to: {dst}, service: s{rng.randrange(80)}}}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Ruleset:
    path = tmp_path_factory.mktemp("big") / "big.yaml"
    path.write_text(big_matrix())
    return compile_file(path)["fw"]


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_two_thousand_openings(big: Ruleset, dialect: str) -> None:
    files = pf.render_files(big, dialect=dialect)  # how fast: bench/speed_bench.py --works pf
    assert pf.check_files(files) == []
    text = files[pf.SUFFIX]
    assert text == pf.render(big, dialect)
    written, expanded = pf.rule_counts(text)
    elements = sum(len(s.elements) for t in big.tables for s in t.sets)
    # Tables and lists keep the file at about two rules (in, out) per opening at most.
    assert written <= 2 * 2000 + 200, (written, elements)
    assert "table <fwm_" in text


def test_two_thousand_openings_same_policy(big: Ruleset) -> None:
    assert assert_same_policy(big, "openbsd", 3000) >= 0


# -- IPv6 ------------------------------------------------------------------------------------

DUAL = """\
fwmatrix: 1
name: dual
zones:
  internet: any
  dmz: [172.16.10.0/24, 2001:db8:10::/64]
  lan: [10.20.0.0/16, 2001:db8:20::/48]
hosts:
  web: [172.16.10.10, 2001:db8:10::10]
  app: 2001:db8:20::30
  ops: [10.20.0.5, 2001:db8:20::5]
firewalls:
  edge:
    interfaces: {wan0: internet, dmz0: dmz, lan0: lan}
    public: {v4: 203.0.113.10, v6: 2001:db8:ffff::10}
openings:
  - {name: web-in, from: internet, to: [edge.v4, edge.v6], service: tcp/443, nat: web}
  - {name: web-to-app, from: web, to: app, service: tcp/8080}
  - {name: ops-ping, from: ops, to: web, service: icmp}
"""


@pytest.fixture(scope="module")
def dual(tmp_path_factory: pytest.TempPathFactory) -> Ruleset:
    path = tmp_path_factory.mktemp("dual") / "dual.yaml"
    path.write_text(DUAL)
    return compile_file(path)["edge"]


@pytest.mark.parametrize("dialect", pf.DIALECTS)
def test_ipv6_lands_in_inet6_rules(dual: Ruleset, dialect: str) -> None:
    text = pf.render(dual, dialect)
    conf = pf.parse(text)
    assert conf.problems == []  # the checker refuses an IPv6 address in an inet rule
    v6 = [r for r in conf.rules if any(":" in a for a in r.src + r.dst if a not in ("any", "self"))]
    assert v6 and all(r.af == "inet6" for r in v6)
    assert any(r.af == "inet6" and r.protos == ("icmp6",) and not r.icmp6_types for r in conf.rules)  # ops-ping
    assert any(r.af == "inet" and r.protos == ("icmp",) for r in conf.rules)
    assert "2001:db8:20::30" in text and "icmp6-type { neighbrsol neighbradv }" in text
    translated = [r for r in conf.rules if r.rdr_to == "2001:db8:10::10"]
    assert translated and all(r.af == "inet6" for r in translated)
    assert_same_policy(dual, dialect)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=matrix_yaml())
def test_random_matrices_same_policy(tmp_path: Path, text: str) -> None:
    """Any valid matrix: every firewall renders in both dialects (or is refused, for sctp
    ports only, which pf cannot match), passes the checker and forwards what the IR forwards."""
    path = tmp_path / "random.yaml"
    path.write_text(text)
    for ruleset in compile_file(path).values():
        for dialect in pf.DIALECTS:
            try:
                rendered = pf.render(ruleset, dialect)
            except pf.RenderError as exc:
                assert "protocol 132" in str(exc), exc
                continue
            assert pf.check(rendered) == []
            assert_same_policy(ruleset, dialect, 300)


def test_ipv4_only_has_no_neighbour_discovery(seed: Ruleset) -> None:
    assert "inet6" not in pf.render(seed)
