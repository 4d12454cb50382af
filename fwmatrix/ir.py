"""The Ruleset IR: one backend-neutral form of a firewall ruleset.

Compiling builds it from an intent and each backend renders it; parsing a
live ruleset (the audit) produces it too. It speaks netfilter's concepts:
tables of base chains on hooks with priorities and policies, rules that
match header fields and connection state, verdicts, jumps, DNAT, and named
sets and maps (with concatenated keys), which other backends lower to what
they have (user chains and multiport, pf tables).

Values inside matches and set elements:
  iif, oif            -> str (an interface name; a trailing '*' is a prefix wildcard)
  ip.*, ip6.*         -> netaddr.IPNetwork or netaddr.IPRange
  l4proto             -> int (IANA protocol number)
  dport, sport        -> model.PortRange
  ct.state            -> str ('established', 'related', 'new', 'invalid', 'untracked')
  ct.status           -> str ('dnat', 'snat', ...)
  nfproto             -> int (4 or 6: the packet's address family, `meta nfproto`)
  icmp.type           -> int (the ICMP type of an IPv4 packet: 8 echo request)
  icmpv6.type         -> int (the ICMPv6 type: 135 neighbour solicitation, 136 advertisement)
  icmp.code, icmpv6.code -> int (the code under the type: 3 port unreachable under 1 destination
                         unreachable); `-p icmp --icmp-type 3/3` is icmp.type . icmp.code
                         Packet spaces carry type and code in the port dimension (fwmatrix/space): exact
  tcp.flags           -> TcpFlags (the TCP flags under a mask equal a value: `--syn`, `tcp flags syn`)
  daddr.type, saddr.type -> str (the address's type in the firewall's routing: 'local', 'unicast',
                         'broadcast', 'multicast', ...; nft `fib daddr type`, iptables `-m addrtype`).
                         'local' is judged with the firewall's own addresses, 'multicast' and 'broadcast'
                         by their fixed addresses (audit/evaluate/addrtype.py)
  exthdr              -> str (the IPv6 packet carries this extension header: 'rt', 'frag', 'hbh', 'dst';
                         `-m rt`, `-m frag`, `-m hbh`, `-m dst`; 'ipopts': the IPv4 packet carries
                         options, nft `ip hdrlength != 5`). The audit's packets carry none: a rule
                         that only drops with it never matches them, any other is judged both ways
                         (audit/evaluate/matches.py, `_exthdr_parts`)
  ttl, hoplimit       -> PortRange (the IPv4 TTL, the IPv6 hop limit lies in this range of 0-255;
                         `-m ttl`, `-m hl`). Judged both ways on forwarded packets, whose hop limit
                         the audit does not fix; exactly on neighbour discovery, whose messages carry
                         hop limit 255 (audit/evaluate/neighbours.py)
  physdev.bridged     -> int (1: the packet is being bridged, `-m physdev --physdev-is-bridged`;
                         judged by its interfaces, audit/evaluate/bridged.py)
  ether.saddr         -> str (the link-layer source, a MAC address in lower case with two digits an
                         octet, intervals.mac_address: `-m mac --mac-source`, nft `ether saddr`). Judged
                         as atoms of the in-interface (intervals.Interfaces); only Ethernet packets have
                         one, and only before routing decides the way out (prerouting, input, forward)
  socket              -> str (the packet has a local socket of which this holds: `meta skuid 0`,
                         `-m owner --uid-owner 0`, pf `user 0`; a forwarded packet never has one,
                         audit/evaluate/sockets.py)

What the IR cannot express exactly is kept, never dropped: an `Unmodelled`
match or action names the construct and its origin, and evaluation judges
it both ways (it may match, it may not).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Sequence, Union

from netaddr import IPNetwork, IPRange

from fwmatrix.matrix.model import PortRange

FIELDS = (
    "iif", "oif", "l4proto", "dport", "sport", "ip.saddr", "ip.daddr", "ip6.saddr", "ip6.daddr",
    "ct.state", "ct.status", "nfproto", "icmp.type", "icmpv6.type", "icmp.code", "icmpv6.code", "tcp.flags", "daddr.type", "saddr.type",
    "physdev.bridged", "socket", "exthdr", "ttl", "hoplimit", "ether.saddr",
)
# the address types of `fib ... type` and `-m addrtype` (the kernel's RTN_* route types)
ADDRESS_TYPES = ("unspec", "unicast", "local", "broadcast", "anycast", "multicast", "blackhole", "unreachable",
                 "prohibit", "throw", "nat", "xresolve")

TCP_FLAG_BITS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20, "ecn": 0x40, "cwr": 0x80}


@dataclass(frozen=True)
class TcpFlags:
    """The TCP flags under `mask` equal `value` (iptables `--tcp-flags MASK COMP`; `--syn`
    is mask fin|syn|rst|ack, value syn; nft `tcp flags syn` is mask syn, value syn)."""

    mask: int
    value: int

    def __str__(self) -> str:
        def names(bits: int) -> str:
            return "|".join(name for name, bit in TCP_FLAG_BITS.items() if bits & bit) or "0"
        return f"tcp flags & ({names(self.mask)}) == {names(self.value)}"


def addr_field(family: int, which: str) -> str:
    """`addr_field(4, 'saddr')` -> 'ip.saddr'."""
    return f"{'ip' if family == 4 else 'ip6'}.{which}"


Value = Union[str, int, IPNetwork, IPRange, PortRange, TcpFlags]
Key = tuple[Value, ...]


@dataclass(frozen=True)
class Element:
    key: Key
    data: Key = ()  # for maps: the value the key maps to
    comment: str = ""


@dataclass(frozen=True)
class SetDef:
    """A named set (or map, when `data` is not empty) of concatenated keys."""

    name: str
    key: tuple[str, ...]  # fields
    elements: tuple[Element, ...]
    data: tuple[str, ...] = ()  # fields whose types the mapped values have
    dynamic: bool = False  # the packet path adds to it (`add @set`, `update @set`): it may hold anything of its type

    @property
    def is_map(self) -> bool:
        return bool(self.data)


@dataclass(frozen=True)
class Match:
    """`fields` equal one of `values` (a literal set of keys), or are in the named set."""

    fields: tuple[str, ...]
    values: tuple[Key, ...] = ()
    set_name: str | None = None
    negate: bool = False


ADDRESS_BITS = {4: 32, 6: 128}


def merge_cidrs(networks: Iterable[tuple[int, int, int]]) -> tuple[tuple[int, int, int], ...]:
    """Networks as integers, (version, first address, prefix length), -> the fewest CIDRs that
    cover their union (what netaddr's cidr_merge gives), sorted: the writers merge address sets
    on integers. A network that touches no other is its own cover and is kept as it is."""
    ranges: list[list] = []  # [version, first, last, the network while it is alone], sorted, joined where they touch
    for network in sorted(networks):
        version, first, length = network
        last = first + (1 << (ADDRESS_BITS[version] - length)) - 1
        if ranges and ranges[-1][0] == version and first <= ranges[-1][2] + 1:
            ranges[-1][2] = max(ranges[-1][2], last)
            ranges[-1][3] = None
        else:
            ranges.append([version, first, last, network])
    out = []
    for version, first, last, alone in ranges:
        if alone is not None:
            out.append(alone)
            continue
        bits = ADDRESS_BITS[version]
        while first <= last:  # the largest block aligned at `first` that ends by `last`
            size = (first & -first).bit_length() - 1 if first else bits
            while first + (1 << size) - 1 > last:
                size -= 1
            out.append((version, first, bits - size))
            first += 1 << size
    return tuple(out)


def distinct(conds: Sequence[Match | Unmodelled]) -> tuple[Match | Unmodelled, ...]:
    """A rule's matches without repeats, in order: `tuple(dict.fromkeys(conds))`, but only
    matches of the same fields are compared (equal matches read the same fields, and their
    hashes are equal: comparing with each kept one is what the dict does; hashing addresses
    is what costs)."""
    if len({c.fields if type(c) is Match else c for c in conds}) == len(conds):
        return tuple(conds)  # no two read the same fields
    kept: list[Match | Unmodelled] = []
    by_fields: dict[object, list[Match | Unmodelled]] = {}
    for cond in conds:
        key = cond.fields if type(cond) is Match else cond
        same = by_fields.get(key)
        if same is None:
            by_fields[key] = [cond]
            kept.append(cond)
        elif cond not in same:
            same.append(cond)
            kept.append(cond)
    return tuple(kept)


@dataclass(frozen=True)
class Unmodelled:
    """A match fwmatrix cannot model (a mark, a rate limit, an unknown expression): it may or may not match."""

    text: str


@dataclass(frozen=True)
class Verdict:
    kind: str  # 'accept', 'drop', 'reject', 'return'


@dataclass(frozen=True)
class Jump:
    chain: str
    goto: bool = False


@dataclass(frozen=True)
class VerdictMap:
    """Look `fields` up in literal entries (or the named map) and take the matching action; no match falls through."""

    fields: tuple[str, ...]
    entries: tuple[tuple[Key, Union[Verdict, Jump]], ...] = ()
    map_name: str | None = None


@dataclass(frozen=True)
class DnatMap:
    """Destination NAT to the value that `fields` map to in the named map (or in literal entries)."""

    family: int
    fields: tuple[str, ...]
    map_name: str | None = None
    entries: tuple[tuple[Key, Key], ...] = ()


@dataclass(frozen=True)
class Dnat:
    """Destination NAT to one address (and port, or port range, when given)."""

    family: int
    address: IPNetwork | IPRange
    port: PortRange | None = None


@dataclass(frozen=True)
class Redirect:
    """Destination NAT to the firewall itself (nft `redirect [to :P]`, iptables `-j REDIRECT
    [--to-ports P]`): a new connection's destination becomes the primary address of the
    interface it came in by, its port P when given (nf_nat_redirect; on an interface without
    an address the packet is dropped). Either way it is never forwarded."""

    port: PortRange | None = None


@dataclass(frozen=True)
class Snat:
    """Source NAT to one address (nft `snat ip to A`, iptables `-j SNAT --to-source A`), in a
    postrouting nat chain: replies are translated back by connection tracking."""

    family: int
    address: IPNetwork


@dataclass(frozen=True)
class Masquerade:
    """Source NAT to the address of the interface the packet leaves by (nft `masquerade`,
    iptables `-j MASQUERADE`), for both families."""


@dataclass(frozen=True)
class Log:
    """Count the packet and log it, at most `per_minute` a minute (nft `counter limit rate N/minute
    log prefix P`, iptables `-m limit --limit N/min -j LOG --log-prefix P`, pf `log`). It decides
    nothing: the chain goes on."""

    prefix: str
    per_minute: int = 10


@dataclass(frozen=True)
class UnmodelledAction:
    """An action fwmatrix cannot model. A terminal one (queue, an unknown verdict)
    decides the packet's fate in a way fwmatrix cannot tell; a non-terminal one
    (notrack, a helper) lets the chain go on but may change what later rules see."""

    text: str
    terminal: bool = True


def packet_copies(spec: str, which: str) -> UnmodelledAction:
    """Copies of packets sent elsewhere (pf `dup-to`, iptables `-j TEE --gateway G`, nft `dup to
    G`): the original goes on as it would (the chain goes on, its fate exact), where the copies
    end up the audit cannot follow: an unmodelled action that decides nothing, named by `spec`
    (the option as written, its target in it)."""
    return UnmodelledAction(f"{spec}: a copy of {which} leaves towards the target, where the audit does not follow it", terminal=False)


@dataclass(frozen=True)
class Notrack:
    """Take the packet out of connection tracking (nft `notrack`, iptables `-j CT --notrack`):
    before conntrack (priority below -200) it goes on as `ct state untracked`, never NATed.
    The chain goes on."""


Action = Union[Verdict, Jump, VerdictMap, DnatMap, Dnat, Redirect, Snat, Masquerade, Log, Notrack, UnmodelledAction, None]


@dataclass(frozen=True)
class Rule:
    matches: tuple[Union[Match, Unmodelled], ...]
    action: Action
    comment: str = ""
    origin: str = ""  # where a parsed rule came from: "inet filter forward handle 7", "FILE:LINE"


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]
    hook: str | None = None  # 'prerouting', 'forward', ... ; None for a regular chain
    type: str = "filter"  # 'filter' or 'nat'
    priority: int = 0
    policy: str | None = None  # 'accept' or 'drop' for base chains
    # the interfaces an ingress/egress chain (netdev, inet) is bound to; None when the
    # listing does not say (nft's JSON before 1.0.7): any interface may be one of them
    devices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Table:
    family: str  # 'inet', 'ip', 'ip6', 'netdev'
    name: str
    chains: tuple[Chain, ...]
    sets: tuple[SetDef, ...] = ()

    def chain(self, name: str) -> Chain:
        return self._named[0][name]

    def find_chain(self, name: str) -> Chain | None:
        return self._named[0].get(name)

    def set(self, name: str) -> SetDef:
        return self._named[1][name]

    @cached_property
    def _named(self) -> tuple[dict[str, Chain], dict[str, SetDef]]:
        """The chains and sets by name, the first of a name (asked per jump and per set lookup:
        a kube-proxy table has thousands of chains, and a scan per jump made its walk quadratic)."""
        chains: dict[str, Chain] = {}
        for c in self.chains:
            chains.setdefault(c.name, c)
        sets: dict[str, SetDef] = {}
        for s in self.sets:
            sets.setdefault(s.name, s)
        return chains, sets


@dataclass(frozen=True)
class Header:
    """What a generated ruleset says about where it came from."""

    matrix: str
    content_hash: str
    firewall: str
    generator: str


@dataclass(frozen=True)
class Ruleset:
    tables: tuple[Table, ...]
    header: Header | None = None
    # The address families (4, 6) the input covers. None: every family — one nftables
    # ruleset (or pf.conf) filters both, a family without tables is not filtered. An
    # iptables-save file covers its own family only: ip6tables-save is another file.
    families: frozenset[int] | None = None

    @property
    def rule_count(self) -> int:
        return sum(len(chain.rules) for table in self.tables for chain in table.chains)


MAX_JUMP_DEPTH = 64  # jumps the audit follows from a base chain (audit/evaluate/chains.py)


def jump_problem(table: Table) -> str | None:
    """Why the jumps from a table's base chains cannot be followed, or None: a jump to
    a chain the table does not define, a loop (named chain by chain), or jumps nested
    deeper than MAX_JUMP_DEPTH. One check for every backend's rulesets, when they are read."""
    chains = {chain.name: chain for chain in table.chains}
    maps = {s.name: s for s in table.sets}
    where = f"{table.family} {table.name}"
    targets: dict[str, list[str]] = {}

    def jumps_of(chain: Chain) -> list[str]:
        if chain.name not in targets:
            found: list[str] = []
            for rule in chain.rules:
                action = rule.action
                if isinstance(action, Jump):
                    found.append(action.chain)
                elif isinstance(action, VerdictMap):
                    entries = [verdict for _, verdict in action.entries]
                    if action.map_name is not None and action.map_name in maps:
                        entries += [element.data[0] for element in maps[action.map_name].elements if element.data]
                    found += [verdict.chain for verdict in entries if isinstance(verdict, Jump)]
            targets[chain.name] = found
        return targets[chain.name]

    height: dict[str, int] = {}  # chain -> the most jumps nested from it
    for base in (chain for chain in table.chains if chain.hook is not None):
        if base.name in height:
            continue
        path = [base.name]
        pending = [iter(jumps_of(base))]
        while pending:
            child = next(pending[-1], None)
            if child is None:
                name = path.pop()
                pending.pop()
                height[name] = max((height[c] + 1 for c in jumps_of(chains[name])), default=0)
                continue
            if child not in chains:
                return f"{where} {path[-1]}: a jump to chain '{child}', which the table does not define"
            if child in path:
                loop = path[path.index(child):] + [child]
                return f"{where}: jumps loop, {' -> '.join(loop)}: the kernel refuses such a ruleset"
            if child not in height:
                path.append(child)
                pending.append(iter(jumps_of(chains[child])))
        if height[base.name] > MAX_JUMP_DEPTH:
            return f"{where} {base.name}: jumps nest {height[base.name]} deep; fwmatrix follows at most {MAX_JUMP_DEPTH}"
    return None


# Netfilter hook priorities (the named ones nft uses).
PRIORITY_DSTNAT = -100
PRIORITY_FILTER = 0
PRIORITY_SRCNAT = 100


# The comment of the rules a pf ruleset's input chain opens with (backends/pf/readlocal.py):
# they take the packets not addressed to the firewall, which never reach an input hook (the
# audit leaves them out of what the firewall itself receives, fwmatrix/audit/local.py).
NOT_LOCAL = "pf: not addressed to the firewall, so forwarded, never taken by it"
