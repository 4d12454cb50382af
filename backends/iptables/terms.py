"""The terms a rule reads as: IR conditions, and the disjunctions iptables allows in one rule.

parse.py reads the core options into them and matches.py the match extensions;
parse.py makes a rule with an _AnyOf one IR rule per alternative."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fwmatrix.ir import Match, Unmodelled

Cond = Match | Unmodelled


@dataclass(frozen=True)
class _AnyOf:
    """A disjunction iptables allows in one rule (`--ports`: sport or dport; `--ctstate NEW,DNAT`):
    the rule becomes one IR rule per alternative, which means the same (first match wins)."""

    alternatives: tuple[tuple[Cond, ...], ...]
    kernel_rules: bool = False  # `-s A,B`: one kernel rule each (they count for `-I CHAIN N`)


Term = Cond | _AnyOf


def _match(field_name: str, values: Iterable, negate: bool = False) -> Match:
    return Match((field_name,), tuple((v,) for v in values), negate=negate)
