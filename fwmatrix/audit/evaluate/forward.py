"""The forward hook: every base chain of every table whose family sees the
packet, in priority order. Accept ends one chain only (the next still judges
the packet); a packet is forwarded when every chain lets it pass."""

from __future__ import annotations

from fwmatrix.audit.evaluate.chains import ChainResult, chain_name, walk
from fwmatrix.audit.evaluate.effective import Grant
from fwmatrix.audit.evaluate.reading import Reading
from fwmatrix.ir import Chain, Table
from fwmatrix.space import BoxIndex, Remaining, Space

DEFAULT_ACCEPT = "no forward chain judges these packets (netfilter forwards them by default)"


def forward_chains(reading: Reading) -> list[tuple[Table, Chain, ChainResult]]:
    """Each forward base chain, in priority order, with its decisions over its family's packets."""
    return [(table, chain, walk(reading, table, chain, Remaining(reading.family_space(table)), depth=0))
            for table, chain in reading.base_chains("forward", "filter")]


def combine(reading: Reading, chains: list[tuple[Table, Chain, ChainResult]], upper: bool) -> list[Grant]:
    """Forwarded packets, by the rule that let them through.

    A packet is forwarded when every forward base chain of its family lets
    it pass. Each chain is evaluated over its family's packets; of a chain
    with policy drop only its explicit accepts pass, of a chain with policy
    accept everything but its explicit drops. Grants may overlap (the
    forwarded set is their union); the explicit accept of the latest chain
    names the region's rule. With `upper`, what rules fwmatrix cannot model
    may let pass counts as passing and only their certain drops drop: what
    may be forwarded at most."""
    grants = [Grant(reading.full, DEFAULT_ACCEPT)]
    for table, chain, result in chains:
        family = reading.family_space(table)
        accepted = result.accepted + (result.maybe_accepted if upper else [])
        dropped_grants = [d for d in result.dropped if not (upper and id(d) in result.uncertain_drops)]
        outside = [Grant(g.space.subtract(family), g.origin) for g in grants]
        explicit = _intersect_grants([Grant(g.space.intersect(family), g.origin) for g in grants], accepted)
        inside: list[Grant] = []
        if chain.policy != "drop":
            dropped = Space(reading.ifaces, [b for d in dropped_grants for b in d.space.boxes])
            policy_origin = f"{chain_name(table, chain)} policy accept"
            for g in grants:
                rest = g.space.intersect(family).subtract(dropped)
                if rest:
                    inside.append(Grant(rest, policy_origin if g.origin == DEFAULT_ACCEPT else g.origin))
        grants = [g for g in explicit + inside + outside if g.space]
    return grants


def _intersect_grants(grants: list[Grant], passes: list[Grant]) -> list[Grant]:
    """Each grant cut by each pass, named by the pass's rule (found through an index, not pairwise)."""
    origin_of: dict[int, str] = {}
    index = BoxIndex()
    for p in passes:
        for box in p.space.boxes:
            origin_of[id(box)] = p.origin
            index.add(box)
    by_origin: dict[str, list] = {}
    for g in grants:
        for box in g.space.boxes:
            for other in index.overlapping(box):
                common = box.intersect(other)
                if common is not None:
                    by_origin.setdefault(origin_of[id(other)], []).append(common)
    return [Grant(Space(grants[0].space.ifaces if grants else passes[0].space.ifaces, boxes), origin) for origin, boxes in by_origin.items()]
