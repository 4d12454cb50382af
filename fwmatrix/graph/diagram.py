"""A matrix as a picture's parts: zones as areas, the things in them, firewalls, and arrows.

Two levels of detail. `detailed`: every host address in its zone (a host
with EXT and INT addresses appears once on each side, the two joined by a
dotted line), groups, literal networks, firewalls with their interfaces
facing the zones and their public addresses, openings as arrows labelled
with their services, and each port forward drawn as public address ⇒
target. `by_zone_pair`: for large matrices, one box per zone and one arrow
per zone pair, labelled with how many openings it carries. Renderers
(`render`) only lay these parts out; nothing here knows DOT or Mermaid.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from fwmatrix.compile.intent import _Zoner as Zoner  # how intent splits networks by zone, reused as is
from fwmatrix.compile.intent import build_intent
from fwmatrix.matrix.model import Matrix, Opening
from fwmatrix.matrix.resolve import Resolver

MAX_LABEL_SERVICES = 4  # services named on a zone-pair arrow; the rest are counted


@dataclass
class Node:
    id: str
    lines: list[str]  # the label, line by line (the first is the name)
    kind: str  # zone, host, group, network, firewall, public (a public address), own (a firewall's address on an interface)
    area: str | None = None  # the area it is drawn in: "zone:NAME" or "firewall:NAME"
    tooltip: str = ""


@dataclass
class Edge:
    source: str
    target: str
    labels: list[str]
    kind: str  # opening, nat, interface, same-host, zone-pair
    tooltip: list[str] = field(default_factory=list)


@dataclass
class Diagram:
    title: str
    areas: dict[str, str]  # "zone:NAME" or "firewall:NAME" -> its label, in matrix order
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], Edge] = field(default_factory=dict)

    def node(self, node_id: str, lines: list[str], kind: str, zone: str | None = None, tooltip: str = "", area: str | None = None) -> str:
        """A node, drawn in `zone`'s area (or in `area`)."""
        if node_id not in self.nodes:
            self.nodes[node_id] = Node(node_id, lines, kind, area or (f"zone:{zone}" if zone else None), tooltip)
        return node_id

    def edge(self, source: str, target: str, kind: str, label: str, tooltip: str = "") -> None:
        """Arrows of one kind between the same two nodes are one arrow with every label."""
        key = (source, target, kind)
        edge = self.edges.setdefault(key, Edge(source, target, [], kind))
        if label and label not in edge.labels:
            edge.labels.append(label)
        if tooltip:
            edge.tooltip.append(tooltip)


def _zone_lines(matrix: Matrix, name: str) -> list[str]:
    """A zone's own node: its networks (the area around it carries the name)."""
    zone = matrix.zones[name]
    return ["any address" if zone.is_any else ", ".join(str(n) for n in zone.networks)]


def _zone_areas(diagram: Diagram, matrix: Matrix, used: set[str]) -> None:
    for name in matrix.zones:
        if name in used:
            diagram.areas[f"zone:{name}"] = name
            diagram.node(f"zone:{name}", _zone_lines(matrix, name), "zone", name, matrix.zones[name].note)


def _placed(matrix: Matrix, firewall: str | None) -> tuple[list[Opening], set[str]]:
    """The openings to draw (those placed on `firewall`, or all) and the firewalls to draw."""
    if firewall is None:
        return list(matrix.openings), set(matrix.firewalls)
    fw = build_intent(matrix).firewalls[firewall]
    indexes = {flow.opening.index for flow in fw.flows} | {dnat.opening.index for dnat in fw.dnats}
    return [o for o in matrix.openings if o.index in indexes], {firewall}


class _Places:
    """Which zone a reference is drawn in (None: it spans zones) and the zones it touches."""

    def __init__(self, matrix: Matrix):
        self.matrix, self.resolver, self.zoner = matrix, Resolver(matrix), Zoner(matrix)

    def zones(self, ref: str, opening: Opening) -> list[str]:
        if ref in self.matrix.zones:
            return [ref]
        endpoint = self.resolver.endpoint(ref, opening.where)
        if endpoint.public_of is not None:
            return []
        found = self.zoner.zones_of(endpoint, ref, opening.where)
        return [z for z in self.matrix.zones if z in found]

    def zone(self, ref: str, opening: Opening) -> str | None:
        zones = self.zones(ref, opening)
        return zones[0] if len(zones) == 1 else None


def _services(opening: Opening) -> str:
    return ", ".join(opening.services)


def _services_with_ports(matrix: Matrix, opening: Opening) -> str:
    """'https tcp/443', 'sip udp/5060 tcp/5060': a named service with the ports it stands for."""
    return ", ".join(f"{ref} {' '.join(str(p) for p in matrix.services[ref].parts)}" if ref in matrix.services else ref
                     for ref in opening.services)


def _firewalls(diagram: Diagram, matrix: Matrix, drawn: set[str], zone_node: dict[str, str]) -> None:
    for fw in matrix.firewalls.values():
        if fw.name not in drawn:
            continue
        diagram.areas[f"firewall:{fw.name}"] = f"firewall {fw.name}"
        fw_id = diagram.node(f"fw:{fw.name}", [fw.name], "firewall", tooltip=fw.note, area=f"firewall:{fw.name}")
        for name, addr in fw.public.items():
            diagram.node(f"public:{fw.name}.{name}", [f"{fw.name}.{name}", str(addr)], "public", area=f"firewall:{fw.name}")
        for iface, zone in fw.interfaces.items():
            diagram.edge(fw_id, zone_node[zone], "interface", iface)


def detailed(matrix: Matrix, firewall: str | None = None, only: set[str] | None = None, title: str = "") -> Diagram:
    """Every opening (placed on `firewall`; named in `only`), with what it touches."""
    openings, drawn = _placed(matrix, firewall)
    if only is not None:
        openings = [o for o in openings if o.name in only]
    diagram = Diagram(title or f"{matrix.title} — {matrix.name}", {})
    places = _Places(matrix)
    used_zones = set(z for fw in drawn for z in matrix.firewalls[fw].interfaces.values())
    zone_node = {name: f"zone:{name}" for name in matrix.zones}

    def ref_node(ref: str, opening: Opening) -> str:
        if ref in matrix.zones:
            used_zones.add(ref)
            return diagram.node(zone_node[ref], _zone_lines(matrix, ref), "zone", ref)
        base, _, sub = ref.partition(".")
        if base in matrix.firewalls:  # a public address, or the firewall itself (its own services)
            fw = matrix.firewalls[base]
            if sub in fw.public:
                return diagram.node(f"public:{ref}", [ref, str(fw.public[sub])], "public", area=f"firewall:{base}")
            if sub:
                return diagram.node(f"own:{ref}", [ref, " ".join(str(a) for a in fw.addresses.get(sub, ()))], "own", area=f"firewall:{base}")
            return f"fw:{base}"  # drawn with the firewalls
        zone = places.zone(ref, opening)
        used_zones.update(places.zones(ref, opening))
        host = matrix.hosts.get(matrix.roles.get(base, base))
        if host is not None:
            return host_node(host.name, sub, zone)
        if ref in matrix.groups:
            group = matrix.groups[ref]
            return diagram.node(f"group:{ref}", [ref, ", ".join(group.members)], "group", zone, group.note)
        return diagram.node(f"net:{ref}", [ref], "network", zone)

    def host_node(name: str, sub: str, zone: str | None) -> str:
        host = matrix.hosts[name]
        addresses = ", ".join(str(a) for a in host.addresses[sub])
        label = [name + (f" ({', '.join(host.roles)})" if host.roles else ""), f"{sub.upper()} {addresses}" if sub else addresses]
        node_id = diagram.node(f"host:{name}.{sub}", label, "host", zone, host.note)
        for other in host.addresses:  # the host's other sides, once drawn, joined to this one
            other_id = f"host:{name}.{other}"
            if other != sub and other_id in diagram.nodes:
                first, second = sorted((node_id, other_id))
                diagram.edge(first, second, "same-host", "")
        return node_id

    for fw_name in sorted(drawn):  # openings may go to a firewall itself: its node first
        diagram.node(f"fw:{fw_name}", [fw_name], "firewall", tooltip=matrix.firewalls[fw_name].note, area=f"firewall:{fw_name}")
    for opening in openings:
        sources = [ref_node(ref, opening) for ref in opening.sources]
        destinations = [ref_node(ref, opening) for ref in opening.destinations]
        tip = f"{opening.name}: {_services(opening)}" + (f" — {opening.note}" if opening.note else "")
        label = _services_with_ports(matrix, opening) + (f" (source NAT: {opening.snat.target})" if opening.snat is not None else "")
        for source in sources:
            for destination in destinations:
                diagram.edge(source, destination, "opening", label, tip)
        if opening.nat is not None:
            target = ref_node(opening.nat.target, opening)
            port = f" → port {opening.nat.port}" if opening.nat.port else ""
            for destination in destinations:
                diagram.edge(destination, target, "nat", f"⇒ {_services(opening)}{port}", tip)
    _zone_areas(diagram, matrix, used_zones)
    _firewalls(diagram, matrix, drawn, zone_node)
    return diagram


def by_zone_pair(matrix: Matrix, firewall: str | None = None) -> Diagram:
    """One box per zone, one arrow per (source zone, destination zone): for large matrices."""
    openings, drawn = _placed(matrix, firewall)
    diagram = Diagram(f"{matrix.title} — {matrix.name} (openings grouped by zone pair)", {})
    places = _Places(matrix)
    zone_node = {name: f"zone:{name}" for name in matrix.zones}
    pairs: dict[tuple[str, str], list[Opening]] = defaultdict(list)  # (zone node, zone or firewall node) -> openings
    for opening in openings:
        sources = {z for ref in opening.sources for z in places.zones(ref, opening)}
        if opening.nat is not None:
            destinations = {zone_node[z] for z in places.zones(opening.nat.target, opening)}
        else:
            destinations = set()
            for ref in opening.destinations:
                base, _, sub = ref.partition(".")
                if base in matrix.firewalls and sub not in matrix.firewalls[base].public:  # the firewall's own service
                    destinations |= {f"fw:{base}"} if base in drawn else set()
                else:
                    destinations |= {zone_node[z] for z in places.zones(ref, opening)}
        for source in sources:
            for destination in destinations:
                pairs[(zone_node[source], destination)].append(opening)
    used = {node.partition(":")[2] for pair in pairs for node in pair if node.startswith("zone:")}
    used |= {z for fw in drawn for z in matrix.firewalls[fw].interfaces.values()}
    _zone_areas(diagram, matrix, used)
    _firewalls(diagram, matrix, drawn, zone_node)
    for (source, destination), members in pairs.items():
        services: dict[str, int] = defaultdict(int)
        for opening in members:
            for service in opening.services:
                services[service] += 1
        top = sorted(services, key=lambda s: (-services[s], s))
        shown = ", ".join(top[:MAX_LABEL_SERVICES]) + (f", +{len(top) - MAX_LABEL_SERVICES} more" if len(top) > MAX_LABEL_SERVICES else "")
        nat = sum(1 for o in members if o.nat is not None)
        label = f"{len(members)} opening{'s' if len(members) != 1 else ''}" + (f" ({nat} port forwards)" if nat else "")
        diagram.edge(source, destination, "zone-pair", label)
        diagram.edge(source, destination, "zone-pair", shown)
    return diagram
