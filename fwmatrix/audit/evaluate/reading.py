"""One reading of a ruleset: the context every step of the walk shares.

A ruleset is read once assuming that every construct fwmatrix cannot model
matches, and, when there are such constructs, once assuming that none does
(see `evaluate`). A reading holds that assumption, the interface universe,
and what the walk gathers on the way: notes, and the packets that rules with
unmodelled constructs could match.
"""

from __future__ import annotations

from fwmatrix.audit.evaluate.effective import Grant, Note
from fwmatrix.ir import Chain, Ruleset, Table
from fwmatrix.space import V4_ALL, V6_ALL, Box, Interfaces, Space


class Reading:
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
        self.touched: list[Box] = []
        self.doubtful: list[Grant] = []  # the same, by the rule with the unmodelled construct
        self.upper: list[Grant] = []  # what may be forwarded at most (see forward.combine)
        self.notracked: list[Grant] = []  # what notrack takes out of connection tracking, by rule
        self.maybe_notracked: list[Grant] = []  # what unmodelled actions before conntrack may take out of it
        self.notes_by_rule: dict[str, int] = {}  # how often each rule (origin) was noted unmodelled

    def base_chains(self, hook: str, kind: str) -> list[tuple[Table, Chain]]:
        """The base chains of a hook and type, of every IP table, in priority order."""
        found = [
            (table, chain)
            for table in self.ruleset.tables
            if table.family in ("ip", "ip6", "inet")
            for chain in table.chains
            if chain.hook == hook and chain.type == kind
        ]
        return sorted(found, key=lambda tc: tc[1].priority)  # stable: equal priorities keep listing order

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
        return self._families[family]

    def note_unmodelled(self, origin: str, text: str) -> None:
        """A construct of rule `origin` that fwmatrix cannot model. The only way to say so:
        the walk judges every rule noted here both ways (see chains.walk)."""
        self.unmodelled.setdefault(origin + text, Note(origin, text))
        self.notes_by_rule[origin] = self.notes_by_rule.get(origin, 0) + 1
