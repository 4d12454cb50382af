"""From the matrix to what each firewall must do (its intent).

An opening's traffic goes from the zones of its sources to the zones of its
destinations. Zones are joined by firewalls (each interface faces one zone),
so the path between two zones is a walk zone -> firewall -> zone -> ...; the
opening is placed on every firewall of every shortest path, with the
interface the traffic enters by and the one it leaves by. Nobody types the
placement by hand.

With a NAT, the path runs first to the firewall that owns the public address
(firewalls before it see the public address as destination), and from there
to the zone of the NAT target (that firewall, after its DNAT, and those after
it see the target's address).
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, replace

from netaddr import IPAddress, IPNetwork, IPSet

from fwmatrix.errors import MatrixError
from fwmatrix.matrix.model import Firewall, Management, Matrix, Opening, PortRange, ServicePart, Where, quick_init
from fwmatrix.matrix.resolve import ANY4, ANY6, Endpoint, Resolver


@quick_init
@dataclass(frozen=True)
class Flow:
    """NEW connections a firewall must forward, from one interface to another."""

    opening: Opening
    in_iface: str
    out_iface: str
    family: int  # 4 or 6
    sources: tuple[IPNetwork, ...]
    destinations: tuple[IPNetwork, ...]
    parts: tuple[ServicePart, ...]
    # a port forward this firewall translates: only packets whose destination it
    # translated (`ct status dnat`) may pass, never the same sent to the target directly
    translated: bool = False


@dataclass(frozen=True)
class Dnat:
    """A destination NAT a firewall must perform on packets arriving on `in_iface`."""

    opening: Opening
    in_iface: str
    family: int
    sources: tuple[IPNetwork, ...]
    public: IPAddress
    parts: tuple[ServicePart, ...]
    target: IPAddress
    target_port: int | None


@dataclass(frozen=True)
class Snat:
    """A source NAT a firewall must perform on an opening's NEW connections leaving by
    `out_iface` (replies are translated back by connection tracking)."""

    opening: Opening
    out_iface: str
    family: int
    sources: tuple[IPNetwork, ...]
    destinations: tuple[IPNetwork, ...]
    parts: tuple[ServicePart, ...]
    address: IPAddress | None  # None: masquerade, the address of `out_iface`


@dataclass(frozen=True)
class Input:
    """NEW connections to the firewall itself it must accept, arriving on `in_iface`
    (its input chain): an opening to the firewall (`to: edge`, `to: edge.lan0`), or a
    management access. `destinations` are the firewall's addresses they use (0.0.0.0/0
    or ::/0: any of them)."""

    opening: Opening
    in_iface: str
    family: int
    sources: tuple[IPNetwork, ...]
    destinations: tuple[IPNetwork, ...]
    parts: tuple[ServicePart, ...]
    management: bool = False


@dataclass(frozen=True)
class FirewallIntent:
    firewall: Firewall
    flows: tuple[Flow, ...]
    dnats: tuple[Dnat, ...]
    snats: tuple[Snat, ...] = ()
    inputs: tuple[Input, ...] = ()

    @property
    def filters_input(self) -> bool:
        """An opening goes to the firewall itself: its input chain is compiled (policy drop),
        with the management accesses in it too."""
        return any(not i.management for i in self.inputs)

    @property
    def interface_pairs(self) -> list[tuple[str, str]]:
        return sorted({(f.in_iface, f.out_iface) for f in self.flows})


@dataclass(frozen=True)
class Warning_:
    message: str
    where: Where
    kind: str = "no-firewall"  # or "management-dropped": a firewall on a management access's way drops it


@dataclass(frozen=True)
class Intent:
    matrix: Matrix
    firewalls: dict[str, FirewallIntent]
    warnings: tuple[Warning_, ...]


Hop = tuple[str, tuple[str, ...], tuple[str, ...]]  # firewall, ifaces in, ifaces out


class _Topology:
    """Zones and firewalls as a graph; an edge is a firewall interface facing a zone."""

    def __init__(self, matrix: Matrix):
        self.matrix = matrix
        self.edges: dict[tuple[str, str], list[str]] = defaultdict(list)  # (node, node) -> interfaces
        self.neighbours: dict[str, set[str]] = defaultdict(set)
        for fw in matrix.firewalls.values():
            for iface, zone in fw.interfaces.items():
                z, f = ("zone", zone), ("fw", fw.name)
                self.edges[(z, f)].append(iface)  # type: ignore[index]
                self.edges[(f, z)].append(iface)  # type: ignore[index]
                self.neighbours[z].add(f)  # type: ignore[index,arg-type]
                self.neighbours[f].add(z)  # type: ignore[index,arg-type]
        # a dict, not lru_cache of a bound method: that would hold self in a reference
        # cycle, left for the cyclic collector to free at exit
        self._paths_of: dict[tuple[tuple[str, str], tuple[str, str]], list[list[tuple[str, str]]]] = {}
        self._hops_of: dict[tuple[str, str], list[list[Hop]]] = {}

    def paths(self, start: tuple[str, str], end: tuple[str, str]) -> list[list[tuple[str, str]]]:
        """Every shortest path from start to end, as node lists (sorted, so deterministic)."""
        hit = self._paths_of.get((start, end))
        if hit is None:
            hit = self._paths_of[(start, end)] = self._shortest_paths(start, end)
        return hit

    def _shortest_paths(self, start: tuple[str, str], end: tuple[str, str]) -> list[list[tuple[str, str]]]:
        if start == end:
            return [[start]]
        dist = {start: 0}
        parents: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if end in dist and dist[node] >= dist[end]:
                break
            for nxt in sorted(self.neighbours[node]):  # type: ignore[index]
                if nxt not in dist:
                    dist[nxt] = dist[node] + 1
                    queue.append(nxt)
                if dist[nxt] == dist[node] + 1:
                    parents[nxt].append(node)
        if end not in dist:
            return []
        # back from end to start along the parents; a stack, not a recursive closure
        # (which would refer to itself: a reference cycle per call)
        out: list[list[tuple[str, str]]] = []
        stack: list[tuple[tuple[str, str], list[tuple[str, str]]]] = [(end, [])]
        while stack:
            node, suffix = stack.pop()
            if node == start:
                out.append([start] + suffix)
                continue
            stack.extend((parent, [node] + suffix) for parent in parents[node])
        return sorted(out)

    def zone_hops(self, src_zone: str, dst_zone: str) -> list[list[Hop]]:
        """`hops` of each of `paths` from one zone to another: asked for on every opening."""
        hit = self._hops_of.get((src_zone, dst_zone))
        if hit is None:
            paths = self.paths(("zone", src_zone), ("zone", dst_zone))
            hit = self._hops_of[(src_zone, dst_zone)] = [self.hops(nodes) for nodes in paths]
        return hit

    def hops(self, nodes: list[tuple[str, str]]) -> list[Hop]:
        hops: list[Hop] = []
        for i in range(1, len(nodes) - 1):
            if nodes[i][0] == "fw":
                fw = nodes[i][1]
                hops.append((fw, tuple(self.edges[(nodes[i - 1], nodes[i])]), tuple(self.edges[(nodes[i], nodes[i + 1])])))
        return hops


_UNSPLIT = object()


class _Zoner:
    """Splits networks by the zone they belong to (the most specific zone wins)."""

    def __init__(self, matrix: Matrix):
        self.any_zone = next((z.name for z in matrix.zones.values() if z.is_any), None)
        nets = [(net, z.name) for z in matrix.zones.values() for net in z.networks]
        self.zone_nets = sorted(nets, key=lambda item: -item[0].prefixlen)
        self.zone_bounds = [(net.version, net.first, net.last, net.prefixlen, zone) for net, zone in self.zone_nets]
        self._by_value: dict[IPNetwork, tuple | None] = {}  # a dict, not lru_cache: no reference cycle
        self._by_id: dict[int, tuple[IPNetwork, tuple | None]] = {}  # id(net) -> (net, its split)

    def split(self, net: IPNetwork) -> tuple[tuple[str, tuple[IPNetwork, ...]], ...] | None:
        """`_split`, cached by the network object first (openings share their hosts' objects,
        and netaddr networks are slow to hash), then by value."""
        hit = self._by_id.get(id(net))
        if hit is None or hit[0] is not net:
            split = self._by_value.get(net, _UNSPLIT)
            if split is _UNSPLIT:
                split = self._by_value[net] = self._split(net)
            hit = self._by_id[id(net)] = (net, split)  # holding `net` keeps its id unique
        return hit[1]

    def _split(self, net: IPNetwork) -> tuple[tuple[str, tuple[IPNetwork, ...]], ...] | None:
        """[(zone, networks)], or None when part of `net` is in no zone."""
        version, first, last = net.version, net.first, net.last
        for z_version, z_first, z_last, z_length, zone in self.zone_bounds:  # most specific first
            # net inside this zone's network, and no more specific zone network inside net (in integers: netaddr's `in` is slow;
            # a single address, as most are, holds no other network)
            if z_version == version and z_first <= first and last <= z_last and (first == last or not any(
                o_version == version and first <= o_first and o_last <= last and o_length > z_length and (o_first, o_last) != (first, last)
                for o_version, o_first, o_last, o_length, _ in self.zone_bounds
            )):
                return ((zone, (net,)),)
        if not any(z_version == version and z_first <= last and first <= z_last for z_version, z_first, z_last, _, _ in self.zone_bounds):
            # in no zone's network at all (a host on the internet): what the cutting below leaves it
            return ((self.any_zone, (net,)),) if self.any_zone is not None else None
        # `net` straddles zones (or lies in none): cut it into pieces.
        remaining = IPSet([net])
        pieces: dict[str, list[IPNetwork]] = defaultdict(list)
        for zone_net, zone in self.zone_nets:
            if zone_net.version != net.version:
                continue
            piece = remaining & IPSet([zone_net])
            if piece:
                pieces[zone].extend(piece.iter_cidrs())
                remaining -= piece
        if remaining:
            if self.any_zone is None:
                return None
            pieces[self.any_zone].extend(remaining.iter_cidrs())
        return tuple((zone, tuple(nets)) for zone, nets in sorted(pieces.items()))

    def zones_of(self, endpoint: Endpoint, ref: str, where: Where) -> dict[str, list[IPNetwork]]:
        if endpoint.zone is not None:
            return {endpoint.zone: list(endpoint.networks)}
        out: dict[str, list[IPNetwork]] = defaultdict(list)
        for net in endpoint.networks:
            split = self.split(net)
            if split is None:
                raise MatrixError(f"'{ref}' ({net}) is in no zone: add its network to a zone, or declare a zone 'any'", where.file, where.line)
            for zone, nets in split:
                out[zone].extend(nets)
        return out


def build_intent(matrix: Matrix) -> Intent:
    resolver = Resolver(matrix)
    topology = _Topology(matrix)
    zoner = _Zoner(matrix)
    flows: dict[str, list[Flow]] = {name: [] for name in matrix.firewalls}
    dnats: dict[str, list[Dnat]] = {name: [] for name in matrix.firewalls}
    snats: dict[str, list[Snat]] = {name: [] for name in matrix.firewalls}
    inputs: dict[str, list[Input]] = {name: [] for name in matrix.firewalls}
    warnings: list[Warning_] = []
    zoned: dict[tuple[str, ...], dict[str, list[IPNetwork]]] = {}  # see _zoned
    names_firewall: dict[tuple[str, ...], bool] = {}  # destinations -> whether one is a firewall's name

    for opening in matrix.openings:
        parts = resolver.services(opening)
        src_zones = _zoned(resolver, zoner, opening, opening.sources, "from", zoned)
        # only a firewall's name (`edge`, `edge.lan0`) can mean the firewall itself: resolve no other
        to_firewall = names_firewall.get(opening.destinations)
        if to_firewall is None:
            to_firewall = names_firewall[opening.destinations] = any(ref.partition(".")[0] in matrix.firewalls for ref in opening.destinations)
        own = [resolver.endpoint(ref, opening.where_of("to")) for ref in opening.destinations] if to_firewall else []
        if own and own[0].firewall_of is not None:  # the firewall's own services
            _place_own(topology, opening, own, src_zones, parts, flows, inputs, warnings)
            continue
        if opening.nat is None:
            dst_zones = _zoned(resolver, zoner, opening, opening.destinations, "to", zoned)
            placed = False
            for src_zone, src_nets in src_zones.items():
                for dst_zone, dst_nets in dst_zones.items():
                    if src_zone == dst_zone:
                        continue
                    paths = topology.zone_hops(src_zone, dst_zone)
                    if not paths:
                        where = opening.where_of("to")
                        raise MatrixError(f"opening '{opening.name}': no firewall joins zone '{src_zone}' to zone '{dst_zone}'", where.file, where.line)
                    for hops in paths:
                        if opening.snat is None:
                            for fw, ins, outs in hops:
                                placed |= _add_flows(flows[fw], opening, ins, outs, src_nets, dst_nets, parts)
                            continue
                        placed |= _place_snat(resolver, opening, hops, src_nets, dst_nets, parts, flows, snats, (src_zone, dst_zone))
            if not placed:
                warnings.append(Warning_(f"opening '{opening.name}' crosses no firewall: its sources and destinations share a zone", opening.where))
            continue

        # DNAT: towards the firewall that owns the public address, then on to the target.
        targets = resolver.nat_target(opening)
        target_zone_of = {t.version: zoner.zones_of(Endpoint((IPNetwork(t),)), opening.nat.target, opening.nat.where) for t in targets}
        for ref in opening.destinations:
            public_endpoint = resolver.endpoint(ref, opening.where_of("to"))
            owner = public_endpoint.public_of
            assert owner is not None
            public = public_endpoint.networks[0].ip
            target = next((t for t in targets if t.version == public.version), None)
            if target is None:
                continue
            (target_zone,) = target_zone_of[target.version]
            for src_zone, src_nets in src_zones.items():
                family_src = [n for n in src_nets if n.version == public.version]
                if not family_src:
                    continue
                before = topology.paths(("zone", src_zone), ("fw", owner))
                after = topology.paths(("fw", owner), ("zone", target_zone))
                if not before or not after:
                    where = opening.where_of("to")
                    raise MatrixError(f"opening '{opening.name}': no path from zone '{src_zone}' through firewall '{owner}' to zone '{target_zone}'", where.file, where.line)
                for head in before:
                    for tail in after:
                        nodes = head + tail[1:]
                        for fw, ins, outs in topology.hops(nodes):
                            at_or_after_owner = nodes.index(("fw", fw)) >= len(head) - 1
                            dst = IPNetwork(target) if at_or_after_owner else IPNetwork(public)
                            service = parts if not (at_or_after_owner and opening.nat.port) else _retarget(parts, opening.nat.port)
                            _add_flows(flows[fw], opening, ins, outs, family_src, [dst], service, translated=fw == owner)
                            if fw == owner:
                                for iface in ins:
                                    dnats[fw].append(Dnat(opening, iface, public.version, tuple(family_src), public, parts, target, opening.nat.port))

    accesses = [(fw, access) for fw in matrix.firewalls.values() for access in fw.management]
    # management accesses: placed as openings to the firewall (row numbers below zero: they are no rows of the matrix)
    for number, (fw, access) in enumerate(accesses, start=1):
        opening = replace(access.as_opening(), index=-number, name=f"{fw.name}-management-{access.index}", destinations=access.destinations or (fw.name,))
        where = access.where_of("to")
        refs = access.destinations or (fw.name,)
        endpoints = [resolver.endpoint(ref, where) for ref in refs]
        endpoints = [replace(e, firewall_of=fw.name) for e in endpoints]
        sources = _zoned(resolver, zoner, opening, access.sources, "from", {})
        _place_own(topology, opening, endpoints, sources, resolver.services(opening), flows, inputs, warnings, management=True)
    for fw_dnats in dnats.values():
        _refuse_conflicting_dnats(fw_dnats)
    intents = {
        name: FirewallIntent(fw, tuple(flows[name]), tuple(_dedupe_dnats(dnats[name])), tuple(dict.fromkeys(snats[name])),
                             tuple(dict.fromkeys(inputs[name])))
        for name, fw in sorted(matrix.firewalls.items())
    }
    return Intent(matrix, intents, tuple(warnings))


def management_arrivals(matrix: Matrix, firewall: str, access: Management,
                        resolver: Resolver | None = None) -> list[tuple[tuple[str, ...], list[IPNetwork]]]:
    """Where a management access reaches `firewall` itself, placed as openings are: for each zone
    of its sources, the firewall's interfaces on the last hop of every shortest path from that
    zone to it, and the sources' networks in the zone. Refuses a zone with no path to it."""
    resolver = resolver if resolver is not None else Resolver(matrix)
    zoner, topology = _Zoner(matrix), _Topology(matrix)
    where = access.where_of("from")
    out: list[tuple[tuple[str, ...], list[IPNetwork]]] = []
    for ref in access.sources:
        for zone, nets in zoner.zones_of(resolver.endpoint(ref, where), ref, where).items():
            paths = topology.paths(("zone", zone), ("fw", firewall))
            if not paths:
                raise MatrixError(f"management access #{access.index} of firewall '{firewall}': zone '{zone}' (of '{ref}') has no path to the firewall",
                                  where.file, where.line)
            out.append((tuple(sorted({iface for nodes in paths for iface in topology.edges[(nodes[-2], nodes[-1])]})), nets))
    return out


def check_management(matrix: Matrix) -> None:
    """Every management access reaches its firewall (the loader calls this, so that a bad one
    is refused at load time, with its line)."""
    resolver = Resolver(matrix)
    for firewall in matrix.firewalls.values():
        for access in firewall.management:
            management_arrivals(matrix, firewall.name, access, resolver)


def _zoned(resolver: Resolver, zoner: _Zoner, opening: Opening, refs: tuple[str, ...], field: str,
           cache: dict[tuple[str, ...], dict[str, list[IPNetwork]]]) -> dict[str, list[IPNetwork]]:
    """The networks of these references by zone, the zones sorted; cached by the references, and a
    list of them made from each one's entry (openings repeat them, alone and in lists; a reference
    that fails raises at its first use, where the cache has nothing yet)."""
    found = cache.get(refs)
    if found is not None:
        return found
    out: dict[str, list[IPNetwork]]
    if len(refs) == 1:
        where = opening.where_of(field)
        out = zoner.zones_of(resolver.endpoint(refs[0], where), refs[0], where)
    else:
        out = defaultdict(list)
        for ref in refs:
            for zone, nets in _zoned(resolver, zoner, opening, (ref,), field, cache).items():
                out[zone].extend(nets)
    found = {zone: _Networks(nets) for zone, nets in sorted(out.items())}
    cache[refs] = found
    return found


def _add_flows(into: list[Flow], opening: Opening, ins: tuple[str, ...], outs: tuple[str, ...],
               src_nets: list[IPNetwork], dst_nets: list[IPNetwork], parts: tuple[ServicePart, ...], translated: bool = False) -> bool:
    added = False
    src_by_family, dst_by_family = _by_family(src_nets), _by_family(dst_nets)
    for family in (4, 6):
        src, dst = src_by_family[family == 6], dst_by_family[family == 6]
        if not src or not dst:
            continue
        for in_iface in ins:
            for out_iface in outs:
                if in_iface != out_iface:
                    into.append(Flow(opening, in_iface, out_iface, family, src, dst, parts, translated))
                    added = True
    return added


class _Networks(list):
    """The networks of a list of references in one zone (what `_zoned` gives), with the same split
    by address family once (`_by_family`): the openings that name the references place them by
    family, and netaddr's version is slow to ask 150,000 times."""

    __slots__ = ("by_family",)

    def __init__(self, nets: list[IPNetwork]):
        super().__init__(nets)
        self.by_family = _split_families(nets)


def _by_family(nets: list[IPNetwork]) -> tuple[tuple[IPNetwork, ...], tuple[IPNetwork, ...]]:
    """(the IPv4 networks, the IPv6 networks), in their order."""
    return nets.by_family if nets.__class__ is _Networks else _split_families(nets)  # type: ignore[attr-defined]


def _split_families(nets: list[IPNetwork]) -> tuple[tuple[IPNetwork, ...], tuple[IPNetwork, ...]]:
    v4: list[IPNetwork] = []
    v6: list[IPNetwork] = []
    for net in nets:
        (v4 if net.version == 4 else v6).append(net)
    return tuple(v4), tuple(v6)


def _place_snat(resolver: Resolver, opening: Opening, hops: list[Hop], src_nets: list[IPNetwork], dst_nets: list[IPNetwork],
                parts: tuple[ServicePart, ...], flows: dict[str, list[Flow]], snats: dict[str, list[Snat]], zones: tuple[str, str]) -> bool:
    """An opening with `snat` along one path: the flows on every firewall, the translation on the
    firewall that owns the address (masquerade: the last firewall), and the firewalls after it see
    the translated source (in the address's family; the other family passes untranslated)."""
    assert opening.snat is not None
    found = resolver.snat_source(opening)
    if found is None:
        at, address = len(hops) - 1, None
    else:
        owner, address = found
        at = next((i for i, (fw, _, _) in enumerate(hops) if fw == owner), -1)
        if at < 0:
            where = opening.snat.where
            raise MatrixError(f"opening '{opening.name}': 'snat: {opening.snat.target}' belongs to firewall '{owner}', which the "
                              f"path from zone '{zones[0]}' to zone '{zones[1]}' does not cross", where.file, where.line)
    placed = False
    for i, (fw, ins, outs) in enumerate(hops):
        sources = src_nets
        if i > at and address is not None:
            sources = [n for n in src_nets if n.version != address.version] + [IPNetwork(address)]
        placed |= _add_flows(flows[fw], opening, ins, outs, sources, dst_nets, parts)
        if i != at:
            continue
        for family in (4, 6):
            if address is not None and address.version != family:
                continue
            src = tuple(n for n in src_nets if n.version == family)
            dst = tuple(n for n in dst_nets if n.version == family)
            if src and dst:
                snats[fw].extend(Snat(opening, out_iface, family, src, dst, parts, address) for out_iface in outs)
    return placed


def _place_own(topology: _Topology, opening: Opening, endpoints: list[Endpoint], src_zones: dict[str, list[IPNetwork]],
               parts: tuple[ServicePart, ...], flows: dict[str, list[Flow]], inputs: dict[str, list[Input]],
               warnings: list[Warning_], management: bool = False) -> None:
    """An opening to a firewall itself (or a management access), placed as openings are: the
    firewalls on the way forward it to the firewall's addresses, and the firewall accepts it on
    the interfaces of the last hop (its input chain). A management access that a firewall on
    its way cannot forward (no address of its firewall is known) is a warning: that firewall
    drops it, and the administrators are locked out."""
    firewall = endpoints[0].firewall_of
    assert firewall is not None
    anywhere = any(e.any_address for e in endpoints)
    addresses = [n for e in endpoints for n in e.networks if n.prefixlen not in (0,)]
    where = opening.where_of("to")
    for src_zone, src_nets in src_zones.items():
        paths = topology.paths(("zone", src_zone), ("fw", firewall))
        if not paths:
            raise MatrixError(f"opening '{opening.name}': zone '{src_zone}' has no path to firewall '{firewall}'", where.file, where.line)
        for nodes in paths:
            for fw, ins, outs in topology.hops(nodes):
                if not addresses and management:
                    warnings.append(Warning_(f"{opening.name.replace('-management-', ' management access #')} crosses firewall '{fw}', "
                                             f"which drops it: no address of '{firewall}' is known to open it to (give its interfaces "
                                             "their addresses, {zone: ..., address: ...}, or write the access's 'to')", opening.where,
                                             "management-dropped"))
                    continue
                if not addresses:
                    raise MatrixError(f"opening '{opening.name}' crosses firewall '{fw}' on its way to firewall '{firewall}', which "
                                      f"needs '{firewall}''s addresses: give its interfaces theirs ({{zone: ..., address: ...}}), or name one",
                                      where.file, where.line)
                _add_flows(flows[fw], opening, ins, outs, src_nets, addresses, parts)
            for iface in topology.edges[(nodes[-2], nodes[-1])]:
                for family, any_net in ((4, ANY4), (6, ANY6)):
                    src = tuple(n for n in src_nets if n.version == family)
                    dst = (any_net,) if anywhere else tuple(n for n in addresses if n.version == family)
                    if src and dst:
                        inputs[firewall].append(Input(opening, iface, family, src, dst, parts, management))


def _retarget(parts: tuple[ServicePart, ...], port: int) -> tuple[ServicePart, ...]:
    return tuple(sorted({ServicePart(p.protocol, PortRange(port, port)) for p in parts}))


def _dedupe_dnats(dnats: list[Dnat]) -> list[Dnat]:
    return list(dict.fromkeys(dnats))


def _refuse_conflicting_dnats(dnats: list[Dnat]) -> None:
    """Two port forwards for the same packets must not lead to different places."""
    by_entry: dict[tuple[str, int, IPAddress, str], list[tuple[PortRange, Dnat]]] = defaultdict(list)
    for dnat in dnats:
        for part in dnat.parts:
            by_entry[(dnat.in_iface, dnat.family, dnat.public, part.protocol)].append((part.ports or PortRange(0, 0), dnat))
    for (_, _, public, protocol), items in by_entry.items():
        items.sort(key=lambda item: (item[0].low, item[1].opening.index))
        active: list[tuple[PortRange, Dnat]] = []
        for ports, dnat in items:
            active = [(p, d) for p, d in active if p.high >= ports.low]
            for other_ports, other in active:
                same_place = (other.target, other.target_port) == (dnat.target, dnat.target_port)
                if not same_place and _overlap(other.sources, dnat.sources):
                    later, earlier = (dnat, other) if dnat.opening.index > other.opening.index else (other, dnat)
                    assert later.opening.nat is not None
                    where = later.opening.nat.where
                    raise MatrixError(
                        f"opening '{later.opening.name}' forwards {protocol} port(s) {ports} of {public} to {later.target}, "
                        f"but opening '{earlier.opening.name}' (line {earlier.opening.where.line}) already forwards "
                        f"{protocol}/{other_ports} of it to {earlier.target}",
                        where.file,
                        where.line,
                    )
            active.append((ports, dnat))


def _overlap(a: tuple[IPNetwork, ...], b: tuple[IPNetwork, ...]) -> bool:
    return any(x.version == y.version and (x in y or y in x) for x in a for y in b)
