"""The values of a packet space's dimensions (see fwmatrix/space.py): interval sets of
integers (addresses, protocols, ports), addresses on one integer line for both
families, conntrack state bits, and the finite universe of interface names.

Interval sets are tuples of (low, high) pairs, sorted, disjoint and not
touching: the canonical form makes equal sets equal tuples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from netaddr import IPAddress, IPNetwork, IPRange, iprange_to_cidrs

V4_BASE = 1 << 128
V6_ALL = ((0, V4_BASE - 1),)
V4_ALL = ((V4_BASE, V4_BASE + (1 << 32) - 1),)
ADDR_ALL = ((0, V4_BASE + (1 << 32) - 1),)
NO_PORT = 65536
PORTS_ALL = ((0, 65535),)
PORT_DIM_ALL = ((0, NO_PORT),)
PROTO_ALL = ((0, 255),)
PORT_PROTOCOLS = ((6, 6), (17, 17), (33, 33), (132, 132), (136, 136))  # tcp, udp, dccp, sctp, udplite
CT_STATES = ("new", "established", "related", "invalid", "untracked")
CT_TRANSLATABLE = ("new", "established", "related")  # the states a DNAT connection can be in
CT_DNAT_SHIFT = len(CT_STATES)
CT_ALL = (1 << (len(CT_STATES) + len(CT_TRANSLATABLE))) - 1
CT_DNAT = CT_ALL & ~((1 << CT_DNAT_SHIFT) - 1)  # every translated state
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 33: "dccp", 136: "udplite", 47: "gre", 50: "esp", 51: "ah"}

Intervals = tuple[tuple[int, int], ...]


def ct_bits(state: str, translated: bool | None = None) -> int:
    """The bits of a conntrack state: untranslated (False), translated by DNAT (True), or either (None)."""
    if state not in CT_STATES:
        return 0
    plain = 1 << CT_STATES.index(state)
    dnat = 1 << (CT_DNAT_SHIFT + CT_TRANSLATABLE.index(state)) if state in CT_TRANSLATABLE else 0
    return plain if translated is False else dnat if translated else plain | dnat


def ct_translated(bits: int) -> int:
    """The same untranslated states as translated ones (the states DNAT cannot have dropped)."""
    return sum(ct_bits(state, translated=True) for state in CT_TRANSLATABLE if bits & ct_bits(state, translated=False))


def ct_text(bits: int) -> str:
    """'new', 'new dnat' (translated by a port forward), comma-separated."""
    names = [s for i, s in enumerate(CT_STATES) if bits >> i & 1]
    names += [f"{s} dnat" for i, s in enumerate(CT_TRANSLATABLE) if bits >> (CT_DNAT_SHIFT + i) & 1]
    return ",".join(names)


# -- interval sets ----------------------------------------------------------------


def iv_norm(pairs: Iterable[tuple[int, int]]) -> Intervals:
    out: list[tuple[int, int]] = []
    for low, high in sorted(pairs):
        if low > high:
            continue
        if out and low <= out[-1][1] + 1:
            if high > out[-1][1]:
                out[-1] = (out[-1][0], high)
        else:
            out.append((low, high))
    return tuple(out)


def iv_and(a: Intervals, b: Intervals) -> Intervals:
    if a == b:
        return a
    if not a or not b or a[-1][1] < b[0][0] or b[-1][1] < a[0][0]:
        return ()
    if len(a) == 1 and len(b) == 1:
        low, high = max(a[0][0], b[0][0]), min(a[0][1], b[0][1])
        return ((low, high),)
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        low = max(a[i][0], b[j][0])
        high = min(a[i][1], b[j][1])
        if low <= high:
            out.append((low, high))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def iv_or(a: Intervals, b: Intervals) -> Intervals:
    return iv_norm(a + b)


def iv_sub(a: Intervals, b: Intervals) -> Intervals:
    if not b or not a:
        return a
    out = []
    j = 0
    for low, high in a:
        while j < len(b) and b[j][1] < low:
            j += 1
        k = j
        cur = low
        while k < len(b) and b[k][0] <= high:
            if b[k][0] > cur:
                out.append((cur, b[k][0] - 1))
            cur = max(cur, b[k][1] + 1)
            k += 1
        if cur <= high:
            out.append((cur, high))
    return tuple(out)


def iv_overlaps(a: Intervals, b: Intervals) -> bool:
    """`bool(iv_and(a, b))`, walking both lists to the first overlap without building the intersection
    (lint asks this of every pair of meeting boxes)."""
    if not a or not b or a[-1][1] < b[0][0] or b[-1][1] < a[0][0]:
        return False
    i = j = 0
    while i < len(a) and j < len(b):
        a_low, a_high = a[i]
        b_low, b_high = b[j]
        if a_low <= b_high and b_low <= a_high:
            return True
        if a_high < b_high:
            i += 1
        else:
            j += 1
    return False


def iv_size(a: Intervals) -> int:
    return sum(high - low + 1 for low, high in a)


# -- addresses ------------------------------------------------------------------


def addr_interval(net: IPNetwork | IPRange) -> tuple[int, int]:
    base = V4_BASE if net.version == 4 else 0
    return (base + net.first, base + net.last)


def addrs(nets: Iterable[IPNetwork | IPRange]) -> Intervals:
    return iv_norm(addr_interval(n) for n in nets)


def family_of(interval: tuple[int, int]) -> int:
    return 4 if interval[0] >= V4_BASE else 6


def addr_text(a: Intervals) -> list[str]:
    """Shortest CIDR rendering of an address set; `any`/`any IPv4`/`any IPv6` for whole families."""
    if a == ADDR_ALL:
        return ["any"]
    out: list[str] = []
    for low, high in a:
        if low < V4_BASE <= high:  # spans both families
            out += addr_text(((low, V4_BASE - 1),)) + addr_text(((V4_BASE, high),))
            continue
        if (low, high) == V4_ALL[0]:
            out.append("0.0.0.0/0")
            continue
        if (low, high) == V6_ALL[0]:
            out.append("::/0")
            continue
        version, base = (4, V4_BASE) if low >= V4_BASE else (6, 0)
        first, last = IPAddress(low - base, version), IPAddress(high - base, version)
        cidrs = iprange_to_cidrs(first, last)
        if len(cidrs) > 4:
            out.append(f"{first}-{last}")
        else:
            out += [str(c.ip) if c.size == 1 else str(c) for c in cidrs]
    return out


# -- interfaces -----------------------------------------------------------------

OTHER = "*other*"


@dataclass(frozen=True)
class Interfaces:
    """The finite universe of interface names a space is judged over."""

    names: tuple[str, ...]  # known names, then "lo", then OTHER

    @classmethod
    def of(cls, known: Iterable[str]) -> "Interfaces":
        names = sorted(set(known) - {"lo", OTHER})
        return cls(tuple(names) + ("lo", OTHER))

    @property
    def all(self) -> int:
        return (1 << len(self.names)) - 1

    def mask(self, name: str) -> int:
        """The bits a name (or a wildcard `eth*`) stands for."""
        if name.endswith("*"):
            prefix = name[:-1]
            bits = 0
            for i, known in enumerate(self.names[:-1]):
                if known.startswith(prefix):
                    bits |= 1 << i
            return bits | (1 << (len(self.names) - 1))  # some other name may match the wildcard too
        try:
            return 1 << self.names.index(name)
        except ValueError:
            return 1 << (len(self.names) - 1)

    def text(self, bits: int) -> list[str]:
        if bits == self.all:
            return ["any"]
        return [name for i, name in enumerate(self.names) if bits >> i & 1]
