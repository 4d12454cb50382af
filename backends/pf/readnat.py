"""Reading pf's source NAT back: a postrouting nat chain of `snat`/`masquerade` (the audit's
fwmatrix/audit/snat.py judges it as it judges nftables' and iptables').

pf translates on the rule that creates the state: a `pass out ... nat-to A` translates exactly
the packets it passes, which are the packets the out chain accepts by that rule. So the
postrouting chain is the out chain itself with its verdicts turned into translations: an
accept by a `pass out ... nat-to A` is `snat to A` (when A is one address of the rule's
family) or `masquerade` (`nat-to (IF)` on a rule `out on IF`, IF's address); an accept by
any other rule leaves the source untranslated, and so does a block (the packet never
leaves: the out chain drops it, and the evaluator does not model drops in nat chains).
Old-style `nat` rules (FreeBSD) translate before the filter rules, first match deciding: they
head the chain in file order (`no nat`: untranslated). What fwmatrix cannot tell exactly
becomes an unmodelled action, an unknown translation (a `nat` finding where it meets an
opening): a `nat-to` or `nat ->` to a pool, a table, another interface or of another family;
rules it already cannot judge; and the other translations made before the filter rules
decide (`nat pass`, binat, and a `match ... nat-to` that a later rule may replace, or that a
quick pass before it skips: a sole one heads the chain as its translation).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fwmatrix.backends.pf.syntax import _Rule, _Target
from fwmatrix.backends.pf.tags import _applies
from fwmatrix.ir import Action, Jump, Masquerade, Match, Rule, Snat, UnmodelledAction, Verdict

if TYPE_CHECKING:
    from fwmatrix.backends.pf.convert import _Builder


def source_nat_chain(builder: _Builder, out_rules: list[Rule]) -> list[Rule]:
    """The postrouting nat chain's rules (none when the ruleset translates no source)."""
    before = builder.reader.source_nats + [r for r in builder.rules if r.action == "nat" or (r.snat and r.action != "pass")]
    if not before and not any(r.snat for r in builder.rules):
        return []
    out: list[Rule] = []
    old_style = {id(r) for r in builder.reader.source_nats}
    for nat in before:
        condition = nat_condition(nat)
        unknown = UnmodelledAction(f"{nat.origin} translates the source before the filter rules decide: fwmatrix does not follow it")
        for chain in ("out", "in"):
            if _applies(condition, chain):
                emitted = builder._emit(condition, chain, unknown, nat.origin)
                exact = _old_style if id(nat) in old_style else _sole_match_nat
                if chain == "out":
                    emitted = [replace(r, action=exact(builder, nat, r) or unknown) for r in emitted]
                out += emitted
                break
    if any(r.snat and r.action == "pass" for r in builder.rules):  # else the out rules translate nothing: no copy of them
        for rule in out_rules:
            out.append(replace(rule, action=_translation(builder, rule, builder._decided_by.get(id(rule)))))
    return out


def nat_condition(nat: _Rule) -> list[_Rule]:
    """The packets a translation rule matches, as a rule that only matches."""
    return [replace(p, action="match", snat=False, nat_to=None, tag=None, rdr=None, passes=False) for p in nat.parts]


def _translation(builder: _Builder, rule: Rule, passing: _Rule | None) -> Action:
    action = rule.action
    if isinstance(action, Jump):  # an out rule that sees a translated source (natout.py): it translates nothing itself
        if any(r.snat and r.action == "pass" for r in builder.rules):
            return UnmodelledAction(f"{rule.origin} leaves some packets to later rules, which may translate them: fwmatrix does not follow it")
        return Verdict("accept")
    if isinstance(action, Verdict) and action.kind in ("drop", "reject"):
        return Verdict("accept")  # the packet does not leave: untranslated (the forward chain drops it; a nat chain's drop is not modelled)
    if passing is None or not passing.snat or not isinstance(action, Verdict) or action.kind != "accept":
        return action
    target = passing.nat_to
    if target is not None and passing.direction == "out":
        exact = _target_action(builder, passing, target, _family(rule))
        if exact is not None:
            return exact
    text = target.text if target is not None else "binat-to"
    return UnmodelledAction(f"{passing.origin} translates the source to {text}: fwmatrix cannot tell to which address")


def _old_style(builder: _Builder, nat: _Rule, rule: Rule) -> Action | None:
    """An old-style `nat on IF ... -> TARGET` (FreeBSD; OpenBSD before 4.7) translates every
    packet it matches, the first such rule deciding (`no nat`: untranslated): as a nat chain
    does. Exact for one address of the rule's family and for `(IF)` on a rule `on IF` (see
    `_translation`); None for the others (a pool, a table, a port, `binat`)."""
    if not nat.snat:
        return Verdict("accept")  # `no nat`: leaves the nat rules untranslated
    if nat.action != "nat" or nat.passes or nat.rdr is None:
        return None
    return _target_action(builder, nat, nat.rdr, _family(rule))


def _sole_match_nat(builder: _Builder, nat: _Rule, rule: Rule) -> Action | None:
    """A `match out ... nat-to T` translates every packet it matches that then leaves, when
    nothing else can decide that: no other translation of the source (nat-to, binat, old-style
    nat), no rules fwmatrix cannot see (anchors, which may hold those), and no quick pass
    before it (its packets would leave untranslated). As a pass rule's nat-to otherwise."""
    if nat.action != "match" or nat.direction != "out" or nat.nat_to is None or nat.parents or builder.reader.source_nats:
        return None
    at = builder._file_position[id(nat)]
    for k, item in enumerate(builder.flat):
        if item is nat:
            continue
        if not isinstance(item, _Rule) or item.snat or item.binat or item.action == "nat":
            return None  # an anchor or another translation
        if k < at and item.quick and item.action == "pass" and _applies(item.parts, "out"):
            return None
    return _target_action(builder, nat, nat.nat_to, _family(rule))


def _target_action(builder: _Builder, translating: _Rule, target: _Target, family: int | None) -> Action | None:
    """The nat chain's action for a translation to `target` by a rule (`on` its interfaces) of a
    packet of `family`: a snat to one address of the family, a masquerade for `(IF)` or `(IF:0)`
    on a rule `on IF` (IF with at most one address of each family, or its addresses not given:
    netfilter takes the first), IF also a group whose one member is known (`on egress ...
    nat-to (egress)`); None for the others (pools, tables, ports, other interfaces)."""
    if target.port is not None:
        return None
    interface = _interface(target.text)  # `(IF)` follows IF's address even where it is known now
    if interface is not None:
        on = translating.on or ()
        # `(GROUP)` is its members' addresses: one member's when the group has one (egress, often)
        members = builder.reader.groups.get(interface, (interface,))
        if len(members) == 1 and len(on) == 1 and on[0].name == members[0] and not on[0].negate and not on[0].group \
                and _one_address(builder, members[0]):
            return Masquerade()
        return None
    if target.address is not None and target.address.version == family:
        return Snat(family, target.address)
    return None


def _family(rule: Rule) -> int | None:
    for match in rule.matches:
        if not isinstance(match, Match):
            continue
        for name in match.fields:
            if name == "nfproto" and len(match.values) == 1:
                return int(match.values[0][0])
            if name.startswith("ip6."):
                return 6
            if name.startswith("ip."):
                return 4
    return None


def _interface(text: str) -> str | None:
    """`(IF)`: the interface's address as it is when the packet leaves (no modifier but `:0`,
    its first address)."""
    inner = text.replace(" ", "")
    if not (inner.startswith("(") and inner.endswith(")")):
        return None
    name = inner[1:-1].removesuffix(":0")
    return name if name and all(ch.isalnum() or ch in "_.-" for ch in name) else None


def _one_address(builder: _Builder, interface: str) -> bool:
    """netfilter's masquerade takes the interface's first address; pf's `(IF)` a pool of all of
    them: the same when IF has at most one address of each family, or its addresses are not given."""
    known = builder.reader.own.interface([interface], "")
    if known is None:
        return True
    return all(sum(n.size for n in known.iter_cidrs() if n.version == v) <= 1 for v in (4, 6))


__all__ = ["source_nat_chain"]
