"""Whether a packet is being bridged: iptables `-m physdev --physdev-is-bridged`.

With bridge netfilter, a frame bridged between two ports of a bridge passes the forward
hook with the bridge as both its in- and its out-interface. A routed packet is never
bridged there (the bridge decides its out-port later). So the test holds for no packet
whose in- and out-interfaces differ, exactly; for one whose interfaces are the same it
may hold (a bridge) or not (a hairpin route), and is judged both ways there.
"""

from __future__ import annotations

from dataclasses import replace

from fwmatrix.ir import Match, Rule, Unmodelled

FIELD = "physdev.bridged"
MAYBE = "whether a packet in and out of the same interface is bridged (-m physdev --physdev-is-bridged)"


def bridged_parts(rule: Rule, names: tuple[str, ...]) -> list[Rule]:
    """The rule as parts with disjoint packets without its `physdev.bridged` match (`names`:
    the interface universe); the rule itself when it has none."""
    index = next((i for i, m in enumerate(rule.matches) if isinstance(m, Match) and m.fields == (FIELD,)), None)
    if index is None:
        return [rule]
    match = rule.matches[index]
    assert isinstance(match, Match)
    rest = rule.matches[:index] + rule.matches[index + 1:]
    same = Match(("iif", "oif"), tuple((name, name) for name in names))
    parts = [replace(rule, matches=rest + (same, Unmodelled(MAYBE)))]
    if match.negate:  # in and out of different interfaces: routed, never bridged
        parts.append(replace(rule, matches=rest + (replace(same, negate=True),)))
    return [part for p in parts for part in bridged_parts(p, names)]
