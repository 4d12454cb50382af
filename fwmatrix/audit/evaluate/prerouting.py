"""The prerouting hook, before the forward decision: filtering chains (raw,
mangle) that drop packets early, and nat chains whose first DNAT translates
a new connection's destination."""

from __future__ import annotations

from fwmatrix.audit.evaluate.chains import walk
from fwmatrix.audit.evaluate.effective import DnatRegion
from fwmatrix.audit.evaluate.reading import Reading
from fwmatrix.audit.evaluate.untracked import CONNTRACK_PRIORITY, untracked_region
from fwmatrix.space import Remaining, Space, ct_bits


def early_drops(reading: Reading) -> tuple[Space, Space]:
    """What filtering chains on the prerouting hook (raw, mangle) drop, and of that
    what they drop whatever unmodelled constructs do. Before DNAT (priority below
    dstnat) they see the arriving packet, after it the translated one; both are
    judged here on the packet as it arrives or is forwarded. What their notrack rules
    take out of connection tracking (before conntrack) is left in `reading.notracked`."""
    boxes, certain = [], []
    for table, chain in reading.base_chains("prerouting", "filter"):
        result = walk(reading, table, chain, Remaining(reading.family_space(table)), depth=0)
        if chain.priority < CONNTRACK_PRIORITY:
            reading.notracked += [g for g in result.notracked if g.space]
            reading.maybe_notracked += [g for g in result.maybe_notracked if g.space]
        boxes += [b for g in result.dropped for b in g.space.boxes]
        certain += [b for g in result.dropped if id(g) not in result.uncertain_drops for b in g.space.boxes]
        if chain.policy == "drop":
            kept = Space(reading.ifaces, [b for g in result.accepted + result.maybe_accepted for b in g.space.boxes])
            rest = reading.family_space(table).subtract(kept).boxes
            boxes += rest
            certain += rest
    return Space(reading.ifaces, boxes), Space(reading.ifaces, certain)


def dnat_regions(reading: Reading) -> list[DnatRegion]:
    """The new, untranslated connections each DNAT rule translates: the nat chains in
    priority order, each over what no earlier chain translated. Call after
    `early_drops`, which finds the untracked packets."""
    regions: list[DnatRegion] = []
    tracked_new = reading.full.make(ct=ct_bits("new", translated=False)).subtract(untracked_region(reading.ifaces, reading.notracked))
    untranslated = Remaining(tracked_new)  # NAT never sees an untracked packet
    for table, chain in reading.base_chains("prerouting", "nat"):
        untranslated_in_table = untranslated.intersect(reading.family_space(table))
        result = walk(reading, table, chain, Remaining(untranslated_in_table), depth=0)
        for region in result.dnats:
            regions.append(region)
            untranslated.remove(region.space)
    return regions
