"""What a pf rule's hosts and ports stand for, as address and port sets, and what two
rules can share: whether one packet can match both, whether one matches every packet
the other does, whether an address is among a rule's. The converter (convert.py)
asks these to keep only the rules that can decide, and to know when an earlier rule
judged a packet the way a later translation sees it.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Iterable, Sequence

from netaddr import IPNetwork, IPRange, IPSet

from fwmatrix.backends.pf.reader import _Reader, run_time_table
from fwmatrix.backends.pf.syntax import _Host, _Ports, _Rule
from fwmatrix.matrix.model import PortRange

_ALL = {4: IPSet(["0.0.0.0/0"]), 6: IPSet(["::/0"])}
_PORTS_ALL = (PortRange(0, 65535),)
_LOOPBACK_RE = re.compile(r"lo\d*")
# Addresses no router forwards from or to (loopback, link-local scopes).
_NEVER_FORWARDED = {
    ("saddr", 4): IPSet(["127.0.0.0/8", "169.254.0.0/16"]),
    ("daddr", 4): IPSet(["127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/24", "255.255.255.255/32"]),
    ("saddr", 6): IPSet(["::1/128", "fe80::/10"]),
    ("daddr", 6): IPSet(["::1/128", "fe80::/10", "ff01::/16", "ff02::/16"]),
}
_LOOPBACK = {4: IPSet(["127.0.0.0/8"]), 6: IPSet(["::1/128", "fe80::/10"])}


def _port_set(ranges: Iterable[PortRange]) -> IPSet:
    """Ports as an interval set (IPSet over small integers is one)."""
    out = IPSet()
    for rng in ranges:
        out |= IPSet(IPRange(rng.low, rng.high))
    return out


def _input_names(parts: Sequence[_Rule], strict: bool) -> set[str] | None | bool:
    """The input interfaces the parts allow, as plain names: None when any; False (strict) or
    a wider answer (not strict) when a negation, a group or `any` makes the names not plain."""
    found: set[str] | None = None
    for p in parts:
        for items in (p.on, p.received_on):
            if items is None:
                continue
            if any(i.negate or i.group or i.name == "any" for i in items):
                if strict:
                    return False
                continue
            names = {i.name for i in items}
            found = names if found is None else found & names
    return found


def _intersect_all(sets: Sequence[IPSet]) -> IPSet:
    out = sets[0]
    for other in sets[1:]:
        out = out & other
    return out


def _ports_contain(ports: _Ports, port: int) -> bool | None:
    if any(r.low <= port <= r.high for r in ports.ranges):
        return True
    return None if ports.unknown else False


class _Overlap:
    """The address sets of the reader's host specs (its tables resolved; each spec computed
    once), and what rules can share. The converter (convert._Builder) is one."""

    def __init__(self, reader: _Reader) -> None:
        self.reader = reader
        self._sets: dict[tuple[int, int, str, str], tuple[object, IPSet | None]] = {}
        self._spans: dict[tuple[int, int], tuple[object, list[int] | None]] = {}

    # -- address sets --------------------------------------------------------------------------

    def _resolve(self, host: _Host, family: int, side: str, context: str) -> tuple[IPSet | None, str | None]:
        """(known addresses of this family, or None when the item is of the other family;
        what is not known about it, or None)."""
        if host.kind == "net":
            return (IPSet([host.net]), None) if host.net.version == family else (None, None)  # type: ignore[union-attr, list-item]
        if host.kind == "table":
            value = self.reader.tables.get(host.name) or self.reader.given_tables.get(host.name)
            if value is None:
                return IPSet(), f"table <{host.name}> (its addresses are not in the file)"
            nets, unknown = value.nets[family], list(value.unknown)
            if unknown == [run_time_table(host.name)] and host.name in self.reader.overloads:
                unknown = [run_time_table(host.name, self.reader.overloads[host.name])]
            for entry in value.hosts:
                found, what = self._resolve(entry, family, side, context)
                nets = nets | found if found is not None else nets
                unknown += [what] if what else []
            return nets, "; ".join(dict.fromkeys(unknown)) or None
        if host.kind == "iface" and _LOOPBACK_RE.fullmatch(host.iface) and context == "filter":
            return _LOOPBACK[family], None  # lo0, lo0:network: loopback addresses, never forwarded
        own = host.kind == "self" or (host.kind == "iface" and host.modifier in ("", "0")
                                      and (host.certain or self.reader.is_interface(host.iface)))
        if own and side == "daddr" and context == "filter":
            return IPSet(), None  # the firewall's own addresses: a forwarded packet is never addressed to them
        if host.kind == "no-route":
            unrouted = self.reader.own.unrouted(family)
            return (unrouted, None) if unrouted is not None else (None, host.name)
        known = self._own(host)
        if known is not None:
            return IPSet(n for n in known.iter_cidrs() if n.version == family), None
        if host.kind == "self":
            return None, "self (the firewall's own addresses)"
        return None, host.name

    def _own(self, host: _Host) -> IPSet | None:
        """The firewall's addresses `self` or an interface host stands for, when given (own.py)."""
        reader = self.reader
        if host.kind == "self":
            return reader.own.all(reader.firewall_interfaces())
        if host.kind != "iface" or not (host.certain or reader.is_interface(host.iface)):
            return None  # (a bare name the ruleset never filters on may be a host name)
        if host.iface in reader.groups:
            return reader.own.interface(reader.groups[host.iface], host.modifier)
        if host.iface in reader.seen_groups and host.iface not in reader.interfaces:
            return None  # a group whose members are not known
        return reader.own.interface([host.iface], host.modifier)

    def _addr_set(self, hosts: tuple[_Host, ...] | None, family: int, side: str, context: str) -> IPSet | None:
        """The addresses a host spec matches, or None when not all are known."""
        if hosts is None:
            return _ALL[family]
        key = (id(hosts), family, side, context)
        if key not in self._sets:
            self._sets[key] = (hosts, self._compute_addr_set(hosts, family, side, context))  # hosts kept: the id stays theirs
        return self._sets[key][1]

    def _compute_addr_set(self, hosts: tuple[_Host, ...], family: int, side: str, context: str) -> IPSet | None:
        total = IPSet()
        for host in hosts:
            if host.kind == "any":
                if not host.negate:
                    return _ALL[family]
                continue
            known, unknown = self._resolve(host, family, side, context)
            if unknown:
                return None
            if known is not None:
                total |= (_ALL[family] - known) if host.negate else known
        # the filter rules see forwarded packets only
        return total - _NEVER_FORWARDED[(side, family)] if context == "filter" else total

    def _contains(self, hosts: tuple[_Host, ...], address: IPNetwork) -> bool | None:
        """Is the address in the host spec (as translation sees it)? None: not known."""
        key = (id(hosts), address.version)
        if key not in self._spans:
            found = self._addr_set(hosts, address.version, "daddr", "nat")
            bounds = None if found is None else [x for r in found.iter_ipranges() for x in (r.first, r.last + 1)]
            self._spans[key] = (hosts, bounds)
        bounds = self._spans[key][1]
        return None if bounds is None else bisect_right(bounds, address.first) % 2 == 1

    # -- what two rules can share -----------------------------------------------------------

    def _may_overlap(self, a: Sequence[_Rule], b: Sequence[_Rule], context: str = "filter") -> bool:
        """False only when no packet can match both conjunctions (ifaces are the caller's)."""
        parts = list(a) + list(b)
        afs = {p.af for p in parts if p.af is not None}
        if len(afs) > 1:
            return False
        protos: set[int] | None = None
        for p in parts:
            if p.protos is not None and all(isinstance(x, int) for x in p.protos):
                protos = set(p.protos) if protos is None else protos & set(p.protos)  # type: ignore[arg-type]
        if protos is not None and not protos:
            return False
        ports = _PORTS_ALL
        for p in parts:
            if p.dport is not None and not p.dport.unknown:
                ports = tuple(PortRange(max(x.low, y.low), min(x.high, y.high)) for x in ports for y in p.dport.ranges
                              if max(x.low, y.low) <= min(x.high, y.high))
        if not ports:
            return False
        for family in (afs or {4, 6}):
            shared = True
            for side, attr in (("saddr", "src"), ("daddr", "dst")):
                common = _ALL[family]
                for p in parts:
                    found = self._addr_set(getattr(p, attr), family, side, context)
                    common = common & found if found is not None else common
                shared = shared and bool(common)
            if shared:
                return True
        return False

    def _covers(self, big: Sequence[_Rule], small: Sequence[_Rule]) -> bool:
        """Does every packet the `small` parts match also match the `big` ones? True only when
        plainly so: each condition of `big` is one of `small`'s, or wider. (Both on the
        in pass: `on` and `received-on` are the input interface.)"""
        narrow_ifaces = _input_names(small, strict=False)
        for p in big:
            if p.unknown or p.tagged is not None or p.sport is not None or p.icmp is not None or (p.af is not None and p.af not in {q.af for q in small}):
                return False
            wide_ifaces = _input_names([p], strict=True)
            if wide_ifaces is False or (wide_ifaces is not None and (narrow_ifaces is None or not narrow_ifaces <= wide_ifaces)):  # type: ignore[operator]
                return False
            if p.protos is not None:
                narrow_protos = [set(q.protos) for q in small if q.protos is not None]
                if not narrow_protos or not set.intersection(*narrow_protos) <= set(p.protos):
                    return False
            for attr, side in (("src", "saddr"), ("dst", "daddr")):
                if getattr(p, attr) is None:
                    continue
                for family in (4, 6):
                    wide_set = self._addr_set(getattr(p, attr), family, side, "nat")
                    narrow_set = _ALL[family]
                    for q in small:
                        found = self._addr_set(getattr(q, attr), family, side, "nat")
                        narrow_set = narrow_set & found if found is not None else narrow_set
                    if wide_set is None or narrow_set - wide_set:
                        return False
            if p.dport is not None:
                narrow_ports = [_port_set(q.dport.ranges) for q in small if q.dport is not None and not q.dport.unknown]
                if p.dport.unknown or not narrow_ports or _intersect_all(narrow_ports) - _port_set(p.dport.ranges):
                    return False
        return True

    @staticmethod
    def _ifaces_may_meet(a: Sequence[_Rule], b: Sequence[_Rule]) -> bool:
        """Can two rules of one chain see the same interface? (`on` lists of plain names)"""
        def names(parts: Sequence[_Rule]) -> set[str] | None:
            found: set[str] | None = None
            for p in parts:
                if p.on is not None and all(not i.negate and not i.group and i.name != "any" for i in p.on):
                    here = {i.name for i in p.on}
                    found = here if found is None else found & here
            return found

        x, y = names(a), names(b)
        return x is None or y is None or bool(x & y)
