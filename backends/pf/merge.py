"""The lowering's third step: cells merged into products (sources x destinations x protocols x
ports) that pf can write as rules, covering exactly the cells' union (see lower.py's first lines)."""

from __future__ import annotations

from operator import is_
from typing import Iterable

from netaddr import IPNetwork

from fwmatrix.backends.pf.lower import _Cell
from fwmatrix.ir import merge_cidrs
from fwmatrix.matrix.model import PortRange

# sources, destinations, protocols, ports: each a set of plain keys (see _plain_key; None: any)
Dims = tuple[frozenset, frozenset, frozenset, frozenset]


_SHIFT = 32  # a product's key: its four dimensions' set numbers, 32 bits each (dimension d at bits 32d)
_FIELD = (1 << _SHIFT) - 1


class _Merger:
    """Cells -> products (sources x destinations x protocols x ports) covering exactly their union.

    Greedy: merge ports, then protocols, then sources, then destinations, each time among
    products equal in the other three dimensions, so a union is never widened.

    The merging works on numbers: each distinct set of plain keys (a network as (version, first,
    prefix length), a port range as (low, high)) gets one, and a product is the one integer that
    packs its four sets' numbers, so the products equal in the other three dimensions are those
    equal with one dimension's bits cleared (hashing tuples of sets of netaddr objects was most
    of its time). The products are sets of plain keys too: the writer writes them as text (one
    text per set), with no netaddr objects made again. One merger serves every call of a render:
    the in and the out rules merge the same cells, and products share their sets."""

    def __init__(self) -> None:
        self.sets: list[frozenset] = []  # number -> its set of plain keys
        self.numbers: dict[frozenset, int] = {}
        self.singles: dict[int, int] = {}  # id(a cell's value) -> the number of the set of it alone
        self.keep: list[object] = []  # ids stay valid while their values live
        self.order: dict[int, tuple] = {}  # number -> how its set sorts
        self.unions: dict[frozenset[int], int] = {}  # the numbers of sets merged -> the number of their union
        # the lists of cells merged, with their products, by length and first and last cell: an input
        # interface whose cells all leave by one interface makes one group in the in and the out rules
        # (23,504 of the 150,922 cells merged at 10,000 openings), and the same cells in one order merge
        # alike (a tuple of every cell's id as the key cost 7 MB of peak RSS at 10,000 openings)
        self.done: dict[tuple[int, int, int], list[tuple[list[_Cell], list[tuple[Dims, list[str]]]]]] = {}

    def number(self, keys: frozenset) -> int:
        found = self.numbers.get(keys)
        if found is None:
            found = self.numbers[keys] = len(self.sets)
            self.sets.append(keys)
        return found

    def single(self, value: object) -> int:
        self.keep.append(value)
        found = self.singles[id(value)] = self.number(frozenset([_plain_key(value)]))
        return found

    def union(self, dim: int, members: frozenset[int]) -> int:
        """The number of the union of the sets numbered `members`, made canonical (_normalise_keys):
        made once for each distinct members (5,960 of the 37,461 unions merged at 10,000 openings).
        A set's number tells its kind (networks, protocols, port ranges), so the numbers alone are the key."""
        found = self.unions.get(members)
        if found is None:
            found = self.unions[members] = self.number(_normalise_keys(dim, set().union(*map(self.sets.__getitem__, members))))
        return found

    def sort_key(self, n: int) -> tuple:
        found = self.order.get(n)
        if found is None:
            found = self.order[n] = tuple(sorted(map(_plain_sort_key, self.sets[n])))
        return found

    def __call__(self, cells: Iterable[_Cell]) -> list[tuple[Dims, list[str]]]:
        cells = list(cells)
        sign = (len(cells), id(cells[0]), id(cells[-1])) if cells else (0, 0, 0)
        for kept, products in self.done.get(sign, ()):
            if all(map(is_, kept, cells)):  # kept alive with the products: its cells' ids stay theirs
                break
        else:
            products = self._merge(cells)
            self.done.setdefault(sign, []).append((cells, products))
        return [(dims, list(notes)) for dims, notes in products]  # the caller's own lists of notes

    def _merge(self, cells: list[_Cell]) -> list[tuple[Dims, list[str]]]:
        get, single, sets = self.singles.get, self.single, self.sets
        rects: dict[int, dict[str, None]] = {}
        for c in cells:
            s, d, p, q = get(id(c.saddr)), get(id(c.daddr)), get(id(c.proto)), get(id(c.dport))
            if s is None:
                s = single(c.saddr)
            if d is None:
                d = single(c.daddr)
            if p is None:
                p = single(c.proto)
            if q is None:
                q = single(c.dport)
            key = s | d << 32 | p << 64 | q << 96
            notes = rects.get(key)
            if notes is None:
                rects[key] = {c.note: None} if c.note else {}
            elif c.note:
                notes[c.note] = None
        for dim in (3, 2, 0, 1):
            # rest -> the first product's key while it is alone, then [the union of values, notes];
            # a product's notes are its own (made above or in the last pass): merging adds to them in place
            shift = dim * _SHIFT
            clear = ~(_FIELD << shift)
            merged: dict[int, int | list] = {}
            for key in rects:
                rest = key & clear
                entry = merged.get(rest)
                if entry is None:
                    merged[rest] = key
                    continue
                if type(entry) is int:
                    entry = merged[rest] = [[entry >> shift & _FIELD], rects[entry]]
                entry[0].append(key >> shift & _FIELD)  # type: ignore[union-attr]
                entry[1].update(rects[key])  # type: ignore[index]
            # each rest makes one product (no two of them meet); alone, a product keeps its key
            grown: dict[int, dict[str, None]] = {}
            for rest, entry in merged.items():
                if type(entry) is int:
                    grown[entry] = rects[entry]
                else:
                    grown[rest | self.union(dim, frozenset(entry[0])) << shift] = entry[1]  # type: ignore[index, arg-type]
            rects = grown
        sort_key = self.sort_key
        out = sorted(rects.items(), key=lambda item: (sort_key(item[0] & _FIELD), sort_key(item[0] >> 32 & _FIELD),
                                                      sort_key(item[0] >> 64 & _FIELD), sort_key(item[0] >> 96)))
        return [((sets[key & _FIELD], sets[key >> 32 & _FIELD], sets[key >> 64 & _FIELD], sets[key >> 96]), list(notes))
                for key, notes in out]


def _plain_key(v: object) -> object:
    """A cell's value as a plain key: a network (version, first, prefix length), a port range (low, high)."""
    if isinstance(v, IPNetwork):
        return (v.version, v.first, v.prefixlen)
    if isinstance(v, PortRange):
        return (v.low, v.high)
    return v  # None (any), a protocol number


def _plain_sort_key(k: object) -> tuple:
    """How a plain key sorts: any, networks (by version, first address, prefix length), protocols, port ranges."""
    if k is None:
        return (0,)
    if type(k) is int:
        return (2, k)
    if len(k) == 3:  # type: ignore[arg-type]
        return (1,) + k  # type: ignore[operator]
    return (3,) + k  # type: ignore[operator]


def _normalise_keys(dim: int, keys: set) -> frozenset:
    """A union of plain keys as one canonical set: networks as the fewest CIDRs that cover
    them (what netaddr's cidr_merge gives), port ranges merged where they touch."""
    if None in keys:
        return frozenset([None])  # 'any' absorbs the rest
    if dim in (0, 1):
        if len(keys) == 1:  # one CIDR: merging would give it back
            return frozenset(keys)
        return frozenset(merge_cidrs(keys))
    if dim == 3:
        merged: list[tuple[int, int]] = []
        for low, high in sorted(keys):
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        return frozenset(merged)
    return frozenset(keys)
