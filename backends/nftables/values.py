"""Values of an nft JSON listing as the IR holds them: protocols, ports, addresses, ICMP
types, verdicts, and the unwrapping of set elements. A value the IR cannot express raises
_Unknown (the parser makes it Unmodelled). Split from parse.py, which reads the rules."""

from __future__ import annotations

import socket
from typing import Any, Callable, Sequence, cast

from netaddr import INET_PTON, AddrFormatError, IPNetwork, IPRange
from netaddr.strategy import ipv4 as _ipv4, ipv6 as _ipv6

from fwmatrix.backends.nftables.describe import describe
from fwmatrix.intervals import ICMP_NAMES, ICMPV6_NAMES, mac_address
from fwmatrix.ir import ADDRESS_TYPES, Jump, Key, Value, Verdict
from fwmatrix.matrix.model import PortRange

# Layer-4 protocol names nft prints -> IANA numbers (others: the system's /etc/protocols).
L4_NUMBERS = {
    "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "dccp": 33, "gre": 47, "esp": 50, "ah": 51,
    "ipv6-icmp": 58, "icmpv6": 58, "comp": 108, "sctp": 132, "udplite": 136,
}
# Payload headers whose fields nft only matches after `meta l4proto X` (a dependency it hides when listing).
HEADER_L4 = {name: L4_NUMBERS[name] for name in ("icmp", "igmp", "tcp", "udp", "dccp", "esp", "ah", "icmpv6", "comp", "sctp", "udplite")}
# `icmp type` and `icmpv6 type` names as nft lists them (fwmatrix's own text uses the same)
ICMP_TYPES = {name: number for number, name in ICMP_NAMES.items()}
ICMPV6_TYPES = {name: number for number, name in ICMPV6_NAMES.items()} | {"mld-listener-reduction": 132}
# `icmp code` and `icmpv6 code` names (`nft describe icmp code`)
ICMP_CODES = {"net-unreachable": 0, "host-unreachable": 1, "prot-unreachable": 2, "port-unreachable": 3, "frag-needed": 4,
              "net-prohibited": 9, "host-prohibited": 10, "admin-prohibited": 13}
ICMPV6_CODES = {"no-route": 0, "admin-prohibited": 1, "addr-unreachable": 3, "port-unreachable": 4, "policy-fail": 5, "reject-route": 6}
ICMP_NUMBER_NAMES = {"icmp_type": ICMP_TYPES, "icmpv6_type": ICMPV6_TYPES, "icmp_code": ICMP_CODES, "icmpv6_code": ICMPV6_CODES}
# `ip6 nexthdr` is the header after the fixed IPv6 header: the layer-4 protocol of the
# packets the audit judges, which are plain first packets of connections, without
# extension headers (conntrack reassembles fragments before the forward hook, and the
# reassembled packet has no fragment header). A match on an extension header itself
# (hop-by-hop, routing, fragment, destination options, AH, mobility, HIP, shim6,
# experiments) stays unmodelled.
IPV6_EXTENSION_HEADERS = frozenset({0, 43, 44, 51, 60, 135, 139, 140, 253, 254})
CT_STATE_NAMES = ("invalid", "established", "related", "new", "untracked")
NFPROTO_VALUES = {"ipv4": 4, "ipv6": 6, 2: 4, 10: 6}  # names, or NFPROTO_IPV4 / NFPROTO_IPV6
ETHERTYPE_VALUES = {"ip": 4, "ip6": 6}  # `meta protocol` of an IP packet
VERDICT_KINDS = ("accept", "drop", "reject", "return")


class _Unknown(Exception):
    """Something inside a rule that the IR cannot express (the message says why, or is empty)."""


# -- values -------------------------------------------------------------------------


def _unwrap(raw: Any) -> Any:
    """A set element may come wrapped with its comment or timeout: {"elem": {"val": ...}}."""
    if isinstance(raw, dict) and "elem" in raw:
        return raw["elem"]["val"]
    return raw


def _proto(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 255:
        return raw
    if isinstance(raw, str):
        if raw in L4_NUMBERS:
            return L4_NUMBERS[raw]
        try:
            return socket.getprotobyname(raw)
        except OSError:
            pass
    raise _Unknown(f"protocol {raw!r}")


def _port(raw: Any) -> int:
    if isinstance(raw, str):
        raw = int(raw) if raw.isdigit() else socket.getservbyname(raw)  # OSError: not a service name
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 65535:
        return raw
    raise _Unknown(f"port {raw!r}")


def _address(version: int, raw: Any) -> IPNetwork | IPRange:
    if isinstance(raw, dict) and "prefix" in raw:
        net: IPNetwork | IPRange = _network(raw["prefix"]["addr"], raw["prefix"]["len"])
    elif isinstance(raw, dict) and "range" in raw:
        low, high = raw["range"]
        net = IPRange(low, high)
    elif isinstance(raw, str):
        net = _network(raw)
    else:
        raise _Unknown(f"address {describe(raw)}")
    if net.version != version:
        raise _Unknown(f"{describe(raw)} is not an IPv{version} address")
    return net


def _network(addr: Any, prefixlen: Any = None) -> IPNetwork:
    """IPNetwork(addr), or IPNetwork(f"{addr}/{prefixlen}"): the same network, made from the
    integer netaddr reads the address as (its strategy's str_to_int, inet_pton) when the text
    is an address and the length fits. netaddr's way through the text takes 4 times as long
    (10 times for IPv6, which it first tries to read as IPv4); anything else goes that way."""
    if type(addr) is str and "/" not in addr and (prefixlen is None or type(prefixlen) is int):
        module = _ipv6 if ":" in addr else _ipv4  # an address with a colon is never IPv4 to netaddr
        try:
            value = module.str_to_int(addr, INET_PTON)
        except AddrFormatError:
            value = None
        width = module.width if prefixlen is None else prefixlen
        if value is not None and 0 <= width <= module.width:
            return IPNetwork((value, width), module.version)
    return IPNetwork(addr if prefixlen is None else f"{addr}/{prefixlen}")


def _value(kind: str, raw: Any) -> Value:
    """One value of a match or set element, as the IR holds it (see fwmatrix/ir.py)."""
    raw = _unwrap(raw)
    if kind in ("ip", "ip6"):
        return _address(4 if kind == "ip" else 6, raw)
    if kind == "port":
        if isinstance(raw, dict) and "range" in raw:
            low, high = raw["range"]
            return PortRange(_port(low), _port(high))
        port = _port(raw)
        return PortRange(port, port)
    if kind == "hop":  # a TTL or hop limit: 0-255, or a range of them
        low, high = raw["range"] if isinstance(raw, dict) and "range" in raw else (raw, raw)
        if all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in (low, high)) and low <= high:
            return PortRange(low, high)
        raise _Unknown(f"{describe(raw)}: not a hop limit")
    if kind == "proto":
        return _proto(raw)
    if kind == "nexthdr":
        try:
            number: int | None = _proto(raw)
        except _Unknown:
            number = None
        if number is None or number in IPV6_EXTENSION_HEADERS:
            raise _Unknown(f"{describe(raw)}: an extension header or a protocol fwmatrix does not know")
        return number
    if kind == "ifname" and isinstance(raw, str):
        return raw
    if kind == "ifindex" and isinstance(raw, str) and not raw.isdigit():
        return raw
    if kind == "ifindex":
        raise _Unknown(f"interface index {raw} has no name in the listing")
    if kind == "ct_status":
        raise _Unknown("a lookup of the whole ct status word, not of its bits")
    if kind == "ct_state" and raw in CT_STATE_NAMES:
        return cast(str, raw)
    if kind == "nfproto" and raw in NFPROTO_VALUES:
        return NFPROTO_VALUES[raw]
    if kind == "ethertype" and raw in ETHERTYPE_VALUES:
        return ETHERTYPE_VALUES[raw]
    if kind in ICMP_NUMBER_NAMES and isinstance(raw, (int, str)) and not isinstance(raw, bool):
        number = ICMP_NUMBER_NAMES[kind].get(raw, raw) if isinstance(raw, str) else raw
        if isinstance(number, int) and 0 <= number <= 255:
            return number
    if kind == "ether" and isinstance(raw, str) and mac_address(raw):
        return cast(str, mac_address(raw))
    if kind == "addrtype" and raw in ADDRESS_TYPES:
        return cast(str, raw)
    if kind == "raw":  # a set of a type the IR has no field for: kept as text
        return describe(raw)
    raise _Unknown(f"{describe(raw)} as {kind}")


def _key(kinds: Sequence[str], raw: Any, value: Callable[[str, Any], Value] = _value) -> Key:
    """A key of a set element or a match, read by `value` (_value, or a Scalars' `value`)."""
    raw = _unwrap(raw)
    if len(kinds) == 1:
        return (value(kinds[0], raw),)
    if isinstance(raw, dict) and isinstance(raw.get("concat"), list) and len(raw["concat"]) == len(kinds):
        return tuple(value(kind, part) for kind, part in zip(kinds, raw["concat"]))
    raise _Unknown(f"{describe(raw)} does not fit {len(kinds)} concatenated fields")


SCALARS = (str, int)  # what Scalars reads once; exact types: True is not the port 1, nor is 1.0
SCALAR_TYPES = frozenset(SCALARS)


class _Known(dict):
    """One kind's values by the string or integer they were read from; a miss reads it (_value)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def __missing__(self, raw: str | int) -> Value:
        found = self[raw] = _value(self.kind, raw)
        return found

    def read(self, raw: Any) -> Value:
        """Any value of this kind: once per distinct string or integer, range or prefix."""
        if type(raw) in SCALARS:
            return self[raw]
        literal = _literal(raw)
        if literal is None:
            return _value(self.kind, raw)
        found = self.get(literal)
        if found is None:
            found = self[literal] = _value(self.kind, raw)
        return found


def _literal(raw: Any) -> tuple | None:
    """A range {"range": [A, B]} or prefix {"prefix": {"addr": A, "len": N}} of strings or
    integers as a tuple that stands for it alone (_value reads nothing else of it); None for
    anything else."""
    if type(raw) is not dict or len(raw) != 1:
        return None
    if "range" in raw:
        bounds = raw["range"]
        if type(bounds) is list and len(bounds) == 2 and type(bounds[0]) in SCALARS and type(bounds[1]) in SCALARS:
            return ("range", bounds[0], bounds[1])
    elif "prefix" in raw:
        prefix = raw["prefix"]
        if type(prefix) is dict and len(prefix) == 2 and type(prefix.get("addr")) in SCALARS and type(prefix.get("len")) in SCALARS:
            return ("prefix", prefix["addr"], prefix["len"])
    return None


class Scalars:
    """_value of each distinct string or integer of a table, read once: a compiled ruleset lists
    the same few thousand hosts, protocols and ports across tens of thousands of set elements
    (at 10,000 openings netaddr parsed 152,042 addresses for 75,741 elements). The IR's values
    are never changed once read, so elements share them, as the rules of a table already
    share the keys of their matches (matches._TableContext.key)."""

    def __init__(self) -> None:
        self._known: dict[str, _Known] = {}

    def _of(self, kind: str) -> _Known:
        known = self._known.get(kind)
        if known is None:
            known = self._known[kind] = _Known(kind)
        return known

    def value(self, kind: str, raw: Any) -> Value:
        return self._of(kind).read(raw)

    def keys(self, kinds: tuple[str, ...]) -> Callable[[Any], Key]:
        """A reader of keys of these kinds, as _key reads them, for the many elements of one set."""
        known = [self._of(kind) for kind in kinds]
        if len(known) == 1:
            (one,) = known
            return lambda raw: (one.read(_unwrap(raw)),)

        def read(raw: Any) -> Key:
            parts = raw["elem"]["val"] if type(raw) is dict and "elem" in raw else raw  # _unwrap, inline
            parts = parts.get("concat") if type(parts) is dict else None
            if type(parts) is not list or len(parts) != len(known):
                return _key(kinds, raw)  # not a concatenation of as many parts: _key says why
            return tuple([values[part] if type(part) in SCALARS else values.read(part) for values, part in zip(known, parts)])

        return read

    def plain_keys(self, kinds: tuple[str, ...], raws: list[Any]) -> tuple[list[Key], list[Any]] | None:
        """The keys and comments of a set's elements, read column by column in C's loops when
        every element has the plain shape nft lists ({"elem": {"val": V, "comment": C}} or V; V
        a string or integer, or {"concat": [a part per kind]}) and every value reads; else None:
        the caller reads them one by one (`keys`), and the first that fails says why."""
        comments: list[Any] = []
        rows: list[Any] = []
        concat = len(kinds) > 1
        for raw in raws:
            if type(raw) is dict and "elem" in raw:
                elem = raw["elem"]
                if type(elem) is not dict or "val" not in elem:
                    return None
                comments.append(elem.get("comment", ""))
                raw = elem["val"]
            else:
                comments.append("")
            if concat:
                parts = raw.get("concat") if type(raw) is dict else None
                if type(parts) is not list or len(parts) != len(kinds):
                    return None
                raw = parts
            rows.append(raw)
        values = []
        try:
            for kind, column in zip(kinds, zip(*rows) if concat else (rows,)):
                known = self._of(kind)
                if SCALAR_TYPES.issuperset(map(type, column)):
                    values.append(list(map(known.__getitem__, column)))
                else:
                    values.append([known.read(part) for part in column])
        except Exception:  # noqa: BLE001 - a value that does not read: read one by one, which raises it
            return None
        return list(zip(*values)), comments


def _items(raw: Any) -> list[Any]:
    """The members of an anonymous set {"set": [...]}, or the one value that stands alone."""
    if isinstance(raw, dict) and "set" in raw:
        inner = raw["set"]
        return inner if isinstance(inner, list) else [inner]
    return [raw]


def _flags(raw: Any) -> list[str]:
    """A bitmask value: "new", ["established", "related"] or {"|": [...]}."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        return [flag for item in raw for flag in _flags(item)]
    if isinstance(raw, dict) and "|" in raw:
        return _flags(raw["|"])
    raise _Unknown(f"flags {describe(raw)}")


def _verdict(raw: Any) -> Verdict | Jump | None:
    """A verdict as a vmap holds it; None for `continue` (the packet goes on, as when nothing matched)."""
    kind, arg = _single(raw)
    if kind in VERDICT_KINDS:
        return Verdict(kind)
    if kind in ("jump", "goto"):
        return Jump(arg["target"], goto=kind == "goto")
    if kind == "continue":
        return None
    raise _Unknown(f"verdict {describe(raw)}")


def _single(raw: Any) -> tuple[str, Any]:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise _Unknown(f"{describe(raw)} is not a one-key object")
    ((kind, arg),) = raw.items()
    return kind, arg
