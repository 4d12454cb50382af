"""A packet against the matrix: the firewalls on its way (the placement the compiler
uses: zone → firewall → zone, through the owner of a public address to its NAT
target), on each the openings that let it through and the port forward it meets,
and for a packet the matrix does not allow, the openings nearest to it."""

from __future__ import annotations

from dataclasses import dataclass, field

from netaddr import IPAddress, IPNetwork

from fwmatrix.audit.evaluate.addrtype import UNKNOWN, OwnAddresses
from fwmatrix.audit.local import LOCAL
from fwmatrix.compile.intent import Dnat, Flow, Input, Intent, _Topology, _Zoner
from fwmatrix.errors import FwmatrixError
from fwmatrix.matrix.model import Opening, PortRange, ServicePart
from fwmatrix.query.packet import Packet, endpoint_text, pieces
from fwmatrix.space import Intervals, iv_and, iv_norm, iv_sub

ALLOWED, DENIED, PARTLY, MAYBE = "allowed", "denied", "partly", "uncertain"
NEIGHBOURS = 5  # nearest openings shown of each kind


@dataclass(frozen=True)
class Nat:
    target: IPAddress
    port: int | None
    opening: Opening

    def __str__(self) -> str:
        return f"→ {endpoint_text(self.target, self.port)}"


@dataclass
class Hop:
    """One firewall on the way, between two of its interfaces."""

    firewall: str
    in_iface: str
    out_iface: str
    dst: IPAddress  # the destination as this firewall's forward path sees it
    part: ServicePart  # the service as it sees it (a port forward may change the port)
    nat: Nat | None = None  # the port forward this firewall performs
    src: IPAddress | None = None  # the source as this firewall sees it (after an earlier firewall's source NAT)
    snat: str = ""  # the source NAT this firewall performs: an address, or "masquerade (IFACE)"
    openings: list[tuple[Opening, str]] = field(default_factory=list)  # opening, the part of the service it opens
    covered: Intervals = ()  # the queried ports this hop lets through (in the packet's own ports)

    def to_json(self) -> dict:
        return {"firewall": self.firewall, "in": self.in_iface, "out": self.out_iface, "destination": str(self.dst),
                "service": str(self.part), "source": str(self.src), "snat": self.snat or None, "nat": None if self.nat is None else {
                    "target": str(self.nat.target), "port": self.nat.port, "opening": self.nat.opening.to_json()},
                "openings": [dict(o.to_json(), service=text) for o, text in self.openings]}


@dataclass(frozen=True)
class Neighbour:
    """An opening that would let a neighbour of the packet through."""

    kind: str  # "other port" or "other host"
    opening: Opening
    what: str  # what it opens, in words

    def to_json(self) -> dict:
        return {"kind": self.kind, "opening": self.opening.to_json(), "opens": self.what}


@dataclass
class MatrixAnswer:
    packet: Packet
    verdict: str
    hops: list[Hop]
    reason: str = ""  # why, when there is no hop to tell it
    neighbours: list[Neighbour] = field(default_factory=list)
    uncovered: Intervals = ()  # ports the matrix does not allow (a partly allowed range)

    def to_json(self) -> dict:
        return {"packet": self.packet.to_json(), "verdict": self.verdict, "reason": self.reason,
                "path": [h.to_json() for h in self.hops], "nearest": [n.to_json() for n in self.neighbours]}


def _ports(part: ServicePart) -> Intervals:
    return ((0, 0),) if part.ports is None else ((part.ports.low, part.ports.high),)


def _same_protocol(a: ServicePart, b: ServicePart, family: int) -> bool:
    return a.protocol_for_family(family) == b.protocol_for_family(family)


def _contains(nets: tuple[IPNetwork, ...], address: IPAddress) -> bool:
    return any(net.version == address.version and address in net for net in nets)


class MatrixQuery:
    """Answers packets against one matrix's intent."""

    def __init__(self, intent: Intent):
        self.intent = intent
        self.matrix = intent.matrix
        self.topology = _Topology(self.matrix)
        self.zoner = _Zoner(self.matrix)

    def zone_of(self, address: IPAddress, option: str) -> str:
        split = self.zoner.split(IPNetwork(address))
        if split is None:
            raise FwmatrixError(f"{option} {address} is in no zone of the matrix (and it has no zone 'any')")
        return split[0][0]

    def owner_of(self, address: IPAddress) -> str | None:
        """The firewall whose address this is (a public one, or one of its interfaces')."""
        return next((fw.name for fw in self.matrix.firewalls.values() if address in fw.own_addresses()), None)

    def answers(self, packet: Packet) -> list[MatrixAnswer]:
        """The packet's answers: one, or, to a firewall's address, one per sub-range of its
        ports that one port forward (or none: the firewall itself) takes."""
        owner = self.owner_of(packet.dst)
        if owner is None or packet.part.ports is None:
            return [self.answer(packet)]
        arrivals = self._arrivals(packet, owner)
        takers = [(d, tuple(x for p in d.parts if _same_protocol(p, packet.part, packet.family) for x in _ports(p)))
                  for d in self._forwards(packet, owner, arrivals)]
        return [self.answer(piece) for piece in pieces(packet, takers)]

    def _arrivals(self, packet: Packet, owner: str) -> list[str]:
        before = self.topology.paths(("zone", self.zone_of(packet.src, "--from")), ("fw", owner))
        return list(self.topology.edges[(before[0][-2], before[0][-1])]) if before else []

    def answer(self, packet: Packet) -> MatrixAnswer:
        src_zone = self.zone_of(packet.src, "--from")
        owner = self.owner_of(packet.dst)
        if owner is not None:
            return self._to_public(packet, src_zone, owner)
        dst_zone = self.zone_of(packet.dst, "--to")
        if src_zone == dst_zone:
            return MatrixAnswer(packet, ALLOWED, [], f"source and destination are both in zone '{src_zone}': no firewall sees it")
        paths = self.topology.paths(("zone", src_zone), ("zone", dst_zone))
        if not paths:
            return MatrixAnswer(packet, DENIED, [], f"no firewall joins zone '{src_zone}' to zone '{dst_zone}'")
        hops = [Hop(fw, i, o, packet.dst, packet.part) for fw, ins, outs in self.topology.hops(paths[0]) for i in ins for o in outs if i != o]
        return self._judged(packet, hops)

    def _to_public(self, packet: Packet, src_zone: str, owner: str) -> MatrixAnswer:
        before = self.topology.paths(("zone", src_zone), ("fw", owner))
        if not before:
            return MatrixAnswer(packet, DENIED, [], f"no path from zone '{src_zone}' to firewall '{owner}'")
        arrivals = [iface for iface in self.topology.edges[(before[0][-2], before[0][-1])]]
        dnat = self._port_forward(packet, owner, arrivals)
        head = [Hop(fw, i, o, packet.dst, packet.part) for fw, ins, outs in self.topology.hops(before[0]) for i in ins for o in outs if i != o]
        if dnat is None:
            return self._to_firewall(packet, owner, [h for h in head if h.firewall != owner] + [Hop(owner, arrivals[0], LOCAL, packet.dst, packet.part)])
        target_zone = self.zone_of(dnat.target, "the NAT target")
        after = self.topology.paths(("fw", owner), ("zone", target_zone))
        part = packet.part if dnat.target_port is None else ServicePart(packet.part.protocol, PortRange(dnat.target_port, dnat.target_port))
        tail = [Hop(fw, i, o, dnat.target, part) for fw, ins, outs in self.topology.hops([("zone", src_zone)] + after[0]) for i in ins for o in outs if i != o]
        if tail and tail[0].firewall == owner:  # the owner: arrives as on the way in, leaves towards the target
            tail[0].in_iface = dnat.in_iface
            tail[0].nat = Nat(dnat.target, dnat.target_port, dnat.opening)
        answer = self._judged(packet, [h for h in head if h.firewall != owner] + tail, dnat=dnat)
        return answer

    def _to_firewall(self, packet: Packet, owner: str, hops: list[Hop]) -> MatrixAnswer:
        """A packet no port forward takes, to the firewall itself: the last hop is its input
        (its own services and management accesses). A firewall without own services gets no
        input chain from the matrix (its input stays as it was): there, what no management
        access names is uncertain."""
        answer = self._judged(packet, hops)
        filters = self.intent.firewalls[owner].filters_input
        local = hops[-1]
        answer.reason = f"{packet.dst} is firewall '{owner}' itself: no port forward takes it, its input judges it"
        wanted = _ports(packet.part)
        if not filters and local.covered != wanted and all(h.covered == wanted for h in hops[:-1]):
            answer.verdict = MAYBE
            answer.reason += (f"; '{owner}' has no opening to itself, so the matrix gives it no input chain "
                              "(its input stays as it was): only its management accesses are the matrix's")
        if answer.verdict != ALLOWED and any(d.public == packet.dst for d in self.intent.firewalls[owner].dnats):
            answer.neighbours = self._forward_neighbours(packet, owner) + answer.neighbours
        return answer

    def _port_forward(self, packet: Packet, owner: str, arrivals: list[str]) -> Dnat | None:
        """The first port forward (in the matrix's order) that takes some of the packet's ports."""
        return next(iter(self._forwards(packet, owner, arrivals)), None)

    def _forwards(self, packet: Packet, owner: str, arrivals: list[str]) -> list[Dnat]:
        """The port forwards that take some of the packet's ports, in the matrix's order."""
        fits = [d for d in self.intent.firewalls[owner].dnats
                if d.in_iface in arrivals and d.public == packet.dst and d.family == packet.family and _contains(d.sources, packet.src)
                and any(_same_protocol(p, packet.part, packet.family) and iv_and(_ports(p), _ports(packet.part)) for p in d.parts)]
        return sorted(fits, key=lambda d: d.opening.index)

    def _judged(self, packet: Packet, hops: list[Hop], dnat: Dnat | None = None, final: bool = True) -> MatrixAnswer:
        wanted = _ports(packet.part)
        covered = wanted
        if dnat is not None:  # only the ports the port forward takes
            covered = iv_and(covered, iv_norm(x for p in dnat.parts if _same_protocol(p, packet.part, packet.family) for x in _ports(p)))
        src = packet.src
        for hop in hops:
            hop.src = src
            hop.covered = self._cover(packet, hop)
            covered = iv_and(covered, hop.covered)
            src = self._source_nat(packet, hop) or src
        verdict = ALLOWED if covered == wanted else DENIED if not covered else PARTLY
        answer = MatrixAnswer(packet, verdict, hops, uncovered=iv_sub(wanted, covered))
        if verdict != ALLOWED and final:
            blocking = next((h for h in hops if h.covered != wanted), None)
            if blocking is not None:
                answer.neighbours = self._neighbours(packet, blocking)
        return answer

    def _flows(self, hop: Hop, packet: Packet) -> list[Flow] | list[Input]:
        if hop.out_iface == LOCAL:  # the firewall's input: its own services and management accesses
            return [i for i in self.intent.firewalls[hop.firewall].inputs if i.in_iface == hop.in_iface and i.family == packet.family]
        translated = hop.nat is not None
        return [f for f in self.intent.firewalls[hop.firewall].flows
                if (f.in_iface, f.out_iface) == (hop.in_iface, hop.out_iface) and f.family == packet.family and f.translated == translated]

    def _cover(self, packet: Packet, hop: Hop) -> Intervals:
        """The queried ports the hop's openings let through; notes the openings on the hop."""
        shift = 0 if hop.part == packet.part or hop.part.ports is None or packet.part.ports is None else hop.part.ports.low - packet.part.ports.low
        covered: Intervals = ()
        for flow in self._flows(hop, packet):
            if not (_contains(flow.sources, hop.src) and _contains(flow.destinations, hop.dst)):
                continue
            for p in flow.parts:
                if not _same_protocol(p, hop.part, packet.family):
                    continue
                common = iv_and(_ports(p), _ports(hop.part))
                if common:
                    covered = iv_norm(covered + tuple((lo - shift, hi - shift) for lo, hi in common))
                    text = str(ServicePart(hop.part.protocol, None if hop.part.ports is None else PortRange(*common[0])))
                    if (flow.opening, text) not in hop.openings:
                        hop.openings.append((flow.opening, text))
        if shift:  # a port forward to one port: the whole queried range is that port
            covered = _ports(packet.part) if covered else ()
        if hop.out_iface == LOCAL and hop.part.protocol == "icmpv6" and self.intent.firewalls[hop.firewall].filters_input:
            covered = _ports(packet.part)  # the compiled input chain accepts all ICMPv6 (docs/matrix-format.md)
        return covered

    def _source_nat(self, packet: Packet, hop: Hop) -> IPAddress | None:
        """The source NAT the hop's firewall performs on the packet (noted on the hop), and the
        source the next firewalls see (None: unchanged, or masquerade to an address the matrix
        does not know)."""
        for snat in self.intent.firewalls[hop.firewall].snats:
            if (snat.out_iface == hop.out_iface and snat.family == packet.family and _contains(snat.sources, hop.src)
                    and _contains(snat.destinations, hop.dst)
                    and any(_same_protocol(p, hop.part, packet.family) and iv_and(_ports(p), _ports(hop.part)) for p in snat.parts)):
                hop.snat = str(snat.address) if snat.address is not None else f"masquerade (the address of {hop.out_iface})"
                return snat.address
        return None

    def _neighbours(self, packet: Packet, hop: Hop) -> list[Neighbour]:
        """Openings on the hop that stops the packet, nearest first: from the same source to the
        same destination on other ports, then for the same service from or to other hosts."""
        ports: list[tuple[int, Neighbour]] = []
        hosts: list[tuple[int, Neighbour]] = []
        for flow in self._flows(hop, packet):
            src_in, dst_in = _contains(flow.sources, hop.src), _contains(flow.destinations, hop.dst)
            for p in flow.parts:
                if src_in and dst_in:
                    if p.ports is None or hop.part.ports is None or not _same_protocol(p, hop.part, packet.family):
                        distance = 1 << 17
                    else:
                        distance = max(p.ports.low - hop.part.ports.high, hop.part.ports.low - p.ports.high, 0)
                    ports.append((distance, Neighbour("other port", flow.opening, f"{str(p)} from {hop.src} to {hop.dst}")))
                elif (src_in or dst_in) and _same_protocol(p, hop.part, packet.family) and iv_and(_ports(p), _ports(hop.part)):
                    other = flow.destinations if src_in else flow.sources
                    mine = int(hop.dst if src_in else hop.src)
                    distance = min(abs(int(n.first) - mine) for n in other)
                    where = f"to {', '.join(map(str, other))}" if src_in else f"from {', '.join(map(str, other))}"
                    hosts.append((distance, Neighbour("other host", flow.opening, f"{p} {where}")))
        return _nearest(ports) + _nearest(hosts)

    def _forward_neighbours(self, packet: Packet, owner: str) -> list[Neighbour]:
        """The port forwards of the same public address for this source, on other ports."""
        found = [(0 if p.ports is None or packet.part.ports is None else abs(p.ports.low - packet.part.ports.low),
                  Neighbour("other port", d.opening, f"{p} of {d.public} {Nat(d.target, d.target_port, d.opening)}"))
                 for d in self.intent.firewalls[owner].dnats if d.public == packet.dst and _contains(d.sources, packet.src) for p in d.parts]
        return _nearest(found)


def _nearest(candidates: list[tuple[int, Neighbour]]) -> list[Neighbour]:
    out: list[Neighbour] = []
    for _, neighbour in sorted(candidates, key=lambda c: (c[0], c[1].opening.index, c[1].what)):
        if neighbour not in out:
            out.append(neighbour)
    return out[:NEIGHBOURS]


class Placement:
    """Where a packet crosses one firewall, for a query against that firewall's ruleset: the
    interface it arrives on, the one it leaves by (towards its destination, or towards the
    target of the matrix's port forward), and whether it is addressed to the firewall itself
    (a public address of the matrix, or one given with --local-address: `own`)."""

    def __init__(self, query: MatrixQuery, firewall: str, own: OwnAddresses = UNKNOWN):
        self.query = query
        self.firewall = firewall
        self.own = own

    def of(self, packet: Packet) -> tuple[str, str, bool]:
        q = self.query
        src_zone = q.zone_of(packet.src, "--from")
        owner = q.owner_of(packet.dst)
        if owner is None and _contains(self.own.networks, packet.dst):
            owner = self.firewall
        towards = ("fw", owner) if owner is not None else ("zone", q.zone_of(packet.dst, "--to"))
        paths = q.topology.paths(("zone", src_zone), towards)
        if owner == self.firewall:
            if not paths:
                raise FwmatrixError(f"no path from zone '{src_zone}' to firewall '{owner}'")
            iif = q.topology.edges[(paths[0][-2], paths[0][-1])][0]
            dnat = q._port_forward(packet, owner, [iif])
            return iif, self.route(dnat.target) if dnat is not None else "lo", True
        for fw, ins, outs in (q.topology.hops(paths[0]) if paths else []):
            if fw == self.firewall:
                return ins[0], outs[0], False
        where = " → ".join(name for _, name in paths[0]) if paths else "no path"
        raise FwmatrixError(f"{packet} does not cross firewall '{self.firewall}' (its way: {where})")

    def route(self, address: IPAddress) -> str:
        """The firewall's interface towards an address (by the matrix's zones)."""
        q = self.query
        paths = q.topology.paths(("fw", self.firewall), ("zone", q.zone_of(address, "the translated destination")))
        if not paths:
            return "lo"  # nowhere the matrix knows: judged as leaving by no interface of it
        return q.topology.edges[(paths[0][0], paths[0][1])][0]
