"""Clauses: the exact set algebra the lowering works in.

A clause is a conjunction of per-field value sets (addresses as CIDRs, ports as ranges,
interfaces as names or prefix wildcards, protocols, conntrack states and status bits, the
address family). An IR match narrows a clause, set and map lookups expand it element by
element, an intersection that is empty drops it, and clauses that differ in one field only
merge into one (their union). Nothing here is approximate: what has no exact clause form
raises RenderError."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from collections import Counter
from functools import reduce
from itertools import chain, compress, cycle
from operator import or_

from netaddr import IPNetwork, IPRange, IPSet, cidr_merge

from fwmatrix.backends.iptables.names import CT_STATES, CT_STATUS
from fwmatrix.backends.iptables.safe import RenderError, _ifname
from fwmatrix.ir import merge_cidrs
from fwmatrix.matrix.model import PortRange

# IR field -> (clause field, address family the field implies)
IR_FIELDS: dict[str, tuple[str, int | None]] = {
    "iif": ("iif", None),
    "oif": ("oif", None),
    "l4proto": ("l4proto", None),
    "sport": ("sport", None),
    "dport": ("dport", None),
    "ip.saddr": ("saddr", 4),
    "ip.daddr": ("daddr", 4),
    "ip6.saddr": ("saddr", 6),
    "ip6.daddr": ("daddr", 6),
    "ct.state": ("ct.state", None),
    "ct.status": ("ct.status", None),
    "nfproto": ("family", None),
}
CLAUSE_FIELDS = ("family", "iif", "oif", "saddr", "daddr", "l4proto", "sport", "dport", "ct.state", "ct.status")
FIELD_ORDER = {name: i for i, name in enumerate(CLAUSE_FIELDS)}
MERGE_FIELDS = ("dport", "sport", "ct.state", "saddr", "daddr")  # iptables matches these against a set of values
ADDR_FIELDS = ("saddr", "daddr")
PORT_FIELDS = ("sport", "dport")
IF_FIELDS = ("iif", "oif")
EXCLUDABLE = ("iif", "oif", "l4proto", "ct.status")  # negations without a finite complement: `! -i X`



# -- interface names: literal `eth0` or prefix wildcard `eth*` ---------------------


def _if_covers(a: str, b: str) -> bool:
    """Every name `b` matches, `a` matches too."""
    if not a.endswith("*"):
        return a == b
    return b.removesuffix("*").startswith(a[:-1])


def _if_meet(a: str, b: str) -> str | None:
    """The names both match, as one pattern (prefixes are nested or disjoint)."""
    return b if _if_covers(a, b) else a if _if_covers(b, a) else None


# -- values -------------------------------------------------------------------


def _merge_ports(ranges: Iterable[PortRange]) -> frozenset[PortRange]:
    merged: list[PortRange] = []
    for r in sorted(ranges):
        if merged and r.low <= merged[-1].high + 1:
            merged[-1] = PortRange(merged[-1].low, max(merged[-1].high, r.high))
        else:
            merged.append(r)
    return frozenset(merged)


def _normalise(name: str, values: Iterable) -> frozenset:
    """The canonical form of a value set, so that equal sets compare equal."""
    if name in ADDR_FIELDS:
        if len(values) == 1:  # one network: its CIDR (cidr_merge's answer, without its cost)
            (net,) = values
            if isinstance(net, IPNetwork):
                return values if net.value == net.first and isinstance(values, frozenset) else frozenset((net.cidr,))
        return frozenset(cidr_merge(list(values)))
    if name in PORT_FIELDS:
        return _merge_ports(values)
    if name in IF_FIELDS:
        values = set(values)
        return frozenset(v for v in values if not any(o != v and _if_covers(o, v) for o in values))
    return frozenset(values)


def _intersect(name: str, a: frozenset, b: frozenset) -> frozenset:
    if name in ADDR_FIELDS:
        return frozenset((IPSet(a) & IPSet(b)).iter_cidrs())
    if name in PORT_FIELDS:
        return _merge_ports(PortRange(max(x.low, y.low), min(x.high, y.high)) for x in a for y in b if max(x.low, y.low) <= min(x.high, y.high))
    if name in IF_FIELDS:
        return _normalise(name, (m for x in a for y in b if (m := _if_meet(x, y)) is not None))
    return a & b


def _difference(name: str, a: frozenset, b: frozenset) -> frozenset:
    if name in ADDR_FIELDS:
        return frozenset((IPSet(a) - IPSet(b)).iter_cidrs())
    if name in IF_FIELDS:
        kept = set()
        for x in a:
            if any(_if_covers(e, x) for e in b):
                continue
            if any(_if_meet(e, x) is not None for e in b):
                raise RenderError(f"iptables cannot match interface {x!r} except {sorted(b)}")
            kept.add(x)
        return frozenset(kept)
    return a - b


def _complement(name: str, values: frozenset) -> frozenset:
    if name == "ct.state":
        return frozenset(CT_STATES) - values
    if name == "family":
        return frozenset({4, 6}) - values
    if name in PORT_FIELDS:
        out, low = [], 0
        for r in sorted(values):
            if r.low > low:
                out.append(PortRange(low, r.low - 1))
            low = max(low, r.high + 1)
        if low <= 65535:
            out.append(PortRange(low, 65535))
        return frozenset(out)
    raise RenderError(f"no complement for field {name!r}")  # addresses are complemented in _negate


def _values(ir_field: str, v: object) -> frozenset:
    """One IR value, checked, as the set of values a clause keeps (an address range: its CIDRs)."""
    name, family = IR_FIELDS[ir_field]
    if name in IF_FIELDS:
        return frozenset({_ifname(v)})
    if name == "l4proto":
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255:
            raise RenderError(f"refusing {v!r} as an IP protocol number")
        return frozenset({v})
    if name in PORT_FIELDS:
        if isinstance(v, int) and not isinstance(v, bool):
            v = PortRange(v, v)
        if not isinstance(v, PortRange) or not 0 <= v.low <= v.high <= 65535:
            raise RenderError(f"refusing {v!r} as a port or port range")
        return frozenset({v})
    if name == "ct.state" and v in CT_STATES or name == "ct.status" and v in CT_STATUS or name == "family" and v in (4, 6):
        return frozenset({v})
    if name in ADDR_FIELDS and isinstance(v, (IPNetwork, IPRange)) and v.version == family:
        if isinstance(v, IPNetwork):
            return frozenset((v,)) if v.value == v.first else frozenset((v.cidr,))  # the IR's networks are mostly CIDRs already
        return frozenset(v.cidrs())
    raise RenderError(f"refusing {v!r} as a value of {ir_field}")


# -- clauses ------------------------------------------------------------------


@dataclass(frozen=True)
class _Clause:
    """A conjunction: each listed field takes one of its allowed values; unlisted fields take any.

    `excluded` keeps negations iptables writes as `! -i X`: interfaces,
    protocols and ct status bits (no finite complement), and one address
    (which reads better than the CIDRs of its complement)."""

    allowed: tuple[tuple[str, frozenset], ...] = ()
    excluded: tuple[tuple[str, frozenset], ...] = ()

    def __hash__(self) -> int:
        # computed once: regrouping looks a clause up several times per field (a tuple's hash is not kept)
        found = self.__dict__.get("_hash")
        if found is None:
            found = hash((self.allowed, self.excluded))
            object.__setattr__(self, "_hash", found)
        return found

    def get(self, name: str) -> frozenset | None:
        for field_name, values in self.allowed:  # a handful of fields: cheaper than a dict
            if field_name == name:
                return values
        return None

    def with_(self, name: str, values: frozenset | None) -> _Clause:
        if values is None and all(n != name for n, _ in self.allowed):
            return self  # nothing to drop (most clauses have no sport, ct.state ...)
        allowed = tuple(item for item in self.allowed if item[0] != name)  # stays in field order
        if values is not None:
            at = FIELD_ORDER[name]
            i = next((i for i, item in enumerate(allowed) if FIELD_ORDER[item[0]] > at), len(allowed))
            allowed = allowed[:i] + ((name, values),) + allowed[i:]
        return _Clause(allowed, self.excluded)

    def constrain(self, name: str, values: frozenset) -> _Clause | None:
        """This clause and `name` in `values`; None when nothing can match both."""
        current = self.get(name)
        if current is not None and current == values and all(n != name for n, _ in self.excluded):
            return self  # a normalised set meets itself unchanged (the family, checked per field)
        allowed, excluded = dict(self.allowed), dict(self.excluded)
        if not _narrow(allowed, excluded, name, values):
            return None
        return _Clause(_sorted_fields(allowed), _sorted_fields(excluded))

    def exclude(self, name: str, values: frozenset) -> _Clause | None:
        if name in IF_FIELDS and "*" in values:
            return None  # not any interface at all
        current = self.get(name)
        if current is not None:
            return self.constrain(name, _difference(name, current, values))
        excluded = dict(self.excluded)
        excluded[name] = excluded.get(name, frozenset()) | values
        return _Clause(self.allowed, _sorted_fields(excluded))


def _narrow(allowed: dict[str, frozenset], excluded: dict[str, frozenset], name: str, values: frozenset) -> bool:
    """_Clause.constrain on a clause's fields as dictionaries, in place; False: nothing matches."""
    current = allowed.get(name)
    if current is not None and current == values and name not in excluded:
        return True
    values = _normalise(name, values) if current is None else _intersect(name, current, values)
    if name in excluded:  # a positive set absorbs a negation of the same field
        values = _difference(name, values, excluded.pop(name))
    if not values:
        return False
    allowed[name] = values
    return True


def _sorted_fields(d: dict[str, frozenset]) -> tuple[tuple[str, frozenset], ...]:
    return tuple(sorted(d.items(), key=lambda item: FIELD_ORDER[item[0]]))


def _value_key(v: object) -> tuple:
    if isinstance(v, IPNetwork):
        return (1, v.version, v.first, v.prefixlen)
    if isinstance(v, PortRange):
        return (2, v.low, v.high)
    if isinstance(v, int):
        return (3, v)
    return (0, str(v))


def _sorted_values(values: Iterable) -> list:
    return sorted(values, key=_value_key)


# -- IR fields on clauses ---------------------------------------------------------


def _constrain_one(clause: _Clause, ir_field: str, values: frozenset) -> _Clause | None:
    name, family = IR_FIELDS[ir_field]
    if family is not None:  # `ip saddr X` only matches IPv4 packets
        narrowed = clause.constrain("family", frozenset({family}))
        if narrowed is None:
            return None
        clause = narrowed
    return clause.constrain(name, values)


FAMILY_VALUES = {4: frozenset((4,)), 6: frozenset((6,))}
ValueCache = dict[tuple[str, int], tuple[object, frozenset]]  # (IR field, id(value)) -> (the value, _values of it)


def _constrain_key(clause: _Clause | None, fields: tuple[str, ...], key: tuple, where: str, cache: ValueCache | None = None) -> _Clause | None:
    """`clause` narrowed by one set or map key. `cache` keeps each IR value's checked value set
    across the keys of a lookup: the IR shares one object per distinct value, so 75k elements
    hold a few thousand values (checking and hashing netaddr networks was a third of the time)."""
    if len(key) != len(fields):
        raise RenderError(f"{where}: key {key!r} does not fit fields {fields}")
    if clause is None:
        return None
    # what _constrain_one does field by field, on dictionaries: one clause built, not one per field
    allowed, excluded = dict(clause.allowed), dict(clause.excluded)
    for f, v in zip(fields, key):
        name, family = IR_FIELDS[f]
        if family is not None and not _narrow(allowed, excluded, "family", FAMILY_VALUES[family]):
            return None
        if cache is None:
            if not _narrow(allowed, excluded, name, _values(f, v)):
                return None
            continue
        found = cache.get((f, id(v)))
        if found is None or found[0] is not v:  # the value is kept with it: its id stays its own
            found = cache[(f, id(v))] = (v, _normalise(name, _values(f, v)))
        if name not in allowed and name not in excluded:
            allowed[name] = found[1]  # what _narrow makes of a field not yet constrained
        elif not _narrow(allowed, excluded, name, found[1]):
            return None
    return _Clause(_sorted_fields(allowed), _sorted_fields(excluded))


def _negate(clause: _Clause, ir_field: str, raw: list) -> _Clause | None:
    name, family = IR_FIELDS[ir_field]
    values = _normalise(name, frozenset().union(*(_values(ir_field, v) for v in raw)))
    if family is not None:  # `ip saddr != X` still only matches IPv4 packets
        narrowed = clause.constrain("family", frozenset({family}))
        if narrowed is None:
            return None
        clause = narrowed
    if name in EXCLUDABLE:
        return clause.exclude(name, values)
    if name in ADDR_FIELDS:
        if len(values) == 1 and clause.get(name) is None and name not in dict(clause.excluded):
            return clause.exclude(name, values)
        universe = IPSet([IPNetwork("0.0.0.0/0" if family == 4 else "::/0")])
        return clause.constrain(name, frozenset((universe - IPSet(values)).iter_cidrs()))
    return clause.constrain(name, _complement(name, values))


# -- merging ------------------------------------------------------------------------

Networks = tuple[tuple[int, int, int], ...]  # an address field's value set as rows keep it


def _networks_row(values: frozenset[IPNetwork]) -> Networks:
    """CIDRs as rows keep them: (version, first address, prefix length), sorted, which is the
    order of their _value_key. Integers hash, compare and merge in C; netaddr's networks
    hash and compare in Python."""
    return tuple(sorted((net.version, net.first, net.prefixlen) for net in values))




SLOT_BITS = 32  # a row packs one number per slot: slot 0 the fields no pass merges, then these
SLOT_MASK = (1 << SLOT_BITS) - 1
MERGE_SHIFT = {name: SLOT_BITS * (i + 1) for i, name in enumerate(MERGE_FIELDS)}


class _Rows:
    """Clauses as rows, for regrouping: one integer packing, 32 bits a slot, the number of the
    fields no pass merges (with the exclusions), then each mergeable field's value set as the
    number of that set (0: not constrained; address sets as Networks). Equal clauses are equal rows; the rows equal but
    in one field are those equal once its slot is masked out, an `&`, not two tuple slices and
    a tuple hash per row and pass. One per lowering: set lookups make their elements' rows
    directly (see _Lowering._expand), without building a clause each."""

    def __init__(self) -> None:
        self.numbers: dict[object, int] = {}  # a value set (or the rest of a clause) -> its number
        self.values: list[object] = [None]  # number -> the value set, or the rest of a clause; 0 is "any"
        # (slot, numbers of value sets) -> the number of their union: the same few thousand unions
        # recur across groups and passes (19,897 merges, 5,992 distinct, at 10,000 openings)
        self.unions: dict[tuple[int, tuple[int, ...]], int] = {}

    def number(self, value: object) -> int:
        found = self.numbers.get(value)
        if found is None:
            found = self.numbers[value] = len(self.values)
            self.values.append(value)
        return found

    def number_values(self, name: str, values: frozenset) -> int:
        """The number of a mergeable field's value set, as rows keep it."""
        return self.number(_networks_row(values) if name in ADDR_FIELDS else values)

    def row(self, clause: _Clause | int) -> int:
        """A member's row: itself, or its clause's."""
        if type(clause) is int:
            return clause
        row = 0
        kept = []
        for item in clause.allowed:  # type: ignore[union-attr]
            shift = MERGE_SHIFT.get(item[0])
            if shift is None:
                kept.append(item)
            else:
                row |= self.number_values(*item) << shift
        return row | self.number((tuple(kept), clause.excluded))  # type: ignore[union-attr]

    def rest(self, row: int) -> tuple[tuple[tuple[str, frozenset], ...], tuple[tuple[str, frozenset], ...]]:
        """The fields no pass merges (in field order) and the exclusions of a row."""
        return self.values[row & SLOT_MASK]  # type: ignore[return-value]

    def clause(self, row: int) -> _Clause:
        kept, excluded = self.rest(row)
        allowed = list(kept) + [(name, self.values[n]) for name, shift in MERGE_SHIFT.items() if (n := (row >> shift) & SLOT_MASK)]
        allowed = [(name, frozenset(IPNetwork(net[1:], version=net[0]) for net in values) if name in ADDR_FIELDS else values)  # type: ignore[union-attr]
                   for name, values in allowed]
        return _Clause(tuple(sorted(allowed, key=lambda item: FIELD_ORDER[item[0]])), excluded)  # type: ignore[arg-type]


def _regroup(rows: list[int], comments: list[tuple[str, ...]], indexes: list[int], table: _Rows) -> list[tuple[int, tuple[str, ...], int]]:
    """Merge clauses that differ in one mergeable field into one (their union), until stable.
    The clauses come as rows of `table` (see _Rows), with the comments and the IR rule index
    of each, and the merged ones come back as rows of it, as (row, comments, lowest index).

    The merging works on rows, not on clauses: building a clause and hashing its nested tuples
    per clause and pass cost more than the merging itself (75k clauses, a dozen passes)."""
    number = table.number
    sets = table.values
    unions = table.unions
    # row -> lowest rule index, and row -> its comments: a tuple, or once merged a list of the
    # merged rows' comments one after the other, each kept once only at the end
    index_of: dict[int, int] = dict(zip(rows, indexes))
    comments_of: dict[int, tuple[str, ...] | list] = dict(zip(rows, comments))
    if len(index_of) != len(rows):  # equal clauses: one row, with the comments of each
        index_of, comments_of = {}, {}
        for row, row_comments, index in zip(rows, comments, indexes):
            if row in index_of:
                index_of[row] = min(index_of[row], index)
                comments_of[row] = [*comments_of[row], *row_comments]
            else:
                index_of[row] = index
                comments_of[row] = row_comments
    rows = list(index_of)
    # a field no clause constrains merges nothing (every clause is its own bucket), and merging
    # never adds a field; a pass that merges nothing changes nothing, and right after a pass on
    # a field no two rows differ in that field alone: once every field is so in a row (the
    # field merged last, then a pass on each other that merged nothing), the clauses are stable
    constrained = reduce(or_, rows, 0)
    fields = [name for name, shift in MERGE_SHIFT.items() if (constrained >> shift) & SLOT_MASK]
    unchanged = 0
    for name in cycle(fields):
        if unchanged == len(fields):
            break
        shift = MERGE_SHIFT[name]
        others = ~(SLOT_MASK << shift)
        address = name in ADDR_FIELDS
        # the row but this field, for each row, and how many rows share it: C loops
        rests = list(map(others.__and__, rows))
        counts = Counter(rests)  # in the order each rest first comes
        if len(counts) == len(rows):
            unchanged += 1  # every row alone: the rows stay as they are
            continue
        shared = list(map((1).__lt__, map(counts.__getitem__, rests)))
        groups: dict[int, list[int]] = {}
        for rest, row in zip(compress(rests, shared), compress(rows, shared)):
            group = groups.get(rest)
            if group is None:
                groups[rest] = [row]
            else:
                group.append(row)
        # a rest -> its row where it is alone, else the merged row: the rows in the order of
        # each rest's first row
        row_of = dict(zip(rests, rows))
        for rest, group in groups.items():
            # a group's value sets are normalised once, as their union: union by union
            # re-sorted the growing set each time (10,000 single ports took minutes)
            parts = tuple(map(SLOT_MASK.__and__, map(shift.__rrshift__, group)))
            merged = unions.get((shift, parts))
            if merged is None:
                if 0 in parts:
                    merged = 0
                elif address:
                    merged = number(merge_cidrs(chain.from_iterable(sets[n] for n in parts)))  # type: ignore[misc]
                else:
                    merged = number(_normalise(name, frozenset().union(*[sets[n] for n in parts])))  # type: ignore[arg-type]
                unions[(shift, parts)] = merged
            row = row_of[rest] = rest | merged << shift
            index_of[row] = min(map(index_of.__getitem__, group))
            comments_of[row] = list(chain.from_iterable(map(comments_of.__getitem__, group)))
        rows = list(map(row_of.__getitem__, counts))
        unchanged = 1  # this field: each rest has one row now
    return [(row, _flat_comments(comments_of[row]), index_of[row]) for row in rows]


def _flat_comments(comments: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A row's comments, each once, in order."""
    return comments if type(comments) is tuple and len(comments) < 2 else tuple(dict.fromkeys(comments))  # type: ignore[return-value]
