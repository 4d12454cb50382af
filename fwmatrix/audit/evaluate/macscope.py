"""Where a ruleset tests each MAC source: the in-interfaces of the packets that can meet such a rule.

An interface need only tell apart the MACs that rules its packets reach test
(intervals.Interfaces): on the others a MAC is one of "any other MAC", at one
atom's cost instead of one per MAC. A rule's packets come in by the interfaces its
chain is reached with (a base chain: any; a chain jumped to: those of the jumping
rule, narrowed by its `iif` match), narrowed by its own `iif` match. Whatever this
cannot follow (a verdict map's jump, a set of MACs, an interface wildcard) counts as
any interface: a scope may be wider than needed, never narrower, or a rule would
miss a sender it tests.
"""

from __future__ import annotations

from fwmatrix.ir import Jump, Match, Rule, Ruleset, Table, VerdictMap

FIELD = "ether.saddr"
Scope = frozenset[str] | None  # interface names; None: any


def mac_scopes(ruleset: Ruleset) -> dict[str, Scope]:
    """MAC -> the interfaces whose packets may meet a rule that tests it."""
    scopes: dict[str, Scope] = {}

    def widen(mac: str, names: Scope) -> None:
        if mac in scopes and (scopes[mac] is None or names is None):
            scopes[mac] = None
        else:
            scopes[mac] = names if mac not in scopes else scopes[mac] | names  # type: ignore[operator]

    for table in ruleset.tables:
        for set_def in table.sets:  # looked up from anywhere: any interface
            for position in (i for i, f in enumerate(set_def.key) if f == FIELD):
                for element in set_def.elements:
                    widen(str(element.key[position]), None)
        reach = _reach(table)
        for chain in table.chains:
            for rule in chain.rules:
                keys = [(m.fields, m.values) for m in rule.matches if isinstance(m, Match)]
                if isinstance(rule.action, VerdictMap):
                    keys.append((rule.action.fields, tuple(k for k, _ in rule.action.entries)))
                for fields, values in keys:
                    for position in (i for i, f in enumerate(fields) if f == FIELD):
                        for key in values:
                            # a chain nothing reaches: its rules never run (an empty scope)
                            widen(str(key[position]), _narrowed(reach.get(chain.name, frozenset()), rule))
    return scopes


def _reach(table: Table) -> dict[str, Scope]:
    """Chain -> the interfaces its packets may come in by; chains nothing reaches are left out.
    A verdict map's jumps are not followed: their chains count as reached from any interface."""
    reach: dict[str, Scope] = {chain.name: None for chain in table.chains if chain.hook is not None}
    for chain in table.chains:
        for rule in chain.rules:
            if isinstance(rule.action, VerdictMap):
                verdicts = [data for _, data in rule.action.entries]
                if rule.action.map_name is not None:
                    verdicts += [e.data[0] for e in table.set(rule.action.map_name).elements if e.data]
                reach.update((v.chain, None) for v in verdicts if isinstance(v, Jump))
    changed = True
    while changed:  # scopes only grow, over finitely many names
        changed = False
        for chain in table.chains:
            if chain.name not in reach:
                continue
            for rule in chain.rules:
                if not isinstance(rule.action, Jump):
                    continue
                target, names = rule.action.chain, _narrowed(reach[chain.name], rule)
                old = reach.get(target, frozenset())
                new = None if old is None or names is None else old | names
                if target not in reach or new != old:
                    reach[target] = new
                    changed = True
    return reach


def _narrowed(scope: Scope, rule: Rule) -> Scope:
    """The scope narrowed by the rule's plain `iif` matches (a wildcard or a negation narrows nothing)."""
    for match in rule.matches:
        if isinstance(match, Match) and match.fields == ("iif",) and match.set_name is None and not match.negate:
            names = frozenset(str(key[0]) for key in match.values)
            if any(name.endswith("*") for name in names):
                continue
            scope = names if scope is None else scope & names
    return scope
