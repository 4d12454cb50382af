"""Packets that `notrack` takes out of connection tracking.

A notrack rule in a prerouting chain that runs before conntrack (priority
below -200: raw) leaves the packets it matches untracked: they reach the
forward hook as `ct state untracked` whatever they would have been (new,
established, related, invalid), and no NAT rule sees them. The forward
chains are evaluated over every conntrack state, so what they do to such a
packet is what they do to its untracked state: `untracked` regions are read
back as the states the packet would have had, and what the chains do to
those states there never happens. An action fwmatrix cannot model before
conntrack may untrack too (iptables' CT with options, an unknown statement):
in the reading where it matches, its packets are forwarded both ways, tracked
and untracked.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

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
    region = untracked_region(ifaces, notracked)
    tracked_there = region.intersect(Space.full(ifaces).make(ct=TRACKED))
    out = [Grant(g.space.subtract(tracked_there), g.origin) for g in grants]
    for grant in grants:
        untracked = grant.space.intersect(Space.full(ifaces).make(ct=UNTRACKED))
        if not untracked:
            continue
        for notrack in [*notracked, *maybe]:
            passed = untracked.intersect(untracked_region(ifaces, [notrack]))
            if passed:
                relabelled = Space(ifaces, [replace(box, ct=WOULD_BE) for box in passed.boxes])
                origin = grant.origin if grant.origin == DEFAULT_ACCEPT else f"{grant.origin}, untracked by {notrack.origin}"
                out.append(Grant(relabelled, origin))
    return [g for g in out if g.space]
