"""From a firewall's intent to the Ruleset IR.

The shape, for every backend:
  - prerouting (nat): DNAT by lookup in maps keyed on
    in-interface . source . public address . protocol . port;
  - forward (filter, policy drop): replies by connection tracking first
    (established,related accept; invalid drop), then one jump per interface
    pair (a verdict map), and in each pair's chain one set lookup per address
    family and kind. Openings become set elements, not rules, so the rule
    count grows with interface pairs, never with the number of openings.
    A port forward's elements sit in sets of their own, looked up only for
    connections whose destination was translated (`ct status dnat`): its
    target is not open to packets sent to it directly.
Nothing is opened from a zone towards another unless an opening asks for it:
replies (a DMZ answering the internet) pass by connection tracking.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from operator import itemgetter

from netaddr import IPNetwork

from fwmatrix import __version__
from fwmatrix.compile.intent import Dnat, FirewallIntent, Flow, Intent, Snat
from fwmatrix.ir import (
    PRIORITY_DSTNAT,
    PRIORITY_FILTER,
    PRIORITY_SRCNAT,
    Chain,
    DnatMap,
    Element,
    Header,
    Jump,
    Log,
    Masquerade,
    Match,
    Rule,
    Ruleset,
    SetDef,
    Snat as SnatStatement,
    Table,
    Verdict,
    VerdictMap,
    addr_field,
)
from fwmatrix.matrix.model import PROTOCOLS, Opening, PortRange, ServicePart

TABLE_NAME = "fwmatrix"
COMMENT_MAX = 120
TICKET_UNSAFE = re.compile(r"[^A-Za-z0-9._:/+-]")  # a ticket in a comment: what every target writes as it is
TICKET_MAX = 32
PORT_L4PROTOS = tuple(PROTOCOLS[p] for p in ("tcp", "udp", "sctp"))
TRANSLATED = Match(("ct.status",), (("dnat",),))
DROP_LOG_PREFIX = {"forward": "fwm drop forward: ", "input": "fwm drop input: "}  # iptables: at most 29 characters
REPLIES = (
    Rule((Match(("ct.state",), (("established",), ("related",))),), Verdict("accept"), "replies pass by connection tracking"),
    Rule((Match(("ct.state",), (("invalid",),)),), Verdict("drop")),
)
# what the firewall itself needs before any service: its loopback, and ICMPv6 (neighbour discovery,
# packet too big; RFC 4890); IPv4's ICMP errors (fragmentation needed) pass as related
INPUT_ESSENTIALS = (
    Rule((Match(("iif",), (("lo",),)),), Verdict("accept"), "loopback of the firewall"),
) + REPLIES + (
    Rule((Match(("l4proto",), ((PROTOCOLS["icmpv6"],),)),), Verdict("accept"), "ICMPv6: neighbour discovery, packet too big"),
)


def compile_intent(intent: Intent) -> dict[str, Ruleset]:
    return {name: compile_firewall(intent, fw_intent) for name, fw_intent in intent.firewalls.items()}


def compile_firewall(intent: Intent, fw: FirewallIntent, memo: Memo | None = None) -> Ruleset:
    """The firewall's ruleset. With `memo`, the sets of the forward chain are left in it, and those of
    an earlier compile of the same firewall found there (a changed matrix: `fwmatrix diff`) lend
    their elements wherever nothing they depend on changed; the ruleset is the same."""
    chain_ids = _Identifiers()
    nets = _Nets()
    sets: list[SetDef] = []
    pair_chains: list[Chain] = []
    vmap_entries: list[tuple[tuple[str, str], Jump]] = []

    by_pair: dict[tuple[str, str], list[Flow]] = defaultdict(list)
    for flow in fw.flows:
        by_pair[(flow.in_iface, flow.out_iface)].append(flow)

    for (in_iface, out_iface), flows in sorted(by_pair.items()):
        chain_name = chain_ids.make(f"fwd_{in_iface}_to_{out_iface}")
        rules: list[Rule] = _log_rules(flows, (), f"log_{in_iface}_to_{out_iface}", chain_ids, nets, sets)
        by_family: dict[tuple[int, bool], list[Flow]] = {(family, translated): [] for family in (4, 6) for translated in (False, True)}
        for flow in flows:
            by_family[(flow.family, flow.translated)].append(flow)
        for family in (4, 6):
            by_kind: dict[tuple[bool, bool], Layers] = {}
            plain_kinds, forwarded_kinds = _flow_layers(by_family[(family, False)], nets), _flow_layers(by_family[(family, True)], nets)
            for with_ports in (True, False):
                plain = _merged(plain_kinds[with_ports])
                forwarded = forwarded_kinds[with_ports]
                by_kind[(False, with_ports)] = plain
                # what a plain opening already accepts, translated or not, needs no translated element
                by_kind[(True, with_ports)] = _merged(_uncovered(forwarded, plain, with_ports))
            for translated in (False, True):
                for with_ports in (True, False):
                    layers = by_kind[(translated, with_ports)]
                    key = (addr_field(family, "saddr"), addr_field(family, "daddr"), "l4proto") + (("dport",) if with_ports else ())
                    base = f"{chain_name[4:]}_v{family}{'_dnat' if translated else ''}{'' if with_ports else '_noport'}"
                    # a port forward's target is open only to connections this firewall translated
                    only_translated = (TRANSLATED,) if translated else ()
                    comment = f"{'port forwards' if translated else 'matrix openings'} {in_iface} -> {out_iface}"
                    layered = _disjoint_layers(layers, (0, 1), 3 if with_ports else None, nets) if memo is None else \
                        memo.flow_layers((in_iface, out_iface, family, translated, with_ports), layers, with_ports, nets)
                    for suffix, elements in layered:
                        set_name = chain_ids.make(base + suffix)
                        sets.append(SetDef(set_name, key, elements))
                        rules.append(Rule(only_translated + (Match(key, set_name=set_name),), Verdict("accept"), comment))
        pair_chains.append(Chain(chain_name, tuple(rules)))
        vmap_entries.append(((in_iface, out_iface), Jump(chain_name)))

    forward = Chain(
        "forward",
        REPLIES + ((Rule((), VerdictMap(("iif", "oif"), tuple(vmap_entries))),) if vmap_entries else ())
        + ((Rule((), Log(DROP_LOG_PREFIX["forward"]), "log what the policy drops"),) if fw.firewall.log else ()),
        hook="forward",
        type="filter",
        priority=PRIORITY_FILTER,
        policy="drop",
    )

    dnat_rules: list[Rule] = []
    for family in (4, 6):
        for with_ports, with_target_port in ((True, False), (True, True), (False, False)):
            entries = _dnat_entries([d for d in fw.dnats if d.family == family], with_ports, with_target_port, nets)
            key = ("iif", addr_field(family, "saddr"), addr_field(family, "daddr"), "l4proto") + (("dport",) if with_ports else ())
            data = (addr_field(family, "daddr"),) + (("dport",) if with_target_port else ())
            base = f"dnat_v{family}" + ("_port" if with_target_port else "") + ("" if with_ports else "_noport")
            matches = (Match(("l4proto",), tuple((p,) for p in PORT_L4PROTOS)),) if with_ports else ()
            port_position = 4 if with_ports else None
            for suffix, elements in _disjoint_layers(_layers(entries, (1,), port_position), (1,), port_position, nets, (2,)):
                name = chain_ids.make(base + suffix)
                sets.append(SetDef(name, key, elements, data))
                dnat_rules.append(Rule(matches, DnatMap(family, key, name), "port forwards of the matrix"))

    chains = [forward] + pair_chains
    if fw.filters_input:
        chains.insert(0, Chain("input", _input_rules(fw, chain_ids, nets, sets), hook="input", type="filter", priority=PRIORITY_FILTER, policy="drop"))
    snat_rules = _snat_rules(fw.snats, chain_ids, nets, sets)
    if snat_rules:
        chains.append(Chain("postrouting", tuple(snat_rules), hook="postrouting", type="nat", priority=PRIORITY_SRCNAT, policy="accept"))
    if dnat_rules:
        chains.insert(0, Chain("prerouting", tuple(dnat_rules), hook="prerouting", type="nat", priority=PRIORITY_DSTNAT, policy="accept"))
    header = Header(intent.matrix.name, intent.matrix.content_hash, fw.firewall.name, f"fwmatrix {__version__}")
    return Ruleset((Table("inet", TABLE_NAME, tuple(chains), tuple(sets)),), header)


def _input_rules(fw: FirewallIntent, chain_ids: _Identifiers, nets: _Nets, sets: list[SetDef]) -> tuple[Rule, ...]:
    """The input chain (policy drop): the essentials, then per interface and family one set
    of the firewall's own services (openings to it, and its management accesses)."""
    rules = list(INPUT_ESSENTIALS)
    by_iface: dict[str, list] = defaultdict(list)
    for item in fw.inputs:
        by_iface[item.in_iface].append(item)
    for iface, items in sorted(by_iface.items()):
        iif = Match(("iif",), ((iface,),))
        rules += _log_rules(items, (iif,), f"log_in_{iface}", chain_ids, nets, sets)  # type: ignore[arg-type]  # an Input has a Flow's keys
        for family in (4, 6):
            kinds = _flow_layers([i for i in items if i.family == family], nets)  # type: ignore[misc]  # an Input has a Flow's keys
            for with_ports in (True, False):
                layers = _merged(kinds[with_ports])
                key = (addr_field(family, "saddr"), addr_field(family, "daddr"), "l4proto") + (("dport",) if with_ports else ())
                base = f"in_{iface}_v{family}{'' if with_ports else '_noport'}"
                for suffix, elements in _disjoint_layers(layers, (0, 1), 3 if with_ports else None, nets):
                    set_name = chain_ids.make(base + suffix)
                    sets.append(SetDef(set_name, key, elements))
                    rules.append(Rule((iif, Match(key, set_name=set_name)), Verdict("accept"), f"own services of the firewall on {iface}"))
    if fw.firewall.log:
        rules.append(Rule((), Log(DROP_LOG_PREFIX["input"]), "log what the policy drops"))
    return tuple(rules)


def _log_rules(flows: list[Flow], head: tuple[Match, ...], base: str, chain_ids: _Identifiers, nets: _Nets, sets: list[SetDef]) -> list[Rule]:
    """`log: true` openings: before the accepts, one rule per opening (and family, kind) that counts
    and logs its new connections, rate-limited, with the opening's name in the prefix."""
    rules: list[Rule] = []
    logged = sorted({f.opening.index: f.opening for f in flows if f.opening.log}.items())
    for _, opening in logged:
        mine = [f for f in flows if f.opening.index == opening.index]
        prefix = f"fwm {opening.name[:22]}: "
        for family in (4, 6):
            for translated in (False, True):
                kinds = _flow_layers([f for f in mine if f.family == family and getattr(f, "translated", False) == translated], nets)
                for with_ports in (True, False):
                    key = (addr_field(family, "saddr"), addr_field(family, "daddr"), "l4proto") + (("dport",) if with_ports else ())
                    for suffix, elements in _disjoint_layers(_merged(kinds[with_ports]), (0, 1), 3 if with_ports else None, nets):
                        set_name = chain_ids.make(f"{base}_v{family}{'_dnat' if translated else ''}{'' if with_ports else '_noport'}{suffix}")
                        sets.append(SetDef(set_name, key, elements))
                        only_translated = (TRANSLATED,) if translated else ()
                        rules.append(Rule(head + only_translated + (Match(key, set_name=set_name),), Log(prefix), f"log: {opening.name}"))
    return rules


def _snat_rules(snats: tuple[Snat, ...], chain_ids: _Identifiers, nets: _Nets, sets: list[SetDef]) -> list[Rule]:
    """Source NAT in postrouting: per outgoing interface, family and address, one set of the
    openings' keys (as the forward sets) and one rule that translates what it holds."""
    by_target: dict[tuple[str, int, str], list[Snat]] = defaultdict(list)
    for snat in snats:
        by_target[(snat.out_iface, snat.family, "" if snat.address is None else str(snat.address))].append(snat)
    rules: list[Rule] = []
    for (out_iface, family, address), group in sorted(by_target.items()):
        action = Masquerade() if not address else SnatStatement(family, IPNetwork(address))
        oif = Match(("oif",), ((out_iface,),))
        kinds = _flow_layers(group, nets)  # type: ignore[arg-type]  # a Snat has a Flow's keys
        for with_ports in (True, False):
            layers = _merged(kinds[with_ports])
            key = (addr_field(family, "saddr"), addr_field(family, "daddr"), "l4proto") + (("dport",) if with_ports else ())
            base = f"{'masq' if not address else 'snat'}_{out_iface}_v{family}{'' if with_ports else '_noport'}"
            for suffix, elements in _disjoint_layers(layers, (0, 1), 3 if with_ports else None, nets):
                set_name = chain_ids.make(base + suffix)
                sets.append(SetDef(set_name, key, elements))
                rules.append(Rule((oif, Match(key, set_name=set_name)), action, f"source NAT out of {out_iface}"))
    return rules


def opening_comment(opening: Opening) -> str:
    """How a compiled element names its opening: the name, and its change ticket in parentheses
    (`operator-https (CHG-1234)`), the ticket kept to characters every target's comment and
    label syntax writes unchanged."""
    ticket = TICKET_UNSAFE.sub("", opening.meta.ticket)[:TICKET_MAX] if opening.meta is not None else ""
    return f"{opening.name} ({ticket})" if ticket else opening.name


def _comment(names: tuple[str, ...]) -> str:
    text = names[0] if len(names) == 1 else ", ".join(dict.fromkeys(names))
    return text if len(text) <= COMMENT_MAX else text[: COMMENT_MAX - 3] + "..."


def _parts(parts: tuple[ServicePart, ...], family: int, with_ports: bool) -> list[tuple]:
    out = []
    for part in parts:
        if (part.ports is not None) != with_ports:
            continue
        proto = PROTOCOLS[part.protocol_for_family(family)]
        out.append((proto, (part.ports.low, part.ports.high)) if with_ports else (proto,))
    return out


Entries = dict[tuple, tuple[tuple, list[str]]]  # key -> (map data, names of the openings)
# A network as one integer while elements are sorted, merged and layered: IPv6 bit, first address,
# prefix length (8 bits). Integers hash and compare far faster than tuples or netaddr objects, and
# they sort as (version, first address, prefix length) would: v4 first, then numerically.
NetKey = int
_V6_SHIFT = 136  # above a 128-bit address and its 8 bits of prefix length
_LENGTH = 0xFF
# [0 for v4, 1 for v6][prefix length] -> the mask that keeps the version and a network's bits
_MASKS = tuple([(version << _V6_SHIFT) | ((((1 << bits) - 1) ^ ((1 << (bits - n)) - 1)) << 8) for n in range(bits + 1)]
               for version, bits in ((0, 32), (1, 128)))


def _net_key(net: IPNetwork) -> NetKey:
    return ((net.version == 6) << _V6_SHIFT) | (net.first << 8) | net.prefixlen


def _supernet(net: NetKey, length: int) -> NetKey:
    """The network of prefix `length` (at most the network's own) that holds `net`."""
    return (net & _MASKS[net >> _V6_SHIFT][length]) | length


class _Nets:
    """Networks as integer keys while elements are sorted, merged and layered
    (netaddr objects are slow to hash and compare by the hundred thousand);
    `networks` and `port_range` turn the keys of the result back into the IR's
    netaddr networks and PortRanges, one object per distinct value."""

    def __init__(self) -> None:
        self.keys: dict[int, NetKey] = {}  # id(network) -> its key
        self.networks: dict[NetKey, IPNetwork] = {}
        self.ports: dict[tuple[int, int], PortRange] = {}
        self.keep: list[object] = []  # ids stay valid while the networks (and service tuples) live
        self.parts: dict[tuple[int, int], tuple[list[tuple], list[tuple]]] = {}  # id(parts), family -> services()
        self.lists: dict[int, tuple[tuple[IPNetwork, ...], list[NetKey]]] = {}  # id(networks) -> (networks, their keys)

    def key(self, net: IPNetwork) -> NetKey:
        found = self.keys.get(id(net))
        if found is None:
            found = _net_key(net)
            self.keys[id(net)] = found
            self.networks.setdefault(found, net)
            self.keep.append(net)
        return found

    def keys_of(self, networks: tuple[IPNetwork, ...]) -> list[NetKey]:
        """`key` of each network; cached by the tuple (flows of one zone share theirs)."""
        found = self.lists.get(id(networks))
        if found is None or found[0] is not networks:
            found = self.lists[id(networks)] = (networks, [self.key(n) for n in networks])
        return found[1]

    def services(self, parts: tuple[ServicePart, ...], family: int) -> tuple[list[tuple], list[tuple]]:
        """`_parts` with ports and without."""
        found = self.parts.get((id(parts), family))
        if found is None:
            found = self.parts[(id(parts), family)] = (_parts(parts, family, True), _parts(parts, family, False))
            self.keep.append(parts)
        return found

    def port_range(self, ports: tuple[int, int]) -> PortRange:
        found = self.ports.get(ports)
        if found is None:
            found = self.ports[ports] = PortRange(*ports)
        return found

    def ir_key(self, key: tuple, address_positions: tuple[int, ...], port_position: int | None) -> tuple:
        """A layered key with netaddr networks and a PortRange in place of its integers."""
        out = list(key)
        for position in address_positions:
            out[position] = self.networks[key[position]]
        if port_position is not None:
            out[port_position] = self.port_range(key[port_position])
        return tuple(out)


def _flow_layers(flows: list[Flow], nets: _Nets) -> dict[bool, Layers]:
    """Openings as set keys, source . destination . protocol [. port], straight into their
    layers (by the two prefix lengths, then by the key without the port); an item for each
    opening, merged by `_merged` (one pass instead of a dictionary of keys first). The layers
    of the keys with a port (True) and of those without (False), each flow read once for both."""
    kinds: dict[bool, Layers] = {True: {}, False: {}}
    net_keys = nets.keys_of
    for flow in flows:
        port_services, plain_services = nets.services(flow.parts, flow.family)
        if not port_services and not plain_services:
            continue
        sources, destinations = net_keys(flow.sources), net_keys(flow.destinations)
        names = (opening_comment(flow.opening),)
        # the flow's items, one per service, shared by all its keys (merging makes new ones)
        if port_services:
            _add_items(kinds[True], sources, destinations, [(proto, (ports, (), names)) for proto, ports in port_services])
        if plain_services:
            _add_items(kinds[False], sources, destinations, [(proto, (None, (), names)) for (proto,) in plain_services])
    return kinds


def _add_items(layers: Layers, sources: list[NetKey], destinations: list[NetKey], items: list[tuple[int, Item]]) -> None:
    """A flow's items under each of its source . destination . protocol keys."""
    for src in sources:
        src_length = src & _LENGTH
        for dst in destinations:
            by_rest = layers.get((src_length, dst & _LENGTH))
            if by_rest is None:
                by_rest = layers[(src_length, dst & _LENGTH)] = {}
            for proto, item in items:
                by_rest.setdefault((src, dst, proto), []).append(item)  # one hash of the key (a get and a store: two)


def _uncovered(layers: Layers, by: Layers, with_ports: bool) -> Layers:
    """The items (not merged yet) that the elements of `by` do not hold between them (source
    and destination networks containing theirs, the same protocol, port ranges covering theirs)."""
    if not layers or not by:
        return layers
    holders: dict[NetKey, list[tuple]] = defaultdict(list)  # destination -> (source, protocol, ports) of `by` with it
    for by_rest in by.values():
        for (src, dst, proto), items in by_rest.items():
            holders[dst].extend((src, proto, port if with_ports else (0, 0)) for port, _, _ in items)
    lengths: dict[int, set[int]] = defaultdict(set)
    for dst in holders:
        lengths[dst >> _V6_SHIFT].add(dst & _LENGTH)
    out: Layers = {}
    for prefix_lengths, by_rest in layers.items():
        for rest, items in by_rest.items():
            src, dst, proto = rest
            ranges: list[tuple[int, int]] = []  # ports of holders that contain the addresses
            for length in lengths[dst >> _V6_SHIFT]:
                if length > dst & _LENGTH:
                    continue
                for other_src, other_proto, other_port in holders.get(_supernet(dst, length), ()):
                    if other_proto == proto and other_src & _LENGTH <= src & _LENGTH and _supernet(src, other_src & _LENGTH) == other_src:
                        ranges.append(other_port)
            left = [item for item in items if not _ports_cover(ranges, item[0] if with_ports else (0, 0))]
            if left:
                out.setdefault(prefix_lengths, {})[rest] = left
    return out


def _ports_cover(ranges: list[tuple[int, int]], wanted: tuple[int, int]) -> bool:
    low, high = wanted
    for r_low, r_high in sorted(ranges):
        if r_low > low:
            return False
        low = max(low, r_high + 1)
        if low > high:
            return True
    return False


def _dnat_entries(dnats: list[Dnat], with_ports: bool, with_target_port: bool, nets: _Nets) -> Entries:
    entries: Entries = {}
    for dnat in dnats:
        if (dnat.target_port is not None) != with_target_port:
            continue
        data = (IPNetwork(dnat.target),) + ((dnat.target_port,) if with_target_port else ())
        public = nets.key(IPNetwork(dnat.public))
        for service in _parts(dnat.parts, dnat.family, with_ports):
            for src in dnat.sources:
                key = (dnat.in_iface, nets.key(src), public) + service
                entries.setdefault(key, (data, []))[1].append(opening_comment(dnat.opening))
    return entries


Item = tuple[object, tuple, tuple[str, ...]]  # (port range or None, map data, names of the openings)
Layers = dict[tuple[int, ...], dict[tuple, list[Item]]]  # prefix lengths -> key without the port -> items
Made = tuple[tuple[Element, ...], list[tuple], list[int]]  # a layer's elements, its keys in order, where each key's start
FlowElements = Callable[[Layers, tuple[int, ...], list[tuple[int, ...]], dict[tuple[int, ...], set], bool, "_Nets"], tuple[Element, ...]]


class Memo:
    """The forward chain's sets of one compile of a firewall, kept for the later compiles of the
    same firewall from a changed matrix (`fwmatrix diff` compiles the old matrix, then the new one):
    per set (interface pair, family, translated or not, with ports or not) its layers, and per layer
    its elements, its keys in order and where each key's elements start. A key's elements depend on
    nothing but its own items and those of the wider keys that could hold it (`_flow_elements`):
    where none of these changed, the first compile's elements are the same, and are taken."""

    def __init__(self) -> None:
        self.sets: dict[tuple, tuple[Layers, dict[tuple[int, ...], Made]]] = {}

    def flow_layers(self, call: tuple, layers: Layers, with_ports: bool, nets: _Nets) -> list[tuple[str, tuple[Element, ...]]]:
        """`_disjoint_layers` of an openings' set; `call` names the set across compiles."""
        first = self.sets.get(call)
        if first is None:
            made: dict[tuple[int, ...], Made] = {}
            self.sets[call] = (layers, made)

            def elements(layers: Layers, lengths: tuple[int, ...], wider: list[tuple[int, ...]], heads: dict[tuple[int, ...], set],
                         with_ports: bool, nets: _Nets) -> tuple[Element, ...]:
                rests, starts = sorted(layers[lengths]), []
                made[lengths] = (_flow_elements(layers, lengths, wider, heads, with_ports, nets, rests, starts), rests, starts)
                return made[lengths][0]
        else:
            changed = _changed_keys(first[0], layers)

            def elements(layers: Layers, lengths: tuple[int, ...], wider: list[tuple[int, ...]], heads: dict[tuple[int, ...], set],
                         with_ports: bool, nets: _Nets) -> tuple[Element, ...]:
                earlier = first[1].get(lengths)
                if earlier is None:
                    return _flow_elements(layers, lengths, wider, heads, with_ports, nets)
                return _flow_elements_again(layers, lengths, wider, heads, with_ports, nets, earlier, changed)

        return _disjoint_layers(layers, (0, 1), 3 if with_ports else None, nets, flow_elements=elements)


def _changed_keys(before: Layers, after: Layers) -> dict[tuple[int, ...], set[tuple]]:
    """Per layer, the keys whose items differ between two compiles, or that only one of them has."""
    out = {}
    for lengths in before.keys() | after.keys():
        old, new = before.get(lengths, {}), after.get(lengths, {})
        keys = {rest for rest, items in new.items() if old.get(rest) != items}
        if len(old) != len(new) - sum(1 for rest in keys if rest not in old):  # some of old's are gone
            keys.update(old.keys() - new.keys())
        if keys:
            out[lengths] = keys
    return out


def _flow_elements_again(layers: Layers, lengths: tuple[int, ...], wider: list[tuple[int, ...]], heads: dict[tuple[int, ...], set],
                         with_ports: bool, nets: _Nets, earlier: Made, changed: dict[tuple[int, ...], set[tuple]]) -> tuple[Element, ...]:
    """`_flow_elements` of a layer that an earlier compile made too (`earlier`): made again only for
    the keys that changed (`changed`, per layer) or that a changed wider key (of this compile's
    layers or the earlier's) could hold. Between two such keys (or keys only
    the earlier compile had) both compiles have the same keys, whose elements are taken in one slice."""
    by_rest = layers[lengths]
    mine = changed.get(lengths, set())
    again = {rest for rest in mine if rest in by_rest}
    wider_changed = [(keys, w, {key[0] for key in keys}) for w, keys in changed.items()
                     if w != lengths and all(a <= b for a, b in zip(w, lengths))]
    if wider_changed:
        suspects_of: dict[NetKey, list[tuple]] = {}  # source -> (changed keys of a wider layer, its supernet there, destination mask, length)
        for src in heads[lengths]:
            masks = _MASKS[src >> _V6_SHIFT]
            suspects = [(keys, s, masks[w[1]], w[1]) for keys, w, sources in wider_changed if (s := (src & masks[w[0]]) | w[0]) in sources]
            if suspects:
                suspects_of[src] = suspects
        for rest in [rest for rest in by_rest if rest[0] in suspects_of]:
            src, dst, proto = rest
            for keys, s, mask, length in suspects_of[src]:
                if (s, (dst & mask) | length, proto) in keys:
                    again.add(rest)
                    break
    again_rests, again_starts = sorted(again), []
    made = _flow_elements(layers, lengths, wider, heads, with_ports, nets, again_rests, again_starts)
    made_at = dict(zip(again_rests, _spans(again_starts, len(made))))
    old_elements, old_rests, old_starts = earlier
    old_ends = old_starts[1:] + [len(old_elements)]
    out: list[Element] = []
    done = 0  # the earlier elements up to here are taken or left
    for rest in sorted(mine | again):
        i = bisect_left(old_rests, rest)
        cut = old_starts[i] if i < len(old_rests) else len(old_elements)
        out += old_elements[done:cut]
        span = made_at.get(rest)
        if span is not None:
            out += made[span[0]:span[1]]
        done = old_ends[i] if i < len(old_rests) and old_rests[i] == rest else cut
    out += old_elements[done:]
    return tuple(out)


def _disjoint_layers(layers: Layers, address_positions: tuple[int, ...], port_position: int | None, nets: _Nets,
                     network_positions: tuple[int, ...] = (), flow_elements: FlowElements | None = None) -> list[tuple[str, tuple[Element, ...]]]:
    """Split set elements into layers whose elements never overlap.

    The kernel refuses overlapping elements in a concatenated interval set,
    and openings often overlap (a host inside a zone that is opened too).
    Networks are either nested or disjoint, so two networks of the same
    prefix length are equal or disjoint: one layer per combination of prefix
    lengths has no overlap left but between equal addresses, where the port
    ranges are merged. Layers grow with prefix-length combinations (a handful),
    never with openings. The host-to-host layer keeps the plain set name.
    An element that a wider element of another layer holds is left out: its
    rule could never match it. `network_positions`: where else the keys hold
    networks (the port forwards' public address), not layered. `flow_elements`:
    what makes a layer's elements of openings' keys (`_flow_elements`; a `Memo`'s).
    """
    flows = address_positions == (0, 1) and port_position in (3, None)  # source . destination . protocol [. port]
    # the networks at the first address position of each layer: a cheap test before a whole key is built
    first = address_positions[0]
    heads = {lengths: {rest[first] for rest in by_rest} for lengths, by_rest in layers.items()}
    if flows:
        # of a layer wider than another (a few small ones), each source's destinations: a hold lookup
        # tests the destination's supernet, an integer, before it builds the whole key
        for w in [w for w in layers if any(w != lengths and all(a <= b for a, b in zip(w, lengths)) for lengths in layers)]:
            dests: dict[NetKey, set[NetKey]] = {}
            for src, dst, _ in layers[w]:
                dests.setdefault(src, set()).add(dst)
            heads[w] = dests  # type: ignore[assignment]  # its keys are the layer's sources still
    out = []
    for lengths in sorted(layers, key=lambda ls: (not all(n in (32, 128) for n in ls), ls)):
        wider = [w for w in layers if w != lengths and all(a <= b for a, b in zip(w, lengths))]
        if flows:
            elements = (flow_elements or _flow_elements)(layers, lengths, wider, heads, port_position is not None, nets)
        else:
            elements = _map_elements(layers, lengths, wider, heads, address_positions, port_position, network_positions, nets)
        if elements:
            host_layer = all(n in (32, 128) for n in lengths)
            out.append(("" if host_layer else "_" + "_".join(_length_word(n) for n in lengths), elements))
    return out


def _spans(starts: list[int], end: int) -> list[tuple[int, int]]:
    """Where each key's elements are, from where each starts."""
    return list(zip(starts, starts[1:] + [end]))


def _flow_elements(layers: Layers, lengths: tuple[int, ...], wider: list[tuple[int, ...]], heads: dict[tuple[int, ...], set],
                   with_ports: bool, nets: _Nets, rests: list[tuple] | None = None, starts: list[int] | None = None) -> tuple[Element, ...]:
    """The elements of one layer of source . destination . protocol [. port] keys (the openings' sets:
    the hot path, the wider keys made here by hand), sorted; those a wider layer holds left out.
    An opening's item has no data, and after merging each key has one item per port range, in
    port order (`_merge_ports`): the keys sorted alone give the elements in order (no list of
    (key, port, names) to sort, tuples in tuples). `rests`: only these keys (sorted; all by default);
    `starts`: filled with where each key's elements start in the result."""
    by_rest = layers[lengths]
    networks, ports, port_range = nets.networks, nets.ports, nets.port_range
    elements: list[Element] = []
    add, new_object, set_field = elements.append, object.__new__, object.__setattr__
    src_now, candidates, source = None, [], None  # the keys come sorted: one source's keys are together
    for rest in sorted(by_rest) if rests is None else rests:
        if starts is not None:
            starts.append(len(elements))
        src, dst, proto = rest
        if src != src_now:
            src_now, source = src, networks[src]
            if wider:  # (wider layer, its supernet there, destination mask, length, its destinations under it)
                masks = _MASKS[src >> _V6_SHIFT]
                candidates = [(layers[w], s, masks[w[1]], w[1], dests) for w in wider
                              if (dests := heads[w].get(s := _supernet(src, w[0]))) is not None]  # type: ignore[attr-defined]
        ranges = None  # the port ranges of the wider keys that hold this one's addresses and protocol
        for layer, s, mask, length, dests in candidates:  # a loop, not a comprehension: most keys have one or two
            d = (dst & mask) | length
            if d not in dests:
                continue
            found = layer.get((s, d, proto))
            if found:
                if not with_ports:
                    break
                if ranges is None:
                    ranges = [other for other, _, _ in found]
                else:
                    ranges += [other for other, _, _ in found]
        else:
            found = None
        if found:
            continue  # without ports, a holder holds all
        destination = networks[dst]
        for port, _, names in by_rest[rest]:
            if ranges and _port_held(ranges, port):  # type: ignore[arg-type]
                continue
            # Element(key, (), comment): its frozen __init__'s three object.__setattr__ calls without the
            # call of __init__ (a quarter of an element's cost; tests/test_nftables.py checks the fields
            # are these three). Not through element.__dict__: faster still, but it makes each element
            # a dict of its own, 64 bytes more (4.8 MB at 10,000 openings)
            element = new_object(Element)
            set_field(element, "key", (source, destination, proto, ports.get(port) or port_range(port)) if with_ports else (source, destination, proto))
            set_field(element, "data", ())
            # one opening's name (most elements) is its own comment: _comment only for the others
            set_field(element, "comment", names[0] if len(names) == 1 and len(names[0]) <= COMMENT_MAX else _comment(names))
            add(element)
    return tuple(elements)


def _port_held(ranges: list[tuple[int, int]], port: tuple[int, int]) -> bool:
    """Whether one of these port ranges holds `port`."""
    low, high = port
    for other_low, other_high in ranges:
        if other_low <= low and high <= other_high:
            return True
    return False


def _map_elements(layers: Layers, lengths: tuple[int, ...], wider: list[tuple[int, ...]], heads: dict[tuple[int, ...], set],
                  address_positions: tuple[int, ...], port_position: int | None, network_positions: tuple[int, ...], nets: _Nets) -> tuple[Element, ...]:
    """`_flow_elements` for any other key (the port forwards' maps), sorted by key."""
    first = address_positions[0]
    kept: list[tuple[tuple, tuple, tuple[str, ...]]] = []
    candidates_of: dict[NetKey, list[tuple]] = {}  # first network -> (wider layer, its supernet there, its prefix lengths)
    for rest, items in layers[lengths].items():
        holders: list[list[Item]] = []  # the items of wider elements that hold `rest`
        if wider:
            head = rest[first]
            candidates = candidates_of.get(head)
            if candidates is None:
                candidates = candidates_of[head] = [(layers[w], s, w) for w in wider if (s := _supernet(head, w[0])) in heads[w]]
            for layer, s, w in candidates:
                found = layer.get(_wider_key(rest, s, w, address_positions))
                if found:
                    holders.append(found)
        for port, data, names in items:
            if holders and _held(holders, port, data):
                continue
            if port_position is None:
                kept.append((rest, data, names))
            else:
                kept.append((rest[:port_position] + (port,) + rest[port_position:], data, names))
    kept.sort(key=itemgetter(0))
    ir_key = nets.ir_key
    return tuple(Element(ir_key(key, address_positions + network_positions, port_position), data, _comment(names)) for key, data, names in kept)


def _layers(entries: Entries, address_positions: tuple[int, ...], port_position: int | None) -> Layers:
    """Entries by the prefix lengths of their addresses, then by their key without the port;
    overlapping port ranges of equal keys merged (the port forwards' maps: openings go through
    `_flow_layers`)."""
    layers: Layers = {}
    for key, value in entries.items():
        lengths = tuple([key[i] & _LENGTH for i in address_positions])
        by_rest = layers.get(lengths)
        if by_rest is None:
            by_rest = layers[lengths] = {}
        data, names = value
        if port_position is None:
            rest, item = key, (None, data, tuple(names))
        else:
            rest, item = key[:port_position] + key[port_position + 1 :], (key[port_position], data, tuple(names))
        found = by_rest.get(rest)
        if found is None:
            by_rest[rest] = [item]
        else:
            found.append(item)
    return _merged(layers)


def _merged(layers: Layers) -> Layers:
    """Each key's overlapping port ranges merged (in place)."""
    for by_rest in layers.values():
        for rest, items in by_rest.items():
            if len(items) > 1:
                by_rest[rest] = _merge_ports(items)
    return layers


def _wider_key(rest: tuple, head: NetKey, lengths: tuple[int, ...], address_positions: tuple[int, ...]) -> tuple:
    """`rest` with its addresses replaced by their supernets of these prefix lengths (`head`: the first one's)."""
    wider = list(rest)
    wider[address_positions[0]] = head
    for position, length in zip(address_positions[1:], lengths[1:]):
        wider[position] = _supernet(rest[position], length)
    return tuple(wider)


def _held(holders: list[list[Item]], port: object, data: tuple) -> bool:
    """Whether one of these items has the same data and a port range holding `port`."""
    for items in holders:
        for other_port, other_data, _ in items:
            if other_data == data and (port is None or (other_port[0] <= port[0] and port[1] <= other_port[1])):  # type: ignore[index]
                return True
    return False


def _length_word(prefixlen: int) -> str:
    return "any" if prefixlen == 0 else "host" if prefixlen in (32, 128) else f"net{prefixlen}"


_port_of = itemgetter(0)


def _merge_ports(items: list[Item]) -> list[Item]:
    """Overlapping port ranges of equal keys become one range (their openings' names joined)."""
    if len(items) == 1:
        return items
    if items[0][0] is None:
        return [(None, items[0][1], tuple([n for _, _, names in items for n in names]))]
    merged: list[Item] = []
    for item in sorted(items, key=_port_of):
        (low, high), data, names = item  # type: ignore[misc]
        if merged and low <= merged[-1][0][1] and data == merged[-1][1]:  # type: ignore[index]
            last = merged[-1]
            merged[-1] = ((last[0][0], max(last[0][1], high)), data, last[2] + names)  # type: ignore[index]
        else:
            merged.append(item)
    return merged


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
