"""Resolving the names an opening uses into addresses and services.

A reference is one of:
  - a zone (`internet`, `lan`): the zone's networks (`any` for the internet);
  - a host with one address list (`nginx`), or one named address of a host
    (`sipproxy.ext`); a role (`rtpproxy`) stands for the host that plays it;
  - a group: the union of its members, which are references themselves;
  - a public address of a firewall (`edge.public`);
  - a firewall itself (`edge`: any of its addresses), or its address on an
    interface (`edge.lan0`, where the interface declares it);
  - a literal address or CIDR network (`198.51.100.0/24`, `2001:db8::1`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from netaddr import AddrFormatError, IPAddress, IPNetwork

from fwmatrix.errors import MatrixError, did_you_mean
from fwmatrix.matrix.model import (
    Management,
    Matrix,
    Opening,
    ServicePart,
    Where,
    parse_network,
    parse_service_literal,
    quick_init,
)

ANY4 = IPNetwork("0.0.0.0/0")
ANY6 = IPNetwork("::/0")

_FAMILY_SETS: dict[frozenset[int], frozenset[int]] = {}  # see Endpoint.families


@quick_init
@dataclass(frozen=True)
class Endpoint:
    """What a reference stands for: networks, and whether it is a firewall's public address."""

    networks: tuple[IPNetwork, ...]
    public_of: str | None = None  # firewall name, when the reference is `fw.public-name`
    zone: str | None = None  # the zone, when the reference is a zone (its traffic is judged by interface)
    # the firewall, when the reference is the firewall itself (`edge`, or `edge.lan0` for its address on lan0)
    firewall_of: str | None = None
    any_address: bool = False  # `edge`: any address of the firewall (its networks: those the matrix declares)

    @cached_property
    def families(self) -> frozenset[int]:
        """The address families (4, 6) of its networks: asked for every reference of every row.
        One of four sets, shared: a frozenset weighs 216 bytes, and the matrix keeps every endpoint."""
        found = frozenset(net.version for net in self.networks)
        return _FAMILY_SETS.setdefault(found, found)


def _families(endpoints: list[Endpoint]) -> frozenset[int]:
    return frozenset().union(*(e.families for e in endpoints))


_NO_FIREWALL: frozenset[str | None] = frozenset({None})  # _References.firewalls of a list that names no firewall itself


class _References(NamedTuple):
    """A row's list of references (its `from` or its `to`) resolved, with what check_opening asks
    of it: the same lists come back on many rows (a tuple: 7,986 of them at 10k openings)."""

    endpoints: list[Endpoint]
    families: frozenset[int]
    firewall: tuple[str, Endpoint] | None  # the first reference to a firewall itself
    firewalls: frozenset[str | None]  # of each reference: the firewall it is, or None
    public: tuple[str, Endpoint] | None  # the first reference to a firewall's public address
    private: str | None  # the first reference to no public address

    @classmethod
    def of(cls, refs: tuple[str, ...], endpoints: list[Endpoint]) -> _References:
        families: frozenset[int] = frozenset()
        firewalls: set[str | None] = set()
        firewall = public = private = None
        for ref, endpoint in zip(refs, endpoints):
            families |= endpoint.families
            firewalls.add(endpoint.firewall_of)
            if firewall is None and endpoint.firewall_of is not None:
                firewall = (ref, endpoint)
            if endpoint.public_of is None:
                if private is None:
                    private = ref
            elif public is None:
                public = (ref, endpoint)
        return cls(endpoints, families, firewall, frozenset(firewalls), public, private)


def _common_family(what: str, src_families: frozenset[int], dst_families: frozenset[int] | None, row: Opening | Management) -> None:
    """Sources and destinations (None: any address) must share an address family (else an error
    at the row's 'to')."""
    if dst_families is None:
        dst_families = frozenset({4, 6})
    if not src_families & dst_families:
        where = row.where_of("to")
        raise MatrixError(
            f"{what} goes from IPv{'/'.join(map(str, sorted(src_families)))} sources "
            f"to IPv{'/'.join(map(str, sorted(dst_families)))} destinations: no address family in common",
            where.file,
            where.line,
        )


class Resolver:
    def __init__(self, matrix: Matrix):
        self.matrix = matrix
        # memos in plain dicts: an lru_cache of a bound method would hold the resolver in a
        # reference cycle, left for the cyclic collector with every endpoint made. They are the
        # matrix's, shared by every resolver of it (what they hold refers to no resolver)
        memos = matrix.resolved
        if not memos:
            memos.update(endpoints={}, services={}, service_lists={})
        self._endpoints: dict[str, Endpoint] = memos["endpoints"]
        self._services: dict[str, tuple[ServicePart, ...]] = memos["services"]
        self._service_lists: dict[tuple[str, ...], tuple[ServicePart, ...]] = memos["service_lists"]
        # this resolver's alone: only check_all asks for them
        self._reference_lists: dict[tuple[str, ...], _References] = {}

    def _endpoint(self, ref: str) -> Endpoint:
        found = self._endpoints.get(ref)
        if found is None:
            found = self._endpoints[ref] = self._endpoint_uncached(ref)
        return found

    def _service(self, ref: str) -> tuple[ServicePart, ...]:
        found = self._services.get(ref)
        if found is None:
            found = self._services[ref] = self._service_uncached(ref)
        return found

    # -- addresses ---------------------------------------------------------

    def endpoint(self, ref: str, where: Where) -> Endpoint:
        try:
            return self._endpoint(ref)
        except _Unresolved as exc:
            raise MatrixError(exc.message, where.file, where.line) from None

    def _endpoint_uncached(self, ref: str, stack: tuple[str, ...] = ()) -> Endpoint:
        m = self.matrix
        if ref in m.zones:
            zone = m.zones[ref]
            return Endpoint((ANY4, ANY6) if zone.is_any else zone.networks, zone=zone.name)
        if ref in m.groups:
            if ref in stack:
                raise _Unresolved(f"group '{ref}' contains itself (through {' -> '.join(stack + (ref,))})")
            nets: list[IPNetwork] = []
            for member in m.groups[ref].members:
                inner = self._endpoint(member) if not stack else self._endpoint_uncached(member, stack + (ref,))
                if inner.public_of is not None or inner.firewall_of is not None:
                    raise _Unresolved(f"group '{ref}' contains the firewall address '{member}': name it directly in the opening")
                nets.extend(inner.networks)
            return Endpoint(_dedupe(nets))
        base, _, sub = ref.partition(".")
        if base in m.roles:
            base = m.roles[base]
        if base in m.hosts:
            host = m.hosts[base]
            if not sub:
                if host.is_named:
                    names = ", ".join(f"{base}.{n}" for n in host.addresses)
                    raise _Unresolved(f"host '{base}' has several named addresses: name one of {names}")
                return Endpoint(tuple(IPNetwork(a) for a in host.addresses[""]))
            if sub not in host.addresses:
                choices = [f"{base}.{n}" for n in host.addresses if n]
                raise _Unresolved(f"host '{base}' has no address named '{sub}'{did_you_mean(ref, choices)}")
            return Endpoint(tuple(IPNetwork(a) for a in host.addresses[sub]))
        if base in m.firewalls:
            fw = m.firewalls[base]
            if not sub:  # the firewall itself: any of its addresses
                own = tuple(IPNetwork(a) for a in fw.own_addresses())
                return Endpoint(own or (ANY4, ANY6), firewall_of=base, any_address=True)
            if sub in fw.addresses:
                return Endpoint(tuple(IPNetwork(a) for a in fw.addresses[sub]), firewall_of=base)
            if sub in fw.interfaces and sub not in fw.public:
                raise _Unresolved(f"interface '{sub}' of firewall '{base}' declares no address: "
                                  f"write it as {sub}: {{zone: {fw.interfaces[sub]}, address: ...}}")
            if sub not in fw.public:
                choices = [f"{base}.{n}" for n in fw.public]
                hint = f"; its public addresses are: {', '.join(choices)}" if choices else "; it declares no public address"
                raise _Unresolved(f"firewall '{base}' has no public address named '{sub}'{hint}")
            return Endpoint((IPNetwork(fw.public[sub]),), public_of=base)
        literal = _literal_network(ref)
        if literal is not None:
            return Endpoint((literal,))
        if sub and base not in m.hosts:
            raise _Unresolved(f"unknown name '{ref}'{did_you_mean(ref, m.all_names())}")
        raise _Unresolved(f"unknown name '{ref}'{did_you_mean(ref, m.all_names())}")

    def check_groups(self) -> None:
        for group in self.matrix.groups.values():
            for member, line in zip(group.members, group.member_lines or (group.where.line,) * len(group.members)):
                try:
                    self._endpoint_uncached(member, (group.name,))
                except _Unresolved as exc:
                    raise MatrixError(f"group '{group.name}': {exc.message}", group.where.file, line) from None

    # -- services ----------------------------------------------------------

    def services(self, opening: Opening) -> tuple[ServicePart, ...]:
        # the same few service lists on many rows: sorted once each (ServicePart compares in Python)
        found = self._service_lists.get(opening.services)
        if found is None:
            found = self._service_lists[opening.services] = self._services_uncached(opening)
        return found

    def _services_uncached(self, opening: Opening) -> tuple[ServicePart, ...]:
        parts: list[ServicePart] = []
        for ref in opening.services:
            try:
                parts.extend(self._service(ref))
            except _Unresolved as exc:
                where = opening.where_of("service")
                raise MatrixError(exc.message, where.file, where.line) from None
        return tuple(sorted(set(parts)))

    def _service_uncached(self, ref: str) -> tuple[ServicePart, ...]:
        if ref in self.matrix.services:
            return self.matrix.services[ref].parts
        try:
            part = parse_service_literal(ref)
        except ValueError as exc:
            raise _Unresolved(f"bad service {exc}") from None
        if part is None:
            raise _Unresolved(f"unknown service '{ref}'{did_you_mean(ref, self.matrix.services)}; a literal looks like tcp/443 or udp/10000-30000")
        return (part,)

    # -- NAT ----------------------------------------------------------------

    def nat_target(self, opening: Opening) -> tuple[IPAddress, ...]:
        """The addresses a DNAT opening translates to: one per address family."""
        nat = opening.nat
        assert nat is not None
        where = nat.where
        m = self.matrix
        base = nat.target.partition(".")[0]
        base = m.roles.get(base, base)
        if base not in m.hosts:
            kind = "a zone" if nat.target in m.zones else "a group" if nat.target in m.groups else "a firewall address" if base in m.firewalls else None
            if kind:
                raise MatrixError(f"NAT target '{nat.target}' is {kind}, not a host: traffic is translated to one host address", where.file, where.line)
        endpoint = self.endpoint(nat.target, where)
        if base not in m.hosts:
            raise MatrixError(f"NAT target '{nat.target}' is not a host: traffic is translated to one host address", where.file, where.line)
        by_family: dict[int, IPAddress] = {}
        for net in endpoint.networks:
            if net.version in by_family:
                raise MatrixError(f"NAT target '{nat.target}' has more than one IPv{net.version} address: name one", where.file, where.line)
            by_family[net.version] = net.ip
        return tuple(by_family[v] for v in sorted(by_family))

    def snat_source(self, opening: Opening) -> tuple[str, IPAddress] | None:
        """The firewall and address a `snat: fw.public` opening leaves with; None for masquerade."""
        snat = opening.snat
        assert snat is not None
        if snat.is_masquerade:
            return None
        endpoint = self.endpoint(snat.target, snat.where)
        if endpoint.public_of is None:
            raise MatrixError(f"opening '{opening.name}': 'snat: {snat.target}' is not a public address of a firewall: "
                              "write one (snat: edge.public), or 'snat: masquerade' for the address of the outgoing interface",
                              snat.where.file, snat.where.line)
        return endpoint.public_of, endpoint.networks[0].ip

    # -- the whole matrix -------------------------------------------------------

    def check_all(self) -> None:
        """Resolve every reference once, so that errors surface at load time."""
        self.check_groups()
        for opening in self.matrix.openings:
            self.check_opening(opening)
        for firewall in self.matrix.firewalls.values():
            for access in firewall.management:
                self.check_management(firewall.name, access)

    def check_management(self, firewall: str, access: Management) -> None:
        """A management access to `firewall` itself: its names and services resolve, its `to`
        is no public address of another firewall, and its sources and destinations share an
        address family. (That its sources' zones reach the firewall is for `intent` to say.)"""
        sources = [self.endpoint(ref, access.where_of("from")) for ref in access.sources]
        destinations = [self.endpoint(ref, access.where_of("to")) for ref in access.destinations]
        self.services(access.as_opening())
        what = f"management access #{access.index} of firewall '{firewall}'"
        for ref, dest in zip(access.destinations, destinations):
            if dest.public_of is not None and dest.public_of != firewall:
                where = access.where_of("to")
                raise MatrixError(f"{what} goes to '{ref}', a public address of firewall '{dest.public_of}', not of '{firewall}'", where.file, where.line)
        _common_family(what, _families(sources), _families(destinations) if destinations else None, access)

    def _references(self, refs: tuple[str, ...], opening: Opening, field_name: str) -> _References:
        """`endpoint` of each reference, the line looked up only for an error (every row of the matrix comes here)."""
        found = self._reference_lists.get(refs)
        if found is None:
            try:
                endpoints = [self._endpoint(ref) for ref in refs]
            except _Unresolved as exc:
                where = opening.where_of(field_name)
                raise MatrixError(exc.message, where.file, where.line) from None
            found = self._reference_lists[refs] = _References.of(refs, endpoints)
        return found

    def check_opening(self, opening: Opening) -> None:
        src = self._references(opening.sources, opening, "from")
        dst = self._references(opening.destinations, opening, "to")
        parts = self.services(opening)
        if not src.families & dst.families:
            _common_family(f"opening '{opening.name}'", src.families, dst.families, opening)
        if src.firewall is not None:
            ref, endpoint = src.firewall
            where = opening.where_of("from")
            raise MatrixError(f"opening '{opening.name}' comes from firewall '{endpoint.firewall_of}' itself ('{ref}'): "
                              "the firewalls' own traffic leaves by their output, which fwmatrix does not filter", where.file, where.line)
        if dst.firewalls != _NO_FIREWALL:
            own = set(dst.firewalls)
            where = opening.where_of("to")
            if None in own or len(own) > 1:
                raise MatrixError(f"opening '{opening.name}' goes to a firewall itself and to other places: "
                                  "write one opening for the firewall's own services", where.file, where.line)
            if opening.nat is not None or opening.snat is not None:
                raise MatrixError(f"opening '{opening.name}' goes to firewall '{own.pop()}' itself: it takes no 'nat' or 'snat'",
                                  where.file, where.line)
        if opening.snat is not None:
            if opening.nat is not None:
                where = opening.snat.where
                raise MatrixError(f"opening '{opening.name}' has both 'nat' and 'snat': write the port forward and the "
                                  "source translation as two openings", where.file, where.line)
            found = self.snat_source(opening)
            if found is not None and found[1].version not in src.families:
                where = opening.snat.where
                raise MatrixError(f"opening '{opening.name}': 'snat: {opening.snat.target}' is an IPv{found[1].version} address, "
                                  f"but no source is IPv{found[1].version}", where.file, where.line)
        if opening.nat is None:
            if dst.public is not None:
                ref, endpoint = dst.public
                where = opening.where_of("to")
                raise MatrixError(
                    f"opening '{opening.name}' goes to '{ref}', a public address of firewall '{endpoint.public_of}', "
                    "but has no 'nat': say which host the traffic is translated to (nat: HOST)",
                    where.file,
                    where.line,
                )
            return
        where = opening.nat.where
        if dst.private is not None:
            to_where = opening.where_of("to")
            raise MatrixError(
                f"opening '{opening.name}' has a NAT, but its destination '{dst.private}' is not a public address of a firewall "
                "(write e.g. 'to: edge.public', with the address under the firewall's 'public')",
                to_where.file,
                to_where.line,
            )
        targets = self.nat_target(opening)
        public_families = dst.families
        if not public_families & {t.version for t in targets}:
            raise MatrixError(f"NAT target '{opening.nat.target}' has no address of the public address's family (IPv{'/IPv'.join(map(str, sorted(public_families)))})", where.file, where.line)
        if opening.nat.port is not None:
            for part in parts:
                if part.ports is None or not part.ports.is_single:
                    raise MatrixError(f"a NAT port needs single-port services, but '{part}' is not one", where.file, where.line)
            # one port number (any protocols): two would both land on the one NAT port
            ports = sorted({part.ports.low for part in parts if part.ports is not None})
            if len(ports) > 1:
                raise MatrixError(
                    f"a NAT port sends every port of the service to {opening.nat.port}, but "
                    f"'{', '.join(opening.services)}' has ports {', '.join(map(str, ports))}: write one opening per port",
                    where.file, where.line)


class _Unresolved(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _literal_network(text: str) -> IPNetwork | None:
    if not text or not (text[0].isdigit() or ":" in text):
        return None
    try:
        net = parse_network(text)
    except (AddrFormatError, ValueError, TypeError):
        raise _Unresolved(f"'{text}' is neither a known name nor a valid address or CIDR network") from None
    if net.value != net.first:  # `net.ip != net.network` in integers (netaddr makes two addresses for it)
        raise _Unresolved(f"'{text}' has host bits set: did you mean {net.cidr}?")
    return net


def _dedupe(nets: list[IPNetwork]) -> tuple[IPNetwork, ...]:
    seen: dict[IPNetwork, None] = {}
    for net in nets:
        seen.setdefault(net, None)
    return tuple(seen)
