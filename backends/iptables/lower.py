"""iptables backend: Ruleset IR -> iptables-restore, ip6tables-restore and ipset restore input.

Files, by suffix: `.ipt4` (iptables-restore), `.ipt6` (ip6tables-restore),
`.ipset` (ipset restore; only when some address group became an ipset).
A family's file is emitted whenever an IR table covers that family (an
`inet` table covers both), even without openings for it: the forward
policy and the connection-tracking rules must hold for IPv6 too, or IPv6
would be forwarded wide open.

Lowering walks the IR generically. Each IR rule becomes a disjunction of
"clauses" (conjunctions of per-field value sets): literal matches constrain
a field, set and map lookups expand element by element, and intersections
that are empty vanish. Neighbouring clauses with the same target are then
regrouped (ports into multiport, addresses into ipsets, states into one
--ctstate), which is exact: the union of clauses that differ in one field
only is one clause, and the order of rules with the same target does not
matter. Anything iptables cannot say exactly raises RenderError: a match is
never dropped from a rule, since that would make the rule accept more.

Two modes (docs/backend-iptables.md):
  own-chains (default): only fwmatrix's FWM-* chains are declared and
      flushed (`iptables-restore --noflush`), so a container runtime's
      chains survive; each used built-in chain needs one jump to its
      FWM-<BUILTIN> entry chain, which `apply` adds atomically when missing.
  full: the files own the whole nat and filter tables (plain
      `iptables-restore` flushes them).

Every string written is an interface name checked against a strict pattern,
a chain or set name built here from [A-Za-z0-9_-], a number, an address, or
a comment with every character outside a safe set replaced by '_'.
"""

from __future__ import annotations

import functools
import hashlib
import re
import socket
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from itertools import pairwise, product
from pathlib import Path
from typing import Literal

from netaddr import AddrFormatError, IPAddress, IPNetwork, IPRange, IPSet, cidr_merge

from fwmatrix.errors import BackendError, did_you_mean
from fwmatrix.gcpause import gc_paused
from fwmatrix.ir import (
    Action,
    Chain,
    Dnat,
    DnatMap,
    Element,
    Jump,
    Match,
    Rule,
    Ruleset,
    SetDef,
    Table,
    Unmodelled,
    UnmodelledAction,
    Verdict,
    VerdictMap,
    addr_field,
)
from fwmatrix.matrix.model import PortRange
from fwmatrix.netns import have, run_private, tool_path

NAME = "iptables"
SUFFIX_V4 = ".ipt4"
SUFFIX_V6 = ".ipt6"
SUFFIX_IPSET = ".ipset"
FAMILY_SUFFIX = {4: SUFFIX_V4, 6: SUFFIX_V6}
RESTORE_TOOL = {4: "iptables-restore", 6: "ip6tables-restore"}
SAVE_TOOL = {4: "iptables-save", 6: "ip6tables-save"}

Mode = Literal["own-chains", "full"]
MODES: tuple[Mode, ...] = ("own-chains", "full")
DEFAULT_MODE: Mode = "own-chains"
MODE_MARKER = "# fwmatrix-mode: "

CHAIN_PREFIX = "FWM-"
CHAIN_MAX = 28  # iptables: XT_EXTENSION_MAXNAMELEN - 1
SET_PREFIX = {4: "fwm4-", 6: "fwm6-"}
SET_MAX = 31  # ipset: IPSET_MAXNAMELEN - 1
MULTIPORT_MAX = 15  # entries per -m multiport; a range counts as two
IPSET_MIN = 8  # below this many networks, one rule per network reads better than a set
COMMENT_MAX = 255  # xt_comment holds 256 bytes with the NUL

IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\Z")  # no '+' (the iptables wildcard), no '!'
IFWILD_RE = re.compile(r"[A-Za-z0-9_.-]{0,14}\*\Z")  # the IR's prefix wildcard `eth*`
CHAIN_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
UNSAFE_TEXT_RE = re.compile(r"[^A-Za-z0-9 _.,:;/()+=@#%<>-]")
BARE_WORD_RE = re.compile(r"[A-Za-z0-9_-]+\Z")

TABLE_FAMILIES = {"inet": (4, 6), "ip": (4,), "ip6": (6,)}
# (chain type, hook, priority) -> (iptables table, built-in chain): where iptables runs that hook.
HOOKS = {
    ("nat", "prerouting", -100): ("nat", "PREROUTING"),
    ("nat", "output", -100): ("nat", "OUTPUT"),
    ("nat", "input", 100): ("nat", "INPUT"),
    ("nat", "postrouting", 100): ("nat", "POSTROUTING"),
    ("filter", "input", 0): ("filter", "INPUT"),
    ("filter", "forward", 0): ("filter", "FORWARD"),
    ("filter", "output", 0): ("filter", "OUTPUT"),
}
BUILTINS = {"nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"), "filter": ("INPUT", "FORWARD", "OUTPUT")}
TABLES = ("nat", "filter")  # file order: DNAT happens before filtering

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}
PORT_PROTOS = (6, 17, 132)
# conntrack states in the order iptables-save prints them, so our lines read back verbatim.
CT_STATES = ("invalid", "new", "related", "established", "untracked")
# ct status bits: iptables tests SNAT/DNAT as virtual states, the others with --ctstatus.
CT_STATUS = {
    "snat": ("--ctstate", "SNAT"),
    "dnat": ("--ctstate", "DNAT"),
    "expected": ("--ctstatus", "EXPECTED"),
    "seen-reply": ("--ctstatus", "SEEN_REPLY"),
    "assured": ("--ctstatus", "ASSURED"),
    "confirmed": ("--ctstatus", "CONFIRMED"),
}
VERDICTS = {"accept": "ACCEPT", "drop": "DROP", "reject": "REJECT", "return": "RETURN"}
ALL_PORTS = PortRange(0, 65535)

# IR field -> (clause field, address family the field implies)
IR_FIELDS: dict[str, tuple[str, int | None]] = {
    "iif": ("iif", None),
    "oif": ("oif", None),
    "l4proto": ("l4proto", None),
    "sport": ("sport", None),
    "dport": ("dport", None),
    "ip.saddr": ("saddr", 4),
    "ip.daddr": ("daddr", 4),
    "ip6.saddr": ("saddr", 6),
    "ip6.daddr": ("daddr", 6),
    "ct.state": ("ct.state", None),
    "ct.status": ("ct.status", None),
    "nfproto": ("family", None),
}
CLAUSE_FIELDS = ("family", "iif", "oif", "saddr", "daddr", "l4proto", "sport", "dport", "ct.state", "ct.status")
MERGE_FIELDS = ("dport", "sport", "ct.state", "saddr", "daddr")  # iptables matches these against a set of values
ADDR_FIELDS = ("saddr", "daddr")
PORT_FIELDS = ("sport", "dport")
IF_FIELDS = ("iif", "oif")
EXCLUDABLE = ("iif", "oif", "l4proto", "ct.status")  # negations without a finite complement: `! -i X`

Items = list[tuple["_Clause", tuple[str, ...]]]  # clauses with the comments they carry
Members = list[tuple["_Clause", tuple[str, ...], int]]  # ... and the index of the IR rule they came from


class RenderError(BackendError):
    """The IR holds something iptables cannot express exactly; nothing is written."""


# -- safe text ----------------------------------------------------------------
# These helpers duplicate the idea of backends/nftables.py on purpose (backends
# never import each other); they are candidates for a shared fwmatrix module.


def safe_text(text: str, limit: int = COMMENT_MAX) -> str:
    """Free text (comments, header values): every unsafe character becomes '_'."""
    text = UNSAFE_TEXT_RE.sub("_", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def comment_args(texts: Iterable[str]) -> list[str]:
    text = safe_text(", ".join(dict.fromkeys(t for t in texts if t)))
    if not text:
        return []
    # Quoted only when needed, as iptables-save does, so rules read back verbatim.
    return ["-m", "comment", "--comment", text if BARE_WORD_RE.match(text) else f'"{text}"']


def short_name(prefix: str, base: str, limit: int) -> str:
    """prefix + base, cut to `limit` with a hash of the whole so that cut names stay distinct."""
    name = prefix + base
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:6]
    return f"{prefix}{base[: limit - len(prefix) - 7]}-{digest}"


# -- interface names: literal `eth0` or prefix wildcard `eth*` ---------------------


def _ifname(name: object) -> str:
    if isinstance(name, str) and ((IFNAME_RE.match(name) and name not in (".", "..")) or IFWILD_RE.match(name)):
        return name
    raise RenderError(f"refusing to write {name!r} as an interface name")


def _if_covers(a: str, b: str) -> bool:
    """Every name `b` matches, `a` matches too."""
    if not a.endswith("*"):
        return a == b
    return b.removesuffix("*").startswith(a[:-1])


def _if_meet(a: str, b: str) -> str | None:
    """The names both match, as one pattern (prefixes are nested or disjoint)."""
    return b if _if_covers(a, b) else a if _if_covers(b, a) else None


def _if_text(name: str) -> str:
    return name[:-1] + "+" if name.endswith("*") else name


# -- values -------------------------------------------------------------------


def _merge_ports(ranges: Iterable[PortRange]) -> frozenset[PortRange]:
    merged: list[PortRange] = []
    for r in sorted(ranges):
        if merged and r.low <= merged[-1].high + 1:
            merged[-1] = PortRange(merged[-1].low, max(merged[-1].high, r.high))
        else:
            merged.append(r)
    return frozenset(merged)


def _normalise(name: str, values: Iterable) -> frozenset:
    """The canonical form of a value set, so that equal sets compare equal."""
    if name in ADDR_FIELDS:
        return frozenset(cidr_merge(list(values)))
    if name in PORT_FIELDS:
        return _merge_ports(values)
    if name in IF_FIELDS:
        values = set(values)
        return frozenset(v for v in values if not any(o != v and _if_covers(o, v) for o in values))
    return frozenset(values)


def _intersect(name: str, a: frozenset, b: frozenset) -> frozenset:
    if name in ADDR_FIELDS:
        return frozenset((IPSet(a) & IPSet(b)).iter_cidrs())
    if name in PORT_FIELDS:
        return _merge_ports(PortRange(max(x.low, y.low), min(x.high, y.high)) for x in a for y in b if max(x.low, y.low) <= min(x.high, y.high))
    if name in IF_FIELDS:
        return _normalise(name, (m for x in a for y in b if (m := _if_meet(x, y)) is not None))
    return a & b


def _union(name: str, a: frozenset | None, b: frozenset | None) -> frozenset | None:
    if a is None or b is None:  # "any value" absorbs everything
        return None
    return _normalise(name, a | b)


def _difference(name: str, a: frozenset, b: frozenset) -> frozenset:
    if name in ADDR_FIELDS:
        return frozenset((IPSet(a) - IPSet(b)).iter_cidrs())
    if name in IF_FIELDS:
        kept = set()
        for x in a:
            if any(_if_covers(e, x) for e in b):
                continue
            if any(_if_meet(e, x) is not None for e in b):
                raise RenderError(f"iptables cannot match interface {x!r} except {sorted(b)}")
            kept.add(x)
        return frozenset(kept)
    return a - b


def _complement(name: str, values: frozenset) -> frozenset:
    if name == "ct.state":
        return frozenset(CT_STATES) - values
    if name == "family":
        return frozenset({4, 6}) - values
    if name in PORT_FIELDS:
        out, low = [], 0
        for r in sorted(values):
            if r.low > low:
                out.append(PortRange(low, r.low - 1))
            low = max(low, r.high + 1)
        if low <= 65535:
            out.append(PortRange(low, 65535))
        return frozenset(out)
    raise RenderError(f"no complement for field {name!r}")  # addresses are complemented in _negate


def _values(ir_field: str, v: object) -> frozenset:
    """One IR value, checked, as the set of values a clause keeps (an address range: its CIDRs)."""
    name, family = IR_FIELDS[ir_field]
    if name in IF_FIELDS:
        return frozenset({_ifname(v)})
    if name == "l4proto":
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255:
            raise RenderError(f"refusing {v!r} as an IP protocol number")
        return frozenset({v})
    if name in PORT_FIELDS:
        if isinstance(v, int) and not isinstance(v, bool):
            v = PortRange(v, v)
        if not isinstance(v, PortRange) or not 0 <= v.low <= v.high <= 65535:
            raise RenderError(f"refusing {v!r} as a port or port range")
        return frozenset({v})
    if name == "ct.state" and v in CT_STATES or name == "ct.status" and v in CT_STATUS or name == "family" and v in (4, 6):
        return frozenset({v})
    if name in ADDR_FIELDS and isinstance(v, (IPNetwork, IPRange)) and v.version == family:
        return frozenset({v.cidr}) if isinstance(v, IPNetwork) else frozenset(v.cidrs())
    raise RenderError(f"refusing {v!r} as a value of {ir_field}")


# -- clauses ------------------------------------------------------------------


@dataclass(frozen=True)
class _Clause:
    """A conjunction: each listed field takes one of its allowed values; unlisted fields take any.

    `excluded` keeps negations iptables writes as `! -i X`: interfaces,
    protocols and ct status bits (no finite complement), and one address
    (which reads better than the CIDRs of its complement)."""

    allowed: tuple[tuple[str, frozenset], ...] = ()
    excluded: tuple[tuple[str, frozenset], ...] = ()

    def get(self, name: str) -> frozenset | None:
        return dict(self.allowed).get(name)

    def with_(self, name: str, values: frozenset | None) -> _Clause:
        allowed = dict(self.allowed)
        allowed.pop(name, None)
        if values is not None:
            allowed[name] = values
        return _Clause(_sorted_fields(allowed), self.excluded)

    def constrain(self, name: str, values: frozenset) -> _Clause | None:
        """This clause and `name` in `values`; None when nothing can match both."""
        current = self.get(name)
        values = _normalise(name, values) if current is None else _intersect(name, current, values)
        excluded = dict(self.excluded)
        if name in excluded:  # a positive set absorbs a negation of the same field
            values = _difference(name, values, excluded.pop(name))
        if not values:
            return None
        allowed = dict(self.allowed)
        allowed[name] = values
        return _Clause(_sorted_fields(allowed), _sorted_fields(excluded))

    def exclude(self, name: str, values: frozenset) -> _Clause | None:
        if name in IF_FIELDS and "*" in values:
            return None  # not any interface at all
        current = self.get(name)
        if current is not None:
            return self.constrain(name, _difference(name, current, values))
        excluded = dict(self.excluded)
        excluded[name] = excluded.get(name, frozenset()) | values
        return _Clause(self.allowed, _sorted_fields(excluded))


def _sorted_fields(d: dict[str, frozenset]) -> tuple[tuple[str, frozenset], ...]:
    return tuple(sorted(d.items(), key=lambda item: CLAUSE_FIELDS.index(item[0])))


def _value_key(v: object) -> tuple:
    if isinstance(v, IPNetwork):
        return (1, v.version, v.first, v.prefixlen)
    if isinstance(v, PortRange):
        return (2, v.low, v.high)
    if isinstance(v, int):
        return (3, v)
    return (0, str(v))


def _sorted_values(values: Iterable) -> list:
    return sorted(values, key=_value_key)


def _clause_key(clause: _Clause) -> tuple:
    """Sort key: by interfaces, then addresses, protocol and ports, numerically."""
    allowed = dict(clause.allowed)
    return tuple(
        (0,) if allowed.get(name) is None else (1, tuple(_value_key(v) for v in _sorted_values(allowed[name])))
        for name in CLAUSE_FIELDS
    ) + (tuple((name, tuple(_value_key(v) for v in _sorted_values(vals))) for name, vals in clause.excluded),)


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
    args: list[str]  # matches and comment
    target: _Target

    def text(self, chain: str) -> str:
        return " ".join(["-A", chain] + self.args + list(self.target.words))


@dataclass
class _TableOut:
    base: dict[str, tuple[Table, Chain]] = field(default_factory=dict)  # built-in -> IR base chain
    chains: dict[str, list[_Rule]] = field(default_factory=dict)  # iptables chain -> rules


@dataclass
class _SetBook:
    """ipsets by name; a name carries a hash of the contents, so changed contents get a new set
    and the switch to it happens atomically with the iptables-restore that references it."""

    sets: dict[str, tuple[int, tuple[IPNetwork, ...]]] = field(default_factory=dict)

    def name_for(self, family: int, hint: str, nets: frozenset[IPNetwork]) -> str:
        members = tuple(_sorted_values(nets))
        digest = hashlib.sha256(f"{family}|{','.join(map(str, members))}".encode()).hexdigest()[:8]
        prefix = SET_PREFIX[family]
        hint = re.sub(r"[^A-Za-z0-9_-]", "_", hint)[: SET_MAX - len(prefix) - 9]
        name = f"{prefix}{hint}-{digest}"
        if self.sets.setdefault(name, (family, members)) != (family, members):
            raise RenderError(f"ipset name clash for {name}")  # a 32-bit hash collision; practically never
        return name


@dataclass
class _Lowering:
    """One address family of one ruleset, lowered to iptables tables."""

    ruleset: Ruleset
    family: int
    mode: Mode
    book: _SetBook
    names: dict[tuple[str, str, str], str]  # (IR table family, IR table name, chain) -> iptables name

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
        runs: list[tuple[_Target, str, Members]] = []
        for index, rule in enumerate(chain.rules):
            where = f"chain {chain.name!r}" + (f" ({rule.origin})" if rule.origin else "")
            for clause, comments, target in self._rule_items(ipt_table, table, rule, where):
                if not runs or runs[-1][0] != target:
                    runs.append((target, where, []))
                runs[-1][2].append((clause, comments or ((rule.comment,) if rule.comment else ()), index))
        out: list[_Rule] = []
        for target, where, members in runs:
            merged = _regroup(members) if target.regroup else members
            # IR rule order first (it reads like the IR), then numerically within a rule
            for clause, comments, _ in sorted(merged, key=lambda item: (item[2], _clause_key(item[0]))):
                if target.needs_port_proto:
                    _require_port_proto(clause, f"{where}: DNAT to a port")
                out.extend(_Rule(args + comment_args(comments), target) for args in self._render_clause(clause, name, where))
        return out

    def _rule_items(self, ipt_table: str, table: Table, rule: Rule, where: str) -> list[tuple[_Clause, tuple[str, ...], _Target]]:
        """A rule as (clause, comments, target) triples, in the rule's order."""
        clauses = self._expand(table, rule.matches, where)
        action = rule.action
        if isinstance(action, VerdictMap):
            fields = _check_fields(action.fields, where)
            if action.map_name is not None:
                entries = [(e.key, _map_verdict(e.data, where), e.comment) for e in _lookup(table, action.map_name, where).elements]
            else:
                entries = [(key, verdict, "") for key, verdict in action.entries]
            items = []
            for key, verdict, comment in entries:
                target = self._target(ipt_table, table, verdict, where)
                for clause, comments in clauses:
                    narrowed = _constrain_key(clause, fields, key, where)
                    if narrowed is not None:
                        items.append((narrowed, comments + ((comment,) if comment else ()), target))
            return items
        if isinstance(action, DnatMap):
            return self._dnat_map_items(ipt_table, table, action, clauses, where)
        if isinstance(action, Dnat) and action.family != self.family:
            return []  # `dnat ip6 to` never applies to the other family's packets
        target = self._target(ipt_table, table, action, where)
        return [(clause, comments, target) for clause, comments in clauses]

    def _dnat_map_items(self, ipt_table: str, table: Table, action: DnatMap, clauses: Items, where: str) -> list[tuple[_Clause, tuple[str, ...], _Target]]:
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
        items = []
        for key, data, comment in entries:
            if len(data) not in (1, 2):
                raise RenderError(f"{where}: DNAT data {data!r} is not an address and maybe a port")
            target = _dnat_target(action.family, data[0], data[1] if len(data) == 2 else None, where)
            target = _Target(target.words, needs_port_proto=target.needs_port_proto, regroup=False)
            for clause, comments in clauses:
                narrowed = _constrain_key(clause, fields, key, where)
                if narrowed is not None:
                    items.append((narrowed, comments + ((comment,) if comment else ()), target))
        return items

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
        raise RenderError(f"{where}: no iptables form for action {action!r}")

    def _expand(self, table: Table, matches: tuple[Match | Unmodelled, ...], where: str) -> Items:
        """The matches of a rule as a disjunction of clauses, each with the comments of the set
        elements it came from."""
        start = _Clause().constrain("family", frozenset({self.family}))
        assert start is not None
        clauses: Items = [(start, ())]
        for match in matches:
            if not isinstance(match, Match):
                raise RenderError(f"{where}: cannot write a match fwmatrix does not model: {match!r}")
            fields = _check_fields(match.fields, where)
            if match.set_name is not None:
                set_def = _lookup(table, match.set_name, where)
                if set_def.is_map or tuple(set_def.key) != tuple(match.fields):
                    raise RenderError(f"{where}: set {match.set_name!r} does not fit a lookup on {match.fields}")
                keys = [(e.key, e.comment) for e in set_def.elements]
            else:
                keys = [(k, "") for k in match.values]
            for key, _ in keys:
                if len(key) != len(fields):
                    raise RenderError(f"{where}: key {key!r} does not fit fields {match.fields}")
            if match.negate:
                if len(fields) != 1:
                    raise RenderError(f"{where}: iptables cannot negate a lookup on several fields {match.fields}")
                values = [k[0] for k, _ in keys]
                clauses = [(c2, cm) for c, cm in clauses if (c2 := _negate(c, fields[0], values)) is not None]
            elif len(fields) == 1 and match.set_name is None:
                values_set = frozenset().union(*(_values(fields[0], k[0]) for k, _ in keys))
                clauses = [(c2, cm) for c, cm in clauses if (c2 := _constrain_one(c, fields[0], values_set)) is not None]
            else:
                clauses = [
                    (narrowed, comments + ((element_comment,) if element_comment else ()))
                    for clause, comments in clauses
                    for key, element_comment in keys
                    if (narrowed := _constrain_key(clause, fields, key, where)) is not None
                ]
        return clauses

    def _render_clause(self, clause: _Clause, chain_name: str, where: str) -> list[list[str]]:
        """iptables matches for one clause; several rules where a field needs several values."""
        allowed = dict(clause.allowed)
        excluded = dict(clause.excluded)
        for name, values in excluded.items():
            if len(values) != 1:
                raise RenderError(f"{where}: iptables cannot exclude several values of {name} in one rule")
        hint = chain_name.removeprefix(CHAIN_PREFIX)

        def addr(name: str, flag: str, direction: str) -> list[list[str]]:
            if name in excluded:
                (net,) = excluded[name]
                return [["!", flag, str(net)]]
            nets = allowed.get(name)
            if nets is None or any(n.prefixlen == 0 for n in nets):
                return [[]]  # 0.0.0.0/0, ::/0: any address, so no match at all
            if len(nets) >= IPSET_MIN:
                return [["-m", "set", "--match-set", self.book.name_for(self.family, hint, nets), direction]]
            return [[flag, str(n)] for n in _sorted_values(nets)]

        def split(name: str, show: Callable[[object], list[str]]) -> list[list[str]]:
            if name in excluded:
                (value,) = excluded[name]
                return [show(value)[:-2] + ["!"] + show(value)[-2:]]
            values = allowed.get(name)
            return [[]] if values is None else [show(v) for v in _sorted_values(values)]

        def iface(flag: str) -> Callable[[object], list[str]]:
            return lambda v: [] if v == "*" else [flag, _if_text(str(v))]

        options = []
        for src, dst, iif, oif, proto, status in product(
            addr("saddr", "-s", "src"),
            addr("daddr", "-d", "dst"),
            split("iif", iface("-i")),
            split("oif", iface("-o")),
            split("l4proto", lambda p: ["-p", PROTO_NAMES.get(p, str(p))]),  # type: ignore[call-overload]
            split("ct.status", lambda s: ["-m", "conntrack", *CT_STATUS[s]]),  # type: ignore[index]
        ):
            # iptables-save order: -s -d -i -o -p, then the matches (-m set ...)
            plain = [w for a in (src, dst) if a[:1] != ["-m"] for w in a]
            ipsets = [w for a in (src, dst) if a[:1] == ["-m"] for w in a]
            base = plain + iif + oif + proto + ipsets
            for ports in _ports(allowed, proto, where):
                options.append(base + ports + _ctstate(allowed) + status)
        return options


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


def _constrain_one(clause: _Clause, ir_field: str, values: frozenset) -> _Clause | None:
    name, family = IR_FIELDS[ir_field]
    if family is not None:  # `ip saddr X` only matches IPv4 packets
        narrowed = clause.constrain("family", frozenset({family}))
        if narrowed is None:
            return None
        clause = narrowed
    return clause.constrain(name, values)


def _constrain_key(clause: _Clause | None, fields: tuple[str, ...], key: tuple, where: str) -> _Clause | None:
    if len(key) != len(fields):
        raise RenderError(f"{where}: key {key!r} does not fit fields {fields}")
    for f, v in zip(fields, key):
        if clause is None:
            return None
        clause = _constrain_one(clause, f, _values(f, v))
    return clause


def _negate(clause: _Clause, ir_field: str, raw: list) -> _Clause | None:
    name, family = IR_FIELDS[ir_field]
    values = _normalise(name, frozenset().union(*(_values(ir_field, v) for v in raw)))
    if family is not None:  # `ip saddr != X` still only matches IPv4 packets
        narrowed = clause.constrain("family", frozenset({family}))
        if narrowed is None:
            return None
        clause = narrowed
    if name in EXCLUDABLE:
        return clause.exclude(name, values)
    if name in ADDR_FIELDS:
        if len(values) == 1 and clause.get(name) is None and name not in dict(clause.excluded):
            return clause.exclude(name, values)
        universe = IPSet([IPNetwork("0.0.0.0/0" if family == 4 else "::/0")])
        return clause.constrain(name, frozenset((universe - IPSet(values)).iter_cidrs()))
    return clause.constrain(name, _complement(name, values))


def _regroup(members: Members) -> Members:
    """Merge clauses that differ in one mergeable field into one (their union), until stable.
    A merged clause keeps all comments and the lowest rule index."""
    current: dict[_Clause, tuple[tuple[str, ...], int]] = {}
    for clause, comments, index in members:
        seen_comments, seen_index = current.get(clause, ((), index))
        current[clause] = (tuple(dict.fromkeys(seen_comments + comments)), min(seen_index, index))
    while True:
        before = len(current)
        for name in MERGE_FIELDS:
            buckets: dict[_Clause, tuple[frozenset | None, tuple[str, ...], int]] = {}
            for clause, (comments, index) in current.items():
                rest, values = clause.with_(name, None), clause.get(name)
                if rest in buckets:
                    seen_values, seen_comments, seen_index = buckets[rest]
                    buckets[rest] = (_union(name, seen_values, values), tuple(dict.fromkeys(seen_comments + comments)), min(seen_index, index))
                else:
                    buckets[rest] = (values, comments, index)
            current = {rest.with_(name, values): (comments, index) for rest, (values, comments, index) in buckets.items()}
        if len(current) == before:
            return [(clause, comments, index) for clause, (comments, index) in current.items()]


def _require_port_proto(clause: _Clause, what: str) -> None:
    protos = clause.get("l4proto")
    if protos is None or not protos <= set(PORT_PROTOS):
        raise RenderError(f"{what} needs tcp, udp or sctp as protocol")


def _ctstate(allowed: dict[str, frozenset]) -> list[str]:
    states = allowed.get("ct.state")
    if states is None or states == frozenset(CT_STATES):
        return []
    return ["-m", "conntrack", "--ctstate", ",".join(s.upper() for s in CT_STATES if s in states)]


def _port_text(r: PortRange) -> str:
    return str(r.low) if r.is_single else f"{r.low}:{r.high}"


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


# -- names ----------------------------------------------------------------------


def _chain_names(ruleset: Ruleset) -> dict[tuple[str, str, str], str]:
    """iptables names for the IR's regular chains: FWM-<name>, at most 28 characters, unique,
    never an entry chain's name (FWM-<BUILTIN>), so `apply` can tell entry chains by name."""
    used = {CHAIN_PREFIX + b for builtins in BUILTINS.values() for b in builtins}
    names: dict[tuple[str, str, str], str] = {}
    for table in ruleset.tables:
        for chain in table.chains:
            if not CHAIN_RE.match(chain.name):
                raise RenderError(f"refusing {chain.name!r} as a chain name")
            if chain.hook is not None:
                continue
            name = short_name(CHAIN_PREFIX, chain.name, CHAIN_MAX)
            n = 2
            while name in used:
                name = short_name(CHAIN_PREFIX, f"{chain.name}_{n}", CHAIN_MAX)
                n += 1
            used.add(name)
            names[(table.family, table.name, chain.name)] = name
    return names


# -- text ---------------------------------------------------------------------


def _header(ruleset: Ruleset, lines: list[str]) -> list[str]:
    out = []
    if ruleset.header is not None:
        h = ruleset.header
        out += [
            f"# Generated by {safe_text(h.generator)} from matrix '{safe_text(h.matrix)}' for firewall '{safe_text(h.firewall)}'.",
            f"# matrix sha256: {safe_text(h.content_hash)}",
            "# Do not edit: change the matrix and compile again.",
        ]
    return out + [f"# {line}" if line else "#" for line in lines]


def _mode_lines(mode: Mode, family: int) -> list[str]:
    tool = RESTORE_TOOL[family]
    if mode == "own-chains":
        return [
            f"{MODE_MARKER.removeprefix('# ')}own-chains",
            f"Load with `{tool} --noflush`: it replaces fwmatrix's FWM-* chains only, so other",
            "chains (a container runtime's) survive. Each FWM-<BUILTIN> entry chain needs one",
            "jump from its built-in chain, e.g. `-I FORWARD 1 -j FWM-FORWARD`; fwmatrix's apply",
            "step adds it in the same transaction when missing (see docs/backend-iptables.md).",
        ]
    return [
        f"{MODE_MARKER.removeprefix('# ')}full",
        f"Load with `{tool}`: it replaces the whole nat and filter tables.",
    ]


def render_family(ruleset: Ruleset, family: int, mode: Mode = DEFAULT_MODE, book: _SetBook | None = None) -> str:
    """The iptables-restore (family 4) or ip6tables-restore (family 6) input for a ruleset."""
    if mode not in MODES:
        raise ValueError(f"unknown iptables mode {mode!r}; choose one of {', '.join(MODES)}")
    book = book if book is not None else _SetBook()
    lowered = _Lowering(ruleset, family, mode, book, _chain_names(ruleset)).tables()
    out = _header(ruleset, _mode_lines(mode, family))
    for ipt_table in TABLES:
        t = lowered.get(ipt_table, _TableOut())
        decl: list[str] = []
        body: list[str] = []
        if mode == "full":
            for builtin in BUILTINS[ipt_table]:
                policy = t.base[builtin][1].policy if builtin in t.base else None
                decl.append(f":{builtin} {(policy or 'accept').upper()} [0:0]")
        else:
            for builtin in BUILTINS[ipt_table]:
                if builtin in t.base and t.base[builtin][1].policy == "drop":
                    decl.append(f":{builtin} DROP [0:0]")  # sets the policy; --noflush keeps its rules
        for name, rules in t.chains.items():
            builtin = name.removeprefix(CHAIN_PREFIX)
            if mode == "own-chains" and not rules and builtin in t.base and t.base[builtin][1].policy != "drop":
                continue  # an empty entry chain on an accepting hook does nothing: no chain, no hook
            if name not in BUILTINS[ipt_table]:
                decl.append(f":{name} - [0:0]")  # creates the chain, or flushes it under --noflush
            body.extend(r.text(name) for r in rules)
        if mode == "full" or decl:
            out += [f"*{ipt_table}"] + decl + body + ["COMMIT"]
    return "\n".join(out) + "\n"


def render_ipsets(ruleset: Ruleset, book: _SetBook) -> str:
    """`ipset restore` input: each set is filled under a temporary name and swapped in, so a set
    in use never shows half its members."""
    out = _header(ruleset, ["Load with `ipset restore` before the iptables files that use these sets."])
    for name in sorted(book.sets):
        family, members = book.sets[name]
        options = f"hash:net family {'inet' if family == 4 else 'inet6'} hashsize 1024 maxelem {max(65536, len(members))}"
        tmp = f"{SET_PREFIX[family]}tmp-{name[-8:]}"
        out += [f"create {name} {options} -exist", f"create {tmp} {options} -exist", f"flush {tmp}"]
        out += [f"add {tmp} {n.ip if n.size == 1 else n.cidr}" for n in members]
        out += [f"swap {tmp} {name}", f"destroy {tmp}"]
    return "\n".join(out) + "\n"


# -- the backend interface (see fwmatrix/targets.py) ----------------------------


def render_files(ruleset: Ruleset, mode: Mode = DEFAULT_MODE) -> dict[str, str]:
    """File suffix -> contents, for one firewall: .ipt4 / .ipt6 for each family an IR table
    covers, and .ipset when some address group became an ipset."""
    families = sorted({f for table in ruleset.tables for f in _table_families(table)})
    book = _SetBook()
    files = {FAMILY_SUFFIX[f]: render_family(ruleset, f, mode, book) for f in families}
    if book.sets:
        files[SUFFIX_IPSET] = render_ipsets(ruleset, book)
    return files


def file_mode(text: str) -> Mode:
    for line in text.splitlines():
        if line.startswith(MODE_MARKER):
            mode = line.removeprefix(MODE_MARKER).strip()
            if mode in MODES:
                return mode  # type: ignore[return-value]
    return "full"


def rule_count(files: dict[str, str]) -> int:
    return sum(line.startswith("-A ") for suffix in (SUFFIX_V4, SUFFIX_V6) for line in files.get(suffix, "").splitlines())


_CHECK_SCRIPT = """
ipset=$1 ipset_file=$2 ipt=$3 ipt_file=$4 ip6t=$5 ip6t_file=$6 noflush=$7
if [ -n "$ipset_file" ]; then "$ipset" restore -file "$ipset_file" || exit 11; fi
if [ -n "$ipt_file" ]; then "$ipt" --test $noflush "$ipt_file" || exit 12; fi
if [ -n "$ip6t_file" ]; then "$ip6t" --test $noflush "$ip6t_file" || exit 13; fi
exit 0
"""


def check_files(files: dict[str, str]) -> list[str]:
    """Errors the tools find: the ipsets are created and the restore files tested (`--test`) in one
    private network namespace, so set references are checked too. [] when all is well."""
    failing = {11: SUFFIX_IPSET, 12: SUFFIX_V4, 13: SUFFIX_V6}
    texts = [files.get(s, "") for s in (SUFFIX_V4, SUFFIX_V6)]
    own = any(file_mode(t) == "own-chains" for t in texts if t)
    with tempfile.TemporaryDirectory(prefix="fwmatrix-iptables-") as tmp:
        paths = {}
        for suffix in (SUFFIX_IPSET, SUFFIX_V4, SUFFIX_V6):
            if suffix in files:
                paths[suffix] = str(Path(tmp) / f"ruleset{suffix}")
                Path(paths[suffix]).write_text(files[suffix])
        argv = ["sh", "-c", _CHECK_SCRIPT, "check"]
        argv += [tool_path("ipset") if SUFFIX_IPSET in paths else "", paths.get(SUFFIX_IPSET, "")]
        argv += [tool_path("iptables-restore") if SUFFIX_V4 in paths else "", paths.get(SUFFIX_V4, "")]
        argv += [tool_path("ip6tables-restore") if SUFFIX_V6 in paths else "", paths.get(SUFFIX_V6, "")]
        argv += ["--noflush" if own else ""]
        proc = run_private(argv)
    if proc.returncode == 0:
        return []
    suffix = failing.get(proc.returncode, "")
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip() and not line.startswith("Try `")]
    lines = [line.replace(tmp, "") for line in lines]
    return [f"{suffix}: {line}" if suffix else line for line in lines] or [f"check failed with exit code {proc.returncode}"]


# -- applying -------------------------------------------------------------------

Runner = Callable[..., "subprocess.CompletedProcess[str]"]  # run(argv, stdin=None); raises on failure


def apply(files: dict[str, str], run: Runner) -> None:
    """Load rendered files where `run` runs commands (e.g. `NetNamespace.run`).

    Order: ipsets first (new sets exist before rules use them), then each family's restore
    (atomic per table), then fwmatrix's sets nothing uses any more are destroyed. In own-chains
    mode the restore input is completed from the live ruleset: a jump to each entry chain
    where it is missing (and extra copies removed), and FWM-* chains this ruleset no longer has
    flushed, unhooked and deleted - so applying twice gives the same ruleset as applying once."""
    if SUFFIX_IPSET in files:
        run(["ipset", "restore"], stdin=files[SUFFIX_IPSET])
    for family, suffix in FAMILY_SUFFIX.items():
        if suffix not in files:
            continue
        text = files[suffix]
        if file_mode(text) == "own-chains":
            live = run([SAVE_TOOL[family]]).stdout
            run([RESTORE_TOOL[family], "--noflush"], stdin=own_chains_plan(text, live))
        else:
            run([RESTORE_TOOL[family]], stdin=text)
    if have("ipset"):
        wanted = set(re.findall(r"^create (\S+)", files.get(SUFFIX_IPSET, ""), re.MULTILINE))
        for name in run(["ipset", "list", "-n"]).stdout.split():
            if name.startswith(tuple(SET_PREFIX.values())) and name not in wanted:
                run(["ipset", "destroy", name])


def _sections(text: str) -> dict[str, list[str]]:
    """restore/save text -> {table: its lines between *table and COMMIT}."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = out.setdefault(line[1:].strip(), [])
        elif line.strip() == "COMMIT":
            current = None
        elif current is not None and line and not line.startswith("#"):
            current.append(line)
    return out


def own_chains_plan(text: str, live: str) -> str:
    """The own-chains restore input completed against the live ruleset (`iptables-save` text)."""
    ours, theirs = _sections(text), _sections(live)
    head = [line for line in text.splitlines() if line.startswith("#")]
    tables = [t for t in TABLES if t in ours or any(line.startswith(":" + CHAIN_PREFIX) for line in theirs.get(t, []))]
    out = head
    for table in tables:
        lines = ours.get(table, [])
        declared = {line[1:].split()[0] for line in lines if line.startswith(":")}
        live_lines = theirs.get(table, [])
        live_chains = [line[1:].split()[0] for line in live_lines if line.startswith(":")]
        live_rules = [line for line in live_lines if line.startswith("-A ")]
        stale = [c for c in live_chains if c.startswith(CHAIN_PREFIX) and c not in declared]
        extra: list[str] = []
        for builtin in BUILTINS[table]:
            entry = CHAIN_PREFIX + builtin
            if entry in declared:
                copies = live_rules.count(f"-A {builtin} -j {entry}")
                extra += [f"-I {builtin} 1 -j {entry}"] if copies == 0 else [f"-D {builtin} -j {entry}"] * (copies - 1)
        for rule in live_rules:  # references to stale chains from chains we do not flush
            words = rule.split()
            if not words[1].startswith(CHAIN_PREFIX) and any(a in ("-j", "-g") and b in stale for a, b in pairwise(words)):
                extra.append("-D" + rule[2:])
        extra += [f"-X {c}" for c in stale]
        decl = [line for line in lines if line.startswith(":")] + [f":{c} - [0:0]" for c in stale]
        body = [line for line in lines if not line.startswith(":")]
        out += [f"*{table}"] + decl + body + extra + ["COMMIT"]
    return "\n".join(out) + "\n"


# -- parsing: iptables-save / ip6tables-save text -> the Ruleset IR ------------------------
#
# The audit judges what a firewall really runs, so the parser keeps netfilter's
# meaning, not iptables' syntax: each *table section becomes an IR table of
# its family whose built-in chains are base chains on their hooks and
# priorities (so mangle FORWARD runs at -150, before filter FORWARD at 0).
#
# Nothing is dropped silently: dropping a match makes a rule look wider than
# it is. A match the IR cannot express becomes Unmodelled (judged both ways),
# a target that may change the packet's fate becomes UnmodelledAction. Only
# rules that neither decide nor change anything (LOG, no target) are skipped;
# targets that change the packet but not its fate (MARK, SNAT) keep a rule
# with no action. Malformed text is the user's error: BackendError "FILE:LINE:".

# "# Generated by ip6tables-save v1.8.9 (nf_tables) on ..." (also -legacy-/-nft-save, xtables-save)
SAVE_HEADER_RE = re.compile(r"#\s*Generated by (\S+-save)\b")
INCOMPATIBLE_RE = re.compile(r"#\s*Table `([^']*)' is incompatible")  # iptables-nft: the table holds native nft rules
LEGACY_WARNING_RE = re.compile(r"Warning: ip6?tables-legacy tables present")
COUNTERS_RE = re.compile(r"\[\d+:\d+\]\Z")
PORT_RANGE_RE = re.compile(r"(\d*)(?::(\d*))?\Z")
WORD_RE = re.compile(r'"((?:[^"\\]|\\.)*)"|([^\s"]+)|(")')  # a quoted word, a plain word, or a quote left open
ESCAPE_RE = re.compile(r"\\(.)")

# iptables table -> built-in chain -> (hook, IR chain type, priority): netfilter's NF_IP_PRI_*
# values. HOOKS above is the part of this the renderer writes.
BUILTIN_CHAINS: dict[str, dict[str, tuple[str, str, int]]] = {
    "raw": {"PREROUTING": ("prerouting", "filter", -300), "OUTPUT": ("output", "filter", -300)},
    "mangle": {
        "PREROUTING": ("prerouting", "filter", -150),
        "INPUT": ("input", "filter", -150),
        "FORWARD": ("forward", "filter", -150),
        "OUTPUT": ("output", "route", -150),  # re-routes when the mark or addresses change
        "POSTROUTING": ("postrouting", "filter", -150),
    },
    "nat": {
        "PREROUTING": ("prerouting", "nat", -100),
        "INPUT": ("input", "nat", 100),
        "OUTPUT": ("output", "nat", -100),
        "POSTROUTING": ("postrouting", "nat", 100),
    },
    "filter": {"INPUT": ("input", "filter", 0), "FORWARD": ("forward", "filter", 0), "OUTPUT": ("output", "filter", 0)},
    "security": {"INPUT": ("input", "filter", 50), "FORWARD": ("forward", "filter", 50), "OUTPUT": ("output", "filter", 50)},
}
IR_FAMILY = {4: "ip", 6: "ip6"}

# -p names: what iptables-save prints (PROTO_NAMES, reversed) and common aliases; others: /etc/protocols
PROTO_NUMBERS = {name: number for number, name in PROTO_NAMES.items()} | {
    "icmpv6": 58, "udplite": 136, "dccp": 33, "esp": 50, "ah": 51, "gre": 47, "mh": 135,
}
PORT_MATCHES = {"tcp": 6, "udp": 17, "sctp": 132, "dccp": 33}  # matches with --sport/--dport
IMPLICIT_MATCHES = {6: "tcp", 17: "udp", 132: "sctp", 33: "dccp", 1: "icmp", 58: "icmp6"}  # -p X loads match X
STATE_WORDS = {s.upper(): s for s in CT_STATES}
# --ctstate SNAT/DNAT and --ctstatus X test ct status bits
STATUS_WORDS = {option: {word: status for status, (opt, word) in CT_STATUS.items() if opt == option} for option in ("--ctstate", "--ctstatus")}
VERDICT_TARGETS = {word: kind for kind, word in VERDICTS.items()}
LOG_TARGETS = {"LOG", "NFLOG", "ULOG", "TRACE", "AUDIT"}  # a rule with one of these decides and changes nothing
# Targets that change the packet or its connection but never whether it is forwarded
# (source NAT happens after the forward decision; marks only matter to -m mark, which is Unmodelled).
NO_VERDICT_TARGETS = {
    "SNAT", "MASQUERADE", "SNPT", "MARK", "CONNMARK", "TCPMSS", "CLASSIFY", "DSCP", "TOS", "TTL", "HL", "ECN",
    "SECMARK", "CONNSECMARK", "CHECKSUM", "SET", "TEE", "IDLETIMER", "LED", "RATEEST", "HMARK", "TCPOPTSTRIP",
}
# Targets that may change the packet's fate in ways the IR cannot say.
FATE_TARGETS = {
    "REDIRECT": "sends the packet to the firewall itself",
    "TPROXY": "sends the packet to a local socket",
    "NFQUEUE": "a userspace program decides the verdict",
    "QUEUE": "a userspace program decides the verdict",
    "NOTRACK": "the packet is not tracked: ct state untracked, no NAT",
    "CT": "changes connection tracking (a helper, a zone, or --notrack: ct state untracked, no NAT)",
    "SYNPROXY": "answers the TCP handshake itself",
    "NETMAP": "maps addresses prefix to prefix",
    "DNPT": "translates the destination prefix",
    "CLUSTERIP": "answers for a cluster address",
}

# Option arities of the matches and targets parsed here; an option not listed is an error.
# Other matches and targets are kept as text, their option values taken up to the next option.
MATCH_OPTIONS: dict[str, dict[str, int]] = {
    **{name: {"--sport": 1, "--source-port": 1, "--dport": 1, "--destination-port": 1} for name in PORT_MATCHES},
    "multiport": {"--sports": 1, "--source-ports": 1, "--dports": 1, "--destination-ports": 1, "--ports": 1},
    "conntrack": {
        "--ctstate": 1, "--ctstatus": 1, "--ctproto": 1, "--ctorigsrc": 1, "--ctorigdst": 1, "--ctreplsrc": 1,
        "--ctrepldst": 1, "--ctorigsrcport": 1, "--ctorigdstport": 1, "--ctreplsrcport": 1, "--ctrepldstport": 1,
        "--ctexpire": 1, "--ctdir": 1,
    },
    "state": {"--state": 1},
    "iprange": {"--src-range": 1, "--dst-range": 1},
    "set": {
        "--match-set": 2, "--set": 2, "--return-nomatch": 0, "--update-counters": 0, "--update-subcounters": 0,
        "--packets-eq": 1, "--packets-lt": 1, "--packets-gt": 1, "--bytes-eq": 1, "--bytes-lt": 1, "--bytes-gt": 1,
    },
    "comment": {"--comment": 1},
}
MATCH_OPTIONS["tcp"] |= {"--tcp-flags": 2, "--syn": 0, "--tcp-option": 1}
MATCH_OPTIONS["sctp"] |= {"--chunk-types": 2}
MATCH_OPTIONS["dccp"] |= {"--dccp-types": 1, "--dccp-option": 1}
TARGET_OPTIONS: dict[str, dict[str, int]] = {
    **{word: {} for word in VERDICT_TARGETS},
    "REJECT": {"--reject-with": 1},
    "DNAT": {"--to-destination": 1, "--random": 0, "--random-fully": 0, "--persistent": 0},
}
PORT_OPTIONS = {"--sport": "sport", "--source-port": "sport", "--dport": "dport", "--destination-port": "dport"}
MULTIPORT_OPTIONS = {"--sports": "sport", "--source-ports": "sport", "--dports": "dport", "--destination-ports": "dport"}
SET_NO_EFFECT = {"--return-nomatch", "--update-counters", "--update-subcounters"}  # see _SectionParser._set
# ipset types by dimension: ip/net are addresses, port is [proto:]port, iface an interface
IPSET_DIMENSIONS = {"ip", "net", "port", "iface"}

# iptables' own options, long forms -> short
CORE_OPTIONS = {
    "-A": "-A", "--append": "-A", "-s": "-s", "--source": "-s", "--src": "-s", "-d": "-d", "--destination": "-d",
    "--dst": "-d", "-i": "-i", "--in-interface": "-i", "-o": "-o", "--out-interface": "-o", "-p": "-p",
    "--protocol": "-p", "-f": "-f", "--fragment": "-f", "-m": "-m", "--match": "-m", "-j": "-j", "--jump": "-j",
    "-g": "-g", "--goto": "-g", "-c": "-c", "--set-counters": "-c",
}

Cond = Match | Unmodelled


class _Malformed(Exception):
    """A line that is not valid iptables-save text (the message says why)."""


class _NotModelled(Exception):
    """A value the IR cannot express (the message says why)."""


@dataclass(frozen=True)
class _Word:
    text: str
    quoted: bool = False

    def shown(self) -> str:
        """The word as iptables-save would print it."""
        if self.text and not self.quoted or BARE_WORD_RE.match(self.text):
            return self.text
        return '"' + self.text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class _Option:
    name: str
    negate: bool
    values: tuple[_Word, ...]

    @property
    def value(self) -> str:
        return self.values[0].text

    def shown(self) -> str:
        return " ".join((["!"] if self.negate else []) + [self.name] + [v.shown() for v in self.values])


@dataclass
class _Block:
    """A match (-m NAME, or implied by -p) or the target (-j/-g NAME) with its options."""

    kind: str  # 'match' or 'target'
    name: str
    options: list[_Option] = field(default_factory=list)
    goto: bool = False

    def shown(self, options: Iterable[_Option] | None = None) -> str:
        flag = "-m" if self.kind == "match" else "-g" if self.goto else "-j"
        return " ".join([flag, self.name] + [o.shown() for o in (self.options if options is None else options)])


@dataclass(frozen=True)
class _AnyOf:
    """A disjunction iptables allows in one rule (`--ports`: sport or dport; `--ctstate NEW,DNAT`):
    the rule becomes one IR rule per alternative, which means the same (first match wins)."""

    alternatives: tuple[tuple[Cond, ...], ...]


Term = Cond | _AnyOf


def _split_words(line: str) -> list[_Word]:
    """A line as iptables-restore splits it: whitespace separates words; a double-quoted
    word may hold spaces, and inside it a backslash escapes the next character."""
    if '"' not in line:
        return [_Word(text) for text in line.split()]
    words: list[_Word] = []
    end = 0
    for m in WORD_RE.finditer(line):
        if m[3] is not None:
            raise _Malformed("a quote is not closed")
        if words and m.start() == end:
            raise _Malformed(f"a quoted string must stand alone as a word (column {m.start() + 1})")
        words.append(_Word(ESCAPE_RE.sub(r"\1", m[1]), True) if m[1] is not None else _Word(m[2]))
        end = m.end()
    return words


# -- values ---------------------------------------------------------------------------


def _ip(text: str) -> IPAddress:
    try:
        return IPAddress(text)
    except (AddrFormatError, ValueError):
        raise _Malformed(f"{text!r} is not an IP address") from None


@functools.lru_cache(maxsize=1 << 16)  # rulesets repeat their values
def _network(text: str) -> IPNetwork:
    """`10.0.0.0/8`, `10.0.0.1`, `10.0.0.0/255.0.0.0` as a network; a mask that is not a
    prefix (`/255.0.255.0`, which iptables allows) is not modelled."""
    addr, slash, mask = text.partition("/")
    ip = _ip(addr)
    bits = 32 if ip.version == 4 else 128
    if not slash:
        prefix = bits
    elif mask.isdigit():
        prefix = int(mask)
        if prefix > bits:
            raise _Malformed(f"{text!r}: prefix length longer than {bits}")
    else:
        value = int(_ip(mask))
        prefix = value.bit_count()
        if value != ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1):
            raise _NotModelled(f"address {text} with a mask that is not a prefix")
    return IPNetwork((int(ip), prefix), version=ip.version).cidr


def _range(text: str) -> IPRange:
    low, _, high = text.partition("-")
    first, last = _ip(low), _ip(high or low)
    if first.version != last.version or first > last:
        raise _Malformed(f"{text!r} is not an address range")
    return IPRange(first, last)


def _port(text: str, proto: str = "tcp") -> int:
    if text.isdigit():
        if int(text) > 65535:
            raise _Malformed(f"port {text} is out of range")
        return int(text)
    try:
        return socket.getservbyname(text, proto if proto in ("tcp", "udp") else "tcp")
    except OSError:
        raise _Malformed(f"{text!r} is not a port or a known service") from None


@functools.lru_cache(maxsize=1 << 16)  # rulesets repeat their values
def _port_range(text: str, proto: str = "tcp") -> PortRange:
    """`22`, `1024:65535`, `:1023` (from 0), `1024:` (to 65535), or a service name."""
    m = PORT_RANGE_RE.match(text)
    if m is None or (m[2] is None and not m[1]):
        port = _port(text, proto)
        return PortRange(port, port)
    low = _port(m[1]) if m[1] else 0
    high = low if m[2] is None else _port(m[2]) if m[2] else 65535
    if low > high:
        raise _Malformed(f"port range {text} has its low end above its high end")
    return PortRange(low, high)


@functools.lru_cache(maxsize=1 << 16)  # rulesets repeat their values
def _proto(text: str) -> int | None:
    """-p: a protocol number, None for `all` (any protocol)."""
    name = text.lower()
    if name in ("all", "0"):
        return None
    if name.isdigit():
        if int(name) > 255:
            raise _Malformed(f"protocol {text} is out of range")
        return int(name)
    if name in PROTO_NUMBERS:
        return PROTO_NUMBERS[name]
    try:
        return socket.getprotobyname(name)
    except OSError:
        raise _Malformed(f"unknown protocol {text!r}") from None


def _match(field_name: str, values: Iterable, negate: bool = False) -> Match:
    return Match((field_name,), tuple((v,) for v in values), negate=negate)


def _dnat(text: str) -> Dnat:
    """--to-destination A[-B][:P[-Q]]; IPv6 with a port: [A[-B]]:P[-Q]."""
    if text.startswith("["):
        addr, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _Malformed(f"DNAT target {text!r} is not [address]:port")
        ports = rest[1:] if rest else ""
    elif text.count(":") > 1:  # IPv6 without a port
        addr, ports = text, ""
    else:
        addr, _, ports = text.partition(":")
    if not addr:
        raise _NotModelled(f"DNAT to port {ports} of the original destination")
    if "/" in ports:
        raise _NotModelled(f"DNAT with a base port ({text})")
    address = _range(addr)
    port = None
    if ports:
        low, _, high = ports.partition("-")
        port = PortRange(_port(low), _port(high or low))
        if port.low > port.high:
            raise _Malformed(f"DNAT target {text!r}: port range the wrong way round")
    target = IPNetwork(address[0]) if address.size == 1 else address
    return Dnat(address.version, target, port)


# -- ipset ------------------------------------------------------------------------------


@dataclass
class _Ipset:
    name: str
    type: str
    options: tuple[str, ...]
    line: int
    members: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (element, its options)

    @property
    def family(self) -> int | None:
        options = list(self.options)
        if "family" in options[:-1]:
            return {"inet": 4, "inet6": 6}.get(options[options.index("family") + 1])
        return None


def _parse_ipsets(text: str, source: str) -> dict[str, _Ipset]:
    """`ipset save` output: `create NAME TYPE OPTIONS` and `add NAME ELEMENT OPTIONS` lines."""
    sets: dict[str, _Ipset] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            words = [w.text for w in _split_words(line)]
        except _Malformed as exc:
            raise BackendError(str(exc), file=source, line=lineno) from None
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "create" and len(words) >= 3:
            sets[words[1]] = _Ipset(words[1], words[2], tuple(words[3:]), lineno)
        elif words[0] == "add" and len(words) >= 3 and words[1] in sets:
            sets[words[1]].members.append((words[2], tuple(words[3:])))
        else:
            raise BackendError(f"not a line of `ipset save` output: {line.strip()[:80]!r}", file=source, line=lineno)
    return sets


def _ipset_def(ipset: _Ipset, directions: list[str], set_id: str) -> SetDef:
    """The IR set an ipset lookup `--match-set NAME src,dst` tests; _NotModelled when it has none."""
    kind, _, dims_text = ipset.type.partition(":")
    dims = dims_text.split(",")
    if kind not in ("hash", "bitmap") or not set(dims) <= IPSET_DIMENSIONS or ipset.type == "bitmap:port":
        raise _NotModelled(f"ipset {ipset.name} of type {ipset.type}")
    if len(directions) != len(dims):
        raise _NotModelled(f"ipset {ipset.name} ({ipset.type}) looked up with {len(directions)} direction(s)")
    if "netmask" in ipset.options or "bitmask" in ipset.options:
        raise _NotModelled(f"ipset {ipset.name} with a netmask: members stand for whole networks")
    version = ipset.family or 4
    fields: list[str] = []
    for dim, direction in zip(dims, directions):
        if dim in ("ip", "net"):
            fields.append(addr_field(version, "saddr" if direction == "src" else "daddr"))
        elif dim == "port":
            fields += ["l4proto", "sport" if direction == "src" else "dport"]
        else:
            fields.append("iif" if direction == "src" else "oif")
    elements = []
    for member, options in ipset.members:
        if "nomatch" in options:
            raise _NotModelled(f"ipset {ipset.name} with nomatch members (exceptions inside its networks)")
        parts = member.split(",")
        if len(parts) != len(dims):
            raise _NotModelled(f"ipset {ipset.name} member {member!r}")
        key: list = []
        for dim, part in zip(dims, parts):
            if dim in ("ip", "net"):
                address = _range(part) if "-" in part else _network(part)
                if address.version != version:
                    raise _NotModelled(f"ipset {ipset.name}: member {member!r} of the other address family")
                key.append(address)
            elif dim == "port":
                proto, _, port = part.rpartition(":") if ":" in part else ("tcp", "", part)
                if proto not in ("tcp", "udp", "sctp", "udplite"):
                    raise _NotModelled(f"ipset {ipset.name} member {member!r} (not a port protocol)")
                low, _, high = port.partition("-")
                key += [PROTO_NUMBERS[proto], PortRange(_port(low, proto), _port(high or low, proto))]
            elif part.startswith("physdev:"):
                raise _NotModelled(f"ipset {ipset.name} member {member!r} (a bridge port)")
            else:
                key.append(part)
        comment = options[options.index("comment") + 1] if "comment" in options[:-1] else ""
        elements.append(Element(tuple(key), comment=comment))
    return SetDef(set_id, tuple(fields), tuple(elements))


# -- one table section -----------------------------------------------------------------


@dataclass
class _Section:
    """The lines of one `*table` ... `COMMIT` block."""

    table: str
    line: int
    header_family: int | None
    chains: dict[str, str | None] = field(default_factory=dict)  # declared chain -> policy (None: a user chain)
    rules: list[tuple[int, list[_Word]]] = field(default_factory=list)


@dataclass
class _SectionParser:
    section: _Section
    source: str
    ipsets: dict[str, _Ipset] | None
    versions: dict[int, tuple[int, str]] = field(default_factory=dict)  # address family seen -> (first line, what)
    sets: dict[str, SetDef] = field(default_factory=dict)
    line: int = 0

    def table(self, family: int | None) -> Table:
        rules: dict[str, list[Rule]] = {name: [] for name in self.section.chains}
        for line, words in self.section.rules:
            self.line = line
            try:
                chain, parsed = self._rule(words)
            except _Malformed as exc:
                raise BackendError(str(exc), file=self.source, line=self.line) from None
            rules.setdefault(chain, []).extend(parsed)
        family = self._family(family)
        builtins = BUILTIN_CHAINS[self.section.table]
        chains = []
        for name, chain_rules in rules.items():
            if name in builtins:
                hook, kind, priority = builtins[name]
                policy = self.section.chains.get(name) or "accept"  # used but not declared: iptables made it
                chains.append(Chain(name, tuple(chain_rules), hook, kind, priority, policy))
            else:
                chains.append(Chain(name, tuple(chain_rules)))
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

    # -- a rule line ------------------------------------------------------------------

    def _rule(self, words: list[_Word]) -> tuple[str, list[Rule]]:
        """One `-A CHAIN ...` line as IR rules: more than one when it holds a disjunction
        (`-s A,B` means one rule per address, as iptables-restore makes them)."""
        if words and COUNTERS_RE.match(words[0].text):
            words = words[1:]  # iptables-save -c
        if len(words) < 2 or CORE_OPTIONS.get(words[0].text) != "-A":
            raise _Malformed("a rule must start with -A CHAIN")
        chain = words[1].text
        if chain not in self.section.chains and chain not in BUILTIN_CHAINS[self.section.table]:
            raise _Malformed(f"chain {chain} is not declared in table {self.section.table}")
        core, blocks = self._group(words[2:])
        terms: list[Term] = []
        comments: list[str] = []
        target: _Block | None = None
        for item in core + blocks:  # iptables matches the core options before any match
            if isinstance(item, _Option):
                terms += self._core(item)
            elif item.kind == "target":
                target = item
            elif item.name == "comment":
                comments += [o.value for o in item.options]
            else:
                terms += self._module(item)
        decided = self._target(target)
        if decided is None:
            return chain, []
        action, note = decided
        comment = "; ".join(comments + ([note] if note else []))
        origin = f"{self.source}:{self.line}"
        rules = []
        for combination in product(*((t.alternatives if isinstance(t, _AnyOf) else ((t,),)) for t in terms)):
            matches = tuple(dict.fromkeys(c for part in combination for c in part))
            rules.append(Rule(matches, action, comment, origin))
        return chain, rules

    def _group(self, words: list[_Word]) -> tuple[list[_Option], list[_Block]]:
        """Words -> iptables' own options (-s, -p, ...) and match/target blocks with their options."""
        core: list[_Option] = []
        blocks: list[_Block] = []
        current: _Block | None = None
        implicit: _Block | None = None  # the match `-p tcp` loads: takes --dport without -m tcp
        negate = False
        i = 0
        while i < len(words):
            word = words[i]
            i += 1
            if word.text == "!" and not word.quoted:
                if negate:
                    raise _Malformed("'!' twice")
                negate = True
                continue
            flag = CORE_OPTIONS.get(word.text) if not word.quoted else None
            if flag in ("-m", "-j", "-g"):
                if negate or i >= len(words):
                    raise _Malformed(f"{word.text} needs a name (and no '!')")
                current = _Block("match" if flag == "-m" else "target", words[i].text, goto=flag == "-g")
                i += 1
                if current.kind == "target" and any(b.kind == "target" for b in blocks):
                    raise _Malformed("two targets in one rule")
                blocks.append(current)
            elif flag == "-f":
                core.append(_Option("-f", negate, ()))
            elif flag == "-c":
                i += 2  # packet and byte counters
            elif flag == "-A":
                raise _Malformed(f"{word.text} inside a rule")
            elif flag is not None:
                if i >= len(words):
                    raise _Malformed(f"{word.text} needs a value")
                core.append(_Option(flag, negate, (words[i],)))
                i += 1
                if flag == "-p" and not negate:
                    proto = _proto(words[i - 1].text)
                    name = IMPLICIT_MATCHES.get(proto) if proto is not None else None
                    implicit = _Block("match", name) if name else None
            elif word.text.startswith("--") and not word.quoted:
                owner = current
                if owner is None or (owner.name in MATCH_OPTIONS and word.text not in MATCH_OPTIONS[owner.name]
                                     and implicit is not None and word.text in MATCH_OPTIONS.get(implicit.name, {})):
                    owner = implicit  # iptables offers an option no other match takes to the protocol's match
                    if owner is None:
                        raise _Malformed(f"option {word.text} belongs to no match (add -m or -p)")
                    if not any(b is owner for b in blocks):
                        blocks.append(owner)
                i = self._take_option(owner, word.text, negate, words, i)
            else:
                raise _Malformed(f"unexpected word {word.shown()!r}")
            negate = False
        if negate:
            raise _Malformed("'!' at the end of the rule")
        return core, blocks

    def _take_option(self, block: _Block, name: str, negate: bool, words: list[_Word], i: int) -> int:
        known = (MATCH_OPTIONS if block.kind == "match" else TARGET_OPTIONS).get(block.name)
        if known is not None:
            if name not in known:
                what = "match" if block.kind == "match" else "target"
                raise _Malformed(f"unknown option {name} for {what} {block.name}{did_you_mean(name, known)}")
            arity = known[name]
            values = words[i : i + arity]
            if len(values) < arity or any(not v.quoted and (v.text == "!" or v.text.startswith("-") and len(v.text) > 1) for v in values):
                raise _Malformed(f"{block.name} {name} needs {arity} value{'s' if arity > 1 else ''}")
        else:  # a match or target kept as text: values up to the next option
            end = i
            while end < len(words) and (words[end].quoted or not (words[end].text.startswith("-") or words[end].text == "!")):
                end += 1
            values = words[i:end]
        block.options.append(_Option(name, negate, tuple(values)))
        return i + len(values)

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
            return [conds[0] if len(conds) == 1 else _AnyOf(tuple((c,) for c in conds))]
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

    # -- matches ------------------------------------------------------------------------

    def _module(self, block: _Block) -> list[Term]:
        """A match's options as terms; the options the IR cannot express (or all of them, for a
        match parsed nowhere here) become one Unmodelled naming the match and those options."""
        handler = MATCH_HANDLERS.get(block.name)
        if handler is None:
            return [Unmodelled(block.shown())]
        terms: list[Term] = []
        leftover = [o for o in block.options if not handler(self, block.name, o, terms)]
        return terms + ([Unmodelled(block.shown(leftover))] if leftover else [])

    # Each handler appends the terms of one option and says whether it could.

    def _ports(self, name: str, o: _Option, terms: list[Term]) -> bool:
        terms.append(_match("l4proto", [PORT_MATCHES[name]]))  # -m tcp only matches TCP packets
        if o.name not in PORT_OPTIONS:
            return False
        terms.append(_match(PORT_OPTIONS[o.name], [_port_range(o.value, name)], o.negate))
        return True

    def _multiport(self, name: str, o: _Option, terms: list[Term]) -> bool:
        ports = [_port_range(p) for p in o.value.split(",")]
        if o.name in MULTIPORT_OPTIONS:
            terms.append(_match(MULTIPORT_OPTIONS[o.name], ports, o.negate))
        elif o.negate:  # --ports: the source or the destination port; negated: neither
            terms += [_match("sport", ports, True), _match("dport", ports, True)]
        else:
            terms.append(_AnyOf(((_match("dport", ports),), (_match("sport", ports),))))
        return True

    def _conntrack(self, name: str, o: _Option, terms: list[Term]) -> bool:
        if o.name not in ("--state", "--ctstate", "--ctstatus"):
            return False
        words = o.value.split(",")
        states = STATE_WORDS if o.name != "--ctstatus" else {}
        statuses = STATUS_WORDS.get(o.name, {})
        if o.name == "--ctstatus" and "NONE" in words:
            return False  # no status bit set: not a value of ct.status
        unknown = [w for w in words if w not in states and w not in statuses]
        if unknown:
            raise _Malformed(f"{name} {o.name}: unknown {'status' if o.name == '--ctstatus' else 'state'} {unknown[0]}")
        parts = [
            _match(f, values, o.negate)
            for f, values in (("ct.state", [states[w] for w in words if w in states]), ("ct.status", [statuses[w] for w in words if w in statuses]))
            if values
        ]
        # a state or a status bit; negated: neither
        terms += parts if o.negate or len(parts) == 1 else [_AnyOf(tuple((p,) for p in parts))]
        return True

    def _iprange(self, name: str, o: _Option, terms: list[Term]) -> bool:
        addresses = _range(o.value)
        self._seen(addresses.version)
        terms.append(_match(addr_field(addresses.version, "saddr" if o.name == "--src-range" else "daddr"), [addresses], o.negate))
        return True

    def _set(self, name: str, o: _Option, terms: list[Term]) -> bool:
        """--match-set NAME src,dst: a lookup in the ipset's members when the `ipset save` text is
        given, else Unmodelled. Options that only count packets have no effect; --return-nomatch
        only matters with nomatch members, which are not modelled."""
        if o.name in SET_NO_EFFECT:
            return True
        if o.name not in ("--match-set", "--set"):
            return False
        set_name, directions = o.values[0].text, o.values[1].text.split(",")
        if not set(directions) <= {"src", "dst"}:
            raise _Malformed(f"set {set_name}: directions must be src or dst, not {o.values[1].text}")
        try:
            set_id = self._ipset(set_name, directions)
        except _NotModelled as exc:
            terms.append(Unmodelled(f"-m set {o.shown()} ({exc})"))
            return True
        terms.append(Match(self.sets[set_id].key, set_name=set_id, negate=o.negate))
        return True

    def _ipset(self, name: str, directions: list[str]) -> str:
        """The IR set for this lookup, made once per table: ipset name and directions."""
        set_id = f"{name} {','.join(directions)}"
        if set_id not in self.sets:
            if self.ipsets is None:
                raise _NotModelled("ipset contents not given")
            ipset = self.ipsets.get(name)
            if ipset is None:
                raise _NotModelled(f"no ipset {name} in the ipset listing")
            self.sets[set_id] = _ipset_def(ipset, directions, set_id)
        for f in self.sets[set_id].key:
            if f.startswith("ip"):
                self._seen(4 if f.startswith("ip.") else 6)
        return set_id

    # -- targets --------------------------------------------------------------------------

    def _target(self, block: _Block | None) -> tuple[Action, str] | None:
        """The rule's action and a note for its comment; None for a rule with no effect."""
        if block is None:
            return None  # counts packets, nothing else
        name = block.name
        builtins = BUILTIN_CHAINS[self.section.table]
        if name in self.section.chains and name not in builtins:
            if block.options:
                raise _Malformed(f"jump to chain {name} with options")
            return Jump(name, goto=block.goto), ""
        if block.goto or name in builtins:
            raise _Malformed(f"{'-g' if block.goto else '-j'} {name}: not a user chain of table {self.section.table}")
        if name in VERDICT_TARGETS:
            for o in block.options:  # only REJECT --reject-with: which ICMP error says the family
                kind = o.value
                if kind.startswith("icmp6-") or kind in ("no-route", "adm-prohibited", "addr-unreach", "port-unreach"):
                    self._seen(6, f"reject type {kind}")
                elif kind.startswith("icmp-"):
                    self._seen(4, f"reject type {kind}")
            return Verdict(VERDICT_TARGETS[name]), ""
        if name == "DNAT":
            targets = [o for o in block.options if o.name == "--to-destination"]
            if len(targets) != 1:
                return UnmodelledAction(f"{block.shown()}: DNAT with {len(targets)} targets"), ""
            try:
                dnat = _dnat(targets[0].value)
            except _NotModelled as exc:
                return UnmodelledAction(f"{block.shown()}: {exc}"), ""
            self._seen(dnat.family)
            return dnat, ""
        if name in LOG_TARGETS:
            return None
        if name in NO_VERDICT_TARGETS:
            return None, f"-j {name}: changes the packet, not its fate"
        why = FATE_TARGETS.get(name, "a target fwmatrix does not know")
        return UnmodelledAction(f"{block.shown()} ({why})"), ""


MATCH_HANDLERS: dict[str, Callable[[_SectionParser, str, _Option, list[Term]], bool]] = {
    **{name: _SectionParser._ports for name in PORT_MATCHES},
    "multiport": _SectionParser._multiport,
    "conntrack": _SectionParser._conntrack,
    "state": _SectionParser._conntrack,
    "iprange": _SectionParser._iprange,
    "set": _SectionParser._set,
}


# -- text -> sections -> tables -------------------------------------------------------------


def _header_family(line: str) -> int | None:
    m = SAVE_HEADER_RE.match(line)
    if m is None:
        return None
    tool = m[1]
    return 6 if tool.startswith("ip6tables") else 4 if tool.startswith("iptables") else None


def _save_sections(text: str, source: str) -> list[_Section]:
    """iptables-save text -> its table sections (lines checked, rules not yet parsed)."""
    sections: list[_Section] = []
    current: _Section | None = None
    header: int | None = None
    lineno = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            incompatible = INCOMPATIBLE_RE.match(line)
            if incompatible:  # iptables-save left the table out: auditing without it would be wrong
                raise BackendError(f"iptables cannot show table {incompatible[1]}: it holds nftables rules; audit it with the nftables backend", file=source, line=lineno)
            if SAVE_HEADER_RE.match(line):
                header = _header_family(line)
            continue
        if line.startswith("*"):
            if current is not None:
                raise BackendError(f"table {line[1:]} starts before table {current.table} has its COMMIT", file=source, line=lineno)
            name = line[1:].strip()
            if name not in BUILTIN_CHAINS:
                raise BackendError(f"unknown table {name!r}{did_you_mean(name, BUILTIN_CHAINS)}", file=source, line=lineno)
            current = _Section(name, lineno, header)
            continue
        if current is None:
            raise BackendError(f"{line[:40]!r} outside a table (a table starts with *filter, *nat, ...)", file=source, line=lineno)
        if line == "COMMIT":
            sections.append(current)
            current = None
        elif line.startswith(":"):
            _declare(current, line, lineno, source)
        elif line.startswith(("-", "[")):
            try:
                current.rules.append((lineno, _split_words(line)))
            except _Malformed as exc:
                raise BackendError(str(exc), file=source, line=lineno) from None
        else:
            raise BackendError(f"not a table, chain, rule, COMMIT or comment line: {line[:60]!r}", file=source, line=lineno)
    if current is not None:
        raise BackendError(f"table {current.table} has no COMMIT", file=source, line=lineno)
    return sections


def _declare(section: _Section, line: str, lineno: int, source: str) -> None:
    """`:NAME POLICY [packets:bytes]`: POLICY is ACCEPT or DROP for built-in chains, '-' for others."""
    words = line[1:].split()
    if len(words) not in (2, 3) or (len(words) == 3 and not COUNTERS_RE.match(words[2])):
        raise BackendError(f"a chain line is ':NAME POLICY [packets:bytes]', not {line!r}", file=source, line=lineno)
    name, policy = words[0], words[1]
    builtin = name in BUILTIN_CHAINS[section.table]
    if name in section.chains:
        raise BackendError(f"chain {name} declared twice", file=source, line=lineno)
    if builtin and policy not in ("ACCEPT", "DROP"):
        raise BackendError(f"built-in chain {name} needs policy ACCEPT or DROP, not {policy}", file=source, line=lineno)
    if not builtin and policy != "-":
        raise BackendError(f"{name} is not a built-in chain of table {section.table}: its policy must be '-'", file=source, line=lineno)
    section.chains[name] = policy.lower() if builtin else None


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
    tables: dict[tuple[str, str], Table] = {}
    for section in _save_sections(text, source):
        table = _SectionParser(section, source, sets).table(family)
        key = (table.family, table.name)
        if key in tables:
            raise BackendError(
                f"a second {table.name} table for {table.family}: give each ip6tables-save part its "
                "'# Generated by ip6tables-save' line, or parse the families separately", file=source, line=section.line)
        tables[key] = table
    if file_mode(text) == "own-chains":  # fwmatrix's own file: judged as it runs once applied
        tables = {key: _hooked(table, source) for key, table in tables.items()}
    return Ruleset(tuple(tables.values()))


def _hooked(table: Table, source: str) -> Table:
    """An own-chains table with the jumps apply adds: each FWM-<BUILTIN> chain is jumped to first
    thing from its built-in chain (made, accepting, where the file does not declare it)."""
    builtins = BUILTIN_CHAINS[table.name]
    chains = {c.name: c for c in table.chains}
    for builtin, (hook, kind, priority) in builtins.items():
        entry = CHAIN_PREFIX + builtin
        if entry not in chains:
            continue
        base = chains.get(builtin) or Chain(builtin, (), hook, kind, priority, "accept")
        if not any(isinstance(r.action, Jump) and r.action.chain == entry for r in base.rules):
            jump = Rule((), Jump(entry), origin=f"{source}: -A {builtin} -j {entry} (the jump apply adds)")
            chains[builtin] = replace(base, rules=(jump,) + base.rules)
    return replace(table, chains=tuple(chains.values()))


def read_live() -> Ruleset:
    """The iptables and ip6tables rulesets of the current network namespace (with its ipsets).

    `iptables-save` is the system's default variant. When it warns that iptables-legacy
    tables are present too, those run in the kernel as well and are read with
    `iptables-legacy-save` (as tables named "<table>-legacy")."""
    ipsets = None
    if have("ipset"):
        proc = subprocess.run([tool_path("ipset"), "save"], capture_output=True, text=True, timeout=120, check=False)
        ipsets = proc.stdout if proc.returncode == 0 else None  # no ipset support: set matches stay Unmodelled
    tables: list[Table] = []
    for family, tool in SAVE_TOOL.items():
        proc = _save(tool)
        tables += parse_save(proc.stdout, family, tool, ipsets).tables
        if LEGACY_WARNING_RE.search(proc.stderr):
            legacy_tool = tool.replace("tables-save", "tables-legacy-save")
            legacy = parse_save(_save(legacy_tool).stdout, family, legacy_tool, ipsets)
            tables += [Table(t.family, f"{t.name}-legacy", t.chains, t.sets) for t in legacy.tables]
    return Ruleset(tuple(tables))


def _save(tool: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([tool_path(tool)], capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise BackendError(f"{tool} failed: {(proc.stderr or proc.stdout).strip() or proc.returncode}")
    return proc
