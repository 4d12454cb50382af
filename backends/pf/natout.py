"""Out rules after a source translation made before the filter rules: they see the new source.

An old-style `nat on IF ... -> A` (FreeBSD; OpenBSD before 4.7) translates before the filter
rules, the first matching nat rule deciding (`no nat`: untranslated), and a sole
`match out ... nat-to A` translates where it stands: the out rules after it match the
translated packet (pf.conf(5)). The audit knows a packet by its source as it arrived, so an
out rule that matches the source (address or port) becomes a jump to a chain of its own:

* for each translation, in pf's order, the packets it matches: when it translates to one
  known address A (`-> A`; `-> (IF)` with IF's address known), the rule matches them iff A
  is inside its source (the other conditions hold as before) — the rule's verdict, else
  `return` (the rule does not match them). A source port is kept only by `static-port`:
  otherwise a rule matching the source port is left open for them, as is every translation
  to what fwmatrix cannot tell (a pool, a table, `(IF)` with IF's address not given);
* then the packets no translation took, matched as they are.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from netaddr import IPNetwork

from fwmatrix.backends.pf.readnat import _interface, _old_style, _sole_match_nat, nat_condition
from fwmatrix.backends.pf.syntax import _Rule, _Target
from fwmatrix.backends.pf.tags import _applies, _aside, _verdict
from fwmatrix.ir import Action, Chain, Jump, Masquerade, Rule, Snat, UnmodelledAction, Verdict

if TYPE_CHECKING:
    from fwmatrix.backends.pf.convert import _Builder


def translated_before(builder: _Builder, rule: _Rule, chain: str) -> list[_Rule]:
    """The source translations pf makes before this rule sees the packet and that may meet it."""
    if chain != "out" or not any(p.src is not None or p.sport is not None for p in rule.parts):
        return []
    at = builder._file_position.get(id(rule), 0)
    nats = builder.reader.source_nats + [r for r in builder.rules if r.snat and r.action == "match" and builder._file_position[id(r)] < at]
    unconstrained = [replace(p, src=None, sport=None) for p in rule.parts]
    return [n for n in nats if _applies(n.parts, chain) and builder._ifaces_may_meet(rule.parts, n.parts)
            and builder._may_overlap(unconstrained, nat_condition(n))]


def out_rule(builder: _Builder, rule: _Rule, chain: str, name: str) -> tuple[list[Rule], Chain | None]:
    """The out chain's rules for `rule`, and the chain of its own they jump to (None: not needed)."""
    verdict = _verdict(rule)
    own = builder._emit(rule.parts, chain, verdict, rule.origin)
    nats = translated_before(builder, rule, chain)
    if not nats:
        return own, None
    old_style = {id(n) for n in builder.reader.source_nats}
    inner: list[Rule] = []
    for nat in nats:
        condition = nat_condition(nat)
        for family in (4, 6):
            family_part = _Rule(nat.origin, "match", af=family)
            aside = _aside(rule.origin, f"source translated by {nat.origin}")
            probe = builder._emit(condition + [family_part], chain, Verdict("return"), aside)
            if not probe:
                continue
            exact = (_old_style if id(nat) in old_style else _sole_match_nat)(builder, nat, probe[0])
            if exact == Verdict("accept"):  # `no nat`: matched as it is
                inner += builder._emit(list(rule.parts) + condition + [family_part], chain, verdict, rule.origin)
            else:
                action = _seen(builder, rule, nat, exact, family, verdict)
                if action is not None:
                    static = _static_port(nat)
                    base = [replace(p, src=None, sport=p.sport if static else None) for p in rule.parts]
                    inner += builder._emit(base + condition + [family_part], chain, action, aside)
            inner += probe  # what this translation took is decided above, or not matched by the rule
    inner += own
    unconstrained = [replace(p, src=None, sport=None) for p in rule.parts]
    return builder._emit(unconstrained, chain, Jump(name), rule.origin), Chain(name, tuple(inner))


def _seen(builder: _Builder, rule: _Rule, nat: _Rule, exact: Action | None, family: int, verdict: Action) -> Action | None:
    """The rule's action on the packets `nat` translates (None: it does not match them)."""
    address = _address(builder, nat, exact, family)
    unknown = UnmodelledAction(f"{rule.origin} sees the source as {nat.origin} translated it, to an address fwmatrix does not know")
    if address is None:
        return unknown
    if any(p.sport is not None for p in rule.parts) and not _static_port(nat):
        return UnmodelledAction(f"{rule.origin} matches the source port, which {nat.origin} translates (no static-port)")
    inside = [builder._contains(p.src, address) for p in rule.parts if p.src is not None]
    if any(i is None for i in inside):
        return unknown
    return verdict if all(inside) else None


def _target(nat: _Rule) -> _Target | None:
    return nat.rdr if nat.rdr is not None else nat.nat_to  # (old-style `nat ... -> T` reads T as rdr)


def _static_port(nat: _Rule) -> bool:
    target = _target(nat)
    return target is not None and target.static_port


def _address(builder: _Builder, nat: _Rule, exact: Action | None, family: int) -> IPNetwork | None:
    """The one address the translation gives packets of `family`, when it is known."""
    if isinstance(exact, Snat):
        return IPNetwork(exact.address)
    if not isinstance(exact, Masquerade):
        return None
    target = _target(nat)
    interface = _interface(target.text) if target is not None else None
    known = builder.reader.own.interface([interface], "0") if interface is not None else None
    mine = [n for n in (known.iter_cidrs() if known is not None else ()) if n.version == family]
    return mine[0] if len(mine) == 1 and mine[0].size == 1 else None


__all__ = ["out_rule", "translated_before"]
