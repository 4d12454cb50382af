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
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from netaddr import AddrFormatError, IPNetwork, IPRange, cidr_merge

from fwmatrix.errors import BackendError
from fwmatrix.ir import Chain, Dnat, DnatMap, Jump, Match, Ruleset, SetDef, Table, Unmodelled, Value, Verdict, VerdictMap
from fwmatrix.model import PortRange

NAME = "pf"
SUFFIX = ".pf.conf"
DIALECTS = ("openbsd", "freebsd")
DEFAULT_DIALECT = "openbsd"
LOCAL_ANCHOR = "local"

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 132: "sctp"}
PROTO_NUMBERS = {name: number for number, name in PROTO_NAMES.items()}
PORT_PROTOS = (6, 17)  # pf matches ports for tcp and udp (sctp ports: recent FreeBSD only)
ADDR_FIELDS = {"ip.saddr": (4, "saddr"), "ip.daddr": (4, "daddr"), "ip6.saddr": (6, "saddr"), "ip6.daddr": (6, "daddr")}
KNOWN_FIELDS = ("iif", "oif", "l4proto", "dport", "ct.state", "nfproto") + tuple(ADDR_FIELDS)
# Known to the IR, not lowered (yet): refused with a reason rather than dropped.
REFUSED_FIELDS = {"sport": "source ports are not lowered to pf yet", "ct.status": "pf cannot match a conntrack status"}

# pf limits (PF_TABLE_NAME_SIZE, PF_RULE_LABEL_SIZE, IFNAMSIZ), minus the NUL.
TABLE_NAME_MAX = 31
LABEL_MAX = 63
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
        cell = _Cell(ifaces["iif"], ifaces["oif"], family, addrs["saddr"], addrs["daddr"], proto, dport,  # type: ignore[arg-type]
                     ", ".join(dict.fromkeys(notes)), target)
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
            if state is not None:
                raise RenderError(f"nat chain '{chain.name}': ct.state matches have no pf translation form")
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


def _group_key(iface: str | None, other: str | None, family: int | None) -> tuple:
    return (iface or "", other or "", family or 0)


def _filter_lines(w: _Writer, low: _Lowered, direction: str) -> list[str]:
    """The in-list (pre-filter, out-interface dropped) or the out-list (exact)."""
    projected: list[tuple[str, str, list[_Cell]]] = []
    for verdict, note, cells in low.filter_rules:
        if direction == "in":
            if verdict != "accept" and any(c.oif is not None for c in cells):
                # A drop that depends on the out-interface cannot be decided on the way
                # in; the exact out-list applies it. Skipping it here only widens the
                # pre-filter, never the result.
                cells = [c for c in cells if c.oif is None]
            cells = [_Cell(c.iif, None, c.family, c.saddr, c.daddr, c.proto, c.dport, c.note) for c in cells]
            if w.dialect == "freebsd" and verdict == "accept" and any(c.iif is None for c in cells):
                raise RenderError("an accept rule without an input interface: the freebsd dialect carries the input "
                                  "interface to the out rules as a tag, and a tag needs the interface")
        projected.append((verdict, note, cells))
    lines: list[str] = []
    for verdict, items in _runs(projected):
        groups: dict[tuple, list[tuple[_Cell, str]]] = {}
        for cell, note in items:
            key = (cell.iif, None, cell.family) if direction == "in" else (cell.oif, cell.iif, cell.family)
            groups.setdefault(key, []).append((cell, note))
        for (on, received, family), members in sorted(groups.items(), key=lambda kv: _group_key(*kv[0])):
            notes = list(dict.fromkeys(n for _, n in members if n))
            if notes:
                lines.append(comment("; ".join(notes)))
            head = f"{_VERDICT_HEAD[verdict]} {direction} quick" + (f" on {w.iface(on)}" if on else "")
            for dims, labels in _products(c for c, _ in members):
                opts = []
                if received is not None:
                    opts.append(f"received-on {w.iface(received)}" if w.dialect == "openbsd" else f"tagged {w.tags.get(interface_name(received))}")
                if direction == "in" and verdict == "accept" and on is not None and w.dialect == "freebsd":
                    opts.append(f"tag {w.tags.get(interface_name(on))}")
                if labels:
                    opts.append(label(", ".join(labels)))
                lines.append(w.rule(head, family, dims, labels, opts))
    return lines


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
                    opts = [f"rdr-to {to}"] + ([label(", ".join(labels))] if labels else [])
                    lines.append(w.rule(head, family, dims, labels, opts))
                else:
                    if labels:
                        lines.append(comment(", ".join(labels)))  # rdr rules take no label
                    head = "rdr" + (f" on {w.iface(on)}" if on else "")
                    lines.append(w.rule(head, family, dims, labels, [f"-> {to}"]))
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
    if dialect == "freebsd" and translation:
        # FreeBSD's pfctl wants translation rules before filter rules (require-order).
        out += ["", "# translation (netfilter: prerouting DNAT); the filter rules below see the translated packet"]
        out += translation
    out += [
        "",
        "# default: block what no rule passes (netfilter: forward policy drop). This blocks the",
        f"# firewall's own traffic too: rules for it go in anchor \"{LOCAL_ANCHOR}\" (at the end).",
        "block drop all",
    ]
    if dialect == "openbsd" and translation:
        out += ["", "# translation (netfilter: prerouting DNAT); the rules after a match rule see the translated packet"]
        out += translation
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
        elif ((opt == "tag" and action == "pass" and rule.direction == "in")
              or (opt == "tagged" and action in ("pass", "block") and rule.direction == "out")) and conf.dialect == "freebsd":
            tag = c.next("a tag")
            if not IDENT_RE.match(tag) or tag in PF_KEYWORDS:
                raise _Bad(f"bad tag {tag!r}")
            setattr(rule, opt, tag)
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

