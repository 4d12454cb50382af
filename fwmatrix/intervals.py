"""The values of a packet space's dimensions (see fwmatrix/space/): interval sets of
integers (addresses, protocols, ports), addresses on one integer line for both
families, conntrack state bits, and the finite universe of interface names.

Interval sets are tuples of (low, high) pairs, sorted, disjoint and not
touching: the canonical form makes equal sets equal tuples.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from typing import Collection, Iterable, Mapping

from netaddr import IPAddress, IPNetwork, IPRange
from netaddr.strategy import ipv4 as _IPV4, ipv6 as _IPV6

V4_BASE = 1 << 128
V6_ALL = ((0, V4_BASE - 1),)
V4_ALL = ((V4_BASE, V4_BASE + (1 << 32) - 1),)
ADDR_ALL = ((0, V4_BASE + (1 << 32) - 1),)
NO_PORT = 65536
PORTS_ALL = ((0, 65535),)
# ICMP and ICMPv6 packets carry their type and code in the port dimension, past NO_PORT
# so that no value means both a port and a type: ICMP_BASE + type * 256 + code (a type
# with any code is one interval)
ICMP_BASE = NO_PORT + 1
ICMP_TYPES_ALL = ((ICMP_BASE, ICMP_BASE + 65535),)
PORT_DIM_ALL = ((0, ICMP_BASE + 65535),)
PORTLESS_ALL = ((NO_PORT, ICMP_BASE + 65535),)  # a packet without ports: NO_PORT, or any ICMP type and code
PROTO_ALL = ((0, 255),)
PORT_PROTOCOLS = ((6, 6), (17, 17), (33, 33), (132, 132), (136, 136))  # tcp, udp, dccp, sctp, udplite
ICMP_PROTOCOLS = ((1, 1), (58, 58))  # icmp, icmpv6 (either in either family: it is the protocol number)
CT_STATES = ("new", "established", "related", "invalid", "untracked")
CT_TRANSLATABLE = ("new", "established", "related")  # the states a DNAT connection can be in
CT_DNAT_SHIFT = len(CT_STATES)
CT_ALL = (1 << (len(CT_STATES) + len(CT_TRANSLATABLE))) - 1
CT_DNAT = CT_ALL & ~((1 << CT_DNAT_SHIFT) - 1)  # every translated state
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 33: "dccp", 136: "udplite", 47: "gre", 50: "esp", 51: "ah"}

Intervals = tuple[tuple[int, int], ...]

# ICMP and ICMPv6 types by number, named as nft lists them (the audit's text says `icmp echo-request`)
ICMP_NAMES = {
    0: "echo-reply", 3: "destination-unreachable", 4: "source-quench", 5: "redirect", 8: "echo-request",
    9: "router-advertisement", 10: "router-solicitation", 11: "time-exceeded", 12: "parameter-problem",
    13: "timestamp-request", 14: "timestamp-reply", 15: "info-request", 16: "info-reply",
    17: "address-mask-request", 18: "address-mask-reply",
}
ICMPV6_NAMES = {
    1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded", 4: "parameter-problem",
    128: "echo-request", 129: "echo-reply", 130: "mld-listener-query", 131: "mld-listener-report",
    132: "mld-listener-done", 133: "nd-router-solicit", 134: "nd-router-advert",
    135: "nd-neighbor-solicit", 136: "nd-neighbor-advert", 137: "nd-redirect", 138: "router-renumbering",
    141: "ind-neighbor-solicit", 142: "ind-neighbor-advert", 143: "mld2-listener-report",
}


def icmp_values(icmp_type: int, code: int | None = None) -> Intervals:
    """The port dimension's values of an ICMP type, with one code or any."""
    low = ICMP_BASE + icmp_type * 256
    return ((low, low + 255),) if code is None else ((low + code, low + code),)


ECHO_REQUEST = {1: icmp_values(8, 0), 58: icmp_values(128, 0)}  # by protocol: a ping (code 0)


def icmp_text(proto: int | None, values: Intervals) -> str:
    """ICMP types and codes as people read them: 'echo-request', 'redirect code 1', 'types 20-40';
    'all but redirect' when that is shorter. Names only for one protocol (`proto` 1 or 58)."""
    names = ICMP_NAMES if proto == 1 else ICMPV6_NAMES if proto == 58 else {}
    left_out = iv_sub(ICMP_TYPES_ALL, values)
    if left_out and iv_size(left_out) < iv_size(values):
        return "all but " + icmp_text(proto, left_out)
    words = []
    for low, high in values:
        low, high = low - ICMP_BASE, high - ICMP_BASE
        while low <= high:
            icmp_type, code = divmod(low, 256)
            name = names.get(icmp_type, f"type {icmp_type}")
            if code == 0 and high - low >= 255:  # whole types: as many as the interval holds
                last = (high + 1) // 256 - 1
                words += [names.get(t, f"type {t}") for t in range(icmp_type, last + 1)] if last - icmp_type < 8 else [f"types {icmp_type}-{last}"]
                low = (last + 1) * 256
            else:
                end = min(high, icmp_type * 256 + 255)
                words.append(f"{name} code {code}" if end == low else f"{name} codes {code}-{end % 256}")
                low = end + 1
    return ",".join(words)


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
    if a is b:
        return a
    if len(b) == 1:  # one interval on a side (a host, a network, a port range; most sets): as `a`
        a, b = b, a
    elif len(a) != 1:
        return _and_many(a, b)
    if not b:
        return ()
    low, high = a[0]
    if len(b) == 1:  # no loop, no max/min
        b_low, b_high = b[0]
        if high < b_low or b_high < low:
            return ()
        if low <= b_low and b_high <= high:
            return b
        if b_low <= low and high <= b_high:
            return a
        return ((low if low > b_low else b_low, high if high < b_high else b_high),)
    return _clip(b, low, high)


def _clip(a: Intervals, low: int, high: int) -> Intervals:
    """a within [low, high]: the intervals that meet it (found by bisection), the two at its ends cut."""
    first = bisect_left(a, low, key=_HIGH)  # the first that ends at low or after
    end = bisect_right(a, high, lo=first, key=_LOW)  # past the last that starts at high or before
    if first >= end:
        return ()
    if first == 0 and end == len(a) and low <= a[0][0] and a[-1][1] <= high:
        return a
    out = list(a[first:end])
    if out[0][0] < low:
        out[0] = (low, out[0][1])
    if out[-1][1] > high:
        out[-1] = (out[-1][0], high)
    return tuple(out)


def _and_many(a: Intervals, b: Intervals) -> Intervals:
    """iv_and of two sets of several intervals each: both walked in step."""
    if a == b:
        return a
    if not a or not b or a[-1][1] < b[0][0] or b[-1][1] < a[0][0]:
        return ()
    out = []
    i = j = 0
    len_a, len_b = len(a), len(b)
    a_low, a_high = a[0]
    b_low, b_high = b[0]
    while True:
        low = a_low if a_low > b_low else b_low
        if a_high < b_high:
            if low <= a_high:
                out.append((low, a_high))
            i += 1
            if i == len_a:
                break
            a_low, a_high = a[i]
        else:
            if low <= b_high:
                out.append((low, b_high))
            j += 1
            if j == len_b:
                break
            b_low, b_high = b[j]
    return tuple(out)


_LOW, _HIGH = itemgetter(0), itemgetter(1)


def iv_or(a: Intervals, b: Intervals) -> Intervals:
    return iv_norm(a + b)


def iv_sub(a: Intervals, b: Intervals) -> Intervals:
    if not b or not a:
        return a
    if len(b) == 1:  # one interval taken out: what of `a` lies before it and after it, two ends cut
        b_low, b_high = b[0]
        if len(a) == 1:  # the common case, without the bisections
            low, high = a[0]
            if b_high < low or high < b_low:
                return a
            if b_low <= low:
                return () if high <= b_high else ((b_high + 1, high),)
            return ((low, b_low - 1),) if high <= b_high else ((low, b_low - 1), (b_high + 1, high))
        first = bisect_left(a, b_low, key=_HIGH)  # the first that ends at b_low or after
        end = bisect_right(a, b_high, lo=first, key=_LOW)  # past the last that starts at b_high or before
        if first >= end:
            return a
        kept = []
        if a[first][0] < b_low:
            kept.append((a[first][0], b_low - 1))
        if a[end - 1][1] > b_high:
            kept.append((b_high + 1, a[end - 1][1]))
        return a[:first] + tuple(kept) + a[end:]
    if len(a) == 1:  # holes in one interval: the gaps between the intervals of b that meet it
        low, high = a[0]
        first = bisect_left(b, low, key=_HIGH)
        end = bisect_right(b, high, lo=first, key=_LOW)
        if first >= end:
            return a
        out = []
        cur = low
        for b_low, b_high in b[first:end]:
            if b_low > cur:
                out.append((cur, b_low - 1))
            cur = b_high + 1
        if cur <= high:
            out.append((cur, high))
        return tuple(out)
    out = []
    j = 0
    len_b = len(b)
    for low, high in a:
        while j < len_b and b[j][1] < low:
            j += 1
        k = j
        cur = low
        while k < len_b and b[k][0] <= high:
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


def iv_widest(a: Intervals) -> int:
    """The span of the widest interval (high - low): a host is 0, a network its size less one."""
    return max(high - low for low, high in a)


# -- addresses ------------------------------------------------------------------


def addr_interval(net: IPNetwork | IPRange) -> tuple[int, int]:
    """The network's (or range's) addresses on the line. Called for every address of every rule
    and set element (a few hundred thousand an audit): a plain IPNetwork's are read from the
    value and prefix length it holds, not through the properties `version`, `first` and `last`
    (0.4 against 0.8 us); tests/test_matches.py checks that both ways agree."""
    if net.__class__ is IPNetwork:
        module = net._module
        if module is _IPV4:
            host = _V4_HOSTS[net._prefixlen]
            first = V4_BASE + (net._value & ~host)
        elif module is _IPV6:
            host = _V6_HOSTS[net._prefixlen]
            first = net._value & ~host
        else:
            return _addr_interval(net)
        return (first, first + host)
    return _addr_interval(net)


def _addr_interval(net: IPNetwork | IPRange) -> tuple[int, int]:
    base = V4_BASE if net.version == 4 else 0
    return (base + net.first, base + net.last)


_V4_HOSTS = tuple((1 << (32 - length)) - 1 for length in range(33))  # by prefix length: the host part's bits
_V6_HOSTS = tuple((1 << (128 - length)) - 1 for length in range(129))


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
        version, base, width = (4, V4_BASE, 32) if low >= V4_BASE else (6, 0, 128)
        blocks = _cidr_blocks(low - base, high - base, MAX_CIDRS + 1)
        if len(blocks) > MAX_CIDRS:
            out.append(f"{IPAddress(low - base, version)}-{IPAddress(high - base, version)}")
        else:
            out += [str(IPAddress(start, version)) if host_bits == 0 else f"{IPAddress(start, version)}/{width - host_bits}"
                    for start, host_bits in blocks]
    return out


MAX_CIDRS = 4  # an interval of more CIDR blocks than this is shown as a range, first-last


def _cidr_blocks(low: int, high: int, limit: int) -> list[tuple[int, int]]:
    """The fewest CIDR blocks that make up [low, high], in order, as (start, host bits); at most
    `limit` of them (the rest are not worked out). Integers only: a region of what is left of
    the internet after thousands of banned hosts has thousands of intervals, and netaddr's
    iprange_to_cidrs made every block of each as an object (tests/test_space.py checks the two agree)."""
    blocks: list[tuple[int, int]] = []
    while low <= high and len(blocks) < limit:
        # the largest block that starts at low (as many host bits as low ends in zero bits) and fits
        host_bits = min((low & -low).bit_length() - 1 if low else 128, (high - low + 1).bit_length() - 1)
        blocks.append((low, host_bits))
        low += 1 << host_bits
    return blocks


# -- interfaces -----------------------------------------------------------------

OTHER = "*other*"
MAC_RE = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5}\Z")  # as iptables takes it: 0:1:2:3:4:5 is 00:01:02:03:04:05


def mac_address(text: str) -> str | None:
    """A MAC address as fwmatrix keeps it (lower case, two digits an octet), or None when the
    text is not one."""
    if not MAC_RE.match(text):
        return None
    return ":".join(f"{int(octet, 16):02x}" for octet in text.split(":"))


@dataclass(frozen=True)
class Interfaces:
    """The finite universe of interface names a space is judged over.

    A ruleset that matches the link-layer source (`-m mac --mac-source`, nft `ether saddr`)
    names MAC addresses (`macs`): then each interface but lo is several atoms, the packets
    it receives from each MAC it tells apart, from any other MAC, and without a MAC (a link
    that is not Ethernet: WireGuard, PPP, tun; the kernel's MAC matches never hold there,
    negated or not). lo is one atom, without a MAC (it is not Ethernet to those matches).
    An interface tells apart the MACs that rules reached by its packets test (`scoped`,
    from `interfaces_of`; None: every MAC on every interface): on the others a MAC is one
    of "any other". A name is all its atoms; without MACs an interface is one bit, as it
    always was."""

    names: tuple[str, ...]  # known names, then "lo", then OTHER
    macs: tuple[str, ...] = ()  # the MAC sources a ruleset names (mac_address form), sorted
    scoped: tuple[tuple[str, ...], ...] | None = None  # by name: the MACs it tells apart (None: all of `macs`)
    unsplit: int = 0  # MAC sources the ruleset names that this universe declined to tell apart (interfaces_of)

    @classmethod
    def of(cls, known: Iterable[str], macs: Iterable[str] = (), scopes: Mapping[str, Collection[str] | None] | None = None) -> "Interfaces":
        """`scopes`: where each MAC is tested, the names of the interfaces whose packets may
        meet such a rule (None, or a MAC not in it: anywhere)."""
        names = tuple(sorted(set(known) - {"lo", OTHER})) + ("lo", OTHER)
        every = tuple(sorted(set(macs) | set(scopes or ())))
        if scopes is None or all(scopes[m] is None for m in scopes):
            return cls(names, every)
        told = tuple(() if name == "lo" else tuple(m for m in every if scopes.get(m) is None or name in scopes[m]) for name in names)  # type: ignore[operator]
        return cls(names, every, told)

    def told(self, index: int) -> tuple[str, ...]:
        """The MACs the interface `names[index]` tells apart."""
        if self.names[index] == "lo":
            return ()
        return self.macs if self.scoped is None else self.scoped[index]

    @cached_property
    def _offsets(self) -> tuple[int, ...]:
        """Where each name's atoms start, and (last) how many atoms there are: its MACs, any
        other MAC, no MAC (lo: one, without a MAC); one without MACs."""
        offsets = [0]
        for i, name in enumerate(self.names):
            offsets.append(offsets[-1] + (len(self.told(i)) + 2 if self.macs and name != "lo" else 1))
        return tuple(offsets)

    @cached_property
    def all(self) -> int:
        return (1 << self._offsets[-1]) - 1

    def _whole(self, index: int) -> int:
        low, high = self._offsets[index], self._offsets[index + 1]
        return ((1 << (high - low)) - 1) << low

    def _atom(self, index: int, atom: int) -> int:
        """One atom of `names[index]`: the position of a MAC it tells apart, or `len(told)` for
        any other MAC, `len(told) + 1` for none."""
        return 1 << (self._offsets[index] + atom)

    def mask(self, name: str) -> int:
        """The bits a name (or a wildcard `eth*`) stands for."""
        if name.endswith("*"):
            prefix = name[:-1]
            bits = 0
            for i, known in enumerate(self.names[:-1]):
                if known.startswith(prefix):
                    bits |= self._whole(i)
            return bits | self._whole(len(self.names) - 1)  # some other name may match the wildcard too
        try:
            return self._whole(self.names.index(name))
        except ValueError:
            return self._whole(len(self.names) - 1)

    @cached_property
    def ethernet(self) -> int:
        """The packets that come with a MAC source: what a MAC match may hold for, negated or not."""
        if not self.macs:
            return self.all
        bits = 0
        for i, name in enumerate(self.names):
            if name != "lo":
                bits |= self._whole(i) & ~self._atom(i, len(self.told(i)) + 1)
        return bits

    def mac(self, address: str) -> int | None:
        """The packets from this MAC (mac_address form) on the interfaces that tell it apart;
        None when it is not one of `macs` (then this universe cannot tell it)."""
        if address not in self.macs:
            return None
        bits = 0
        for i in range(len(self.names)):
            told = self.told(i)
            if address in told:
                bits |= self._atom(i, told.index(address))
        return bits

    def sender(self, name: str, mac: str | None) -> int:
        """The packets `name` receives from a sender with MAC `mac` (any MAC, in mac_address
        form, which the ruleset may not name), or without one (None: a link that is not Ethernet)."""
        whole = self.mask(name)
        if not self.macs or name == "lo":
            return whole
        index = self.names.index(name) if name in self.names else len(self.names) - 1
        told = self.told(index)
        return self._atom(index, len(told) + 1 if mac is None else told.index(mac) if mac in told else len(told))

    def interfaces(self, bits: int) -> list[str]:
        """The names of which the bits hold some packets."""
        return [name for i, name in enumerate(self.names) if bits & self._whole(i)]

    def text(self, bits: int) -> list[str]:
        if bits == self.all:
            return ["any"]
        if not self.macs:
            return [name for i, name in enumerate(self.names) if bits >> i & 1]
        sources = self.mac_sources(bits)
        kinds = set(map(_source_key, sources.values()))
        if len(sources) == len(self.names) - 1 and len(kinds) == 1:  # the same on every interface (`--mac-source X` alone)
            one = next(iter(sources.values()))
            if bool(bits & self.mask("lo")) == one["no_mac"]:  # lo is an interface without a MAC
                return ["any " + _source_text(one)]
        return [f"{name} {_source_text(sources[name])}" if name in sources else name for name in self.interfaces(bits)]

    def mac_sources(self, bits: int) -> dict[str, dict[str, object]]:
        """Of each interface of which the bits hold some packets but not all: the MACs they
        come from, `macs`, or, with `except`, every MAC but those; and whether those without
        a MAC (not Ethernet) are among them, `no_mac`. Empty without MAC atoms."""
        if not self.macs:
            return {}
        out: dict[str, dict[str, object]] = {}
        for i, name in enumerate(self.names):
            whole = self._whole(i)
            if name == "lo" or not bits & whole or bits & whole == whole:
                continue
            atoms = (bits & whole) >> self._offsets[i]
            told = self.told(i)
            other = bool(atoms >> len(told) & 1)
            named = [mac for j, mac in enumerate(told) if (atoms >> j & 1) != other]
            out[name] = {"macs": named, "except": other, "no_mac": bool(atoms >> (len(told) + 1) & 1)}
        return out


def _source_key(source: dict[str, object]) -> tuple:
    return (tuple(source["macs"]), source["except"], source["no_mac"])  # type: ignore[arg-type]


def _source_text(source: dict[str, object]) -> str:
    """'from 00:11:22:33:44:55', 'not from ...' (any other MAC, or none), 'from any MAC but ...',
    'from ... or without a MAC' (not Ethernet), 'without a MAC'."""
    macs = ",".join(source["macs"])  # type: ignore[arg-type]
    if source["except"]:
        if source["no_mac"]:
            return f"not from {macs}"
        return f"from any MAC but {macs}" if macs else "from any MAC"
    if not macs:
        return "without a MAC"
    return f"from {macs} or without a MAC" if source["no_mac"] else f"from {macs}"
