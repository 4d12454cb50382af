"""The nftables backend: golden output, guarantees of shape, injection, and the kernel."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netaddr import IPAddress, IPNetwork

from conftest import GOLDEN, ROOT, SEED, check_golden
from fwmatrix.backends import nftables
from fwmatrix.compile.ruleset import compile_intent
from fwmatrix.compile.intent import build_intent
from fwmatrix.ir import Chain, Element, Match, Rule, Ruleset, SetDef, Table, Verdict
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.netns import NetNamespace
from strategies import matrix_yaml

TWO_FIREWALLS = ROOT / "examples" / "two-firewalls" / "matrix.yaml"


def compiled(path) -> dict[str, Ruleset]:
    return compile_intent(build_intent(load_matrix(str(path))))


def rendered(path) -> dict[str, str]:
    return {fw: nftables.render(rs) for fw, rs in compiled(path).items()}


def test_seed_golden() -> None:
    check_golden(rendered(SEED)["edge"], GOLDEN / "contact-highway-7" / "edge.nft")


def test_same_matrix_same_bytes() -> None:
    assert rendered(SEED) == rendered(SEED)
    assert rendered(TWO_FIREWALLS) == rendered(TWO_FIREWALLS)


def test_header_names_matrix_and_hash() -> None:
    m = load_matrix(str(SEED))
    text = rendered(SEED)["edge"]
    head = text.splitlines()[:5]
    assert any("contact-highway-7" in line and "edge" in line for line in head)
    assert any(m.content_hash in line for line in head)


def test_only_fwmatrix_tables_are_replaced() -> None:
    text = rendered(SEED)["edge"]
    assert "flush ruleset" not in text
    statements = [line for line in text.splitlines() if line.startswith(("table", "delete", "flush", "add"))]
    assert statements == ["table inet fwmatrix {}", "delete table inet fwmatrix", "table inet fwmatrix {"]


def test_forward_policy_drop_with_replies_first() -> None:
    ruleset = compiled(SEED)["edge"]
    (table,) = ruleset.tables
    forward = table.chain("forward")
    assert (forward.hook, forward.policy) == ("forward", "drop")
    first, second = forward.rules[:2]
    assert first.matches == (Match(("ct.state",), (("established",), ("related",))),) and first.action == Verdict("accept")
    assert second.matches == (Match(("ct.state",), (("invalid",),)),) and second.action == Verdict("drop")
    prerouting = table.chain("prerouting")
    assert (prerouting.hook, prerouting.type) == ("prerouting", "nat")


def test_nothing_opens_from_the_dmz_towards_the_internet() -> None:
    intent = build_intent(load_matrix(str(SEED)))
    edge = intent.firewalls["edge"]
    assert all(out != "wan0" for _, out in edge.interface_pairs)
    assert edge.interface_pairs == [("dmz0", "lan0"), ("dmz1", "lan0"), ("lan0", "dmz1"), ("wan0", "dmz0")]
    text = rendered(SEED)["edge"]
    assert '"wan0" : jump' not in text.replace('"wan0" . "dmz0"', "")


def test_seed_dnat_targets() -> None:
    (table,) = compiled(SEED)["edge"].tables
    (dnat,) = [s for s in table.sets if s.name.startswith("dnat_v4")]
    targets = {(e.key[4], e.key[3]): str(e.data[0].ip) for e in dnat.elements}
    # protocol numbers: tcp 6, udp 17
    assert {(str(k[0]), k[1]): v for k, v in targets.items()} == {
        ("443", 6): "172.16.10.10",
        ("5060", 6): "172.16.10.21",
        ("5061", 6): "172.16.10.21",
        ("5060", 17): "172.16.10.21",
        ("10000-30000", 17): "172.16.10.22",
    }


def test_rules_grow_with_interface_pairs_not_openings(write_matrix) -> None:
    lines = [
        "fwmatrix: 1", "name: big", "zones: {internet: any, dmz: 172.16.0.0/16, lan: 10.0.0.0/8}",
        "firewalls:", "  fw: {interfaces: {wan0: internet, dmz0: dmz, lan0: lan}, public: 203.0.113.1}",
        "openings:",
    ]
    for i in range(3000):
        src = f"10.{i // 250}.{i % 250}.1"
        dst = f"172.16.{i % 200}.{i % 250 + 1}"
        lines.append(f"  - {{from: {src}, to: {dst}, service: tcp/{1000 + i}}}")
        lines.append(f"  - {{from: internet, to: {dst}, service: [udp/{2000 + i}, tcp/{3000 + i}-{3010 + i}]}}")
    ruleset = compiled(write_matrix("\n".join(lines) + "\n"))["fw"]
    assert ruleset.rule_count <= 10
    (table,) = ruleset.tables
    assert sum(len(s.elements) for s in table.sets) == 3000 + 6000


def test_compiled_elements_are_what_element_makes() -> None:
    """The compile makes the openings' elements without Element's __init__ (speed): each must be
    the Element its fields give, equal, hashing alike and with nothing else set."""
    from dataclasses import fields
    assert [f.name for f in fields(Element)] == ["key", "data", "comment"]  # what ruleset._flow_elements fills
    count = 0
    for path in (SEED, TWO_FIREWALLS):
        for ruleset in compiled(path).values():
            for data, element in ((s.data, e) for table in ruleset.tables for s in table.sets for e in s.elements):
                made = Element(element.key, element.data if data else (), element.comment)  # a set's elements have no data
                assert element == made and hash(element) == hash(made) and vars(element) == vars(made)
                count += 1
    assert count > 20

def test_element_comments_cannot_break_out() -> None:
    hostile = 'x" ; flush ruleset ; comment "'
    table = Table(
        "inet", "fwmatrix",
        (Chain("forward", (Rule((Match(("ip.saddr", "ip.daddr", "l4proto", "dport"), set_name="s"),), Verdict("accept"), comment=hostile),), hook="forward", policy="drop"),),
        (SetDef("s", ("ip.saddr", "ip.daddr", "l4proto", "dport"), (Element((IPNetwork("10.0.0.1/32"), IPNetwork("10.0.0.2/32"), 6, __import__("fwmatrix.matrix.model").matrix.model.PortRange(1, 1)), comment=hostile + "\nflush ruleset"),)),),
    )
    text = nftables.render(Ruleset((table,)))
    assert "flush ruleset" not in text.replace("_flush ruleset", "").replace("; flush ruleset ;", "")
    for line in text.splitlines():
        for comment in re.findall(r'comment "([^"]*)"', line):
            assert '"' not in comment and "\n" not in comment
    assert text.count('"') % 2 == 0


@pytest.mark.parametrize("bad", ['eth0"', "eth0 ; flush ruleset", "eth\\0", "eth\n0"])
def test_hostile_interface_names_are_refused_by_the_renderer(bad: str) -> None:
    from fwmatrix.ir import Jump, VerdictMap

    chain = Chain("forward", (Rule((), VerdictMap(("iif", "oif"), (((bad, "eth1"), Jump("x")),))),), hook="forward", policy="drop")
    with pytest.raises(nftables.RenderError):
        nftables.render(Ruleset((Table("inet", "fwmatrix", (chain,)),)))


@pytest.mark.parametrize("bad", ["fw; flush ruleset", "a b", "1abc", "x{"])
def test_hostile_identifiers_are_refused_by_the_renderer(bad: str) -> None:
    with pytest.raises(nftables.RenderError):
        nftables.render(Ruleset((Table("inet", bad, (Chain("forward", (), hook="forward", policy="drop"),)),)))


def test_nft_check_accepts_seed_and_refuses_broken(kernel) -> None:
    text = rendered(SEED)["edge"]
    assert nftables.check(text) == []
    problems = nftables.check(text.replace("tcp . 80 ", "tcp . 99999 "))
    assert problems and "out of range" in " ".join(problems)


# -- kernel -------------------------------------------------------------------


def _objects(listing: dict, kind: str) -> list[dict]:
    return [item[kind] for item in listing["nftables"] if kind in item]


@pytest.mark.kernel
@pytest.mark.parametrize("path", [SEED, TWO_FIREWALLS, ROOT / "examples" / "shared-proxy" / "matrix.yaml"], ids=lambda p: p.parent.name)
def test_compiled_rulesets_load_into_a_kernel(path) -> None:
    for fw_name, ruleset in compiled(path).items():
        (table,) = ruleset.tables
        with NetNamespace() as ns:
            nftables.load(ns, nftables.render(ruleset))
            listing = nftables.list_ruleset_json(ns)
        tables = _objects(listing, "table")
        assert [(t["family"], t["name"]) for t in tables] == [("inet", "fwmatrix")]
        chains = {c["name"]: c for c in _objects(listing, "chain")}
        assert set(chains) == {c.name for c in table.chains}
        assert chains["forward"]["hook"] == "forward" and chains["forward"]["policy"] == "drop"
        sets = {s["name"]: s for s in _objects(listing, "set")} | {s["name"]: s for s in _objects(listing, "map")}
        assert set(sets) == {s.name for s in table.sets}
        for set_def in table.sets:
            assert len(sets[set_def.name].get("elem", [])) == len(set_def.elements), (fw_name, set_def.name)
        assert len(_objects(listing, "rule")) == ruleset.rule_count


@pytest.mark.kernel
def test_reload_replaces_only_fwmatrix_tables() -> None:
    text = rendered(SEED)["edge"]
    foreign = "table ip docker_like {\n chain forward {\n  type filter hook forward priority -10; policy accept;\n  counter\n }\n}\n"
    with NetNamespace() as ns:
        nftables.load(ns, foreign)
        nftables.load(ns, text)
        first = nftables.list_ruleset_json(ns)
        nftables.load(ns, text)  # the second load replaces the first, it does not add
        second = nftables.list_ruleset_json(ns)
    names = sorted((t["family"], t["name"]) for t in _objects(second, "table"))
    assert names == [("inet", "fwmatrix"), ("ip", "docker_like")]
    assert len(_objects(first, "rule")) == len(_objects(second, "rule"))
    assert len(_objects(second, "set")) == len(_objects(first, "set"))


@pytest.mark.kernel
def test_a_refused_ruleset_leaves_the_previous_one_in_place() -> None:
    from fwmatrix.errors import BackendError

    text = rendered(SEED)["edge"]
    with NetNamespace() as ns:
        nftables.load(ns, text)
        before = nftables.list_ruleset_json(ns)
        with pytest.raises(BackendError):
            nftables.load(ns, text.replace("tcp . 80 ", "tcp . 99999 "))
        after = nftables.list_ruleset_json(ns)
    strip = lambda listing: [i for i in listing["nftables"] if "metainfo" not in i]  # noqa: E731
    assert strip(before) == strip(after)


@pytest.mark.kernel
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=matrix_yaml())
def test_generated_matrices_load_into_a_kernel(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("m") / "matrix.yaml"
    path.write_text(text)
    for ruleset in compiled(path).values():
        with NetNamespace() as ns:
            nftables.load(ns, nftables.render(ruleset))
            listing = nftables.list_ruleset_json(ns)
        (table,) = ruleset.tables
        sets = {s["name"]: s for s in _objects(listing, "set")} | {s["name"]: s for s in _objects(listing, "map")}
        for set_def in table.sets:
            assert len(sets[set_def.name].get("elem", [])) == len(set_def.elements)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_an_element_is_left_out_exactly_when_a_wider_element_holds_it(data) -> None:
    """The openings' set layering against brute force: random nested networks, protocols and port
    ranges; an element of a layer is kept unless a key of a wider layer (prefix lengths no longer in
    both addresses) holds its source, its destination and its protocol, and a port range of it holds
    its ports (without ports: any such key). Checks the compile's hold lookups and their index."""
    from fwmatrix.compile.ruleset import _comment, _disjoint_layers, _merged, _Nets
    from fwmatrix.matrix.model import PortRange

    with_ports = data.draw(st.booleans())
    version = data.draw(st.sampled_from((4, 6)))
    base = IPNetwork("10.0.0.0/8") if version == 4 else IPNetwork("fd00::/8")
    top = 32 if version == 4 else 128

    def network() -> IPNetwork:
        length = data.draw(st.sampled_from((8, 16, 24, top - 2, top)))
        host = data.draw(st.integers(0, 7)) << (top - 26) | data.draw(st.integers(0, 3))  # few distinct: they nest and repeat
        return IPNetwork(f"{IPAddress(base.first + host, version)}/{length}").cidr

    nets = _Nets()
    layers: dict = {}
    for i in range(data.draw(st.integers(1, 30))):
        src, dst = nets.key(network()), nets.key(network())
        proto = data.draw(st.sampled_from((6, 17)))
        low = data.draw(st.integers(1, 40))
        port = (low, low + data.draw(st.integers(0, 20))) if with_ports else None
        by_rest = layers.setdefault((src & 0xFF, dst & 0xFF), {})
        by_rest.setdefault((src, dst, proto), []).append((port, (), (f"o{i}",)))
    _merged(layers)
    got = [list(elements) for _, elements in _disjoint_layers(layers, (0, 1), 3 if with_ports else None, nets)]

    expected = []
    for lengths in sorted(layers, key=lambda ls: (not all(n in (32, 128) for n in ls), ls)):
        wider = [(nets.networks[s], nets.networks[d], p, items) for w in layers if w != lengths and w[0] <= lengths[0] and w[1] <= lengths[1]
                 for (s, d, p), items in layers[w].items()]
        kept = []
        for (src, dst, proto) in sorted(layers[lengths]):
            source, destination = nets.networks[src], nets.networks[dst]
            for port, _, names in layers[lengths][(src, dst, proto)]:
                if any(p == proto and source in s and destination in d
                       and any(port is None or (o[0] <= port[0] and port[1] <= o[1]) for o, _, _ in items)
                       for s, d, p, items in wider):
                    continue
                kept.append(Element((source, destination, proto, PortRange(*port)) if with_ports else (source, destination, proto), (), _comment(names)))
        if kept:
            expected.append(kept)
    assert got == expected
