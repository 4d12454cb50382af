"""Boxes: one value set per dimension of a packet (their product), kept physical (see fwmatrix.space)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from fwmatrix.intervals import (
    ICMP_PROTOCOLS, ICMP_TYPES_ALL, NO_PORT, PORT_PROTOCOLS, PORTS_ALL, V4_ALL, V6_ALL, Intervals, iv_and, iv_or, iv_size, iv_sub,
)

NOT_PORTLESS = iv_or(PORT_PROTOCOLS, ICMP_PROTOCOLS)
(_V4_LOW, _V4_HIGH), (_V6_LOW, _V6_HIGH) = V4_ALL[0], V6_ALL[0]
_MET: dict[tuple[Intervals, Intervals], Intervals] = {}  # protocol and port sets met (a ruleset has few)
MAX_MET = 1 << 16  # more, and it starts again (a ruleset of many port lists)


@dataclass(frozen=True, init=False)
class Box:
    iif: int
    oif: int
    src: Intervals
    dst: Intervals
    proto: Intervals
    dport: Intervals
    ct: int

    def __init__(self, iif: int, oif: int, src: Intervals, dst: Intervals, proto: Intervals, dport: Intervals, ct: int):
        # the audit makes boxes by the hundred thousand: one dict update, not the seven
        # object.__setattr__ calls of a frozen dataclass's own __init__ (still frozen after)
        self.__dict__.update(iif=iif, oif=oif, src=src, dst=dst, proto=proto, dport=dport, ct=ct)

    def intersect(self, other: "Box") -> "Box | None":
        """The common box, or None. Called for every pair of boxes that meet in the walk (a chain's
        scope with a set's thousands of elements): protocols and ports are few distinct sets, so
        their intersections are remembered; an address side that one single interval holds is taken
        whole, and the outer bounds are compared first, before anything is hashed or made."""
        iif = self.iif & other.iif
        oif = self.oif & other.oif
        ct = self.ct & other.ct
        if not (iif and oif and ct):
            return None
        x, y = self.src, other.src
        x_low, x_high, y_low, y_high = x[0][0], x[-1][1], y[0][0], y[-1][1]
        if x_low > y_high or y_low > x_high:
            return None  # by the bounds before the remembered sets are hashed (boxes of another family, most)
        u, v = self.dst, other.dst
        u_low, u_high, v_low, v_high = u[0][0], u[-1][1], v[0][0], v[-1][1]
        if u_low > v_high or v_low > u_high:
            return None
        key = (self.proto, other.proto)
        proto = _MET.get(key)
        if proto is None:
            if len(_MET) >= MAX_MET:
                _MET.clear()
            proto = _MET[key] = iv_and(*key)
        if not proto:
            return None
        key = (self.dport, other.dport)
        dport = _MET.get(key)
        if dport is None:
            if len(_MET) >= MAX_MET:
                _MET.clear()
            dport = _MET[key] = iv_and(*key)
        if not dport:
            return None
        src = y if x_low <= y_low and y_high <= x_high and len(x) == 1 else x if y_low <= x_low and x_high <= y_high and len(y) == 1 else iv_and(x, y)
        if not src:
            return None
        dst = v if u_low <= v_low and v_high <= u_high and len(u) == 1 else u if v_low <= u_low and u_high <= v_high and len(v) == 1 else iv_and(u, v)
        if not dst:
            return None
        return Box(iif, oif, src, dst, proto, dport, ct)

    def minus(self, other: "Box") -> list["Box"]:
        """self - other as disjoint boxes (at most one per dimension): peeled one dimension at a
        time, in the order iif, oif, ct, src, dst, proto, dport, each piece the part outside `other`
        in its dimension, within `other` in the dimensions peeled before it, as self in the rest."""
        iif, oif, ct = self.iif & other.iif, self.oif & other.oif, self.ct & other.ct
        if not (iif and oif and ct):
            return [self]
        # the common part's values, without a Box for it, nor one per dimension peeled
        proto = iv_and(self.proto, other.proto)
        if not proto:
            return [self]
        dport = iv_and(self.dport, other.dport)
        if not dport:
            return [self]
        src = iv_and(self.src, other.src)
        if not src:
            return [self]
        dst = iv_and(self.dst, other.dst)
        if not dst:
            return [self]
        out = self.outside_masks(other, iif, oif, ct)
        s_src, s_dst, s_proto, s_dport = self.src, self.dst, self.proto, self.dport
        rest_iv = iv_sub(s_src, other.src)
        if rest_iv:
            out.append(Box(iif, oif, rest_iv, s_dst, s_proto, s_dport, ct))
        rest_iv = iv_sub(s_dst, other.dst)
        if rest_iv:
            out.append(Box(iif, oif, src, rest_iv, s_proto, s_dport, ct))
        rest_iv = iv_sub(s_proto, other.proto)
        if rest_iv:
            out.append(Box(iif, oif, src, dst, rest_iv, s_dport, ct))
        rest_iv = iv_sub(s_dport, other.dport)
        if rest_iv:
            out.append(Box(iif, oif, src, dst, proto, rest_iv, ct))
        return out

    def outside_masks(self, other: "Box", iif: int, oif: int, ct: int) -> list["Box"]:
        """`minus`'s pieces outside other's interfaces and states (iif, oif, ct: the common masks),
        each whole in the intervals: all of self - other when other's intervals hold self's."""
        out: list[Box] = []
        src, dst, proto, dport = self.src, self.dst, self.proto, self.dport
        rest = self.iif & ~other.iif
        if rest:
            out.append(Box(rest, self.oif, src, dst, proto, dport, self.ct))
        rest = self.oif & ~other.oif
        if rest:
            out.append(Box(iif, rest, src, dst, proto, dport, self.ct))
        rest = self.ct & ~other.ct
        if rest:
            out.append(Box(iif, oif, src, dst, proto, dport, rest))
        return out

    def contains(self, other: "Box") -> bool:
        return (
            other.iif & ~self.iif == 0
            and other.oif & ~self.oif == 0
            and other.ct & ~self.ct == 0
            and not iv_sub(other.src, self.src)
            and not iv_sub(other.dst, self.dst)
            and not iv_sub(other.proto, self.proto)
            and not iv_sub(other.dport, self.dport)
        )


def physical(iif: int, oif: int, src: Intervals, dst: Intervals, proto: Intervals, dport: Intervals, ct: int) -> list[Box]:
    """The boxes of packets that can exist within these bounds (see the module doc)."""
    if not (iif and oif and ct):
        return []
    services = _services(proto, dport)
    if not services:
        return []
    # both sides within one family (a rule's addresses, most): its boxes without splitting them
    if src and dst and _V4_LOW <= src[0][0] and src[-1][1] <= _V4_HIGH and _V4_LOW <= dst[0][0] and dst[-1][1] <= _V4_HIGH \
            or src and dst and _V6_LOW <= src[0][0] and src[-1][1] <= _V6_HIGH and _V6_LOW <= dst[0][0] and dst[-1][1] <= _V6_HIGH:
        return [Box(iif, oif, src, dst, with_proto, values, ct) for with_proto, values in services]
    out = []
    for family in (V4_ALL, V6_ALL):
        fsrc, fdst = iv_and(src, family), iv_and(dst, family)
        if not fsrc or not fdst:
            continue
        for with_proto, values in services:
            out.append(Box(iif, oif, fsrc, fdst, with_proto, values, ct))
    return out


@lru_cache(maxsize=1 << 12)  # a ruleset has few distinct protocol and port sets; its set elements repeat them
def _services(proto: Intervals, dport: Intervals) -> tuple[tuple[Intervals, Intervals], ...]:
    """The protocols and port values of physical boxes within these bounds, in `physical`'s
    order: port protocols and real ports, ICMP protocols and types, other protocols without a port."""
    out = []
    with_ports = iv_and(proto, PORT_PROTOCOLS)
    ports = iv_and(dport, PORTS_ALL)
    if with_ports and ports:
        out.append((with_ports, ports))
    with_types = iv_and(proto, ICMP_PROTOCOLS)
    types = iv_and(dport, ICMP_TYPES_ALL)
    if with_types and types:
        out.append((with_types, types))
    portless = iv_sub(proto, NOT_PORTLESS)
    if portless and iv_and(dport, ((NO_PORT, NO_PORT),)):
        out.append((portless, ((NO_PORT, NO_PORT),)))
    return tuple(out)


def box_size(box: Box) -> int:
    """How many packets the box holds, counting each dimension's values."""
    return (bin(box.iif).count("1") * bin(box.oif).count("1") * bin(box.ct).count("1")
            * iv_size(box.src) * iv_size(box.dst) * iv_size(box.proto) * iv_size(box.dport))
