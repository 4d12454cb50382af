"""What a pf rule says, as the reader reads it (reader.py) and the converter turns it
into IR chains (convert.py): interfaces, hosts, ports, translation targets, rules,
the rules fwmatrix cannot see, quick anchors, and a table's addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

from netaddr import IPNetwork, IPRange, IPSet

from fwmatrix.matrix.model import PortRange


@dataclass(frozen=True)
class _If:
    name: str
    negate: bool = False
    group: bool = False  # an interface group: its members are not known here (unless `members`)
    members: tuple[str, ...] | None = None  # a negated group's known members (a group is its members)


@dataclass(frozen=True)
class _Host:
    negate: bool
    kind: str  # 'any', 'self', 'net', 'table', 'iface', 'no-route', 'urpf-failed', 'unknown'
    net: IPNetwork | IPRange | None = None
    name: str = ""  # the table's name, or what an unknown address is
    # 'iface': the addresses of an interface (or group) `iface`, `IF:modifier` ('network',
    # 'broadcast', 'peer'; '' or '0' for its own addresses); `certain` when it can only be an
    # interface (in parentheses, or with a modifier), else it may be a host name
    iface: str = ""
    modifier: str = ""
    certain: bool = True


@dataclass(frozen=True)
class _Ports:
    ranges: tuple[PortRange, ...]  # their union, merged
    unknown: tuple[str, ...] = ()  # service names not known here


@dataclass(frozen=True)
class _Target:
    """Where a translation sends a packet: one address (else unmodelled) and maybe one port."""

    address: IPNetwork | None
    port: PortRange | None
    text: str
    static_port: bool = False  # `static-port`: a source translation keeps the source port


ROUTE_UNKNOWN = " (the packet may leave by another route)"


@dataclass(frozen=True)
class _Route:
    """`route-to`, `reply-to`, `dup-to` or `fastroute`: where pf sends the packets (or the
    replies, or a copy) instead of where the routes lead."""

    kind: str  # 'route-to', 'reply-to', 'dup-to', 'fastroute'
    iface: str | None  # the one plain interface the target names, else None (a pool, a group, an address alone)
    text: str  # as an unmodelled construct names it
    if_bound: bool = False  # the rule's states are bound to their interface (`keep state (if-bound)`)

    @property
    def spec(self) -> str:
        """The option as written (`dup-to ( em2 192.0.2.99 )`)."""
        return self.text.removesuffix(ROUTE_UNKNOWN)


@dataclass(frozen=True)
class _Rule:
    origin: str
    action: str  # 'pass', 'block', 'match', 'rdr' (old style), 'no-rdr', 'nat' (a `nat pass`)
    reject: bool = False
    direction: str | None = None
    quick: bool = False
    on: tuple[_If, ...] | None = None
    received_on: tuple[_If, ...] | None = None
    af: int | None = None
    protos: tuple[int | str, ...] | None = None  # str: a protocol name not known here
    src: tuple[_Host, ...] | None = None
    dst: tuple[_Host, ...] | None = None
    dport: _Ports | None = None
    sport: _Ports | None = None
    icmp: tuple[str, tuple[tuple[int, ...], ...]] | None = None  # ('icmp.type' or 'icmpv6.type', keys (type,) or (type, code))
    tag: str | None = None
    tagged: tuple[str, bool] | None = None  # (tag, negated)
    rdr: _Target | None = None
    keep_state: bool = True
    limited: str = ""  # state limits (`max-src-conn`, ...): past them pf drops the packet the rule passes
    passes: bool = False  # `rdr pass`, `nat pass`: the translated packet skips the filter rules
    snat: bool = False  # `nat-to`, `binat-to`: translates the source (the rules after a match rule see it)
    nat_to: _Target | None = None  # the target of a `nat-to` (not binat-to)
    binat: bool = False  # the inbound half of an old-style binat (evaluated before rdr)
    unknown: tuple[str, ...] = ()  # what fwmatrix cannot model about this rule
    route: _Route | None = None  # route-to / reply-to / dup-to / fastroute (convert.py decides what is exact)
    label: str = ""
    parents: tuple[_Rule, ...] = ()  # the conditions of the anchors around it

    @property
    def parts(self) -> tuple[_Rule, ...]:
        return self.parents + (self,)


@dataclass(frozen=True)
class _Opaque:
    """Rules fwmatrix cannot see (an anchor loaded elsewhere, an include): their verdict is unknown."""

    origin: str
    text: str
    cond: _Rule  # the anchor's own conditions
    chains: frozenset[str]  # which of 'in', 'out', 'nat' they may act in


@dataclass(frozen=True)
class _Group:
    """A `quick` anchor: once a rule inside matched, its last matching rule decides at once."""

    items: tuple[_Rule | _Opaque | _Group, ...]


_Item = _Rule | _Opaque | _Group
_Seen = _Rule | _Opaque  # a rule, or rules not seen; anchors opened


@dataclass(frozen=True)
class _TableValue:
    nets: dict[int, IPSet]  # family -> addresses
    unknown: tuple[str, ...] = ()
    hosts: tuple[_Host, ...] = ()  # interfaces and `self`: the firewall's addresses, where known
