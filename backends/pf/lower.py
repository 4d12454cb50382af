"""The lowering: the IR's netfilter chains as pf rules. This module flattens the
chains and expands them into cells, merge.py merges those into products (steps 1
and 2 below); writer.py writes the products as pf's in and out passes and its
translation rules (steps 3 to 5).

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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
import itertools
from itertools import product, repeat
from operator import attrgetter, itemgetter
from typing import Callable, Iterable, Iterator

from netaddr import IPNetwork, IPRange

from fwmatrix.backends.pf.names import RenderError, interface_name
from fwmatrix.ir import Chain, Dnat, DnatMap, Element, Jump, Log, Masquerade, Match, Ruleset, SetDef, Snat, Table, Unmodelled, Value, Verdict, VerdictMap
from fwmatrix.matrix.model import ALL_PORTS, PortRange

PORT_PROTOS = (6, 17)  # pf matches ports for tcp and udp (sctp ports: recent FreeBSD only)
ADDR_FIELDS = {"ip.saddr": (4, "saddr"), "ip.daddr": (4, "daddr"), "ip6.saddr": (6, "saddr"), "ip6.daddr": (6, "daddr")}
KNOWN_FIELDS = ("iif", "oif", "l4proto", "dport", "ct.state", "ct.status", "nfproto") + tuple(ADDR_FIELDS)
# Known to the IR, not lowered (yet): refused with a reason rather than dropped.
REFUSED_FIELDS = {"sport": "source ports are not lowered to pf yet"}


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
    verdict: str  # 'accept', 'drop', 'reject', 'dnat', 'snat'
    comment: str
    dnat: DnatMap | Dnat | None = None
    snat: Snat | Masquerade | None = None


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
        elif isinstance(action, (Snat, Masquerade)):
            out.append(_Flat(conds, "snat", note, snat=action))
        elif isinstance(action, Log):
            out.append(_Flat(conds, "log", note))
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
        return _Cond(match.fields, _element_entries(match.fields, set_def.elements, mapped=False))
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
    return _Cond(dnat.fields, _element_entries(dnat.fields, map_def.elements, mapped=True))


def _element_entries(fields: tuple[str, ...], elements: tuple[Element, ...], mapped: bool) -> tuple[Entry, ...]:
    """A set's (or a map's) elements as a cond's entries: (key, comment, mapped data or ())."""
    keys = list(map(_KEY, elements))
    data = map(_DATA, elements) if mapped else repeat(())
    if set(map(type, keys)) == {tuple} and not any(issubclass(t, IPRange) for t in set(map(type, itertools.chain.from_iterable(keys)))):
        return tuple(zip(keys, map(_COMMENT, elements), data))  # no address range to split (a loop in C over 75k elements)
    return tuple((k, e.comment, d) for e, d in zip(elements, data) for k in _split_ranges(fields, e.key))


_KEY, _DATA, _COMMENT = attrgetter("key"), attrgetter("data"), attrgetter("comment")


def _split_ranges(fields: tuple[str, ...], key: tuple[Value, ...]) -> list[tuple[Value, ...]]:
    """An address range (10.0.0.3-10.0.0.9) becomes the networks that cover it exactly."""
    for v in key:
        if isinstance(v, IPRange):
            break
    else:
        return [tuple(key)]  # most keys (one a set element): nothing to split, and no generator made to say so
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
    width, data_width = len(fields), len(set_def.data)  # once, not once an element
    if not verdicts and set(map(len, map(_KEY, set_def.elements))) <= {width} and set(map(len, map(_DATA, set_def.elements))) <= {data_width}:
        return set_def  # every element fits (the lengths checked by loops in C); else the loop below finds the first that does not
    for element in set_def.elements:
        fits = len(element.data) == 1 and isinstance(element.data[0], (Verdict, Jump)) if verdicts else len(element.data) == data_width
        if len(element.key) != width or not fits:
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


# Never changed once made (dataclasses.replace copies), yet not frozen: a frozen dataclass's
# __init__ costs four times as much, and there is one cell per set element (75k at 10,000 openings).
@dataclass(unsafe_hash=True, slots=True)
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
    snat: IPNetwork | str | None = None  # an out cell's source NAT: to an address, or to the address of this interface (masquerade)


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


_TABLE_FAMILY = {"ip": 4, "ip6": 6, "inet": None}
# the fields whose values may differ from cell to cell in _column_cells (the rest: one value for the rule)
_COLUMN_FIELDS = frozenset(ADDR_FIELDS) | {"l4proto", "dport", "iif", "oif"}


def _cells(flat: _Flat, table: Table) -> list[tuple[_Cell, str | None]]:
    """The flat rule's cells, each with its ct.state value (None when not matched)."""
    try:
        cells = _column_cells(flat, table)
    except RenderError:
        cells = None  # the row by row lowering raises the error of the first row that has one
    return list(_row_cells(flat, table)) if cells is None else cells


def _column_cells(flat: _Flat, table: Table) -> list[tuple[_Cell, str | None]] | None:
    """_row_cells for the common rule, column by column: one cond of many entries (a set lookup)
    and the others of one entry each (a verdict map's branch, `ct status dnat`), no field in two
    conds. Every row then has the same fields, the same family and the one-entry conds' values, so
    each check is made once per distinct value and the cells are made by loops in C, not one
    dictionary and one pass of checks per row (75k rows at 10,000 openings). None: not such a
    rule, or a row is refused or matches nothing; _row_cells lowers it, and says why."""
    if flat.dnat is not None or table.family not in _TABLE_FAMILY:
        return None
    conds = sorted(flat.conds, key=lambda c: len(c.entries))  # as _expand orders them
    if not conds:
        return None
    *single, many = conds
    named = [f for cond in conds for f in cond.fields]
    if len(set(named)) != len(named) or any(len(cond.entries) != 1 for cond in single) or not many.entries \
            or not _COLUMN_FIELDS.issuperset(many.fields):
        return None
    fixed: dict[str, Value] = {}
    notes: list[str] = []
    for cond in single:
        key, note, _ = cond.entries[0]
        fixed.update(zip(cond.fields, key))
        if note:
            notes.append(note)
    keys = list(map(itemgetter(0), many.entries))
    if set(map(len, keys)) != {len(many.fields)}:
        return None

    def column(f: str, check: Callable[[Value], object]) -> Iterable[object]:
        """Field f's checked value in every row: the one-entry conds' value, or the set's column."""
        if f in fixed:
            return repeat(check(fixed[f]))
        values = list(map(itemgetter(many.fields.index(f)), keys))
        checked = {i: check(v) for i, v in dict(zip(map(id, values), values)).items()}
        return map(checked.__getitem__, map(id, values))

    family = _TABLE_FAMILY[table.family]
    addresses: dict[bool, Iterable[object]] = {True: repeat(None), False: repeat(None)}  # source? -> the cells' networks
    for f, (version, which) in ADDR_FIELDS.items():
        if f in fixed or f in many.fields:
            if family not in (None, version):
                return None  # ip and ip6 fields together: no row matches
            family = version
            addresses[which == "saddr"] = column(f, partial(_held_network, version))
    if "nfproto" in fixed:
        if fixed["nfproto"] not in (4, 6) or family not in (None, fixed["nfproto"]):
            return None
        family = fixed["nfproto"]  # type: ignore[assignment]
    protos = column("l4proto", _checked_proto) if "l4proto" in fixed or "l4proto" in many.fields else repeat(None)
    if "dport" in fixed or "dport" in many.fields:
        ports = column("dport", _cell_ports)
        if "l4proto" not in many.fields:
            if fixed.get("l4proto") not in PORT_PROTOS:
                return None
        elif not set(map(itemgetter(many.fields.index("l4proto")), keys)).issubset(PORT_PROTOS):
            return None
    else:
        ports = repeat(None)
    iifs, oifs = (column(f, _checked_interface) if f in fixed or f in many.fields else repeat(None) for f in ("iif", "oif"))
    state, status = fixed.get("ct.state"), fixed.get("ct.status")
    if state not in (None, "established", "related", "new", "invalid") or status not in (None, "dnat"):
        return None
    own = list(map(itemgetter(1), many.entries))  # each element's note
    if notes:
        joined = {n: ", ".join(dict.fromkeys(notes + [n] if n else notes)) if n or len(notes) > 1 else notes[0] for n in set(own)}
        texts: Iterable[str] = map(joined.__getitem__, own)
    elif all(type(n) is str for n in set(own)):
        texts = own  # one note at most: the element's own
    else:
        return None
    cells = map(_Cell, iifs, oifs, repeat(family), addresses[True], addresses[False], protos, ports, texts,
                repeat(None), repeat(status is not None))
    return list(zip(cells, repeat(state)))


def _held_network(version: int, net: Value) -> IPNetwork | None:
    """An address field's value as a cell holds it (None: any), the IR's own object when it is a CIDR."""
    if not isinstance(net, IPNetwork) or net.version != version:
        raise RenderError(f"{net!r} is not an IPv{version} network")
    return None if net.prefixlen == 0 else net if net.value == net.first else net.cidr


def _checked_proto(proto: Value) -> int:
    if not isinstance(proto, int) or isinstance(proto, bool) or not 0 <= proto <= 255:
        raise RenderError(f"l4proto {proto!r} is not a protocol number")
    return proto


def _cell_ports(value: Value) -> PortRange | None:
    rng = _port_range(value)
    return None if rng == ALL_PORTS else rng  # every port: the protocol says it all


def _checked_interface(name: Value) -> str:
    return interface_name(name)  # type: ignore[arg-type]


def _row_cells(flat: _Flat, table: Table) -> Iterator[tuple[_Cell, str | None]]:
    """_cells row by row: any rule (conds on one field, several multi-entry conds, DNAT targets)."""
    table_family = _TABLE_FAMILY
    if table.family not in table_family:
        raise RenderError(f"table family '{table.family}' has no pf form")
    # every row of a flat rule has every field of its conds: what to look at is known before the rows
    fields = {f for cond in flat.conds for f in cond.fields}
    addr_fields = [(f, version, which == "saddr") for f, (version, which) in ADDR_FIELDS.items() if f in fields]
    cidrs: dict[int, tuple[int, IPNetwork | None]] = {}  # id(the row's network) -> its version, what the cell holds (netaddr is slow)
    ports: dict[int, PortRange | None] = {}  # id(the row's port value) -> the cell's range (None: every port)
    names: set[str] = set()  # interface names checked
    for row, notes, data in _expand(flat.conds):
        family = table_family[table.family]
        saddr = daddr = None
        contradiction = False
        for f, version, source in addr_fields:
            net = row[f]
            known = cidrs.get(id(net))
            if known is None or known[0] != version:
                if not isinstance(net, IPNetwork) or net.version != version:
                    raise RenderError(f"field {f}: {net!r} is not an IPv{version} network")
                # the IR's own object when it is a CIDR already (they are shared: products hash them once)
                known = cidrs[id(net)] = (version, None if net.prefixlen == 0 else net if net.value == net.first else net.cidr)
            held = known[1]
            if family not in (None, version):
                contradiction = True  # ip and ip6 fields together: the rule matches nothing
            family = version
            if source:
                saddr = held
            else:
                daddr = held
        if "nfproto" in row:
            if row["nfproto"] not in (4, 6):
                raise RenderError(f"nfproto {row['nfproto']!r} is not an address family (4 or 6)")
            contradiction |= family not in (None, row["nfproto"])
            family = row["nfproto"]
        if flat.dnat is not None:
            if family not in (None, flat.dnat.family):
                contradiction = True
            family = flat.dnat.family
        if contradiction:
            continue
        proto = row.get("l4proto")
        if proto is not None and (not isinstance(proto, int) or isinstance(proto, bool) or not 0 <= proto <= 255):
            raise RenderError(f"l4proto {proto!r} is not a protocol number")
        dport = None
        if "dport" in row:
            value = row["dport"]
            dport = ports.get(id(value), ports)
            if dport is ports:
                rng = _port_range(value)
                dport = ports[id(value)] = None if rng == ALL_PORTS else rng  # every port: the protocol says it all
            if proto not in PORT_PROTOS:
                raise RenderError(f"a port match on protocol {proto!r}: pf matches ports on tcp and udp only")
        if isinstance(flat.dnat, Dnat):
            data = (flat.dnat.address,) + ((flat.dnat.port,) if flat.dnat.port is not None else ())
        target = _target(flat.dnat, data) if flat.dnat is not None else None
        iif, oif = row.get("iif"), row.get("oif")
        for name in (iif, oif):
            if name is not None and name not in names:
                interface_name(name)  # type: ignore[arg-type]
                names.add(name)
        state = row.get("ct.state")
        if state is not None and state not in ("established", "related", "new", "invalid"):
            raise RenderError(f"ct.state {state!r} is not a connection state")
        status = row.get("ct.status")
        if status is not None and status != "dnat":
            raise RenderError(f"ct status {status!r}: pf is told only `ct status dnat` (a tag the translation rules set)")
        note = notes[0] if len(notes) == 1 else ", ".join(dict.fromkeys(notes))
        yield _Cell(iif, oif, family, saddr, daddr, proto, dport, note, target, status is not None), state  # type: ignore[arg-type]


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
    input_rules: list[tuple[str, list[_Cell]]] = field(default_factory=list)  # the firewall's own services: comment, cells
    log_rules: list[tuple[str, list[_Cell], bool]] = field(default_factory=list)  # logged new connections: comment, cells, to the firewall
    log_drops: set[str] = field(default_factory=set)  # the hooks ('forward', 'input') whose policy drops are logged

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
    postrouting: list[tuple[Table, Chain]] = []
    local: list[tuple[Table, Chain]] = []
    for table in ruleset.tables:
        for chain in table.chains:
            if chain.hook is None:
                continue
            if chain.hook == "forward" and chain.type == "filter":
                forward.append((table, chain))
            elif chain.hook == "prerouting" and chain.type == "nat":
                prerouting.append((table, chain))
            elif chain.hook == "postrouting" and chain.type == "nat":
                postrouting.append((table, chain))
            elif chain.hook == "input" and chain.type == "filter":
                local.append((table, chain))
            else:
                raise RenderError(f"base chain '{chain.name}' ({chain.type} on {chain.hook}): the pf backend lowers forward "
                                  "filtering, prerouting DNAT and postrouting source NAT only")
    if len(forward) > 1 or len(prerouting) > 1 or len(postrouting) > 1 or len(local) > 1:
        raise RenderError("more than one forward filter chain or nat chain on one hook: their combined verdict has no single pf rule list")
    low = _Lowered()
    if prerouting:
        _lower_nat(low, *prerouting[0])
    if forward:
        _lower_forward(low, *forward[0])
    if postrouting:
        from fwmatrix.backends.pf.snat import apply_snat, snat_cells  # it builds on this module's cells

        apply_snat(low, snat_cells(*postrouting[0]))
    if local:
        from fwmatrix.backends.pf.local import lower_input  # it builds on this module's cells

        lower_input(low, *local[0])
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
    # two overlapping cells have nested destinations (or one has none): each pair is found from
    # the narrower one, among the cells whose destination holds its own
    index = _DestIndex(cells, _family)
    # the overlap first: its port test rules out most pairs (port forwards to one public address
    # differ by port), and comparing targets compares netaddr objects
    return any(b is not a and _cells_overlap(a, b) and a.target != b.target for a in cells for b in index.holding(a.family, a.daddr))


def _check_no_rematch(cells: list[_Cell]) -> None:
    """OpenBSD translates at a match rule at once and later rules see the new packet; netfilter
    translates once. They agree when no translated packet matches another translation rule."""
    index = _DestIndex(cells, _family)
    order = {id(c): i for i, c in enumerate(cells)}
    for a in cells:
        assert a.target is not None
        addr, port = a.target
        moved = _Cell(a.iif, None, a.family, a.saddr, addr, a.proto, PortRange(port, port) if port is not None else a.dport)
        # the moved destination is one address: a cell meets it only if its destination holds it
        hits = [b for b in index.holding(moved.family, moved.daddr) if b is not a and _cells_overlap(moved, b) and b.target != a.target]
        if hits:
            b = min(hits, key=lambda c: order[id(c)])  # the first in rule order, as a scan finds it
            raise RenderError(f"a packet translated to {addr} would match the translation to {b.target[0]} too "  # type: ignore[index]
                              "(openbsd applies match rules one after the other): not written")


class _DestIndex:
    """Cells by a head (fields compared for equality, `head(cell)`) and destination network
    (None: any): the cells whose destination holds a given network, in one lookup per
    destination prefix length present, rather than a scan of every cell (the translation
    checks and the covered-translated check were quadratic: 21.6M comparisons at 10,000
    openings). Candidates only: the caller decides."""

    def __init__(self, cells: Iterable[_Cell], head: Callable[[_Cell], object]) -> None:
        self._cells: dict[tuple, list[_Cell]] = {}
        self._lengths: dict[object, set[int]] = {}  # head -> destination prefix lengths present
        for c in cells:
            key = head(c)
            dest = None if c.daddr is None else (c.daddr.prefixlen, c.daddr.first)
            self._cells.setdefault((key, dest), []).append(c)
            if dest is not None:
                self._lengths.setdefault(key, set()).add(dest[0])

    def __bool__(self) -> bool:
        return bool(self._cells)

    def holding(self, key: object, net: IPNetwork | None) -> Iterator[_Cell]:
        yield from self._cells.get((key, None), ())
        if net is None:
            return
        bits = 32 if net.version == 4 else 128
        first, length = net.first, net.prefixlen
        for plen in sorted(self._lengths.get(key, ())):
            if plen <= length:
                yield from self._cells.get((key, (plen, first >> (bits - plen) << (bits - plen))), ())


def _cells_overlap(a: _Cell, b: _Cell) -> bool:
    """Can one packet match both cells? (None: any.) The cheap tests first: it runs for every
    pair of translation cells whose destinations nest (52k pairs at 10,000 openings)."""
    if a.family != b.family or not (a.iif is None or b.iif is None or a.iif == b.iif) \
            or not (a.proto is None or b.proto is None or a.proto == b.proto):
        return False
    pa, pb = a.dport, b.dport  # a cell's port is a checked PortRange (_cells) or None
    if pa is not None and pb is not None and (pa.high < pb.low or pb.high < pa.low):
        return False
    field = "ip.saddr" if a.family == 4 else "ip6.saddr"  # _meet tells the address fields by family only
    return all(x is None or y is None or _meet(field, x, y) is not None for x, y in ((a.saddr, b.saddr), (a.daddr, b.daddr)))


def _lower_forward(low: _Lowered, table: Table, chain: Chain) -> None:
    if chain.policy != "drop":
        raise RenderError(f"forward chain '{chain.name}' has policy {chain.policy}: the pf backend writes a default block (policy drop) only")
    leading = True
    replies_pass = False
    flats = _flatten(table, chain)
    for index, flat in enumerate(flats):
        if flat.verdict == "log":
            from fwmatrix.backends.pf.pflog import lower_log  # it builds on this module's cells

            lower_log(low, table, chain, flat, last=index == len(flats) - 1)
            continue
        if flat.verdict == "dnat":
            raise RenderError(f"chain '{chain.name}': DNAT in a filter chain")
        cells = _cells(flat, table)
        pure_state = bool(cells) and all(state is not None and cell == _Cell(None, None, cell.family, None, None, None, None, cell.note)
                                         for cell, state in cells)
        states = set(map(itemgetter(1), cells))
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
        for cell, state in cells if states - {None, "new"} else ():
            if state not in (None, "new"):
                # pf rules only ever see packets that fit no state: a rule about established
                # or related packets cannot be written (and accepting them is already done).
                raise RenderError(f"chain '{chain.name}': a rule on ct state {state} among other matches has no pf form")
        # 'new' is every packet pf's rules see: the match is implied
        low.filter_rules.append((flat.verdict, flat.comment, list(map(itemgetter(0), cells))))
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
        translated = [c for _, _, cells in rules[start:end] for c in cells if c.dnat]
        # only plain cells of a kind that can hold a translated one are looked at: few of the many
        # (172 of 74,646 at 10,000 openings), and indexing the rest read netaddr's properties for nothing
        kinds = {kind for a in translated for kind in _holding_kinds(a)}
        plain = _DestIndex((c for _, _, cells in rules[start:end] for c in cells if not c.dnat and _kind(c) in kinds), _kind)
        if plain:
            for i in range(start, end):
                verdict, note, cells = rules[i]
                if any(c.dnat for c in cells):
                    kept = [c for c in cells if not c.dnat or not any(_cell_within(c, p) for p in _covering_candidates(plain, c))]
                    rules[i] = (verdict, note, kept)
        start = end


def _family(cell: _Cell) -> int | None:
    return cell.family


def _kind(cell: _Cell) -> tuple:
    return (cell.family, cell.proto, cell.iif, cell.oif)


def _holding_kinds(a: _Cell) -> Iterator[tuple]:
    """The kinds (_kind) of the cells whose family, protocol and interfaces can hold a's (None: any)."""
    return product({a.family, None}, {a.proto, None}, {a.iif, None}, {a.oif, None})


def _covering_candidates(plain: _DestIndex, a: _Cell) -> Iterator[_Cell]:
    """The plain cells whose interfaces, family, protocol and destination can hold a's (None: any)."""
    for kind in _holding_kinds(a):
        yield from plain.holding(kind, a.daddr)


def _cell_within(a: _Cell, b: _Cell) -> bool:
    """Does plain cell b match every packet cell a matches? (same family and protocol)"""
    def inside(x: object, y: object, f: str) -> bool:
        return y is None or (x is not None and _meet(f, x, y) == x)  # type: ignore[arg-type]

    addr = "ip.saddr" if a.family == 4 else "ip6.saddr"
    return (inside(a.iif, b.iif, "iif") and inside(a.oif, b.oif, "oif") and inside(a.saddr, b.saddr, addr)
            and inside(a.daddr, b.daddr, addr) and inside(a.dport, b.dport, "dport"))
