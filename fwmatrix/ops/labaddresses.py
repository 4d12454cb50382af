"""Addresses the lab makes up: an internet host, and the firewall's own address where the matrix
gives none. Each must lie outside every network the matrix names (a zone, a host, a firewall's
address, an opening's literal network), else a probe from "the internet" would come from inside
a zone the ruleset treats apart; and outside what the lab itself uses (its transfer nets)."""

from __future__ import annotations

from dataclasses import dataclass

from netaddr import IPNetwork, IPSet

from fwmatrix.compile.intent import Intent
from fwmatrix.errors import FwmatrixError
from fwmatrix.matrix.model import Matrix
from fwmatrix.matrix.resolve import Resolver

# preferred first (documentation addresses, RFC 5737 and RFC 3849), then the rest of their ranges,
# then any unicast address
PREFERRED = {
    "internet": {4: ("198.51.100.7/32", "198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24", "0.0.0.0/0"),
                 6: ("2001:db8:ffff::7/128", "2001:db8::/32", "2000::/3")},
    "firewall": {4: ("192.0.2.254/32", "192.0.2.0/24", "203.0.113.0/24", "198.51.100.0/24", "0.0.0.0/0"),
                 6: ("2001:db8:fffe::1/128", "2001:db8::/32", "2000::/3")},
}
# never: unspecified, loopback, the lab's link nets (169.254/16, fe80::/10), multicast, reserved
UNUSABLE = ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3", "::/8", "fe80::/10", "ff00::/8")


@dataclass(frozen=True)
class LabAddresses:
    internet: dict[int, str]  # family -> a host of the internet, outside every network of the matrix
    firewall: dict[int, str]  # family -> the firewall's own address, where the matrix gives it none


def matrix_networks(matrix: Matrix) -> IPSet:
    """Every network the matrix names (zones, hosts, groups, the firewalls' addresses, the
    openings' and management accesses' ends as resolved), the whole internet left out."""
    resolver = Resolver(matrix)
    nets = [IPNetwork(a) for host in matrix.hosts.values() for addrs in host.addresses.values() for a in addrs]
    nets += [IPNetwork(a) for fw in matrix.firewalls.values() for a in fw.own_addresses()]
    ends = [(ref, o.where) for o in matrix.openings for ref in (*o.sources, *o.destinations)]
    ends += [(ref, fw.where) for fw in matrix.firewalls.values() for access in fw.management for ref in (*access.sources, *access.destinations)]
    ends += [(ref, matrix.zones[ref].where) for ref in matrix.zones] + [(ref, matrix.groups[ref].where) for ref in matrix.groups]
    for ref, where in ends:  # all resolve: the matrix loaded
        nets += [n for n in resolver.endpoint(ref, where).networks if n.prefixlen]
    return IPSet(nets)


def lab_addresses(intent: Intent) -> LabAddresses:
    taken = matrix_networks(intent.matrix) | IPSet(UNUSABLE)
    chosen: dict[str, dict[int, str]] = {}
    for role, families in PREFERRED.items():
        chosen[role] = {}
        for family, ranges in families.items():
            address = _first_free(ranges, taken)
            chosen[role][family] = address
            taken.add(address)  # the next role gets another one
    return LabAddresses(chosen["internet"], chosen["firewall"])


def _first_free(ranges: tuple[str, ...], taken: IPSet) -> str:
    for text in ranges:
        span = IPNetwork(text)
        ends = IPSet([span.network, span.broadcast]) if span.size > 2 else IPSet()  # a range's first and last: not hosts
        for cidr in (IPSet([span]) - taken - ends).iter_cidrs():
            return str(cidr[0])
    raise FwmatrixError(f"the lab finds no address outside the matrix's networks in {', '.join(ranges)}")
