"""A rule's `match` statements as IR matches, and the table context rules look sets and values up in.

A match reads the fields of its left side (payload, meta, ct, fib) and the values of its
right; nft's listing hides the protocol matches a header field implies (`tcp dport 22`
matches TCP only), which _implied puts back. What this cannot read becomes Unmodelled
(the statement as nft lists it, and why). The _TableContext reads each distinct match
statement and value of a table once."""

from __future__ import annotations

import marshal
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from netaddr import AddrFormatError

from fwmatrix.backends.nftables.describe import as_list, describe
from fwmatrix.backends.nftables.values import HEADER_L4, Scalars, _flags, _items, _key, _port, _single, _Unknown, _value
from fwmatrix.ir import TCP_FLAG_BITS, Key, Match, TcpFlags, Unmodelled, Value
from fwmatrix.matrix.model import PortRange

if TYPE_CHECKING:  # the sets of a _TableContext; parse.py imports this module
    from fwmatrix.backends.nftables.parse import _SetInfo

PORT_HEADERS = ("tcp", "udp", "sctp", "dccp", "udplite", "th")  # `th`: any transport header, no protocol implied
FAMILY_VERSION = {"ip": 4, "ip6": 6}
MARSHAL_VERSION = 2  # the last without back-references, which depend on which objects are shared
MAP_UPDATE_TEXT = re.compile(r"\s*(?:add|update)\s+@([\w.-]+)\s*\{")  # a set or map statement listed as text


# What can go wrong reading one expression of a listing we did not write: each means "not modelled".
_SHAPE_ERRORS = (_Unknown, KeyError, IndexError, TypeError, ValueError, AttributeError, AddrFormatError, OSError)


@dataclass(frozen=True)
class _Field:
    name: str  # the IR field
    kind: str  # how its values are read (see _value)


# `meta KEY` -> (IR field, value kind). `iif`/`oif` match an interface index, listed by name when it has one.
META_FIELDS = {
    "l4proto": ("l4proto", "proto"), "nfproto": ("nfproto", "nfproto"), "protocol": ("nfproto", "ethertype"),
    "iifname": ("iif", "ifname"), "oifname": ("oif", "ifname"), "iif": ("iif", "ifindex"), "oif": ("oif", "ifindex"),
}


def _field(expr: Any) -> _Field:
    kind, arg = _single(expr)
    if kind == "payload":
        proto, name = arg.get("protocol"), arg.get("field")
        if proto in FAMILY_VERSION and name in ("saddr", "daddr"):
            return _Field(f"{proto}.{name}", proto)
        if (proto, name) == ("ip", "protocol"):
            return _Field("l4proto", "proto")  # exact for IPv4, which has no extension headers
        if proto in PORT_HEADERS and name in ("sport", "dport"):
            return _Field(name, "port")
        if proto in ("icmp", "icmpv6") and name in ("type", "code"):
            return _Field(f"{proto}.{name}", f"{proto}_{name}")
        if (proto, name) == ("ip6", "nexthdr"):
            return _Field("l4proto", "nexthdr")  # see IPV6_EXTENSION_HEADERS
        if (proto, name) in (("ip", "ttl"), ("ip6", "hoplimit")):
            return _Field(name, "hop")  # a range of 0-255 (ir.py)
        if (proto, name) == ("ether", "saddr"):
            return _Field("ether.saddr", "ether")  # nft adds `meta iiftype ether` in front: Ethernet packets only
    elif kind == "meta" and arg.get("key") in META_FIELDS:
        return _Field(*META_FIELDS[arg["key"]])
    elif kind == "ct" and "dir" not in arg and arg.get("key") in ("state", "status"):
        return _Field(f"ct.{arg['key']}", f"ct_{arg['key']}")
    elif kind == "fib" and arg.get("result") == "type" and as_list(arg.get("flags")) in (["daddr"], ["saddr"]):
        return _Field(f"{as_list(arg['flags'])[0]}.type", "addrtype")  # with iif/oif: the type on one interface
    raise _Unknown()


def _fields(expr: Any, lookup: bool = False) -> tuple[_Field, ...]:
    """The fields an expression reads; `lookup`: as the key of a verdict or DNAT map, where
    packet spaces must model every field (they have no address type or hop limit)."""
    if isinstance(expr, dict) and "concat" in expr:
        fields = tuple(_field(part) for part in expr["concat"])
    else:
        fields = (_field(expr),)
    unmodelled = [f.name for f in fields if f.name in ("daddr.type", "saddr.type", "ttl", "hoplimit")]
    if lookup and unmodelled:
        raise _Unknown(f"a map keyed on {unmodelled[0]}")
    return fields


def _payloads(raw: Any) -> Iterator[dict]:
    """Every payload expression inside an expression (through concatenations and bit operations)."""
    if isinstance(raw, dict):
        for key, arg in raw.items():
            if key == "payload" and isinstance(arg, dict):
                yield arg
            else:
                yield from _payloads(arg)
    elif isinstance(raw, list):
        for item in raw:
            yield from _payloads(item)


def _implied(expr: Any, exact: bool) -> list[Match]:
    """The protocol matches nft adds in front of a header field and hides when listing.

    `tcp dport 22` matches TCP only; `ip ttl 1` (in an inet table) IPv4 only.
    An address field already names its family, except when the match is
    negated or not modelled: `ip saddr != 10.0.0.0/8` never matches IPv6."""
    out: list[Match] = []
    for payload in _payloads(expr):
        proto = payload.get("protocol")
        if proto in HEADER_L4:
            out.append(Match(("l4proto",), ((HEADER_L4[proto],),)))
        elif proto in FAMILY_VERSION and not (exact and payload.get("field") in ("saddr", "daddr")):
            out.append(Match(("nfproto",), ((FAMILY_VERSION[proto],),)))
    return out


def _bound(kind: str, op: str, raw: Any) -> Value:
    """`tcp dport < 1024`, `ip6 hoplimit > 1` -> the range it stands for."""
    if kind not in ("port", "hop"):
        raise _Unknown(f"operator {op} on {kind}")
    port = _port(raw) if kind == "port" else _value(kind, raw).low
    top = 65535 if kind == "port" else 255
    low, high = {"<": (0, port - 1), "<=": (0, port), ">": (port + 1, top), ">=": (port, top)}[op]
    if low > high:
        raise _Unknown(f"empty range {op} {port}")
    return PortRange(low, high)


def _flag_match(fld: _Field, op: str, raw: Any) -> Match:
    """ct state / ct status against flags: "in" tests bits; "=="/"!=" compare the whole word."""
    flags = _flags(raw)
    if fld.kind == "ct_state":
        for flag in flags:
            _value("ct_state", flag)
    if op == "in":
        return Match((fld.name,), tuple((flag,) for flag in flags))
    # A connection has exactly one state, so comparing it with one state is membership;
    # with several at once, or the many-bit status word, it depends on nft's version.
    if fld.kind == "ct_state" and len(flags) == 1 and op in ("==", "!="):
        return Match((fld.name,), ((flags[0],),), negate=op == "!=")
    raise _Unknown(f"an exact comparison of the whole {fld.name} word")


class _TableContext:
    """What rules of one table refer to: its named sets and maps, and how rules look them up."""

    def __init__(self, family: str, name: str, sets: dict[str, "_SetInfo"], scalars: Scalars):
        self.family = family
        self.name = name
        self.sets = sets
        self.scalars = scalars  # the table's values, each read once (its sets' elements read them too)
        self.uses: dict[str, tuple[str, ...] | None] = {}  # set -> the fields rules look it up with; None: several
        self.filled: set[str] = set()  # sets and maps the packet path adds to (`add @set`, `update @set`)
        self._matches: dict[bytes, tuple[Match | Unmodelled, ...]] = {}  # match statement (_exact) -> what it reads as
        self._keys: dict[tuple[tuple[str, ...], str | bytes], Key] = {}  # (kinds, value or _exact) -> the value read
        self._sides: dict[bytes, _Plain | None] = {}  # (left side, operator) (_exact) -> its plain reading, or None

    def match(self, arg: Any) -> tuple[Match | Unmodelled, ...]:
        """A `match` statement as _parse_match reads it, read once per distinct statement of the
        table: hand-written rulesets repeat the same interfaces, ports and address lists from rule
        to rule. What it does to the table (`use`) is the same on every reading."""
        try:
            key = marshal.dumps(arg, MARSHAL_VERSION)  # _exact, inline: it runs for every statement
        except ValueError:
            return tuple(_parse_match(arg, self))
        found = self._matches.get(key)
        if found is None:
            found = self._matches[key] = self._read(arg)
        return found

    def _read(self, arg: Any) -> tuple[Match | Unmodelled, ...]:
        """A statement not read before, as _parse_match reads it. Hand-written rulesets compare
        the same few fields with a different host from rule to rule: a plain comparison (_plain)
        is read by its left side and operator, worked out once per pair, and its values."""
        if type(arg) is dict and len(arg) == 3 and "left" in arg and "op" in arg and "right" in arg:
            right = arg["right"]
            side = None if type(right) is str and right.startswith("@") else _exact((arg["left"], arg["op"]))
            if side is not None:
                plain = self._sides.get(side, _UNREAD)
                if plain is _UNREAD:
                    plain = self._sides[side] = _plain(arg["left"], arg["op"])
                if plain is not None:
                    names, kinds, negate, implied = plain
                    try:
                        values = tuple(self.key(kinds, item) for item in _items(right))
                    except _SHAPE_ERRORS:
                        pass  # a value it cannot read: _parse_match says why
                    else:
                        return (*implied, Match(names, values, negate=negate))
        return tuple(_parse_match(arg, self))

    def key(self, kinds: tuple[str, ...], raw: Any) -> Key:
        """A value of a match (values._key), read once per distinct value of the table: the
        same hosts and networks come back in rule after rule."""
        exact = raw if type(raw) is str else _exact(raw)
        if exact is None:
            return _key(kinds, raw, self.scalars.value)
        found = self._keys.get((kinds, exact))
        if found is None:
            found = self._keys[kinds, exact] = _key(kinds, raw, self.scalars.value)
        return found

    def fill(self, kind: str, arg: Any) -> None:
        """Remember the set or map a `set`/`map` statement adds to (a lookup of it may then match anything)."""
        target = arg.get(kind) if kind in ("set", "map") and isinstance(arg, dict) else None
        if isinstance(target, str) and target.startswith("@"):
            self.filled.add(target[1:])

    def fill_text(self, stmt: Any) -> None:
        """The same for a statement nft lists as text (a map update has no JSON form:
        "update @m { 0x1f90 [invalid type] : 172.16.10.10 }")."""
        found = MAP_UPDATE_TEXT.match(stmt) if isinstance(stmt, str) else None
        if found:
            self.filled.add(found.group(1))

    def use(self, name: str, fields: Sequence[_Field], purpose: str) -> None:
        """Check that a rule may look up @name with these fields ('set', 'vmap' or 'dnat'); remember the fields."""
        info = self.sets.get(name)
        if info is None:
            raise _Unknown(f"@{name} is not in the listing")
        if info.opaque:
            raise _Unknown(f"@{name} {info.opaque}")
        if tuple(f.kind for f in fields) != info.key_kinds:
            raise _Unknown(f"@{name} holds {' . '.join(info.key_types)}")
        wanted = {"set": not info.data_kinds, "vmap": info.data_kinds == ("verdict",), "dnat": info.data_kinds not in ((), ("verdict",))}
        if not wanted[purpose]:
            raise _Unknown(f"@{name} is not a {'set' if purpose == 'set' else 'verdict map' if purpose == 'vmap' else 'map of addresses'}")
        names = tuple(f.name for f in fields)
        self.uses[name] = names if self.uses.get(name, names) == names else None


def _exact(raw: Any) -> bytes | None:
    """A JSON value as bytes equal only for the same value: marshal writes the types (True, 1
    and 1.0 differ; a list is not a tuple). None when it is not marshallable (a caller's own
    objects) or nested too deeply."""
    try:
        return marshal.dumps(raw, MARSHAL_VERSION)
    except ValueError:
        return None


_Plain = tuple[tuple[str, ...], tuple[str, ...], bool, tuple[Match, ...]]  # fields' names, their kinds, negated, implied matches
_UNREAD = object()
_NOT_PLAIN_KINDS = ("addrtype", "ct_state", "ct_status")  # _relation reads their values its own way


def _plain(left: Any, op: str) -> _Plain | None:
    """How `left op VALUE` reads, for any VALUE but a named set, when _parse_match reads it as
    `_relation` does a comparison of values: fields _fields reads (it reads no socket, extension
    header, header length or TCP flags, which _parse_match reads before or instead), by ==, !=
    or in, none of them an address type or ct state or status; None otherwise. The match is
    then Match(names, (each value's key, ...), negate) after the matches `left` implies."""
    if op not in ("==", "!=", "in"):
        return None
    try:
        fields = _fields(left)
    except _SHAPE_ERRORS:
        return None
    kinds = tuple(f.kind for f in fields)
    if any(kind in _NOT_PLAIN_KINDS for kind in kinds):
        return None
    negate = op == "!="
    return tuple(f.name for f in fields), kinds, negate, tuple(_implied(left, exact=not negate))


def _relation(fields: tuple[_Field, ...], op: str, right: Any, ctx: _TableContext) -> Match:
    names = tuple(f.name for f in fields)
    kinds = tuple(f.kind for f in fields)
    if isinstance(right, str) and right.startswith("@"):
        if op not in ("==", "!="):
            raise _Unknown(f"operator {op} with a named set")
        ctx.use(right[1:], fields, "set")
        return Match(names, set_name=right[1:], negate=op == "!=")
    if len(fields) == 1 and fields[0].kind == "addrtype" and right != "local":
        raise _Unknown("an address type other than local, or several: only `local` is judged, with the firewall's addresses")
    if len(fields) == 1 and fields[0].kind in ("ct_state", "ct_status") and not (isinstance(right, dict) and "set" in right):
        return _flag_match(fields[0], op, right)
    if op in ("==", "!=", "in"):
        return Match(names, tuple(ctx.key(kinds, item) for item in _items(right)), negate=op == "!=")
    if op in ("<", "<=", ">", ">=") and len(fields) == 1:
        return Match(names, ((_bound(kinds[0], op, right),),))
    raise _Unknown(f"operator {op}")


def _tcp_flags(left: Any, op: str, right: Any) -> Match | None:
    """`tcp flags syn` (the bit is set), `tcp flags & (fin|syn|rst|ack) == syn` (nft lists it
    `tcp flags syn / fin,syn,rst,ack`), `tcp flags == syn` (the whole byte), `!=`, and sets
    of such values, as one tcp.flags match; None when `left` is not the TCP flags."""
    flags_field = {"payload": {"protocol": "tcp", "field": "flags"}}
    if left == flags_field:
        mask = None  # the whole byte, or the bits of the value for `in`
    elif isinstance(left, dict) and isinstance(left.get("&"), list) and len(left["&"]) == 2 and left["&"][0] == flags_field:
        mask = _tcp_bits(left["&"][1])
    else:
        return None
    if op == "in" and mask is None:  # each bit it names is set (nft: `flags & bits != 0`, one bit at a time)
        return Match(("tcp.flags",), tuple((TcpFlags(bit, bit),) for bit in TCP_FLAG_BITS.values() if _tcp_bits(right) & bit))
    if op not in ("==", "!="):
        raise _Unknown(f"operator {op} on tcp flags")
    values = [_tcp_bits(item) for item in _items(right)]
    return Match(("tcp.flags",), tuple((TcpFlags(0xFF if mask is None else mask, value),) for value in values), negate=op == "!=")


def _tcp_bits(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 0xFF:
        return raw
    total = 0
    for name in _flags(raw):
        if name not in TCP_FLAG_BITS:
            raise _Unknown(f"tcp flag {name}")
        total |= TCP_FLAG_BITS[name]
    return total


def _parse_match(arg: Any, ctx: _TableContext) -> list[Match | Unmodelled]:
    """One `match` statement: the implied protocol matches, then the match itself (or Unmodelled)."""
    left = arg.get("left") if isinstance(arg, dict) else None
    if _reads_socket(left):  # nft breaks the rule when the packet has no socket, whatever the operator
        return [*_implied(left, exact=False), Match(("socket",), ((describe({"match": arg}),),))]
    header = _needs_header(arg)
    if header:
        return [Match(("exthdr",), ((header,),))]
    options = _ipv4_options(arg)
    if options is not None:
        return options
    try:
        match = _tcp_flags(left, arg["op"], arg["right"]) or _relation(_fields(left), arg["op"], arg["right"], ctx)
    except _SHAPE_ERRORS as exc:
        return [*_implied(left, exact=False), Unmodelled(describe({"match": arg}) + _why(exc))]
    return [*_implied(left, exact=not match.negate), match]


# IPv6 extension headers as nft names them: a field of one (`rt type 0`) breaks the rule when
# the packet has none (nft_exthdr), whatever the operator, as `exthdr rt exists` fails
EXTENSION_HEADERS = {"hbh", "rt", "rt0", "rt2", "srh", "frag", "dst", "mh"}


def _needs_header(arg: Any) -> str | None:
    """The extension header a match needs the packet to carry (ir.py `exthdr`), or None."""
    left = arg.get("left") if isinstance(arg, dict) else None
    header = left.get("exthdr") if isinstance(left, dict) else None
    if not isinstance(header, dict) or header.get("name") not in EXTENSION_HEADERS or set(header) - {"name", "field", "offset"}:
        return None
    present = "field" not in header and (arg.get("op"), arg.get("right")) in (("==", True), ("!=", False))
    return header["name"] if "field" in header or present else None


# `ip hdrlength` counts the IPv4 header in 32-bit words: 5 without options, up to 15 with them.
IPV4_HEADER_WORDS = range(5, 16)
HDRLENGTH_TESTS = {"==": int.__eq__, "!=": int.__ne__, "<": int.__lt__, "<=": int.__le__, ">": int.__gt__, ">=": int.__ge__}


def _ipv4_options(arg: Any) -> list[Match] | None:
    """`ip hdrlength OP N` asks whether the IPv4 packet carries options. The audit's packets
    carry none (a header of 5 words): a test that fails at 5 never holds on them, as an
    extension header's (ir.py `exthdr`, 'ipopts'); one every length passes is no test; any
    other (`ip hdrlength 5`) is left to the caller, which judges it both ways."""
    left = arg.get("left") if isinstance(arg, dict) else None
    payload = left.get("payload") if isinstance(left, dict) else None
    test = HDRLENGTH_TESTS.get(arg.get("op") if isinstance(arg, dict) else None)
    if payload != {"protocol": "ip", "field": "hdrlength"} or test is None or type(arg.get("right")) is not int:
        return None
    holds = {words for words in IPV4_HEADER_WORDS if test(words, arg["right"])}
    if 5 not in holds:
        return [*_implied(left, exact=False), Match(("exthdr",), (("ipopts",),))]
    return _implied(left, exact=False) if holds == set(IPV4_HEADER_WORDS) else None


SOCKET_KEYS = {"skuid", "skgid"}  # the owner of the packet's local socket (evaluate/sockets.py)


def _reads_socket(left: Any) -> bool:
    parts = left["concat"] if isinstance(left, dict) and isinstance(left.get("concat"), list) else [left]
    return any(isinstance(p, dict) and isinstance(p.get("meta"), dict) and p["meta"].get("key") in SOCKET_KEYS for p in parts)


def _why(exc: Exception) -> str:
    return f" ({exc})" if isinstance(exc, _Unknown) and str(exc) else ""

