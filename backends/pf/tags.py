"""What `tagged T` stands for, in the in and the out pass: a translation (netfilter's
`ct status dnat`), an input interface, both, or nothing exact (unmodelled); and the small
predicates on rules the converter (convert.py) shares with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from fwmatrix.backends.pf.overlap import _Overlap
from fwmatrix.backends.pf.syntax import _Rule
from fwmatrix.ir import Match, Rule, Unmodelled, UnmodelledAction, Verdict

_TRANSLATED = Match(("ct.status",), (("dnat",),))
_UNTRANSLATED = Match(("ct.status",), (("dnat",),), negate=True)
Alts = list[tuple[Match | Unmodelled, ...]]  # a union of conjunctions


def _condition(nat: _Rule) -> list[_Rule]:
    """What a translation rule matches, as a rule that translates nothing."""
    return [replace(p, action="match", snat=False, nat_to=None, tag=None, rdr=None, passes=False) for p in nat.parts]


def _applies(parts: Iterable[_Rule], chain: str) -> bool:
    """Whether the rule is evaluated in this chain ('nat' is the in pass, before translation)."""
    direction = "out" if chain == "out" else "in"
    return all(p.direction in (None, direction) for p in parts)


def _verdict(rule: _Rule) -> Verdict | UnmodelledAction:
    """A pass rule with state limits passes, or drops once they are reached (pf.conf(5),
    STATEFUL TRACKING OPTIONS): it decides either way, never leaves the packet to other rules."""
    if rule.action == "pass" and rule.limited:
        return UnmodelledAction(f"{rule.limited} (pass, or drop past them)")
    return Verdict("accept") if rule.action == "pass" else Verdict("reject" if rule.reject else "drop")


def _is_pass_rdr(rule: _Rule) -> bool:
    return rule.action == "pass" and rule.rdr is not None


def _passes_in(rule: _Rule) -> bool:
    """A rule that can pass a packet on the way in (and set its tag)."""
    return rule.action == "pass" or (rule.action == "rdr" and rule.passes)


def _translates_and_passes(rule: _Rule) -> bool:
    """`rdr pass` and `pass ... rdr-to`: the translated packet skips the rest of the in pass."""
    return (rule.action == "rdr" and rule.passes) or _is_pass_rdr(rule)


def _aside(origin: str, what: str) -> str:
    """The origin of an IR rule made beside a source rule (its replies, its translated packets):
    the evaluator tells rules apart by origin, and these are judged apart from the rule itself."""
    return f"{origin} ({what})"


@dataclass(frozen=True)
class _TagInfo:
    """What `tagged T` says in the out pass, when it says something exact: the packet came in
    on `iface` (None: any) and was translated (dnat True), was not (False), or either (None);
    except the packets of `untagged` (in rules that pass such packets without setting T),
    whose verdict is left open."""

    known: bool = False
    iface: str | None = None
    dnat: bool | None = None
    untagged: tuple[_Rule, ...] = ()

    def matches(self) -> tuple[Match, ...]:
        return (((Match(("iif",), ((self.iface,),)),) if self.iface is not None else ())
                + ((_TRANSLATED if self.dnat else _UNTRANSLATED,) if self.dnat is not None else ()))


class _Tags(_Overlap):
    """The converter's tag questions (convert._Builder is one: it holds the rules, the tags
    set where no rule shows it, and emits IR rules)."""

    rules: list[_Rule]
    _hidden: list[_Rule]
    _tags: dict[str, _TagInfo]
    _translation_tags: dict[tuple[str, str], bool]

    def _translation_tag(self, tag: str, chain: str) -> bool:
        """Does `tagged TAG`, in the in or the out pass, say exactly that the packet was translated
        (netfilter's `ct status dnat`)? When only translation rules set it, each time they
        translate (old-style rdr, `match in ... rdr-to`, a quick `pass in ... rdr-to`; not binat,
        whose outbound half tags untranslated packets), every translation rule sets it (or a
        packet translated by another would be translated but untagged), and no rule of that pass
        can replace it before the rule is reached (a non-quick or match rule setting another tag;
        a quick one ends the evaluation). In the out pass the in rule that passed the packet may
        still have replaced it: see _tag."""
        key = (tag, chain)
        if key not in self._translation_tags:
            setters = [r for r in self.rules if r.tag == tag]
            translators = [r for r in self.rules if r.rdr is not None and r.action in ("rdr", "match", "pass")]
            self._translation_tags[key] = (
                bool(setters)
                and all(not r.parents and r.direction == "in" and r.rdr is not None
                        and ((r.action == "rdr" and not r.binat) or r.action == "match" or (r.action == "pass" and r.quick))
                        for r in setters)
                and all(r.tag == tag for r in translators)
                and not any(r.tag == tag for r in self._hidden)
                and not any(r.tag not in (None, tag) and _applies(r.parts, chain) for r in self._hidden)
                and not any(r.tag not in (None, tag) and r.action not in ("rdr", "no-rdr") and (not r.quick or r.action == "match")
                            and _applies(r.parts, chain) for r in self.rules))
        return self._translation_tags[key]

    def _tag(self, tag: str) -> _TagInfo:
        """What `tagged TAG` says in the out pass (see _TagInfo).

        A translation tag (see _translation_tag): translated, except for packets an in rule
        passed while setting another tag (tags replace each other).

        An interface tag stands for IF when it is set only by rules `in on IF` and a block rule
        matches every packet in on IF (so none passes by default, untagged). Rules that pass
        packets in on IF without setting it leave their packets' verdict open. No other tag may
        be set in on IF (tags replace each other) but one, its partner, when one of the two is
        set only by rules that ask for translated packets (`tagged` a translation tag) and the
        other by rules that do not (the renderer's freebsd fwm_in_IF_dnat and fwm_in_IF):
          - the translated one says IF and translated: the partner's rules, which pass
            translated packets too, leave those open, unless each has a twin (below);
          - the plain one says IF and, when each of its rules has a twin, not translated (the
            translated packets all got the partner); else IF (the partner's packets open).
        A twin of a plain rule: a quick rule of the partner before it that matches every packet
        it matches, once translated. A translated packet meets the twin first: it never gets
        the plain tag. Translation rules setting a translation tag before the filter rules
        (old-style rdr) are no partner: the in rules replace their tag."""
        if tag in self._tags:
            return self._tags[tag]
        info = _TagInfo()
        if any(r.tag == tag for r in self._hidden):
            pass
        elif self._translation_tag(tag, "in") and self._translation_tag(tag, "out"):
            strippers = tuple(r for r in self.rules if _applies(r.parts, "in") and _passes_in(r) and r.tag not in (None, tag))
            info = _TagInfo(True, None, True, strippers)
        else:
            setters = [r for r in self.rules if r.tag == tag]
            iface = self._setters_iface(setters)
            if iface is not None and not self._passed_by_default("in", iface):
                here = [r for r in self.rules if self._may_apply_on(r, iface)]
                translated = self._need_translation(setters)
                others = {r.tag for r in here if r.tag not in (None, tag)
                          and not (r.action == "rdr" and self._translation_tag(r.tag, "in"))}  # type: ignore[arg-type]
                partner: str | None = None
                if len(others) == 1:
                    (other,) = others
                    theirs = [r for r in self.rules if r.tag == other]
                    if (not any(r.tag == other for r in self._hidden) and self._setters_iface(theirs) == iface
                            and self._need_translation(theirs) != translated):
                        partner = other
                if not others or partner is not None:
                    twins = partner is not None and (self._twinned(theirs, setters) if translated else self._twinned(setters, theirs))
                    dnat = True if translated else (False if twins else None)
                    untagged = tuple(r for r in here if _passes_in(r) and r.tag != tag and not (twins and r.tag == partner))
                    info = _TagInfo(True, iface, dnat, untagged)
        self._tags[tag] = info
        return info

    @staticmethod
    def _setters_iface(setters: Sequence[_Rule]) -> str | None:
        """The one interface all the rules setting a tag pass packets in on (plain rules, no anchor), or None."""
        names = {r.on[0].name for r in setters if r.on is not None and len(r.on) == 1 and not r.on[0].negate and not r.on[0].group}
        if setters and len(names) == 1 and not any(r.parents or r.direction != "in" or r.on is None or len(r.on) != 1 for r in setters):
            (iface,) = names
            return iface
        return None

    def _need_translation(self, setters: Sequence[_Rule]) -> bool:
        """Do all these rules ask for translated packets (`tagged` a translation tag)?"""
        return bool(setters) and all(r.tagged is not None and not r.tagged[1] and self._translation_tag(r.tagged[0], "in") for r in setters)

    def _twinned(self, plain: Sequence[_Rule], translated: Sequence[_Rule]) -> bool:
        """Has every plain rule a twin among the translated ones (see _tag)?"""
        position = {id(r): i for i, r in enumerate(self.rules)}

        def bare(r: _Rule) -> _Rule:
            return replace(r, origin="", label="", tag=None, tagged=None)

        first: dict[_Rule, int] = {}
        for r in translated:
            if r.quick:
                first.setdefault(bare(r), position[id(r)])
        for u in plain:
            at = position[id(u)]
            if first.get(bare(u), at) < at:
                continue  # the renderer's twin: the same rule, with the tags
            if not any(r.quick and position[id(r)] < at and self._covers([replace(r, tagged=None)], [u]) for r in translated):
                return False
        return True

    @staticmethod
    def _may_apply_on(rule: _Rule, iface: str) -> bool:
        """Can the rule match a packet in on `iface`? (conservative)"""
        if not _applies(rule.parts, "in"):
            return False
        if rule.on is None:
            return True
        return any(i.group or i.name == "any" or (i.name == iface) != i.negate for i in rule.on)

    def _nat_tag_alts(self, tag: str) -> Alts | None:
        """What `tagged TAG` says in the out pass when only old-style `nat` rules set it (the
        renderer's freebsd source NAT): the packet met one of them, so their conditions as the
        packet was before it (the nat rules translate the source, nothing they match on but it;
        the out rules see it after, the audit before). None when other rules set it too."""
        setters = [r for r in self._hidden if r.tag == tag]
        if not setters or any(r.tag == tag for r in self.rules) or not all(
                r.action == "nat" and not r.passes and not r.parents and r.direction == "out" for r in setters):
            return None
        nats = [r for r in self.reader.source_nats]  # type: ignore[attr-defined]  # in file order: the first that matches translates
        alts: Alts = []
        for nat in setters:
            condition = _condition(nat)
            at = next((i for i, r in enumerate(nats) if r.origin == nat.origin), None)
            if at is None:
                return None
            for earlier in nats[:at]:  # one that may take some of its packets first (and tag them otherwise): not exact
                if earlier.action != "nat" or (earlier.tag != tag and self._ifaces_may_meet(earlier.parts, nat.parts)
                                               and self._may_overlap(_condition(earlier), condition)):
                    return None
            emitted = self._emit(condition, "out", Verdict("accept"), nat.origin)  # type: ignore[attr-defined]
            alts += [tuple(r.matches) for r in emitted]
        return alts

    def _tagged_alts(self, rule: _Rule, chain: str) -> Alts:
        assert rule.tagged is not None
        tag, negate = rule.tagged
        if chain == "out" and not negate:
            by_nat = self._nat_tag_alts(tag)
            if by_nat is not None:
                return by_nat
        if chain == "out":
            info = self._tag(tag)
            if info.known:
                matches = info.matches()
                return [(replace(m, negate=not m.negate),) for m in matches] if negate else [matches]
        elif chain == "in" and self._translation_tag(tag, "in"):
            return [(_UNTRANSLATED if negate else _TRANSLATED,)]
        elif chain == "nat" and self._translation_tag(tag, "in"):
            return [()] if negate else []  # the nat chain judges packets not translated yet (see _on_image)
        if not any(r.tag == tag for r in self.rules + self._hidden):
            return [()] if negate else []  # no rule sets it: `tagged` never matches
        return [(Unmodelled(f"{'! ' if negate else ''}tagged {tag} (what the tag stands for is neither one input "
                            "interface nor the translation)"),)]

    def _tagged_unknowns(self, rule: _Rule, chain: str) -> list[Rule]:
        """Packets passed in on the tag's interface by a rule that does not set the tag (and that
        can look like this rule's packets) reach the out pass untagged: their verdict is open."""
        if rule.tagged is None or chain != "out":
            return []
        tag, _ = rule.tagged
        info = self._tag(tag)
        # only the packets of the translation status the tag says: for the others pf and the IR agree
        extra = () if info.dnat is None else ((_TRANSLATED if info.dnat else _UNTRANSLATED),)
        out: list[Rule] = []
        for u in info.untagged:
            seen = self._image(u.parts, u.rdr) if _translates_and_passes(u) and u.rdr is not None and u.rdr.address is not None else u.parts
            as_out = [replace(p, direction=None, on=None, received_on=p.on, tagged=None, tag=None) for p in seen]
            if self._may_overlap(rule.parts, as_out):
                out += self._emit(list(rule.parts[:-1]) + [replace(rule, tagged=None)] + as_out, "out", UnmodelledAction(
                    f"tagged {tag}: packets passed in by {u.origin} do not carry it"), _aside(rule.origin, "untagged"), extra=extra)
        return out

