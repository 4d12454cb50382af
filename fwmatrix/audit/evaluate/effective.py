"""What an evaluation gives back: the regions forwarded, by the rule that let
them through; the DNAT regions; notes on rules that can never match and on
constructs fwmatrix cannot model."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Callable

from fwmatrix.matrix.model import PortRange
from fwmatrix.space import Interfaces, Intervals, Space


# The tests set it: every cover asked for is checked against the grants' union (an internal
# error if they differ: a cover larger than the forwarded set would hide missing openings).
CHECK_COVER = os.environ.get("FWMATRIX_CHECK_COVER") == "1"


@dataclass(frozen=True)
class Grant:
    """Packets a rule lets through."""

    space: Space
    origin: str


@dataclass(frozen=True)
class DnatRegion:
    """Packets (as they arrive, before translation) that a rule translates."""

    space: Space
    target: Intervals  # address interval(s) in space coordinates
    port: PortRange | None
    origin: str
    uncertain: bool = False  # the rule has a match fwmatrix cannot model: it may not translate these
    local: bool = False  # a redirect: to the firewall itself (the address of the interface it came in by; `target` empty)


# The firewall's own end of a connection as an out-interface (audit/local.py judges its input
# chain as if it were the forward chain): not an interface, so no rule on a name can match it.
LOCAL = "(firewall)"


@dataclass(frozen=True)
class Note:
    origin: str
    text: str


@dataclass
class Effective:
    ifaces: Interfaces
    forwarded: list[Grant]  # regions forwarded (every ct state), by the rule that accepted them
    dnats: list[DnatRegion]
    shadowed: list[Note] = field(default_factory=list)
    unmodelled: list[Note] = field(default_factory=list)
    uncertain: list[Grant] = field(default_factory=list)  # forwarded only if unmodelled rules go one way
    doubtful: list[Grant] = field(default_factory=list)  # what each rule with an unmodelled construct can reach
    # interface -> the ICMPv6 neighbour discovery the firewall certainly drops arriving there
    # (see neighbours.py); IPv6 through an interface where it drops all of it is in `uncertain`
    # (static neighbour entries would forward it), not in `forwarded`: `nd_dead` holds it
    nd_blocked: dict[str, set[str]] = field(default_factory=dict)
    nd_dead: Space | None = None
    # what the kernel never forwards whatever the rules (link-local sources crossing interfaces,
    # scopes.py), and `forwarded` and `uncertain` as the rules alone have them (None: the same)
    never: Space | None = None
    ruled: tuple[list[Grant], list[Grant]] | None = None
    # `forwarded`'s union in other boxes, fewer and larger (each accept's whole match, chains.py),
    # kept with the very list it was made for: an Effective made with another `forwarded` has none
    cover: tuple[list[Grant], Space] | None = None

    def forwarded_cover(self) -> Space:
        """The forwarded set (every ct state) in the fewest boxes known: what asks of it whether
        something is forwarded pays by the boxes it reads."""
        cover = self._own_cover()
        if cover is None:
            return self.forwarded_space()
        if CHECK_COVER and not cover.equals(self.forwarded_space()):
            raise AssertionError("the forwarded set's cover is not the grants' union")
        return cover

    def with_forwarded(self, change: Callable[[Space], Space], **fields: object) -> Effective:
        """`forwarded` with each grant's space changed by `change` (an intersection or a subtraction:
        what it does to a union it does to each part), the cover with it, and other `fields` replaced."""
        forwarded = changed(self.forwarded, change)
        own = self._own_cover()
        return replace(self, forwarded=forwarded, cover=(forwarded, change(own)) if own is not None else None, **fields)  # type: ignore[arg-type]

    def _own_cover(self) -> Space | None:
        """The cover, if it was made for this very `forwarded` list."""
        return self.cover[1] if self.cover is not None and self.cover[0] is self.forwarded else None

    def forwarded_space(self) -> Space:
        """The grants' union, box for box (one list: a union per grant copied the list each time)."""
        return Space(self.ifaces, [b for g in self.forwarded for b in g.space.boxes])


def changed(grants: list[Grant], change: Callable[[Space], Space]) -> list[Grant]:
    """Each grant with its space changed by `change`, under its rule's name; those left empty dropped."""
    return [g for g in (Grant(change(g.space), g.origin) for g in grants) if g.space]


class EvaluationError(Exception):
    pass
