"""Packets that `notrack` takes out of connection tracking.

A notrack rule in a prerouting chain that runs before conntrack (priority
below -200: raw) leaves the packets it matches untracked: they reach every
chain after conntrack (mangle prerouting, forward, postrouting) as `ct
state untracked` whatever they would have been (new, established, related,
invalid), and no NAT rule sees them. Those chains are evaluated over every
conntrack state, so what they do to such a packet is what they do to its
untracked state: `untracked` regions are read
back as the states the packet would have had, and what the chains do to
those states there never happens. An action fwmatrix cannot model before
conntrack may untrack too (iptables' CT with options, an unknown statement):
in the reading where it matches, its packets are forwarded both ways, tracked
and untracked.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator, Sequence

from fwmatrix.audit.evaluate.effective import Grant
from fwmatrix.audit.evaluate.forward import DEFAULT_ACCEPT
from fwmatrix.space import CT_ALL, Interfaces, Space, ct_bits

UNTRACKED = ct_bits("untracked")
# The states notrack takes away, in forward coordinates. Not `new dnat`: a translated new
# connection reached forward at its translated address, so it arrived elsewhere (an
# untracked packet is never translated) and notrack did not touch it.
TRACKED = CT_ALL & ~UNTRACKED & ~ct_bits("new", translated=True)
WOULD_BE = sum(ct_bits(state, translated=False) for state in ("new", "established", "related", "invalid"))


def untracked_region(ifaces: Interfaces, notracked: list[Grant]) -> Space:
    """The arriving packets notrack takes out of tracking, in every conntrack state."""
    return Space(ifaces, [replace(box, ct=CT_ALL) for g in notracked for box in g.space.boxes])


def as_untracked(ifaces: Interfaces, grants: list[Grant], notracked: list[Grant], maybe: Sequence[Grant] = ()) -> list[Grant]:
    """`grants` (what the forward chains pass) as the untracked packets live it: inside a
    notrack rule's region a packet is forwarded in the state it would have had exactly
    when its untracked state is; the grant then names the notrack rule too. Inside the
    region of an action that `maybe` untracks, it is forwarded when either state is."""
    if not notracked and not maybe:
        return grants
    tracked_there = _tracked_there(ifaces, notracked)
    out = [Grant(g.space.subtract(tracked_there), g.origin) for g in grants]
    for grant in grants:
        for notrack, relabelled, _ in _as_would_be(ifaces, grant.space, notracked, maybe):
            origin = grant.origin if grant.origin == DEFAULT_ACCEPT else f"{grant.origin}, untracked by {notrack.origin}"
            out.append(Grant(relabelled, origin))
    return [g for g in out if g.space]


def drops_as_untracked(ifaces: Interfaces, dropped: list[Grant], uncertain: set[int], notracked: list[Grant],
                       maybe: Sequence[Grant] = ()) -> tuple[list[Grant], set[int]]:
    """A chain's drops after conntrack (`uncertain`: ids of those that depend on unmodelled
    constructs) as the untracked packets live them: inside a notrack rule's region a packet is
    dropped in the state it would have had exactly when its untracked state is; inside the
    region of an action that `maybe` untracks, it may be dropped in either (uncertain)."""
    if not notracked and not maybe:
        return dropped, uncertain
    tracked_there = _tracked_there(ifaces, notracked)
    out: list[Grant] = []
    unsure: set[int] = set()
    for drop in dropped:
        parts = [(drop.space.subtract(tracked_there), False)]
        parts += [(relabelled, maybe_only) for _, relabelled, maybe_only in _as_would_be(ifaces, drop.space, notracked, maybe)]
        for space, maybe_only in parts:
            if space:
                out.append(Grant(space, drop.origin))
                if maybe_only or id(drop) in uncertain:
                    unsure.add(id(out[-1]))
    return out, unsure


def _tracked_there(ifaces: Interfaces, notracked: list[Grant]) -> Space:
    """The tracked states of the packets notrack takes: they never occur."""
    return untracked_region(ifaces, notracked).intersect(Space.full(ifaces).make(ct=TRACKED))


def _as_would_be(ifaces: Interfaces, space: Space, notracked: list[Grant], maybe: Sequence[Grant]) -> Iterator[tuple[Grant, Space, bool]]:
    """The untracked part of `space` inside each notrack region, read back as the states the
    packets would have had: (the notrack rule, those packets, whether it only maybe untracks)."""
    untracked = space.intersect(Space.full(ifaces).make(ct=UNTRACKED))
    if not untracked:
        return
    for notrack, maybe_only in [(n, False) for n in notracked] + [(m, True) for m in maybe]:
        passed = untracked.intersect(untracked_region(ifaces, [notrack]))
        if passed:
            yield notrack, Space(ifaces, [replace(box, ct=WOULD_BE) for box in passed.boxes]), maybe_only
