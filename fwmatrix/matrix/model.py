"""The matrix: the typed, validated, immutable form of a matrix file.

Everything keeps its name and the line it was written on, so that compiled
rulesets, audit findings and reviews can point back at the matrix.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field, fields
from datetime import date
from typing import Iterator, TypeVar

from netaddr import AddrFormatError, IPAddress, IPNetwork

# IP protocol numbers of the protocols a service may name.
PROTOCOLS: dict[str, int] = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
SERVICE_RE = re.compile(r"(?P<proto>[a-z0-9]+)(?:/(?P<low>[0-9]+)(?:-(?P<high>[0-9]+))?)?\Z")

Frozen = TypeVar("Frozen", bound=type)


class _NoValue:
    """The default of a parameter whose field has a default factory (shown as dataclasses shows it)."""

    def __repr__(self) -> str:
        return "<factory>"


_NO_VALUE = _NoValue()


def quick_init(cls: Frozen) -> Frozen:
    """A frozen dataclass, with an `__init__` that fills the new instance's `__dict__` directly.

    The one `dataclasses` writes for a frozen class calls `object.__setattr__` once a field: an
    Opening (12 fields, one a row of the matrix) took 2.8 µs to make, this takes 0.7. Same
    parameters, defaults and default factories; the class stays frozen (setting an attribute
    still raises) and compares, hashes and prints as before."""
    params, lines, namespace = [], [], {"_NO_VALUE": _NO_VALUE}
    for f in fields(cls):
        if not f.init or f.kw_only or hasattr(cls, "__post_init__"):
            raise TypeError(f"quick_init: {cls.__name__}.{f.name} needs the dataclass's own __init__")
        if f.default is not MISSING:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_NO_VALUE")
            lines.append(f"    if {f.name} is _NO_VALUE:\n        {f.name} = _factory_{f.name}()")
        else:
            params.append(f.name)
        lines.append(f"    values[{f.name!r}] = {f.name}")
    exec(f"def __init__(self, {', '.join(params)}):\n    values = self.__dict__\n" + "\n".join(lines), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    return cls


@quick_init
@dataclass(frozen=True)
class Where:
    """A place in a matrix file."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, order=True)
class PortRange:
    low: int
    high: int

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"

    @property
    def is_single(self) -> bool:
        return self.low == self.high


ALL_PORTS = PortRange(0, 65535)


@dataclass(frozen=True, order=True)
class ServicePart:
    """One protocol and, for port protocols, one destination port range.

    `icmp` stands for "ping and friends" in both families: ICMP for IPv4,
    ICMPv6 for IPv6 (see `protocol_for_family`).
    """

    protocol: str
    ports: PortRange | None = None

    def __str__(self) -> str:
        if self.ports is None:
            return self.protocol
        if self.ports == ALL_PORTS:
            return self.protocol
        return f"{self.protocol}/{self.ports}"

    def protocol_for_family(self, family: int) -> str:
        if self.protocol in ("icmp", "icmpv6"):
            return "icmp" if family == 4 else "icmpv6"
        return self.protocol


def parse_address(text: str) -> IPAddress:
    """`IPAddress(text, flags=0)`, without netaddr's failed IPv4 try for an IPv6 address.

    That try raises an exception kept in a local of its frame: a reference cycle
    holding every caller's frame, with the loader's whole YAML tree, until the
    cyclic collector runs (0.2 s of CPU at 10,000 openings, 0.6 s for diff's two)."""
    try:
        return IPAddress(text, 6 if ":" in text else 4, flags=0)
    except (AddrFormatError, ValueError, TypeError):
        return IPAddress(text, flags=0)  # netaddr's own error, as without the version


def parse_network(text: str) -> IPNetwork:
    """`IPNetwork(text, flags=0)`, without the failed IPv4 try (see parse_address)."""
    try:
        return IPNetwork(text, 6 if ":" in text else 4, flags=0)
    except (AddrFormatError, ValueError, TypeError):
        return IPNetwork(text, flags=0)


def parse_service_literal(text: str) -> ServicePart | None:
    """`tcp/443`, `udp/10000-30000`, `icmp`, `tcp` -> ServicePart; None if it is no literal.

    Raises ValueError with a sentence for a literal that is malformed."""
    match = SERVICE_RE.match(text)
    if not match or match["proto"] not in PROTOCOLS:
        return None
    proto = match["proto"]
    if match["low"] is None:
        if proto == "sctp":  # pf matches no sctp port, not even all of them: say which ones
            raise ValueError(f"'{text}': sctp needs its ports, e.g. sctp/2905 or sctp/2905-2910")
        return ServicePart(proto, ALL_PORTS if proto in PORT_PROTOCOLS else None)
    if proto not in PORT_PROTOCOLS:
        raise ValueError(f"'{text}': {proto} has no ports")
    low = int(match["low"])
    high = int(match["high"]) if match["high"] is not None else low
    for port in (low, high):
        if not 1 <= port <= 65535:
            raise ValueError(f"'{text}': port {port} is out of range (1-65535)")
    if high < low:
        raise ValueError(f"'{text}': the range is reversed ({low} > {high})")
    return ServicePart(proto, PortRange(low, high))


@dataclass(frozen=True)
class Service:
    name: str
    parts: tuple[ServicePart, ...]
    where: Where
    note: str = ""


@dataclass(frozen=True)
class Zone:
    name: str
    networks: tuple[IPNetwork, ...]  # empty when `any`
    is_any: bool
    where: Where
    note: str = ""


@dataclass(frozen=True)
class Host:
    """A host with its addresses, each under a name (`ext`, `int`), or under
    the empty name when the host has just one unnamed address list."""

    name: str
    addresses: dict[str, tuple[IPAddress, ...]]
    roles: tuple[str, ...]
    where: Where
    note: str = ""

    @property
    def is_named(self) -> bool:
        return "" not in self.addresses


@dataclass(frozen=True)
class Metadata:
    """Who answers for an opening or a group, the change ticket it came with, and the last
    day it is needed (`lint` reports it once expired, and while it expires soon)."""

    owner: str = ""
    ticket: str = ""
    expires: date | None = None
    expires_line: int = 0

    def to_json(self) -> dict:
        out: dict = {}
        if self.owner:
            out["owner"] = self.owner
        if self.ticket:
            out["ticket"] = self.ticket
        if self.expires is not None:
            out["expires"] = self.expires.isoformat()
        return out

    def text(self) -> str:
        """`owner netops, ticket CHG-1, expires 2027-06-30`, for people."""
        parts = [f"owner {self.owner}" if self.owner else "", f"ticket {self.ticket}" if self.ticket else "",
                 f"expires {self.expires.isoformat()}" if self.expires else ""]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Group:
    name: str
    members: tuple[str, ...]
    where: Where
    member_lines: tuple[int, ...] = ()
    note: str = ""
    meta: Metadata | None = None  # owner, ticket, expiry


@dataclass(frozen=True)
class Management:
    """One management access: `sources` reach the firewall itself on `services` (at `destinations`).

    Written under a firewall's `management` key; `fwmatrix apply` refuses a ruleset that cuts it."""

    index: int  # 1-based, within its firewall
    sources: tuple[str, ...]  # references, as written
    destinations: tuple[str, ...]  # the firewall's addresses they use; empty: any address of the firewall
    services: tuple[str, ...]  # service names or literals, as written
    note: str
    where: Where
    field_lines: dict[str, int] = field(default_factory=dict, compare=False)  # 'from', 'to', 'service' -> line

    def where_of(self, field_name: str) -> Where:
        return Where(self.where.file, self.field_lines.get(field_name, self.where.line))

    def label(self, firewall: str) -> str:
        to = ", ".join(self.destinations) if self.destinations else firewall
        return f"{', '.join(self.sources)} → {to} {', '.join(self.services)}"

    def as_opening(self) -> Opening:
        """The same access as an opening, for the resolver (names, services, file:line)."""
        return Opening(self.index, f"management-{self.index}", self.sources, self.destinations,
                       self.services, None, self.note, self.where, dict(self.field_lines))


@dataclass(frozen=True)
class Firewall:
    name: str
    interfaces: dict[str, str]  # interface name -> zone name
    public: dict[str, IPAddress]  # name -> public address the firewall owns
    where: Where
    note: str = ""
    management: tuple[Management, ...] = ()  # how administrators reach the firewall itself
    addresses: dict[str, tuple[IPAddress, ...]] = field(default_factory=dict)  # interface -> its own addresses, where declared
    log: bool = False  # log (rate-limited, counted) what its forward and input chains drop

    def own_addresses(self) -> tuple[IPAddress, ...]:
        """Every address the matrix gives the firewall: its interfaces' and its public ones."""
        return tuple(dict.fromkeys([a for addrs in self.addresses.values() for a in addrs] + list(self.public.values())))


@dataclass(frozen=True)
class Nat:
    target: str  # a reference to one host address, as written
    port: int | None
    where: Where


MASQUERADE = "masquerade"


@dataclass(frozen=True)
class SourceNat:
    """`snat:` of an opening: the source its connections leave with. `target` is a firewall's
    public address as written (`edge.public`), or `masquerade`: the address of the interface
    the traffic leaves by, on the last firewall of the path."""

    target: str
    where: Where

    @property
    def is_masquerade(self) -> bool:
        return self.target == MASQUERADE


@quick_init
@dataclass(frozen=True)
class Opening:
    index: int  # 1-based row number in the matrix
    name: str
    sources: tuple[str, ...]  # references, as written
    destinations: tuple[str, ...]
    services: tuple[str, ...]  # service names or literals, as written
    nat: Nat | None
    note: str
    where: Where
    field_lines: dict[str, int] = field(default_factory=dict, compare=False)  # 'from', 'to', 'service' -> line
    snat: SourceNat | None = None  # the source its connections leave with (to the internet)
    meta: Metadata | None = None  # owner, ticket, expiry
    log: bool = False  # log (rate-limited, counted) its new connections on every firewall that accepts them

    def where_of(self, field_name: str) -> Where:
        return Where(self.where.file, self.field_lines.get(field_name, self.where.line))

    @property
    def label(self) -> str:
        return f"#{self.index} {self.name}"

    def to_json(self) -> dict:
        """How reports name an opening: name, row, note and where it is written (and its
        owner, ticket and expiry, when it has them)."""
        out = {"name": self.name, "row": self.index, "note": self.note, "file": self.where.file, "line": self.where.line}
        return out | self.meta.to_json() if self.meta is not None else out


@dataclass(frozen=True)
class Acceptance:
    """A finding accepted with a reason (`accept:` of the matrix, or a baseline file): it stays
    in every report, marked, and fails nothing until `expires` (after that day it is a finding
    again). It matches findings of `kind` by every selector it has (at least one): the
    opening's name, the rule (as the finding names it; a trailing FILE:LINE may omit the
    directory), the regions (the finding's regions must all be among them), the message."""

    kind: str
    reason: str
    owner: str
    expires: date
    where: Where
    firewall: str | None = None
    opening: str | None = None
    rule: str | None = None
    regions: tuple[str, ...] = ()
    message: str | None = None

    def label(self) -> str:
        return f"{self.owner}, until {self.expires.isoformat()}: {self.reason}"

    def to_json(self) -> dict:
        return {"reason": self.reason, "owner": self.owner, "expires": self.expires.isoformat(),
                "file": self.where.file, "line": self.where.line}


@dataclass(frozen=True)
class Matrix:
    name: str
    title: str
    file: str
    content_hash: str  # sha256 of the file's bytes
    zones: dict[str, Zone]
    hosts: dict[str, Host]
    groups: dict[str, Group]
    services: dict[str, Service]
    firewalls: dict[str, Firewall]
    openings: tuple[Opening, ...]
    roles: dict[str, str] = field(default_factory=dict)  # role name -> host name
    accepts: tuple[Acceptance, ...] = ()  # findings accepted with a reason (`accept:`)
    # what the resolver found for each name (resolve.Resolver's memos): load checks every name, and
    # placing, lint and diff ask for the same ones again. Not an argument: `replace` starts it empty
    resolved: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def all_names(self) -> Iterator[str]:
        """Every name a reference may use (for "did you mean")."""
        yield from self.zones
        yield from self.groups
        yield from self.roles
        for host in self.hosts.values():
            yield host.name
            for addr_name in host.addresses:
                if addr_name:
                    yield f"{host.name}.{addr_name}"
        for fw in self.firewalls.values():
            yield fw.name
            for pub in fw.public:
                yield f"{fw.name}.{pub}"
            for iface in fw.addresses:
                yield f"{fw.name}.{iface}"
