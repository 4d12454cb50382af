"""A table as a hook runs it (audit/evaluate/reading.py): the chains its base chains reach,
each rule as that hook sees it, and the rules the hook changes nothing of as listed."""

from __future__ import annotations

from fwmatrix.audit.evaluate import interfaces_of
from fwmatrix.audit.evaluate.reading import Reading
from fwmatrix.ir import Chain, Element, Jump, Match, Rule, Ruleset, SetDef, Table, Verdict, VerdictMap

DROP = Verdict("drop")


def _table() -> Table:
    to_wan = Rule((Match(("oif",), (("wan0",),)),), DROP, origin="to wan0")
    owned = Rule((Match(("socket",), (("-m owner --uid-owner 0",),)),), DROP, origin="owned")
    plain = Rule((Match(("l4proto",), ((6,),)),), DROP, origin="plain")
    return Table("inet", "t", (
        Chain("forward", (Rule((), Jump("a")), Rule((), VerdictMap(("iif",), ((("lan0",), Jump("b", goto=True)),))),
                          Rule((), VerdictMap(("oif",), map_name="m")), owned, plain), hook="forward", policy="accept"),
        Chain("a", (Rule((), Jump("a2")),)),
        Chain("a2", (to_wan,)),
        Chain("b", (plain,)),
        Chain("c", (plain,)),  # reached through the named map only
        Chain("input only", (to_wan, plain)),
        Chain("input", (Rule((), Jump("input only")),), hook="input", policy="accept"),
    ), sets=(SetDef("m", ("oif",), (Element(("wan0",), (Jump("c"),)),), data=("verdict",)),))


def _seen(hook: str) -> Table:
    ruleset = Ruleset((_table(),))
    reading = Reading(ruleset, interfaces_of(ruleset, ["lan0", "wan0"]), assume_unmodelled_match=True)
    (table, _), = reading.base_chains(hook, "filter")
    return table


def test_a_hook_runs_the_chains_its_base_chains_reach_by_jump_goto_and_verdict_map() -> None:
    assert [c.name for c in _seen("forward").chains] == ["forward", "a", "a2", "b", "c"]
    assert [c.name for c in _seen("input").chains] == ["input only", "input"]


def test_each_rule_is_as_the_hook_sees_it_and_the_others_are_as_listed() -> None:
    listed, forward, local = _table(), _seen("forward"), _seen("input")
    # a forwarded packet has no socket: the owner match never holds, the rule decides nothing
    assert [r.action for r in forward.chain("forward").rules][3:] == [None, DROP]
    assert forward.chain("a2") == listed.chain("a2")  # the out-interface is known in forward
    # before routing no out-interface is known: `oifname "wan0"` never matches
    assert [r.action for r in local.chain("input only").rules] == [None, DROP]
    assert local.chain("input only").rules[1] == listed.chain("input only").rules[1]
