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

from netaddr import IPAddress, IPNetwork

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
                elements = _flow_elements([f for f in flows if f.family == family], with_ports)
                if not elements:
                    continue
                key = (addr_field(family, "saddr"), addr_field(family, "daddr"), "l4proto") + (("dport",) if with_ports else ())
                set_name = chain_ids.make(f"{chain_name[4:]}_v{family}{'' if with_ports else '_noport'}")
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
            elements = _dnat_elements([d for d in fw.dnats if d.family == family], with_ports, with_target_port)
            if not elements:
                continue
            key = ("iif", addr_field(family, "saddr"), addr_field(family, "daddr"), "l4proto") + (("dport",) if with_ports else ())
            data = (addr_field(family, "daddr"),) + (("dport",) if with_target_port else ())
            name = f"dnat_v{family}" + ("_port" if with_target_port else "") + ("" if with_ports else "_noport")
            sets.append(SetDef(name, key, elements, data))
            matches = (Match(("l4proto",), tuple((p,) for p in PORT_L4PROTOS)),) if with_ports else ()
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


def _flow_elements(flows: list[Flow], with_ports: bool) -> tuple[Element, ...]:
    """Openings as set elements: source . destination . protocol [. port]; equal keys merge."""
    comments: dict[tuple, list[str]] = {}
    for flow in flows:
        for service in _parts(flow.parts, flow.family, with_ports):
            for src in flow.sources:
                for dst in flow.destinations:
                    comments.setdefault((src, dst) + service, []).append(flow.opening.name)
    return tuple(Element(key, (), _comment(names)) for key, names in sorted(comments.items(), key=_sort_key))


def _dnat_elements(dnats: list[Dnat], with_ports: bool, with_target_port: bool) -> tuple[Element, ...]:
    entries: dict[tuple, tuple[tuple, list[str]]] = {}
    for dnat in dnats:
        if (dnat.target_port is not None) != with_target_port:
            continue
        data = (_host(dnat.target),) + ((dnat.target_port,) if with_target_port else ())
        for service in _parts(dnat.parts, dnat.family, with_ports):
            for src in dnat.sources:
                key = (dnat.in_iface, src, _host(dnat.public)) + service
                entries.setdefault(key, (data, []))[1].append(dnat.opening.name)
    return tuple(Element(key, data, _comment(names)) for key, (data, names) in sorted(entries.items(), key=_sort_key))


def _host(addr: IPAddress) -> IPNetwork:
    return IPNetwork(addr)


def _sort_key(item: tuple) -> tuple:
    """Elements sort by family, then numerically: deterministic output."""
    return tuple(_value_key(v) for v in item[0])


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
