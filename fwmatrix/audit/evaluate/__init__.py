"""Symbolic execution of a ruleset: what it really does to forwarded packets.

The netfilter path, as the kernel runs it:
  0. ingress (netdev and inet tables, on the in-interface) and prerouting
     filter chains (raw, mangle): what they drop never goes further;
  1. prerouting, nat chains by priority: the first DNAT that matches a new
     connection translates its destination (later nat rules and chains no
     longer see it);
  2. forward: every base chain on the forward hook, of every table whose
     family sees the packet (ip: IPv4, ip6: IPv6, inet: both), in priority
     order (of chains at one priority, the one registered last runs first).
     Within a chain the first matching rule decides; accept ends that
     chain only (the next base chain still judges the packet), drop and
     reject are final; jump/goto/return and verdict maps move between
     chains; the policy takes what no rule decided;
  3. postrouting filter chains, then egress (netdev tables, on the
     out-interface): each may still drop what forward let pass.

The result is an `Effective` policy: the regions of (post-DNAT) packets that
are forwarded, each remembering the rule that accepted it; the DNAT
mappings; the rules that can never match; and the constructs that could not
be modelled, which are judged both ways (the evaluation runs once assuming
they match and once assuming they do not).

The parts, in the path's order: prerouting (early drops, notrack, DNAT
regions), forward (the forward base chains, combined), untracked (what
notrack changes about them), chains (walking one chain: rules, jumps,
verdict maps; and the one place where unmodelled constructs get their
consequences), matches (a rule's packet space); reading is the context they
share, effective what they give back.
"""

from __future__ import annotations

import os
from dataclasses import replace

from fwmatrix.audit.evaluate.addrtype import UNKNOWN, OwnAddresses
from fwmatrix.audit.evaluate.effective import DnatRegion, Effective, EvaluationError, Grant, Note, changed
from fwmatrix.audit.evaluate.forward import DEFAULT_ACCEPT, combine, forward_chains, upper_differs
from fwmatrix.audit.evaluate.macscope import mac_scopes
from fwmatrix.audit.evaluate.neighbours import arp_dead, nd_blocked, nd_dead, nd_doubtful, nd_output_doubtful
from fwmatrix.audit.evaluate.prerouting import delivered_locally, dnat_regions, early_drops
from fwmatrix.audit.evaluate.reading import Reading
from fwmatrix.audit.evaluate.scopes import with_scope_crossings_noted, without_scope_crossings
from fwmatrix.audit.evaluate.untracked import as_untracked
from fwmatrix.ir import Match, Ruleset, VerdictMap
from fwmatrix.space import NO_PORT, OTHER, V4_ALL, V6_ALL, Interfaces, Space, iv_norm, iv_sub


# The most MAC sources told apart exactly. Each bound host gets pieces of its own in every
# space, and the walk's cost grows with them faster than linearly: a university ruleset
# binding 1,931 hosts to their MACs ran over 20 minutes and 2 GB without ending
# (bench/results/mac.md). Beyond this, MAC matches are judged both ways, as before they
# were modelled. FWMATRIX_MAX_MAC_SOURCES raises it for a longer run.
MAX_MAC_SOURCES = int(os.environ.get("FWMATRIX_MAX_MAC_SOURCES", "64"))


def interfaces_of(ruleset: Ruleset, known: list[str]) -> Interfaces:
    """The interface universe: the matrix's names and every name the ruleset uses, split by
    the MAC sources the ruleset matches where its rules test them (none: no split,
    intervals.Interfaces; macscope.py)."""
    names = set(known)
    macs: set[str] = set()
    found = {"iif": names, "oif": names, "ether.saddr": macs}

    def take(fields: tuple[str, ...], keys, wildcards: bool = False) -> None:
        for position, f in enumerate(fields):
            if f in found:
                found[f].update(str(k[position]) for k in keys if wildcards or not str(k[position]).endswith("*"))

    for table in ruleset.tables:
        for set_def in table.sets:
            take(set_def.key, [e.key for e in set_def.elements])
        for chain in table.chains:
            names.update(chain.devices or ())
            for rule in chain.rules:
                for match in rule.matches:
                    if isinstance(match, Match):
                        take(match.fields, match.values)
                if isinstance(rule.action, VerdictMap):
                    take(rule.action.fields, [k for k, _ in rule.action.entries], wildcards=True)
    if len(macs) > MAX_MAC_SOURCES:
        return Interfaces(Interfaces.of(names).names, unsplit=len(macs))
    return Interfaces.of(names, macs, mac_scopes(ruleset) if macs else None)


def evaluate(ruleset: Ruleset, ifaces: Interfaces, within: Space | None = None, observer: object | None = None,
             own: OwnAddresses = UNKNOWN, as_ruled: bool = False) -> Effective:
    """The effective policy. Where rules fwmatrix cannot model are involved, it
    reads them twice (they all match; none matches) and also marks every packet
    that such a rule could match: `forwarded` holds only what is forwarded
    whatever those rules do, `uncertain` what may be forwarded depending on them
    (forwarded by one reading, or within reach of such a rule that lets packets
    on), and DNAT regions behind them are flagged uncertain; `doubtful` holds what
    each such rule can reach, so that findings can name it. IPv6 through an interface
    where the firewall drops all neighbour discovery is uncertain too (`nd_dead`), and a
    link-local source leaving by another interface is never forwarded (scopes.py).

    `within` limits the walk to those packets (what the result says of others is then
    meaningless); `observer` watches the walk (fwmatrix query's trace, fwmatrix/query/trace.py).
    `own`: the firewall's own addresses, as far as they are known (addrtype.py). With `as_ruled`,
    `forwarded` and `uncertain` are as the rules alone have them and `never` holds what the kernel
    keeps on its link (scopes.as_ruled: the audit's reading), without subtracting it first."""
    effective = _without_dead_neighbours(ruleset, _evaluate(ruleset, ifaces, within, observer, own))
    return with_scope_crossings_noted(effective) if as_ruled else without_scope_crossings(effective)


def _without_dead_neighbours(ruleset: Ruleset, effective: Effective) -> Effective:
    """IPv6 through an interface where the firewall drops all neighbour discovery is not
    forwarded in reality, unless static neighbour entries stand in for it: uncertain. So is
    IPv6 whose neighbour discovery is dropped for some addresses, and IPv4 through an
    interface where ARP is dropped: each is noted, and judged both ways like an unmodelled rule."""
    ifaces = effective.ifaces
    names = [n for n in ifaces.names if n not in ("lo", OTHER)]
    blocked = nd_blocked(ruleset, ifaces, names)
    dead = nd_dead(ifaces, blocked)
    doubts = nd_doubtful(ruleset, ifaces, blocked, names) + nd_output_doubtful(ruleset, ifaces, names) + arp_dead(ruleset, ifaces, names)
    for origin, text, region in doubts:
        effective = _judged_both_ways(effective, Note(origin, text), region)
    if not dead:
        return replace(effective, nd_blocked=blocked)
    return effective.with_forwarded(
        lambda space: space.subtract(dead),
        uncertain=effective.uncertain + changed(effective.forwarded, lambda space: space.intersect(dead)),
        nd_blocked=blocked,
        nd_dead=dead,
    )


def _judged_both_ways(effective: Effective, note: Note, region: Space) -> Effective:
    """What the firewall forwards in `region` only maybe (for a reason `note` gives, outside the ruleset's rules)."""
    return effective.with_forwarded(
        lambda space: space.subtract(region),
        uncertain=effective.uncertain + changed(effective.forwarded, lambda space: space.intersect(region)),
        unmodelled=effective.unmodelled + [note],
        doubtful=effective.doubtful + [Grant(region, note.origin)],
    )


def _evaluate(ruleset: Ruleset, ifaces: Interfaces, within: Space | None, observer: object | None, own: OwnAddresses) -> Effective:
    yes_reading = Reading(ruleset, ifaces, assume_unmodelled_match=True, within=within, observer=observer, own=own)
    yes = _read(yes_reading)
    if not yes.unmodelled:
        return yes
    no_reading = Reading(ruleset, ifaces, assume_unmodelled_match=False, within=within, observer=observer, own=own)
    no = _read(no_reading)
    # Both readings' doubts count: a rule may meet packets that only one reading lets reach it.
    touched = Space(ifaces, yes_reading.touched + no_reading.touched)
    # Both readings' forwarded spaces are unions of overlapping boxes: intersected pairwise they
    # multiply (seed 5052 of the fuzzer: 3,673 x 4,409 boxes -> a million, then gigabytes);
    # A - (A - B) is the same set in pieces of A.
    either = yes.forwarded_space().coalesced()
    certain_space = either.subtract(either.subtract(no.forwarded_space().coalesced())).subtract(touched)
    certain = yes.with_forwarded(lambda space: space.intersect(certain_space))
    maybe = [Grant(g.space.subtract(certain_space), g.origin) for g in yes.forwarded + no.forwarded + yes_reading.upper + no_reading.upper]
    seen = {(d.origin, d.target, d.port) for d in yes.dnats}
    dnats = yes.dnats + [replace(d, uncertain=True) for d in no.dnats if (d.origin, d.target, d.port) not in seen]
    return replace(
        certain,
        dnats=dnats,
        uncertain=[g for g in maybe if g.space],
        doubtful=[g for g in yes_reading.doubtful + no_reading.doubtful if g.space],
    )


def within_families(effective: Effective, families: frozenset[int]) -> Effective:
    """The policy for packets of the given address families only (what an input covers)."""
    ifaces = effective.ifaces
    family = Space.empty(ifaces)
    for version in families:
        addresses = V4_ALL if version == 4 else V6_ALL
        family = family.union(Space.full(ifaces).make(src=addresses, dst=addresses))

    def within(space: Space) -> Space:
        return space.intersect(family)

    return effective.with_forwarded(
        within,
        dnats=[d for d in (replace(d, space=within(d.space)) for d in effective.dnats) if d.space],
        uncertain=changed(effective.uncertain, within),
        doubtful=changed(effective.doubtful, within),
    )


def _read(reading: Reading) -> Effective:
    """One reading along the netfilter path; what may be forwarded at most is left in `reading.upper`."""
    drops = early_drops(reading)
    regions = dnat_regions(reading, drops)
    dnats = [d for d in regions if not d.local]  # port forwards; redirects (to the firewall itself) are never forwarded
    redirects = [d for d in regions if d.local]
    early, early_certain = drops.spaces(reading)
    early_fwd, early_fwd_certain = drops.of_forwarded(reading, dnats)
    chains = forward_chains(reading)
    combined, cover = combine(reading, chains, upper=False)
    forwarded = as_untracked(reading.ifaces, combined, reading.notracked, reading.maybe_notracked)
    if cover is not None and forwarded is not combined:  # what notrack changes, changed in the cover too
        cover = Space(reading.ifaces, [b for g in as_untracked(reading.ifaces, [Grant(cover, DEFAULT_ACCEPT)], reading.notracked,
                                                              reading.maybe_notracked) for b in g.space.boxes])
    reading.upper = as_untracked(reading.ifaces, combine(reading, chains, upper=True, covered=False)[0], reading.notracked, reading.maybe_notracked) \
        if upper_differs(chains) else forwarded  # the same computation (a third of the compiled 10,000 audit's evaluation)
    if early:
        # Packets dropped before DNAT (ingress, raw, mangle, nat) never reach NAT or
        # forward: the DNAT regions lose them (both in arriving coordinates), and of the
        # forwarded packets only untranslated ones (a translated one arrived elsewhere).
        # Chains after DNAT drop the translated packet, as forward sees it.
        dnats = [replace(d, space=d.space.subtract(early)) for d in dnats]
        forwarded = [Grant(g.space.subtract(early_fwd), g.origin) for g in forwarded]
        cover = cover.subtract(early_fwd) if cover is not None else None
    if early_fwd_certain:
        reading.upper = [Grant(g.space.subtract(early_fwd_certain), g.origin) for g in reading.upper]
    if redirects:
        forwarded = delivered_locally(reading, [replace(d, space=d.space.subtract(early)) if early else d for d in redirects], forwarded)
        cover = None  # (rare) what the redirects take and give is in the grants alone
    forwarded = [g for g in forwarded if g.space]
    return Effective(
        reading.ifaces,
        forwarded,
        [d for d in dnats if d.space],
        reading.shadowed,
        list(reading.unmodelled.values()),
        cover=(forwarded, cover) if cover is not None else None,
    )


__all__ = [
    "Effective", "Grant", "DnatRegion", "Note", "OwnAddresses", "evaluate", "interfaces_of", "within_families", "EvaluationError", "DEFAULT_ACCEPT",
    "NO_PORT", "iv_norm", "iv_sub",
]
