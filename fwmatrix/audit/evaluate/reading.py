"""One reading of a ruleset: the context every step of the walk shares.

A ruleset is read once assuming that every construct fwmatrix cannot model
matches, and, when there are such constructs, once assuming that none does
(see `evaluate`). A reading holds that assumption, the interface universe,
and what the walk gathers on the way: notes, and the packets that rules with
unmodelled constructs could match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fwmatrix.audit.evaluate.addrtype import UNKNOWN, OwnAddresses
from fwmatrix.audit.evaluate.effective import Grant, Note
from fwmatrix.audit.evaluate.sockets import FIELD as FIELD_OF_SOCKET, without_socket
from fwmatrix.ir import Chain, DnatMap, Jump, Match, Notrack, Rule, Ruleset, Table, Unmodelled, UnmodelledAction, VerdictMap
from fwmatrix.space import V4_ALL, V6_ALL, Box, Interfaces, Space

# The hooks a forwarded packet passes, in order: netdev ingress on its in-interface,
# prerouting, forward, postrouting, netdev egress on its out-interface.
DEVICE_FIELD = {"ingress": "iif", "egress": "oif"}  # the interface a device-bound chain is bound to
# The interface a hook has no device for: the out-interface before routing, the
# in-interface at egress (postrouting still knows a forwarded packet's). Its name is
# empty there: `oifname "x"` never matches, `oifname != "x"` always does.
ABSENT_INTERFACE = {"ingress": "oif", "prerouting": "oif", "input": "oif", "egress": "iif"}
# Hooks where no packet has an in-interface to read a MAC source from (nft's `ether saddr`
# depends on `meta iiftype`, which breaks there): a rule matching one never holds, negated
# or not. Postrouting still knows a forwarded packet's (tested: tests/test_mac_source.py);
# the firewall's own packets have none (neighbours.py sends them without a MAC).
NO_MAC_SOURCE = ("output", "egress")
NO_CONNTRACK_YET = "a ct match at ingress, where conntrack has not seen the packet yet"
CONNTRACK_PRIORITY = -200  # NF_IP_PRI_CONNTRACK: prerouting chains below it run before conntrack
BEFORE_CONNTRACK = "a ct match in prerouting before conntrack (priority below -200), where the packet has no connection yet"
# Before conntrack a packet has no connection: the kernel reads its `ct state` as invalid
# (untracked once a notrack took it), and every other ct key fails the rule, negated or not
# (nft breaks; iptables' --ctstatus fails). Tested with real packets (tests/test_differential.py).
STATE_WITHOUT_CONNECTION = "invalid"
# Postrouting after srcnat, and egress, see the source that snat or masquerade wrote;
# the audit judges packets by their source before it.
PRIORITY_SRCNAT = 100
AFTER_SNAT = "a source address after source NAT (snat, masquerade) may have rewritten it"


class Reading:
    def __init__(self, ruleset: Ruleset, ifaces: Interfaces, assume_unmodelled_match: bool,
                 within: Space | None = None, observer: Any = None, own: OwnAddresses = UNKNOWN):
        self.ruleset = ruleset
        # `fwmatrix query` runs a few packets (`within`) through the same walk, and watches
        # it (`observer`: chains.walk calls its `matched` and `walked`)
        self.within = within
        self.observer = observer
        self.ifaces = ifaces
        self.assume = assume_unmodelled_match
        self.own = own  # the firewall's own addresses, for `fib daddr type local` (addrtype.py)
        self.full = Space.full(ifaces)
        self.unmodelled: dict[str, Note] = {}
        self.shadowed: list[Note] = []
        self._families: dict[str, Space] = {}
        self._seen_at: dict[tuple[int, str, bool], Table] = {}
        # source NAT may rewrite a forwarded packet's source before late postrouting and egress
        self._snat = any(c.hook == "postrouting" and c.type == "nat" and c.rules for t in ruleset.tables for c in t.chains)
        # what rules with unmodelled constructs could match (they are judged both ways):
        # every such packet is uncertain; those such a rule lets on may be forwarded
        self.touched: list[Box] = []
        self.doubtful: list[Grant] = []  # the same, by the rule with the unmodelled construct
        self.upper: list[Grant] = []  # what may be forwarded at most (see forward.combine)
        self.notracked: list[Grant] = []  # what notrack takes out of connection tracking, by rule
        self.maybe_notracked: list[Grant] = []  # what unmodelled actions before conntrack may take out of it
        self.notes_by_rule: dict[str, int] = {}  # how often each rule (origin) was noted unmodelled
        self.unsure_decisions = 0  # how often a chains.UnsureVerdict decided packets (they are not certain)
        # the rules that may untrack a packet before conntrack (then `ct state` there may read untracked)
        # (in those base chains and every chain they jump to: a notrack there untracks as well)
        self._untracking = [(t, r) for t in ruleset.tables for c in _running(t, [b.name for b in t.chains if b.hook == "prerouting"
                                                                              and b.priority < CONNTRACK_PRIORITY])
                            for r in c.rules if isinstance(r.action, (Notrack, UnmodelledAction))]
        self._untracked: list[tuple[Rule, Space]] | None = None  # what each of them may untrack

    def base_chains(self, hook: str, kind: str) -> list[tuple[Table, Chain]]:
        """The base chains of a hook and type, of every table that hook runs (IP tables;
        netdev tables at ingress and egress), in priority order, each with its table as
        the hook sees it (see `_as_seen_at`)."""
        families = ("ip", "ip6", "inet") + (("netdev",) if hook in DEVICE_FIELD else ())
        found = []
        for table in self.ruleset.tables:
            if table.family not in families or not any(c.hook == hook and c.type == kind for c in table.chains):
                continue
            for chain in table.chains:
                if chain.hook == hook and chain.type == kind:
                    after_snat = self._snat and (hook == "egress" or (hook == "postrouting" and chain.priority > PRIORITY_SRCNAT))
                    before_conntrack = hook == "prerouting" and chain.priority < CONNTRACK_PRIORITY
                    seen = self._as_seen_at(table, hook, after_snat, before_conntrack)
                    found.append((seen, seen.chain(chain.name)))
        # of chains at one priority the kernel runs the one registered last first; the
        # listing is in registration order (tables and chains by handle)
        return [tc for _, tc in sorted(enumerate(found), key=lambda it: (it[1][1].priority, -it[0]))]

    def _as_seen_at(self, table: Table, hook: str, after_snat: bool, before_conntrack: bool = False) -> Table:
        """The table as a hook runs it: rules matching an interface the hook does not know
        never match (kept, deciding nothing, so rule numbers stay); at ingress and before
        conntrack ct matches, and after source NAT source addresses, are judged both ways."""
        key = (id(table), hook, after_snat, before_conntrack)
        if key not in self._seen_at:
            absent = ABSENT_INTERFACE.get(hook)
            no_conntrack = NO_CONNTRACK_YET if hook == "ingress" else BEFORE_CONNTRACK if before_conntrack else None
            def untracked(rule: Rule) -> bool:  # ingress runs before any notrack
                return before_conntrack and self._may_be_untracked(table, rule)

            no_mac = hook in NO_MAC_SOURCE
            unsplit = (f"a MAC source, one of the ruleset's {self.ifaces.unsplit}: more than fwmatrix tells apart exactly "
                       f"(FWMATRIX_MAX_MAC_SOURCES)") if self.ifaces.unsplit else None
            touches = _touching(absent, no_conntrack is not None, after_snat, no_mac or unsplit is not None)

            def seen(rule: Rule) -> Rule:
                return _as_seen(rule, absent, no_conntrack, after_snat, untracked, no_mac, unsplit) if touches(rule) else rule

            # only the chains this hook's base chains reach are run here: a table's other
            # chains (FORWARD's 117,000 rules at input) are left out; a jump to one would fail
            reached = _reached(table, hook)
            chains = tuple(_chain_as_seen(c, seen) for c in table.chains if c.name in reached)
            self._seen_at[key] = replace(table, chains=chains)
        return self._seen_at[key]

    def _may_be_untracked(self, table: Table, rule: Rule) -> bool:
        """Whether a packet the rule may match (its ct matches left out) may have been untracked
        by a notrack, or an action fwmatrix cannot model, before conntrack: by another such rule
        (its own match comes before its action), whose packets are taken with its ct matches
        left out (more than it untracks, never less)."""
        if not self._untracking:
            return False
        from fwmatrix.audit.evaluate.matches import rule_space  # matches reads a Reading: imported when asked

        if self._untracked is None:
            self._scratch = Reading(self.ruleset, self.ifaces, assume_unmodelled_match=True)  # its notes are not this reading's
            found = [(r, rule_space(self._scratch, t, _without_ct(r), "")) for t, r in self._untracking]
            self._untracked = [(r, region[0]) for r, region in found if region]
        others = [space for r, space in self._untracked if r is not rule]
        if not others:
            return False
        mine = rule_space(self._scratch, table, _without_ct(rule), "")
        return bool(mine and any(mine[0].intersect(space) for space in others))

    def scope(self, table: Table, chain: Chain) -> tuple[Space, bool]:
        """The packets a base chain sees: its family's, on its device at ingress and egress;
        and whether that is known (a listing may not name the device: then every interface
        may be it, and what the chain drops is dropped only maybe)."""
        family = self.family_space(table)
        field = DEVICE_FIELD.get(chain.hook or "")
        if field is None:
            return family, True
        if chain.devices is None:
            self.note_unmodelled(f"{table.family} {table.name} {chain.name}",
                                 f"a {chain.hook} chain whose device the listing does not name (nft -j before 1.0.7): "
                                 "its drops may apply to any interface")
            return family, False
        mask = 0
        for device in chain.devices:
            mask |= self.ifaces.mask(device)
        return family.intersect(self.full.make(**{field: mask})), True

    def family_space(self, table: Table) -> Space:
        """The packets a table's family sees (ip: IPv4, ip6: IPv6, inet: both)."""
        return self.family_named(table.family)

    def version_space(self, version: int) -> Space:
        """The IPv4 (4) or IPv6 (6) packets."""
        return self.family_named("ip" if version == 4 else "ip6")

    def family_named(self, family: str) -> Space:
        if family not in self._families:
            if family == "ip":
                self._families["ip"] = self.full.make(src=V4_ALL, dst=V4_ALL)
            elif family == "ip6":
                self._families["ip6"] = self.full.make(src=V6_ALL, dst=V6_ALL)
            else:
                self._families[family] = self.full
            if self.within is not None:
                self._families[family] = self._families[family].intersect(self.within)
        return self._families[family]

    def note_unmodelled(self, origin: str, text: str) -> None:
        """A construct of rule `origin` that fwmatrix cannot model. The only way to say so:
        the walk judges every rule noted here both ways (see chains.walk)."""
        self.unmodelled.setdefault(origin + text, Note(origin, text))
        self.notes_by_rule[origin] = self.notes_by_rule.get(origin, 0) + 1


def _reached(table: Table, hook: str) -> set[str]:
    """The names of the chains a hook's base chains in `table` may run: those chains, and every
    chain a jump, goto or verdict map (literal or named) leads to from them."""
    return {c.name for c in _running(table, [c.name for c in table.chains if c.hook == hook])}


def _running(table: Table, bases: list[str]) -> list[Chain]:
    """The chains of `table` that the chains named `bases` may run: those, and every chain a
    jump, goto or verdict map (literal or named) leads to from them, in the table's order."""
    maps = {s.name: s for s in table.sets}
    chains = {c.name: c for c in table.chains}
    pending = list(bases)
    reached = set(pending)
    while pending:
        for rule in chains[pending.pop()].rules:
            action = rule.action
            if isinstance(action, Jump):
                targets = [action.chain]
            elif isinstance(action, VerdictMap):
                verdicts = [verdict for _, verdict in action.entries]
                if action.map_name is not None and action.map_name in maps:
                    verdicts += [element.data[0] for element in maps[action.map_name].elements if element.data]
                targets = [verdict.chain for verdict in verdicts if isinstance(verdict, Jump)]
            else:
                continue
            for name in targets:
                if name in chains and name not in reached:
                    reached.add(name)
                    pending.append(name)
    return [c for c in table.chains if c.name in reached]


def _chain_as_seen(chain: Chain, seen: Callable[[Rule], Rule]) -> Chain:
    rules = tuple(seen(r) for r in chain.rules)
    return chain if all(a is b for a, b in zip(rules, chain.rules)) else replace(chain, rules=rules)


def _touching(absent: str | None, conntrack: bool, after_snat: bool, macs: bool) -> Callable[[Rule], bool]:
    """Whether `_as_seen` may change a rule at a hook: whether it matches (or, by a map, looks
    up) a field that hook changes. Most rules match none: they are run as listed."""
    fields = {FIELD_OF_SOCKET} | ({"ether.saddr"} if macs else set()) | ({absent} if absent else set())
    keyed = fields - {FIELD_OF_SOCKET}  # socket keys in a map are the map's matter (matches.py)

    def touches(rule: Rule) -> bool:
        for m in rule.matches:
            if isinstance(m, Match):
                for f in m.fields:
                    if f in fields or (conntrack and f.startswith("ct.")) or (after_snat and f.endswith(".saddr")):
                        return True
        action = rule.action
        return isinstance(action, (VerdictMap, DnatMap)) and not keyed.isdisjoint(action.fields)

    return touches


def _as_seen(rule: Rule, absent: str | None, no_conntrack: str | None, after_snat: bool,
             may_be_untracked: Callable[[Rule], bool] = lambda rule: False, no_mac: bool = False,
             unsplit_macs: str | None = None) -> Rule:
    """A rule as a hook runs it (see `ABSENT_INTERFACE`, `NO_CONNTRACK_YET`, `BEFORE_CONNTRACK`, `AFTER_SNAT`,
    `NO_MAC_SOURCE`; a forwarded packet has no local socket: sockets.py). `unsplit_macs`: the
    universe does not tell MAC sources apart (too many, `MAX_MAC_SOURCES`): a MAC match, or a
    map keyed by one, is judged both ways, and says why."""
    listed = rule  # `may_be_untracked` knows the rule as listed
    if no_mac and any("ether.saddr" in m.fields for m in (*rule.matches, rule.action) if isinstance(m, (Match, VerdictMap, DnatMap))):
        return replace(rule, action=None)  # never matches (nor does any map entry): decides nothing
    if unsplit_macs is not None:
        rule = replace(rule, matches=tuple(Unmodelled(unsplit_macs) if isinstance(m, Match) and "ether.saddr" in m.fields else m
                                           for m in rule.matches))
        if isinstance(rule.action, (VerdictMap, DnatMap)) and "ether.saddr" in rule.action.fields:
            rule = replace(rule, action=UnmodelledAction(unsplit_macs))
    rule = without_socket(rule)
    if absent is not None:
        if isinstance(rule.action, (VerdictMap, DnatMap)) and absent in rule.action.fields:
            return replace(rule, action=None)  # no entry's key has an empty name
        on_absent = [m for m in rule.matches if isinstance(m, Match) and absent in m.fields]
        if any(not m.negate for m in on_absent):
            return replace(rule, action=None)  # never matches: decides nothing
        rule = replace(rule, matches=tuple(m for m in rule.matches if m not in on_absent))  # `!=` always holds
    if no_conntrack:
        matches = []
        for m in rule.matches:
            if not (isinstance(m, Match) and any(f.startswith("ct.") for f in m.fields)):
                matches.append(m)
                continue
            holds = _without_connection(m, lambda: may_be_untracked(listed))
            if holds is False:
                return replace(rule, action=None)  # never matches: decides nothing
            if holds is None:
                matches.append(Unmodelled(no_conntrack))
        rule = replace(rule, matches=tuple(matches))
    if after_snat:
        matches = []
        for m in rule.matches:
            if isinstance(m, Match) and any(f.endswith(".saddr") for f in m.fields):
                # the address is not known, its family is: `ip saddr` only exists in IPv4 packets
                families = {4 if f.startswith("ip.") else 6 for f in m.fields if f.startswith(("ip.", "ip6."))}
                matches += [Match(("nfproto",), ((v,),)) for v in families] + [Unmodelled(AFTER_SNAT)]
            else:
                matches.append(m)
        rule = replace(rule, matches=tuple(matches))
    return rule


def _without_ct(rule: Rule) -> Rule:
    return replace(rule, matches=tuple(m for m in rule.matches if not (isinstance(m, Match) and any(f.startswith("ct.") for f in m.fields))))


def _without_connection(match: Match, may_be_untracked: Callable[[], bool]) -> bool | None:
    """Whether a ct match holds for a packet conntrack has not seen (see STATE_WITHOUT_CONNECTION);
    None when that is not known: the packet may be untracked already and the two states differ,
    a negated status (iptables' `! --ctstate DNAT` holds there, nft's `ct status != dnat` does not),
    or a lookup the IR does not spell out."""
    if match.fields == ("ct.status",) and not match.negate:
        return False
    if match.fields != ("ct.state",) or match.set_name is not None:
        return None
    states = {key[0] for key in match.values}
    holds = {(state in states) != match.negate for state in (STATE_WITHOUT_CONNECTION, "untracked")}
    if len(holds) == 1 or not may_be_untracked():
        return (STATE_WITHOUT_CONNECTION in states) != match.negate
    return None
