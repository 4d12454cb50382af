"""The firewall's own addresses and routes, when they are given: what `self`, `(IF)`, `IF`,
`IF:network`, `IF:broadcast`, `IF:0`, `no-route` and `urpf-failed` stand for (pf.conf(5), PARAMETERS: "Host name
resolution and interface to address translation are done at ruleset load-time"; the
modifiers `:network`, `:broadcast`, `:peer` and `:0`, no aliases).

An interface's addresses are given as ifconfig shows them, with their prefix
(`192.0.2.1/24`): the address is the interface's, the prefix its network. Without
them an interface's addresses stay unknown (the converter judges such rules both
ways). `self` is every address of every interface, so it is known only when every
interface of the firewall has its addresses given: the matrix's interfaces, those
the ruleset names, and those given. Routes are the matrix's, as the audit routes
packets: each zone's networks out of the interface facing it, the default route out of
the one facing the internet zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from netaddr import AddrFormatError, IPNetwork, IPSet

from fwmatrix.errors import FwmatrixError

_LOOPBACK_NAME_RE = re.compile(r"lo\d*")
_LOOPBACK_ADDRESSES = (IPNetwork("127.0.0.1/8"), IPNetwork("::1/128"))
_LINK_LOCAL = IPNetwork("fe80::/10")  # never forwarded: as a destination, always for the firewall itself


def interface_addresses(text: str, where: str = "") -> tuple[str, tuple[IPNetwork, ...]]:
    """`IF=CIDR[,CIDR...]` (the CLI's --pf-interface) as (IF, its addresses), or a one-line error."""
    name, _, values = text.partition("=")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,15}", name) or not values:
        raise FwmatrixError(f"expected IF=ADDRESS/PREFIX[,ADDRESS/PREFIX...], not {text!r}", where or None)
    out = []
    for value in values.split(","):
        try:
            if "/" not in value:
                raise ValueError(value)
            out.append(IPNetwork(value.strip()))
        except (AddrFormatError, ValueError, TypeError):
            raise FwmatrixError(f"{name}: {value.strip()!r} is not an address with its prefix (192.0.2.1/24)", where or None) from None
    return name, tuple(out)


@dataclass
class OwnAddresses:
    """Interface -> its addresses (with their prefix), and the firewall's addresses on no
    named interface (the matrix's public addresses: part of `self`). And its routes, when
    known: interface -> the networks routed out of it (the matrix's zones behind it), and the
    interfaces of the default route (those facing the matrix's internet zone)."""

    by_iface: Mapping[str, Sequence[IPNetwork]] = field(default_factory=dict)
    extra: Sequence[IPNetwork] = ()
    routes: Mapping[str, Sequence[IPNetwork]] | None = None
    default: Sequence[str] = ()
    complete: Sequence[IPNetwork] | None = None  # all the firewall's addresses, when given (--local-address)
    no_prefix: frozenset[str] = frozenset()  # interfaces whose addresses came without their prefix (the matrix's)

    def routed(self, family: int) -> dict[str, IPSet] | None:
        """Interface -> the addresses of this family whose route leaves by it (the longest prefix
        wins; the interfaces' own networks are routes too); None when the routes are not given,
        or one network (the default one too) leads out of two interfaces (which one a packet
        takes is not known)."""
        if self.routes is None or len(self.default) > 1:
            return None
        table: dict[IPNetwork, str] = {}
        everything = IPNetwork("0.0.0.0/0" if family == 4 else "::/0")
        pairs = [(n.cidr, i) for i, nets in self.routes.items() for n in nets] + \
                [(a.cidr, i) for i, addresses in self.by_iface.items() if i not in self.no_prefix for a in addresses] + \
                [(everything, i) for i in self.default]
        for net, iface in pairs:
            if net.version != family:
                continue
            if table.setdefault(net, iface) != iface:
                return None
        out: dict[str, IPSet] = {iface: IPSet() for iface in self.routes}
        taken = IPSet()
        for net in sorted(table, key=lambda n: -n.prefixlen):
            part = IPSet([net]) - taken
            out[table[net]] = out.get(table[net], IPSet()) | part
            taken |= part
        return out

    def unrouted(self, family: int) -> IPSet | None:
        """`no-route`: the addresses of this family no route leads to."""
        routed = self.routed(family)
        if routed is None:
            return None
        everything = IPSet([IPNetwork("0.0.0.0/0" if family == 4 else "::/0")])
        for part in routed.values():
            everything -= part
        return everything

    def interface(self, members: Iterable[str], modifier: str) -> IPSet | None:
        """The addresses `IF[:modifier]` stands for over an interface's (or group's) members, or
        None when not all are known. modifier: '' (its addresses), '0' (no aliases: the first
        of each family), 'network', 'broadcast', either with ':0'; 'peer' is never known."""
        base, _, noalias = modifier.partition(":")
        if base == "0":
            base, noalias = "", "0"
        if base == "peer":
            return None
        out = IPSet()
        for member in members:
            if _LOOPBACK_NAME_RE.fullmatch(member):
                addresses: Sequence[IPNetwork] = _LOOPBACK_ADDRESSES
            elif member in self.by_iface:
                if base in ("network", "broadcast") and member in self.no_prefix:
                    return None  # the address is known, its network is not
                addresses = self.by_iface[member]
            else:
                return None
            if noalias:
                firsts: dict[int, IPNetwork] = {}
                for a in addresses:
                    firsts.setdefault(a.version, a)
                addresses = list(firsts.values())
            for a in addresses:
                if base == "network":
                    out.add(a.cidr)
                elif base == "broadcast":
                    if a.version == 4 and a.prefixlen < 31:
                        out.add(IPNetwork(f"{a.broadcast}/32"))
                else:
                    out.add(IPNetwork(f"{a.ip}/{a.ip.version == 4 and 32 or 128}"))
        return out

    def all(self, interfaces: Iterable[str]) -> IPSet | None:
        """`self`: every address of these interfaces (the firewall's), loopback and the extra
        ones included; None when one of them has no addresses given, or none has (then which
        interfaces the firewall has is not known either). All the firewall's addresses, when
        given (`complete`), are `self` whatever the interfaces."""
        if self.complete is not None:
            found = IPSet(self.complete) | self.interface(["lo0"], "")  # type: ignore[operator]
        elif not self.by_iface:
            return None
        else:
            found = self.interface([i for i in interfaces if not _LOOPBACK_NAME_RE.fullmatch(i)] + ["lo0"], "")
        if found is None:
            return None
        for a in self.extra:
            found.add(IPNetwork(f"{a.ip}/{a.ip.version == 4 and 32 or 128}"))
        if any(n.version == 6 and n not in _LOOPBACK_ADDRESSES[1] for n in found.iter_cidrs()):
            found.add(_LINK_LOCAL)  # an interface with IPv6 has a link-local address too (RFC 4291, 2.1): in `self`
        return found
