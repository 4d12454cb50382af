"""Parsing: iptables-save / ip6tables-save text -> the Ruleset IR, for the audit.

The audit judges what a firewall really runs, so the parser keeps netfilter's
meaning, not iptables' syntax: each *table section becomes an IR table of
its family whose built-in chains are base chains on their hooks and
priorities (so mangle FORWARD runs at -150, before filter FORWARD at 0).

Nothing is dropped silently: dropping a match makes a rule look wider than
it is. A match the IR cannot express becomes Unmodelled (judged both ways),
a target that may change the packet's fate becomes UnmodelledAction. Only
rules that neither decide nor change anything (LOG, no target) are skipped;
targets that change the packet but not its fate (MARK, SNAT) keep a rule
with no action. Malformed text is the user's error: BackendError "FILE:LINE:".

reader.py reads the text into sections, options and match/target blocks; this module
gives a table section and its rule lines their meaning (the core options -s, -d, -i,
-o, -p here), matches.py the match extensions, targets.py the targets, terms.py what
a rule reads as."""

from __future__ import annotations

from collections.abc import Callable, Iterable
import re
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Any

from fwmatrix.backends.iptables.commands import KernelRule, TableState, unmarked
from fwmatrix.backends.iptables.ipset import _Ipset, _ipset_def, _parse_ipsets
from fwmatrix.backends.iptables.matches import _check_values, _read_module
from fwmatrix.backends.iptables.modes import _hooked, file_mode
from fwmatrix.backends.iptables.names import BUILTIN_CHAINS, SAVE_TOOL
from fwmatrix.backends.iptables.reader import (
    _Block,
    _command,
    _grouped,
    _ip,
    _Made,
    _Malformed,
    _Rest,
    _network,
    _NotModelled,
    _Option,
    _proto,
    _save_sections,
    _Section,
    _Word,
    _header_family,
)
from fwmatrix.backends.iptables.targets import _read_target
from fwmatrix.backends.iptables.terms import Cond, Term, _AnyOf, _match
from fwmatrix.errors import BackendError
from fwmatrix.gcpause import gc_paused
from fwmatrix.ir import Chain, Match, Rule, Ruleset, SetDef, Table, Unmodelled, addr_field, distinct

IR_FAMILY = {4: "ip", 6: "ip6"}
ADD_SET_RE = re.compile(r"--add-set\s+\"?([^\s\"]+)")  # the SET target adding to an ipset


@dataclass(frozen=True)
class _RestRead:
    """A shared rest of rules (reader._Rest) as read: its terms, where its addresses' terms are,
    its comments and target block, the families it saw (in order, for the next rules to see
    again), whether it holds -m mac; when it holds no disjunction (_AnyOf), the keys `distinct`
    compares its terms by (else None) and its terms as `distinct` keeps them."""

    terms: tuple[Term, ...]
    addresses: list[int]
    comments: list[str]
    target: _Block | None
    seen: list[tuple[int, str]]
    mac: bool
    keys: frozenset | None
    distinct: tuple[Cond, ...]


# -- one table section -----------------------------------------------------------------


@dataclass
class _SectionParser:
    section: _Section
    source: str
    ipsets: dict[str, _Ipset] | None
    versions: dict[int, tuple[int, str]] = field(default_factory=dict)  # address family seen -> (first line, what)
    sets: dict[str, SetDef] = field(default_factory=dict)
    line: int = 0
    filled: frozenset[str] = frozenset()  # ipsets the packet path adds to (`-j SET --add-set NAME`)
    # what each distinct option (core) or match block (module) read as, with the families it
    # saw on the way (_seen, in order), which a repeat sees again on its own line (_read_once)
    _read: dict[tuple, tuple[list[Term], list[tuple[int, str]], object]] = field(default_factory=dict, init=False, repr=False)
    _seeing: list[tuple[int, str]] | None = field(default=None, init=False, repr=False)
    _made: _Made = field(default_factory=_Made, init=False, repr=False)  # what its rules share (reader._grouped)
    _rests: dict[int, _RestRead] = field(default_factory=dict, init=False, repr=False)  # by id of a rest of _made's

    def table(self, family: int | None) -> Table:
        # the table as the lines build it: per chain its kernel rules in order, each with its IR
        # rules (none for a rule with no effect); `-4`/`-6` lines are read for the family forced,
        # else the header's, else IPv4 (a file without a header goes to iptables-restore)
        marked_for = family or self.section.header_family or 4
        self.state = state = TableState(self.section.table, frozenset(BUILTIN_CHAINS[self.section.table]), dict(self.section.chains))
        for line, words in self.section.rules:
            self.line = line
            try:
                if line in self.section.marked:
                    words = unmarked(words, marked_for)
                    if words is None:
                        continue  # a line for the other family's tool
                command, chain, number, rest = _command(words)
                if chain is None:
                    state.command(command, rest)
                elif command == "-D" and number is not None:
                    state.delete_at(chain, number)
                elif command == "-D":
                    state.delete_matching(chain, self._rule(chain, rest))
                else:
                    state.put(command, chain, number, self._rule(chain, rest))
            except _Malformed as exc:
                raise BackendError(str(exc), file=self.source, line=self.line) from None
        family = self._family(family)
        builtins = BUILTIN_CHAINS[self.section.table]
        chains = []
        for name, kernel in state.chains.items():
            chain_rules = tuple(rule for k in kernel for rule in k.rules)
            if name in builtins:
                hook, kind, priority = builtins[name]
                policy = state.policies.get(name) or "accept"  # used but not declared: iptables made it
                chains.append(Chain(name, chain_rules, hook, kind, priority, policy))
            else:
                chains.append(Chain(name, chain_rules))
        return Table(IR_FAMILY[family], self.section.table, tuple(chains), tuple(self.sets.values()))

    def _family(self, given: int | None) -> int:
        """The forced family, else the save tool's header, else the addresses; they must agree."""
        family = given or self.section.header_family
        if family is None:
            if len(self.versions) > 1:
                line = max(line for line, _ in self.versions.values())
                raise BackendError(f"table {self.section.table} mixes IPv4 and IPv6", file=self.source, line=line)
            family = next(iter(self.versions), 4)
        for version, (line, what) in self.versions.items():
            if version != family:
                raise BackendError(f"IPv{version} {what} in an IPv{family} ({SAVE_TOOL[family]}) table", file=self.source, line=line)
        return family

    def _seen(self, version: int, what: str = "address") -> None:
        self.versions.setdefault(version, (self.line, what))
        if self._seeing is not None:
            self._seeing.append((version, what))

    def _read_once(self, key: tuple, read: Callable[[Any], list[Term]], item: Any) -> list[Term]:
        """`read(item)` of an option or match block, once per key: a listing repeats its options
        and matches from rule to rule. The key holds the ids of the item's options (shared,
        reader._option), and what is kept holds the item: the ids stay theirs. What a read
        does to the parser besides its terms is what it saw (_seen), seen again; the sets a
        `-m set` makes are made by its first read. A read that raises is not kept (the next
        one raises the same)."""
        found = self._read.get(key)
        if found is None:
            outer, self._seeing = self._seeing, []
            try:
                terms = read(item)
                found = self._read[key] = (terms, self._seeing, item)
            finally:
                self._seeing = outer
            if outer is not None:  # reading a shared rest (_rest_read): what this saw, it saw too
                outer += found[1]
        else:
            for version, what in found[1]:
                self._seen(version, what)
        return found[0]

    # -- a rule line ------------------------------------------------------------------

    def _rule(self, chain: str, words: list[_Word]) -> list[KernelRule]:
        """The rule of an `-A`, `-I`, `-R` or `-D` line as its kernel rules, each as IR rules:
        more than one when it holds a disjunction (`-s A,B` means one kernel rule per
        address, as iptables-restore makes them)."""
        if not self.state.known(chain):
            raise _Malformed(f"chain {chain} is not declared in table {self.section.table}")
        core, rest, blocks = _grouped(words, self._made)
        known = None if rest is None else self._rests.get(id(rest))
        if rest is not None:
            blocks = list(rest.blocks)
        if known is None:
            _check_values(blocks)
        if chain in ("OUTPUT", "POSTROUTING") and (known.mac if known is not None else any(b.kind == "match" and b.name == "mac" for b in blocks)):
            raise _Malformed(f"-m mac in {chain}: the kernel allows the mac match only in PREROUTING, INPUT and FORWARD")
        # iptables matches the core options before any match (a rest's own come after the line's)
        terms, addresses, comments, target = self._read_items(core if rest is not None else core + blocks)
        if rest is not None:
            if known is None:
                known = self._rests[id(rest)] = self._rest_read(rest)
            else:
                for version, what in known.seen:
                    self._seen(version, what)
            addresses += [len(terms) + i for i in known.addresses]
            own = [t.fields if type(t) is Match else t for t in terms]
            # the line's own terms first, each kept, then the rest's as `distinct` keeps them:
            # when no two of them read the same fields, and none the fields of the rest's
            shared = known.distinct if known.keys is not None and len(set(own)) == len(own) and known.keys.isdisjoint(own) else None
            one = known.keys is not None and not any(type(t) is _AnyOf for t in terms)
            terms += known.terms
            comments, target = known.comments, known.target
            core = core + list(rest.core)
        else:
            shared, one = None, not any(type(t) is _AnyOf for t in terms)
        decided = _read_target(self, target)  # targets.py
        target_name = target.name if target is not None else ""
        origin = f"{self.source}:{self.line}"
        comment = "; ".join(comments + ([decided[1]] if decided is not None and decided[1] else []))
        if one:  # the common case: one kernel rule, one IR rule
            matches = (*terms[:len(terms) - len(known.terms)], *shared) if shared is not None else distinct(terms)  # type: ignore[arg-type, union-attr]
            rules = [] if decided is None else [Rule(matches, decided[0], comment, origin)]  # type: ignore[arg-type]
            return [KernelRule(rules, target_name, (core, blocks, target, tuple(terms[i] for i in addresses)))]
        separate = [i for i, t in enumerate(terms) if isinstance(t, _AnyOf) and t.kernel_rules]
        kernel: dict[tuple, KernelRule] = {}
        for combination in product(*((t.alternatives if isinstance(t, _AnyOf) else ((t,),)) for t in terms)):
            key = tuple(combination[i] for i in separate)
            # the kernel rule: the same but for its addresses (one of `-s A,B` each)
            same = kernel.get(key)
            if same is None:
                written = (core, blocks, target, tuple(c for i in addresses for c in combination[i]))
                same = kernel[key] = KernelRule([], target_name, written)
            matches = distinct([c for part in combination for c in part])
            if decided is not None and not _contradicts(matches):  # an alternative another match rules out (-p tcp, "no ports")
                same.rules.append(Rule(matches, decided[0], comment, origin))
        return list(kernel.values())

    def _read_items(self, items: Iterable[_Option | _Block]) -> tuple[list[Term], list[int], list[str], _Block | None]:
        """Options and blocks as terms (each read once: _read_once), with where the addresses'
        terms are (-s, -d), the comments, and the target block."""
        terms: list[Term] = []
        addresses: list[int] = []
        comments: list[str] = []
        target: _Block | None = None
        for item in items:
            if isinstance(item, _Option):
                if item.name == "-s" or item.name == "-d":
                    addresses.append(len(terms))
                terms += self._read_once(("core", id(item)), self._core, item)
            elif item.kind == "target":
                target = item
            elif item.name == "comment":
                comments += [o.value for o in item.options]
            else:
                terms += self._read_once(("module", item.name, *map(id, item.options)), self._module, item)
        return terms, addresses, comments, target

    def _rest_read(self, rest: _Rest) -> _RestRead:
        """What a shared rest reads as (its first rule's reading, which the next ones take)."""
        outer, self._seeing = self._seeing, []
        try:
            terms, addresses, comments, target = self._read_items((*rest.core, *rest.blocks))
            seen = self._seeing
        finally:
            self._seeing = outer
        one = not any(type(t) is _AnyOf for t in terms)
        return _RestRead(tuple(terms), addresses, comments, target, seen, any(b.kind == "match" and b.name == "mac" for b in rest.blocks),
                         frozenset(t.fields if type(t) is Match else t for t in terms) if one else None,
                         distinct(terms) if one else ())  # type: ignore[arg-type]

    # -- iptables' own options ----------------------------------------------------------

    def _core(self, option: _Option) -> list[Term]:
        flag, negate = option.name, option.negate
        if flag == "-f":
            return [Unmodelled(("! " if negate else "") + "-f (non-first fragments)")]
        text = option.value
        if flag in ("-s", "-d"):
            which = "saddr" if flag == "-s" else "daddr"
            parts = text.split(",")
            if negate and len(parts) > 1:
                raise _Malformed(f"'!' with several addresses in {flag} {text}")
            conds: list[Cond] = []
            for part in parts:
                try:
                    net = _network(part)
                except _NotModelled as exc:
                    conds.append(Unmodelled(f"{'! ' if negate else ''}{flag} {part}: {exc}"))
                    self._seen(_ip(part.partition("/")[0]).version)
                    continue
                self._seen(net.version)
                conds.append(_match(addr_field(net.version, which), [net], negate))
            return [conds[0] if len(conds) == 1 else _AnyOf(tuple((c,) for c in conds), kernel_rules=True)]
        if flag in ("-i", "-o"):
            if not text:
                raise _Malformed(f"{flag} needs an interface name")
            name = text[:-1] + "*" if text.endswith("+") else text  # the IR's prefix wildcard
            if name == "*" and not negate:
                return []  # every interface
            return [_match("iif" if flag == "-i" else "oif", [name], negate)]
        if flag == "-p":
            proto = _proto(text)
            if proto is None:
                if negate:
                    raise _Malformed("! -p all never matches")
                return []
            return [_match("l4proto", [proto], negate)]
        raise _Malformed(f"unexpected option {flag}")

    # -- matches (matches.py reads them) ------------------------------------------------

    def _module(self, block: _Block) -> list[Term]:
        return _read_module(self, block)

    def _ipset(self, name: str, directions: list[str]) -> str:
        """The IR set of a `-m set` lookup (matches._set), made once per table: ipset name and directions."""
        set_id = f"{name} {','.join(directions)}"
        if set_id not in self.sets:
            if self.ipsets is None:
                raise _NotModelled("ipset contents not given")
            ipset = self.ipsets.get(name)
            if ipset is None:
                raise _NotModelled(f"no ipset {name} in the ipset listing")
            self.sets[set_id] = replace(_ipset_def(ipset, directions, set_id), dynamic=name in self.filled)
        for f in self.sets[set_id].key:
            if f.startswith("ip"):
                self._seen(4 if f.startswith("ip.") else 6)
        return set_id


def _contradicts(matches: tuple[Cond, ...]) -> bool:
    """Whether literal protocol matches leave no protocol (`-p tcp` and "not a port protocol")."""
    allowed: set[int] | None = None
    excluded: set[int] = set()
    for m in matches:
        if isinstance(m, Match) and m.fields == ("l4proto",) and m.set_name is None:
            values = {key[0] for key in m.values}
            if m.negate:
                excluded |= values
            else:
                allowed = values if allowed is None else allowed & values
    return allowed is not None and not allowed - excluded


# -- text -> tables ---------------------------------------------------------------------


def parse_save(text: str, family: int | None = None, source: str = "", ipsets: str | None = None) -> Ruleset:
    """`iptables-save` and/or `ip6tables-save` output (concatenated is fine) as a Ruleset.

    A section's family is `family` when given, else the `# Generated by ip6tables-save`
    line before it, else its addresses (IPv4 when it has none). `ipsets`, the output of
    `ipset save`, resolves `-m set` lookups; without it they are Unmodelled. Origins are
    "SOURCE:LINE"; malformed text raises BackendError "SOURCE:LINE: message"."""
    if family not in (None, 4, 6):
        raise ValueError(f"family must be 4, 6 or None, not {family!r}")
    source = source or "iptables-save"
    with gc_paused():
        return _parse_save(text, family, source, ipsets)


def _parse_save(text: str, family: int | None, source: str, ipsets: str | None) -> Ruleset:
    sets = _parse_ipsets(ipsets, f"{source} (ipset save)") if ipsets is not None else None
    filled = frozenset(ADD_SET_RE.findall(text))  # ipsets are global: any table's SET target fills them
    tables: dict[tuple[str, str], Table] = {}
    for section in _save_sections(text, source):
        table = _SectionParser(section, source, sets, filled=filled).table(family)
        key = (table.family, table.name)
        if key in tables:
            raise BackendError(
                f"a second {table.name} table for {table.family}: give each ip6tables-save part its "
                "'# Generated by ip6tables-save' line, or parse the families separately", file=source, line=section.line)
        tables[key] = table
    if file_mode(text) == "own-chains":  # fwmatrix's own file: judged as it runs once applied
        tables = {key: _hooked(table, source) for key, table in tables.items()}
    # the families this text speaks for: its tables', and a save tool's header even without tables
    families = {4 if t.family == "ip" else 6 for t in tables.values()} | ({family} if family else set())
    families |= {f for f in map(_header_family, (line for line in text.splitlines() if line.startswith("#"))) if f}
    return Ruleset(tuple(tables.values()), families=frozenset(families))

