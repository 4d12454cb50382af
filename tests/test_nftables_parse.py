"""The nftables parser: what a live ruleset really does, as the Ruleset IR.

Corpus rulesets (tests/corpus/nftables/*.nft) are loaded by nft itself into
private network namespaces and parsed from its JSON listing; compiled
rulesets survive render -> kernel -> listing -> parse with their meaning
intact; JSON fixtures pin what a kernel here may not load (queue, iptables-nft
xt) and the one-line errors for listings that are not nftables JSON.
"""

from __future__ import annotations

import functools
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from netaddr import IPNetwork, IPRange

from conftest import ROOT, SEED
from fwmatrix.backends import nftables
from fwmatrix.compile.ruleset import compile_intent
from fwmatrix.errors import BackendError
from fwmatrix.compile.intent import build_intent
from fwmatrix.ir import Action, Dnat, DnatMap, Jump, Masquerade, Match, Notrack, Rule, Ruleset, Snat, Table, TcpFlags, Unmodelled, UnmodelledAction, Verdict, VerdictMap
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.matrix.model import PortRange
from fwmatrix.netns import NetNamespace
from strategies import matrix_yaml

CORPUS = Path(__file__).resolve().parent / "corpus" / "nftables"
XT = Unmodelled(nftables.XT_TEXT)
ACCEPT, DROP, REJECT, RETURN = Verdict("accept"), Verdict("drop"), Verdict("reject"), Verdict("return")


# -- building expected IR -----------------------------------------------------------


def _typed(field: str, value: Any) -> Any:
    """Write expectations as text: addresses and port ranges become IR values."""
    if field.startswith("ip") and isinstance(value, str):
        return IPRange(*value.split("-")) if "-" in value else IPNetwork(value)
    if field in ("dport", "sport"):
        low, _, high = str(value).partition("-")
        return PortRange(int(low), int(high or low))
    return value


def m(fields: str, *values: Any, negate: bool = False) -> Match:
    """m("ip.saddr . dport", ("10.0.0.0/8", 22)): fields joined by ' . ', one value (or tuple) per key."""
    names = tuple(fields.split(" . "))
    keys = tuple(tuple(_typed(f, v) for f, v in zip(names, value if isinstance(value, tuple) else (value,))) for value in values)
    return Match(names, keys, negate=negate)


def at(fields: str, name: str, negate: bool = False) -> Match:
    return Match(tuple(fields.split(" . ")), set_name=name, negate=negate)


TCP, UDP, ICMP, ICMPV6 = m("l4proto", 6), m("l4proto", 17), m("l4proto", 1), m("l4proto", 58)
IPV4, IPV6 = m("nfproto", 4), m("nfproto", 6)


# -- comparing meaning ---------------------------------------------------------------
# Order of matches in a rule, of values in an anonymous set and of vmap entries
# carries no meaning; addresses compare as the ranges they cover.


def _value(v: Any) -> Any:
    return ("addr", v.version, v.first, v.last) if isinstance(v, (IPNetwork, IPRange)) else v


def _key(key: tuple) -> tuple:
    return tuple(_value(v) for v in key)


def _match(x: Match | Unmodelled) -> Any:
    if isinstance(x, Match):
        return ("match", x.fields, frozenset(map(_key, x.values)), x.set_name, x.negate)
    return x


def _action(a: Action) -> Any:
    if isinstance(a, VerdictMap):
        return ("vmap", a.fields, frozenset((_key(k), v) for k, v in a.entries), a.map_name)
    if isinstance(a, DnatMap):
        return ("dnatmap", a.family, a.fields, a.map_name, frozenset((_key(k), _key(d)) for k, d in a.entries))
    if isinstance(a, Dnat):
        return ("dnat", a.family, _value(a.address), a.port)
    return a


def rule_meaning(rule: Rule) -> tuple:
    return (frozenset(map(_match, rule.matches)), _action(rule.action))


def meaning(ruleset: Ruleset) -> dict:
    return {
        (t.family, t.name): (
            {c.name: (c.hook, c.type, c.priority, c.policy, [rule_meaning(r) for r in c.rules]) for c in t.chains},
            {s.name: (s.key, s.data, frozenset((_key(e.key), _key(e.data)) for e in s.elements)) for s in t.sets},
        )
        for t in ruleset.tables
    }


def table(ruleset: Ruleset, family: str, name: str) -> Table:
    return next(t for t in ruleset.tables if (t.family, t.name) == (family, name))


def rules(ruleset: Ruleset, where: str) -> tuple[Rule, ...]:
    family, name, chain = where.split()
    return table(ruleset, family, name).chain(chain).rules


def expect(ruleset: Ruleset, where: str, index: int, matches: tuple, action: Action, comment: str | None = None) -> None:
    got = rules(ruleset, where)[index]
    assert rule_meaning(got) == rule_meaning(Rule(matches, action)), f"{where}[{index}]: {got}"
    if comment is not None:
        assert got.comment == comment


def base(ruleset: Ruleset, where: str) -> tuple:
    family, name, chain = where.split()
    c = table(ruleset, family, name).chain(chain)
    return (c.hook, c.type, c.priority, c.policy)


def elements(ruleset: Ruleset, family: str, name: str, set_name: str) -> dict:
    return {_key(e.key): (_key(e.data), e.comment) for e in table(ruleset, family, name).set(set_name).elements}


# -- the corpus ------------------------------------------------------------------------


@functools.cache
def corpus(name: str) -> Ruleset:
    return nftables.parse_text((CORPUS / name).read_text(), name)


STRUCTURE = {
    "home-router.nft": {("inet", "filter"): {"input": 6, "forward": 5, "output": 0}, ("ip", "nat"): {"prerouting": 2, "postrouting": 1}},
    "server-input.nft": {("inet", "host"): {"input": 10, "output": 0}},
    "docker-like.nft": {
        ("ip", "filter"): {"DOCKER": 1, "DOCKER-ISOLATION-STAGE-1": 2, "DOCKER-ISOLATION-STAGE-2": 2, "DOCKER-USER": 1, "FORWARD": 6},
        ("ip", "nat"): {"DOCKER": 2, "PREROUTING": 1, "OUTPUT": 1, "POSTROUTING": 2},
    },
    "firewalld-like.nft": {
        ("inet", "firewalld"): {
            "raw_PREROUTING": 2, "nat_PREROUTING": 1, "nat_PREROUTING_ZONES": 2, "nat_PRE_public": 1, "nat_PRE_internal": 0,
            "nat_POSTROUTING": 1, "filter_INPUT": 6, "filter_FORWARD": 7, "filter_INPUT_ZONES": 2, "filter_FORWARD_ZONES": 2,
            "filter_IN_public": 2, "filter_IN_public_allow": 2, "filter_IN_internal": 2, "filter_IN_internal_allow": 3,
            "filter_FWD_public": 1, "filter_FWD_public_allow": 1, "filter_FWD_internal": 1, "filter_FWD_internal_allow": 1,
        }
    },
    "sets-and-maps.nft": {("inet", "edge"): {"prerouting": 3, "forward": 3, "lan_to_wan": 2, "wan_to_dmz": 2, "lan_to_dmz": 2}},
    "multi-table.nft": {("ip", "security"): {"forward_early": 3}, ("inet", "main"): {"forward_main": 4, "input": 0}},
    "ip6-only.nft": {("ip6", "filter"): {"input": 5, "forward": 7}},
    "jumps.nft": {("inet", "fw"): {"forward": 4, "from_lan": 3, "lan_to_wan": 2, "from_wan": 3, "wan_to_dmz_extra": 2}},
    "unmodelled.nft": {("inet", "odd"): {"raw_prerouting": 1, "mangle_prerouting": 2, "forward": 8}},
    "sockets.nft": {("inet", "sockets"): {"forward": 7, "output": 1}},
    "hop-limits.nft": {("inet", "hops"): {"input": 3, "forward": 5}},
    "ext-headers.nft": {("inet", "exthdrs"): {"forward": 8}},
    "families.nft": {("bridge", "filter"): {"forward": 2}, ("arp", "filter"): {"input": 1}, ("netdev", "edge"): {"ingress": 1}, ("ip", "plain"): {"forward": 1}},
    "fwmatrix-seed.nft": {
        ("inet", "fwmatrix"): {"prerouting": 1, "forward": 3, "fwd_dmz0_to_lan0": 1, "fwd_dmz1_to_lan0": 1, "fwd_lan0_to_dmz1": 1, "fwd_wan0_to_dmz0": 1}
    },
}
ORIGIN_RE = re.compile(r"(inet|ip|ip6|bridge|arp|netdev) (\S+) (\S+) handle \d+\Z")


def test_every_corpus_file_has_expectations() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.nft")) == sorted(STRUCTURE)


@pytest.mark.kernel
@pytest.mark.parametrize("name", sorted(STRUCTURE))
def test_corpus_tables_chains_and_rule_counts(name: str) -> None:
    ruleset = corpus(name)
    assert {(t.family, t.name): {c.name: len(c.rules) for c in t.chains} for t in ruleset.tables} == STRUCTURE[name]
    for t in ruleset.tables:
        for c in t.chains:
            for r in c.rules:
                found = ORIGIN_RE.match(r.origin)
                assert found and found.groups() == (t.family, t.name, c.name), r.origin
    assert pickle.loads(pickle.dumps(ruleset)) == ruleset


@pytest.mark.kernel
def test_home_router() -> None:
    rs = corpus("home-router.nft")
    assert base(rs, "inet filter input") == ("input", "filter", 0, "drop")
    assert base(rs, "ip nat prerouting") == ("prerouting", "nat", -100, "accept")
    assert base(rs, "ip nat postrouting") == ("postrouting", "nat", 100, "accept")
    expect(rs, "inet filter input", 1, (m("ct.state", "established", "related"),), ACCEPT)
    expect(rs, "inet filter input", 3, (m("iif", "br-lan"), TCP, m("dport", 22, 53, 80, 443)), ACCEPT, "router admin and dns from the lan")
    expect(rs, "inet filter input", 4, (at("iif", "local_ifaces"), UDP, m("dport", 53, 67)), ACCEPT)
    expect(rs, "inet filter input", 5, (m("l4proto", 1, 58),), ACCEPT)
    private = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    expect(rs, "inet filter forward", 3, (m("iif", "wlan-guest"), m("oif", "wan0"), IPV4, m("ip.daddr", *private, negate=True)), ACCEPT)
    expect(rs, "inet filter forward", 4, (m("iif", "wan0"), m("oif", "br-lan"), m("ct.status", "dnat")), ACCEPT, "port forwards")
    expect(rs, "ip nat prerouting", 0, (m("iif", "wan0"), TCP, m("dport", 8443)), Dnat(4, IPNetwork("192.168.1.10"), PortRange(443, 443)), "nas web interface")
    expect(rs, "ip nat prerouting", 1, (m("iif", "wan0"), UDP, m("dport", 51820)), Dnat(4, IPNetwork("192.168.1.20"), None))
    expect(rs, "ip nat postrouting", 0, (m("oif", "wan0"),), Masquerade())  # masquerade ends its nat chain (the evaluator: as accept)
    local = table(rs, "inet", "filter").set("local_ifaces")
    assert local.key == ("iif",) and {e.key for e in local.elements} == {("br-lan",), ("wlan-guest",)}


@pytest.mark.kernel
def test_server_input() -> None:
    rs = corpus("server-input.nft")
    expect(rs, "inet host input", 0, (m("iif", "lo"),), ACCEPT)  # `iif` by index, listed by name
    states = VerdictMap(("ct.state",), ((("established",), ACCEPT), (("related",), ACCEPT), (("invalid",), DROP)))
    expect(rs, "inet host input", 1, (), states)
    expect(rs, "inet host input", 2, (at("ip.saddr", "admins4"), TCP, m("dport", 22)), ACCEPT, "ssh for admins")
    expect(rs, "inet host input", 3, (at("ip6.saddr", "admins6"), TCP, m("dport", 22)), ACCEPT)
    icmp = rules(rs, "inet host input")[6]
    assert icmp.matches == (ICMP, m("icmp.type", 3, 8, 11))  # names in nft's listing order
    expect(rs, "inet host input", 8, (TCP, m("dport", 113)), REJECT)
    expect(rs, "inet host input", 9, (), REJECT)
    assert table(rs, "inet", "host").set("admins4").key == ("ip.saddr",)
    assert elements(rs, "inet", "host", "admins4") == {_key((IPNetwork("198.51.100.0/26"),)): ((), ""), _key((IPNetwork("203.0.113.7"),)): ((), "")}


@pytest.mark.kernel
def test_docker_like() -> None:
    rs = corpus("docker-like.nft")
    assert base(rs, "ip filter FORWARD") == ("forward", "filter", 0, "drop")
    assert base(rs, "ip filter DOCKER") == (None, "filter", 0, None)
    expect(rs, "ip filter FORWARD", 0, (), Jump("DOCKER-USER"))
    expect(rs, "ip filter FORWARD", 2, (m("oif", "docker0"), m("ct.state", "established", "related")), ACCEPT)
    expect(rs, "ip filter FORWARD", 4, (m("iif", "docker0"), m("oif", "docker0", negate=True)), ACCEPT)
    expect(rs, "ip filter DOCKER", 0, (m("iif", "docker0", negate=True), m("oif", "docker0"), m("ip.daddr", "172.17.0.2"), TCP, m("dport", 80)), ACCEPT)
    expect(rs, "ip filter DOCKER-ISOLATION-STAGE-2", 1, (), RETURN)
    expect(rs, "ip nat DOCKER", 1, (m("iif", "docker0", negate=True), TCP, m("dport", 8080)), Dnat(4, IPNetwork("172.17.0.2"), PortRange(80, 80)))
    expect(rs, "ip nat PREROUTING", 0, (m("daddr.type", "local"),), Jump("DOCKER"))
    expect(rs, "ip nat OUTPUT", 0, (IPV4, m("ip.daddr", "127.0.0.0/8", negate=True), m("daddr.type", "local")), Jump("DOCKER"))


@pytest.mark.kernel
def test_firewalld_like() -> None:
    rs = corpus("firewalld-like.nft")
    assert base(rs, "inet firewalld filter_FORWARD") == ("forward", "filter", 10, "accept")
    assert base(rs, "inet firewalld raw_PREROUTING") == ("prerouting", "filter", -290, "accept")
    assert base(rs, "inet firewalld nat_PREROUTING") == ("prerouting", "nat", -90, "accept")
    expect(rs, "inet firewalld filter_FORWARD", 0, (m("ct.state", "established", "related"),), ACCEPT)
    expect(rs, "inet firewalld filter_FORWARD", 1, (m("ct.status", "dnat"),), ACCEPT)
    bogons = rules(rs, "inet firewalld filter_FORWARD")[4]
    assert isinstance(bogons.matches[0], Match) and bogons.matches[0].fields == ("ip6.daddr",) and len(bogons.matches[0].values) == 9
    assert bogons.action == REJECT
    zones = VerdictMap(("iif",), ((("eth0",), Jump("filter_FWD_public", goto=True)), (("eth1",), Jump("filter_FWD_internal", goto=True))))
    expect(rs, "inet firewalld filter_FORWARD_ZONES", 0, (), zones)
    expect(rs, "inet firewalld filter_FORWARD_ZONES", 1, (), Jump("filter_FWD_public", goto=True))
    expect(rs, "inet firewalld raw_PREROUTING", 1, (IPV6, Unmodelled("fib saddr . mark . iif oif missing")), DROP)
    expect(rs, "inet firewalld nat_PRE_public", 0, (IPV4, TCP, m("dport", 2222)), Dnat(4, IPNetwork("10.10.0.5"), PortRange(22, 22)))
    expect(rs, "inet firewalld filter_IN_public_allow", 0, (TCP, m("dport", 22), m("ct.state", "new", "untracked")), ACCEPT)
    new = m("ct.state", "new", "untracked")
    expect(rs, "inet firewalld filter_FWD_public_allow", 0, (m("oif", "eth1"), m("ip.daddr", "10.10.0.5"), TCP, m("dport", 22), new), ACCEPT)


@pytest.mark.kernel
def test_sets_and_maps() -> None:
    rs = corpus("sets-and-maps.nft")
    edge = table(rs, "inet", "edge")
    assert edge.set("office_nets").key == ("ip.saddr",)
    assert elements(rs, "inet", "edge", "office_nets") == {
        _key((IPNetwork("10.20.0.0/16"),)): ((), ""),
        _key((IPRange("10.30.0.0", "10.30.2.255"),)): ((), "old range, not a prefix"),
        _key((IPNetwork("10.40.1.1"),)): ((), ""),
    }
    assert edge.set("servers").key == ("ip.daddr", "l4proto", "dport")
    assert elements(rs, "inet", "edge", "servers")[_key((IPNetwork("10.20.1.12"), 17, PortRange(10000, 20000)))] == ((), "media")
    pairs = edge.set("zone_pairs")
    assert (pairs.key, pairs.data) == (("iif", "oif"), ("verdict",))
    assert {e.key: e.data for e in pairs.elements} == {
        ("lan0", "wan0"): (Jump("lan_to_wan"),), ("wan0", "dmz0"): (Jump("wan_to_dmz"),),
        ("dmz0", "wan0"): (DROP,), ("lan0", "dmz0"): (Jump("lan_to_dmz", goto=True),),
    }
    forwards = edge.set("port_forwards")
    assert (forwards.key, forwards.data) == (("ip.daddr", "dport"), ("ip.daddr", "dport"))
    assert elements(rs, "inet", "edge", "port_forwards")[_key((IPNetwork("198.51.100.5"), PortRange(2222, 2222)))][0] == _key((IPNetwork("10.20.1.13"), PortRange(22, 22)))
    assert elements(rs, "inet", "edge", "redirect_targets")[(PortRange(5060, 5061),)][0] == _key((IPNetwork("10.20.1.50"),))
    expect(rs, "inet edge prerouting", 0, (m("iif", "wan0"), TCP), DnatMap(4, ("ip.daddr", "dport"), "port_forwards"))
    expect(rs, "inet edge prerouting", 1, (m("iif", "wan0"), m("ip.daddr", "198.51.100.6"), UDP), DnatMap(4, ("dport",), "redirect_targets"))
    literal = ((( PortRange(443, 443),), (IPNetwork("10.20.1.10"),)), ((PortRange(8443, 8443),), (IPNetwork("10.20.1.11"),)))
    expect(rs, "inet edge prerouting", 2, (m("iif", "wan0"), m("ip.daddr", "198.51.100.7"), TCP), DnatMap(4, ("dport",), entries=literal))
    expect(rs, "inet edge forward", 1, (at("ip6.saddr", "blocked6"),), DROP)
    expect(rs, "inet edge forward", 2, (), VerdictMap(("iif", "oif"), map_name="zone_pairs"))
    expect(rs, "inet edge lan_to_wan", 1, (m("ip.saddr . ip.daddr", ("10.20.0.0/16", "192.0.2.0/24"), ("10.40.1.1", "192.0.2.10")),), DROP)
    expect(rs, "inet edge wan_to_dmz", 0, (at("ip.daddr . l4proto . dport", "servers"),), ACCEPT)
    expect(rs, "inet edge wan_to_dmz", 1, (TCP, m("ip.daddr . dport", ("10.20.1.13", 22))), ACCEPT)
    expect(rs, "inet edge lan_to_dmz", 0, (IPV4, at("ip.saddr", "office_nets", negate=True)), DROP)


@pytest.mark.kernel
def test_multi_table_forward_priorities() -> None:
    rs = corpus("multi-table.nft")
    assert base(rs, "ip security forward_early") == ("forward", "filter", -10, "accept")
    assert base(rs, "inet main forward_main") == ("forward", "filter", 10, "drop")
    expect(rs, "ip security forward_early", 0, (at("ip.saddr", "bad_actors"),), DROP, "threat feed")
    expect(rs, "ip security forward_early", 1, (at("ip.daddr", "bad_actors"),), DROP)
    expect(rs, "inet main forward_main", 3, (m("iif", "wan0"), m("oif", "dmz0"), m("ip6.daddr", "2001:db8:1::10"), TCP, m("dport", 80, 443)), ACCEPT)


@pytest.mark.kernel
def test_ip6_only() -> None:
    rs = corpus("ip6-only.nft")
    assert base(rs, "ip6 filter forward") == ("forward", "filter", 0, "drop")
    expect(rs, "ip6 filter forward", 3, (m("iif", "lan0"), m("oif", "wan0"), at("ip6.saddr", "lan6")), ACCEPT)
    dns = (m("iif", "wan0"), m("oif", "srv0"), m("ip6.daddr", "2001:db8:100:2::53"), m("l4proto", 6, 17), m("dport", 53))
    expect(rs, "ip6 filter forward", 5, dns, ACCEPT)
    expect(rs, "ip6 filter forward", 6, (m("iif", "wan0"), m("ip6.saddr", "2001:db8:100::/56")), DROP)
    icmp = rules(rs, "ip6 filter forward")[2]
    # the ICMPv6 type is read (the neighbour-discovery check uses it; forward judges it both ways)
    assert icmp.matches[0] == ICMPV6 and icmp.action == ACCEPT
    assert icmp.matches[1] == Match(("icmpv6.type",), ((1,), (2,), (3,), (4,), (128,)))


@pytest.mark.kernel
def test_jumps_gotos_returns() -> None:
    rs = corpus("jumps.nft")
    expect(rs, "inet fw forward", 1, (m("iif", "lan0"),), Jump("from_lan"))
    expect(rs, "inet fw forward", 2, (m("iif", "wan0"),), Jump("from_wan", goto=True))
    expect(rs, "inet fw forward", 3, (), DROP)  # the log statement changes nothing
    expect(rs, "inet fw from_lan", 0, (IPV4, m("ip.saddr", "10.1.0.0/16", negate=True)), RETURN, "not ours: back to forward")
    expect(rs, "inet fw lan_to_wan", 0, (TCP, m("dport", 25)), REJECT)
    expect(rs, "inet fw wan_to_dmz_extra", 1, (), RETURN)


@pytest.mark.kernel
def test_unmodelled_constructs_are_kept() -> None:
    rs = corpus("unmodelled.nft")
    expect(rs, "inet odd raw_prerouting", 0, (UDP, m("dport", 53)), Notrack())
    expect(rs, "inet odd mangle_prerouting", 0, (m("iif", "wan1"),), UnmodelledAction("meta mark set 2"))
    expect(rs, "inet odd mangle_prerouting", 1, (), UnmodelledAction("ct mark set meta mark"))
    expect(rs, "inet odd forward", 0, (), None)  # a bare counter
    expect(rs, "inet odd forward", 2, (Unmodelled("meta mark 2"), m("oif", "lan0")), ACCEPT)
    meter = Unmodelled("update @ssh_meter { ip saddr limit rate 3/minute burst 5 packets }")
    expect(rs, "inet odd forward", 3, (TCP, m("dport", 22), m("ct.state", "new"), meter), ACCEPT)
    expect(rs, "inet odd forward", 4, (ICMP, m("icmp.type", 8), Unmodelled("limit rate 5/second burst 5 packets")), ACCEPT)
    expect(rs, "inet odd forward", 5, (m("ip.daddr", "10.0.0.80"), TCP, m("dport", 80), Unmodelled("quota 100 mbytes")), ACCEPT)
    expect(rs, "inet odd forward", 6, (TCP, m("tcp.flags", TcpFlags(0x02, 0x02)), m("dport", 8080)), UnmodelledAction("synproxy"))
    expect(rs, "inet odd forward", 7, (), DROP)


@pytest.mark.kernel
def test_socket_owner_matches_are_socket_tests() -> None:
    """`meta skuid`/`skgid` (==, !=, in a concatenation) test the packet's local socket: nft
    breaks the rule without one, so each is a positive socket match (evaluate/sockets.py)."""
    rs = corpus("sockets.nft")
    sock = lambda text: Match(("socket",), ((text,),))
    expect(rs, "inet sockets forward", 1, (sock("meta skuid 0"),), DROP)
    expect(rs, "inet sockets forward", 2, (sock("meta skuid != 0"),), DROP)
    expect(rs, "inet sockets forward", 3, (sock("meta skgid != 0"), TCP, m("dport", 22)), DROP)
    [concat] = rules(rs, "inet sockets forward")[4].matches[1:]
    assert concat.fields == ("socket",) and "80 . 0" in concat.values[0][0] and not concat.negate
    expect(rs, "inet sockets forward", 5, (sock("meta skgid fwmt-web"), TCP, m("dport", 25)), DROP)  # a placeholder group, by name


@pytest.mark.kernel
def test_other_families_are_kept() -> None:
    rs = corpus("families.nft")
    assert base(rs, "bridge filter forward") == ("forward", "filter", 0, "accept")
    assert base(rs, "netdev edge ingress") == ("ingress", "filter", -500, "accept")
    expect(rs, "bridge filter forward", 0, (Unmodelled("ether type arp"),), ACCEPT)
    expect(rs, "bridge filter forward", 1, (m("ip.saddr", "192.0.2.66"),), DROP)
    expect(rs, "arp filter input", 0, (Unmodelled("arp operation request"),), ACCEPT)


# -- round trips: render -> kernel -> listing -> parse ---------------------------------


def compiled(path: Path) -> dict[str, Ruleset]:
    return compile_intent(build_intent(load_matrix(str(path))))


def through_kernel(ruleset: Ruleset) -> Ruleset:
    with NetNamespace() as ns:
        nftables.load(ns, nftables.render(ruleset))
        return nftables.parse_json(nftables.list_ruleset_json(ns))


@pytest.mark.kernel
@pytest.mark.parametrize("path", [SEED, ROOT / "examples" / "two-firewalls" / "matrix.yaml", ROOT / "examples" / "shared-proxy" / "matrix.yaml"], ids=lambda p: p.parent.name)
def test_compiled_rulesets_round_trip(path: Path) -> None:
    for ruleset in compiled(path).values():
        assert meaning(through_kernel(ruleset)) == meaning(ruleset)


@pytest.mark.kernel
def test_seed_corpus_file_is_the_compiled_seed() -> None:
    assert meaning(corpus("fwmatrix-seed.nft")) == meaning(compiled(SEED)["edge"])


@pytest.mark.kernel
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=matrix_yaml())
def test_generated_matrices_round_trip(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("m") / "matrix.yaml"
    path.write_text(text)
    for ruleset in compiled(path).values():
        assert meaning(through_kernel(ruleset)) == meaning(ruleset)


# -- the live ruleset of a namespace -----------------------------------------------------


@pytest.mark.kernel
def test_read_live_in_a_namespace_matches_parse_text() -> None:
    text = (CORPUS / "home-router.nft").read_text()
    with NetNamespace() as ns:
        nftables.load(ns, text)
        live = ns.call(nftables.read_live)  # pickled back from the child
    assert meaning(live) == meaning(nftables.parse_text(text))


@pytest.mark.kernel
def test_iptables_nft_tables_are_marked_not_guessed() -> None:
    if shutil.which("iptables-nft") is None:
        pytest.skip("iptables-nft is not installed")
    with NetNamespace() as ns:
        ns.run(["iptables-nft", "-A", "FORWARD", "-p", "tcp", "--dport", "22", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"])
        ns.run(["iptables-nft", "-A", "FORWARD", "-j", "LOG", "--log-prefix", "x"])
        ns.run(["iptables-nft", "-A", "FORWARD", "-s", "10.0.0.0/8", "-j", "DROP"])
        live = ns.call(nftables.read_live)
    forward = rules(live, "ip filter FORWARD")
    assert XT in forward[0].matches and forward[0].action == ACCEPT
    assert TCP in forward[0].matches and m("dport", 22) in forward[0].matches  # native parts still read
    assert XT in forward[1].matches and forward[1].action == UnmodelledAction(nftables.XT_TEXT)
    assert rule_meaning(forward[2]) == rule_meaning(Rule((m("ip.saddr", "10.0.0.0/8"),), DROP))


@pytest.mark.kernel
def test_invalid_text_is_one_error_with_its_line() -> None:
    text = "table inet t {\n\tchain c {\n\t\ttcp dport 99999 accept\n\t}\n}\n"
    with pytest.raises(BackendError) as info:
        nftables.parse_text(text, "bad.nft")
    assert (info.value.file, info.value.line) == ("bad.nft", 3)
    assert "out of range" in str(info.value) and "\n" not in str(info.value)


# -- JSON fixtures: no kernel needed -------------------------------------------------------


def listing(*exprs: list, family: str = "inet", table_extra: dict | None = None, objects: tuple = ()) -> dict:
    """A listing with table `t`, base chain `c` (forward) and one rule per expression list."""
    items: list[dict] = [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"table": {"family": family, "name": "t", "handle": 1, **(table_extra or {})}}]
    items += list(objects)
    items.append({"chain": {"family": family, "table": "t", "name": "c", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}})
    items += [{"rule": {"family": family, "table": "t", "chain": "c", "handle": 10 + i, "expr": expr}} for i, expr in enumerate(exprs)]
    return {"nftables": items}


def parsed(*exprs: list, **kw: Any) -> list[Rule]:
    return list(nftables.parse_json(listing(*exprs, **kw)).tables[0].chains[0].rules)


def match(left: Any, right: Any, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


CT_STATE = {"ct": {"key": "state"}}
CT_STATUS = {"ct": {"key": "status"}}
IIF = {"meta": {"key": "iif"}}
SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}


def test_queue_and_other_fate_changing_statements_are_unmodelled_actions() -> None:
    queue, marked, helper, offload = parsed(
        [{"queue": {"num": 3, "flags": "bypass"}}],
        [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": 1}}, {"accept": None}],
        [match({"payload": {"protocol": "tcp", "field": "dport"}}, 21), {"ct helper": "ftp"}],
        [{"flow": {"op": "add", "flowtable": "@ft"}}],
    )
    assert queue.action == UnmodelledAction("queue num 3 bypass")
    assert marked.action == UnmodelledAction("meta mark set 1; accept")
    # a helper never accepts: the chain goes on (what it may drop is judged both ways)
    assert helper.matches == (TCP, m("dport", 21)) and helper.action == UnmodelledAction("ct helper ftp", terminal=False)
    assert offload == Rule((), None, origin="inet t c handle 13")  # offload only touches established connections


def test_source_nat_accepts_in_its_nat_chain_and_an_mss_clamp_decides_nothing() -> None:
    """snat and masquerade end the nat chain with an accept (only for their family, in an
    inet table): `masquerade` and `snat to A` read as the IR's source NAT (audit/snat.py judges
    the address; ports and flags do not change it), other forms (a range, an address of no known
    family) as a terminal unmodelled action (audit/snat.py says so; forward._nat_passes lets the
    packet on); an MSS clamp (`tcp option maxseg size set`) changes no fate, but a packet
    without the option stops the rule there, so a verdict after it stays unmodelled."""
    OIF = {"meta": {"key": "oifname"}}
    SYN = match({"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, "syn"]}, "syn")
    clamp = {"mangle": {"key": {"tcp option": {"name": "maxseg", "field": "size"}}, "value": {"rt": {"key": "mtu"}}}}
    masq, snat4, snat6, plain_snat, clamped, clamped_accept = parsed(
        [match(OIF, "wan0"), {"masquerade": None}],
        [{"snat": {"family": "ip", "addr": {"range": ["192.0.2.1", "192.0.2.5"]}}}],
        [{"snat": {"family": "ip6", "addr": "2001:db8::1"}}],
        [{"snat": {"addr": "192.0.2.1", "flags": "random"}}],
        [SYN, clamp],
        [SYN, clamp, {"accept": None}],
    )
    assert masq.matches == (m("oif", "wan0"),) and masq.action == Masquerade()
    assert snat4.matches == (IPV4,) and snat4.action == UnmodelledAction(
        "snat ip to 192.0.2.1-192.0.2.5 (source NAT to a range or a map: the address it picks is not read)")
    assert snat6.matches == (IPV6,) and snat6.action == Snat(6, IPNetwork("2001:db8::1"))
    assert plain_snat.matches == () and isinstance(plain_snat.action, UnmodelledAction) and plain_snat.action.terminal
    assert clamped.action is None
    assert isinstance(clamped_accept.action, UnmodelledAction) and clamped_accept.action.text.endswith("; accept")
    ip_table = nftables.parse_json(listing([{"snat": {"addr": "192.0.2.1"}}], family="ip")).tables[0].chains[0].rules[0]
    assert ip_table.matches == () and ip_table.action == Snat(4, IPNetwork("192.0.2.1"))
    ported = nftables.parse_json(listing([{"snat": {"addr": "192.0.2.1", "port": {"range": [1024, 2048]}, "flags": "random"}}], family="ip"))
    assert ported.tables[0].chains[0].rules[0].action == Snat(4, IPNetwork("192.0.2.1"))
    masq_ports = nftables.parse_json(listing([{"masquerade": {"port": {"range": [1024, 65535]}}}], family="ip"))
    assert masq_ports.tables[0].chains[0].rules[0].action == Masquerade()


def test_a_set_filled_without_a_limit_decides_nothing_unless_a_verdict_follows() -> None:
    """`add @s { ip saddr }` only fills the set (its lookups become judged both ways); it stops
    the rule when the set is full, which matters only to a verdict after it."""
    DPORT = {"payload": {"protocol": "tcp", "field": "dport"}}
    add = {"set": {"op": "add", "elem": SADDR, "set": "@s"}}
    limited = {"set": {"op": "update", "elem": SADDR, "set": "@s", "stmt": [{"limit": {"rate": 1, "burst": 5, "per": "second"}}]}}
    objects = ({"set": {"family": "inet", "table": "t", "name": "s", "handle": 2, "type": "ipv4_addr", "flags": ["dynamic"]}},)
    rules = parsed([match(DPORT, 22), add], [match(DPORT, 24), add, {"accept": None}], [match(DPORT, 23), limited, {"accept": None}], objects=objects)
    filling, then_accept, rate_limited = rules
    assert filling.matches == (TCP, m("dport", 22)) and filling.action is None
    assert isinstance(then_accept.action, UnmodelledAction) and then_accept.action.text.endswith("; accept")
    assert any(isinstance(x, Unmodelled) for x in rate_limited.matches) and rate_limited.action == ACCEPT
    assert nftables.parse_json(listing([match(DPORT, 22), add], objects=objects)).tables[0].set("s").dynamic


def test_dnat_keyed_on_a_drawn_number() -> None:
    """`dnat to numgen inc mod 2 map @m`: with @m empty no number finds a target and the rule
    never translates (exact); with targets, which one a connection gets is not modelled."""
    numgen = {"numgen": {"mode": "inc", "mod": 2, "offset": 0}}
    def dnat_to(name: str) -> list:
        return [{"dnat": {"family": "ip", "addr": {"map": {"key": numgen, "data": f"@{name}"}}}}]
    objects = (
        {"map": {"family": "inet", "table": "t", "name": "none", "handle": 2, "type": {"typeof": numgen}, "map": "ipv4_addr"}},
        {"map": {"family": "inet", "table": "t", "name": "two", "handle": 3, "type": {"typeof": numgen}, "map": "ipv4_addr",
                 "elem": [[0, "10.0.0.1"], [1, "10.0.0.2"]]}},
    )
    empty, balanced = parsed(dnat_to("none"), dnat_to("two"), objects=objects)
    assert empty.action == DnatMap(4, (), map_name="none")
    assert isinstance(balanced.action, UnmodelledAction) and "drawn per connection" in balanced.action.text


def test_dnat_to_an_address_map_and_a_port_map_of_one_key() -> None:
    """nftables' own examples/nat.nft: `dnat tcp dport map { 1000 : 1.1.1.1 } : tcp dport map
    { 1000 : 1234 }` is one map to (address, port) when both hold the same keys (the registry
    corpus probes it in the kernel); other keys, or a named map, stay unmodelled."""
    DPORT = {"payload": {"protocol": "tcp", "field": "dport"}}
    def dnat(addrs: list, ports: Any) -> list:
        return [{"dnat": {"family": "ip", "addr": {"map": {"key": DPORT, "data": {"set": addrs}}},
                          "port": {"map": {"key": DPORT, "data": ports}}}}]
    paired, other_keys, named = parsed(
        dnat([[1000, "1.1.1.1"], [2000, "2.2.2.2"]], {"set": [[2000, 2345], [1000, 1234]]}),
        dnat([[1000, "1.1.1.1"], [2000, "2.2.2.2"]], {"set": [[1000, 1234]]}),
        dnat([[1000, "1.1.1.1"]], "@ports"),
        family="ip",
    )
    assert paired.matches == (TCP,) and paired.action == DnatMap(4, ("dport",), entries=(
        ((PortRange(1000, 1000),), (IPNetwork("1.1.1.1/32"), PortRange(1234, 1234))),
        ((PortRange(2000, 2000),), (IPNetwork("2.2.2.2/32"), PortRange(2345, 2345)))))
    assert isinstance(other_keys.action, UnmodelledAction) and "different keys" in other_keys.action.text
    assert isinstance(named.action, UnmodelledAction) and "separate port" in named.action.text


def test_xt_expressions_are_unmodelled_never_guessed() -> None:
    xt_match, xt_target = parsed(
        [{"xt": {"type": "match", "name": "conntrack"}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": None}],
        [{"counter": {"packets": 0, "bytes": 0}}, {"xt": {"type": "target", "name": "DNAT"}}],
        family="ip",
    )
    assert xt_match.matches == (XT,) and xt_match.action == ACCEPT
    assert xt_target.matches == (XT,) and xt_target.action == UnmodelledAction(nftables.XT_TEXT)
    assert "iptables-save" in nftables.XT_TEXT


def test_ct_state_and_status_comparisons() -> None:
    rs = parsed(
        [match(CT_STATE, ["established", "related"], "in"), {"accept": None}],
        [match(CT_STATE, "new"), {"accept": None}],
        [match(CT_STATE, "new", "!="), {"accept": None}],
        [match(CT_STATE, {"|": ["established", "related"]}, "!="), {"drop": None}],
        [match(CT_STATE, {"set": ["new", "untracked"]}), {"accept": None}],
        [match(CT_STATUS, "dnat", "in"), {"accept": None}],
        [match(CT_STATUS, "dnat"), {"accept": None}],
    )
    assert [r.matches[0] for r in rs[:3]] == [m("ct.state", "established", "related"), m("ct.state", "new"), m("ct.state", "new", negate=True)]
    assert isinstance(rs[3].matches[0], Unmodelled) and "whole ct.state word" in rs[3].matches[0].text
    assert rs[4].matches == (m("ct.state", "new", "untracked"),)
    assert rs[5].matches == (m("ct.status", "dnat"),)
    assert isinstance(rs[6].matches[0], Unmodelled)


def test_interface_by_index_without_a_name_is_unmodelled() -> None:
    named, unnamed = parsed([match(IIF, "lo"), {"accept": None}], [match(IIF, "3"), {"accept": None}])
    assert named.matches == (m("iif", "lo"),)
    assert unnamed.matches == (Unmodelled("meta iif 3 (interface index 3 has no name in the listing)"),)


def test_unknown_expressions_and_statements_are_kept_not_errors() -> None:
    odd_match, odd_stmt, odd_dnat = parsed(
        [match({"frobnicate": {"key": "x"}}, 1), {"accept": None}],
        [match(SADDR, "10.0.0.1"), {"frobnicate": {"level": 3}}],
        [{"dnat": {"family": "ip", "addr": "10.0.0.1", "flags": "netmap"}}],
    )
    assert odd_match.matches == (Unmodelled("frobnicate key x 1"),) and odd_match.action == ACCEPT
    assert odd_stmt.matches == (m("ip.saddr", "10.0.0.1"),) and odd_stmt.action == UnmodelledAction("frobnicate level 3")
    assert isinstance(odd_dnat.action, UnmodelledAction) and "netmap" in odd_dnat.action.text


def test_vmap_continue_entries_fall_through() -> None:
    entries = [["a", {"jump": {"target": "x"}}], ["b", {"continue": None}]]
    named = {"map": {"family": "inet", "table": "t", "name": "vm", "type": "ifname", "map": "verdict", "handle": 2, "elem": entries}}
    ruleset = nftables.parse_json(listing([{"vmap": {"key": {"meta": {"key": "iifname"}}, "data": {"set": entries}}}], objects=(named,)))
    (t,) = ruleset.tables
    assert t.chains[0].rules[0].action == VerdictMap(("iif",), ((("a",), Jump("x")),))
    assert [(e.key, e.data) for e in t.set("vm").elements] == [(("a",), (Jump("x"),))]


def test_sets_with_unreadable_elements_make_lookups_unmodelled() -> None:
    broken = {"set": {"family": "inet", "table": "t", "name": "s", "type": "ipv4_addr", "handle": 2, "elem": ["10.0.0.1", "not-an-address"]}}
    macs = {"set": {"family": "inet", "table": "t", "name": "macs", "type": "ether_addr", "handle": 3, "elem": ["00:11:22:33:44:55"]}}
    ruleset = nftables.parse_json(listing([match(SADDR, "@s"), {"drop": None}], [match(SADDR, "@missing"), {"drop": None}], objects=(broken, macs)))
    (t,) = ruleset.tables
    first, second = t.chains[0].rules
    # a lookup that is not modelled still says the packet is IPv4
    assert first.matches[0] == IPV4 and second.matches[0] == IPV4
    assert isinstance(first.matches[1], Unmodelled) and "@s has elements fwmatrix cannot read" in first.matches[1].text
    assert isinstance(second.matches[1], Unmodelled) and "@missing is not in the listing" in second.matches[1].text
    # a set of MACs no rule looks up: read, for the link-layer source (docs/audit.md)
    assert t.set("macs").key == ("ether.saddr",) and t.set("macs").elements[0].key == ("00:11:22:33:44:55",)


def test_dormant_tables_hook_nothing_and_unreadable_flags_may_be_dormant() -> None:
    dormant = nftables.parse_json(listing([{"accept": None}], table_extra={"flags": ["dormant"]})).tables[0].chains[0]
    assert dormant.hook is None and len(dormant.rules) == 1
    # nft 1.0.6 prints the table's name where its flags belong
    unsure = nftables.parse_json(listing([{"drop": None}], table_extra={"flags": "t"})).tables[0].chains[0]
    assert unsure.hook == "forward" and len(unsure.rules) == 2
    assert isinstance(unsure.rules[0].matches[0], Unmodelled) and "may be dormant" in unsure.rules[0].matches[0].text
    assert unsure.rules[0].action == ACCEPT
    owned = nftables.parse_json(listing([{"drop": None}], table_extra={"flags": ["owner", "persist"]})).tables[0].chains[0]
    assert owned.hook == "forward" and len(owned.rules) == 1


def test_named_objects_are_accepted_and_parsed_rulesets_pickle() -> None:
    objects = ({"counter": {"family": "inet", "table": "t", "name": "cnt", "packets": 0, "bytes": 0}}, {"flowtable": {"family": "inet", "table": "t", "name": "ft", "hook": "ingress"}})
    ruleset = nftables.parse_json(listing([match(SADDR, {"range": ["10.0.0.1", "10.0.0.9"]}), {"counter": "cnt"}, {"accept": None}], objects=objects))
    assert ruleset.tables[0].chains[0].rules[0].matches == (m("ip.saddr", "10.0.0.1-10.0.0.9"),)
    assert pickle.loads(pickle.dumps(ruleset)) == ruleset
    assert nftables.parse_json('{"nftables": []}') == Ruleset(())


@pytest.mark.parametrize(
    "data, message",
    [
        ("{not json", "not nftables JSON: Expecting property name"),
        ({"tables": []}, "not an nftables JSON listing"),
        ({"nftables": [{"table": {"family": "inet", "name": "t"}, "chain": {}}]}, "item 0 is not an object with one key"),
        ({"nftables": [{"element": {"family": "inet", "table": "t", "name": "s"}}]}, "unknown object 'element' (item 0)"),
        ({"nftables": [{"chain": {"family": "inet", "table": "t", "name": "c"}}]}, "belongs to table 'inet t', which is not listed before it"),
        ({"nftables": [{"table": {"family": "inet", "name": "t"}}, {"rule": {"family": "inet", "table": "t", "chain": "c", "expr": []}}]}, "belongs to chain 'c'"),
        ({"nftables": [{"table": {"family": "inet"}}]}, "table (item 0) has no 'name'"),
        # a rule's names: its table is looked for before its chain is read
        ({"nftables": [{"table": {"family": "inet", "name": "t"}}, {"rule": {"family": "inet", "table": "u", "expr": []}}]},
         "rule (item 1) belongs to table 'inet u', which is not listed before it"),
        ({"nftables": [{"table": {"family": "inet", "name": "t"}}, {"chain": {"family": "inet", "table": "t", "name": "c"}}, {"rule": {"family": "inet", "table": "t"}}]},
         "rule (item 2) has no 'chain'"),
        ({"nftables": [{"table": {"family": "inet", "name": "t"}}, {"chain": {"family": "inet", "table": "t", "name": "c"}}, {"rule": {"family": 4, "table": "t", "chain": "c"}}]},
         "rule (item 2) has no 'family'"),
        ({"nftables": [{"table": {"family": "inet", "name": "t"}}, {"chain": {"family": "inet", "table": "t", "name": "c"}}, {"rule": {"family": "inet", "table": "t", "chain": 1}}]},
         "rule (item 2) has no 'chain'"),
        ({"nftables": [{"table": {"family": "inet", "name": "t"}}, {"rule": ["inet", "t", "c"]}]}, "rule (item 1) is not an object"),
        ({"nftables": [{"table": {"family": "inet", "name": "t"}}, {"set": {"family": "inet", "table": "t", "name": "s"}}]}, "set 's' (item 1) has no type"),
        ({"nftables": [{"table": {"family": "inet", "name": "t"}}, {"chain": {"family": "inet", "table": "t", "name": "c", "hook": "forward", "prio": "sideways"}}]}, "priority 'sideways'"),
    ],
)
def test_malformed_listings_are_one_line_errors(data: Any, message: str) -> None:
    with pytest.raises(BackendError) as info:
        nftables.parse_json(data)
    assert message in str(info.value) and "\n" not in str(info.value)


# -- text written on another host: interfaces, users and groups this host lacks ----------------


HOST_NAMES = """\
define wan = fwmt-wan0
define lans = { fwmt-lan0, fwmt-lan1 }
table inet host {
    set ports_by_if {
        type iface_index . inet_service
        elements = { fwmt-lan0 . 22, fwmt-dmz0 . 80 }
    }
    chain forward {
        type filter hook forward priority 0; policy drop;
        iif $wan oif $lans tcp dport 22 accept
        iif . tcp dport @ports_by_if accept
    }
    chain output {
        type filter hook output priority 0; policy accept;
        meta skuid fwmt-alice accept
        tcp dport . meta skgid { 80 . fwmt-web, 443 . fwmt-web, 22 . fwmt-ops } accept
    }
}
table netdev edge {
    chain ingress {
        type filter hook ingress device fwmt-wan0 priority 0; policy accept;
        udp dport 53 fwd to fwmt-dmz0
    }
}
"""


def _host_state() -> tuple[str, bytes, bytes]:
    links = [line.split(":")[1].strip().split("@")[0] for line in run_host(["ip", "-o", "link", "show"]).splitlines()]
    return " ".join(sorted(links)), Path("/etc/passwd").read_bytes(), Path("/etc/group").read_bytes()


def run_host(argv: list[str]) -> str:
    import subprocess

    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@pytest.mark.kernel
def test_text_naming_interfaces_users_and_groups_of_another_host_is_read(kernel: None) -> None:
    before = _host_state()
    got = nftables.parse_text(HOST_NAMES, "host.nft")
    assert _host_state() == before  # the placeholders lived in the private namespaces only
    forward = rules(got, "inet host forward")
    assert forward[0].matches[:2] == (m("iif", "fwmt-wan0"), m("oif", "fwmt-lan0", "fwmt-lan1"))
    assert elements(got, "inet", "host", "ports_by_if") == {("fwmt-dmz0", PortRange(80, 80)): ((), ""), ("fwmt-lan0", PortRange(22, 22)): ((), "")}
    assert "fwmt-alice" in str(rules(got, "inet host output")[0].matches)
    assert "fwmt-dmz0" in str(rules(got, "netdev edge ingress")[0].action)


@pytest.mark.kernel
def test_placeholders_read_as_the_host_that_has_the_interfaces_lists_them(kernel: None) -> None:
    """The same text loaded into a namespace where the interfaces really exist lists to the same IR."""
    text = HOST_NAMES.split("table netdev")[0].replace("meta skuid fwmt-alice accept", "meta skuid 0 accept")
    text = text.replace("tcp dport . meta skgid { 80 . fwmt-web, 443 . fwmt-web, 22 . fwmt-ops } accept", "")
    with NetNamespace() as ns:
        for name in ("fwmt-wan0", "fwmt-lan0", "fwmt-lan1", "fwmt-dmz0"):
            ns.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name[5:] + "p"])
        nftables.load(ns, text)
        live = nftables.parse_json(nftables.list_ruleset_json(ns))
    assert meaning(nftables.parse_text(text, "host.nft")) == meaning(live)


@pytest.mark.kernel
def test_a_rule_the_kernel_refuses_is_named_in_the_error(kernel: None) -> None:
    """The kernel answers a refused rule with an errno alone ("Could not process rule:
    Operation not supported"); the error adds what nft underlined, so the user sees which
    statement or chain (here a nat chain before conntrack, which every kernel refuses)."""
    text = "table ip t {\n chain early {\n  type nat hook prerouting priority -300;\n  tcp dport 80 dnat to 10.0.0.1\n }\n}\n"
    with pytest.raises(BackendError) as caught:
        nftables.parse_text(text, "early.nft")
    assert str(caught.value).startswith("early.nft:2: Could not process rule: Operation not supported: `early`")


@pytest.mark.kernel
def test_names_that_cannot_be_placeholders_keep_nfts_error_naming_the_file(kernel: None) -> None:
    text = "table inet t {\n chain c {\n  type filter hook forward priority 0;\n  iif an-interface-name-too-long accept\n }\n}\n"
    with pytest.raises(BackendError) as caught:
        nftables.parse_text(text, "long.nft")
    assert str(caught.value) == "long.nft:4: Interface does not exist"


DELETED_TABLES = """\
delete table inet gone
table ip filter {
    chain old { tcp dport 23 accept; }
}
delete table filter  # the table above goes with its chains
table filter {
    chain input {
        type filter hook input priority 0; policy drop;
        tcp dport 22 accept
    }
}
"""


@pytest.mark.kernel
def test_delete_table_reads_as_on_a_host_that_had_the_table(kernel: None) -> None:
    """`delete table T` on a host without T is nft's "No such file or directory"; the script
    was written for a host that had it, and after the delete nothing of it is left: read
    as there. A table the script defined before its delete is gone too."""
    got = nftables.parse_text(DELETED_TABLES, "deleted.nft")
    assert [(t.family, t.name, [c.name for c in t.chains]) for t in got.tables] == [("ip", "filter", ["input"])]
    assert rules(got, "ip filter input")[0].matches[-1] == m("dport", PortRange(22, 22))
    assert nftables.binding.with_deleted_tables("delete table ip6 x;\n delete chain ip x y\n") == \
        "add table ip6 x; delete table ip6 x;\n delete chain ip x y\n"


NEWER_SPELLINGS = """\
destroy table inet filter
table inet filter {
    chain prerouting {
        type filter hook prerouting priority -300;
        meta nfproto ipv6 fib saddr . iif check missing drop
    }
    chain forward {
        type filter hook forward priority 0; policy drop;
        fib daddr check exists tcp dport 22 accept
    }
}
"""


@pytest.mark.kernel
def test_newer_nft_spellings_read_as_this_nft_writes_them(kernel: None) -> None:
    """nft 1.0.8's `destroy table T` (delete it if it exists: Arch's default nftables.conf) and
    nft 1.1's listing of `fib ... oif exists|missing` as `fib ... check exists|missing` mean what
    nft 1.0.6 writes `delete table T` (after adding it) and `oif exists|missing`: read so, in the
    lab too."""
    from fwmatrix.ops.lab import Lab

    older = NEWER_SPELLINGS.replace("destroy table", "delete table").replace(" check ", " oif ")
    got = nftables.parse_text(NEWER_SPELLINGS, "newer.nft")
    assert meaning(got) == meaning(nftables.parse_text(older, "older.nft"))
    assert [t.name for t in got.tables] == ["filter"] and len(rules(got, "inet filter forward")) == 1
    assert nftables.binding.for_this_nft("destroy table x # gone\n fib daddr . iif check missing drop comment \"check exists\"\n"
                                         " fib daddr oif missing comment \"fib check exists\"\n") == \
        "add table x; delete table x # gone\n fib daddr . iif oif missing drop comment \"check exists\"\n fib daddr oif missing comment \"fib check exists\"\n"
    with Lab(("eth0", "eth1"), timeout=0.8) as lab:
        lab.load_raw_nft(NEWER_SPELLINGS)
        assert meaning(lab.read_nft()) == meaning(got)


def test_every_read_error_names_the_file(tmp_path: Path) -> None:
    from fwmatrix.errors import FwmatrixError
    from fwmatrix.targets import read_ruleset

    listing = tmp_path / "listing.json"
    listing.write_text('{"nftables": 3}')
    with pytest.raises(FwmatrixError) as caught:
        read_ruleset(str(listing))
    assert caught.value.file == str(listing) and str(caught.value).startswith(f"{listing}: not an nftables JSON listing")


def _included(root: Path) -> Path:
    """rules/main.nft includes ./filter.nft (beside it, as nft reads `./` from where it runs),
    which includes ./sub/ports.nft (from the same place: nft resolves nested includes so too)."""
    (root / "rules" / "sub").mkdir(parents=True)
    (root / "rules" / "main.nft").write_text('flush ruleset\ninclude "./filter.nft"\n')
    (root / "rules" / "filter.nft").write_text(
        "table inet f {\n chain forward {\n  type filter hook forward priority 0; policy drop;\n"
        '  include "./sub/ports.nft"\n }\n}\n')
    (root / "rules" / "sub" / "ports.nft").write_text("iif fwmt-inc0 tcp dport 22 accept\nmeta skuid fwmt-incuser drop\n")
    return root / "rules" / "main.nft"


@pytest.mark.kernel
def test_includes_are_read_from_the_rulesets_directory(kernel: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`include "./x"` read as `cd DIR && nft -f FILE` reads it, wherever fwmatrix runs; the
    interface and user an included file names get placeholders like the script's own."""
    from fwmatrix.targets import read_ruleset

    main = _included(tmp_path)
    monkeypatch.chdir(tmp_path)  # not the ruleset's directory: `./filter.nft` is not here
    got, _ = read_ruleset("rules/main.nft", "nftables")
    forward = rules(got, "inet f forward")
    assert forward[0].matches == (m("iif", "fwmt-inc0"), TCP, m("dport", 22)) and forward[0].action == ACCEPT
    assert "fwmt-incuser" in str(forward[1].matches)
    from fwmatrix.ops.lab import Lab

    with Lab(("fwmt-inc0", "eth1"), timeout=0.8) as lab:  # the lab loads it from there too
        lab.load_raw_nft(main.read_text(), str(main.parent))
        held = rules(lab.read_nft(), "inet f forward")  # the user by its placeholder id there
    assert [(r.matches, r.action) for r in held[:1]] == [(r.matches, r.action) for r in forward[:1]] and held[1].action == DROP


@pytest.mark.kernel
def test_a_missing_include_or_an_error_in_an_included_file_names_its_file_and_line(kernel: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fwmatrix.errors import FwmatrixError
    from fwmatrix.targets import read_ruleset

    main = _included(tmp_path)
    monkeypatch.chdir(tmp_path)
    (main.parent / "sub" / "ports.nft").unlink()
    with pytest.raises(FwmatrixError) as caught:
        read_ruleset("rules/main.nft", "nftables")
    assert str(caught.value).startswith(f"rules/filter.nft:4: File not found: ./sub/ports.nft (no {main.parent}/sub/ports.nft: "
                                        "nft reads './' and '../' from the ruleset's directory) (included from rules/main.nft:2)")
    main.write_text('include "filter.nft"\n')
    with pytest.raises(FwmatrixError) as caught:
        read_ruleset("rules/main.nft", "nftables")
    assert str(caught.value) == "rules/main.nft:1: File not found: filter.nft (not in nft's include path, /etc unless -I says otherwise: write './' for a file beside the ruleset)"
    main.write_text('include "./filter.nft"\n')
    (main.parent / "sub" / "ports.nft").write_text("tcp dport 99999 accept\n")
    with pytest.raises(FwmatrixError) as caught:
        read_ruleset(str(main), "nftables")
    assert str(caught.value).startswith(f"{main.parent}/sub/ports.nft:1: ") and f"(included from {main}:1)" in str(caught.value)


@pytest.mark.parametrize(("text", "family"), [
    ('#!/usr/sbin/nft -f\ninclude "./inet-filter.nft"\n', "nftables"),
    ('#\t$OpenBSD: pf.conf,v 1.53 2014/01/25 10:28:36 dtucker Exp $\ninclude "/etc/pf/macro.conf"\n', "pf"),
    ('# $FreeBSD: head/etc/pf.conf 1 $\ninclude "/etc/pf/x"\n', "pf"),
    ('include "./x"\n', None),
    ('# mentions nft and pf.conf in passing\ninclude "./x"\n', None),
])
def test_a_file_of_only_includes_is_told_by_its_comments(text: str, family: str | None) -> None:
    """nft and pf both write `include "..."`: a file of nothing else is told by nft's shebang or
    the id line of the systems' stock pf.conf; without either, the user says (--backend)."""
    from fwmatrix.errors import FwmatrixError
    from fwmatrix.targets import detect

    if family is None:
        with pytest.raises(FwmatrixError, match="cannot tell which firewall wrote this ruleset"):
            detect(text)
    else:
        assert detect(text) == family


VLAN_RULESET = """\
table inet vlans {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iif eth0.4 oif eth1 ip daddr 10.1.0.5 tcp dport 22 accept
    }
}
"""


@pytest.mark.kernel
def test_a_vlan_named_interface_in_a_lab_with_real_packets(kernel: None) -> None:
    """A lab interface named like a VLAN (`eth0.4`) is built (its rp_filter set through the
    sysctl path form), and a text with `iif eth0.4` read through placeholders means what
    the lab's kernel holds and does."""
    from fwmatrix.ops.lab import Lab, Probe

    with Lab(("eth0.4", "eth1"), timeout=0.8) as lab:
        assert lab.fw.run(["cat", "/proc/sys/net/ipv4/conf/eth0.4/rp_filter"]).stdout.strip() == "0"
        lab.load_raw_nft(VLAN_RULESET)
        assert meaning(lab.read_nft()) == meaning(nftables.parse_text(VLAN_RULESET, "vlan.nft"))
        results = lab.run([
            Probe("eth0.4", "eth1", "10.4.0.7", "10.1.0.5", "tcp", 22),
            Probe("eth0.4", "eth1", "10.4.0.7", "10.1.0.5", "tcp", 23),
            Probe("eth1", "eth0.4", "10.1.0.5", "10.4.0.7", "tcp", 22),
        ], retries=1)
    assert [r.delivered for r in results] == [True, False, False]


@pytest.mark.kernel
def test_ttl_and_hop_limit() -> None:
    """`ip ttl`, `ip6 hoplimit` as a range of 0-255 (each implies its family)."""
    rs = corpus("hop-limits.nft")
    v4, v6 = m("nfproto", 4), m("nfproto", 6)

    def hops(field: str, low: int, high: int, negate: bool = False) -> Match:
        return Match((field,), ((PortRange(low, high),),), negate=negate)

    nd = m("icmpv6.type", 133, 135, 136)
    assert rules(rs, "inet hops input")[1].matches in ((m("l4proto", 58), nd, v6, hops("hoplimit", 255, 255)),
                                                        (v6, hops("hoplimit", 255, 255), m("l4proto", 58), nd))
    expect(rs, "inet hops forward", 0, (v4, hops("ttl", 0, 1)), DROP)
    expect(rs, "inet hops forward", 3, (v6, hops("hoplimit", 200, 255), TCP, m("dport", 80)), ACCEPT)
    expect(rs, "inet hops forward", 4, (v6, hops("hoplimit", 2, 255), TCP, m("dport", 22)), ACCEPT)
    assert rules(rs, "inet hops input")[2].matches[-1] == hops("hoplimit", 1, 1, negate=True)


@pytest.mark.kernel
def test_ipv6_extension_headers() -> None:
    """A field of an extension header, or `exthdr X exists`, needs the packet to carry it
    (nft breaks the rule otherwise, whatever the operator); `missing` stays unmodelled."""
    rs = corpus("ext-headers.nft")
    expect(rs, "inet exthdrs forward", 0, (m("exthdr", "rt"),), DROP)
    expect(rs, "inet exthdrs forward", 1, (m("exthdr", "hbh"),), DROP)
    expect(rs, "inet exthdrs forward", 2, (m("exthdr", "frag"),), DROP)
    assert isinstance(rules(rs, "inet exthdrs forward")[3].matches[0], Unmodelled)
    expect(rs, "inet exthdrs forward", 6, (m("exthdr", "rt"), TCP, m("dport", 25)), ACCEPT)


HDRLENGTH = {"payload": {"protocol": "ip", "field": "hdrlength"}}


@pytest.mark.parametrize(("op", "words", "reads_as"), [
    ("!=", 5, "options"), (">", 5, "options"), ("==", 6, "options"), ("<", 5, "options"),
    (">=", 5, "every packet"), ("<=", 15, "every packet"), ("==", 5, "unmodelled"), ("<", 9, "unmodelled"),
])
def test_ip_hdrlength_asks_for_ipv4_options(op: str, words: int, reads_as: str) -> None:
    """`ip hdrlength != 5 drop` drops IPv4 packets with options, which the audit's packets never
    carry: the match is the `exthdr` 'ipopts' (a drop with it removes nothing the audit sends);
    a test every header length passes is IPv4 alone; one that holds at 5 and not at every length
    stays judged both ways."""
    rule = parsed([match(HDRLENGTH, words, op), {"drop": None}])[0]
    v4 = m("nfproto", 4)
    expected = {"options": (v4, m("exthdr", "ipopts")), "every packet": (v4,)}
    if reads_as == "unmodelled":
        assert rule.matches[0] == v4 and isinstance(rule.matches[1], Unmodelled)
    else:
        assert rule.matches == expected[reads_as]


def test_a_drop_of_ipv4_options_leaves_the_audit_s_packets_alone() -> None:
    """The evaluator: the drop has no part (the audit's packets carry no options); an accept with
    the same match is judged both ways."""
    from fwmatrix.audit.evaluate.matches import UNMODELLED_FIELDS, exact_parts

    drop, accept = parsed([match(HDRLENGTH, 5, "!="), {"drop": None}], [match(HDRLENGTH, 5, "!="), {"accept": None}])
    assert exact_parts(drop) == [] and exact_parts(accept) == [accept]
    assert "exthdr" in UNMODELLED_FIELDS
