"""From the forward decision to the wire: every filtering base chain of every
table that sees the forwarded packet, in the path's order — the forward hook,
then postrouting, then egress on the out-interface (netdev tables). Within a hook by priority. Accept
ends one chain only (the next still judges the packet); a packet is
forwarded when every chain lets it pass."""

from __future__ import annotations

from dataclasses import dataclass, replace

from fwmatrix.audit.evaluate.chains import ChainResult, UnsureVerdict, chain_name, walk
from fwmatrix.audit.evaluate.effective import Grant
from fwmatrix.audit.evaluate.reading import Reading
from fwmatrix.ir import Chain, Rule, Table, UnmodelledAction
from fwmatrix.space import Box, Remaining, Space, ct_bits, meet_all

DEFAULT_ACCEPT = "no forward chain judges these packets (netfilter forwards them by default)"
# the hooks after forward whose filter chains can still drop a forwarded packet
AFTER_FORWARD = ("postrouting", "egress")
NAT_DROPS = ("drops in a nat chain, which the kernel may not run (it runs nat chains only for a connection's "
             "first packet, and only once a nat statement exists)")


@dataclass
class Judge:
    """One base chain on the way out, with its decisions over the packets it sees (`scope`).
    `known`: whether it surely sees them (an egress chain whose device is not listed may not:
    its drops are uncertain)."""

    table: Table
    chain: Chain
    scope: Space
    result: ChainResult
    known: bool = True
    names_grants: bool = True  # a forward chain's accept names the region; later hooks keep that name


def forward_chains(reading: Reading) -> list[Judge]:
    """Each base chain a forwarded packet passes after routing, in the path's order."""
    judges = [_judge(reading, table, chain, names_grants=True) for table, chain in reading.base_chains("forward", "filter")]
    for hook in AFTER_FORWARD:
        judges += [_judge(reading, table, chain, names_grants=False) for table, chain in reading.base_chains(hook, "filter")]
    return judges + _source_nat_drops(reading)


def _source_nat_drops(reading: Reading) -> list[Judge]:
    """Postrouting nat chains that drop: snat and masquerade let the packet on (read as accept),
    and what they drop of new connections (the only packets a nat chain sees) is judged both
    ways, like the drops of prerouting nat chains."""
    judges = []
    first_packets = reading.full.make(ct=ct_bits("new"))
    for table, chain in reading.base_chains("postrouting", "nat"):
        passing = replace(table, chains=tuple(replace(c, rules=tuple(_nat_passes(r) for r in c.rules)) for c in table.chains))
        scope = reading.scope(table, chain)[0].intersect(first_packets)
        result = walk(reading, passing, passing.chain(chain.name), Remaining(scope), depth=0)
        if result.dropped or chain.policy == "drop":
            reading.note_unmodelled(chain_name(table, chain), NAT_DROPS)
            result.uncertain_drops |= {id(g) for g in result.dropped}
            # not known: its drops are uncertain, and with a drop policy it may not be on the way at all
            judges.append(Judge(table, chain, scope, result, known=False, names_grants=False))
    return judges


def _nat_passes(rule: Rule) -> Rule:
    """A postrouting nat rule as the filtering sees it: a translation (snat, masquerade: actions
    fwmatrix does not model) lets the packet on, but not certainly by this rule (an unknown
    anchor may translate or not): it hides no later rule from the shadowed judgement."""
    return replace(rule, action=UnsureVerdict("accept")) if isinstance(rule.action, UnmodelledAction) and rule.action.terminal else rule


def _judge(reading: Reading, table: Table, chain: Chain, names_grants: bool) -> Judge:
    scope, known = reading.scope(table, chain)
    result = walk(reading, table, chain, Remaining(scope), depth=0)
    if not known:
        result.uncertain_drops |= {id(g) for g in result.dropped}
    return Judge(table, chain, scope, result, known, names_grants)


def combine(reading: Reading, judges: list[Judge], upper: bool, covered: bool = True) -> tuple[list[Grant], Space | None]:
    """Forwarded packets, by the rule that let them through; and, when `covered`, the same set in
    fewer boxes (the chains' covers, chains.py), or None where a chain's walk has none.

    A packet is forwarded when every base chain that sees it lets it pass.
    Each chain is evaluated over the packets it sees; of a chain with policy
    drop only its explicit accepts pass, of a chain with policy accept
    everything but its explicit drops. Grants may overlap (the forwarded set
    is their union); the explicit accept of the latest forward chain names
    the region's rule. With `upper`, what rules fwmatrix cannot model may let
    pass counts as passing and only their certain drops drop: what may be
    forwarded at most. The cover goes through the same steps as the grants'
    union: each is an intersection, a subtraction or a union of sets."""
    grants = [Grant(reading.full, DEFAULT_ACCEPT)]
    cover: Space | None = reading.full if covered else None
    for judge in judges:
        table, chain, result, scope = judge.table, judge.chain, judge.result, judge.scope
        if upper and not judge.known and chain.policy == "drop":
            continue  # may not be on these packets' way at all
        accepted = result.accepted + (result.maybe_accepted if upper else [])
        dropped_grants = [d for d in result.dropped if not (upper and id(d) in result.uncertain_drops)]
        outside = [Grant(g.space.subtract(scope), g.origin) for g in grants]
        inside_grants = [Grant(g.space.intersect(scope), g.origin) for g in grants]
        passed_cover = _passed_cover(judge, upper) if cover is not None else None
        # while the cover is the one grant (the first chain), its part inside is the grant's, and
        # its accepts' whole matches meet that part in the same pass as their grants
        same = passed_cover is not None and len(grants) == 1 and grants[0].space is cover
        met: list[Box] | None = None
        if judge.names_grants:
            explicit, met = _intersect_grants(inside_grants, accepted, passed_cover if same else [])
        else:
            passed = Space(reading.ifaces, [b for a in accepted for b in a.space.boxes])
            explicit = [Grant(g.space.intersect(passed), g.origin) for g in inside_grants]
        inside: list[Grant] = []
        dropped = Space(reading.ifaces, [b for d in dropped_grants for b in d.space.boxes])
        if chain.policy != "drop":
            policy_origin = f"{chain_name(table, chain)} policy accept"
            for g in inside_grants:
                rest = g.space.subtract(dropped)
                if rest:
                    named = judge.names_grants and g.origin == DEFAULT_ACCEPT
                    inside.append(Grant(rest, policy_origin if named else g.origin))
        if cover is not None:
            inside_cover = inside_grants[0].space if same else cover.intersect(scope)
            cover = _cover_after(cover, inside_cover, judge, dropped, passed_cover, met if same else None)
        grants = [g for g in explicit + inside + outside if g.space]
    return grants, cover


def _passed_cover(judge: Judge, upper: bool) -> list[Box] | None:
    """What the chain lets pass, as its cover's boxes (None: it has none)."""
    result = judge.result
    if result.cover is None:
        return None
    return result.cover + ([b for g in result.maybe_accepted for b in g.space.boxes] if upper else [])


def _cover_after(cover: Space, inside: Space, judge: Judge, dropped: Space, passed: list[Box] | None, met: list[Box] | None) -> Space | None:
    """What `combine` does to the grants' union, done to the cover: the packets outside the
    chain's scope, and of those `inside` it what it lets pass (`met`, when worked out with the
    grants) and, with policy accept, what it does not drop."""
    if passed is None:
        return None
    if met is None:  # the chain's scope (a few boxes) meets what passes on their bounds, as _intersect_grants does
        met = [common for _, common in meet_all(inside.boxes, passed)]
    out = Space(cover.ifaces, met).union(cover.subtract(judge.scope))
    return out.union(inside.subtract(dropped)) if judge.chain.policy != "drop" else out


def upper_differs(judges: list[Judge]) -> bool:
    """Whether `combine` with `upper` can differ from without: only through what rules fwmatrix
    cannot model may let pass, drops that depend on them, and chains not surely on the way."""
    return any(j.result.maybe_accepted or j.result.uncertain_drops or not j.known for j in judges)


def _intersect_grants(grants: list[Grant], passes: list[Grant], also: list[Box]) -> tuple[list[Grant], list[Box]]:
    """Each grant cut by each pass, named by the pass's rule, in the passes' order; and the grants'
    common parts with the boxes `also` (a chain's cover: mostly the passes' own boxes, met once).
    The grants are a chain's scope as the hooks before it leave it (a few boxes), the passes its
    accepts (as many as its rules, or a set's elements): each grant box meets the passes' boxes on
    their bounds, with no index of them all that only these few boxes would ask."""
    origin_of: dict[int, str] = {}
    passing: list[Box] = []
    by_origin: dict[str, list[Box]] = {}
    for p in passes:
        by_origin.setdefault(p.origin, [])
        for box in p.space.boxes:
            origin_of[id(box)] = p.origin
            passing.append(box)
    wanted = {id(box) for box in also}
    met: list[Box] = []
    for b, common in meet_all([box for g in grants for box in g.space.boxes], passing + [box for box in also if id(box) not in origin_of]):
        origin = origin_of.get(id(b))
        if origin is not None:
            by_origin[origin].append(common)
        if id(b) in wanted:
            met.append(common)
    return [Grant(Space(grants[0].space.ifaces, boxes), origin) for origin, boxes in by_origin.items() if boxes], met
