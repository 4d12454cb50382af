"""pf backend: Ruleset IR -> a pf.conf, for OpenBSD (default) or FreeBSD.

The IR speaks netfilter: DNAT in a prerouting nat chain, then one forward
filter chain (policy drop) that sees the translated packet, with jumps,
verdict maps and set lookups. pf has no forward hook: it filters every
packet once on the way in on one interface and once on the way out on
another, and keeps state. The lowering, done generically on the IR:

  1. Each base chain is flattened into an ordered list of rules, each a
     conjunction of matches and a verdict: jumps and verdict-map entries
     become extra matches along the path (netfilter's jump semantics, with
     the first terminal verdict winning, is exactly a first-match list).
  2. Each flat rule is expanded over its set elements into cells (one
     value per field: in/out interface, family, source, destination,
     protocol, port), and cells of consecutive rules with the same verdict
     are merged back into products pf can write in one rule: tables for
     address groups, `proto { tcp udp }`, `port { 5060 5061 }`.
  3. Forwarding is written twice. `pass in on <in-iface>` is a pre-filter
     (the IR rule without its out-interface); `pass out on <out-iface>` is
     exact: it carries the input interface as `received-on` (OpenBSD) or
     as a tag set by the `pass in` rule (FreeBSD's pf, which long had
     no received-on). A packet crosses only if both pass, which is
     what the IR's forward chain says, no more.
  4. DNAT becomes `match in ... rdr-to` (OpenBSD) or `rdr ... ->`
     (FreeBSD). Both translate before the filter rules are evaluated, so
     the filter rules match the translated destination, as netfilter's
     forward chain does after prerouting.
  5. `ct status dnat` (a port forward's rules: only connections this
     firewall translated) becomes a tag. Every translation rule sets
     `tag fwm_dnat`, and only translation rules set it, so at the in pass a
     packet is `tagged fwm_dnat` exactly when netfilter would call it
     translated (FreeBSD: the rdr rules run before every filter rule;
     OpenBSD: the match rules come before every filter rule, and no filter
     rule sets a tag). A cell that asks for the translation carries
     `tagged fwm_dnat`; `ct status` with another value, or negated, is
     refused.
     OpenBSD's filter rules set no tag (the input interface is received-on),
     so fwm_dnat is still there when the out rules see the packet: both
     halves say `tagged fwm_dnat`, exactly the IR's condition.
     FreeBSD's `pass in` rule sets the tag that carries the input interface
     to the out rules, and a packet holds one tag: it replaces fwm_dnat. So
     on an input interface IF with translated cells the in rules set one of
     two tags, fwm_in_IF_dnat (translated) or fwm_in_IF (not), and must set
     the right one:
       - a translated cell's in rule says `tagged fwm_dnat tag fwm_in_IF_dnat`;
       - a plain accept cell on IF (the IR matches both kinds of packets) is
         written twice, as a twin `tagged fwm_dnat tag fwm_in_IF_dnat` and
         then as itself `tag fwm_in_IF`, the twin first. A translated packet
         meets the twin of any plain rule before the rule itself (same
         conditions), and `tagged fwm_dnat` keeps untranslated packets out
         of the twin: a packet passed in on IF carries fwm_in_IF_dnat if and
         only if it was translated. (Within a run of accepts the order does
         not change the verdict, only the tag; across runs the twin is what
         makes this hold, whatever the runs.)
     Out rules then read the tag exactly: a translated cell matches
     `tagged fwm_in_IF_dnat`; a plain cell from IF is written for both tags
     (two rules, same verdict), as the IR matches both kinds. A translated
     cell without an input interface has no tag to ride on: refused in this
     dialect, as an accept without one already is. Interfaces without
     translated cells keep their one tag, and the output does not change.
     A translated cell that a plain cell of the same run covers is left out:
     the plain one takes translated packets too (the same union).

Every rule is `quick`, so the first matching rule decides, like a netfilter
chain; the only non-quick rule is the default `block drop all`, which pf
applies to whatever no quick rule matched (the forward policy drop).

Anything this cannot write exactly (a negated match, goto, a policy accept,
a port on sctp, ...) raises RenderError: a match silently dropped from a
rule would make the rule accept more than the IR says (fail-open).

Every name written is validated against a strict pattern or refused, and
free text (comments, labels) keeps only a safe set of characters, so no
name in a matrix can end a comment or a string and start a rule.

pfctl does not exist on Linux: `check_files` re-parses the output against
the subset of pf.conf(5) this module writes and reports structural problems
(undefined macros or tables, unbalanced braces, bad ports, rules out of
order, a missing default block). On a BSD host, `pfctl -nf FILE` is the
real check. docs/backend-pf.md says more.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator, Mapping, Sequence

from netaddr import AddrFormatError, IPNetwork, IPRange, IPSet, cidr_merge

from fwmatrix.errors import BackendError
from fwmatrix.ir import (
    PRIORITY_DSTNAT, Action, Chain, Dnat, DnatMap, Jump, Match, Rule, Ruleset, SetDef, Table, Unmodelled, UnmodelledAction,
    Value, Verdict, VerdictMap, addr_field,
)
from fwmatrix.matrix.model import PortRange

NAME = "pf"
SUFFIX = ".pf.conf"
DIALECTS = ("openbsd", "freebsd")
DEFAULT_DIALECT = "openbsd"
LOCAL_ANCHOR = "local"

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 132: "sctp"}
PROTO_NUMBERS = {name: number for number, name in PROTO_NAMES.items()}
PORT_PROTOS = (6, 17)  # pf matches ports for tcp and udp (sctp ports: recent FreeBSD only)
ADDR_FIELDS = {"ip.saddr": (4, "saddr"), "ip.daddr": (4, "daddr"), "ip6.saddr": (6, "saddr"), "ip6.daddr": (6, "daddr")}
KNOWN_FIELDS = ("iif", "oif", "l4proto", "dport", "ct.state", "ct.status", "nfproto") + tuple(ADDR_FIELDS)
# Known to the IR, not lowered (yet): refused with a reason rather than dropped.
REFUSED_FIELDS = {"sport": "source ports are not lowered to pf yet"}
# `ct status dnat`: the tag every translation rule sets (see 5. above)
DNAT_TAG = "fwm_dnat"

# pf limits (PF_TABLE_NAME_SIZE, PF_RULE_LABEL_SIZE, IFNAMSIZ), minus the NUL.
TABLE_NAME_MAX = 31
LABEL_MAX = 63
TAG_MAX = 63  # PF_TAG_NAME_SIZE
COMMENT_MAX = 160

# An interface name pf reads as one plain word: it starts with a letter and
# holds no character pfctl's lexer treats specially (quotes, braces, $, #, ...).
IFACE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}\Z")
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
HEX_RE = re.compile(r"[0-9a-f]{64}\Z")
# Free text keeps these characters only: no quote, backslash ('\' + newline
# continues a line, even a comment), '$' (macros; label macros) or '#'.
UNSAFE_TEXT_RE = re.compile(r"[^A-Za-z0-9 _.,:;/()+=@%<>-]")
UNSAFE_COMMENT_RE = re.compile(r"[^A-Za-z0-9 _.,:;/()+=@%<>'-]")

# pfctl's keywords (OpenBSD and FreeBSD): a macro, table or interface name
# equal to one of these would be read as the keyword, so they are refused.
PF_KEYWORDS = frozenset(
    """
    af-to all allow-opts altq anchor antispoof any bandwidth binat binat-anchor binat-to bitmask block
    block-policy bridge-to buckets cbq code codelq debug default delay divert-packet divert-reply divert-to
    dnpipe dnqueue drop dup-to ether fail-policy fairq fastroute file fingerprints flags floating flush
    for fragment from global group hfsc hogs hostid icmp-type icmp6-type if-bound in include inet inet6
    interval keep keepcounters l3 label limit linkshare load log loginterface map-e-portset match max
    max-mss max-pkt-rate max-src-conn max-src-conn-rate max-src-nodes max-src-states min-ttl modulate nat
    nat-anchor nat-to no no-df no-route no-sync on once optimization os out overload pass port prio
    priority priq probability proto qlimit queue quick random random-id rdomain rdr rdr-anchor rdr-to
    realtime reassemble received-on reply-to require-order return return-icmp return-icmp6 return-rst
    ridentifier round-robin route route-to rtable rule ruleset-optimization scrub self set set-tos skip
    sloppy source-hash source-track state state-defaults state-policy static-port sticky-address syncookies
    synproxy table tag tagged target tbrsize timeout to tos ttl upperlimit urpf-failed user
    """.split()
)


class RenderError(BackendError, ValueError):
    """The IR holds something pf cannot be told exactly (an sctp port, an interface name pf
    would misread, ...): refused with one sentence, never written approximately."""


# -- names and text -------------------------------------------------------------


def interface_name(name: str) -> str:
    """An interface name pf reads as an interface, or RenderError."""
    if not isinstance(name, str) or not IFACE_RE.match(name) or name in PF_KEYWORDS:
        raise RenderError(f"refusing to write {name!r} as a pf interface name")
    return name


def safe_text(text: str, limit: int, unsafe: re.Pattern[str] = UNSAFE_TEXT_RE) -> str:
    """Free text with every character outside a safe set replaced, cut to `limit`."""
    clean = unsafe.sub("_", text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def comment(text: str) -> str:
    return "# " + safe_text(text, COMMENT_MAX, UNSAFE_COMMENT_RE)


def label(text: str) -> str:
    return f'label "{safe_text(text, LABEL_MAX)}"'


class _Names:
    """Identifiers made from interface names: only [A-Za-z0-9_], unique, never a keyword."""

    def __init__(self, suffix: str = "", prefix: str = "") -> None:
        self.prefix, self.suffix = prefix, suffix
        self.by_source: dict[str, str] = {}
        self.used: set[str] = set()

    def get(self, source: str) -> str:
        if source not in self.by_source:
            base = self.prefix + re.sub(r"[^A-Za-z0-9_]", "_", source) + self.suffix
            name, n = base, 2
            while name in self.used or name in PF_KEYWORDS:
                name, n = f"{base}{n}", n + 1
            self.used.add(name)
            self.by_source[source] = name
        return self.by_source[source]


# -- 1. flattening the IR -------------------------------------------------------

Entry = tuple[tuple[Value, ...], str, tuple[Value, ...]]  # key, element comment, mapped data


@dataclass(frozen=True)
class _Cond:
    """`fields` equal one of the entries' keys (a literal list, a set or a map)."""

    fields: tuple[str, ...]
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class _Flat:
    """One rule of a flattened chain: every cond holds -> verdict (or DNAT)."""

    conds: tuple[_Cond, ...]
    verdict: str  # 'accept', 'drop', 'reject', 'dnat'
    comment: str
    dnat: DnatMap | Dnat | None = None


def _flatten(table: Table, chain: Chain) -> list[_Flat]:
    out: list[_Flat] = []
    _walk(table, chain, (), "", (chain.name,), out)
    return out


def _walk(table: Table, chain: Chain, path: tuple[_Cond, ...], inherited: str, stack: tuple[str, ...], out: list[_Flat]) -> None:
    for i, rule in enumerate(chain.rules):
        where = rule.origin or f"chain '{chain.name}'"
        for m in rule.matches:
            if isinstance(m, Unmodelled):
                raise RenderError(f"{where}: '{m.text}' is not modelled: pf cannot be told to match it")
        conds = path + tuple(_match_cond(table, m) for m in rule.matches)  # type: ignore[arg-type]
        note = rule.comment or inherited
        action = rule.action
        if action is None:
            continue  # a rule without an action (a counter) decides nothing
        if isinstance(action, VerdictMap):
            _check_fields(action.fields)
            if action.map_name is not None:
                vmap = _find_set(table, action.map_name, action.fields, verdicts=True)
                entries = tuple((e.key, e.data[0]) for e in vmap.elements)
            else:
                entries = action.entries
            keyed = [(k, act) for key, act in entries for k in _split_ranges(action.fields, key)]
            _check_disjoint(action.fields, [k for k, _ in keyed], f"verdict map in {where}")
            for key, act in keyed:
                branch = conds + (_Cond(action.fields, ((key, "", ()),)),)
                _act(table, chain, act, branch, note, stack, out, last=i == len(chain.rules) - 1, bare=False)
        elif isinstance(action, DnatMap):
            out.append(_Flat(conds + (_map_cond(table, action),), "dnat", note, action))
        elif isinstance(action, Dnat):
            out.append(_Flat(conds, "dnat", note, action))
        else:
            _act(table, chain, action, conds, note, stack, out, last=i == len(chain.rules) - 1, bare=not rule.matches)


def _act(table: Table, chain: Chain, action: object, conds: tuple[_Cond, ...], note: str, stack: tuple[str, ...],
         out: list[_Flat], *, last: bool, bare: bool) -> None:
    if isinstance(action, Verdict):
        if action.kind in ("accept", "drop", "reject"):
            out.append(_Flat(conds, action.kind, note))
        elif action.kind == "return" and chain.hook is None and last and bare:
            pass  # an unconditional return that ends a chain is what falling off its end does anyway
        else:
            raise RenderError(f"chain '{chain.name}': pf has no form for verdict '{action.kind}' here")
    elif isinstance(action, Jump):
        if action.goto:
            raise RenderError(f"chain '{chain.name}': goto has no pf form (only jump is lowered)")
        target = next((c for c in table.chains if c.name == action.chain), None)
        if target is None or target.hook is not None:
            raise RenderError(f"chain '{chain.name}' jumps to '{action.chain}', which is not a regular chain of table '{table.name}'")
        if target.name in stack:
            raise RenderError(f"chain '{action.chain}' is reached by a jump loop: {' -> '.join(stack + (target.name,))}")
        _walk(table, target, conds, note, stack + (target.name,), out)
    else:
        raise RenderError(f"chain '{chain.name}': no pf form for action {action!r} (an unmodelled action is never dropped)")


def _match_cond(table: Table, match: Match) -> _Cond:
    if match.negate and "ct.status" in match.fields:
        raise RenderError(f"negated match on {', '.join(match.fields)}: pf is told only `ct status dnat`, as a tag "
                          "the translation rules set; the freebsd dialect's in rules replace it, so its absence is not lowered")
    if match.negate:
        raise RenderError(f"negated match on {', '.join(match.fields)}: not lowered to pf")
    _check_fields(match.fields)
    if match.set_name is not None:
        set_def = _find_set(table, match.set_name, match.fields)
        return _Cond(match.fields, tuple((k, e.comment, ()) for e in set_def.elements for k in _split_ranges(match.fields, e.key)))
    for key in match.values:
        if len(key) != len(match.fields):
            raise RenderError(f"match on {match.fields}: value {key!r} has the wrong length")
    return _Cond(match.fields, tuple((k, "", ()) for key in match.values for k in _split_ranges(match.fields, key)))


def _map_cond(table: Table, dnat: DnatMap) -> _Cond:
    _check_fields(dnat.fields)
    if dnat.map_name is None:
        return _Cond(dnat.fields, tuple((k, "", data) for key, data in dnat.entries for k in _split_ranges(dnat.fields, key)))
    map_def = _find_set(table, dnat.map_name, dnat.fields)
    want = ("ip.daddr" if dnat.family == 4 else "ip6.daddr",)
    if map_def.data not in (want, want + ("dport",)):
        raise RenderError(f"map '{map_def.name}': DNAT data {map_def.data} is not an address (and port) of family {dnat.family}")
    return _Cond(dnat.fields, tuple((k, e.comment, e.data) for e in map_def.elements for k in _split_ranges(dnat.fields, e.key)))


def _split_ranges(fields: tuple[str, ...], key: tuple[Value, ...]) -> list[tuple[Value, ...]]:
    """An address range (10.0.0.3-10.0.0.9) becomes the networks that cover it exactly."""
    keys: list[tuple[Value, ...]] = [()]
    for f, v in zip(fields, key):
        options: list[Value] = list(v.cidrs()) if isinstance(v, IPRange) and f in ADDR_FIELDS else [v]
        keys = [k + (o,) for k in keys for o in options]
    return keys


def _find_set(table: Table, name: str, fields: tuple[str, ...], verdicts: bool = False) -> SetDef:
    set_def = next((s for s in table.sets if s.name == name), None)
    if set_def is None:
        raise RenderError(f"set '{name}' is not defined in table '{table.name}'")
    if set_def.key != fields:
        raise RenderError(f"set '{name}' has key {set_def.key}, looked up with {fields}")
    for element in set_def.elements:
        fits = len(element.data) == 1 and isinstance(element.data[0], (Verdict, Jump)) if verdicts else len(element.data) == len(set_def.data)
        if len(element.key) != len(fields) or not fits:
            raise RenderError(f"set '{name}': element {element.key!r} does not fit its type")
    return set_def


def _check_fields(fields: Iterable[str]) -> None:
    for f in fields:
        if f in REFUSED_FIELDS:
            raise RenderError(f"match on field '{f}': {REFUSED_FIELDS[f]}")
        if f not in KNOWN_FIELDS:
            raise RenderError(f"match on field '{f}': pf backend does not lower it")


def _check_disjoint(fields: tuple[str, ...], keys: list[tuple[Value, ...]], where: str) -> None:
    """Verdict-map entries are looked up, not tried in order: they must not overlap."""
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            if all(_meet(f, x, y) is not None for f, x, y in zip(fields, a, b)):
                raise RenderError(f"{where}: entries {a!r} and {b!r} overlap")


# -- 2. cells: one value per field ----------------------------------------------


@dataclass(frozen=True)
class _Cell:
    iif: str | None
    oif: str | None
    family: int | None
    saddr: IPNetwork | None  # None: any
    daddr: IPNetwork | None
    proto: int | None
    dport: PortRange | None
    note: str = ""
    target: tuple[IPNetwork, int | None] | None = None  # DNAT only
    dnat: bool = False  # `ct status dnat`: only connections this firewall translated


def _meet(f: str, a: Value, b: Value) -> Value | None:
    """The intersection of two single values of field `f` (None: empty)."""
    if f in ADDR_FIELDS:
        if not isinstance(a, IPNetwork) or not isinstance(b, IPNetwork) or a.version != b.version:
            return None
        return a if a in b else b if b in a else None
    if f == "dport":
        ra, rb = _port_range(a), _port_range(b)
        low, high = max(ra.low, rb.low), min(ra.high, rb.high)
        return PortRange(low, high) if low <= high else None
    return a if a == b else None


def _port_range(v: Value) -> PortRange:
    if isinstance(v, PortRange):
        rng = v
    elif isinstance(v, int) and not isinstance(v, bool):
        rng = PortRange(v, v)
    else:
        raise RenderError(f"port value {v!r} is not a port or a port range")
    if not 0 <= rng.low <= rng.high <= 65535:
        raise RenderError(f"port range {rng} is out of range")
    return rng


def _expand(conds: tuple[_Cond, ...]) -> list[tuple[dict[str, Value], tuple[str, ...], tuple[Value, ...]]]:
    """A conjunction of conds -> the rows (field -> one value) it matches, with comments and mapped data."""
    rows: list[tuple[dict[str, Value], tuple[str, ...], tuple[Value, ...]]] = [({}, (), ())]
    for cond in sorted(conds, key=lambda c: len(c.entries)):  # small conds first: fewer rows built
        grown = []
        for row, notes, data in rows:
            for key, note, mapped in cond.entries:
                merged = dict(row)
                for f, v in zip(cond.fields, key):
                    if f in merged:
                        v = _meet(f, merged[f], v)
                        if v is None:
                            break
                    merged[f] = v
                else:
                    grown.append((merged, notes + ((note,) if note else ()), mapped or data))
        rows = grown
    return rows


def _cells(flat: _Flat, table: Table) -> Iterator[tuple[_Cell, str | None]]:
    """The flat rule's cells, each with its ct.state value (None when not matched)."""
    table_family = {"ip": 4, "ip6": 6, "inet": None}
    if table.family not in table_family:
        raise RenderError(f"table family '{table.family}' has no pf form")
    for row, notes, data in _expand(flat.conds):
        family = table_family[table.family]
        addrs: dict[str, IPNetwork | None] = {"saddr": None, "daddr": None}
        contradiction = False
        for f, (version, which) in ADDR_FIELDS.items():
            if f not in row:
                continue
            net = row[f]
            if not isinstance(net, IPNetwork) or net.version != version:
                raise RenderError(f"field {f}: {net!r} is not an IPv{version} network")
            if family not in (None, version):
                contradiction = True  # ip and ip6 fields together: the rule matches nothing
            family = version
            addrs[which] = None if net.prefixlen == 0 else net.cidr
        if "nfproto" in row:
            if row["nfproto"] not in (4, 6):
                raise RenderError(f"nfproto {row['nfproto']!r} is not an address family (4 or 6)")
            contradiction |= family not in (None, row["nfproto"])
            family = row["nfproto"]  # type: ignore[assignment]
        if flat.dnat is not None:
            if family not in (None, flat.dnat.family):
                contradiction = True
            family = flat.dnat.family
        if contradiction:
            continue
        proto = row.get("l4proto")
        if proto is not None and (not isinstance(proto, int) or isinstance(proto, bool) or not 0 <= proto <= 255):
            raise RenderError(f"l4proto {proto!r} is not a protocol number")
        dport = _port_range(row["dport"]) if "dport" in row else None
        if dport is not None:
            if proto not in PORT_PROTOS:
                raise RenderError(f"a port match on protocol {proto!r}: pf matches ports on tcp and udp only")
            if dport == PortRange(0, 65535):
                dport = None  # every port of tcp or udp: the protocol says it all
        if isinstance(flat.dnat, Dnat):
            data = (flat.dnat.address,) + ((flat.dnat.port,) if flat.dnat.port is not None else ())
        target = _target(flat.dnat, data) if flat.dnat is not None else None
        ifaces = {k: row.get(k) for k in ("iif", "oif")}
        for name in ifaces.values():
            if name is not None:
                interface_name(name)  # type: ignore[arg-type]
        state = row.get("ct.state")
        if state is not None and state not in ("established", "related", "new", "invalid"):
            raise RenderError(f"ct.state {state!r} is not a connection state")
        status = row.get("ct.status")
        if status is not None and status != "dnat":
            raise RenderError(f"ct status {status!r}: pf is told only `ct status dnat` (a tag the translation rules set)")
        cell = _Cell(ifaces["iif"], ifaces["oif"], family, addrs["saddr"], addrs["daddr"], proto, dport,  # type: ignore[arg-type]
                     ", ".join(dict.fromkeys(notes)), target, dnat=status is not None)
        yield cell, state  # type: ignore[misc]


def _target(dnat: DnatMap | Dnat, data: tuple[Value, ...]) -> tuple[IPNetwork, int | None]:
    addr = data[0] if data else None
    if isinstance(addr, IPRange) and addr.size == 1:
        addr = addr.cidrs()[0]
    if not isinstance(addr, IPNetwork) or addr.version != dnat.family or addr.size != 1:
        raise RenderError(f"DNAT target {addr!r} is not one IPv{dnat.family} address")
    port = None
    if len(data) > 1:
        rng = _port_range(data[1])
        if not rng.is_single or rng.low == 0:
            raise RenderError(f"DNAT target port {rng} is not one port")
        port = rng.low
    return addr, port


# -- the lowered ruleset ---------------------------------------------------------


@dataclass
class _Lowered:
    filter_rules: list[tuple[str, str, list[_Cell]]] = field(default_factory=list)  # verdict, comment, cells
    dnat_rules: list[tuple[str, list[_Cell]]] = field(default_factory=list)  # comment, cells
    state_rules: list[str] = field(default_factory=list)  # what the leading ct.state rules said

    @property
    def translated_ifaces(self) -> set[str | None]:
        """The input interfaces of the cells that ask for translated connections (ct status dnat)."""
        return {c.iif for _, _, cells in self.filter_rules for c in cells if c.dnat}

    @property
    def has_ipv6(self) -> bool:
        cells = [c for _, _, cs in self.filter_rules for c in cs] + [c for _, cs in self.dnat_rules for c in cs]
        return any(c.family == 6 for c in cells)


def _lower(ruleset: Ruleset) -> _Lowered:
    forward: list[tuple[Table, Chain]] = []
    prerouting: list[tuple[Table, Chain]] = []
    for table in ruleset.tables:
        for chain in table.chains:
            if chain.hook is None:
                continue
            if chain.hook == "forward" and chain.type == "filter":
                forward.append((table, chain))
            elif chain.hook == "prerouting" and chain.type == "nat":
                prerouting.append((table, chain))
            else:
                raise RenderError(f"base chain '{chain.name}' ({chain.type} on {chain.hook}): the pf backend lowers forward filtering and prerouting DNAT only")
    if len(forward) > 1 or len(prerouting) > 1:
        raise RenderError("more than one forward filter chain or prerouting nat chain: their combined verdict has no single pf rule list")
    low = _Lowered()
    if prerouting:
        _lower_nat(low, *prerouting[0])
    if forward:
        _lower_forward(low, *forward[0])
    return low


def _lower_nat(low: _Lowered, table: Table, chain: Chain) -> None:
    if chain.policy not in (None, "accept"):
        raise RenderError(f"nat chain '{chain.name}' has policy {chain.policy}: pf translation rules cannot drop")
    for flat in _flatten(table, chain):
        if flat.verdict != "dnat":
            raise RenderError(f"nat chain '{chain.name}': verdict '{flat.verdict}' in a nat chain has no pf form")
        cells = []
        for cell, state in _cells(flat, table):
            if state is not None or cell.dnat:
                raise RenderError(f"nat chain '{chain.name}': ct.state and ct.status matches have no pf translation form")
            if cell.oif is not None:
                raise RenderError(f"nat chain '{chain.name}': an output interface in prerouting matches nothing")
            cells.append(cell)
        low.dnat_rules.append((flat.comment, cells))


def _targets_overlap(cells: list[_Cell]) -> bool:
    """Can one packet match two translations with different targets? Then their order matters."""
    buckets: dict[tuple, list[_Cell]] = {}
    for cell in cells:
        buckets.setdefault((cell.iif, cell.family, cell.proto), []).append(cell)
    wild = [c for c in cells if c.iif is None or c.proto is None]
    for bucket in buckets.values():
        for i, a in enumerate(bucket):
            for b in bucket[i + 1:] + [w for w in wild if w not in bucket]:
                if a.target != b.target and _cells_overlap(a, b):
                    return True
    return False


def _check_no_rematch(cells: list[_Cell]) -> None:
    """OpenBSD translates at a match rule at once and later rules see the new packet; netfilter
    translates once. They agree when no translated packet matches another translation rule."""
    for a in cells:
        assert a.target is not None
        addr, port = a.target
        moved = _Cell(a.iif, None, a.family, a.saddr, addr, a.proto, PortRange(port, port) if port is not None else a.dport)
        for b in cells:
            if b is not a and b.target != a.target and _cells_overlap(moved, b):
                raise RenderError(f"a packet translated to {addr} would match the translation to {b.target[0]} too "  # type: ignore[index]
                                  "(openbsd applies match rules one after the other): not written")


def _cells_overlap(a: _Cell, b: _Cell) -> bool:
    def both(x: object, y: object, f: str) -> bool:
        return x is None or y is None or _meet(f, x, y) is not None  # type: ignore[arg-type]

    return (both(a.iif, b.iif, "iif") and a.family == b.family and both(a.proto, b.proto, "l4proto")
            and both(a.saddr, b.saddr, "ip.saddr" if a.family == 4 else "ip6.saddr")
            and both(a.daddr, b.daddr, "ip.daddr" if a.family == 4 else "ip6.daddr")
            and both(a.dport, b.dport, "dport"))


def _lower_forward(low: _Lowered, table: Table, chain: Chain) -> None:
    if chain.policy != "drop":
        raise RenderError(f"forward chain '{chain.name}' has policy {chain.policy}: the pf backend writes a default block (policy drop) only")
    leading = True
    replies_pass = False
    for flat in _flatten(table, chain):
        if flat.verdict == "dnat":
            raise RenderError(f"chain '{chain.name}': DNAT in a filter chain")
        cells = list(_cells(flat, table))
        pure_state = bool(cells) and all(state is not None and cell == _Cell(None, None, cell.family, None, None, None, None, cell.note)
                                         for cell, state in cells)
        states = {state for _, state in cells}
        if pure_state and leading:
            # pf keeps state on every pass rule and checks the state table before any rule:
            # that is 'ct state established,related accept'. pf has no 'invalid' match; a
            # packet that fits no state is filtered by the rules, where a tcp rule creates
            # state only on a SYN (flags S/SA, the default).
            if flat.verdict == "accept" and states == {"established", "related"}:
                replies_pass = True
                low.state_rules.append(f"ct state established,related accept: {flat.comment or 'replies'} (pf: the state table)")
                continue
            if flat.verdict == "drop" and states == {"invalid"}:
                low.state_rules.append("ct state invalid drop (pf: packets that fit no state meet the rules; tcp creates state on SYN only)")
                continue
            raise RenderError(f"chain '{chain.name}': ct state {sorted(s for s in states if s)} {flat.verdict} has no pf form")
        leading = False
        if not replies_pass:
            raise RenderError(f"chain '{chain.name}' does not start with 'ct state established,related accept': "
                              "pf passes replies by state always, so it would accept more than this chain")
        kept = []
        for cell, state in cells:
            if state not in (None, "new"):
                # pf rules only ever see packets that fit no state: a rule about established
                # or related packets cannot be written (and accepting them is already done).
                raise RenderError(f"chain '{chain.name}': a rule on ct state {state} among other matches has no pf form")
            kept.append(cell)  # 'new' is every packet pf's rules see: the match is implied
        low.filter_rules.append((flat.verdict, flat.comment, kept))
    _drop_covered_translated(low)


def _drop_covered_translated(low: _Lowered) -> None:
    """A cell for translated packets that a plain cell of the same run (consecutive rules, one
    verdict) covers says nothing more: the plain cell takes translated packets too, and within
    a run order does not matter. Dropping it changes no packet's fate, and spares pf a rule
    that could never decide (and the freebsd dialect the _dnat tag where nothing else needs it)."""
    start = 0
    rules = low.filter_rules
    while start < len(rules):
        end = start
        while end < len(rules) and rules[end][0] == rules[start][0]:
            end += 1
        plain: dict[tuple, list[_Cell]] = {}
        for _, _, cells in rules[start:end]:
            for c in cells:
                if not c.dnat:
                    plain.setdefault((c.family, c.proto), []).append(c)
        if plain:
            for i in range(start, end):
                verdict, note, cells = rules[i]
                if any(c.dnat for c in cells):
                    kept = [c for c in cells if not c.dnat or not any(
                        _cell_within(c, p) for f in {c.family, None} for q in {c.proto, None} for p in plain.get((f, q), ()))]
                    rules[i] = (verdict, note, kept)
        start = end


def _cell_within(a: _Cell, b: _Cell) -> bool:
    """Does plain cell b match every packet cell a matches? (same family and protocol)"""
    def inside(x: object, y: object, f: str) -> bool:
        return y is None or (x is not None and _meet(f, x, y) == x)  # type: ignore[arg-type]

    addr = "ip.saddr" if a.family == 4 else "ip6.saddr"
    return (inside(a.iif, b.iif, "iif") and inside(a.oif, b.oif, "oif") and inside(a.saddr, b.saddr, addr)
            and inside(a.daddr, b.daddr, addr) and inside(a.dport, b.dport, "dport"))


# -- 3. products: cells merged into rules pf can write ----------------------------

Dims = tuple[frozenset, frozenset, frozenset, frozenset]  # sources, destinations, protocols, ports


def _value_key(v: object) -> tuple:
    if v is None:
        return (0,)
    if isinstance(v, IPNetwork):
        return (1, v.version, v.first, v.prefixlen)
    if isinstance(v, PortRange):
        return (3, v.low, v.high)
    if isinstance(v, int):
        return (2, v)
    return (4, str(v))


def _normalise(dim: int, values: set) -> frozenset:
    if None in values:
        return frozenset([None])  # 'any' absorbs the rest
    if dim in (0, 1):
        return frozenset(cidr_merge(list(values)))
    if dim == 3:
        merged: list[PortRange] = []
        for rng in sorted(values):
            if merged and rng.low <= merged[-1].high + 1:
                merged[-1] = PortRange(merged[-1].low, max(merged[-1].high, rng.high))
            else:
                merged.append(rng)
        return frozenset(merged)
    return frozenset(values)


def _products(cells: Iterable[_Cell]) -> list[tuple[Dims, list[str]]]:
    """Cells -> products (sources x destinations x protocols x ports) covering exactly their union.

    Greedy: merge ports, then protocols, then sources, then destinations, each time among
    products equal in the other three dimensions, so a union is never widened."""
    rects: dict[Dims, dict[str, None]] = {}
    for c in cells:
        key: Dims = (frozenset([c.saddr]), frozenset([c.daddr]), frozenset([c.proto]), frozenset([c.dport]))
        rects.setdefault(key, {}).update({c.note: None} if c.note else {})
    for dim in (3, 2, 0, 1):
        merged: dict[tuple, tuple[set, dict[str, None]]] = {}
        for key, notes in rects.items():
            rest = key[:dim] + key[dim + 1:]
            values, seen = merged.setdefault(rest, (set(), {}))
            values.update(key[dim])
            seen.update(notes)
        rects = {}
        for rest, (values, notes) in merged.items():
            new_key: Dims = rest[:dim] + (_normalise(dim, values),) + rest[dim:]  # type: ignore[assignment]
            rects.setdefault(new_key, {}).update(notes)
    out = [(key, list(notes)) for key, notes in rects.items()]
    out.sort(key=lambda item: tuple(tuple(sorted(_value_key(v) for v in dim)) for dim in item[0]))
    return out


# -- 4. writing ------------------------------------------------------------------


class _Writer:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.macros = _Names(suffix="_if")
        self.tags = _Names(prefix="fwm_in_")
        # freebsd, on an input interface with translated cells: in on it and translated
        self.dnat_tags = _Names(prefix="fwm_in_", suffix="_dnat")
        self.dnat_tags.used = self.tags.used  # one namespace: an interface 'x_dnat' gets another name
        self.tables: dict[tuple[IPNetwork, ...], str] = {}
        self.table_notes: dict[str, str] = {}

    def iface(self, name: str) -> str:
        return "$" + self.macros.get(interface_name(name))

    def addresses(self, values: frozenset, notes: list[str]) -> str:
        if values == frozenset([None]):
            return "any"
        nets = tuple(sorted(values, key=_value_key))
        if len(nets) == 1:
            return _address(nets[0])
        if nets not in self.tables:
            name = f"fwm_{len(self.tables) + 1}"
            self.tables[nets] = name
            self.table_notes[name] = ", ".join(notes)
        return f"<{self.tables[nets]}>"

    def hosts(self, dims: Dims, notes: list[str]) -> str:
        src, dst, _, ports = dims
        text = f"from {self.addresses(src, notes)} to {self.addresses(dst, notes)}"
        if ports != frozenset([None]):
            text += " port " + _list([_port(p) for p in sorted(ports)])
        return text

    def rule(self, head: str, family: int | None, dims: Dims, notes: list[str], opts: list[str]) -> str:
        parts = [head]
        if family is not None:
            parts.append("inet" if family == 4 else "inet6")
        protos = dims[2]
        if protos != frozenset([None]):
            parts.append("proto " + _list([PROTO_NAMES.get(p, str(p)) for p in sorted(protos)]))
        parts.append(self.hosts(dims, notes))
        parts.extend(opts)
        return " ".join(parts)


def _address(net: IPNetwork) -> str:
    return str(net.ip) if net.size == 1 else str(net.cidr)


def _port(rng: PortRange) -> str:
    return str(rng.low) if rng.is_single else f"{rng.low}:{rng.high}"


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + " ".join(items) + " }"


_VERDICT_HEAD = {"accept": "pass", "drop": "block drop", "reject": "block return"}


def _runs(rules: list[tuple[str, str, list[_Cell]]]) -> list[tuple[str, list[tuple[_Cell, str]]]]:
    """Consecutive rules with one verdict, merged: within a run order does not matter."""
    runs: list[tuple[str, list[tuple[_Cell, str]]]] = []
    for verdict, note, cells in rules:
        if not cells:
            continue
        if runs and runs[-1][0] == verdict:
            runs[-1][1].extend((c, note) for c in cells)
        else:
            runs.append((verdict, [(c, note) for c in cells]))
    return runs


def _filter_lines(w: _Writer, low: _Lowered, direction: str) -> list[str]:
    """The in-list (pre-filter, out-interface dropped) or the out-list (exact)."""
    freebsd = w.dialect == "freebsd"
    translated_in = low.translated_ifaces  # freebsd: these interfaces' in rules set one of two tags (see 5.)
    projected: list[tuple[str, str, list[_Cell]]] = []
    for verdict, note, cells in low.filter_rules:
        if freebsd and any(c.dnat and c.iif is None for c in cells):
            raise RenderError("a rule for translated connections (ct status dnat) without an input interface: the freebsd "
                              "dialect carries the translation to the out rules in the input interface's tag, which needs the interface")
        if direction == "in":
            if verdict != "accept" and any(c.oif is not None for c in cells):
                # A drop that depends on the out-interface cannot be decided on the way
                # in; the exact out-list applies it. Skipping it here only widens the
                # pre-filter, never the result.
                cells = [c for c in cells if c.oif is None]
            cells = [replace(c, oif=None) for c in cells]
            if freebsd and verdict == "accept" and any(c.iif is None for c in cells):
                raise RenderError("an accept rule without an input interface: the freebsd dialect carries the input "
                                  "interface to the out rules as a tag, and a tag needs the interface")
        projected.append((verdict, note, cells))
    lines: list[str] = []
    for verdict, items in _runs(projected):
        groups: dict[tuple, list[tuple[_Cell, str]]] = {}
        for cell, note in items:
            key = (cell.iif, None, cell.family, cell.dnat) if direction == "in" else (cell.oif, cell.iif, cell.family, cell.dnat)
            groups.setdefault(key, []).append((cell, note))
        # Each group is written in one or two variants: 'dnat' (a translated cell), 'plain', and
        # on freebsd 'twin' (a plain cell on an interface with translated cells, for translated
        # packets: in, before the plain variant, so that they get the _dnat tag; out, for the
        # packets carrying that tag).
        order: list[tuple[tuple, tuple, str]] = []
        for key, members in groups.items():
            on, received, family, dnat = key
            iif = on if direction == "in" else received
            if dnat:
                variants = ["dnat"]
            elif freebsd and iif is not None and iif in translated_in and (direction == "out" or verdict == "accept"):
                variants = ["twin", "plain"]
            else:
                variants = ["plain"]
            for variant in variants:
                rank = {"dnat": 0, "twin": 1, "plain": 2}[variant]
                # in: per input interface, the variants that set the _dnat tag first (the order
                # within a run of one verdict changes only the tag); out: the order is free
                sort = (on or "", rank, family or 0) if direction == "in" else (on or "", received or "", family or 0, rank)
                order.append((sort, key, variant))
        order.sort(key=lambda item: item[0])
        products: dict[tuple, list[tuple[Dims, list[str]]]] = {}
        last_notes = None
        for _, key, variant in order:
            on, received, family, dnat = key
            members = groups[key]
            notes = list(dict.fromkeys(n for _, n in members if n))
            if notes and notes != last_notes:
                lines.append(comment("; ".join(notes)))
            last_notes = notes
            head = f"{_VERDICT_HEAD[verdict]} {direction} quick" + (f" on {w.iface(on)}" if on else "")
            if key not in products:
                products[key] = _products(c for c, _ in members)  # a twin and its plain rule: the same products
            for dims, labels in products[key]:
                lines.append(w.rule(head, family, dims, labels, _filter_opts(w, direction, verdict, on, received, variant, labels)))
    return lines


def _filter_opts(w: _Writer, direction: str, verdict: str, on: str | None, received: str | None, variant: str,
                 labels: list[str]) -> list[str]:
    """What a filter rule says after its hosts: the input interface and the translation (see 4., 5.)."""
    opts: list[str] = []
    translated = variant in ("dnat", "twin")
    if w.dialect == "openbsd":
        if received is not None:
            opts.append(f"received-on {w.iface(received)}")
        if translated:
            opts.append(f"tagged {DNAT_TAG}")
    elif direction == "in":
        if translated:
            opts.append(f"tagged {DNAT_TAG}")
        if verdict == "accept" and on is not None:
            iface = interface_name(on)
            opts.append(f"tag {w.dnat_tags.get(iface) if translated else w.tags.get(iface)}")
    elif received is not None:
        iface = interface_name(received)
        opts.append(f"tagged {w.dnat_tags.get(iface) if translated else w.tags.get(iface)}")
    if labels:
        opts.append(label(", ".join(labels)))
    return opts


def _translation_lines(w: _Writer, low: _Lowered) -> list[str]:
    items = [(note, cell) for note, cells in low.dnat_rules for cell in cells]
    cells = [cell for _, cell in items]
    if w.dialect == "openbsd":
        _check_no_rematch(cells)
    # netfilter, FreeBSD's rdr and (given the check above) OpenBSD's match rules all let the
    # first translation that matches win. When no two targets overlap, order is free and each
    # target's entries merge; otherwise only neighbours with one target merge.
    runs: list[tuple[tuple, list[tuple[str, _Cell]]]] = []
    if _targets_overlap(cells):
        for note, cell in items:
            if runs and runs[-1][0] == cell.target:
                runs[-1][1].append((note, cell))
            else:
                runs.append((cell.target, [(note, cell)]))  # type: ignore[arg-type]
    else:
        by_target: dict[tuple, list[tuple[str, _Cell]]] = {}
        for note, cell in items:
            by_target.setdefault(cell.target, []).append((note, cell))  # type: ignore[arg-type]
        runs = list(by_target.items())
    # `tag fwm_dnat` on every translation rule when a filter rule asks for translated packets
    tag = [f"tag {DNAT_TAG}"] if low.translated_ifaces else []
    lines: list[str] = []
    for (addr, port), members in runs:
        notes = comment("; ".join(dict.fromkeys(note for note, _ in members if note)))
        if notes != "# " and notes not in lines:
            lines.append(notes)
        to = _address(addr) + (f" port {port}" if port is not None else "")
        groups: dict[tuple, list[_Cell]] = {}
        for _, cell in members:
            groups.setdefault((cell.iif, cell.family), []).append(cell)
        for (on, family), group in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or 0)):
            for dims, labels in _products(group):
                if w.dialect == "openbsd":
                    head = "match in" + (f" on {w.iface(on)}" if on else "")
                    opts = [f"rdr-to {to}"] + tag + ([label(", ".join(labels))] if labels else [])
                    lines.append(w.rule(head, family, dims, labels, opts))
                else:
                    if labels:
                        lines.append(comment(", ".join(labels)))  # rdr rules take no label
                    head = "rdr" + (f" on {w.iface(on)}" if on else "")
                    lines.append(w.rule(head, family, dims, labels, tag + [f"-> {to}"]))  # pf.conf(5): tag before ->
    return lines


def render(ruleset: Ruleset, dialect: str = DEFAULT_DIALECT) -> str:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown pf dialect {dialect!r} (known: {', '.join(DIALECTS)})")
    w = _Writer(dialect)
    try:
        low = _lower(ruleset)
        translation = _translation_lines(w, low)
        ins = _filter_lines(w, low, "in")
        outs = _filter_lines(w, low, "out")
    except RenderError as exc:
        firewall = f"firewall '{ruleset.header.firewall}', " if ruleset.header else ""
        raise RenderError(f"pf ({firewall}{dialect}): {exc.message}") from None

    out: list[str] = []
    h = ruleset.header
    if h is not None:
        digest = h.content_hash if HEX_RE.match(h.content_hash) else safe_text(h.content_hash, 64)
        out += [
            comment(f"Generated by {h.generator} from matrix '{h.matrix}' for firewall '{h.firewall}'."),
            f"# matrix sha256: {digest}",
        ]
    if dialect == "openbsd":
        out.append("# pf dialect: openbsd (OpenBSD 4.7 or later: match ... rdr-to, received-on)")
    else:
        out.append("# pf dialect: freebsd (FreeBSD pf, pfSense, OPNsense: rdr ... ->, tags)")
    out += [
        "# Do not edit: change the matrix and compile again. Check it on the firewall with: pfctl -nf FILE",
        "# Every rule is 'quick': the first rule that matches decides, as in a netfilter chain.",
        "# Every pass rule keeps state (pf's default): replies pass by the state table.",
    ]
    if w.macros.by_source:
        out += ["", "# interfaces"]
        out += [f'{macro} = "{iface}"' for iface, macro in sorted(w.macros.by_source.items())]
    if w.tables:
        out += ["", "# address groups"]
        for nets, name in sorted(w.tables.items(), key=lambda kv: int(kv[1].split("_")[1])):
            if w.table_notes[name]:
                out.append(comment(f"{name}: {w.table_notes[name]}"))
            out.append(f"table <{name}> const {{ {' '.join(_address(n) for n in nets)} }}")
    out += ["", f"set skip on {'lo' if dialect == 'openbsd' else 'lo0'}"]
    tagged = [f"# tag {DNAT_TAG}: translated by these rules (netfilter: ct status dnat); a port forward's filter rules pass only such packets"] \
        if translation and low.translated_ifaces else []
    if dialect == "freebsd" and translation:
        # FreeBSD's pfctl wants translation rules before filter rules (require-order).
        out += ["", "# translation (netfilter: prerouting DNAT); the filter rules below see the translated packet"]
        out += tagged + translation
    out += [
        "",
        "# default: block what no rule passes (netfilter: forward policy drop). This blocks the",
        f"# firewall's own traffic too: rules for it go in anchor \"{LOCAL_ANCHOR}\" (at the end).",
        "block drop all",
    ]
    if dialect == "openbsd" and translation:
        out += ["", "# translation (netfilter: prerouting DNAT); the rules after a match rule see the translated packet"]
        out += tagged + translation
    if low.state_rules:
        out += ["", "# replies and state, as the forward chain begins:"]
        out += [comment(text) for text in low.state_rules]
    if low.has_ipv6:
        out += [
            "",
            "# IPv6 neighbour discovery of the firewall itself: without it no IPv6 packet is forwarded",
            "pass in quick inet6 proto icmp6 from any to { self ff02::/16 } icmp6-type { neighbrsol neighbradv }",
            "pass out quick inet6 proto icmp6 from self to any icmp6-type { neighbrsol neighbradv }",
        ]
    if ins:
        out += [
            "",
            "# forwarded traffic, in on the input interface: a pre-filter, the out rules below decide exactly",
            "# (a packet for the firewall itself that fits one of these passes in, as netfilter's input would take it)",
        ]
        out += ins
    if outs:
        via = "received-on" if dialect == "openbsd" else "the tag its pass in rule set"
        out += ["", f"# forwarded traffic, out on the output interface, with the input interface ({via})"]
        if dialect == "freebsd" and low.translated_ifaces:
            out.append("# fwm_in_IF_dnat: in on IF and translated; fwm_in_IF: in on IF and not (rules for both kinds say both)")
        out += outs
    out += [
        "",
        f"# the firewall's own traffic (management, DNS, NTP): load rules with pfctl -a {LOCAL_ANCHOR} -f FILE",
        f'anchor "{LOCAL_ANCHOR}"',
    ]
    return "\n".join(out) + "\n"


# -- the backend interface (see fwmatrix/targets.py) ------------------------------


def render_files(ruleset: Ruleset, *, dialect: str = DEFAULT_DIALECT) -> dict[str, str]:
    """File suffix -> contents, for one firewall."""
    return {SUFFIX: render(ruleset, dialect)}


def check_files(files: dict[str, str], *, dialect: str | None = None) -> list[str]:
    """Structural problems in rendered files ('suffix:line: message'); [] when none.

    No pfctl here: this re-parses the subset of pf.conf(5) the renderer writes.
    The dialect comes from the header comment unless given."""
    problems: list[str] = []
    for suffix, text in sorted(files.items()):
        problems += [f"{suffix}:{p}" for p in check(text, dialect)]
    return problems


def check(text: str, dialect: str | None = None) -> list[str]:
    return parse(text, dialect).problems


# -- reading it back: the subset of pf.conf(5) written above ----------------------


@dataclass
class PfRule:
    """One rule line, macros expanded. Addresses: 'any', 'self', a literal or '<table>'."""

    line: int
    action: str  # 'pass', 'block', 'match', 'rdr', 'anchor'
    block: str | None = None  # 'drop' or 'return' for block
    direction: str | None = None
    quick: bool = False
    on: str | None = None
    af: str | None = None
    protos: tuple[str, ...] = ()
    src: tuple[str, ...] = ("any",)
    dst: tuple[str, ...] = ("any",)
    ports: tuple[str, ...] = ()  # destination ports: '443' or '10000:30000'
    icmp6_types: tuple[str, ...] = ()
    received_on: str | None = None
    tag: str | None = None
    tagged: str | None = None
    rdr_to: str | None = None
    rdr_port: int | None = None
    label: str | None = None
    name: str | None = None  # anchor name
    all: bool = False

    @property
    def expanded(self) -> int:
        """Rules pfctl makes of this one: lists expand, tables do not."""
        n = 1
        for items in (self.protos, self.src, self.dst, self.ports, self.icmp6_types):
            n *= max(1, len(items))
        return n


@dataclass
class PfConf:
    dialect: str
    macros: dict[str, str] = field(default_factory=dict)
    tables: dict[str, tuple[str, ...]] = field(default_factory=dict)
    skip: list[str] = field(default_factory=list)
    rules: list[PfRule] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def rule_count(self) -> int:
        return sum(1 for r in self.rules if r.action != "anchor")

    @property
    def expanded_rule_count(self) -> int:
        return sum(r.expanded for r in self.rules if r.action != "anchor")


_TOKEN_RE = re.compile(r'\s*(?:(?P<quoted>"[^"\\\n]*")|(?P<table><[^<>\s]*>)|(?P<macro>\$[A-Za-z0-9_]+)|(?P<arrow>->)'
                       r"|(?P<punct>[{}=,!])|(?P<word>[A-Za-z0-9_.:/*%+-]+))")
_DIALECT_RE = re.compile(r"# pf dialect: (\w+)")
_ICMP6_TYPES = ("neighbrsol", "neighbradv")


class _Bad(Exception):
    pass


def _strip_comment(line: str) -> str:
    """The line without its comment: '#' outside double quotes runs to the end of the line."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise _Bad(f"unexpected character {text[pos:].lstrip()[:1]!r}")
        out.append(m.group(m.lastgroup))  # type: ignore[arg-type]
        pos = m.end()
    return out


def parse(text: str, dialect: str | None = None) -> PfConf:
    """Parse a rendered file back; structural problems are collected, not raised."""
    found = _DIALECT_RE.search(text)
    conf = PfConf(dialect or (found.group(1) if found else DEFAULT_DIALECT))
    if conf.dialect not in DIALECTS:
        conf.problems.append(f"1: unknown dialect {conf.dialect!r}")
        return conf
    section = 0  # freebsd order: options 0, translation 1, filter 2
    default_block = False
    for number, raw in enumerate(text.split("\n"), 1):
        try:
            if "\\" in raw:
                raise _Bad("backslash: pfctl would join lines (even inside a comment)")
            if "\r" in raw:
                raise _Bad("carriage return in a line")
            body = _strip_comment(raw)
            toks = _tokens(body)
            if not toks:
                continue
            toks = _expand_macros(conf, toks)
            if toks.count("{") != toks.count("}"):
                raise _Bad("unbalanced braces")
            head = toks[0]
            if len(toks) >= 3 and toks[1] == "=" and head not in PF_KEYWORDS:
                _parse_macro(conf, toks)
            elif head == "table":
                _parse_table(conf, toks)
            elif head == "set":
                if toks[:3] != ["set", "skip", "on"] or len(toks) != 4:
                    raise _Bad("only 'set skip on IFACE' is written")
                if section > 0 and conf.dialect == "freebsd":
                    raise _Bad("options must come before translation and filter rules")
                conf.skip.append(toks[3])
            else:
                rule = _parse_rule(conf, toks, number)
                kind = 1 if rule.action == "rdr" else 2
                if conf.dialect == "freebsd" and kind < section:
                    raise _Bad("translation rules must come before filter rules (pfctl require-order)")
                section = max(section, kind)
                if rule.action == "block" and rule.all and rule.direction is None and not rule.quick and rule.on is None:
                    default_block = True
                elif rule.action in ("pass", "block") and not rule.quick:
                    raise _Bad("a filter rule without 'quick': the last match would decide, not the first")
                if rule.action in ("pass", "block", "match") and not default_block:
                    raise _Bad("a filter rule before the default 'block drop all'")
                conf.rules.append(rule)
        except _Bad as bad:
            conf.problems.append(f"{number}: {bad}")
    if not default_block:
        conf.problems.append("0: no default 'block drop all': pf passes what no rule matches")
    return conf


def _expand_macros(conf: PfConf, toks: list[str]) -> list[str]:
    out: list[str] = []
    for tok in toks:
        if tok.startswith("$"):
            name = tok[1:]
            if name not in conf.macros:
                raise _Bad(f"macro '{name}' is not defined")
            out += _tokens(conf.macros[name])
        else:
            out.append(tok)
    return out


def _parse_macro(conf: PfConf, toks: list[str]) -> None:
    name, value = toks[0], toks[2:]
    if not IDENT_RE.match(name):
        raise _Bad(f"bad macro name {name!r}")
    if len(value) != 1 or not value[0].startswith('"'):
        raise _Bad("a macro's value is written as one quoted string")
    if name in conf.macros:
        raise _Bad(f"macro '{name}' is defined twice")
    conf.macros[name] = value[0][1:-1]


def _parse_table(conf: PfConf, toks: list[str]) -> None:
    if len(toks) < 5 or toks[2] != "const" or toks[3] != "{" or toks[-1] != "}":
        raise _Bad("a table is written as: table <name> const { address ... }")
    name = _table_name(toks[1])
    if name in conf.tables:
        raise _Bad(f"table <{name}> is defined twice")
    members = tuple(t for t in toks[4:-1] if t != ",")
    if not members:
        raise _Bad(f"table <{name}> is empty")
    for member in members:
        _check_address(member, None)
    conf.tables[name] = members


def _table_name(tok: str) -> str:
    name = tok[1:-1] if tok.startswith("<") and tok.endswith(">") else ""
    if not IDENT_RE.match(name) or len(name) > TABLE_NAME_MAX or name in PF_KEYWORDS:
        raise _Bad(f"bad table name {tok!r}")
    return name


def _check_address(tok: str, af: str | None) -> None:
    try:
        net = IPNetwork(tok)
    except (AddrFormatError, ValueError, TypeError):
        raise _Bad(f"{tok!r} is not an address") from None
    if (net.version == 4 and "." not in tok) or (net.version == 6 and ":" not in tok):
        raise _Bad(f"{tok!r} is not written as an address")
    if af is not None and (af == "inet") != (net.version == 4):
        raise _Bad(f"{tok} does not belong to address family {af}")


class _Cursor:
    def __init__(self, toks: list[str]) -> None:
        self.toks, self.i = toks, 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, *words: str) -> bool:
        if self.peek() in words:
            self.i += 1
            return True
        return False

    def next(self, what: str) -> str:
        tok = self.peek()
        if tok is None:
            raise _Bad(f"missing {what}")
        self.i += 1
        return tok

    def items(self, what: str) -> tuple[str, ...]:
        """One item or a { list }."""
        if self.take("{"):
            out = []
            while not self.take("}"):
                tok = self.next(f"'}}' closing the {what} list")
                if tok in ("{", "!"):
                    raise _Bad(f"unexpected {tok!r} in a {what} list")
                if tok != ",":
                    out.append(tok)
            if not out:
                raise _Bad(f"empty {what} list")
            return tuple(out)
        tok = self.next(what)
        if tok in ("{", "}", ",", "!", "="):
            raise _Bad(f"expected {what}, found {tok!r}")
        return (tok,)


def _parse_rule(conf: PfConf, toks: list[str], line: int) -> PfRule:
    c = _Cursor(toks)
    action = c.next("an action")
    if action == "anchor":
        name = c.next("the anchor's name")
        if not name.startswith('"') or c.peek() is not None:
            raise _Bad('an anchor is written as: anchor "name"')
        return PfRule(line, "anchor", name=name[1:-1])
    if action not in ("pass", "block", "match", "rdr"):
        raise _Bad(f"unknown statement {action!r}")
    if action == "match" and conf.dialect != "openbsd":
        raise _Bad("'match' rules are OpenBSD syntax")
    if action == "rdr" and conf.dialect != "freebsd":
        raise _Bad("'rdr ... ->' was removed in OpenBSD 4.7: use match in ... rdr-to")
    rule = PfRule(line, action)
    if action == "block":
        rule.block = "drop" if c.take("drop") else "return" if c.take("return") else None
        if rule.block is None:
            raise _Bad("block without drop or return depends on set block-policy")
    if action != "rdr":
        direction = c.peek()
        rule.direction = direction if c.take("in", "out") else None
        rule.quick = c.take("quick")
    if c.take("on"):
        rule.on = _iface(c.next("an interface"))
    if c.peek() in ("inet", "inet6"):
        rule.af = c.next("")
    if c.take("proto"):
        rule.protos = c.items("protocol")
        for proto in rule.protos:
            if proto not in PROTO_NUMBERS and not (proto.isdigit() and int(proto) <= 255):
                raise _Bad(f"unknown protocol {proto!r}")
    if c.take("all"):
        rule.all = True
    else:
        if not c.take("from"):
            raise _Bad("expected 'from' or 'all'")
        rule.src = _hosts(conf, c, rule.af)
        if not c.take("to"):
            raise _Bad("expected 'to'")
        rule.dst = _hosts(conf, c, rule.af)
        if c.take("port"):
            rule.ports = c.items("port")
            for port in rule.ports:
                _check_port(port)
            if not rule.protos or any(p not in ("tcp", "udp") for p in rule.protos):
                raise _Bad("'port' applies to tcp and udp only")
    while c.peek() is not None:
        opt = c.next("an option")
        if opt == "icmp6-type":
            rule.icmp6_types = c.items("icmp6 type")
            if rule.protos != ("icmp6",) or any(t not in _ICMP6_TYPES for t in rule.icmp6_types):
                raise _Bad("icmp6-type goes with proto icmp6 and the types neighbrsol, neighbradv")
        elif opt == "received-on" and conf.dialect == "openbsd" and action in ("pass", "block") and rule.direction == "out":
            rule.received_on = _iface(c.next("an interface"))
        elif opt == "tag" and ((action == "pass" and rule.direction == "in" and conf.dialect == "freebsd")
                               or action == "match" or (action == "rdr" and rule.rdr_to is None)):
            # freebsd: the input interface, for the out rules; translation rules: fwm_dnat
            # (pf.conf(5): an rdr rule's tag comes before '->')
            rule.tag = _tag_name(c, opt, rule.tag)
        elif opt == "tagged" and action in ("pass", "block"):
            rule.tagged = _tag_name(c, opt, rule.tagged)
        elif opt == "rdr-to" and action == "match" and rule.direction == "in":
            rule.rdr_to, rule.rdr_port = _redirect(c, rule.af)
        elif opt == "->" and action == "rdr":
            rule.rdr_to, rule.rdr_port = _redirect(c, rule.af)
        elif opt == "label" and action != "rdr":
            text = c.next("the label")
            if not text.startswith('"') or len(text) - 2 > LABEL_MAX or "$" in text:
                raise _Bad(f"bad label {text}")
            rule.label = text[1:-1]
        else:
            raise _Bad(f"unexpected {opt!r} in a {action} rule")
    if action in ("match", "rdr") and rule.rdr_to is None:
        raise _Bad(f"a {action} rule without a redirection")
    return rule


def _tag_name(c: _Cursor, opt: str, before: str | None) -> str:
    if before is not None:
        raise _Bad(f"'{opt}' twice in one rule")
    tag = c.next("a tag")
    if not IDENT_RE.match(tag) or tag in PF_KEYWORDS or len(tag) > TAG_MAX:
        raise _Bad(f"bad tag {tag!r}")
    return tag


def _iface(tok: str) -> str:
    try:
        return interface_name(tok)
    except RenderError:
        raise _Bad(f"bad interface name {tok!r}") from None


def _hosts(conf: PfConf, c: _Cursor, af: str | None) -> tuple[str, ...]:
    items = c.items("address")
    for item in items:
        if item in ("any", "self"):
            if len(items) > 1 and item == "any":
                raise _Bad("'any' inside a list")
        elif item.startswith("<"):
            name = _table_name(item)
            if name not in conf.tables:
                raise _Bad(f"table <{name}> is not defined (pf would create it empty)")
            for member in conf.tables[name]:
                _check_address(member, af)
        else:
            _check_address(item, af)
    return items


def _check_port(tok: str) -> None:
    low, _, high = tok.partition(":")
    if not low.isdigit() or (high and not high.isdigit()):
        raise _Bad(f"bad port {tok!r}")
    lo, hi = int(low), int(high or low)
    if not (0 <= lo <= hi <= 65535):
        raise _Bad(f"port {tok!r} is out of range")


def _redirect(c: _Cursor, af: str | None) -> tuple[str, int | None]:
    addr = c.next("the redirection address")
    _check_address(addr, af)
    if "/" in addr:
        raise _Bad("a redirection goes to one address")
    port = None
    if c.take("port"):
        tok = c.next("the redirection port")
        if not tok.isdigit() or not 1 <= int(tok) <= 65535:
            raise _Bad(f"bad redirection port {tok!r}")
        port = int(tok)
    return addr, port


# Used by tests and reports: how many rules a rendered file holds (written, and as pfctl expands them).
def rule_counts(text: str) -> tuple[int, int]:
    conf = parse(text)
    return conf.rule_count, conf.expanded_rule_count


# == Reading pf rulesets into the IR, with netfilter's semantics =================
#
# `parse_ruleset` reads a pf.conf, or what `pfctl -sr`, `-sn` or `-sa` prints
# (rules expanded, no macros, tables by name only), into the Ruleset IR, so that
# the one evaluator judges pf firewalls too. pf's semantics become netfilter's:
#
# * The last matching rule decides, unless a matching rule is `quick`; a packet no
#   rule matches passes. That is first match over [quick rules in file order] +
#   [the other rules in reverse order], with policy accept. (A quick anchor's rules
#   go to the quick part, in their own such order; other anchors are inline.)
# * A forwarded packet is filtered twice: in on its input interface, then out on
#   its output interface. Two forward base chains: "in" (priority -1, `on` is the
#   iif) and "out" (priority 0, `on` is the oif); a rule without in/out is in both.
#   The evaluator forwards a packet only if every forward base chain passes it.
#   `received-on IF` is a match on the iif; `tagged T` too, when T is set only by
#   rules `in on IF` and every packet in on IF meets a block rule (else unmodelled).
# * `tagged T`, where T is set by every translation rule and by translation rules only
#   (rdr, `match in ... rdr-to`), is `ct status dnat`: the packet was translated. In the
#   out pass that holds while no in rule replaced T; the renderer's freebsd pair of
#   interface tags (fwm_in_IF_dnat set by rules that ask for `tagged fwm_dnat`, fwm_in_IF
#   by their plain twins) is read as IF and translated, IF and not. See _Builder._tag.
# * pf looks packets up in its state table before any rule, and pass rules keep
#   state unless `no state`: both chains start with `ct state established,related
#   accept`. Replies that meet the rules instead (those of `no state` rules, and of
#   packets passed by default, which keeps no state) are judged both ways. tcp
#   creates state on a SYN only (`flags S/SA`, the default): flags are not
#   modelled, a connection is a connection.
# * Translation becomes a prerouting nat chain of first-match DNAT rules, and the
#   filter chains see translated packets, as pf.conf(5) says for old-style `rdr`
#   (FreeBSD; evaluated before the filter, binat first) and for rules after a
#   `match ... rdr-to` (OpenBSD). OpenBSD applies every matching `match ... rdr-to`
#   at once and later rules see the new packet, so a later one can translate it
#   again (the last that matches the packet as it then is wins): the nat chain gets
#   the composed translation first. A `pass ... rdr-to` translates only when it is
#   the rule that decides: the filter's own first-match order, mirrored in the nat
#   chain. Filter rules before a `match ... rdr-to` judged the packet untranslated:
#   where that can differ, their verdict on translated packets is left open.
# * `rdr pass` and `pass ... rdr-to` pass the translated packet without the rest of
#   the in rules (pf.conf(5): "passed without inspecting the filter rules"); the
#   out pass is a separate evaluation and still filters it. The IR cannot tell the
#   packets this rule translated from others with the same header (`ct status dnat`
#   says translated, not by which rule: that needs the original destination): that
#   accept is judged both ways.
# * Source NAT (`nat`, `nat-to`, binat's outbound half) does not change what is
#   forwarded and is skipped; `nat pass` lets the packet out without the out rules.
#   binat's inbound half is a DNAT (one address to one address; else unmodelled).
#
# What cannot be modelled is kept as ir.Unmodelled / ir.UnmodelledAction, never
# dropped: interface groups (egress), addresses of interfaces, host names, `self`
# as a source, tables filled at run time or from files, `no-route`, `urpf-failed`,
# icmp types, user/group/os/tos/prio/probability, state limits, route-to/reply-to/
# dup-to/divert, af-to, rdr-to on the way out, translation to several addresses,
# anchors and includes whose rules are not given. Source ports become the IR's
# `sport` (which the evaluator judges both ways). `to self` never matches a
# forwarded packet (its destination is not the firewall), nor do link-local scopes
# and loopback (RFC 4291, 3927): such rules vanish from the filter chains.

PARSED_TABLE = "pf"
PRIORITY_IN, PRIORITY_OUT = -1, 0  # the in pass judges a packet before the out pass

PF_PROTOCOLS: dict[str, int] = {
    "ip": 0, "hopopt": 0, "icmp": 1, "igmp": 2, "ggp": 3, "ipencap": 4, "ipip": 4, "tcp": 6, "egp": 8, "udp": 17,
    "ipv6": 41, "ipv6-route": 43, "ipv6-frag": 44, "rsvp": 46, "gre": 47, "esp": 50, "ah": 51, "ipv6-icmp": 58,
    "icmp6": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "eigrp": 88, "ospf": 89, "etherip": 97, "pim": 103, "ipcomp": 108,
    "vrrp": 112, "carp": 112, "l2tp": 115, "sctp": 132, "udplite": 136, "pfsync": 240, "dccp": 33,
}
# Service names as /etc/services gives them, for the ports pfctl prints by name.
PF_SERVICES: dict[str, int] = {
    "ftp-data": 20, "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "bootps": 67, "bootpc": 68,
    "tftp": 69, "www": 80, "http": 80, "kerberos": 88, "pop3": 110, "sunrpc": 111, "auth": 113, "ident": 113,
    "ntp": 123, "netbios-ns": 137, "netbios-dgm": 138, "netbios-ssn": 139, "imap": 143, "snmp": 161,
    "snmptrap": 162, "snmp-trap": 162, "bgp": 179, "ldap": 389, "https": 443, "microsoft-ds": 445, "isakmp": 500,
    "syslog": 514, "submission": 587, "ldaps": 636, "imaps": 993, "pop3s": 995, "openvpn": 1194, "ms-sql-s": 1433,
    "radius": 1812, "radius-acct": 1813, "nfs": 2049, "mysql": 3306, "ms-wbt-server": 3389, "ipsec-nat-t": 4500,
    "sip": 5060, "sip-tls": 5061, "postgresql": 5432, "spamd": 8025, "http-alt": 8080,
}
# Interface groups OpenBSD makes by itself: their members are known only on the firewall.
PF_GROUPS = frozenset({"egress", "carp", "enc", "pflog", "pfsync", "tun", "tap", "gif", "gre", "wg", "vlan", "bridge",
                       "veb", "tpmr", "pppoe", "all"})
# Addresses no router forwards from or to (loopback, link-local scopes).
_NEVER_FORWARDED = {
    ("saddr", 4): IPSet(["127.0.0.0/8", "169.254.0.0/16"]),
    ("daddr", 4): IPSet(["127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/24", "255.255.255.255/32"]),
    ("saddr", 6): IPSet(["::1/128", "fe80::/10"]),
    ("daddr", 6): IPSet(["::1/128", "fe80::/10", "ff01::/16", "ff02::/16"]),
}
_ALL = {4: IPSet(["0.0.0.0/0"]), 6: IPSet(["::/0"])}
_ESTABLISHED = Match(("ct.state",), (("established",), ("related",)))
_TRANSLATED = Match(("ct.status",), (("dnat",),))
_UNTRANSLATED = Match(("ct.status",), (("dnat",),), negate=True)
_PORTS_ALL = (PortRange(0, 65535),)
_LOOPBACK_RE = re.compile(r"lo\d*")


# -- what a rule says -------------------------------------------------------------


@dataclass(frozen=True)
class _If:
    name: str
    negate: bool = False
    group: bool = False  # an interface group: its members are not known here


@dataclass(frozen=True)
class _Host:
    negate: bool
    kind: str  # 'any', 'self', 'net', 'table', 'unknown'
    net: IPNetwork | IPRange | None = None
    name: str = ""  # the table's name, or what an unknown address is


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
    tag: str | None = None
    tagged: tuple[str, bool] | None = None  # (tag, negated)
    rdr: _Target | None = None
    keep_state: bool = True
    passes: bool = False  # `rdr pass`, `nat pass`: the translated packet skips the filter rules
    binat: bool = False  # the inbound half of an old-style binat (evaluated before rdr)
    unknown: tuple[str, ...] = ()  # what fwmatrix cannot model about this rule
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
class _TagInfo:
    """What `tagged T` says in the out pass, when it says something exact: the packet came in
    on `iface` (None: any) and was translated (dnat True), was not (False), or either (None);
    except the packets of `untagged` (in rules that pass such packets without setting T),
    whose verdict is left open."""

    known: bool = False
    iface: str | None = None
    dnat: bool | None = None
    untagged: tuple[_Rule, ...] = ()

    def matches(self) -> tuple[Match, ...]:
        return (((Match(("iif",), ((self.iface,),)),) if self.iface is not None else ())
                + ((_TRANSLATED if self.dnat else _UNTRANSLATED,) if self.dnat is not None else ()))


@dataclass(frozen=True)
class _TableValue:
    nets: dict[int, IPSet]  # family -> addresses
    unknown: tuple[str, ...] = ()


# -- reading text: lines, tokens, statements ----------------------------------------


@dataclass(frozen=True)
class _Tok:
    text: str
    line: int
    quoted: bool = False


_NL = "\n"
_PF_TOKEN_RE = re.compile(r"!=|<=|>=|><|<>|->|<[^<>\s=!]+>|\$[A-Za-z_][A-Za-z0-9_]*|[{}(),=!<>]|[^\s{}(),=!<>\"#\\$]+")
_SECTION_RE = re.compile(r"[A-Z][A-Z0-9 /&_-]*:")
_RULE_SECTIONS = frozenset({"FILTER RULES:", "TRANSLATION RULES:", "NAT RULES:", "RDR RULES:"})
_NOISE_RE = re.compile(r"(No ALTQ support in kernel|ALTQ related functions disabled)")
_RULE_NUMBER_RE = re.compile(r"\s*@\d+(\(\d+\))?\s+")
_OLD_TRANSLATION_RE = re.compile(r"^\s*(@\d+\s+)?(no\s+)?(rdr|nat|binat)(\s+pass)?(\s+log)?\s+on\b", re.MULTILINE)


def _listing_text(text: str) -> str:
    """pfctl's listings as pf.conf: section headers and what is not a rule blanked, `@N` dropped
    (line numbers kept)."""
    lines = text.split("\n")
    rules = True
    for i, line in enumerate(lines):
        bare = line.strip()
        if _SECTION_RE.fullmatch(bare):
            rules = " ".join(bare.split()) in _RULE_SECTIONS
            lines[i] = ""
        elif not rules or _NOISE_RE.match(bare) or bare.startswith("["):
            lines[i] = ""  # states, counters, info, timeouts, limits; `-v` counter lines
        else:
            number = _RULE_NUMBER_RE.match(line)
            if number:
                lines[i] = line[number.end():]
    return "\n".join(lines)


def _lex(text: str, where: str, first_line: int = 1) -> list[_Tok]:
    """pfctl's lexer: `\\` + newline joins lines (in a comment too), `#` comments, quoted strings."""
    toks: list[_Tok] = []
    i, line, n = 0, first_line, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and text.startswith("\n", i + 1):
            i, line = i + 2, line + 1
        elif ch == "\n":
            toks.append(_Tok(_NL, line))
            i, line = i + 1, line + 1
        elif ch in " \t\r\f\v":
            i += 1
        elif ch == "#":
            while i < n and text[i] != "\n":
                if text[i] == "\\" and text.startswith("\n", i + 1):
                    line += 1
                    i += 1
                i += 1
        elif ch == '"':
            end = text.find('"', i + 1)
            if end < 0 or "\n" in text[i + 1:end]:
                raise BackendError("unterminated quoted string", file=where, line=line)
            toks.append(_Tok(text[i + 1:end], line, quoted=True))
            i = end + 1
        else:
            m = _PF_TOKEN_RE.match(text, i)
            if m is None:
                raise BackendError(f"unexpected character {ch!r}", file=where, line=line)
            toks.append(_Tok(m.group(), line))
            i = m.end()
    return toks


def _statements(toks: list[_Tok], where: str) -> list[list[_Tok]]:
    """Statements end at a newline outside braces; inside braces newlines stay (anchor bodies)."""
    out: list[list[_Tok]] = []
    current: list[_Tok] = []
    depth = 0
    for tok in toks:
        if tok.text == _NL and not tok.quoted and depth == 0:
            if current:
                out.append(current)
                current = []
            continue
        if not tok.quoted and tok.text in ("{", "}"):
            depth += 1 if tok.text == "{" else -1
            if depth < 0:
                raise BackendError("'}' without '{'", file=where, line=tok.line)
        current.append(tok)
    if depth:
        raise BackendError("'{' is never closed", file=where, line=current[0].line)
    if current:
        out.append(current)
    return out


class _Cur:
    """A cursor over one statement's tokens (macros expanded, newlines gone)."""

    def __init__(self, toks: list[_Tok]) -> None:
        self.toks, self.i = toks, 0

    def peek(self, ahead: int = 0) -> str | None:
        j = self.i + ahead
        return self.toks[j].text if j < len(self.toks) else None

    def quoted(self) -> bool:
        return self.i < len(self.toks) and self.toks[self.i].quoted

    def word(self, *words: str) -> bool:
        """Take the next token if it is one of these keywords (a quoted string is never a keyword)."""
        if self.peek() in words and not self.quoted():
            self.i += 1
            return True
        return False

    def next(self, what: str) -> str:
        tok = self.peek()
        if tok is None:
            raise _Bad(f"missing {what}")
        self.i += 1
        return tok

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def group(self, opening: str, closing: str) -> list[str]:
        """The tokens inside a balanced (...) or {...} that starts here."""
        if not self.word(opening):
            raise _Bad(f"expected '{opening}'")
        depth, out = 1, []
        while True:
            tok = self.next(f"'{closing}'")
            if tok == opening:
                depth += 1
            elif tok == closing:
                depth -= 1
                if depth == 0:
                    return out
            out.append(tok)

    def arg(self, what: str) -> str:
        """One argument: a token, or a (...) / {...} group, as text."""
        if self.peek() in ("(", "{") and not self.quoted():
            opening = self.peek()
            inner = self.group(opening, ")" if opening == "(" else "}")  # type: ignore[arg-type]
            return f"{opening} {' '.join(inner)} {')' if opening == '(' else '}'}"
        return self.next(what)

    def items(self, what: str) -> list[str]:
        """One item or a { list } (commas optional)."""
        if self.word("{"):
            out = []
            while not self.word("}"):
                tok = self.next(f"'}}' closing the {what} list")
                if tok != ",":
                    out.append(tok)
            if not out:
                raise _Bad(f"empty {what} list")
            return out
        return [self.next(what)]


# -- values ---------------------------------------------------------------------------


def _net(word: str) -> IPNetwork | None:
    """An address or network as pf writes it (`10/8` is 10.0.0.0/8; host bits are masked)."""
    addr, _, bits = word.partition("/")
    if re.fullmatch(r"\d+(\.\d+){0,3}", addr):
        parts = addr.split(".")
        if len(parts) < 4:
            if not bits:
                return None
            addr = ".".join(parts + ["0"] * (4 - len(parts)))
    elif ":" not in addr or "%" in addr:
        return None
    try:
        net = IPNetwork(f"{addr}/{bits}" if bits else addr)
    except (AddrFormatError, ValueError, TypeError):
        return None
    return net.cidr


def _port_number(word: str) -> int | None:
    if word.isdigit():
        port = int(word)
        if port > 65535:
            raise _Bad(f"port {word} is out of range")
        return port
    return PF_SERVICES.get(word)


def _merge_ports(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    merged: list[PortRange] = []
    for rng in sorted(ranges, key=lambda r: (r.low, r.high)):
        if merged and rng.low <= merged[-1].high + 1:
            merged[-1] = PortRange(merged[-1].low, max(merged[-1].high, rng.high))
        else:
            merged.append(rng)
    return tuple(merged)


def _port_op(op: str, a: int, b: int | None = None) -> list[PortRange]:
    """pf.conf(5)'s port operators as ranges (as the kernel compares: port 0 included)."""
    spans = {
        "=": [(a, a)], "!=": [(0, a - 1), (a + 1, 65535)], "<": [(0, a - 1)], "<=": [(0, a)],
        ">": [(a + 1, 65535)], ">=": [(a, 65535)],
    }
    if b is not None:
        spans = {":": [(a, b)], "><": [(a + 1, b - 1)], "<>": [(0, a - 1), (b + 1, 65535)]}
    return [PortRange(low, high) for low, high in spans[op] if low <= high]


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


def _table_value(entries: Sequence[tuple[bool, str]]) -> _TableValue:
    """A table's addresses: the longest matching prefix decides, so a `!` entry cuts a hole."""
    known: list[tuple[bool, IPNetwork]] = []
    unknown: list[str] = []
    for negate, word in entries:
        net = _net(word)
        if net is None:
            unknown.append(f"{'!' if negate else ''}{word} (an interface, host name or 'self': resolved on the firewall)")
        else:
            known.append((negate, net))
    nets = {4: IPSet(), 6: IPSet()}
    for negate, net in sorted(known, key=lambda item: item[1].prefixlen):
        if negate:
            nets[net.version] -= IPSet([net])
        else:
            nets[net.version] |= IPSet([net])
    return _TableValue(nets, tuple(unknown))


def _table_entries(words: Sequence[str]) -> list[tuple[bool, str]]:
    entries: list[tuple[bool, str]] = []
    negate = False
    for word in words:
        if word == "!":
            negate = True
        elif word != ",":
            entries.append((negate, word))
            negate = False
    return entries


# -- the reader: statements -> items -----------------------------------------------------


class _Bad(Exception):
    pass


# What a filter rule may say after its hosts and fwmatrix does not need: ignored, with
# their arguments (the count of tokens that follow, or a group).
_IGNORED_OPTIONS = {"ridentifier": 1, "tracker": 1, "flags": 1, "allow-opts": 0, "queue": 1, "dnpipe": 1, "dnqueue": 1,
                    "scrub": 1, "max-mss": 1, "min-ttl": 1, "random-id": 0, "no-df": 0}
_STATE_LIMITS = ("max", "max-src-conn", "max-src-conn-rate", "max-src-nodes", "max-src-states", "overload")
_POOL_OPTIONS = ("round-robin", "random", "sticky-address", "least-states", "bitmask", "static-port", "prefer-ipv6")
# Statements that do not change what is forwarded: normalisation, queues, limiters.
_IGNORED_STATEMENTS = frozenset({"scrub", "altq", "queue", "scrub-anchor", "dummynet-anchor", "state", "source"})
# Statements whose rules are elsewhere, and the chains those rules may act in: an
# include may hold anything, ether rules may block.
_OPAQUE_STATEMENTS = {"include": frozenset({"in", "out", "nat"}), "ether": frozenset({"in", "out"})}
# ... and anchors not given to parse_ruleset: filter anchors may block or pass (and on
# OpenBSD translate), FreeBSD's translation anchors translate, a nat-anchor may hold `nat pass`.
_ANCHOR_CHAINS = {"anchor": frozenset({"in", "out"}), "rdr-anchor": frozenset({"nat"}), "binat-anchor": frozenset({"nat"}),
                  "nat-anchor": frozenset({"out"})}


class _Reader:
    def __init__(self, source: str, dialect: str, tables: Mapping[str, str] | None, anchors: Mapping[str, str] | None) -> None:
        self.source = source
        self.dialect = dialect
        self.macros: dict[str, str] = {}
        self.tables: dict[str, _TableValue] = {}
        self.given_tables = {name: _table_value(_table_entries(text.split())) for name, text in (tables or {}).items()}
        self.anchors = dict(anchors or {})
        self.skip: list[tuple[_If, str]] = []
        self.block_reject = False
        # rules that set a tag but become no rule of their own (source nat, binat's outbound
        # half without pass): what `tagged` means must know of them
        self.hidden: list[_Rule] = []

    def read(self, text: str, where: str, parents: tuple[_Rule, ...] = ()) -> list[_Item]:
        items: list[_Item] = []
        for stmt in _statements(_lex(_listing_text(text), where), where):
            items += self._statement(stmt, where, parents)
        return items

    def _statement(self, stmt: list[_Tok], where: str, parents: tuple[_Rule, ...]) -> list[_Item]:
        line = stmt[0].line
        try:
            toks = self._expand([t for t in stmt if t.text != _NL or t.quoted])
            head = toks[0].text if not toks[0].quoted else ""
            if len(toks) >= 2 and toks[1].text == "=" and not toks[1].quoted and IDENT_RE.match(head):
                self._macro(toks)
                return []
            origin = f"{where}:{line}"
            if head in ("anchor", "rdr-anchor", "nat-anchor", "binat-anchor"):
                return self._anchor(self._expand_keeping_lines(stmt), where, origin, parents)
            if head in ("pass", "block", "match", "rdr", "nat", "binat", "no"):
                return self._rule(_Cur(toks), origin, parents)
            if head == "table":
                self._table(_Cur(toks))
            elif head == "set":
                self._set(_Cur(toks), origin)
            elif head == "antispoof":
                return self._antispoof(_Cur(toks), origin, parents)
            elif head in _OPAQUE_STATEMENTS:
                what = f"{head} {toks[1].text if len(toks) > 1 else ''} (its rules are not read)"
                return [_Opaque(origin, what, _Rule(origin, "anchor", parents=parents), _OPAQUE_STATEMENTS[head])]
            elif head == "load":
                if len(toks) < 5 or toks[1].text != "anchor" or toks[3].text != "from":
                    raise _Bad("expected: load anchor NAME from FILE")
            elif head not in _IGNORED_STATEMENTS:
                raise _Bad(f"unknown statement '{toks[0].text}'")
            return []
        except _Bad as bad:
            raise BackendError(str(bad), file=where, line=line) from None

    def _expand(self, toks: list[_Tok]) -> list[_Tok]:
        """Macros expanded where they stand (a macro may hold a list, even braces)."""
        out: list[_Tok] = []
        for tok in toks:
            if tok.text.startswith("$") and not tok.quoted:
                name = tok.text[1:]
                if name not in self.macros:
                    raise _Bad(f"macro '{name}' is not defined")
                out += [t for t in _lex(self.macros[name], self.source, tok.line) if t.text != _NL]
            else:
                out.append(tok)
        return out

    def _expand_keeping_lines(self, stmt: list[_Tok]) -> list[_Tok]:
        return [t for tok in stmt for t in (self._expand([tok]) if tok.text != _NL else [tok])]

    def _macro(self, toks: list[_Tok]) -> None:
        name = toks[0].text
        if name in PF_KEYWORDS:
            raise _Bad(f"a macro cannot be named '{name}' (a pf keyword)")
        if len(toks) < 3:
            raise _Bad(f"macro '{name}' has no value")
        self.macros[name] = " ".join(t.text for t in toks[2:])

    def _table(self, c: _Cur) -> None:
        c.next("table")
        tok = c.next("the table's name")
        if not (tok.startswith("<") and tok.endswith(">")):
            raise _Bad(f"expected a table name in <angle brackets>, found {tok!r}")
        name = tok[1:-1]
        entries: list[tuple[bool, str]] = []
        files: list[str] = []
        listed = False
        while not c.done():
            word = c.next("a table option")
            if word in ("persist", "const", "counters"):
                continue
            if word == "timeout":
                c.arg("the timeout")
            elif word == "file":
                files.append(c.next("the file name"))
            elif word == "{":
                c.i -= 1
                entries += _table_entries(c.group("{", "}"))
                listed = True
            else:
                raise _Bad(f"unexpected {word!r} in a table definition")
        value = _table_value(entries)
        if files:
            value = _TableValue(value.nets, value.unknown + tuple(f'addresses from file "{f}"' for f in files))
        elif not listed:
            value = _TableValue(value.nets, (f"table <{name}> has no addresses in the file (they are added at run time)",))
        self.tables[name] = self.given_tables.get(name, value)

    def _set(self, c: _Cur, origin: str) -> None:
        c.next("set")
        option = c.next("an option")
        if option == "skip":
            if not c.word("on"):
                raise _Bad("expected: set skip on INTERFACE")
            self.skip += [(iface, origin) for iface in self._ifspec(c)]
        elif option == "block-policy":
            policy = c.next("drop or return")
            if policy not in ("drop", "return"):
                raise _Bad(f"block-policy is drop or return, not {policy!r}")
            self.block_reject = policy == "return"
        # the other options (timeouts, limits, optimization, state-policy, ...) tune the
        # engine but do not change which packets pass

    # -- interfaces, hosts, ports ------------------------------------------------------

    def _iface(self, name: str, negate: bool) -> _If:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
            raise _Bad(f"bad interface name {name!r}")
        if name == "lo":
            return _If("lo", negate)  # the loopback group: the universe's "lo"
        # OpenBSD's interface names end in a unit number: a name without one is a group
        group = name in PF_GROUPS or (self.dialect == "openbsd" and not name[-1].isdigit() and name != "any")
        return _If(name, negate, group)

    def _ifspec(self, c: _Cur) -> tuple[_If, ...]:
        if c.word("{"):
            out: list[_If] = []
            while not c.word("}"):
                if c.word(","):
                    continue
                negate = c.word("!")
                out.append(self._iface(c.next("an interface"), negate))
            return tuple(out)
        negate = c.word("!")
        return (self._iface(c.next("an interface"), negate),)

    def _hosts(self, c: _Cur) -> tuple[_Host, ...]:
        if c.word("{"):
            out: list[_Host] = []
            while not c.word("}"):
                if c.word(","):
                    continue
                out.append(self._host(c))
            if not out:
                raise _Bad("empty address list")
            return tuple(out)
        return (self._host(c),)

    def _host(self, c: _Cur) -> _Host:
        negate = c.word("!")
        word = c.next("an address")
        if word in ("any", "self"):
            return _Host(negate, word)
        if word in ("no-route", "urpf-failed"):
            return _Host(negate, "unknown", name=f"{word} (depends on the firewall's routes)")
        if word == "route":
            return _Host(negate, "unknown", name=f"route {c.next('a route label')} (a routing label)")
        if word.startswith("<") and word.endswith(">"):
            return _Host(negate, "table", name=word[1:-1])
        if word == "(":
            inner = []
            while not c.word(")"):
                inner.append(c.next("')'"))
            return _Host(negate, "unknown", name=f"({' '.join(inner)}) (the addresses of an interface)")
        net = _net(word)
        if net is None and word.count("-") == 1 and _net(word.split("-")[0]) is not None:
            first, last = word.split("-")  # written without spaces
            return self._range(negate, first, last)
        if net is not None and c.peek() == "-":
            c.next("-")
            return self._range(negate, word, c.next("the end of the address range"))
        if c.word("weight"):
            c.next("a weight")
        if net is None:
            return _Host(negate, "unknown", name=f"{word} (an interface's addresses or a host name: resolved on the firewall)")
        return _Host(negate, "net", net)

    def _range(self, negate: bool, first: str, last: str) -> _Host:
        a, b = _net(first), _net(last)
        if a is None or b is None or a.size != 1 or b.size != 1 or a.version != b.version or a.first > b.first:
            raise _Bad(f"bad address range {first} - {last}")
        return _Host(negate, "net", IPRange(a.ip, b.ip))

    def _ports(self, c: _Cur) -> _Ports:
        items: list[list[PortRange] | str] = []
        if c.word("{"):
            while not c.word("}"):
                if c.word(","):
                    continue
                items.append(self._port_item(c))
        else:
            items.append(self._port_item(c))
        ranges = [r for item in items if not isinstance(item, str) for r in item]
        return _Ports(_merge_ports(ranges), tuple(item for item in items if isinstance(item, str)))

    def _port_item(self, c: _Cur) -> list[PortRange] | str:
        op = c.next("a port operator") if c.peek() in ("=", "!=", "<", "<=", ">", ">=") else "="
        first = c.next("a port")
        second: str | None = None
        if op == "=" and c.peek() in ("><", "<>", ":"):
            op = c.next("")
            second = c.next("the end of the port range")
        elif op == "=" and ":" in first:
            first, second = first.split(":", 1)
            op = ":"
        a = _port_number(first)
        b = _port_number(second) if second is not None else None
        if a is None or (second is not None and b is None):
            return f"port {first}{':' + second if second else ''} (a service name fwmatrix does not know)"
        if b is not None and b < a:
            raise _Bad(f"port range {a}:{b} is empty")
        return _port_op(op, a, b)

    def _protos(self, c: _Cur) -> tuple[int | str, ...]:
        out: list[int | str] = []
        for word in c.items("protocol"):
            if word.isdigit():
                if int(word) > 255:
                    raise _Bad(f"protocol {word} is out of range")
                out.append(int(word))
            else:
                out.append(PF_PROTOCOLS.get(word, word))
        return tuple(out)

    def _target(self, c: _Cur) -> _Target:
        """A translation's target: `ADDR [port P]` and pool options."""
        text = c.arg("the translation address")
        net = _net(text)
        address = net if net is not None and net.size == 1 else None
        port: PortRange | None = None
        if c.word("port"):
            word = c.next("the translation port")
            text += f" port {word}"
            low, _, high = word.partition(":")
            number = _port_number(low)
            if number is None or high:
                address = None  # a port range mapped to a range (`:*`), or a name not known
            else:
                port = PortRange(number, number)
        self._pool_options(c)
        return _Target(address, port, text)

    def _route(self, c: _Cur) -> str:
        word = c.next("route-to")
        target = "" if word == "fastroute" else " " + c.arg("the route target")
        self._pool_options(c)
        return f"{word}{target} (the packet may leave by another route)"

    @staticmethod
    def _pool_options(c: _Cur) -> None:
        while c.peek() in _POOL_OPTIONS or c.peek() == "source-hash":
            if c.next("") == "source-hash" and (c.peek() or "").startswith("0x"):
                c.next("the hash key")

    # -- rules ---------------------------------------------------------------------------

    def _rule(self, c: _Cur, origin: str, parents: tuple[_Rule, ...]) -> list[_Item]:
        rule = self._action(c, _Rule(origin, "", parents=parents))
        rule = self._header(c, rule)
        rule, binat_to = self._options(c, rule)
        return self._finish(rule, binat_to)

    def _action(self, c: _Cur, rule: _Rule) -> _Rule:
        action = c.next("an action")
        if action == "no":
            action = "no-" + c.next("rdr, nat or binat")
            if action not in ("no-rdr", "no-nat", "no-binat"):
                raise _Bad(f"unexpected 'no {action[3:]}'")
        reject = False
        if action == "block":
            if c.word("return", "return-rst", "return-icmp", "return-icmp6"):
                if c.peek() == "(":
                    c.group("(", ")")
                reject = True
            elif not c.word("drop"):
                reject = self.block_reject  # `set block-policy`
        return replace(rule, action=action, reject=reject)

    def _header(self, c: _Cur, rule: _Rule) -> _Rule:
        """Direction, log, quick, on, af, proto, hosts: what comes before the options."""
        changes: dict[str, object] = {}
        unknown = list(rule.unknown)
        old_style = rule.action in ("rdr", "nat", "binat", "no-rdr", "no-nat", "no-binat")
        while not c.done() and not c.quoted():
            tok = c.peek()
            if tok in ("in", "out") and "direction" not in changes and not old_style:
                changes["direction"] = c.next("")
            elif tok == "log":
                c.next("")
                if c.peek() == "(":
                    c.group("(", ")")
            elif tok == "quick":
                changes["quick"] = bool(c.next(""))
            elif tok == "pass" and old_style:
                changes["passes"] = bool(c.next(""))
            elif tok == "on":
                c.next("")
                if c.word("rdomain"):
                    unknown.append(f"on rdomain {c.next('a routing domain')}")
                else:
                    changes["on"] = self._ifspec(c)
            elif tok in ("inet", "inet6"):
                changes["af"] = 4 if c.next("") == "inet" else 6
            elif tok == "proto":
                c.next("")
                changes["protos"] = self._protos(c)
            elif tok == "all":
                c.next("")
            elif tok in ("route-to", "reply-to", "dup-to", "fastroute"):  # FreeBSD writes them before the hosts
                unknown.append(self._route(c))
            elif tok in ("from", "to"):
                c.next("")
                if c.peek() not in ("port", "os") and not c.word("any"):  # `to port 22`: any address
                    changes["src" if tok == "from" else "dst"] = self._hosts(c)
                if c.word("port"):
                    ports = self._ports(c)
                    changes["dport" if tok == "to" else "sport"] = ports
                if tok == "from" and c.word("os"):
                    unknown.append(f"os {c.arg('an operating system')}")
            else:
                break
        rule = replace(rule, unknown=tuple(unknown), **changes)  # type: ignore[arg-type]
        if (rule.dport is not None or rule.sport is not None) and not rule.protos:
            raise _Bad("'port' needs 'proto tcp' or 'proto udp' (pfctl refuses it otherwise)")
        return rule

    def _options(self, c: _Cur, rule: _Rule) -> tuple[_Rule, _Target | None]:
        """The filter options after the hosts; also a binat-to target, which _finish expands."""
        unknown = list(rule.unknown)
        changes: dict[str, object] = {}
        while not c.done():
            if c.word(","):
                continue
            negate = c.word("!")
            word = c.next("an option")
            if negate and word not in ("tagged", "received-on"):
                raise _Bad(f"'!' before {word!r}")
            if word in _IGNORED_OPTIONS:
                for _ in range(_IGNORED_OPTIONS[word]):
                    c.arg(f"the argument of {word}")
            elif word == "set":
                what = c.next("prio, queue, tos or delay")
                if what not in ("prio", "queue", "tos", "delay"):
                    raise _Bad(f"unexpected 'set {what}' in a rule")
                c.arg(f"the {what}")
            elif word in ("keep", "modulate", "synproxy", "no"):
                if not c.word("state"):
                    raise _Bad(f"expected 'state' after {word!r}")
                changes["keep_state"] = word != "no"
                if c.peek() == "(":
                    opts = c.group("(", ")")
                    limits = [o for o in opts if o in _STATE_LIMITS]
                    if limits:
                        unknown.append(f"state limits ({', '.join(limits)}): new connections beyond them are refused")
            elif word == "label":
                changes["label"] = c.next("the label")
            elif word == "tag":
                changes["tag"] = c.next("a tag")
            elif word == "tagged":
                changes["tagged"] = (c.next("a tag"), negate)
            elif word == "received-on":
                iface = self._iface(c.next("an interface"), negate)
                changes["received_on"] = (iface,) if iface.name != "any" or negate else None
            elif word in ("icmp-type", "icmp6-type"):
                kinds = c.arg(word)
                if c.word("code"):
                    kinds += " code " + c.next("a code")
                unknown.append(f"{word} {kinds} (fwmatrix has no icmp type field)")
            elif word in ("user", "group"):
                unknown.append(f"{word} {self._op_arg(c)} (the owner of a local socket)")
            elif word in ("tos", "prio", "probability", "rtable", "max-pkt-rate", "os"):
                unknown.append(f"{word} {c.arg(word)}")
            elif word in ("once", "fragment", "divert-reply"):
                unknown.append(word)
            elif word in ("route-to", "reply-to", "dup-to", "fastroute"):
                c.i -= 1
                unknown.append(self._route(c))
            elif word in ("divert-to", "divert-packet"):
                host = c.next("a host") + " " if word == "divert-to" else ""
                if not c.word("port"):
                    raise _Bad(f"expected 'port' in {word}")
                unknown.append(f"{word} {host}port {c.next('a port')} (the packet goes to a local socket)")
            elif word in ("state", "source"):
                if not c.word("limiter"):
                    raise _Bad(f"expected 'limiter' after {word!r}")
                name = c.next("the limiter's name")
                if c.peek() == "(":
                    c.group("(", ")")
                unknown.append(f"{word} limiter {name}: new connections beyond it are refused")
            elif word == "rdr-to" or (word == "->" and rule.action in ("rdr", "nat", "binat")):
                changes["rdr"] = self._target(c)
            elif word in ("nat-to", "binat-to"):
                target = self._target(c)
                if word == "binat-to":
                    changes["binat_to"] = target
            elif word == "af-to":
                rest = [c.next("")]
                while not c.done() and c.peek() not in ("label", "tag", "rtable"):
                    rest.append(c.next(""))
                unknown.append(f"af-to {' '.join(rest)} (translated to another address family)")
            else:
                raise _Bad(f"unknown option {word!r}")
        binat_to = changes.pop("binat_to", None)
        return replace(rule, unknown=tuple(dict.fromkeys(unknown)), **changes), binat_to  # type: ignore[arg-type]

    @staticmethod
    def _op_arg(c: _Cur) -> str:
        if c.peek() == "{":
            return c.arg("a list")
        op = c.next("") if c.peek() in ("=", "!=", "<", "<=", ">", ">=") else ""
        first = c.next("a value")
        if c.peek() in ("><", "<>"):
            return f"{first} {c.next('')} {c.next('a value')}"
        return f"{op} {first}".strip()

    def _finish(self, rule: _Rule, binat_to: _Target | None) -> list[_Item]:
        """Old-style translation and binat-to become the rules they stand for."""
        action = rule.action
        if action in ("nat", "no-nat"):
            # source NAT changes no forward decision; `nat pass` lets the packet out unfiltered
            if action == "nat" and rule.passes:
                return [replace(rule, direction="out")]
            if rule.tag is not None:
                self.hidden.append(replace(rule, direction="out"))
            return []
        if action == "no-binat":
            return [_Opaque(rule.origin, "no binat (an exception to a binat rule)", rule, frozenset({"nat"}))]
        if action in ("rdr", "binat") and rule.rdr is None:
            raise _Bad(f"{action} without '-> ADDRESS'")
        if action == "binat":
            if rule.tag is not None and not rule.passes:
                self.hidden.append(replace(rule, action="nat", direction="out", rdr=None))
            inbound = replace(rule, action="rdr", binat=True, rdr=None)
            return self._binat(inbound, rule.rdr, outbound=replace(rule, action="nat", direction="out", rdr=None) if rule.passes else None)  # type: ignore[arg-type]
        if action in ("rdr", "no-rdr"):
            return [replace(rule, direction="in")]
        if binat_to is not None:
            outbound = replace(rule, direction="out") if rule.direction != "in" else None
            return self._binat(replace(rule, direction="in"), binat_to, outbound=outbound)
        return [rule]

    def _binat(self, rule: _Rule, external: _Target, outbound: _Rule | None) -> list[_Item]:
        """binat's inbound half: from the peers to the external address, redirected to the
        internal one (ports are never translated). The outbound half is source NAT."""
        inner = rule.src or ()
        single = len(inner) == 1 and inner[0].kind == "net" and not inner[0].negate and isinstance(inner[0].net, IPNetwork) and inner[0].net.size == 1
        out: list[_Item] = [outbound] if outbound is not None else []
        if not single or external.address is None or rule.dport is not None:
            return out + [_Opaque(rule.origin, f"binat of {inner[0].net if single else 'several addresses'} to {external.text} "
                                  "(only one address to one address is modelled)", replace(rule, src=None, dst=None, dport=None), frozenset({"nat"}))]
        target = _Target(inner[0].net, None, str(inner[0].net))  # type: ignore[arg-type]
        return out + [replace(rule, src=rule.dst, dst=(_Host(False, "net", external.address),), rdr=target, direction="in")]

    def _antispoof(self, c: _Cur, origin: str, parents: tuple[_Rule, ...]) -> list[_Item]:
        """`antispoof for IF` blocks, in on other interfaces, sources from IF's networks, and
        everywhere sources that are IF's own addresses (pf.conf(5)); only loopback's are known."""
        c.next("antispoof")
        quick = False
        while c.peek() in ("log", "quick"):
            quick |= c.next("") == "quick"
            if c.peek() == "(":
                c.group("(", ")")
        if not c.word("for"):
            raise _Bad("expected: antispoof for INTERFACE")
        ifaces = self._ifspec(c)
        af = (4 if c.next("") == "inet" else 6) if c.peek() in ("inet", "inet6") else None
        while not c.done():
            word = c.next("label or ridentifier")
            if word not in ("label", "ridentifier", "tracker"):
                raise _Bad(f"unexpected {word!r} in antispoof")
            c.next("its argument")
        rules: list[_Item] = []
        block = _Rule(origin, "block", reject=self.block_reject, direction="in", quick=quick, af=af, parents=parents)
        for iface in ifaces:
            if iface.negate:
                raise _Bad("antispoof for '!' an interface")
            elsewhere = (replace(iface, negate=True),)
            if iface.name in ("lo", "lo0"):
                for family, net in ((4, "127.0.0.0/8"), (6, "::1/128")):
                    if af in (None, family):
                        rules.append(replace(block, on=elsewhere, af=family, src=(_Host(False, "net", IPNetwork(net)),)))
                continue
            rules.append(replace(block, on=elsewhere, src=(_Host(False, "unknown", name=f"{iface.name}:network (antispoof)"),)))
            rules.append(replace(block, src=(_Host(False, "unknown", name=f"{iface.name} (antispoof: its own addresses)"),)))
        return rules

    def _anchor(self, stmt: list[_Tok], where: str, origin: str, parents: tuple[_Rule, ...]) -> list[_Item]:
        body_at = next((i for i, t in enumerate(stmt[:-1]) if t.text == "{" and not t.quoted and stmt[i + 1].text == _NL), None)
        header = [t for t in (stmt if body_at is None else stmt[:body_at]) if t.text != _NL or t.quoted]
        c = _Cur(header)
        kind = c.next("anchor")
        name = ""
        if c.quoted() or (c.peek() is not None and c.peek() not in ("in", "out", "log", "quick", "on", "inet", "inet6", "proto", "from", "to", "all")):
            name = c.next("the anchor's name")
        cond = self._header(c, _Rule(origin, "anchor", parents=parents))
        cond, binat_to = self._options(c, cond)
        if cond.rdr is not None or binat_to is not None:
            raise _Bad("an anchor rule cannot translate")
        inner = parents + (cond,)
        if body_at is not None:
            if stmt[-1].text != "}":
                raise _Bad("an anchor's rules end with '}' on a line of its own")
            items = [item for st in _statements(stmt[body_at + 1:-1], where) for item in self._statement(st, where, inner)]
        elif name in self.anchors:
            items = self.read(self.anchors[name], f"{self.source}[{name}]", inner)
        else:
            chains = _ANCHOR_CHAINS[kind] | ({"nat"} if kind == "anchor" and self.dialect == "openbsd" else set())
            return [_Opaque(origin, f"{kind} '{name}' (its rules are not in the file)", cond, chains)]
        return [_Group(tuple(items))] if cond.quick else items


# -- the builder: items -> IR chains -----------------------------------------------------


def _opened(items: Iterable[_Item]) -> Iterator[_Seen]:
    """Rules and opaque items in file order, anchors opened."""
    for item in items:
        if isinstance(item, _Group):
            yield from _opened(item.items)
        else:
            yield item


def _applies(parts: Iterable[_Rule], chain: str) -> bool:
    """Whether the rule is evaluated in this chain ('nat' is the in pass, before translation)."""
    direction = "out" if chain == "out" else "in"
    return all(p.direction in (None, direction) for p in parts)


def _verdict(rule: _Rule) -> Verdict:
    return Verdict("accept") if rule.action == "pass" else Verdict("reject" if rule.reject else "drop")


def _is_pass_rdr(rule: _Rule) -> bool:
    return rule.action == "pass" and rule.rdr is not None


def _passes_in(rule: _Rule) -> bool:
    """A rule that can pass a packet on the way in (and set its tag)."""
    return rule.action == "pass" or (rule.action == "rdr" and rule.passes)


def _translates_and_passes(rule: _Rule) -> bool:
    """`rdr pass` and `pass ... rdr-to`: the translated packet skips the rest of the in pass."""
    return (rule.action == "rdr" and rule.passes) or _is_pass_rdr(rule)


def _aside(origin: str, what: str) -> str:
    """The origin of an IR rule made beside a source rule (its replies, its translated packets):
    the evaluator tells rules apart by origin, and these are judged apart from the rule itself."""
    return f"{origin} ({what})"


def _compose(first: _Target, then: _Target) -> _Target:
    return _Target(then.address, then.port if then.port is not None else first.port, then.text)


def _translated_by(rule: _Rule) -> Unmodelled:
    # Exact with the original destination (`ct status dnat` alone does not say which rule
    # translated), which the evaluator does not have: this is the one place to change when it does.
    return Unmodelled(f"packets translated by {rule.origin}: pf passes them without the rest of the in rules, "
                      "and fwmatrix cannot tell them from untranslated packets with the same header")


def _finish_matches(matches: Sequence[Match | Unmodelled], family: int | None) -> tuple[Match | Unmodelled, ...]:
    """Matches first, every unmodelled part joined into one at the end; the family when no
    address field implies it."""
    known = list(dict.fromkeys(m for m in matches if isinstance(m, Match)))
    texts = list(dict.fromkeys(m.text for m in matches if isinstance(m, Unmodelled)))
    if family is not None and not any(f.startswith("ip") for m in known for f in m.fields):
        known.insert(0, Match(("nfproto",), ((family,),)))
    return tuple(known) + ((Unmodelled("; ".join(texts)),) if texts else ())


Alts = list[tuple[Match | Unmodelled, ...]]  # a union of conjunctions


class _Builder:
    def __init__(self, reader: _Reader, items: list[_Item]) -> None:
        self.reader = reader
        self.items = items
        self.flat = list(_opened(items))
        self.rules = [r for r in self.flat if isinstance(r, _Rule)]
        self._tags: dict[str, _TagInfo] = {}
        self._translation_tags: dict[tuple[str, str], bool] = {}
        # tags set where no rule of self.rules shows it (see _Reader.hidden; an anchor's or a
        # binat's conditions). The rules of anchors not given are assumed to set no tag: what
        # they do is unmodelled already.
        self._hidden = reader.hidden + [o.cond for o in self.flat if isinstance(o, _Opaque) and o.cond.tag is not None]
        self._sets: dict[tuple[int, int, str, str], tuple[object, IPSet | None]] = {}
        self._spans: dict[tuple[int, int], tuple[object, list[int] | None]] = {}
        # OpenBSD: where each in-pass rule stands among the rules translation sees, and the
        # translations match rules make (from the position of the first one): rules before
        # that position judged those packets untranslated
        self._position: dict[int, int] = {}
        self._images: list[tuple[int, list[_Rule], _Target]] = []

    def ruleset(self) -> Ruleset:
        chains = []
        nat = self._nat_chain()  # first: it finds the translations the in chain must know about
        if nat:
            chains.append(Chain("rdr", tuple(nat), hook="prerouting", type="nat", priority=PRIORITY_DSTNAT, policy="accept"))
        for name, priority in (("in", PRIORITY_IN), ("out", PRIORITY_OUT)):
            chains.append(Chain(name, tuple(self._filter_chain(name)), hook="forward", priority=priority, policy="accept"))
        return Ruleset((Table("inet", PARSED_TABLE, tuple(chains)),))

    # -- emitting IR rules ---------------------------------------------------------------

    def _emit(self, parts: Sequence[_Rule], chain: str, action: Action, origin: str, *,
              extra: tuple[Match | Unmodelled, ...] = (), comment: str = "") -> list[Rule]:
        """IR rules (their union) for what every part matches, as `chain` sees the packet."""
        if not _applies(parts, chain):
            return []
        families: tuple[int | None, ...] = (None,)
        if isinstance(action, Dnat):
            families = (action.family,)
        elif any(p.af is not None or p.src is not None or p.dst is not None for p in parts):
            families = (4, 6)
        comment = comment or next((p.label for p in reversed(parts) if p.label), "")
        out: list[Rule] = []
        for family in families:
            if any(p.af not in (None, family) for p in parts):
                continue
            alts: Alts = [extra]
            for part in parts:
                for dim in self._dims(part, chain, family):
                    alts = [a + b for a in alts for b in dim]
            out += [Rule(_finish_matches(a, family), action, comment, origin) for a in alts]
        return out

    def _dims(self, rule: _Rule, chain: str, family: int | None) -> Iterator[Alts]:
        if rule.on is not None:
            yield self._if_alts(rule.on, "oif" if chain == "out" else "iif")
        if rule.received_on is not None:
            yield self._if_alts(rule.received_on, "iif")
        if rule.tagged is not None:
            yield self._tagged_alts(rule, chain)
        if rule.protos is not None:
            known = tuple((p,) for p in rule.protos if isinstance(p, int))
            yield ([(Match(("l4proto",), known),)] if known else []) + [
                (Unmodelled(f"protocol '{p}' (not a name fwmatrix knows)"),) for p in rule.protos if isinstance(p, str)]
        if family is not None:
            for side, hosts in (("saddr", rule.src), ("daddr", rule.dst)):
                if hosts is not None:
                    yield self._host_alts(hosts, side, family, chain)
        for field_name, ports in (("dport", rule.dport), ("sport", rule.sport)):
            if ports is not None:
                yield ([(Match((field_name,), tuple((r,) for r in ports.ranges)),)] if ports.ranges else []) + [
                    (Unmodelled(text),) for text in ports.unknown]
        if rule.unknown:
            yield [(Unmodelled("; ".join(rule.unknown)),)]

    @staticmethod
    def _if_alts(items: tuple[_If, ...], field_name: str) -> Alts:
        if any(i.name == "any" and not i.negate for i in items):
            return [()]  # `on any`: every interface (loopback aside, which forwards nothing)
        named = tuple((i.name,) for i in items if not i.negate and not i.group)
        alts: Alts = [(Match((field_name,), named),)] if named else []
        for i in items:
            if i.group:
                alts.append((Unmodelled(f"{'! ' if i.negate else ''}interface group '{i.name}' (its members are known only on the firewall)"),))
            elif i.negate and i.name != "any":
                alts.append((Match((field_name,), ((i.name,),), negate=True),))
        return alts

    def _resolve(self, host: _Host, family: int, side: str, context: str) -> tuple[IPSet | None, str | None]:
        """(known addresses of this family, or None when the item is of the other family;
        what is not known about it, or None)."""
        if host.kind == "net":
            return (IPSet([host.net]), None) if host.net.version == family else (None, None)  # type: ignore[union-attr, list-item]
        if host.kind == "table":
            value = self.reader.tables.get(host.name) or self.reader.given_tables.get(host.name)
            if value is None:
                return IPSet(), f"table <{host.name}> (its addresses are not in the file)"
            return value.nets[family], "; ".join(value.unknown) or None
        if host.kind == "self" and side == "daddr" and context == "filter":
            return IPSet(), None  # a forwarded packet is never addressed to the firewall
        if host.kind == "self":
            return None, "self (the firewall's own addresses)"
        return None, host.name

    def _host_alts(self, hosts: tuple[_Host, ...], side: str, family: int, chain: str) -> Alts:
        """pfctl makes one rule per list item: their union. A negated item of one family only
        makes a rule of that family."""
        context = "nat" if chain == "nat" else "filter"
        field_name = addr_field(family, side)
        positive = IPSet()
        alts: Alts = []
        tail: Alts = []
        for host in hosts:
            if host.kind == "any":
                if not host.negate:
                    return [()]
                continue
            known, unknown = self._resolve(host, family, side, context)
            if known is None and unknown is None:
                continue
            if host.negate:
                parts: list[Match | Unmodelled] = []
                if known:
                    parts.append(Match((field_name,), tuple((n,) for n in known.iter_cidrs()), negate=True))
                if unknown:
                    parts.append(Unmodelled(f"! {unknown}"))
                tail.append(tuple(parts))
                continue
            if known:
                positive |= known
            if unknown:
                tail.append((Unmodelled(unknown),))
        if context == "filter":
            positive -= _NEVER_FORWARDED[(side, family)]
        if positive:
            alts.append((Match((field_name,), tuple((n,) for n in positive.iter_cidrs())),))
        return alts + tail

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
        return total

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

    def _on_image(self, parts: Sequence[_Rule], target: _Target) -> list[_Rule] | None:
        """The rule as it judges a packet translated to `target`, or None when it cannot match it."""
        assert target.address is not None
        out = []
        for p in parts:
            if p.tagged is not None and self._translation_tag(p.tagged[0], "in"):
                # every translation rule sets the tag: the translated packet carries it
                if p.tagged[1]:
                    return None
                p = replace(p, tagged=None)
            dst = True if p.dst is None else self._contains(p.dst, target.address)
            port = True if p.dport is None or target.port is None else _ports_contain(p.dport, target.port.low)
            if dst is False or port is False:
                return None
            unknown = p.unknown + ((f"whether {p.origin} matches the translated destination",) if dst is None or port is None else ())
            out.append(replace(p, dst=None, dport=p.dport if target.port is None else None, unknown=unknown, parents=()))
        return out

    def _contains(self, hosts: tuple[_Host, ...], address: IPNetwork) -> bool | None:
        """Is the address in the host spec (as translation sees it)? None: not known."""
        key = (id(hosts), address.version)
        if key not in self._spans:
            found = self._addr_set(hosts, address.version, "daddr", "nat")
            bounds = None if found is None else [x for r in found.iter_ipranges() for x in (r.first, r.last + 1)]
            self._spans[key] = (hosts, bounds)
        bounds = self._spans[key][1]
        return None if bounds is None else bisect_right(bounds, address.first) % 2 == 1

    @staticmethod
    def _image(parts: Sequence[_Rule], target: _Target) -> list[_Rule]:
        """What the packets the parts match look like once translated to `target`."""
        assert target.address is not None
        moved = [replace(p, dst=None, dport=None if target.port is not None else p.dport, parents=()) for p in parts]
        return moved + [_Rule(parts[-1].origin, "pass", dst=(_Host(False, "net", target.address),),
                              dport=_Ports((target.port,)) if target.port is not None else None)]

    # -- the filter chains -----------------------------------------------------------------

    def _decision_order(self, items: Sequence[_Item], chain: str) -> list[_Seen]:
        """pf's last match as netfilter's first: quick rules in order, then the rest reversed."""
        quick: list[_Seen] = []
        rest: list[_Rule] = []
        for item in items:
            if isinstance(item, _Group):
                quick += self._decision_order(item.items, chain)
            elif isinstance(item, _Opaque):
                if chain in item.chains:
                    quick.append(item)  # unseen rules may be quick: nothing after them is certain
            elif item.action in ("pass", "block") and _applies(item.parts, chain):
                (quick if item.quick else rest).append(item)
        return quick + rest[::-1]

    def _filter_chain(self, chain: str) -> list[Rule]:
        out = self._skip_rules(chain)
        out += self._reply_rules(chain)
        out.append(Rule((_ESTABLISHED,), Verdict("accept"), "pf's state table: pass rules keep state",
                        f"{self.reader.source}: state table"))
        out += self._translated_rules() if chain == "in" else self._out_translation_rules()
        for item in self._decision_order(self.items, chain):
            if isinstance(item, _Opaque):
                out += self._emit(item.cond.parts, chain, UnmodelledAction(item.text), item.origin)
            elif chain == "in" and _is_pass_rdr(item):
                # The packets this rule decides are translated: they are forwarded as their
                # image (the accept above), never as they arrived.
                out += self._emit(item.parts, chain, Verdict("drop"), item.origin, comment="translated by this rule (see its image above)")
            else:
                out += self._tagged_unknowns(item, chain) + self._untranslated_unknowns(item, chain)
                out += self._emit(item.parts, chain, _verdict(item), item.origin)
        return out

    def _skip_rules(self, chain: str) -> list[Rule]:
        out: list[Rule] = []
        for iface, origin in self.reader.skip:
            if _LOOPBACK_RE.fullmatch(iface.name) and not iface.negate:
                continue  # nothing is forwarded in or out of a loopback interface
            out += self._emit([_Rule(origin, "pass", on=(iface,))], chain, Verdict("accept"), origin, comment="set skip: pf does not filter here")
        return out

    def _passed_by_default(self, chain: str, iface: str | None = None) -> list[int]:
        """The families whose packets may match no rule of the pass (and pass by default): those
        without a block rule that every packet of the family matches (`block all`, `block in inet`)."""
        bare = _Rule("", "block")
        covered: set[int] = set()
        for r in self.rules:
            if (r.action == "block" and not r.parents and _applies([r], chain) and r.on in (None, (_If(iface),) if iface else None)
                    and replace(r, origin="", reject=False, direction=None, quick=False, on=None, af=None, label="") == bare):
                covered |= {r.af} if r.af else {4, 6}
        return [f for f in (4, 6) if f not in covered]

    def _reply_rules(self, chain: str) -> list[Rule]:
        """Established packets that pf filters by the rules, not by the state table: replies of
        `no state` pass rules, and (without a block rule for every packet) replies of packets
        passed by default, which keeps no state. Their verdict is left open."""
        out: list[Rule] = []
        for r in self.rules:
            if r.action == "pass" and not r.keep_state and not r.parents:
                # the replies leave by the interface the requests came in by: the other pass
                flipped = {"in": "out", "out": "in", None: None}[r.direction]
                back = _Rule(r.origin, "pass", direction=flipped, on=r.on, af=r.af, protos=r.protos, src=r.dst, dst=r.src,
                             dport=r.sport, sport=r.dport)
                out += self._emit([back], chain, UnmodelledAction(f"replies of the 'no state' rule {r.origin}: pf filters them by the rules"),
                                  _aside(r.origin, "replies"), extra=(_ESTABLISHED,))
        for family in self._passed_by_default(chain):
            for r in self.rules:
                if r.action == "block" and _applies(r.parts, chain):
                    out += self._emit(list(r.parts) + [_Rule(r.origin, "block", af=family)], chain, UnmodelledAction(
                        "replies of packets that no rule passed (pf's default pass keeps no state) meet this block rule"),
                        _aside(r.origin, "replies"), extra=(_ESTABLISHED,))
        return out

    def _translated_rules(self) -> list[Rule]:
        out: list[Rule] = []
        for r in self.rules:
            if _translates_and_passes(r) and r.rdr is not None and r.rdr.address is not None:
                image = self._image(replace(r, unknown=r.unknown + (_translated_by(r).text,)).parts, r.rdr)
                out += self._emit(image, "in", Verdict("accept"), _aside(r.origin, "translated"), comment="translated and passed at once")
        return out

    def _out_translation_rules(self) -> list[Rule]:
        out: list[Rule] = []
        for r in self.rules:
            if r.action == "nat" and r.passes:
                out += self._emit(r.parts, "out", Verdict("accept"), r.origin, comment="nat pass: out without the out rules")
            elif r.rdr is not None and r.action in ("pass", "match") and _applies(r.parts, "out"):
                out += self._emit(r.parts, "out", UnmodelledAction(f"rdr-to on the way out ({r.origin}): the destination changes after routing"),
                                  _aside(r.origin, "out"))
        return out

    def _untranslated_unknowns(self, rule: _Rule, chain: str) -> list[Rule]:
        """OpenBSD: a rule before a `match ... rdr-to` judged the packet untranslated, while the
        in chain sees it translated. Where that can change whether the rule matches, its
        verdict on the translated packets is left open (the rule itself stays exact for the
        others)."""
        position = self._position.get(id(rule))
        if chain != "in" or position is None:
            return []
        out: list[Rule] = []
        for first, parts, target in self._images:
            if first > position and not self._commutes(rule, parts, target):
                unconstrained = [replace(p, dst=None, dport=None) for p in rule.parts]
                out += self._emit(unconstrained + self._image(parts, target), chain, UnmodelledAction(
                    f"{rule.origin} judged these packets before the translation at {parts[0].origin}, untranslated"), _aside(rule.origin, "untranslated"))
        return out

    def _commutes(self, f: _Rule, parts: list[_Rule], target: _Target) -> bool:
        """Does rule f judge every packet these parts translate as it judges its image?"""
        first = parts[0]  # what rules before the translation saw: its destination and port
        assert target.address is not None
        if first.action == "rdr":
            return False  # an old-style rdr translated the packet before them: not followed here
        if not self._ifaces_may_meet(f.parts, parts) or (
                not self._may_overlap(f.parts, parts, "nat") and not self._may_overlap(f.parts, self._image(parts, target), "nat")):
            return True
        if any(p.dst is not None or p.dport is not None or p.tagged is not None for p in f.parts[:-1]) or f.tagged is not None:
            return False  # (the translation sets its tag, which the rule did not see)
        family = target.address.version
        if f.dst is not None:
            inside = self._contains(f.dst, target.address)
            before = self._addr_set(first.dst, family, "daddr", "nat")
            judged = self._addr_set(f.dst, family, "daddr", "nat")
            if inside is None or before is None or judged is None:
                return False
            if (inside and before - judged) or (not inside and before & judged):
                return False
        if f.dport is not None and target.port is not None:
            inside_port = _ports_contain(f.dport, target.port.low)
            if inside_port is None:
                return False
            before_ports = _port_set(first.dport.ranges if first.dport is not None else _PORTS_ALL)
            judged_ports = _port_set(f.dport.ranges)
            if (inside_port and before_ports - judged_ports) or (not inside_port and before_ports & judged_ports):
                return False
        return True

    # -- tags -------------------------------------------------------------------------------

    def _translation_tag(self, tag: str, chain: str) -> bool:
        """Does `tagged TAG`, in the in or the out pass, say exactly that the packet was translated
        (netfilter's `ct status dnat`)? When only translation rules set it, each time they
        translate (old-style rdr, `match in ... rdr-to`, a quick `pass in ... rdr-to`; not binat,
        whose outbound half tags untranslated packets), every translation rule sets it (or a
        packet translated by another would be translated but untagged), and no rule of that pass
        can replace it before the rule is reached (a non-quick or match rule setting another tag;
        a quick one ends the evaluation). In the out pass the in rule that passed the packet may
        still have replaced it: see _tag."""
        key = (tag, chain)
        if key not in self._translation_tags:
            setters = [r for r in self.rules if r.tag == tag]
            translators = [r for r in self.rules if r.rdr is not None and r.action in ("rdr", "match", "pass")]
            self._translation_tags[key] = (
                bool(setters)
                and all(not r.parents and r.direction == "in" and r.rdr is not None
                        and ((r.action == "rdr" and not r.binat) or r.action == "match" or (r.action == "pass" and r.quick))
                        for r in setters)
                and all(r.tag == tag for r in translators)
                and not any(r.tag == tag for r in self._hidden)
                and not any(r.tag not in (None, tag) and _applies(r.parts, chain) for r in self._hidden)
                and not any(r.tag not in (None, tag) and r.action not in ("rdr", "no-rdr") and (not r.quick or r.action == "match")
                            and _applies(r.parts, chain) for r in self.rules))
        return self._translation_tags[key]

    def _tag(self, tag: str) -> _TagInfo:
        """What `tagged TAG` says in the out pass (see _TagInfo).

        A translation tag (see _translation_tag): translated, except for packets an in rule
        passed while setting another tag (tags replace each other).

        An interface tag stands for IF when it is set only by rules `in on IF` and a block rule
        matches every packet in on IF (so none passes by default, untagged). Rules that pass
        packets in on IF without setting it leave their packets' verdict open. No other tag may
        be set in on IF (tags replace each other) but one, its partner, when one of the two is
        set only by rules that ask for translated packets (`tagged` a translation tag) and the
        other by rules that do not (the renderer's freebsd fwm_in_IF_dnat and fwm_in_IF):
          - the translated one says IF and translated: the partner's rules, which pass
            translated packets too, leave those open, unless each has a twin (below);
          - the plain one says IF and, when each of its rules has a twin, not translated (the
            translated packets all got the partner); else IF (the partner's packets open).
        A twin of a plain rule: a quick rule of the partner before it that matches every packet
        it matches, once translated. A translated packet meets the twin first: it never gets
        the plain tag. Translation rules setting a translation tag before the filter rules
        (old-style rdr) are no partner: the in rules replace their tag."""
        if tag in self._tags:
            return self._tags[tag]
        info = _TagInfo()
        if any(r.tag == tag for r in self._hidden):
            pass
        elif self._translation_tag(tag, "in") and self._translation_tag(tag, "out"):
            strippers = tuple(r for r in self.rules if _applies(r.parts, "in") and _passes_in(r) and r.tag not in (None, tag))
            info = _TagInfo(True, None, True, strippers)
        else:
            setters = [r for r in self.rules if r.tag == tag]
            iface = self._setters_iface(setters)
            if iface is not None and not self._passed_by_default("in", iface):
                here = [r for r in self.rules if self._may_apply_on(r, iface)]
                translated = self._need_translation(setters)
                others = {r.tag for r in here if r.tag not in (None, tag)
                          and not (r.action == "rdr" and self._translation_tag(r.tag, "in"))}  # type: ignore[arg-type]
                partner: str | None = None
                if len(others) == 1:
                    (other,) = others
                    theirs = [r for r in self.rules if r.tag == other]
                    if (not any(r.tag == other for r in self._hidden) and self._setters_iface(theirs) == iface
                            and self._need_translation(theirs) != translated):
                        partner = other
                if not others or partner is not None:
                    twins = partner is not None and (self._twinned(theirs, setters) if translated else self._twinned(setters, theirs))
                    dnat = True if translated else (False if twins else None)
                    untagged = tuple(r for r in here if _passes_in(r) and r.tag != tag and not (twins and r.tag == partner))
                    info = _TagInfo(True, iface, dnat, untagged)
        self._tags[tag] = info
        return info

    @staticmethod
    def _setters_iface(setters: Sequence[_Rule]) -> str | None:
        """The one interface all the rules setting a tag pass packets in on (plain rules, no anchor), or None."""
        names = {r.on[0].name for r in setters if r.on is not None and len(r.on) == 1 and not r.on[0].negate and not r.on[0].group}
        if setters and len(names) == 1 and not any(r.parents or r.direction != "in" or r.on is None or len(r.on) != 1 for r in setters):
            (iface,) = names
            return iface
        return None

    def _need_translation(self, setters: Sequence[_Rule]) -> bool:
        """Do all these rules ask for translated packets (`tagged` a translation tag)?"""
        return bool(setters) and all(r.tagged is not None and not r.tagged[1] and self._translation_tag(r.tagged[0], "in") for r in setters)

    def _twinned(self, plain: Sequence[_Rule], translated: Sequence[_Rule]) -> bool:
        """Has every plain rule a twin among the translated ones (see _tag)?"""
        position = {id(r): i for i, r in enumerate(self.rules)}

        def bare(r: _Rule) -> _Rule:
            return replace(r, origin="", label="", tag=None, tagged=None)

        first: dict[_Rule, int] = {}
        for r in translated:
            if r.quick:
                first.setdefault(bare(r), position[id(r)])
        for u in plain:
            at = position[id(u)]
            if first.get(bare(u), at) < at:
                continue  # the renderer's twin: the same rule, with the tags
            if not any(r.quick and position[id(r)] < at and self._covers([replace(r, tagged=None)], [u]) for r in translated):
                return False
        return True

    @staticmethod
    def _may_apply_on(rule: _Rule, iface: str) -> bool:
        """Can the rule match a packet in on `iface`? (conservative)"""
        if not _applies(rule.parts, "in"):
            return False
        if rule.on is None:
            return True
        return any(i.group or i.name == "any" or (i.name == iface) != i.negate for i in rule.on)

    def _tagged_alts(self, rule: _Rule, chain: str) -> Alts:
        assert rule.tagged is not None
        tag, negate = rule.tagged
        if chain == "out":
            info = self._tag(tag)
            if info.known:
                matches = info.matches()
                return [(replace(m, negate=not m.negate),) for m in matches] if negate else [matches]
        elif chain == "in" and self._translation_tag(tag, "in"):
            return [(_UNTRANSLATED if negate else _TRANSLATED,)]
        elif chain == "nat" and self._translation_tag(tag, "in"):
            return [()] if negate else []  # the nat chain judges packets not translated yet (see _on_image)
        if not any(r.tag == tag for r in self.rules + self._hidden):
            return [()] if negate else []  # no rule sets it: `tagged` never matches
        return [(Unmodelled(f"{'! ' if negate else ''}tagged {tag} (what the tag stands for is neither one input "
                            "interface nor the translation)"),)]

    def _tagged_unknowns(self, rule: _Rule, chain: str) -> list[Rule]:
        """Packets passed in on the tag's interface by a rule that does not set the tag (and that
        can look like this rule's packets) reach the out pass untagged: their verdict is open."""
        if rule.tagged is None or chain != "out":
            return []
        tag, _ = rule.tagged
        info = self._tag(tag)
        # only the packets of the translation status the tag says: for the others pf and the IR agree
        extra = () if info.dnat is None else ((_TRANSLATED if info.dnat else _UNTRANSLATED),)
        out: list[Rule] = []
        for u in info.untagged:
            seen = self._image(u.parts, u.rdr) if _translates_and_passes(u) and u.rdr is not None and u.rdr.address is not None else u.parts
            as_out = [replace(p, direction=None, on=None, received_on=p.on, tagged=None, tag=None) for p in seen]
            if self._may_overlap(rule.parts, as_out):
                out += self._emit(list(rule.parts[:-1]) + [replace(rule, tagged=None)] + as_out, "out", UnmodelledAction(
                    f"tagged {tag}: packets passed in by {u.origin} do not carry it"), _aside(rule.origin, "untagged"), extra=extra)
        return out

    # -- the nat chain -------------------------------------------------------------------

    def _nat_chain(self) -> list[Rule]:
        """Translation as first-match DNAT on the untranslated packet. Each entry is
        (translates, its parts or None when unknown, its IR rules); an entry that only ends
        translation is kept when a later translation could have matched the same packets."""
        entries: list[tuple[bool, Sequence[_Rule] | None, list[Rule]]] = [(False, None, self._skip_rules("nat"))]

        def stop(parts: Sequence[_Rule], origin: str) -> None:
            entries.append((False, parts, self._emit(parts, "nat", Verdict("accept"), origin)))

        def translate(parts: Sequence[_Rule] | None, rules: list[Rule]) -> None:
            entries.append((True, parts, rules))

        sequence = self._nat_sequence()
        # FreeBSD: binat, then rdr, first match, all before the filter rules
        old = [r for r in self.flat if (isinstance(r, _Rule) and r.action in ("rdr", "no-rdr"))
               or (isinstance(r, _Opaque) and r.chains == frozenset({"nat"}))]
        old.sort(key=lambda r: not (isinstance(r, _Rule) and r.binat))
        for r in old:
            if isinstance(r, _Opaque):
                translate(None, self._emit(r.cond.parts, "nat", UnmodelledAction(r.text), r.origin))
            elif r.action == "no-rdr":
                stop(r.parts, r.origin)
            else:
                translate(r.parts, self._translation(list(r.parts), r.rdr, r.origin, 0, sequence))  # type: ignore[arg-type]
        # OpenBSD: match rules translate where they stand; a pass rule when it decides
        tail: list[_Rule] = []
        for k, item in enumerate(sequence):
            if isinstance(item, _Opaque):
                translate(None, self._emit(item.cond.parts, "nat", UnmodelledAction(item.text), item.origin))
            elif item.action == "match":
                if item.rdr is not None:
                    translate(item.parts, self._conflicts(item, sequence[:k])
                              + self._translation(list(item.parts), item.rdr, item.origin, k + 1, sequence, first=k))
            elif not item.quick:
                tail.append(item)
            elif _is_pass_rdr(item):
                translate(item.parts, self._translation(list(item.parts), item.rdr, item.origin, None, sequence))  # type: ignore[arg-type]
            else:
                stop(item.parts, item.origin)
        for item in reversed(tail):  # the last match decides
            if _is_pass_rdr(item):
                translate(item.parts, self._translation(list(item.parts), item.rdr, item.origin, None, sequence))  # type: ignore[arg-type]
            else:
                stop(item.parts, item.origin)
        kept: list[Rule] = []
        for i, (translates, parts, rules) in enumerate(entries):
            later = [p for t, p, _ in entries[i + 1:] if t]
            if translates or (parts is None and later) or any(
                    p is None or (self._ifaces_may_meet(parts, p) and self._may_overlap(parts, p, "nat")) for p in later):  # type: ignore[arg-type]
                kept += rules
        return kept

    def _covers(self, big: Sequence[_Rule], small: Sequence[_Rule]) -> bool:
        """Does every packet the `small` parts match also match the `big` ones? True only when
        plainly so: each condition of `big` is one of `small`'s, or wider. (Both on the
        in pass: `on` and `received-on` are the input interface.)"""
        narrow_ifaces = _input_names(small, strict=False)
        for p in big:
            if p.unknown or p.tagged is not None or p.sport is not None or (p.af is not None and p.af not in {q.af for q in small}):
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

    def _nat_sequence(self) -> list[_Seen]:
        """The in pass's rules in file order, as translation sees them: a quick anchor's rules
        all end the evaluation when they match."""
        out: list[_Seen] = []

        def walk(items: Sequence[_Item], quick: bool) -> None:
            for item in items:
                if isinstance(item, _Group):
                    walk(item.items, True)
                elif isinstance(item, _Opaque):
                    if "nat" in item.chains and item.chains != frozenset({"nat"}):
                        out.append(item)
                elif item.action in ("pass", "block", "match") and _applies(item.parts, "in"):
                    self._position[id(item)] = len(out)
                    out.append(replace(item, quick=True) if quick and item.action != "match" else item)

        walk(self.items, False)
        return out

    def _conflicts(self, match: _Rule, earlier: Sequence[_Seen]) -> list[Rule]:
        """An earlier non-quick `pass ... rdr-to` that may also match: if it decides, it translates
        the packet again after this match rule did. Left open."""
        out: list[Rule] = []
        for p in earlier:
            if isinstance(p, _Rule) and _is_pass_rdr(p) and not p.quick and self._may_overlap(match.parts, p.parts, "nat"):
                out += self._emit(list(match.parts) + list(p.parts), "nat", UnmodelledAction(
                    f"translated by {match.origin}, then again by {p.origin} if that rule decides"), _aside(match.origin, "again"))
        return out

    def _translation(self, parts: list[_Rule], target: _Target, origin: str, start: int | None,
                     sequence: Sequence[_Seen], depth: int = 0, first: int | None = None) -> list[Rule]:
        """DNAT for what `parts` match, composed with the translations that the rules from
        `start` on apply to the translated packet (OpenBSD's match rules apply at once).
        `first`: the position of the first match rule in the composition."""
        if target.address is not None and first is not None:
            self._images.append((first, parts, target))
        if target.address is None:
            return self._emit(parts, "nat", UnmodelledAction(f"translation to {target.text} (not one address and port)"), origin)
        final = Dnat(target.address.version, target.address, target.port)
        composed: list[tuple[bool, list[Rule]]] = []  # (changes the target, rules)
        for k in range(start if start is not None else len(sequence), len(sequence)):
            item = sequence[k]
            if isinstance(item, _Opaque):
                composed.append((True, self._emit(parts, "nat", UnmodelledAction(f"{item.text}, after the translation at {origin}"), _aside(origin, "then"))))
                break
            if (item.action in ("pass", "block") and not item.quick and not _is_pass_rdr(item)) or not self._ifaces_may_meet(parts, item.parts):
                continue  # decides nothing about translation, or never sees these packets
            image = self._on_image(item.parts, target)
            if image is None or not self._may_overlap(parts, image, "nat"):
                continue
            if item.action == "match" and item.rdr is not None:
                if depth >= 8:
                    composed.append((True, self._emit(parts + image, "nat", UnmodelledAction("translated again more than 8 times"), _aside(origin, "again"))))
                    continue
                composed.append((True, self._translation(parts + image, _compose(target, item.rdr), item.origin, k + 1, sequence, depth + 1,
                                                         k if first is None else first)))
            elif _is_pass_rdr(item) and item.quick:
                composed.append((True, self._translation(parts + image, _compose(target, item.rdr), item.origin, None, sequence,  # type: ignore[arg-type]
                                                         first=first)))
            elif _is_pass_rdr(item):
                composed.append((True, self._emit(parts + image, "nat", UnmodelledAction(
                    f"translated by {origin}, then again by {item.origin} if that rule decides"), _aside(origin, "again"))))
            elif item.quick and item.action != "match":
                composed.append((False, self._emit(parts + image, "nat", final, origin)))  # evaluation ends: stays translated
                if self._covers(image, parts):
                    break  # ... for every packet translated here: nothing after it is reached
        while composed and not composed[-1][0]:
            composed.pop()  # the final rule below says the same
        return [rule for _, rules in composed for rule in rules] + self._emit(parts, "nat", final, origin)


def detect_dialect(text: str) -> str:
    """'freebsd' for the renderer's FreeBSD header or old-style translation rules, else 'openbsd'."""
    found = _DIALECT_RE.search(text)
    if found and found.group(1) in DIALECTS:
        return found.group(1)
    return "freebsd" if _OLD_TRANSLATION_RE.search(text) else "openbsd"


def parse_ruleset(text: str, source: str = "", dialect: str | None = None, *,
                  tables: Mapping[str, str] | None = None, anchors: Mapping[str, str] | None = None) -> Ruleset:
    """A pf ruleset (a pf.conf, or a `pfctl -sr` / `-sn` / `-sa` listing) as the Ruleset IR,
    with netfilter's semantics (see the comment at the top of this section).

    `tables` gives the addresses of tables the text only names (as `pfctl -t NAME -T show`
    prints them); `anchors` the rules of anchors the text only names (as `pfctl -a NAME -sr`
    prints them; "" for an empty anchor). Others are unmodelled. `dialect` decides whether a
    name without a unit number is an interface group (OpenBSD) or may be an interface
    (FreeBSD, which can rename interfaces); it is detected when not given.

    Invalid text raises BackendError("SOURCE:LINE: message")."""
    if dialect is not None and dialect not in DIALECTS:
        raise BackendError(f"unknown pf dialect {dialect!r} (known: {', '.join(DIALECTS)})")
    where = source or "pf.conf"
    reader = _Reader(where, dialect or detect_dialect(text), tables, anchors)
    items = reader.read(text, where)
    return _Builder(reader, items).ruleset()
