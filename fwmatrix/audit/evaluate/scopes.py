"""IPv6 the kernel never forwards from one interface to another, whatever the ruleset.

A source of link-local scope (fe80::/10) cannot leave its link: Linux's ip6_forward
drops such a packet before the forward hook when its route leads out of another
interface (and answers ICMPv6 "beyond scope of source address"). So a forward chain
that accepts everything still forwards none of them, and the evaluator's regions
leave them out: exact, proved with real packets (tests/test_kernel_model.py). The
audit, to which they matter neither way, reads the rules' own regions (`as_ruled`). Going
back out of the interface it came in by (a redirect's case) the kernel lets it be,
and so do these regions; so does any interface the ruleset cannot name (`OTHER`,
which may be the same one).

Site-local sources (fec0::/10, deprecated by RFC 3879) are no scope of their own to
the kernel: they are forwarded like global ones (the same test).
"""

from __future__ import annotations

from dataclasses import replace

from netaddr import IPNetwork

from fwmatrix.audit.evaluate.effective import Effective, changed
from fwmatrix.space import OTHER, Space, addr_interval

LINK_LOCAL = (addr_interval(IPNetwork("fe80::/10")),)


def _crossing(ifaces, pseudo: frozenset[str]) -> Space:
    """Link-local sources arriving on one real interface and leaving by another."""
    full = Space.full(ifaces)
    real = [n for n in ifaces.names if n not in pseudo]
    out = Space.empty(ifaces)
    for name in real:
        others = 0
        for other in real:
            if other != name:
                others |= ifaces.mask(other)
        if others:
            out = out.union(full.make(iif=ifaces.mask(name), oif=others, src=LINK_LOCAL))
    return out


def _never(effective: Effective) -> Space:
    from fwmatrix.audit.local import LOCAL  # the firewall itself as a destination (input judged as forward); local imports this package

    return _crossing(effective.ifaces, frozenset({"lo", OTHER, LOCAL}))


def with_scope_crossings_noted(effective: Effective) -> Effective:
    """`effective` as the rules have it, what the kernel keeps on its link in `never`: the
    regions of `as_ruled(without_scope_crossings(effective))`, without the subtractions (a
    tenth of a compiled ruleset's evaluation) that as_ruled would drop again."""
    never = _never(effective)
    return replace(effective, never=never) if never else effective


def without_scope_crossings(effective: Effective) -> Effective:
    """`effective` without the link-local sources the kernel keeps on their link."""
    never = _never(effective)
    if not never:
        return effective
    return effective.with_forwarded(
        lambda space: space.subtract(never),
        uncertain=changed(effective.uncertain, lambda space: space.subtract(never)),
        never=never,
        ruled=(effective.forwarded, effective.uncertain),
    )


def as_ruled(effective: Effective) -> Effective:
    """`effective` as the rules alone say, with what the kernel refuses before them: for the
    audit, to which those packets matter neither way (an opening from anywhere does not miss
    them, a rule is not excess for them), so that its regions read as the rules do."""
    if effective.ruled is None:
        return effective
    forwarded, uncertain = effective.ruled
    return replace(effective, forwarded=forwarded, uncertain=uncertain, never=None, ruled=None)
