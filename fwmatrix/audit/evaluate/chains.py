"""Walking one chain: its rules in order over the packets still undecided.

Accept, drop, reject and DNAT decide the packets a rule hits, and later rules
no longer see them; return hands them back to the calling chain undecided;
a jump walks the target chain over them and keeps what it did not decide, a
goto hands them over for good; a verdict map takes the action of the entry
whose key matches. The walk gathers the chain's explicit decisions in a
`ChainResult`; what its policy does is the caller's business (see forward).

It also gathers the accepted packets a second time, in fewer and larger boxes
(`ChainResult.cover`): each accept's whole match within the packets that enter
the chain, less what earlier decisions other than accepts took. The union is
the same set as the grants'. Take such a packet of accept rule i's match: if
no earlier rule took it, rule i did (it is in i's grant); else the first
earlier rule that took it was an accept, and it is in that rule's grant. A grant names the rule
that let its packets through, and is cut by every earlier rule; the cover is
what the comparison asks "is this opening forwarded?" of, where a network rule
holds a network opening in one box instead of thousands of pieces.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

from fwmatrix.audit.evaluate.effective import DnatRegion, EvaluationError, Grant, Note
from fwmatrix.audit.evaluate.matches import exact_parts, key_space, rule_space
from fwmatrix.audit.evaluate.reading import Reading
from fwmatrix.ir import Chain, Dnat, DnatMap, Jump, Log, Masquerade, Notrack, Redirect, Rule, Snat, Table, UnmodelledAction, Verdict, VerdictMap
from fwmatrix.matrix.model import PortRange
from fwmatrix.space import V4_ALL, V6_ALL, Box, BoxIndex, Interfaces, Remaining, Space, addr_interval, subtract_boxes

MODELLED_VERDICTS = ("accept", "drop", "reject", "return", "continue")
MAX_DEPTH = 64  # jumps deeper than this are a loop (the kernel refuses loops too)


@dataclass(frozen=True)
class UnsureVerdict(Verdict):
    """A verdict standing in for an action fwmatrix cannot model where only the verdict
    matters (a postrouting nat chain's unknown translation lets the packet on, see
    forward._nat_passes): the walk takes it, but what it decides is never certain, so it
    shadows no later rule (an anchor whose rules are not given may translate, or not)."""


@dataclass
class ChainResult:
    accepted: list[Grant] = field(default_factory=list)
    dropped: list[Grant] = field(default_factory=list)
    dnats: list[DnatRegion] = field(default_factory=list)
    maybe_accepted: list[Grant] = field(default_factory=list)  # what unmodelled rules may let pass
    notracked: list[Grant] = field(default_factory=list)  # what notrack rules take out of connection tracking
    maybe_notracked: list[Grant] = field(default_factory=list)  # what unmodelled actions may take out of it
    uncertain_drops: set[int] = field(default_factory=set)  # ids of the drops that depend on unmodelled constructs
    # `accepted`'s union in other boxes (see the module's doc); None once `accepted` is changed after the
    # walk (prerouting's untracked reading): while a walk runs, its results always have one
    cover: list[Box] | None = field(default_factory=list)

    def absorb(self, other: ChainResult) -> None:
        """A jumped-to chain's walk, taken into this one's."""
        self.accepted += other.accepted
        self.cover += other.cover  # type: ignore[operator]  # in place: a copy per jump made many chains quadratic
        self.dropped += other.dropped
        self.dnats += other.dnats
        self.maybe_accepted += other.maybe_accepted
        self.notracked += other.notracked
        self.maybe_notracked += other.maybe_notracked
        self.uncertain_drops |= other.uncertain_drops

    def drop(self, grant: Grant, uncertain: bool) -> None:
        self.dropped.append(grant)
        if uncertain:
            self.uncertain_drops.add(id(grant))

    def decided_space(self, ifaces: Interfaces) -> Space:
        return Space(ifaces, [b for g in self.accepted for b in g.space.boxes] + self.refused_space(ifaces).boxes)

    def refused_space(self, ifaces: Interfaces) -> Space:
        """What the walk decided other than by accepting: dropped, or translated."""
        return Space(ifaces, [b for g in self.dropped for b in g.space.boxes] + [b for d in self.dnats for b in d.space.boxes])


def walk(reading: Reading, table: Table, chain: Chain, remaining: Remaining, depth: int) -> ChainResult:
    """The chain's decisions over `remaining` (the packets that enter it)."""
    if depth > MAX_DEPTH:
        raise EvaluationError(f"jumps nest deeper than {MAX_DEPTH} from {chain_name(table, chain)}: a loop?")
    result = ChainResult()
    entry = remaining.base
    certain = _CertainRemaining(entry, remaining)
    wholes = _Wholes(entry, result)
    for index, whole in enumerate(chain.rules):
        if whole.action is None:
            continue  # decides nothing (a counter, a log, a mark): its matches cannot change a verdict
        origin = whole.origin or f"{chain_name(table, chain)} rule {index + 1}"
        matched = Space.empty(reading.ifaces)
        any_hit = False
        for rule in exact_parts(whole, reading.own, reading.ifaces.names):  # parts with disjoint packets (see matches.exact_parts)
            notes_before = reading.notes_by_rule.get(origin, 0)
            _note_unmodelled_action(reading, table, rule.action, origin)
            found = rule_space(reading, table, rule, origin)
            if found is None:
                continue
            match, uncertain = found
            match = _scope(reading, rule.action, match)
            within_entry, hit = remaining.split(match)
            touched_before, unsure_before = len(reading.touched), reading.unsure_decisions
            recorder = _Recording(remaining, wholes, match, within_entry)
            if hit:
                any_hit = True
                if reading.observer is not None:  # fwmatrix query's trace; None in the audit
                    reading.observer.matched(reading, table, chain, origin, rule, hit)
                _act(_Site(reading, table, origin, uncertain, result, depth), rule.action, hit, match, recorder)
            if reading.notes_by_rule.get(origin, 0) > notes_before:
                certain.undecided(recorder.removed)  # before asking: the rule's own removals are not certain
                _judge_both_ways(reading, result, rule, origin, certain.remaining().intersect(match))
            elif len(reading.touched) == touched_before and reading.unsure_decisions == unsure_before:
                # decided whatever unmodelled constructs do (a jump counts when its chain had none)
                for decided in recorder.removed:
                    certain.decide(decided)
            else:
                certain.undecided(recorder.removed)
            matched = matched.union(match)
        # shadowed only if rules that decide whatever unmodelled constructs do cover it
        if not any_hit and _is_terminal(whole.action) and entry.intersect(matched) and not certain.remaining().intersect(matched):
            reading.shadowed.append(Note(origin, "earlier rules in the chain decide every packet it would match"))
    if depth == 0 and reading.observer is not None:
        reading.observer.walked(reading, table, chain, entry, result)
    return result


def _judge_both_ways(reading: Reading, result: ChainResult, rule: Rule, origin: str, reach: Space) -> None:
    """The one place where a rule with a construct fwmatrix cannot model (every rule that
    `Reading.note_unmodelled` names, whatever the construct) gets its consequences: every
    packet it can reach is uncertain, so none counts as certainly forwarded (an opening
    there is `missing`), and unless it can only drop them, or lets the chain go on (a
    non-terminal action: later rules decide), it may let them on (what a forward chain
    then passes beyond the openings is `excess`, medium at least)."""
    reading.touched.extend(reach.boxes)
    reading.doubtful.append(Grant(reach, origin))
    only_drops = isinstance(rule.action, Verdict) and rule.action.kind in ("drop", "reject")
    goes_on = isinstance(rule.action, UnmodelledAction) and not rule.action.terminal
    if not (only_drops or goes_on):
        result.maybe_accepted.append(Grant(reach, origin))


def _note_unmodelled_action(reading: Reading, table: Table, action: object, origin: str) -> None:
    """Note an action fwmatrix cannot model before the rule is walked, so that the rule is
    judged both ways even where none of the packets it may take reach it in this reading."""
    if isinstance(action, UnmodelledAction):
        reading.note_unmodelled(origin, action.text)
    elif isinstance(action, Verdict) and action.kind not in MODELLED_VERDICTS:
        reading.note_unmodelled(origin, f"verdict '{action.kind}'")
    elif isinstance(action, (VerdictMap, DnatMap)) and action.map_name and table.set(action.map_name).dynamic:
        reading.note_unmodelled(origin, f"a lookup of @{action.map_name}, a map the packet path adds to (it may map any key to anything)")


def _scope(reading: Reading, action: object, match: Space) -> Space:
    """The packets a rule's action applies to: a DNAT of one address family (`dnat ip to`
    in an inet table) does nothing to the other family's packets, which go on to the
    next rule as if the rule did not match."""
    if isinstance(action, (Dnat, DnatMap)):
        return match.intersect(reading.version_space(action.family))
    return match


def chain_name(table: Table, chain: Chain) -> str:
    return f"{table.family} {table.name} {chain.name}"


class _CertainRemaining:
    """The packets entering a chain minus what earlier rules decide whatever
    unmodelled constructs do (a packet they decide never reaches a later rule,
    in any reading). While every removal so far was such a decision, that is the
    walk's own `Remaining` (`walked`: the same base, the same spaces removed), and
    no second index of them is filed; else built when a rule first asks."""

    def __init__(self, entry: Space, walked: Remaining):
        self.entry = entry
        self.walked: Remaining | None = walked
        self._decided: list[Space] = []
        self._remaining: Remaining | None = None

    def undecided(self, removed: list[Space]) -> None:
        """The walk removed these spaces, not decided whatever unmodelled constructs do."""
        if removed:
            self.walked = None

    def remaining(self) -> Remaining:
        if self.walked is not None:
            return self.walked
        if self._remaining is None:
            self._remaining = Remaining(self.entry)
            for decided in self._decided:
                self._remaining.remove(decided)
        return self._remaining

    def decide(self, space: Space) -> None:
        if self._remaining is None:
            self._decided.append(space)
        else:
            self._remaining.remove(space)


class _Recording:
    """A chain's undecided packets, remembering what one rule's action removed from them;
    an accept tells the walk's cover what it took (`accept`), any other removal stops the
    whole matches of later accepts that meet it from counting (`remove`)."""

    def __init__(self, remaining: Remaining, wholes: _Wholes, match: Space, within_entry: Space):
        self.remaining = remaining
        self.wholes = wholes
        self.match, self.within_entry = match, within_entry  # the rule's match, and of it what entered the chain
        self.removed: list[Space] = []

    def intersect(self, space: Space) -> Space:
        return self.remaining.intersect(space)

    def accept(self, hit: Space, match: Space) -> None:
        """`hit` (the undecided packets of `match`) accepted, and `match` removed."""
        self.wholes.accepted(hit, self.within_entry if match is self.match else self.wholes.entry.intersect(match))
        self.removed.append(match)
        self.remaining.remove(match)

    def remove(self, space: Space, refused: Space | None = None) -> None:
        """`space` removed by a decision other than an accept (or, where `refused` is given, by
        that decision and by accepts: what a jumped-to chain decided)."""
        self.removed.append(space)
        self.remaining.remove(space)
        self.wholes.refused(space if refused is None else refused)


class _Wholes:
    """The walk's `ChainResult.cover`: each accept's whole match within the chain's entry, less
    what decisions other than accepts took before it (`refusals`: a drop's, a return's whole
    match: more than it took, which only leaves more to the grants)."""

    def __init__(self, entry: Space, result: ChainResult):
        self.entry = entry
        self.result = result
        self.refusals: BoxIndex | None = None  # what those decisions took, while any

    def accepted(self, hit: Space, within_entry: Space) -> None:
        """`hit` accepted, of a rule whose match has `within_entry` of the packets entering the chain."""
        whole = within_entry.boxes
        if self.refusals is not None:
            whole = subtract_boxes(whole, self.refusals)
            if len(whole) > len(hit.boxes):
                whole = hit.boxes  # cut finer than the grant: the grant is the cheaper cover
        self.result.cover += whole  # type: ignore[operator]  (a walk's result has one)

    def refused(self, space: Space) -> None:
        if not space:
            return
        if self.refusals is None:
            self.refusals = BoxIndex()
        for box in space.boxes:
            self.refusals.add(box)


@dataclass(frozen=True)
class _Site:
    """Where an action runs: its rule (named by `origin`; `uncertain` when it has a
    match fwmatrix cannot model), the table, the chain's result, the jump depth."""

    reading: Reading
    table: Table
    origin: str
    uncertain: bool
    result: ChainResult
    depth: int


# -- actions: `hit` is what the rule's `match` selects of the undecided packets --------

def _act(site: _Site, action: object, hit: Space, match: Space, remaining: _Recording) -> None:
    if isinstance(action, DnatMap) and action.map_name and site.table.set(action.map_name).dynamic:
        # any key may map to any address of its family (noted by _note_unmodelled_action)
        anywhere = V4_ALL if action.family == 4 else V6_ALL
        site.result.dnats.append(DnatRegion(hit, anywhere, None, site.origin, uncertain=True))
        remaining.remove(match)
    elif isinstance(action, VerdictMap) and action.map_name and site.table.set(action.map_name).dynamic:
        _decide_unmodelled(site, hit, match, remaining)  # any key may map to any verdict (noted by _note_unmodelled_action)
    elif isinstance(action, Verdict):
        _verdict(site, action, hit, match, remaining)
    elif isinstance(action, Jump):
        _jump(site, action, hit, match, remaining)
    elif isinstance(action, VerdictMap):
        _verdict_map(site, action, match, remaining)
    elif isinstance(action, Notrack):
        site.result.notracked.append(Grant(hit, f"{site.origin} (notrack)"))  # the chain goes on
    elif isinstance(action, Dnat):
        site.result.dnats.append(DnatRegion(hit, (addr_interval(action.address),), action.port, site.origin, site.uncertain))
        remaining.remove(match)
    elif isinstance(action, Redirect):  # a DNAT to the firewall itself: prerouting.delivered_locally
        site.result.dnats.append(DnatRegion(hit, (), action.port, site.origin, site.uncertain, local=True))
        remaining.remove(match)
    elif isinstance(action, DnatMap):
        _dnat_map(site, action, match, remaining)
    elif isinstance(action, UnmodelledAction):
        _unmodelled_action(site, action, hit, match, remaining)
    elif isinstance(action, (Snat, Masquerade)):  # a NAT statement ends its nat chain as accept does
        _verdict(site, Verdict("accept"), hit, match, remaining)
    elif isinstance(action, Log):
        pass  # counts and logs: the chain goes on
    elif action is not None:
        raise EvaluationError(f"{site.origin}: no evaluation for action {action!r}")


def _verdict(site: _Site, verdict: Verdict, hit: Space, match: Space, remaining: _Recording) -> None:
    if isinstance(verdict, UnsureVerdict):
        site.reading.unsure_decisions += 1
    if verdict.kind == "accept":
        site.result.accepted.append(Grant(hit, site.origin))
        remaining.accept(hit, match)
        return
    if verdict.kind in ("drop", "reject"):
        site.result.drop(Grant(hit, site.origin), site.uncertain)
    elif verdict.kind == "return":
        pass  # back to the caller, undecided
    elif verdict.kind == "continue":
        return
    else:
        site.reading.note_unmodelled(site.origin, f"verdict '{verdict.kind}'")
        return
    remaining.remove(match)


def _jump(site: _Site, jump: Jump, hit: Space, match: Space, remaining: _Recording) -> None:
    target = site.table.find_chain(jump.chain)
    if target is None:
        raise EvaluationError(f"{site.origin}: jump to a chain that does not exist: {jump.chain}")
    sub = walk(site.reading, site.table, target, Remaining(hit), site.depth + 1)
    if site.uncertain:  # reached through a match fwmatrix cannot model: so are its translations
        sub.dnats = [replace(d, uncertain=True) for d in sub.dnats]
    site.result.absorb(sub)
    if jump.goto:
        remaining.remove(match)  # what returns from a goto goes back to our caller
    else:
        remaining.remove(sub.decided_space(site.reading.ifaces), sub.refused_space(site.reading.ifaces))


def _verdict_map(site: _Site, vmap: VerdictMap, match: Space, remaining: _Recording) -> None:
    entries = vmap.entries if vmap.map_name is None else tuple((e.key, e.data[0]) for e in site.table.set(vmap.map_name).elements)
    for verdict, entry_hit, entry_space in _entry_hits(site, vmap.fields, entries, match, remaining):
        _act(site, verdict, entry_hit, entry_space, remaining)


def _dnat_map(site: _Site, dmap: DnatMap, match: Space, remaining: _Recording) -> None:
    entries = dmap.entries if dmap.map_name is None else tuple((e.key, e.data) for e in site.table.set(dmap.map_name).elements)
    for data, entry_hit, entry_space in _entry_hits(site, dmap.fields, entries, match, remaining):
        address = data[0]
        port = data[1] if len(data) > 1 else None
        if isinstance(port, int):
            port = PortRange(port, port)
        site.result.dnats.append(DnatRegion(entry_hit, (addr_interval(address),), port, site.origin, site.uncertain))  # type: ignore[arg-type]
        remaining.remove(entry_space)


def _entry_hits(site: _Site, fields: tuple[str, ...], entries: tuple, match: Space, remaining: _Recording) -> Iterator[tuple]:
    """Each map entry that takes packets: its data, the undecided packets it takes, and
    all the packets of `match` with its key. Lazy: an entry's action decides packets
    before the next entry is looked at."""
    for key, data in entries:
        entry_space = match.intersect(key_space(site.reading, fields, key))
        if not entry_space:
            continue
        entry_hit = remaining.intersect(entry_space)
        if entry_hit:
            yield data, entry_hit, entry_space


def _unmodelled_action(site: _Site, action: UnmodelledAction, hit: Space, match: Space, remaining: _Recording) -> None:
    site.reading.note_unmodelled(site.origin, action.text)
    if site.reading.assume:  # before conntrack, it may be a notrack (CT, an unknown statement)
        site.result.maybe_notracked.append(Grant(hit, f"{site.origin} (fwmatrix cannot model it: it may untrack)"))
    if action.terminal:
        _decide_unmodelled(site, hit, match, remaining)
    # else the chain goes on; what the action changes is not modelled


def _decide_unmodelled(site: _Site, hit: Space, match: Space, remaining: _Recording) -> None:
    """A verdict fwmatrix cannot tell: accept in the reading where unmodelled constructs
    match, drop (uncertain) in the other."""
    if site.reading.assume:
        site.result.accepted.append(Grant(hit, site.origin))
        remaining.accept(hit, match)
    else:
        site.result.drop(Grant(hit, site.origin), uncertain=True)
        remaining.remove(match)


def _is_terminal(action: object) -> bool:
    return isinstance(action, (Verdict, Dnat, DnatMap, Redirect)) and getattr(action, "kind", "accept") in ("accept", "drop", "reject")
