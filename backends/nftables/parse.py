"""A live ruleset (nft's JSON listing, or nft text) as the Ruleset IR.

The audit judges what a firewall really runs. The source is the JSON of
`nft -j list ruleset` (libnftables-json(5)); text is loaded into a private
network namespace and listed back (binding.list_text), so nft itself parses
the text and normalises it (`meta l4proto udp th dport 53` lists as
`udp dport 53`) and this code reads meaning, never syntax.

What the IR cannot express becomes Unmodelled or UnmodelledAction, never
nothing (the package docstring says what). Malformed *listings* are the
user's error (BackendError); an expression this code does not know is the
ruleset's business (Unmodelled).
"""

from __future__ import annotations

import json
import marshal
import re
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Callable, Iterator, Sequence, cast

from netaddr import AddrFormatError, IPNetwork

from fwmatrix.backends.nftables.describe import as_list, describe
from fwmatrix.backends.nftables.values import (
    HEADER_L4, Scalars, _address, _flags, _items, _key, _port, _single, _Unknown, _unwrap, _value, _verdict,
)
from fwmatrix.errors import BackendError
from fwmatrix.gcpause import gc_paused
from fwmatrix.ir import DnatMap, Element, Match, Rule, Ruleset, SetDef, Table, Value, Verdict, VerdictMap, distinct
from fwmatrix.ir import TCP_FLAG_BITS, Action, Chain, Dnat, Key, Masquerade, Notrack, Redirect, Snat, TcpFlags, Unmodelled, UnmodelledAction, packet_copies
from fwmatrix.matrix.model import PortRange

XT_TEXT = "iptables-nft (xt) expression: audit this table from iptables-save instead"

PORT_HEADERS = ("tcp", "udp", "sctp", "dccp", "udplite", "th")  # `th`: any transport header, no protocol implied
FAMILY_VERSION = {"ip": 4, "ip6": 6}
PRIORITY_VALUES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
NAT_FLAGS = {"random", "fully-random", "persistent"}  # change which port is picked, not where the packet goes
# Table flags: `dormant` switches a table off. nft 1.0.6 prints the table's name
# in place of its flags, so any other value may hide a dormant table.
TABLE_FLAGS = {"dormant", "owner", "persist"}

# Named stateful objects a listing may hold: rules reference them (`counter name`,
# `quota name`, `flow add @ft`) and those references are judged where they occur.
NAMED_OBJECTS = {"counter", "quota", "limit", "flowtable", "ct helper", "ct timeout", "ct expectation", "secmark", "synproxy", "tunnel"}
# Statements that let a packet through or stop the rule by state fwmatrix does not see.
STATEFUL_MATCHES = {"limit", "quota", "ct count", "meter", "set"}
# Statements with no effect on any verdict. `flow add @ft` offloads a connection only
# once it is established; the NEW packets the audit judges still traverse the chain.
NO_EFFECT = {"counter", "log", "flow"}
# Statements after which the chain goes on, whose effect is not modelled: `ct helper set`
# never accepts (a helper may drop a packet it cannot parse; what it expects is `related`).
GOES_ON = {"ct helper"}
# Source NAT statements: nft ends the nat chain's walk with an accept once the mapping is
# set up (nf_nat_setup_info; a masquerade out of an interface without an address drops).
# They run after the forward decision (postrouting, input) and the audit does not walk
# those nat chains; `snat ip to` in an inet table only translates its family.
SOURCE_NAT = {"snat", "masquerade"}
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
# nft set type -> (value kind, the field assumed when no rule looks the set up: a type names no packet field).
SET_TYPES = {
    "ipv4_addr": ("ip", "ip.daddr"), "ipv6_addr": ("ip6", "ip6.daddr"), "inet_service": ("port", "dport"),
    "inet_proto": ("proto", "l4proto"), "ifname": ("ifname", "iif"), "iface_index": ("ifindex", "iif"),
    "ct_state": ("ct_state", "ct.state"), "nf_proto": ("nfproto", "nfproto"), "ether_addr": ("ether", "ether.saddr"),
}
# nft map data type -> (value kind, field) for the maps a DNAT statement reads its target from.
MAP_DATA_TYPES = {"ipv4_addr": ("ip", "ip.daddr"), "ipv6_addr": ("ip6", "ip6.daddr"), "inet_service": ("port", "dport")}


# -- expressions -----------------------------------------------------------------


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

    def match(self, arg: Any) -> tuple[Match | Unmodelled, ...]:
        """A `match` statement as _parse_match reads it, read once per distinct statement of the
        table: hand-written rulesets repeat the same interfaces, ports and address lists from rule
        to rule. What it does to the table (`use`) is the same on every reading."""
        key = _exact(arg)
        if key is None:
            return tuple(_parse_match(arg, self))
        found = self._matches.get(key)
        if found is None:
            found = self._matches[key] = tuple(_parse_match(arg, self))
        return found

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


# -- statements ------------------------------------------------------------------


def _vmap(arg: Any, ctx: _TableContext) -> tuple[list[Match], VerdictMap]:
    fields = _fields(arg["key"], lookup=True)
    names = tuple(f.name for f in fields)
    data = arg["data"]
    if isinstance(data, str) and data.startswith("@"):
        ctx.use(data[1:], fields, "vmap")
        action = VerdictMap(names, map_name=data[1:])
    else:
        entries = []
        for item in _items(data):
            key, verdict = item
            target = _verdict(verdict)
            if target is not None:  # a `continue` entry falls through exactly like a miss
                entries.append((_key(tuple(f.kind for f in fields), key), target))
        action = VerdictMap(names, tuple(entries))
    return _implied(arg["key"], exact=True), action


def _dnat(arg: Any, ctx: _TableContext) -> tuple[list[Match], Dnat | DnatMap]:
    if set(arg) - {"family", "addr", "port", "flags"}:
        raise _Unknown("options fwmatrix does not model")
    flags = arg.get("flags", [])
    if set([flags] if isinstance(flags, str) else flags) - NAT_FLAGS:
        raise _Unknown(f"flags {describe(flags)}")
    if arg.get("family", ctx.family) not in FAMILY_VERSION:
        raise _Unknown("no address family")
    family = FAMILY_VERSION[arg.get("family", ctx.family)]
    addr_kind = "ip" if family == 4 else "ip6"
    addr = arg["addr"]
    if not (isinstance(addr, dict) and "map" in addr):
        port = _value("port", arg["port"]) if "port" in arg else None
        return [], Dnat(family, _address(family, addr), cast("PortRange | None", port))
    lookup = addr["map"]
    if "port" in arg:
        return _paired_dnat(family, addr_kind, lookup, arg["port"])
    if isinstance(lookup["key"], dict) and len(lookup["key"]) == 1 and next(iter(lookup["key"])) in DRAWN_KEYS:
        return [], _drawn_dnat(family, lookup, ctx)
    fields = _fields(lookup["key"], lookup=True)
    names = tuple(f.name for f in fields)
    data = lookup["data"]
    implied = _implied(lookup["key"], exact=True)
    if isinstance(data, str) and data.startswith("@"):
        ctx.use(data[1:], fields, "dnat")
        return implied, DnatMap(family, names, map_name=data[1:])
    entries = []
    for key, target in (item for item in _items(data)):
        target_kinds = (addr_kind, "port") if isinstance(target, dict) and "concat" in target else (addr_kind,)
        entries.append((_key(tuple(f.kind for f in fields), key), _key(target_kinds, target)))
    return implied, DnatMap(family, names, entries=tuple(entries))


def _paired_dnat(family: int, addr_kind: str, lookup: dict, port: Any) -> tuple[list[Match], DnatMap]:
    """`dnat to tcp dport map { 1000 : 1.1.1.1 } : tcp dport map { 1000 : 1234 }` (nftables'
    own example of iptables' DNAT rules in one): two literal maps looked up with one key are one
    map to (address, port), exact when both hold the same keys (a key missing from one breaks
    the rule in the kernel: no translation, which a shared key set never meets)."""
    pmap = port.get("map") if isinstance(port, dict) else None
    if not isinstance(pmap, dict) or pmap.get("key") != lookup["key"] or any(isinstance(m["data"], str) for m in (lookup, pmap)):
        raise _Unknown("an address map with a separate port")
    fields = _fields(lookup["key"], lookup=True)
    kinds = tuple(f.kind for f in fields)
    ports = {_key(kinds, key): _key(("port",), value) for key, value in _items(pmap["data"])}
    addrs = {_key(kinds, key): _key((addr_kind,), value) for key, value in _items(lookup["data"])}
    if set(ports) != set(addrs):
        raise _Unknown("address and port maps with different keys")
    entries = tuple((key, addrs[key] + ports[key]) for key in addrs)
    return _implied(lookup["key"], exact=True), DnatMap(family, tuple(f.name for f in fields), entries=entries)


# `dnat to numgen inc mod 2 map @targets`: a number drawn per connection (a counter, a random
# number, a hash of the packet) picks the target; a number the map lacks translates nothing
DRAWN_KEYS = ("numgen", "jhash", "symhash")


def _drawn_dnat(family: int, lookup: dict, ctx: _TableContext) -> DnatMap:
    """A DNAT map keyed on a drawn number: exact when the map is empty (no number finds a
    target: the rule never translates, the packet goes on), else which target a connection
    gets is not modelled. (A map the packet path fills is judged both ways by the evaluator.)"""
    data = lookup["data"]
    info = ctx.sets.get(data[1:]) if isinstance(data, str) and data.startswith("@") else None
    if info is None or info.elements or info.dynamic or info.data_kinds in ((), ("verdict",)):
        raise _Unknown("a map keyed on a number drawn per connection: which target a connection gets is not modelled")
    ctx.uses[info.name] = ()
    return DnatMap(family, (), map_name=info.name)


SNAT_DETAILS = {"port", "flags"}  # which ports, how they are picked: the address stays


def _source_nat(kind: str, arg: Any, family: str | None, ctx: _TableContext) -> Action:
    """`masquerade`, `snat ip to A` (any ports and flags: the audit judges the address,
    audit/snat.py) as the IR says them; other forms (ranges, prefixes, maps) end the chain as
    accept does (forward._nat_passes), with a translation the audit cannot tell and says so."""
    if kind == "masquerade" and (not arg or (isinstance(arg, dict) and set(arg) <= SNAT_DETAILS)):
        return Masquerade()
    unread = UnmodelledAction(f"{describe({kind: arg})} (source NAT to a range or a map: the address it picks is not read)")
    version = FAMILY_VERSION.get(family or "", {"ip": 4, "ip6": 6}.get(ctx.family))
    if kind == "snat" and isinstance(arg, dict) and set(arg) <= {"family", "addr", *SNAT_DETAILS} and isinstance(arg.get("addr"), str) and version:
        try:
            address = IPNetwork(arg["addr"])
        except (AddrFormatError, ValueError):
            return unread
        if address.size == 1 and address.version == version:
            return Snat(version, address)
    return unread


REJECT_FAMILY = {"icmp": 4, "icmpv6": 6}  # `icmpx` and `tcp reset` answer either family


def _listed(value: Any) -> list:
    return [value] if isinstance(value, str) else list(value)


def _terminal(kind: str, arg: Any, ctx: _TableContext) -> tuple[list[Match], Action] | None:
    """A statement that decides the packet's fate in this chain, or None when it is not one of those."""
    if kind == "reject" and isinstance(arg, dict) and arg.get("type") in REJECT_FAMILY:
        # nft lists `meta nfproto ipv6 reject` of an inet table as `reject with icmpv6 ...`:
        # the family the reject implies is only in the type of its answer
        return [Match(("nfproto",), ((REJECT_FAMILY[arg["type"]],),))], Verdict("reject")
    if kind in ("accept", "drop", "reject", "return", "jump", "goto"):
        return [], _verdict({kind: arg})
    if kind in SOURCE_NAT:
        family = arg.get("family") if isinstance(arg, dict) else None
        implied = [Match(("nfproto",), ((FAMILY_VERSION[family],),))] if ctx.family == "inet" and family in FAMILY_VERSION else []
        return implied, _source_nat(kind, arg, family, ctx)
    if kind == "redirect":  # to the firewall itself, never forwarded (the audit: prerouting.delivered_locally)
        if arg and not (isinstance(arg, dict) and set(arg) <= {"port", "flags"} and not set(_listed(arg.get("flags", []))) - NAT_FLAGS):
            return [], UnmodelledAction(f"{describe({kind: arg})} (sends the packet to the firewall itself, with options not read)")
        try:
            port = _value("port", arg["port"]) if arg and "port" in arg else None
        except _SHAPE_ERRORS as exc:
            return [], UnmodelledAction(describe({kind: arg}) + _why(exc))
        return [], Redirect(PortRange(port, port) if isinstance(port, int) else port)
    if kind in ("vmap", "dnat"):
        try:
            return _vmap(arg, ctx) if kind == "vmap" else _dnat(arg, ctx)
        except _SHAPE_ERRORS as exc:
            return [], UnmodelledAction(describe({kind: arg}) + _why(exc))
    return None


def _parse_rule(body: dict, ctx: _TableContext, chain: str) -> list[Rule]:
    """A rule: its matches (with the protocols they imply) and one action. The IR has
    one action per rule, so a statement of unknown effect before the verdict makes
    the whole action unknown, naming both. `notrack` before a verdict makes two IR
    rules with the same matches: the notrack, then the verdict."""
    matches: list[Match | Unmodelled] = []
    notrack = False
    copies: list[str] = []  # `dup to G`: packet_copies
    effects: list[str] = []  # statements that may change the packet's fate, in order
    quiet: list[str] = []  # statements that change the packet, not its fate, but may stop the rule
    going_on = 0  # how many of them let the chain go on (GOES_ON)
    action: Action = None
    for stmt in body.get("expr") or []:
        if not isinstance(stmt, dict) or len(stmt) != 1:  # values._single, inline: it runs for every statement
            ctx.fill_text(stmt)
            effects.append(describe(stmt))
            continue
        ((kind, arg),) = stmt.items()
        if kind == "set" or kind == "map":
            ctx.fill(kind, arg)
        if kind == "match":
            matches += ctx.match(arg)
        elif kind == "xt":  # iptables-nft: the parameters are not in the listing
            matches.append(Unmodelled(XT_TEXT))
            if not (isinstance(arg, dict) and arg.get("type") == "match"):
                effects.append(XT_TEXT)
        elif _fills_without_limit(kind, arg):
            quiet.append(describe(stmt))  # fills a set (ctx.fill): decides nothing unless a verdict follows
        elif kind in STATEFUL_MATCHES:
            matches.append(Unmodelled(describe(stmt)))
        elif kind == "notrack" and not effects:
            notrack = True
        elif kind == "dup" and not effects:
            copies.append(describe(stmt))  # the original goes on, exact: a rule of its own before this one
        elif kind in NO_EFFECT or kind == "continue" or _is_nftrace(kind, arg):
            continue
        elif _sets_tcp_option(kind, arg):
            quiet.append(describe(stmt))
        else:
            decided = _terminal(kind, arg, ctx)
            if decided is None:
                effects.append(describe(stmt))
                going_on += kind in GOES_ON
                continue
            implied, action = decided
            matches += implied
            effects += quiet  # the verdict runs only when they did not stop the rule
            if effects:
                effects.append(describe(stmt))
            break  # nothing after a verdict runs
    if effects:
        # only statements after which the chain goes on, and no verdict: the chain goes on
        goes_on = action is None and len(effects) == going_on
        action = UnmodelledAction("; ".join(dict.fromkeys(effects)), terminal=not goes_on)
    origin = f"{ctx.family} {ctx.name} {chain} handle {body.get('handle', '?')}"
    rule = Rule(distinct(matches), action, comment=str(body.get("comment", "")), origin=origin)
    out = [Rule(rule.matches, Notrack(), rule.comment, origin)] if notrack else []
    if copies:
        out.append(Rule(rule.matches, packet_copies("; ".join(copies), "each packet the rule matches"), rule.comment, f"{origin} (copies)"))
    return out + [rule] if action is not None or not out else out


def _fills_without_limit(kind: str, arg: Any) -> bool:
    """`add @knock { ip saddr }`: adds to a set and matches unless the set is full (the rule
    then stops there: NFT_BREAK); with a stateful statement inside (`update @s { ip saddr limit
    rate 1/second }`) it is a rate limit, which stays an unmodelled match."""
    return kind in ("set", "map") and isinstance(arg, dict) and not arg.get("stmt")


def _sets_tcp_option(kind: str, arg: Any) -> bool:
    """`tcp option maxseg size set rt mtu` (an MSS clamp) rewrites an option of the packet;
    a packet without the option stops the rule there (NFT_BREAK), so it only matters to
    a verdict after it."""
    return kind == "mangle" and isinstance(arg, dict) and isinstance(arg.get("key"), dict) and "tcp option" in arg["key"]


def _is_nftrace(kind: str, arg: Any) -> bool:
    """`meta nftrace set 1` only turns on tracing."""
    return kind == "mangle" and isinstance(arg, dict) and arg.get("key") == {"meta": {"key": "nftrace"}}


# -- sets, chains, tables ------------------------------------------------------------


def _type_names(raw: Any) -> tuple[str, ...]:
    """A set's type: "ipv4_addr", ["ipv4_addr", "inet_service"] or "ipv4_addr . inet_service"."""
    if isinstance(raw, list):
        return tuple(str(t) for t in raw)
    return tuple(part.strip() for part in str(raw).split(" . "))


@dataclass
class _SetInfo:
    name: str
    key_types: tuple[str, ...]
    key_kinds: tuple[str, ...]
    data_types: tuple[str, ...]
    data_kinds: tuple[str, ...]  # () for a set, ("verdict",) for a verdict map
    elements: tuple[Element, ...]
    opaque: str = ""  # why rules cannot look it up exactly (its values are kept as text)
    dynamic: bool = False  # `flags dynamic`: the packet path may add to it

    def definition(self, uses: tuple[str, ...] | None, filled: bool) -> SetDef:
        key = uses if uses else tuple(SET_TYPES.get(t, ("", f"nft:{t}"))[1] for t in self.key_types)
        if self.data_kinds == ("verdict",):
            data: tuple[str, ...] = ("verdict",)
        else:
            data = tuple(MAP_DATA_TYPES.get(t, ("", f"nft:{t}"))[1] for t in self.data_types)
        return SetDef(self.name, key, self.elements, data, dynamic=filled or self.dynamic)


def _set_info(body: dict, is_map: bool, scalars: Scalars) -> _SetInfo:
    key_types = _type_names(body["type"])
    data_types = _type_names(body["map"]) if is_map else ()
    key_kinds = tuple(SET_TYPES.get(t, ("raw", ""))[0] for t in key_types)
    if data_types == ("verdict",):
        data_kinds: tuple[str, ...] = ("verdict",)
    else:
        data_kinds = tuple(MAP_DATA_TYPES.get(t, ("raw", ""))[0] for t in data_types)
    raw_elements = body.get("elem") or []
    opaque = ""
    try:
        read_key = _key_reader(key_kinds, scalars)
        if not data_kinds:
            elements = _set_elements(scalars, key_kinds, read_key, raw_elements)
        elif data_kinds == ("verdict",):  # a `continue` entry falls through exactly like a miss
            elements = tuple(e for e in (_parse_entry(read_key, _verdict_data, item) for item in raw_elements) if e.data)
        else:
            read_data = _key_reader(data_kinds, scalars)
            elements = tuple(_parse_entry(read_key, read_data, item) for item in raw_elements)
        if "raw" in key_kinds + data_kinds:
            opaque = f"holds values of type {' . '.join(key_types + data_types)}, which fwmatrix does not model"
    except _SHAPE_ERRORS as exc:
        elements = tuple(Element((describe(item),)) for item in raw_elements)
        opaque = "has elements fwmatrix cannot read" + _why(exc)
    return _SetInfo(body["name"], key_types, key_kinds, data_types, data_kinds, elements, opaque, "dynamic" in as_list(body.get("flags")))


def _key_reader(kinds: tuple[str, ...], scalars: Scalars) -> Callable[[Any], Key]:
    """How the keys (or map data) of one set's elements are read: a type the IR has no
    field for is kept as text, part by part."""
    if "raw" in kinds:
        return lambda raw: tuple(_value("raw", part) for part in _parts(raw, len(kinds)))
    return scalars.keys(kinds)


def _comment(raw_key: Any) -> str:
    return raw_key["elem"].get("comment", "") if isinstance(raw_key, dict) and "elem" in raw_key else ""


def _set_elements(scalars: Scalars, kinds: tuple[str, ...], read_key: Callable[[Any], Key], raw_elements: list[Any]) -> tuple[Element, ...]:
    """The elements of a set: their keys (there may be hundreds of thousands: read column by
    column when they have the plain shape, Scalars.plain_keys; else one by one)."""
    plain = scalars.plain_keys(kinds, raw_elements) if "raw" not in kinds else None
    if plain is not None:
        keys, comments = plain
        return tuple(map(Element, keys, repeat((), len(keys)), comments))
    elements = []
    for item in raw_elements:
        comment = _comment(item)
        elements.append(Element(read_key(item), (), comment))
    return tuple(elements)


def _parse_entry(read_key: Callable[[Any], Key], read_data: Callable[[Any], Key], item: Any) -> Element:
    """An element of a map: [key, data]."""
    raw_key, raw_data = item
    comment = _comment(raw_key)
    return Element(read_key(raw_key), read_data(raw_data), comment)


def _verdict_data(raw: Any) -> Key:
    """A verdict map's data: Element.data holds Values; here a verdict (see the report on the IR);
    () for `continue`."""
    target = _verdict(raw)
    return cast(Key, (target,) if target is not None else ())


def _parts(raw: Any, count: int) -> list[Any]:
    raw = _unwrap(raw)
    if count > 1 and isinstance(raw, dict) and isinstance(raw.get("concat"), list):
        return list(raw["concat"])
    return [raw]


def _priority(raw: Any, where: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw in PRIORITY_VALUES:
        return PRIORITY_VALUES[raw]
    raise BackendError(f"nftables JSON: {where} has priority {raw!r}, which fwmatrix cannot read")


@dataclass
class _TableParts:
    """One table's objects as the listing gives them, before parsing."""

    family: str
    name: str
    flags: tuple[str, ...] = ()
    chains: dict[str, dict] = field(default_factory=dict)
    sets: dict[str, tuple[dict, bool]] = field(default_factory=dict)  # name -> (object, is a map)
    rules: dict[str, list[dict]] = field(default_factory=dict)  # chain -> its rules in order


def _build_table(parts: _TableParts) -> Table:
    scalars = Scalars()
    sets = {name: _set_info(body, is_map, scalars) for name, (body, is_map) in parts.sets.items()}
    ctx = _TableContext(parts.family, parts.name, sets, scalars)
    unknown_flags = [flag for flag in parts.flags if flag not in TABLE_FLAGS]
    chains = []
    for name, body in parts.chains.items():
        rules = tuple(ir_rule for rule in parts.rules.get(name, []) for ir_rule in _parse_rule(rule, ctx, name))
        # A dormant table is registered on no hook: its base chains see no packets,
        # which the IR says by making them regular chains.
        if body.get("hook") is None or "dormant" in parts.flags:
            chains.append(Chain(name, rules))
            continue
        if unknown_flags:
            # The table may be dormant: its base chains may be skipped, which is what
            # accepting first means (the packet goes on to the next base chain).
            maybe_off = Unmodelled(f"table flags {','.join(unknown_flags)}: flags fwmatrix cannot read; the table may be dormant (off)")
            rules = (Rule((maybe_off,), Verdict("accept"), origin=f"{parts.family} {parts.name} {name} (table flags)"),) + rules
        where = f"chain {parts.family} {parts.name} {name}"
        devices = tuple(str(d) for d in as_list(body["dev"])) if "dev" in body else None
        chains.append(Chain(name, rules, hook=str(body["hook"]), type=str(body.get("type", "filter")), priority=_priority(body.get("prio", 0), where),
                            policy=str(body.get("policy", "accept")), devices=devices))
    sets = tuple(info.definition(ctx.uses.get(name), name in ctx.filled) for name, info in ctx.sets.items())
    return Table(parts.family, parts.name, tuple(chains), sets)


def _listing(data: dict | str | bytes) -> list[Any]:
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise BackendError(f"not nftables JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise BackendError("not nftables JSON fwmatrix reads: arrays or objects nested too deeply") from None
        except ValueError:  # an integer of more digits than Python converts (4300)
            raise BackendError("not nftables JSON fwmatrix reads: a number with thousands of digits") from None
    if not isinstance(data, dict) or not isinstance(data.get("nftables"), list):
        raise BackendError("not an nftables JSON listing: expected {\"nftables\": [...]}, the output of `nft -j list ruleset`")
    return data["nftables"]


def _required(body: Any, kind: str, index: int, *keys: str) -> tuple[str, ...]:
    if not isinstance(body, dict):
        raise BackendError(f"nftables JSON: {kind} (item {index}) is not an object")
    missing = [key for key in keys if not isinstance(body.get(key), str)]
    if missing:
        raise BackendError(f"nftables JSON: {kind} (item {index}) has no '{missing[0]}'")
    return tuple(body[key] for key in keys)


def parse_json(data: dict | str | bytes) -> Ruleset:
    """The JSON of `nft -j list ruleset` (a dict, or its text) as a Ruleset."""
    with gc_paused():
        return _parse_listing(_listing(data))


def _parse_listing(items: list[Any]) -> Ruleset:
    tables: dict[tuple[str, str], _TableParts] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            raise BackendError(f"nftables JSON: item {index} is not an object with one key")
        ((kind, body),) = item.items()
        if kind == "metainfo" or kind in NAMED_OBJECTS:
            continue
        if kind == "table":
            family, name = _required(body, kind, index, "family", "name")
            tables.setdefault((family, name), _TableParts(family, name, tuple(str(flag) for flag in as_list(body.get("flags")))))
            continue
        if kind not in ("chain", "set", "map", "rule"):
            raise BackendError(f"nftables JSON: unknown object '{kind}' (item {index}); fwmatrix reads the output of `nft -j list ruleset`")
        family, table = _required(body, kind, index, "family", "table")
        parts = tables.get((family, table))
        if parts is None:
            raise BackendError(f"nftables JSON: {kind} (item {index}) belongs to table '{family} {table}', which is not listed before it")
        if kind == "rule":
            (chain,) = _required(body, kind, index, "chain")
            if chain not in parts.chains:
                raise BackendError(f"nftables JSON: rule (item {index}) belongs to chain '{chain}', which table '{family} {table}' does not list before it")
            parts.rules.setdefault(chain, []).append(body)
            continue
        (name,) = _required(body, kind, index, "name")
        if kind == "chain":
            parts.chains[name] = body
        else:
            if "type" not in body or (kind == "map" and "map" not in body):
                raise BackendError(f"nftables JSON: {kind} '{name}' (item {index}) has no type")
            parts.sets[name] = (body, kind == "map")
    return Ruleset(tuple(_build_table(parts) for parts in tables.values()))


def parse_text(text: str, source: str = "<nft text>") -> Ruleset:
    """An nft ruleset as text (an `nft -f` file or `nft list ruleset` output) as a Ruleset.

    It is loaded into a private, empty network namespace that vanishes with the
    process (a user namespace too when not root) and listed back as JSON, so
    nft's own parser reads the text. Invalid text raises BackendError with
    nft's first error and its line."""
    from fwmatrix.backends.nftables.binding import list_text  # namespaces and nft: only for text (the audit reads JSON)

    return parse_json(list_text(text, source))


def read_live() -> Ruleset:
    """The ruleset of the current network namespace's kernel (in tests and labs:
    `NetNamespace.call(read_live)`, which runs it inside the namespace)."""
    from fwmatrix.backends.nftables.binding import list_live

    return parse_json(list_live())
