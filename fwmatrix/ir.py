"""The Ruleset IR: one backend-neutral form of a firewall ruleset.

Compiling builds it from an intent and each backend renders it; parsing a
live ruleset (the audit) produces it too. It speaks netfilter's concepts:
tables of base chains on hooks with priorities and policies, rules that
match header fields and connection state, verdicts, jumps, DNAT, and named
sets and maps (with concatenated keys), which other backends lower to what
they have (user chains and multiport, pf tables).

Values inside matches and set elements:
  iif, oif            -> str (an interface name)
  ip.*, ip6.*         -> netaddr.IPNetwork
  l4proto             -> int (IANA protocol number)
  dport               -> model.PortRange
  ct.state            -> str ('established', 'related', 'new', 'invalid')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from netaddr import IPNetwork

from .model import PortRange

Value = Union[str, int, IPNetwork, PortRange]
Key = tuple[Value, ...]

FIELDS = ("iif", "oif", "l4proto", "dport", "ip.saddr", "ip.daddr", "ip6.saddr", "ip6.daddr", "ct.state")


def addr_field(family: int, which: str) -> str:
    """`addr_field(4, 'saddr')` -> 'ip.saddr'."""
    return f"{'ip' if family == 4 else 'ip6'}.{which}"


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


@dataclass(frozen=True)
class Verdict:
    kind: str  # 'accept', 'drop', 'reject', 'return'


@dataclass(frozen=True)
class Jump:
    chain: str
    goto: bool = False


@dataclass(frozen=True)
class VerdictMap:
    """Look `fields` up in literal entries and take the matching action; no match falls through."""

    fields: tuple[str, ...]
    entries: tuple[tuple[Key, Union[Verdict, Jump]], ...]


@dataclass(frozen=True)
class DnatMap:
    """Destination NAT to the value that `fields` map to in the named map."""

    family: int
    fields: tuple[str, ...]
    map_name: str


Action = Union[Verdict, Jump, VerdictMap, DnatMap, None]


@dataclass(frozen=True)
class Rule:
    matches: tuple[Match, ...]
    action: Action
    comment: str = ""


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]
    hook: str | None = None  # 'prerouting', 'forward', ... ; None for a regular chain
    type: str = "filter"  # 'filter' or 'nat'
    priority: int = 0
    policy: str | None = None  # 'accept' or 'drop' for base chains


@dataclass(frozen=True)
class Table:
    family: str  # 'inet', 'ip', 'ip6'
    name: str
    chains: tuple[Chain, ...]
    sets: tuple[SetDef, ...] = ()

    def chain(self, name: str) -> Chain:
        return next(c for c in self.chains if c.name == name)

    def set(self, name: str) -> SetDef:
        return next(s for s in self.sets if s.name == name)


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

    @property
    def rule_count(self) -> int:
        return sum(len(chain.rules) for table in self.tables for chain in table.chains)


# Netfilter hook priorities (the named ones nft uses).
PRIORITY_DSTNAT = -100
PRIORITY_FILTER = 0
