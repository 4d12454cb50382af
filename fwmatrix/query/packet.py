"""The packets a query asks about: `--from`, `--to` and `--service` read as the
matrix reads them (names or addresses, services by name or literal), then
crossed into packets of one address family each."""

from __future__ import annotations

from dataclasses import dataclass, replace

from netaddr import AddrFormatError, IPAddress

from fwmatrix.errors import FwmatrixError, MatrixError
from fwmatrix.matrix.model import Matrix, Opening, PortRange, ServicePart, Where
from fwmatrix.matrix.resolve import Resolver


@dataclass(frozen=True)
class Packet:
    """The first packet of a NEW connection, or of every one in a port range."""

    src: IPAddress
    dst: IPAddress
    part: ServicePart  # protocol for this family (icmp or icmpv6), and ports

    @property
    def family(self) -> int:
        return self.src.version

    def __str__(self) -> str:
        return f"{self.src} → {self.dst} {self.part}"

    def to_json(self) -> dict:
        ports = self.part.ports
        return {"source": str(self.src), "destination": str(self.dst), "protocol": self.part.protocol,
                "ports": None if ports is None else [ports.low, ports.high]}


def pieces(packet: Packet, takers: list[tuple[object, tuple[tuple[int, int], ...]]]) -> list[Packet]:
    """The packet's port range cut where the first of `takers` (in order) that takes a port
    changes: each piece is taken whole by one taker, or by none (a range crossing several port
    forwards is answered per sub-range, each with its own NAT and verdict)."""
    ports = packet.part.ports
    if ports is None:
        return [packet]
    cuts = {ports.low, ports.high + 1}
    for _, intervals in takers:
        cuts.update(x for lo, hi in intervals for x in (lo, hi + 1) if ports.low < x <= ports.high)

    def taker(port: int) -> int | None:
        return next((n for n, (_, intervals) in enumerate(takers) if any(lo <= port <= hi for lo, hi in intervals)), None)

    out: list[tuple[int, int, int | None]] = []
    edges = sorted(cuts)
    for lo, nxt in zip(edges, edges[1:]):
        who = taker(lo)
        if out and out[-1][2] == who:
            out[-1] = (out[-1][0], nxt - 1, who)
        else:
            out.append((lo, nxt - 1, who))
    return [replace(packet, part=ServicePart(packet.part.protocol, PortRange(lo, hi))) for lo, hi, _ in out]


def endpoint_text(address: IPAddress, port: object) -> str:
    """`172.16.10.10:443`, `[2001:db8::1]:443`, `172.16.10.22:10000-30000`."""
    if port is None:
        return str(address)
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def addresses(matrix: Matrix, ref: str, option: str, resolver: Resolver | None = None) -> tuple[IPAddress, ...]:
    """The single addresses a reference stands for: an address, or a host, a named host
    address, a role, a group of hosts or a firewall's public address. A network or a zone
    is refused: a query is about packets, from one address to one address."""
    try:
        return (IPAddress(ref),)
    except (AddrFormatError, ValueError, TypeError):
        pass
    resolver = resolver or Resolver(matrix)
    try:
        endpoint = resolver.endpoint(ref, Where(option, 0))
    except MatrixError as exc:
        raise FwmatrixError(f"{option} {ref}: {exc.message}") from None
    wide = [net for net in endpoint.networks if net.size > 1]
    if endpoint.zone is not None or wide:
        what = f"zone '{endpoint.zone}'" if endpoint.zone is not None else f"the network {wide[0]}"
        raise FwmatrixError(f"{option} {ref}: {what} is more than one address: give one address in it (a query is about packets)")
    return tuple(net.ip for net in endpoint.networks)


def service_parts(matrix: Matrix, service: str, resolver: Resolver | None = None) -> tuple[ServicePart, ...]:
    """A service name or literals (`sip`, `tcp/443`, `udp/10000-30000`, comma-separated)."""
    refs = tuple(s.strip() for s in service.split(",") if s.strip())
    if not refs:
        raise FwmatrixError("--service: give a service name or a literal such as tcp/443")
    asking = Opening(0, "query", (), (), refs, None, "", Where("--service", 0))
    try:
        return (resolver or Resolver(matrix)).services(asking)
    except MatrixError as exc:
        raise FwmatrixError(f"--service {service}: {exc.message}") from None


def packets(matrix: Matrix, source: str, destination: str, service: str) -> list[Packet]:
    """Every packet the question names: each source address to each destination address of
    its family, for each part of the service."""
    resolver = Resolver(matrix)
    sources = addresses(matrix, source, "--from", resolver)
    destinations = addresses(matrix, destination, "--to", resolver)
    parts = service_parts(matrix, service, resolver)
    found = [Packet(s, d, ServicePart(p.protocol_for_family(s.version), p.ports))
             for s in sources for d in destinations if s.version == d.version for p in parts]
    if not found:
        raise FwmatrixError(f"--from {source} ({', '.join(map(str, sources))}) and --to {destination} "
                            f"({', '.join(map(str, destinations))}) share no address family")
    return list(dict.fromkeys(found))
