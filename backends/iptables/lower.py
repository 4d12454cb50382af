"""Lowering: the Ruleset IR, one address family at a time, as iptables tables of rules.

Lowering walks the IR generically. Each IR rule becomes a disjunction of clauses
(clauses.py): literal matches constrain a field, set and map lookups expand element by
element, and intersections that are empty vanish. Neighbouring clauses with the same target
are then regrouped (ports into multiport, addresses into ipsets, states into one --ctstate),
which is exact: the union of clauses that differ in one field only is one clause, and the
order of rules with the same target does not matter. Anything iptables cannot say exactly
raises RenderError: a match is never dropped from a rule, since that would make the rule
accept more."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import product, repeat
from operator import attrgetter, itemgetter, or_
from socket import inet_ntoa

from netaddr import IPNetwork, IPRange

from fwmatrix.backends.iptables.clauses import (
    ADDR_FIELDS,
    FAMILY_VALUES,
    CLAUSE_FIELDS,
    FIELD_ORDER,
    IR_FIELDS,
    MERGE_SHIFT,
    Networks,
    PORT_FIELDS,
    SLOT_MASK,
    ValueCache,
    _Clause,
    _Rows,
    _constrain_key,
    _constrain_one,
    _negate,
    _normalise,
    _regroup,
    _sorted_values,
    _value_key,
    _values,
)
from fwmatrix.backends.iptables.ipset import _SetBook
from fwmatrix.backends.iptables.modes import Mode
from fwmatrix.backends.iptables.names import BUILTINS, CHAIN_PREFIX, CT_STATES, CT_STATUS, HOOKS, PROTO_NAMES, VERDICTS
from fwmatrix.backends.iptables.safe import RenderError, comment_args, safe_text
from fwmatrix.ir import Chain, Dnat, DnatMap, Jump, Log, Masquerade, Match, Rule, Ruleset, SetDef, Snat, Table, Unmodelled, Verdict, VerdictMap
from fwmatrix.matrix.model import PortRange

LOG_PREFIX_MAX = 29  # --log-prefix
MULTIPORT_MAX = 15  # entries per -m multiport; a range counts as two
IPSET_MIN = 8  # below this many networks, one rule per network reads better than a set
TABLE_FAMILIES = {"inet": (4, 6), "ip": (4,), "ip6": (6,)}
PORT_PROTOS = (6, 17, 132)
_KEY, _COMMENT = attrgetter("key"), attrgetter("comment")  # of a set's elements
_PREFIX_LENGTH = itemgetter(2)  # of a network as rows keep it (see clauses.Networks)
ALL_PORTS = PortRange(0, 65535)


# -- the lowered form ----------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """What a lowered rule does: its -j/-g words, and for jumps the chain (IR and iptables name)."""

    words: tuple[str, ...] = ()
    jump_ir: str | None = None
    jump_to: str | None = None
    goto: bool = False
    needs_port_proto: bool = False  # DNAT to a port: iptables wants -p tcp/udp/sctp
    regroup: bool = True  # False for DNAT map elements: one rule each, so they read back one to one


@dataclass
class _Rule:
    words: str  # matches, comment and target, as the rule's line has them after `-A CHAIN`
    target: _Target

    def text(self, chain: str) -> str:
        return f"-A {chain} {self.words}" if self.words else f"-A {chain}"


@dataclass
class _TableOut:
    base: dict[str, tuple[Table, Chain]] = field(default_factory=dict)  # built-in -> IR base chain
    chains: dict[str, list[_Rule]] = field(default_factory=dict)  # iptables chain -> rules


@dataclass
class _Lowering:
    """One address family of one ruleset, lowered to iptables tables."""

    ruleset: Ruleset
    family: int
    mode: Mode
    book: _SetBook
    names: dict[tuple[str, str, str], str]  # (IR table family, IR table name, chain) -> iptables name
    values: ValueCache = field(default_factory=dict)  # the checked value sets of the IR's values, by id
    rows: _Rows = field(default_factory=_Rows)  # clauses as rows, for regrouping
    row_values: dict[str, dict[int, object]] = field(default_factory=dict)  # IR field -> id(value) -> its part of a row
    row_values_kept: list[object] = field(default_factory=list)  # the values row_values has seen, alive
    # what a row's numbers render as, made once per number (rows share a few thousand value sets)
    rest_words: dict[int, _RestWords] = field(default_factory=dict)  # number of a row's rest -> its words
    value_keys: dict[int, tuple] = field(default_factory=dict)  # number of a value set -> its part of the sort key
    addr_words: dict[tuple[int, int, str], list[tuple[list[str], list[str]]]] = field(default_factory=dict)  # (number, shift, chain hint) -> options
    port_words: dict[tuple[int, int, tuple[str, ...]], list[list[str]]] = field(default_factory=dict)  # (sport, dport, proto) -> options
    state_words: dict[int, list[str]] = field(default_factory=dict)  # number of a ct.state set -> its match
    net_texts: dict[tuple[int, int, int], str] = field(default_factory=dict)  # (version, first, prefix length) -> CIDR text

    def tables(self) -> dict[str, _TableOut]:
        out: dict[str, _TableOut] = {}
        for table in self.ruleset.tables:
            if self.family not in _table_families(table):
                continue
            for chain in table.chains:
                if chain.hook is None:
                    continue
                where = HOOKS.get((chain.type, chain.hook, chain.priority))
                if where is None:
                    raise RenderError(f"chain {chain.name!r}: iptables has no {chain.type} chain on hook {chain.hook!r} at priority {chain.priority}")
                ipt_table, builtin = where
                t = out.setdefault(ipt_table, _TableOut())
                if builtin in t.base:
                    other = t.base[builtin][1].name
                    raise RenderError(f"chains {other!r} and {chain.name!r} both hook {ipt_table} {builtin}: iptables has one chain there")
                if chain.policy not in (None, "accept", "drop") or (ipt_table == "nat" and chain.policy == "drop"):
                    raise RenderError(f"chain {chain.name!r}: no iptables form for policy {chain.policy!r} in the {ipt_table} table")
                t.base[builtin] = (table, chain)
        for ipt_table, t in out.items():
            self._lower_table(ipt_table, t)
        return out

    def _lower_table(self, ipt_table: str, t: _TableOut) -> None:
        queue: deque[tuple[Table, Chain, str]] = deque()
        for builtin in BUILTINS[ipt_table]:
            if builtin in t.base:
                table, chain = t.base[builtin]
                queue.append((table, chain, builtin if self.mode == "full" else CHAIN_PREFIX + builtin))
        while queue:  # breadth first from the base chains: chains nothing reaches have no effect
            table, chain, name = queue.popleft()
            if name in t.chains:
                continue
            rules = t.chains[name] = self._lower_chain(ipt_table, table, chain, name)
            for r in rules:
                if r.target.jump_ir is not None and r.target.jump_to not in t.chains:
                    queue.append((table, _user_chain(table, r.target.jump_ir, ""), r.target.jump_to))  # type: ignore[arg-type]
        _prune(t)

    def _lower_chain(self, ipt_table: str, table: Table, chain: Chain, name: str) -> list[_Rule]:
        # Runs of neighbouring clauses with the same target (across IR rules, too) merge and
        # reorder freely; the order between different targets stays as the IR has it.
        # a run: its target, where it starts, and its clauses as columns: rows, comments, rule indexes
        runs: list[tuple[_Target, str, list[int], list[tuple[str, ...]], list[int]]] = []
        for index, rule in enumerate(chain.rules):
            where = f"chain {chain.name!r}" + (f" ({rule.origin})" if rule.origin else "")
            own = (rule.comment,) if rule.comment else ()  # for clauses that carry no element's comment
            for target, rows, comments in self._rule_runs(ipt_table, table, rule, where):
                if not rows:
                    continue  # a map entry no clause meets: no rule, and no break in the run
                if not runs or (runs[-1][0] is not target and runs[-1][0] != target):
                    runs.append((target, where, [], [], []))
                run = runs[-1]
                run[2].extend(rows)
                run[3].extend([c or own for c in comments] if own else comments)
                run[4].extend(repeat(index, len(rows)))
        out: list[_Rule] = []
        hint = name.removeprefix(CHAIN_PREFIX)
        for target, where, rows, comments, indexes in runs:
            merged = _regroup(rows, comments, indexes, self.rows) if target.regroup else list(zip(rows, comments, indexes))
            target_words = list(target.words)
            # IR rule order first (it reads like the IR), then numerically within a rule
            for row, comments, _ in sorted(merged, key=lambda item: (item[2], self._row_key(item[0]))):
                if target.needs_port_proto:
                    _require_port_proto(self.rows.clause(row), f"{where}: DNAT to a port")
                tail = comment_args(comments) + target_words
                out.extend([_Rule(" ".join(args + tail), target) for args in self._render_row(row, hint, where)])
        return out

    def _rule_runs(self, ipt_table: str, table: Table, rule: Rule, where: str) -> list[tuple[_Target, list[int], list[tuple[str, ...]]]]:
        """A rule as (target, rows, comments) in the rule's order: its clauses as rows of self.rows,
        with the comments each carries, for each target the rule has (a map: one per entry)."""
        action = rule.action
        if isinstance(action, VerdictMap):
            clauses, comments = self._expand(table, rule.matches, where)
            fields = _check_fields(action.fields, where)
            if action.map_name is not None:
                entries = [(e.key, _map_verdict(e.data, where), e.comment) for e in _lookup(table, action.map_name, where).elements]
            else:
                entries = [(key, verdict, "") for key, verdict in action.entries]
            return [(self._target(ipt_table, table, verdict, where), *self._narrowed(clauses, comments, fields, key, comment, where))
                    for key, verdict, comment in entries]
        if isinstance(action, DnatMap):
            return self._dnat_map_runs(ipt_table, table, action, where, *self._expand(table, rule.matches, where))
        # a plain action's clauses are regrouped: its last set lookup may give them as rows
        clauses, comments = self._expand(table, rule.matches, where, rows=True)
        if isinstance(action, (Dnat, Snat)) and action.family != self.family:
            return []  # `dnat ip6 to` never applies to the other family's packets
        target = self._target(ipt_table, table, action, where)
        return [(target, clauses, comments)]

    def _narrowed(self, clauses: list, comments: list[tuple[str, ...]], fields: tuple[str, ...], key: tuple, comment: str, where: str) -> tuple[list[int], list[tuple[str, ...]]]:
        """The clauses narrowed by one map entry's key, as rows, with the entry's comment."""
        rows, kept = [], []
        tail = (comment,) if comment else ()
        for clause, clause_comments in zip(clauses, comments):
            narrowed = _constrain_key(clause, fields, key, where, self.values)
            if narrowed is not None:
                rows.append(self.rows.row(narrowed))
                kept.append(clause_comments + tail)
        return rows, kept

    def _dnat_map_runs(self, ipt_table: str, table: Table, action: DnatMap, where: str, clauses: list, comments: list[tuple[str, ...]]) -> list[tuple[_Target, list[int], list[tuple[str, ...]]]]:
        if ipt_table != "nat":
            raise RenderError(f"{where}: DNAT belongs in a nat chain")
        if action.family != self.family:
            return []  # `dnat ip to` never applies to the other family's packets
        fields = _check_fields(action.fields, where)
        if action.map_name is not None:
            map_def = _lookup(table, action.map_name, where)
            daddr = "ip.daddr" if action.family == 4 else "ip6.daddr"
            if not map_def.is_map or tuple(map_def.key) != tuple(action.fields) or tuple(map_def.data) not in ((daddr,), (daddr, "dport")):
                raise RenderError(f"{where}: map {action.map_name!r} does not fit a DNAT lookup on {action.fields}")
            entries = [(e.key, e.data, e.comment) for e in map_def.elements]
        else:
            entries = [(key, data, "") for key, data in action.entries]
        runs = []
        for key, data, comment in entries:
            if len(data) not in (1, 2):
                raise RenderError(f"{where}: DNAT data {data!r} is not an address and maybe a port")
            target = _dnat_target(action.family, data[0], data[1] if len(data) == 2 else None, where)
            target = _Target(target.words, needs_port_proto=target.needs_port_proto, regroup=False)
            runs.append((target, *self._narrowed(clauses, comments, fields, key, comment, where)))
        return runs

    def _target(self, ipt_table: str, table: Table, action: object, where: str) -> _Target:
        if action is None:
            return _Target()
        if isinstance(action, Verdict):
            verdict = VERDICTS.get(action.kind)
            if verdict is None or (ipt_table == "nat" and verdict in ("DROP", "REJECT")):
                raise RenderError(f"{where}: no iptables form for verdict {action.kind!r} in the {ipt_table} table")
            if verdict == "REJECT":  # nft's default, spelled out as iptables-save shows it
                return _Target(("-j", verdict, "--reject-with", "icmp-port-unreachable" if self.family == 4 else "icmp6-port-unreachable"))
            return _Target(("-j", verdict))
        if isinstance(action, Jump):
            chain = _user_chain(table, action.chain, where)
            name = self.names[(table.family, table.name, chain.name)]
            return _Target(("-g" if action.goto else "-j", name), chain.name, name, action.goto)
        if isinstance(action, Dnat):
            if ipt_table != "nat":
                raise RenderError(f"{where}: DNAT belongs in a nat chain")
            return _dnat_target(action.family, action.address, action.port, where)
        if isinstance(action, Log):  # the rule's own counters count what the rate lets through
            prefix = safe_text(action.prefix)
            if len(prefix) > LOG_PREFIX_MAX:
                raise RenderError(f"{where}: log prefix {prefix!r} is longer than iptables' {LOG_PREFIX_MAX} characters")
            return _Target(("-m", "limit", "--limit", f"{int(action.per_minute)}/min", "-j", "LOG", "--log-prefix", f'"{prefix}"'))
        if isinstance(action, (Snat, Masquerade)):
            if ipt_table != "nat":
                raise RenderError(f"{where}: source NAT belongs in a nat chain")
            if isinstance(action, Masquerade):
                return _Target(("-j", "MASQUERADE"))
            if not isinstance(action.address, IPNetwork) or action.address.size != 1 or action.address.version != self.family:
                raise RenderError(f"{where}: SNAT target {action.address!r} is not one IPv{self.family} address")
            return _Target(("-j", "SNAT", "--to-source", str(action.address.ip)))
        raise RenderError(f"{where}: no iptables form for action {action!r}")

    def _expand(self, table: Table, matches: tuple[Match | Unmodelled, ...], where: str, rows: bool = False) -> tuple[list, list[tuple[str, ...]]]:
        """The matches of a rule as a disjunction of clauses, as columns: the clauses and the
        comments of the set elements each came from. With `rows`, the clauses come as rows of
        self.rows, a last set lookup giving its elements' rows directly where it can."""
        start = _Clause().constrain("family", frozenset({self.family}))
        assert start is not None
        clauses: list[tuple[_Clause, tuple[str, ...]]] = [(start, ())]
        for position, match in enumerate(matches):
            if not isinstance(match, Match):
                raise RenderError(f"{where}: cannot write a match fwmatrix does not model: {match!r}")
            fields = _check_fields(match.fields, where)
            if match.set_name is not None:
                set_def = _lookup(table, match.set_name, where)
                if set_def.is_map or tuple(set_def.key) != tuple(match.fields):
                    raise RenderError(f"{where}: set {match.set_name!r} does not fit a lookup on {match.fields}")
                # the keys and their comments as columns, taken in C (a set has up to tens of thousands)
                keys = list(map(_KEY, set_def.elements))
                notes = list(map(_COMMENT, set_def.elements))
            else:
                keys = list(match.values)
                notes = [""] * len(keys)
            if set(map(len, keys)) - {len(fields)}:
                key = next(k for k in keys if len(k) != len(fields))
                raise RenderError(f"{where}: key {key!r} does not fit fields {match.fields}")
            if match.negate:
                if len(fields) != 1:
                    raise RenderError(f"{where}: iptables cannot negate a lookup on several fields {match.fields}")
                values = [k[0] for k in keys]
                clauses = [(c2, cm) for c, cm in clauses if (c2 := _negate(c, fields[0], values)) is not None]
            elif len(fields) == 1 and match.set_name is None:
                values_set = frozenset().union(*(_values(fields[0], k[0]) for k in keys))
                clauses = [(c2, cm) for c, cm in clauses if (c2 := _constrain_one(c, fields[0], values_set)) is not None]
            elif rows and position == len(matches) - 1:
                out_rows: list[int] = []
                out_comments: list[tuple[str, ...]] = []
                for clause, comments in clauses:
                    element_rows, element_comments = self._element_rows(clause, comments, fields, keys, notes, where)
                    out_rows += element_rows
                    out_comments += element_comments
                return out_rows, out_comments
            else:
                clauses = [
                    (narrowed, comments + ((element_comment,) if element_comment else ()))
                    for clause, comments in clauses if not _other_family(clause, fields)
                    for key, element_comment in zip(keys, notes)
                    if (narrowed := _constrain_key(clause, fields, key, where, self.values)) is not None
                ]
        row = self.rows.row
        return [row(c) if rows else c for c, _ in clauses], [cm for _, cm in clauses]

    def _element_rows(self, clause: _Clause, comments: tuple[str, ...], fields: tuple[str, ...], keys: list[tuple], notes: list[str], where: str) -> tuple[list[int], list[tuple[str, ...]]]:
        """`clause` narrowed by each key of a set lookup, as rows: what _constrain_key gives when
        the clause constrains none of the key's fields and has their families (every set
        fwmatrix makes), made with one lookup per value instead of a clause per element."""
        if _other_family(clause, fields):
            return [], []
        names = [IR_FIELDS[f] for f in fields]
        own = {name for name, _ in clause.allowed + clause.excluded}
        if (any(family is not None and clause.get("family") != FAMILY_VALUES[family] for _, family in names)
                or any(name in own for name, _ in names) or len({name for name, _ in names}) != len(names)
                or any(name == "family" for name, _ in clause.excluded)):
            narrowed_items = [(narrowed, comments + ((element_comment,) if element_comment else ()))
                              for key, element_comment in zip(keys, notes)
                              if (narrowed := _constrain_key(clause, fields, key, where, self.values)) is not None]
            return [self.rows.row(c) for c, _ in narrowed_items], [cm for _, cm in narrowed_items]
        base = self.rows.row(clause) & ~SLOT_MASK  # the clause's mergeable fields; each element's rest is numbered below
        kept = [item for item in clause.allowed if item[0] not in MERGE_SHIFT]
        number = self.rows.number
        # column by column: each value's part of a row (its value set's number in its slot, or
        # its field for the rest) is looked up by id, C loops doing the per-element work
        rows = [base] * len(keys)
        rest_columns = []
        for f, (name, family), column in zip(fields, names, zip(*keys)):
            shift = MERGE_SHIFT.get(name)
            cache = self.row_values.setdefault(f, {})
            ids = list(map(id, column))
            parts = list(map(cache.get, ids))
            if None in parts:
                # the values not seen yet, each once, in the order of the elements (a set's
                # values repeat: 232k of them, 6k distinct, at 10,000 openings)
                for i, v in dict(zip(ids, column)).items():
                    if i in cache:
                        continue
                    if family is not None and type(v) is IPNetwork and v.version == family and v.value == (first := v.first):
                        # one CIDR (most address values): its slot's value set straight from it, as
                        # _values, _normalise and number_values would make it
                        cache[i] = number(((family, first, v.prefixlen),)) << shift  # type: ignore[operator]
                        self.row_values_kept.append(v)
                        continue
                    try:
                        values = _normalise(name, _values(f, v))
                    except RenderError:
                        _first_refused(fields, keys)  # the error of the first element refused, as element by element
                        raise
                    # a field of the rest: the number of the item (field, value set)
                    cache[i] = number((name, values)) if shift is None else self.rows.number_values(name, values) << shift
                    self.row_values_kept.append(v)  # its id stays its own while the cache holds it
                parts = list(map(cache.__getitem__, ids))
            if shift is None:
                rest_columns.append(parts)
            else:
                rows = list(map(or_, rows, parts))
        # the key's fields no pass merges (their items' numbers) -> the number of the row's rest
        extras = rest_columns[0] if len(rest_columns) == 1 else list(zip(*rest_columns)) if rest_columns else [()] * len(keys)
        rests: dict[object, int | None] = dict.fromkeys(extras)  # each rest once, in the order of the elements
        items = self.rows.values
        for extra in rests:
            extra_items = [items[n] for n in ((extra,) if len(rest_columns) == 1 else extra)]
            rests[extra] = number((tuple(sorted(kept + extra_items, key=lambda item: FIELD_ORDER[item[0]])), clause.excluded))  # type: ignore[index]
        found = list(map(rests.__getitem__, extras))
        rows = list(map(or_, rows, found))
        tails = list(zip(notes)) if all(notes) else [(note,) if note else () for note in notes]  # an element's comment
        return rows, [comments + tail for tail in tails] if comments else tails

    def _row_key(self, row: int) -> tuple:
        """Sort key of a row's clause: by interfaces, then addresses, protocol and ports, numerically;
        ordered as a key of the clause built from each field's sorted value keys would be."""
        rest = self.rest_words.get(row & SLOT_MASK) or self._rest_words(row & SLOT_MASK)
        keys = self.value_keys
        numbers = [(row >> shift) & SLOT_MASK for shift in KEY_SHIFTS]
        parts = list(map(keys.get, numbers))
        if None in parts:
            for i, (name, n) in enumerate(zip(KEY_SLOTS, numbers)):
                if parts[i] is None:
                    values = self.rows.values[n]
                    if values is None:
                        part = (0,)
                    elif name in ADDR_FIELDS:  # Networks: sorted, and ordered as their _value_keys are (those but a leading 1)
                        part = (1, values)
                    else:
                        part = (1, tuple(sorted(map(_value_key, values))))  # type: ignore[call-overload]
                    parts[i] = keys[n] = part
        return KEY_ORDER(parts + rest.keys)  # type: ignore[no-any-return]

    def _rest_words(self, rest: int) -> _RestWords:
        """The words of a row's fields no pass merges, and its exclusions (see _RestWords)."""
        kept, excluded_items = self.rows.values[rest]  # type: ignore[misc]
        allowed, excluded = dict(kept), dict(excluded_items)
        excluded_key = tuple((name, tuple(sorted(map(_value_key, vals)))) for name, vals in excluded_items)
        keys = [(0,) if name not in allowed else (1, tuple(sorted(map(_value_key, allowed[name])))) for name in KEY_REST] + [excluded_key]
        several = next((name for name, values in excluded.items() if len(values) != 1), None)
        if several is not None:  # refused when rendered (the sort keys come first)
            words = self.rest_words[rest] = _RestWords(keys, several)
            return words

        def split(name: str, show: Callable[[object], list[str]]) -> list[list[str]]:
            if name in excluded:
                (value,) = excluded[name]
                return [show(value)[:-2] + ["!"] + show(value)[-2:]]
            values = allowed.get(name)
            return [[]] if values is None else [show(v) for v in _sorted_values(values)]

        def iface(flag: str) -> Callable[[object], list[str]]:
            return lambda v: [] if v == "*" else [flag, _if_text(str(v))]

        words = self.rest_words[rest] = _RestWords(
            keys,
            excluded_addr={name: [(["!", flag, str(net)], [])] for name, flag in (("saddr", "-s"), ("daddr", "-d")) if name in excluded for net in excluded[name]},
            iif=split("iif", iface("-i")),
            oif=split("oif", iface("-o")),
            proto=split("l4proto", lambda p: ["-p", PROTO_NAMES.get(p, str(p))]),  # type: ignore[call-overload]
            status=split("ct.status", lambda s: ["-m", "conntrack", *CT_STATUS[s]]),  # type: ignore[index]
        )
        return words

    def _render_row(self, row: int, hint: str, where: str) -> list[list[str]]:
        """iptables matches for one row's clause; several rules where a field needs several values."""
        rest = self.rest_words.get(row & SLOT_MASK) or self._rest_words(row & SLOT_MASK)
        if rest.several is not None:
            raise RenderError(f"{where}: iptables cannot exclude several values of {rest.several} in one rule")
        src = rest.excluded_addr.get("saddr") or self._addr(row, SADDR, "-s", "src", hint)
        dst = rest.excluded_addr.get("daddr") or self._addr(row, DADDR, "-d", "dst", hint)
        ports = (row >> SPORT) & SLOT_MASK, (row >> DPORT) & SLOT_MASK
        states = (row >> STATE) & SLOT_MASK
        state = self.state_words.get(states)
        if state is None:
            state = self.state_words[states] = _ctstate(self.rows.values[states])  # type: ignore[arg-type]
        options = []
        for (s, s_set), (d, d_set), iif, oif, proto, status in product(src, dst, rest.iif, rest.oif, rest.proto, rest.status):
            # iptables-save order: -s -d -i -o -p, then the matches (-m set ...)
            base = s + d + iif + oif + proto + s_set + d_set
            for port in self._ports(ports, proto, where):
                options.append(base + port + state + status)
        return options

    def _addr(self, row: int, shift: int, flag: str, direction: str, hint: str) -> list[tuple[list[str], list[str]]]:
        """One address field's options, each as (address words, set match words): none for any
        address, an ipset for a large group, else one per network."""
        n = (row >> shift) & SLOT_MASK
        found = self.addr_words.get((n, shift, hint))
        if found is None:
            nets: Networks | None = self.rows.values[n]  # type: ignore[assignment]
            if nets is None or 0 in map(_PREFIX_LENGTH, nets):
                found = [([], [])]  # 0.0.0.0/0, ::/0: any address, so no match at all
            elif len(nets) >= IPSET_MIN:
                found = [([], ["-m", "set", "--match-set", self.book.name_for(self.family, hint, self._net_texts(nets)), direction])]
            else:
                found = [([flag, text], []) for text in self._net_texts(nets)]
            self.addr_words[(n, shift, hint)] = found
        return found

    def _net_texts(self, nets: Networks) -> tuple[str, ...]:
        """Networks' CIDR texts, each made once per network."""
        texts = self.net_texts
        found = tuple(map(texts.get, nets))
        if None in found:
            for net in nets:
                if net not in texts:
                    # IPv4 by the C formatter (netaddr's own text, a tenth of the time)
                    texts[net] = f"{inet_ntoa(net[1].to_bytes(4, 'big'))}/{net[2]}" if net[0] == 4 else str(IPNetwork(net[1:], version=net[0]))
            found = tuple(map(texts.__getitem__, nets))
        return found  # type: ignore[return-value]

    def _ports(self, ports: tuple[int, int], proto: list[str], where: str) -> list[list[str]]:
        key = (*ports, tuple(proto))
        found = self.port_words.get(key)
        if found is None:
            values = self.rows.values
            found = self.port_words[key] = _ports({"sport": values[ports[0]], "dport": values[ports[1]]}, proto, where)  # type: ignore[dict-item]
        return found


# A row's sort key: each clause field's part in field order, then the exclusions; made from
# the parts of the slots (KEY_SLOTS, in MERGE_SHIFT's order) followed by the rest's (KEY_REST,
# then the exclusions), put in field order by KEY_ORDER
KEY_SLOTS = tuple(MERGE_SHIFT)
KEY_SHIFTS = tuple(MERGE_SHIFT.values())
KEY_REST = tuple(name for name in CLAUSE_FIELDS if name not in MERGE_SHIFT)
KEY_ORDER = itemgetter(*[KEY_SLOTS.index(name) if name in MERGE_SHIFT else len(KEY_SLOTS) + KEY_REST.index(name) for name in CLAUSE_FIELDS],
                       len(KEY_SLOTS) + len(KEY_REST))
SADDR, DADDR, SPORT, DPORT, STATE = (MERGE_SHIFT[name] for name in ("saddr", "daddr", "sport", "dport", "ct.state"))


@dataclass(frozen=True)
class _RestWords:
    """What a row's rest (the fields no pass merges, and the exclusions) renders as."""

    keys: list[tuple]  # the sort key's parts of the fields of KEY_REST, then of the exclusions
    several: str | None = None  # a field with several values excluded: no iptables form, and no words
    excluded_addr: dict[str, list[tuple[list[str], list[str]]]] = field(default_factory=dict)  # an excluded address: `! -s NET`, as _addr gives it
    iif: list[list[str]] = field(default_factory=list)
    oif: list[list[str]] = field(default_factory=list)
    proto: list[list[str]] = field(default_factory=list)
    status: list[list[str]] = field(default_factory=list)


def _other_family(clause: _Clause, fields: tuple[str, ...]) -> bool:
    """The key's first field is of an address family the clause is not (`ip saddr` in the
    IPv6 lowering): no element can match, which _constrain_key finds element by element
    before looking at any value."""
    family = IR_FIELDS[fields[0]][1] if fields else None
    families = clause.get("family")
    return family is not None and families is not None and family not in families


def _first_refused(fields: tuple[str, ...], keys: list[tuple]) -> None:
    """Raise the RenderError of the first value refused, element by element, field by field."""
    for key in keys:
        for f, v in zip(fields, key):
            _values(f, v)


def _ports(allowed: dict[str, frozenset], proto: list[str], where: str) -> list[list[str]]:
    """Port matches: `-m tcp --sport S --dport D` for single entries, multiport for lists of at most
    15 entries (a range counts as two), several rules for longer lists."""
    chunks: dict[str, list[list[PortRange]]] = {}
    for name in PORT_FIELDS:
        ports = allowed.get(name)
        if ports is None or ports == frozenset({ALL_PORTS}):
            chunks[name] = [[]]  # every port: the protocol alone says it
            continue
        if proto[:1] != ["-p"] or proto[1] not in ("tcp", "udp", "sctp"):
            raise RenderError(f"{where}: a port match needs tcp, udp or sctp as protocol")
        chunks[name], weight = [[]], 0
        for r in _sorted_values(ports):
            w = 1 if r.is_single else 2
            if weight + w > MULTIPORT_MAX:
                chunks[name].append([])
                weight = 0
            chunks[name][-1].append(r)
            weight += w
    out = []
    for sport, dport in product(chunks["sport"], chunks["dport"]):
        pairs = (("sport", sport), ("dport", dport))
        singles = [w for name, c in pairs if len(c) == 1 for w in (f"--{name}", _port_text(c[0]))]
        words = ["-m", proto[1]] + singles if singles else []
        for name, c in pairs:
            if len(c) > 1:
                words += ["-m", "multiport", f"--{name}s", ",".join(map(_port_text, c))]
        out.append(words)
    return out


def _table_families(table: Table) -> tuple[int, ...]:
    if table.family not in TABLE_FAMILIES:
        raise RenderError(f"table {table.name!r}: iptables has no {table.family!r} family")
    return TABLE_FAMILIES[table.family]


def _user_chain(table: Table, name: str, where: str) -> Chain:
    chain = next((c for c in table.chains if c.name == name), None)
    if chain is None:
        raise RenderError(f"{where or 'a rule'}: jump to unknown chain {name!r}")
    if chain.hook is not None:
        raise RenderError(f"{where or 'a rule'}: jump to base chain {name!r}")
    return chain


def _lookup(table: Table, name: str, where: str) -> SetDef:
    set_def = next((s for s in table.sets if s.name == name), None)
    if set_def is None:
        raise RenderError(f"{where}: unknown set or map {name!r}")
    return set_def


def _map_verdict(data: tuple, where: str) -> Verdict | Jump:
    if len(data) != 1 or not isinstance(data[0], (Verdict, Jump)):
        raise RenderError(f"{where}: verdict map data {data!r} is not one verdict")
    return data[0]


def _check_fields(fields: tuple[str, ...], where: str) -> tuple[str, ...]:
    for f in fields:
        if f not in IR_FIELDS:
            raise RenderError(f"{where}: iptables has no match for field {f!r}")
    if len(set(fields)) != len(fields):
        raise RenderError(f"{where}: repeated field in {fields}")
    return fields


def _require_port_proto(clause: _Clause, what: str) -> None:
    protos = clause.get("l4proto")
    if protos is None or not protos <= set(PORT_PROTOS):
        raise RenderError(f"{what} needs tcp, udp or sctp as protocol")


def _ctstate(states: frozenset | None) -> list[str]:
    if states is None or states == frozenset(CT_STATES):
        return []
    return ["-m", "conntrack", "--ctstate", ",".join(s.upper() for s in CT_STATES if s in states)]


def _port_text(r: PortRange) -> str:
    return str(r.low) if r.is_single else f"{r.low}:{r.high}"


def _if_text(name: str) -> str:
    return name[:-1] + "+" if name.endswith("*") else name


def _dnat_target(family: int, address: object, port: object, where: str) -> _Target:
    """`-j DNAT --to-destination A[-B][:P[-Q]]` (IPv6 with a port: `[A-B]:P`)."""
    if not isinstance(address, (IPNetwork, IPRange)) or address.version != family:
        raise RenderError(f"{where}: DNAT target {address!r} is not an IPv{family} address")
    first, last = (address.ip, address.ip) if isinstance(address, IPNetwork) and address.size == 1 else (address[0], address[-1])
    text = str(first) if first == last else f"{first}-{last}"
    if port is not None:
        (ports,) = _values("dport", port)
        port_text = str(ports.low) if ports.is_single else f"{ports.low}-{ports.high}"
        text = f"{text}:{port_text}" if family == 4 else f"[{text}]:{port_text}"
    return _Target(("-j", "DNAT", "--to-destination", text), needs_port_proto=port is not None)


def _prune(t: _TableOut) -> None:
    """Drop jumps to user chains that are empty in this family (a plain jump there does nothing),
    then the chains nothing refers to. A goto to an empty chain returns early, so it stays."""
    entries = {CHAIN_PREFIX + b for b in t.base} | set(t.base)
    while True:
        empty = {name for name, rules in t.chains.items() if not rules and name not in entries}
        changed = False
        for rules in t.chains.values():
            kept = [r for r in rules if not (r.target.jump_to in empty and not r.target.goto)]
            changed |= len(kept) != len(rules)
            rules[:] = kept
        referenced = {r.target.jump_to for rules in t.chains.values() for r in rules}
        for name in list(t.chains):
            if name not in entries and name not in referenced:
                del t.chains[name]
                changed = True
        if not changed:
            return
