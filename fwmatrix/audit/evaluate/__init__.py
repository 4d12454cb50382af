"""Symbolic execution of a ruleset: what it really does to forwarded packets.

The netfilter path, as the kernel runs it:
  1. prerouting, nat chains by priority: the first DNAT that matches a new
     connection translates its destination (later nat rules and chains no
     longer see it);
  2. forward: every base chain on the forward hook, of every table whose
     family sees the packet (ip: IPv4, ip6: IPv6, inet: both), in priority
     order. Within a chain the first matching rule decides; accept ends that
     chain only (the next base chain still judges the packet), drop and
     reject are final; jump/goto/return and verdict maps move between
     chains; the policy takes what no rule decided.

The result is an `Effective` policy: the regions of (post-DNAT) packets that
are forwarded, each remembering the rule that accepted it; the DNAT
mappings; the rules that can never match; and the constructs that could not
be modelled, which are judged both ways (the evaluation runs once assuming
they match and once assuming they do not).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from netaddr import IPNetwork, IPRange

from fwmatrix.ir import Chain, Dnat, DnatMap, Jump, Match, Rule, Ruleset, SetDef, Table, Unmodelled, UnmodelledAction, Verdict, VerdictMap
from fwmatrix.matrix.model import PortRange
from fwmatrix.space import (
    ADDR_ALL, CT_ALL, CT_DNAT, NO_PORT, PORT_DIM_ALL, PORT_PROTOCOLS, PORTS_ALL, PROTO_ALL, V4_ALL, V6_ALL,
    Interfaces, Intervals, Remaining, Space, addr_interval, ct_bits, iv_and, iv_norm, iv_sub, physical,
)

MAX_DEPTH = 64  # jumps deeper than this are a loop (the kernel refuses loops too)
# Fields the IR carries but packet spaces have no dimension for: a match on them
# is judged both ways, like any unmodelled construct. Of the ct status bits only
# dnat is modelled (the ct dimension knows translated connections).
UNMODELLED_FIELDS = frozenset({"sport"})
MODELLED_CT_STATUS = "dnat"
DEFAULT_ACCEPT = "no forward chain judges these packets (netfilter forwards them by default)"


@dataclass(frozen=True)
class Grant:
    """Packets a rule lets through."""

    space: Space
    origin: str


@dataclass(frozen=True)
class DnatRegion:
    """Packets (as they arrive, before translation) that a rule translates."""

    space: Space
    target: Intervals  # address interval(s) in space coordinates
    port: PortRange | None
    origin: str
    uncertain: bool = False  # the rule has a match fwmatrix cannot model: it may not translate these


@dataclass(frozen=True)
class Note:
    origin: str
    text: str


@dataclass
class Effective:
    ifaces: Interfaces
    forwarded: list[Grant]  # regions forwarded (every ct state), by the rule that accepted them
    dnats: list[DnatRegion]
    shadowed: list[Note] = field(default_factory=list)
    unmodelled: list[Note] = field(default_factory=list)
    uncertain: list[Grant] = field(default_factory=list)  # forwarded only if unmodelled rules go one way

    def forwarded_space(self) -> Space:
        out = Space.empty(self.ifaces)
        for grant in self.forwarded:
            out = out.union(grant.space)
        return out


class EvaluationError(Exception):
    pass


def interfaces_of(ruleset: Ruleset, known: list[str]) -> Interfaces:
    """The interface universe: the matrix's names and every name the ruleset uses."""
    names = set(known)
    for table in ruleset.tables:
        for set_def in table.sets:
            for position, f in enumerate(set_def.key):
                if f in ("iif", "oif"):
                    names.update(str(e.key[position]) for e in set_def.elements if not str(e.key[position]).endswith("*"))
        for chain in table.chains:
            for rule in chain.rules:
                for match in rule.matches:
                    if isinstance(match, Match):
                        for position, f in enumerate(match.fields):
                            if f in ("iif", "oif"):
                                names.update(str(k[position]) for k in match.values if not str(k[position]).endswith("*"))
                if isinstance(rule.action, VerdictMap):
                    for position, f in enumerate(rule.action.fields):
                        if f in ("iif", "oif"):
                            names.update(str(k[position]) for k, _ in rule.action.entries)
    return Interfaces.of(names)


def evaluate(ruleset: Ruleset, ifaces: Interfaces) -> Effective:
    """The effective policy. Where rules fwmatrix cannot model are involved, it
    reads them twice (they all match; none matches) and also marks every packet
    that such a rule could match: `forwarded` holds only what is forwarded
    whatever those rules do, `uncertain` what may be forwarded depending on them
    (forwarded by one reading, or within reach of such a rule that lets packets
    on), and DNAT regions behind them are flagged uncertain."""
    yes_run = _Evaluator(ruleset, ifaces, assume_unmodelled_match=True)
    yes = yes_run.run()
    if not yes.unmodelled:
        return yes
    no = _Evaluator(ruleset, ifaces, assume_unmodelled_match=False).run()
    touched = Space(ifaces, yes_run.touched)
    certain_space = yes.forwarded_space().intersect(no.forwarded_space()).subtract(touched)
    certain = [Grant(g.space.intersect(certain_space), g.origin) for g in yes.forwarded]
    maybe = [Grant(g.space.subtract(certain_space), g.origin) for g in yes.forwarded + no.forwarded + yes_run.upper]
    seen = {(d.origin, d.target, d.port) for d in yes.dnats}
    dnats = yes.dnats + [replace(d, uncertain=True) for d in no.dnats if (d.origin, d.target, d.port) not in seen]
    return Effective(
        ifaces,
        [g for g in certain if g.space],
        dnats,
        yes.shadowed,
        yes.unmodelled,
        [g for g in maybe if g.space],
    )


class _Evaluator:
    def __init__(self, ruleset: Ruleset, ifaces: Interfaces, assume_unmodelled_match: bool):
        self.ruleset = ruleset
        self.ifaces = ifaces
        self.assume = assume_unmodelled_match
        self.full = Space.full(ifaces)
        self.unmodelled: dict[str, Note] = {}
        self.shadowed: list[Note] = []
        self._families: dict[str, Space] = {}
        # what rules with unmodelled constructs could match (they are judged both ways):
        # every such packet is uncertain; those such a rule lets on may be forwarded
        self.touched: list = []
        self.upper: list[Grant] = []  # what may be forwarded at most (see _combine)

    # -- the packet path ----------------------------------------------------------

    def run(self) -> Effective:
        early, early_certain = self._early_drops()
        dnats = self._prerouting()
        chains = [(table, chain, self._chain(table, chain, Remaining(self._family_space(table)), depth=0))
                  for table, chain in self._base_chains("forward", "filter")]
        forwarded = self._combine(chains, upper=False)
        self.upper = self._combine(chains, upper=True)
        if early:
            # Packets dropped before DNAT (raw, mangle) never reach NAT or forward. The
            # regions are in arriving coordinates: exact for the DNAT regions and for
            # untranslated traffic; for translated traffic, the drop is judged on the
            # translated packet (documented in docs/audit.md).
            dnats = [replace(d, space=d.space.subtract(early)) for d in dnats]
            forwarded = [Grant(g.space.subtract(early), g.origin) for g in forwarded]
        if early_certain:
            self.upper = [Grant(g.space.subtract(early_certain), g.origin) for g in self.upper]
        return Effective(
            self.ifaces,
            [g for g in forwarded if g.space],
            [d for d in dnats if d.space],
            self.shadowed,
            list(self.unmodelled.values()),
        )

    def _early_drops(self) -> tuple[Space, Space]:
        """What filtering chains on the prerouting hook (raw, mangle) drop, and of that
        what they drop whatever unmodelled constructs do. Before DNAT (priority below
        dstnat) they see the arriving packet, after it the translated one; both are
        judged here on the packet as it arrives or is forwarded."""
        boxes, certain = [], []
        for table, chain in self._base_chains("prerouting", "filter"):
            result = self._chain(table, chain, Remaining(self._family_space(table)), depth=0)
            boxes += [b for g in result.dropped for b in g.space.boxes]
            certain += [b for g in result.dropped if id(g) not in result.uncertain_drops for b in g.space.boxes]
            if chain.policy == "drop":
                kept = Space(self.ifaces, [b for g in result.accepted + result.maybe_accepted for b in g.space.boxes])
                rest = self._family_space(table).subtract(kept).boxes
                boxes += rest
                certain += rest
        return Space(self.ifaces, boxes), Space(self.ifaces, certain)

    def _base_chains(self, hook: str, kind: str) -> list[tuple[Table, Chain]]:
        found = [
            (table, chain)
            for table in self.ruleset.tables
            if table.family in ("ip", "ip6", "inet")
            for chain in table.chains
            if chain.hook == hook and chain.type == kind
        ]
        return sorted(found, key=lambda tc: tc[1].priority)  # stable: equal priorities keep listing order

    def _family_space(self, table: Table) -> Space:
        if table.family not in self._families:
            if table.family == "ip":
                self._families["ip"] = self.full.make(src=V4_ALL, dst=V4_ALL)
            elif table.family == "ip6":
                self._families["ip6"] = self.full.make(src=V6_ALL, dst=V6_ALL)
            else:
                self._families[table.family] = self.full
        return self._families[table.family]

    def _prerouting(self) -> list[DnatRegion]:
        regions: list[DnatRegion] = []
        untranslated = Remaining(self.full.intersect(self.full.make(ct=ct_bits("new", translated=False))))
        for table, chain in self._base_chains("prerouting", "nat"):
            untranslated_in_table = untranslated.intersect(self._family_space(table))
            result = self._chain(table, chain, Remaining(untranslated_in_table), depth=0)
            for region in result.dnats:
                regions.append(region)
                untranslated.remove(region.space)
        return regions

    def _combine(self, chains: list[tuple[Table, Chain, "_ChainResult"]], upper: bool) -> list[Grant]:
        """Forwarded packets, by the rule that let them through.

        A packet is forwarded when every forward base chain of its family lets
        it pass. Each chain is evaluated over its family's packets; of a chain
        with policy drop only its explicit accepts pass, of a chain with policy
        accept everything but its explicit drops. Grants may overlap (the
        forwarded set is their union); the explicit accept of the latest chain
        names the region's rule. With `upper`, what rules fwmatrix cannot model
        may let pass counts as passing and only their certain drops drop: what
        may be forwarded at most."""
        grants = [Grant(self.full, DEFAULT_ACCEPT)]
        for table, chain, result in chains:
            family = self._family_space(table)
            accepted = result.accepted + (result.maybe_accepted if upper else [])
            dropped_grants = [d for d in result.dropped if not (upper and id(d) in result.uncertain_drops)]
            outside = [Grant(g.space.subtract(family), g.origin) for g in grants]
            explicit = _intersect_grants([Grant(g.space.intersect(family), g.origin) for g in grants], accepted)
            inside: list[Grant] = []
            if chain.policy != "drop":
                dropped = Space(self.ifaces, [b for d in dropped_grants for b in d.space.boxes])
                policy_origin = f"{_chain_name(table, chain)} policy accept"
                for g in grants:
                    rest = g.space.intersect(family).subtract(dropped)
                    if rest:
                        inside.append(Grant(rest, policy_origin if g.origin == DEFAULT_ACCEPT else g.origin))
            grants = [g for g in explicit + inside + outside if g.space]
        return grants

    # -- chains ---------------------------------------------------------------------

    def _chain(self, table: Table, chain: Chain, remaining: Remaining, depth: int) -> "_ChainResult":
        if depth > MAX_DEPTH:
            raise EvaluationError(f"jumps nest deeper than {MAX_DEPTH} from {_chain_name(table, chain)}: a loop?")
        result = _ChainResult()
        entry = remaining.base
        # what earlier rules decide whatever unmodelled constructs do: a packet they
        # decide never reaches a later rule, in any reading
        certain_decided: list[Space] = []
        certain_remaining: Remaining | None = None
        for index, rule in enumerate(chain.rules):
            if rule.action is None:
                continue  # decides nothing (a counter, a log, a mark): its matches cannot change a verdict
            found = self._rule_space(table, rule, index, chain)
            if found is None:
                continue
            match, uncertain = found
            origin = rule.origin or f"{_chain_name(table, chain)} rule {index + 1}"
            if uncertain or isinstance(rule.action, UnmodelledAction):
                if certain_remaining is None:
                    certain_remaining = Remaining(entry)
                    for decided in certain_decided:
                        certain_remaining.remove(decided)
                reach = certain_remaining.intersect(match)
                self.touched.extend(reach.boxes)
                if not isinstance(rule.action, Verdict) or rule.action.kind == "accept":
                    result.maybe_accepted.append(Grant(reach, origin))
            hit = remaining.intersect(match)
            decides = _is_terminal(rule.action)
            if not hit:
                if decides and entry.intersect(match):
                    # shadowed only if rules that decide whatever unmodelled constructs do cover it
                    if certain_remaining is None:
                        certain_remaining = Remaining(entry)
                        for decided in certain_decided:
                            certain_remaining.remove(decided)
                    if not certain_remaining.intersect(match):
                        self.shadowed.append(Note(origin, "earlier rules in the chain decide every packet it would match"))
                continue
            recorder = _Recording(remaining)
            touched_before = len(self.touched)
            self._act(table, chain, rule, origin, hit, match, recorder, result, depth, uncertain)  # type: ignore[arg-type]
            if not (uncertain or isinstance(rule.action, UnmodelledAction)) and len(self.touched) == touched_before:
                # decided whatever unmodelled constructs do (a jump counts when its chain had none)
                for decided in recorder.removed:
                    if certain_remaining is None:
                        certain_decided.append(decided)
                    else:
                        certain_remaining.remove(decided)
        if chain.hook is not None and chain.policy is not None:
            # only the chain's small side is needed: its explicit decisions (see _forward)
            result.policy = chain.policy
        return result

    def _act(self, table: Table, chain: Chain, rule: Rule, origin: str, hit: Space, match: Space,
             remaining: Remaining, result: "_ChainResult", depth: int, uncertain: bool = False) -> None:
        action = rule.action
        if action is None:
            return
        if isinstance(action, Verdict):
            if action.kind == "accept":
                result.accepted.append(Grant(hit, origin))
            elif action.kind in ("drop", "reject"):
                result.drop(Grant(hit, origin), uncertain)
            elif action.kind == "return":
                pass  # back to the caller, undecided
            elif action.kind == "continue":
                return
            else:
                self._unmodelled(origin, f"verdict '{action.kind}'")
                return
            remaining.remove(match)
            return
        if isinstance(action, Jump):
            target = _find_chain(table, action.chain)
            if target is None:
                raise EvaluationError(f"{origin}: jump to a chain that does not exist: {action.chain}")
            sub = self._chain(table, target, Remaining(hit), depth + 1)
            if uncertain:  # reached through a match fwmatrix cannot model: so are its translations
                sub.dnats = [replace(d, uncertain=True) for d in sub.dnats]
            result.absorb(sub)
            if action.goto:
                remaining.remove(match)  # what returns from a goto goes back to our caller
            else:
                remaining.remove(sub.decided_space(self.ifaces))
            return
        if isinstance(action, VerdictMap):
            entries = action.entries if action.map_name is None else _map_entries(table, action.map_name)
            for key, verdict in entries:
                entry_space = match.intersect(self._key_space(action.fields, key, table))
                if not entry_space:
                    continue
                entry_hit = remaining.intersect(entry_space)
                if entry_hit:
                    self._act(table, chain, Rule((), verdict, origin=origin), origin, entry_hit, entry_space, remaining, result, depth, uncertain)
            return
        if isinstance(action, Dnat):
            target = (addr_interval(action.address),)
            result.dnats.append(DnatRegion(hit, target, action.port, origin, uncertain))
            remaining.remove(match)
            return
        if isinstance(action, DnatMap):
            entries = action.entries if action.map_name is None else tuple((e.key, e.data) for e in table.set(action.map_name).elements)
            for key, data in entries:
                entry_space = match.intersect(self._key_space(action.fields, key, table))
                entry_hit = remaining.intersect(entry_space) if entry_space else entry_space
                if entry_hit:
                    address = data[0]
                    port = data[1] if len(data) > 1 else None
                    if isinstance(port, int):
                        port = PortRange(port, port)
                    result.dnats.append(DnatRegion(entry_hit, (addr_interval(address),), port, origin, uncertain))  # type: ignore[arg-type]
                    remaining.remove(entry_space)
            return
        if isinstance(action, UnmodelledAction):
            self._unmodelled(origin, action.text)
            if not action.terminal:
                return  # the chain goes on; what the action changes is not modelled
            if self.assume:
                result.accepted.append(Grant(hit, origin))
            else:
                result.drop(Grant(hit, origin), uncertain=True)
            remaining.remove(match)
            return
        raise EvaluationError(f"{origin}: no evaluation for action {action!r}")

    def _unmodelled(self, origin: str, text: str) -> None:
        self.unmodelled.setdefault(origin + text, Note(origin, text))

    # -- matches --------------------------------------------------------------------

    def _rule_space(self, table: Table, rule: Rule, index: int, chain: Chain) -> tuple[Space, bool] | None:
        """The packets a rule's matches select, and whether an unmodelled match was left
        out of them; None when the rule is assumed not to match (the other reading).

        Plain matches on one field narrow one box's bounds (cheap); set lookups,
        concatenations and negations are spaces of their own, intersected last."""
        origin = rule.origin or f"{_chain_name(table, chain)} rule {index + 1}"
        bounds: dict[str, object] = {}
        if table.family in ("ip", "ip6"):
            family = V4_ALL if table.family == "ip" else V6_ALL
            bounds["src"] = bounds["dst"] = family
        parts: list[Space] = []
        uncertain = False
        for match in rule.matches:
            if isinstance(match, Match) and _unmodelled(match):
                match = Unmodelled(_match_text(match))
            if isinstance(match, Unmodelled):
                self._unmodelled(origin, match.text)
                if not self.assume:
                    return None
                uncertain = True
                continue
            if len(match.fields) == 1 and match.set_name is None and not match.negate:
                _narrow_by_values(bounds, match.fields[0], match.values, self.ifaces)
                continue
            if match.set_name is not None:
                part = self._set_space(match.fields, table.set(match.set_name), table)
            else:
                part = Space(self.ifaces, [b for key in match.values for b in self._key_space(match.fields, key, table).boxes])
            if match.negate:
                part = self._family_space(table).intersect(_implied(self.full, match.fields)).subtract(part)
            parts.append(part)
        if bounds.pop("_empty", False):
            return Space.empty(self.ifaces), uncertain
        space = Space(self.ifaces, physical(
            bounds.get("iif", self.ifaces.all), bounds.get("oif", self.ifaces.all),  # type: ignore[arg-type]
            bounds.get("src", ADDR_ALL), bounds.get("dst", ADDR_ALL),  # type: ignore[arg-type]
            bounds.get("proto", PROTO_ALL), bounds.get("dport", PORT_DIM_ALL), bounds.get("ct", CT_ALL),  # type: ignore[arg-type]
        ))
        for part in sorted(parts, key=len):
            if not space:
                break
            space = space.intersect(part)
        return space, uncertain

    def _set_space(self, fields: tuple[str, ...], set_def: SetDef, table: Table) -> Space:
        boxes = []
        for element in set_def.elements:
            boxes.extend(self._key_space(fields, element.key, table).boxes)
        return Space(self.ifaces, boxes)

    def _key_space(self, fields: tuple[str, ...], key: tuple, table: Table) -> Space:
        bounds: dict[str, object] = {}
        for f, value in zip(fields, key):
            _constrain(bounds, f, value, self.ifaces)
        if bounds.get("_empty"):
            return Space.empty(self.ifaces)
        bounds.pop("_empty", None)
        return Space(self.ifaces, physical(
            bounds.get("iif", self.ifaces.all), bounds.get("oif", self.ifaces.all),  # type: ignore[arg-type]
            bounds.get("src", ADDR_ALL), bounds.get("dst", ADDR_ALL),  # type: ignore[arg-type]
            bounds.get("proto", PROTO_ALL), bounds.get("dport", PORT_DIM_ALL), bounds.get("ct", CT_ALL),  # type: ignore[arg-type]
        ))


class _Recording:
    """A chain's undecided packets, remembering what one rule's action removed from them."""

    def __init__(self, remaining: Remaining):
        self.remaining = remaining
        self.removed: list[Space] = []

    def intersect(self, space: Space) -> Space:
        return self.remaining.intersect(space)

    def remove(self, space: Space) -> None:
        self.removed.append(space)
        self.remaining.remove(space)


@dataclass
class _ChainResult:
    accepted: list[Grant] = field(default_factory=list)
    dropped: list[Grant] = field(default_factory=list)
    dnats: list[DnatRegion] = field(default_factory=list)
    maybe_accepted: list[Grant] = field(default_factory=list)  # what unmodelled rules may let pass
    uncertain_drops: set[int] = field(default_factory=set)  # ids of the drops that depend on unmodelled constructs
    policy: str | None = None

    def absorb(self, other: "_ChainResult") -> None:
        self.accepted += other.accepted
        self.dropped += other.dropped
        self.dnats += other.dnats
        self.maybe_accepted += other.maybe_accepted
        self.uncertain_drops |= other.uncertain_drops

    def drop(self, grant: Grant, uncertain: bool) -> None:
        self.dropped.append(grant)
        if uncertain:
            self.uncertain_drops.add(id(grant))

    def decided_space(self, ifaces: Interfaces) -> Space:
        return Space(ifaces, [b for g in self.accepted + self.dropped for b in g.space.boxes] + [b for d in self.dnats for b in d.space.boxes])


def _intersect_grants(grants: list[Grant], passes: list[Grant]) -> list[Grant]:
    """Each grant cut by each pass, named by the pass's rule (found through an index, not pairwise)."""
    from fwmatrix.space import BoxIndex

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


def _constrain(bounds: dict[str, object], f: str, value: object, ifaces: Interfaces) -> None:
    """Narrow `bounds` by one field = value."""

    def narrow(dim: str, values: Intervals) -> None:
        current = bounds.get(dim)
        bounds[dim] = values if current is None else iv_and(current, values)  # type: ignore[arg-type]
        if not bounds[dim]:
            bounds["_empty"] = True

    if f in ("iif", "oif"):
        bits = ifaces.mask(str(value))
        bounds[f] = bounds.get(f, ifaces.all) & bits  # type: ignore[operator]
        if not bounds[f]:
            bounds["_empty"] = True
    elif f in ("ip.saddr", "ip.daddr", "ip6.saddr", "ip6.daddr"):
        assert isinstance(value, (IPNetwork, IPRange))
        narrow("src" if f.endswith("saddr") else "dst", (addr_interval(value),))
        family = V4_ALL if f.startswith("ip.") else V6_ALL
        narrow("src", family)
        narrow("dst", family)
    elif f == "l4proto":
        narrow("proto", ((int(value), int(value)),))  # type: ignore[call-overload]
    elif f == "dport":
        port = value if isinstance(value, PortRange) else PortRange(int(value), int(value))  # type: ignore[call-overload]
        narrow("dport", ((port.low, port.high),))
        narrow("proto", PORT_PROTOCOLS)
    elif f in ("ct.state", "ct.status"):
        if f == "ct.status" and value != MODELLED_CT_STATUS:
            raise EvaluationError(f"no evaluation for ct status {value!r}")
        bits = ct_bits(str(value)) if f == "ct.state" else CT_DNAT
        bounds["ct"] = bounds.get("ct", CT_ALL) & bits  # type: ignore[operator]
        if not bounds["ct"]:
            bounds["_empty"] = True
    elif f == "nfproto":
        family = V4_ALL if int(value) == 4 else V6_ALL  # type: ignore[call-overload]
        narrow("src", family)
        narrow("dst", family)
    else:
        raise EvaluationError(f"no evaluation for field {f!r}")


def _narrow_by_values(bounds: dict[str, object], f: str, values: tuple, ifaces: Interfaces) -> None:
    """Narrow `bounds` by `f` being one of `values`: the union of what each value allows."""
    union: dict[str, object] = {}
    for key in values:
        one: dict[str, object] = {}
        _constrain(one, f, key[0], ifaces)
        if one.pop("_empty", False):
            continue
        for dim, value in one.items():
            if dim not in union:
                union[dim] = value
            elif isinstance(value, int):
                union[dim] = union[dim] | value  # type: ignore[operator]
            else:
                union[dim] = iv_norm(union[dim] + value)  # type: ignore[operator]
    if not union:
        bounds["_empty"] = True
        return
    for dim, value in union.items():
        if dim not in bounds:
            bounds[dim] = value
        elif isinstance(value, int):
            bounds[dim] = bounds[dim] & value  # type: ignore[operator]
        else:
            bounds[dim] = iv_and(bounds[dim], value)  # type: ignore[arg-type]
        if not bounds[dim]:
            bounds["_empty"] = True


def _implied(full: Space, fields: tuple[str, ...]) -> Space:
    """What a field's mere presence requires (`ip saddr` only exists in IPv4 packets;
    `th dport` only in port protocols): the universe of a negated match."""
    bounds: dict[str, Intervals] = {}
    for f in fields:
        if f.startswith("ip."):
            bounds["src"] = bounds["dst"] = V4_ALL
        elif f.startswith("ip6."):
            bounds["src"] = bounds["dst"] = V6_ALL
        elif f == "dport":
            bounds["proto"] = PORT_PROTOCOLS
            bounds["dport"] = PORTS_ALL
    return full.intersect(full.make(**bounds)) if bounds else full


def _match_text(match: Match) -> str:
    values = ", ".join(" . ".join(str(v) for v in key) for key in match.values) or f"@{match.set_name}"
    return f"a match on {' . '.join(match.fields)} {'!=' if match.negate else '=='} {values}"


def _unmodelled(match: Match) -> bool:
    """A match on a field packet spaces have no dimension for (or a ct status bit but dnat)."""
    if UNMODELLED_FIELDS.intersection(match.fields):
        return True
    if "ct.status" not in match.fields:
        return False
    position = match.fields.index("ct.status")
    return match.set_name is not None or any(key[position] != MODELLED_CT_STATUS for key in match.values)


def _is_terminal(action: object) -> bool:
    return isinstance(action, (Verdict, Dnat, DnatMap)) and getattr(action, "kind", "accept") in ("accept", "drop", "reject")


def _find_chain(table: Table, name: str) -> Chain | None:
    return next((c for c in table.chains if c.name == name), None)


def _map_entries(table: Table, name: str) -> tuple:
    return tuple((e.key, e.data[0]) for e in table.set(name).elements)


def _chain_name(table: Table, chain: Chain) -> str:
    return f"{table.family} {table.name} {chain.name}"


__all__ = ["Effective", "Grant", "DnatRegion", "Note", "evaluate", "interfaces_of", "EvaluationError", "NO_PORT", "iv_norm", "iv_sub"]
