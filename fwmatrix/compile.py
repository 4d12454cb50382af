"""From a firewall's intent to the Ruleset IR.

The shape, for every backend:
  - prerouting (nat): DNAT by lookup in maps keyed on
    in-interface . source . public address . protocol . port;
  - forward (filter, policy drop): replies by connection tracking first
    (established,related accept; invalid drop), then one jump per interface
    pair (a verdict map), and in each pair's chain one set lookup per address
    family and kind. Openings become set elements, not rules, so the rule
    count grows with interface pairs, never with the number of openings.
Nothing is opened from a zone towards another unless an opening asks for it:
replies (a DMZ answering the internet) pass by connection tracking.
"""

from __future__ import annotations

import re
from collections import defaultdict

from netaddr import IPNetwork

from . import __version__
from .intent import Dnat, FirewallIntent, Flow, Intent
from .ir import (
    PRIORITY_DSTNAT,
    PRIORITY_FILTER,
    Chain,
    DnatMap,
    Element,
    Header,
    Jump,
    Match,
    Rule,
    Ruleset,
    SetDef,
    Table,
    Verdict,
    VerdictMap,
    addr_field,
)
from .model import PROTOCOLS, PortRange, ServicePart

TABLE_NAME = "fwmatrix"
COMMENT_MAX = 120
PORT_L4PROTOS = tuple(PROTOCOLS[p] for p in ("tcp", "udp", "sctp"))


def compile_intent(intent: Intent) -> dict[str, Ruleset]:
    return {name: compile_firewall(intent, fw_intent) for name, fw_intent in intent.firewalls.items()}


def compile_firewall(intent: Intent, fw: FirewallIntent) -> Ruleset:
    chain_ids = _Identifiers()
    sets: list[SetDef] = []
    pair_chains: list[Chain] = []
    vmap_entries: list[tuple[tuple[str, str], Jump]] = []

    by_pair: dict[tuple[str, str], list[Flow]] = defaultdict(list)
    for flow in fw.flows:
        by_pair[(flow.in_iface, flow.out_iface)].append(flow)

    for (in_iface, out_iface), flows in sorted(by_pair.items()):
        chain_name = chain_ids.make(f"fwd_{in_iface}_to_{out_iface}")
        rules: list[Rule] = []
        for family in (4, 6):
            for with_ports in (True, False):
                entries = _flow_entries([f for f in flows if f.family == family], with_ports)
                key = (addr_field(family, "saddr"), addr_field(family, "daddr"), "l4proto") + (("dport",) if with_ports else ())
                base = f"{chain_name[4:]}_v{family}{'' if with_ports else '_noport'}"
                for suffix, elements in _disjoint_layers(entries, address_positions=(0, 1), port_position=3 if with_ports else None):
                    set_name = chain_ids.make(base + suffix)
                    sets.append(SetDef(set_name, key, elements))
                    rules.append(Rule((Match(key, set_name=set_name),), Verdict("accept"), f"matrix openings {in_iface} -> {out_iface}"))
        pair_chains.append(Chain(chain_name, tuple(rules)))
        vmap_entries.append(((in_iface, out_iface), Jump(chain_name)))

    forward = Chain(
        "forward",
        (
            Rule((Match(("ct.state",), (("established",), ("related",))),), Verdict("accept"), "replies pass by connection tracking"),
            Rule((Match(("ct.state",), (("invalid",),)),), Verdict("drop")),
        )
        + ((Rule((), VerdictMap(("iif", "oif"), tuple(vmap_entries))),) if vmap_entries else ()),
        hook="forward",
        type="filter",
        priority=PRIORITY_FILTER,
        policy="drop",
    )

    dnat_rules: list[Rule] = []
    for family in (4, 6):
        for with_ports, with_target_port in ((True, False), (True, True), (False, False)):
            entries = _dnat_entries([d for d in fw.dnats if d.family == family], with_ports, with_target_port)
            key = ("iif", addr_field(family, "saddr"), addr_field(family, "daddr"), "l4proto") + (("dport",) if with_ports else ())
            data = (addr_field(family, "daddr"),) + (("dport",) if with_target_port else ())
            base = f"dnat_v{family}" + ("_port" if with_target_port else "") + ("" if with_ports else "_noport")
            matches = (Match(("l4proto",), tuple((p,) for p in PORT_L4PROTOS)),) if with_ports else ()
            for suffix, elements in _disjoint_layers(entries, address_positions=(1,), port_position=4 if with_ports else None):
                name = chain_ids.make(base + suffix)
                sets.append(SetDef(name, key, elements, data))
                dnat_rules.append(Rule(matches, DnatMap(family, key, name), "port forwards of the matrix"))

    chains = [forward] + pair_chains
    if dnat_rules:
        chains.insert(0, Chain("prerouting", tuple(dnat_rules), hook="prerouting", type="nat", priority=PRIORITY_DSTNAT, policy="accept"))
    header = Header(intent.matrix.name, intent.matrix.content_hash, fw.firewall.name, f"fwmatrix {__version__}")
    return Ruleset((Table("inet", TABLE_NAME, tuple(chains), tuple(sets)),), header)


def _comment(names: list[str]) -> str:
    text = ", ".join(dict.fromkeys(names))
    return text if len(text) <= COMMENT_MAX else text[: COMMENT_MAX - 3] + "..."


def _parts(parts: tuple[ServicePart, ...], family: int, with_ports: bool) -> list[tuple]:
    out = []
    for part in parts:
        if (part.ports is not None) != with_ports:
            continue
        proto = PROTOCOLS[part.protocol_for_family(family)]
        out.append((proto, part.ports) if with_ports else (proto,))
    return out


Entries = dict[tuple, tuple[tuple, list[str]]]  # key -> (map data, names of the openings)


def _flow_entries(flows: list[Flow], with_ports: bool) -> Entries:
    """Openings as set keys: source . destination . protocol [. port]."""
    entries: Entries = {}
    for flow in flows:
        for service in _parts(flow.parts, flow.family, with_ports):
            for src in flow.sources:
                for dst in flow.destinations:
                    entries.setdefault((src, dst) + service, ((), []))[1].append(flow.opening.name)
    return entries


def _dnat_entries(dnats: list[Dnat], with_ports: bool, with_target_port: bool) -> Entries:
    entries: Entries = {}
    for dnat in dnats:
        if (dnat.target_port is not None) != with_target_port:
            continue
        data = (IPNetwork(dnat.target),) + ((dnat.target_port,) if with_target_port else ())
        for service in _parts(dnat.parts, dnat.family, with_ports):
            for src in dnat.sources:
                key = (dnat.in_iface, src, IPNetwork(dnat.public)) + service
                entries.setdefault(key, (data, []))[1].append(dnat.opening.name)
    return entries


def _disjoint_layers(entries: Entries, address_positions: tuple[int, ...], port_position: int | None) -> list[tuple[str, tuple[Element, ...]]]:
    """Split set elements into layers whose elements never overlap.

    The kernel refuses overlapping elements in a concatenated interval set,
    and openings often overlap (a host inside a zone that is opened too).
    Networks are either nested or disjoint, so two networks of the same
    prefix length are equal or disjoint: one layer per combination of prefix
    lengths has no overlap left but between equal addresses, where the port
    ranges are merged. Layers grow with prefix-length combinations (a handful),
    never with openings. The host-to-host layer keeps the plain set name.
    """
    layers: dict[tuple[int, ...], dict[tuple, list[tuple[object, tuple, list[str]]]]] = defaultdict(lambda: defaultdict(list))
    for key, (data, names) in entries.items():
        lengths = tuple(key[i].prefixlen for i in address_positions)
        rest = key if port_position is None else key[:port_position] + key[port_position + 1 :]
        port = None if port_position is None else key[port_position]
        layers[lengths][rest].append((port, data, names))
    merged = {lengths: {rest: _merge_ports(items) for rest, items in by_rest.items()} for lengths, by_rest in layers.items()}
    out = []
    for lengths in sorted(merged, key=lambda ls: (not all(n in (32, 128) for n in ls), ls)):
        wider = [w for w in merged if w != lengths and all(a <= b for a, b in zip(w, lengths))]
        elements: list[Element] = []
        for rest, items in merged[lengths].items():
            for port, data, names in items:
                if any(_covered(merged[w], w, rest, port, data, address_positions) for w in wider):
                    continue  # a wider element of another layer matches all of it: the rule could never match it
                key = rest if port_position is None else rest[:port_position] + (port,) + rest[port_position:]
                elements.append(Element(key, data, _comment(names)))
        if not elements:
            continue
        elements.sort(key=lambda e: tuple(_value_key(v) for v in e.key))
        host_layer = all(n in (32, 128) for n in lengths)
        out.append(("" if host_layer else "_" + "_".join(_length_word(n) for n in lengths), tuple(elements)))
    return out


def _covered(layer: dict, lengths: tuple[int, ...], rest: tuple, port: object, data: tuple, address_positions: tuple[int, ...]) -> bool:
    """Whether the layer of these prefix lengths has an element holding (rest, port) with the same data."""
    wider = list(rest)
    for position, length in zip(address_positions, lengths):
        wider[position] = IPNetwork(f"{rest[position].ip}/{length}").cidr
    for other_port, other_data, _ in layer.get(tuple(wider), ()):
        if other_data == data and (port is None or (other_port.low <= port.low and port.high <= other_port.high)):  # type: ignore[attr-defined]
            return True
    return False


def _length_word(prefixlen: int) -> str:
    return "any" if prefixlen == 0 else "host" if prefixlen in (32, 128) else f"net{prefixlen}"


def _merge_ports(items: list[tuple[object, tuple, list[str]]]) -> list[tuple[object, tuple, list[str]]]:
    """Overlapping port ranges of equal keys become one range (their openings' names joined)."""
    if items[0][0] is None:
        return [(None, items[0][1], [n for _, _, names in items for n in names])]
    merged: list[tuple[PortRange, tuple, list[str]]] = []
    for port, data, names in sorted(items, key=lambda item: (item[0].low, item[0].high)):  # type: ignore[union-attr]
        assert isinstance(port, PortRange)
        if merged and port.low <= merged[-1][0].high and data == merged[-1][1]:
            last = merged[-1]
            merged[-1] = (PortRange(last[0].low, max(last[0].high, port.high)), data, last[2] + names)
        else:
            merged.append((port, data, list(names)))
    return merged  # type: ignore[return-value]


def _value_key(value: object) -> tuple:
    if isinstance(value, IPNetwork):
        return (1, value.version, value.first, value.prefixlen)
    if isinstance(value, PortRange):
        return (2, value.low, value.high)
    if isinstance(value, int):
        return (3, value)
    return (0, str(value))


class _Identifiers:
    """Chain and set names from interface names: only [A-Za-z0-9_], and unique."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def make(self, wanted: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", wanted)
        name, n = base, 2
        while name in self.used:
            name, n = f"{base}_{n}", n + 1
        self.used.add(name)
        return name
