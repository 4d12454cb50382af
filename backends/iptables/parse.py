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
gives them their meaning."""

from __future__ import annotations

from collections.abc import Callable, Iterable
import re
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Any

from netaddr import AddrFormatError, IPNetwork

from fwmatrix.backends.iptables.commands import KernelRule, TableState, unmarked
from fwmatrix.backends.iptables.ipset import _Ipset, _ipset_def, _parse_ipsets
from fwmatrix.backends.iptables.modes import _hooked, file_mode
from fwmatrix.backends.iptables.names import BUILTIN_CHAINS, CT_STATES, CT_STATUS, SAVE_TOOL
from fwmatrix.backends.iptables.reader import (
    PORT_MATCHES,
    VERDICT_TARGETS,
    _Block,
    _c_number,
    _command,
    _grouped,
    _ip,
    _Made,
    _Malformed,
    _Rest,
    _network,
    _not_bits,
    _not_ct_port,
    _not_host,
    _not_mac,
    _not_mark,
    _not_nat_ports,
    _is_service,
    _not_snat,
    _NotModelled,
    _Option,
    _port,
    _port_range,
    _proto,
    _range,
    _save_sections,
    _Section,
    _Word,
    _header_family,
)
from fwmatrix.errors import BackendError, did_you_mean
from fwmatrix.gcpause import gc_paused
from fwmatrix.intervals import mac_address
from fwmatrix.ir import (
    ADDRESS_TYPES, TCP_FLAG_BITS, Action, Chain, Dnat, Jump, Masquerade, Match, Notrack, Redirect, Rule, Ruleset, SetDef, Snat, Table, TcpFlags, Unmodelled,
    UnmodelledAction, Verdict, addr_field, distinct, packet_copies,
)
from fwmatrix.matrix.model import PortRange

IR_FAMILY = {4: "ip", 6: "ip6"}
STATE_WORDS = {s.upper(): s for s in CT_STATES}
# --ctstate SNAT/DNAT and --ctstatus X test ct status bits
STATUS_WORDS = {option: {word: status for status, (opt, word) in CT_STATUS.items() if opt == option} for option in ("--ctstate", "--ctstatus")}
LOG_TARGETS = {"LOG", "NFLOG", "ULOG", "TRACE", "AUDIT"}  # a rule with one of these decides and changes nothing
# Targets that change the packet or its connection but never whether it is forwarded
# (source NAT happens after the forward decision; marks only matter to -m mark, which is Unmodelled).
NO_VERDICT_TARGETS = {
    "SNAT", "MASQUERADE", "SNPT", "MARK", "CONNMARK", "TCPMSS", "CLASSIFY", "DSCP", "TOS", "TTL", "HL", "ECN",
    "SECMARK", "CONNSECMARK", "CHECKSUM", "SET", "IDLETIMER", "LED", "RATEEST", "HMARK", "TCPOPTSTRIP",
}
# Targets that may change the packet's fate in ways the IR cannot say.
FATE_TARGETS = {
    "REDIRECT": "sends the packet to the firewall itself",
    "TPROXY": "sends the packet to a local socket",
    "NFQUEUE": "a userspace program decides the verdict",
    "QUEUE": "a userspace program decides the verdict",
    "CT": "changes connection tracking (a helper, a zone; alone, --notrack is modelled)",
    "SYNPROXY": "answers the TCP handshake itself",
    "NETMAP": "maps addresses prefix to prefix",
    "DNPT": "translates the destination prefix",
    "CLUSTERIP": "answers for a cluster address",
}
PORT_OPTIONS = {"--sport": "sport", "--source-port": "sport", "--dport": "dport", "--destination-port": "dport"}
MULTIPORT_OPTIONS = {"--sports": "sport", "--source-ports": "sport", "--dports": "dport", "--destination-ports": "dport"}
ADD_SET_RE = re.compile(r"--add-set\s+\"?([^\s\"]+)")  # the SET target adding to an ipset
SET_NO_EFFECT = {"--return-nomatch", "--update-counters", "--update-subcounters"}  # see _SectionParser._set

Cond = Match | Unmodelled


@dataclass(frozen=True)
class _AnyOf:
    """A disjunction iptables allows in one rule (`--ports`: sport or dport; `--ctstate NEW,DNAT`):
    the rule becomes one IR rule per alternative, which means the same (first match wins)."""

    alternatives: tuple[tuple[Cond, ...], ...]
    kernel_rules: bool = False  # `-s A,B`: one kernel rule each (they count for `-I CHAIN N`)


Term = Cond | _AnyOf


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
        decided = self._target(target)
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

    # -- matches ------------------------------------------------------------------------

    def _module(self, block: _Block) -> list[Term]:
        """A match's options as terms; the options the IR cannot express (or all of them, for a
        match parsed nowhere here) become one Unmodelled naming the match and those options."""
        if block.name in EXTENSION_HEADERS:  # whatever its options test, only packets with the header match
            return [_match("exthdr", [block.name])]
        handler = MATCH_HANDLERS.get(block.name)
        if handler is None or (block.name in WHOLE_BLOCK_OPTIONS and any(o.name in WHOLE_BLOCK_OPTIONS[block.name] for o in block.options)):
            return [Unmodelled(block.shown())]
        if block.name == "conntrack":
            tuple_terms = _conntrack_tuple(self, block)
            if tuple_terms is not None:
                return tuple_terms
        terms: list[Term] = []
        leftover = [o for o in block.options if not handler(self, block.name, o, terms)]
        return terms + ([Unmodelled(block.shown(leftover))] if leftover else [])

    # Each handler appends the terms of one option and says whether it could.

    def _ports(self, name: str, o: _Option, terms: list[Term]) -> bool:
        terms.append(_match("l4proto", [PORT_MATCHES[name]]))  # -m tcp only matches TCP packets
        if name == "tcp" and o.name in ("--syn", "--tcp-flags"):
            terms.append(_match("tcp.flags", [SYN_ONLY if o.name == "--syn" else _tcp_flags(o.values[0].text, o.values[1].text)], o.negate))
            return True
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
            self.sets[set_id] = replace(_ipset_def(ipset, directions, set_id), dynamic=name in self.filled)
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
        if name in self.state.chains and name not in builtins:
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
        if name == "REDIRECT" and self.section.table == "nat" and {o.name for o in block.options} <= {"--to-ports", "--random"}:
            return _redirect(block), ""
        if name == "NOTRACK" or (name == "CT" and [o.name for o in block.options] == ["--notrack"]):
            return Notrack(), ""
        if name in LOG_TARGETS:
            return None
        if name in ("SNAT", "MASQUERADE") and self.section.table == "nat":
            translation = _source_nat(name, block)
            if isinstance(translation, Snat):
                self._seen(translation.family)
            if translation is None:  # ends the nat chain as accept does, to an address not read (audit/snat.py says so)
                return UnmodelledAction(f"{block.shown()} (source NAT to a range: the address it picks is not read)"), ""
            return translation, ""  # ends the nat chain as accept does; audit/snat.py judges the address
        if name == "TEE":  # the original goes on, exact; the copy leaves towards the gateway
            return packet_copies(block.shown(), "each packet the rule matches"), ""
        if name in NO_VERDICT_TARGETS:
            return None, f"-j {name}: changes the packet, not its fate"
        why = FATE_TARGETS.get(name, "a target fwmatrix does not know")
        return UnmodelledAction(f"{block.shown()} ({why})"), ""


def _redirect(block: _Block) -> Redirect | UnmodelledAction:
    """`-j REDIRECT [--to-ports P[-Q]] [--random]`: to the firewall itself, never forwarded
    (the audit: prerouting.delivered_locally); ports written as strtoul reads them (`0x50`)
    are left unmodelled."""
    ports = [o.value for o in block.options if o.name == "--to-ports"]
    try:
        return Redirect(_port_range(ports[0] if _is_service(ports[0]) else ports[0].replace("-", ":")) if ports else None)
    except _Malformed:
        return UnmodelledAction(f"{block.shown()} (sends the packet to the firewall itself, to ports not read)")


# -m conntrack options on the connection's original tuple (see _conntrack_tuple)
CT_TUPLE_OPTIONS = ("--ctproto", "--ctorigsrc", "--ctorigdst", "--ctorigsrcport", "--ctorigdstport")
PORT_TUPLE_PROTOCOLS = {6, 17, 33, 132, 136}  # their tuples hold ports (ICMP's: type, code and id)


def _conntrack_tuple(parser: _SectionParser, block: _Block) -> list[Term] | None:
    """`-m conntrack [--ctstate S] --ctproto P --ctorigdst A --ctorigdstport N ...`, as the kernel
    reads it (xt_conntrack): a packet without a connection (invalid, untracked) matches by
    its state alone when the match names states, else not at all; for the others the options
    test the connection's original tuple. For a NEW connection's first packet that tuple is the
    packet as it arrived: its protocol and source exactly, and its destination (address and
    port, for protocols whose tuples hold ports) where no DNAT translated it; on a translated
    one, and on established and related packets (replies, ICMP errors of another connection),
    they are judged both ways. None when the block is not of this kind, or has options this
    does not read."""
    names = [o.name for o in block.options]
    if not any(n in CT_TUPLE_OPTIONS for n in names) or set(names) - {*CT_TUPLE_OPTIONS, "--ctdir", "--state", "--ctstate"}:
        return None
    if len(names) != len(set(names)):
        return None
    options = {o.name: o for o in block.options}
    state = options.get("--ctstate") or options.get("--state")
    if state is not None and (state.negate or not set(state.value.split(",")) <= set(STATE_WORDS)):
        return None  # the virtual states SNAT/DNAT, or a negation: read option by option
    states = {STATE_WORDS[w] for w in state.value.split(",")} if state is not None else set(CT_STATES)
    proto = options.get("--ctproto")
    number = _proto(proto.value) if proto is not None else None
    ports_known = proto is not None and not proto.negate and number in PORT_TUPLE_PROTOCOLS
    text = f"-m conntrack {' '.join(o.shown() for o in block.options)}"
    # each entry: the alternatives (conjunctions) one option allows a NEW packet, before DNAT
    by_option: list[tuple[str, list[tuple[Cond, ...]]]] = []
    for o in block.options:
        if o.name == "--ctproto" and number is not None:
            by_option.append((o.name, [(_match("l4proto", [number], o.negate),)]))
        elif o.name in ("--ctorigsrc", "--ctorigdst"):
            net = _network(o.value)
            parser._seen(net.version)
            by_option.append((o.name, [(_match(addr_field(net.version, "saddr" if o.name == "--ctorigsrc" else "daddr"), [net], o.negate),)]))
        elif o.name == "--ctorigdstport":
            port = (_match("dport", [_port_range(o.value)], o.negate),)
            if ports_known:
                by_option.append((o.name, [port]))
            else:  # ICMP's tuple holds its type, code and id there
                in_ports = _match("l4proto", sorted(PORT_TUPLE_PROTOCOLS))
                by_option.append((o.name, [(in_ports, *port), (replace(in_ports, negate=True), Unmodelled(f"{text} (a protocol without ports)"))]))
        elif o.name == "--ctorigsrcport":
            by_option.append((o.name, [(Unmodelled(f"-m conntrack {o.shown()}"),)]))  # no source-port dimension
        elif o.name == "--ctdir" and o.value.upper() not in ("ORIGINAL", "REPLY"):
            raise _Malformed(f"conntrack --ctdir: ORIGINAL or REPLY, not {o.value}")
        elif o.name == "--ctdir" and (o.value.upper() == "REPLY") != o.negate:
            states.discard("new")  # a NEW connection's first packet goes the original way
    alternatives: list[tuple[Cond, ...]] = []
    if "new" in states:
        new = _match("ct.state", ["new"])
        untranslated = [alts for _, alts in by_option]
        kept = [alts for name, alts in by_option if name not in ("--ctorigdst", "--ctorigdstport")]  # what DNAT leaves alone
        if len(kept) < len(untranslated):  # the destination before DNAT: a translated packet's is not its own
            alternatives += [(new, _match("ct.status", ["dnat"], True), *_joined(combination)) for combination in product(*untranslated)]
            alternatives += [(new, _match("ct.status", ["dnat"]), *_joined(combination), Unmodelled(f"{text} (the destination before DNAT)"))
                             for combination in product(*kept)]
        else:
            alternatives += [(new, *_joined(combination)) for combination in product(*untranslated)]
    later = sorted(states & {"established", "related"})
    if later:
        alternatives.append((_match("ct.state", later), Unmodelled(f"{block.shown()} (on packets after a connection's first)")))
    without = sorted(states & {"invalid", "untracked"}) if state is not None else []
    if without:
        alternatives.append((_match("ct.state", without),))  # no connection: the state alone decides
    if not alternatives:
        return [_match("ct.state", [])]  # never matches
    return list(alternatives[0]) if len(alternatives) == 1 else [_AnyOf(tuple(alternatives))]


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


def _joined(combination: tuple[tuple[Cond, ...], ...]) -> tuple[Cond, ...]:
    return tuple(cond for part in combination for cond in part)


# --tcp-flags names (iptables' ALL is the six classic flags, as in libxt_tcp)
TCP_FLAG_NAMES = {name.upper(): bit for name, bit in TCP_FLAG_BITS.items() if name in ("fin", "syn", "rst", "psh", "ack", "urg")}
TCP_FLAG_NAMES |= {"ALL": 0x3F, "NONE": 0}
SYN_ONLY = TcpFlags(0x17, 0x02)  # --syn: --tcp-flags FIN,SYN,RST,ACK SYN


def _tcp_flags(mask: str, value: str) -> TcpFlags:
    def bits(words: str) -> int:
        total = 0
        for word in words.split(","):
            if word.upper() not in TCP_FLAG_NAMES:
                raise _Malformed(f"--tcp-flags: unknown flag {word}")
            total |= TCP_FLAG_NAMES[word.upper()]
        return total
    return TcpFlags(bits(mask), bits(value))


# --icmp-type names iptables knows (a type/code pair or a name that stands for one stays Unmodelled)
ICMP_TYPE_NAMES = {
    "echo-reply": 0, "pong": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
    "echo-request": 8, "ping": 8, "router-advertisement": 9, "router-solicitation": 10,
    "time-exceeded": 11, "ttl-exceeded": 11, "parameter-problem": 12, "timestamp-request": 13,
    "timestamp-reply": 14, "address-mask-request": 17, "address-mask-reply": 18,
}


# --icmpv6-type names ip6tables knows (both spellings); a type/code pair stays Unmodelled
ICMPV6_TYPE_NAMES = {
    "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3, "ttl-exceeded": 3, "parameter-problem": 4,
    "echo-request": 128, "ping": 128, "echo-reply": 129, "pong": 129, "router-solicitation": 133, "router-advertisement": 134,
    "neighbour-solicitation": 135, "neighbor-solicitation": 135, "neighbour-advertisement": 136,
    "neighbor-advertisement": 136, "redirect": 137,
}


# names that stand for a type and a code (iptables' and ip6tables' own tables)
ICMP_CODE_NAMES = {
    "network-unreachable": (3, 0), "host-unreachable": (3, 1), "protocol-unreachable": (3, 2), "port-unreachable": (3, 3),
    "fragmentation-needed": (3, 4), "source-route-failed": (3, 5), "network-unknown": (3, 6), "host-unknown": (3, 7),
    "network-prohibited": (3, 9), "host-prohibited": (3, 10), "TOS-network-unreachable": (3, 11),
    "TOS-host-unreachable": (3, 12), "communication-prohibited": (3, 13), "host-precedence-violation": (3, 14),
    "precedence-cutoff": (3, 15), "network-redirect": (5, 0), "host-redirect": (5, 1), "TOS-network-redirect": (5, 2),
    "TOS-host-redirect": (5, 3), "ttl-zero-during-transit": (11, 0), "ttl-zero-during-reassembly": (11, 1),
    "ip-header-bad": (12, 0), "required-option-missing": (12, 1),
}
ICMPV6_CODE_NAMES = {
    "no-route": (1, 0), "communication-prohibited": (1, 1), "beyond-scope": (1, 2), "address-unreachable": (1, 3),
    "port-unreachable": (1, 4), "failed-policy": (1, 5), "reject-route": (1, 6), "ttl-zero-during-transit": (3, 0),
    "ttl-zero-during-reassembly": (3, 1), "bad-header": (4, 0), "unknown-header-type": (4, 1), "unknown-option": (4, 2),
}


# -m icmp / -m icmp6: the option, the protocol it implies, the IR fields, the type names and those with a code
ICMP_MATCHES = {
    "icmp": ("--icmp-type", 1, ("icmp.type", "icmp.code"), ICMP_TYPE_NAMES, ICMP_CODE_NAMES),
    "icmp6": ("--icmpv6-type", 58, ("icmpv6.type", "icmpv6.code"), ICMPV6_TYPE_NAMES, ICMPV6_CODE_NAMES),
}


def _icmp(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    """`-m icmp --icmp-type T`, `-m icmp6 --icmpv6-type T`: the type; `T/C` or a name that
    stands for both (`port-unreachable`) is the type and code as one key (a negation is of
    both together); `any` is every ICMP packet."""
    option, protocol, fields, names, code_names = ICMP_MATCHES[name]
    terms.append(_match("l4proto", [protocol]))
    value = o.value.strip()
    if o.name == option and value == "any" and not o.negate:
        return True
    typed, slash, code = value.partition("/")
    number = int(typed) if typed.isdigit() else names.get(typed)
    pair = code_names.get(value) if not slash else (number, int(code)) if code.isdigit() and number is not None else None
    key = pair or (number,)
    if o.name != option or (slash and pair is None) or key[0] is None or not all(0 <= n <= 255 for n in key):  # type: ignore[operator]
        return False
    terms.append(Match(fields[:len(key)], (key,), negate=o.negate))
    return True


def _physdev(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    """`-m physdev --physdev-is-bridged` (the evaluator judges it by the interfaces,
    evaluate/bridged.py); the bridge ports' names stay unmodelled."""
    if o.name != "--physdev-is-bridged":
        return False
    terms.append(_match("physdev.bridged", [1], o.negate))
    return True


def _mac(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    """`-m mac [!] --mac-source M`: the link-layer source, judged as atoms of the in-interface
    (intervals.Interfaces). A value that is not a MAC address (published files hide theirs:
    `XX:XX:XX:XX:XX:XX`) was refused before (reader._check_values), as iptables-restore does."""
    if o.name != "--mac-source" or len(o.values) != 1:
        return False
    terms.append(_match("ether.saddr", [mac_address(o.value)], o.negate))
    return True


def _owner(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    """`-m owner` options as tests on the packet's local socket (evaluate/sockets.py). Without
    a socket xt_owner holds when every option is negated: as the conjunction of these terms
    (`--suppl-groups`, never negated, needs a socket)."""
    terms.append(_match("socket", [" ".join(["-m owner", o.name, *(v.shown() for v in o.values)])], o.negate))
    return True


# matches on an IPv6 extension header: the kernel's never holds for a packet without it
# (ipv6_find_hdr finds none: false, negated options too)
EXTENSION_HEADERS = ("rt", "frag", "hbh", "dst")

# -m addrtype: the kernel's route types, as iptables names them
ADDRESS_TYPE_WORDS = {name.upper(): name for name in ADDRESS_TYPES}
JUDGED_TYPES = ("LOCAL", "MULTICAST", "BROADCAST")  # evaluate/addrtype.py
# options that change what a match's other options mean: the whole match is unmodelled
# (`--limit-iface-in`: the type as one interface sees it, where `! LOCAL` matches more)
WHOLE_BLOCK_OPTIONS = {"addrtype": ("--limit-iface-in", "--limit-iface-out")}


def _addrtype(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    """`-m addrtype --dst-type LOCAL` as daddr.type (judged with the firewall's addresses,
    evaluate/addrtype.py), MULTICAST and BROADCAST likewise (by their fixed addresses); other
    types, or several at once, stay unmodelled."""
    words = o.value.upper().split(",")  # iptables compares the names case-insensitively
    unknown = [w for w in words if w not in ADDRESS_TYPE_WORDS]
    if unknown:
        raise _Malformed(f"addrtype {o.name}: unknown address type {unknown[0]}{did_you_mean(unknown[0], ADDRESS_TYPE_WORDS)}")
    if len(set(words)) != 1 or words[0] not in JUDGED_TYPES:
        return False  # other types, or several: the evaluator judges only these alone (unmodelled)
    terms.append(_match("daddr.type" if o.name == "--dst-type" else "saddr.type", [ADDRESS_TYPE_WORDS[words[0]]], o.negate))
    return True


# -m hl (IPv6 hop limit), -m ttl (IPv4 TTL): `--hl-eq N` (negated: not N), `--hl-lt N`, `--hl-gt N`
HOP_MATCHES = {"hl": "hoplimit", "ttl": "ttl"}


def _hop_limit(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    """The hop limit (TTL) as a range of values; the evaluator judges it both ways on forwarded
    packets and exactly on neighbour discovery (hop limit 255: evaluate/neighbours.py)."""
    relation = o.name.rpartition("-")[2]
    value = o.value.strip()
    if relation not in ("eq", "lt", "gt") or (o.negate and relation != "eq"):
        return False
    if not value.isdigit() or int(value) > 255:
        raise _Malformed(f"{name} {o.name}: {value!r} is not a hop limit (0-255)")
    n = int(value)
    low, high = {"eq": (n, n), "lt": (0, n - 1), "gt": (n + 1, 255)}[relation]
    terms.append(_match(HOP_MATCHES[name], [PortRange(low, high)] if low <= high else [], o.negate))
    return True


def _not_icmp_type(names: Iterable[str]) -> Callable[[str], str | None]:
    """--icmp-type as iptables reads it: `TYPE[/CODE]` (numbers to 255, as strtoul reads
    them), or a name or the start of exactly one name, in any case."""
    known = [name.lower() for name in names]

    def check(text: str) -> str | None:
        typed, slash, code = text.partition("/")
        numbers = [_c_number(typed), *([_c_number(code)] if slash else [])]
        if all(n is not None and n <= 255 for n in numbers):
            return None
        if not slash and typed and sum(name.startswith(typed.lower()) for name in known) == 1:
            return None
        return "an ICMP type (a name, TYPE or TYPE/CODE)"
    return check


# The option values iptables-restore refuses (reader's checks), by module and option.
VALUE_CHECKS: dict[tuple[str, str], Callable[[str], str | None]] = {
    ("mac", "--mac-source"): _not_mac,
    **{(module, "--mark"): _not_mark for module in ("mark", "connmark")},
    **{(target, option): _not_mark for target in ("MARK", "CONNMARK") for option in ("--set-mark", "--set-xmark")},
    **{("MARK", option): _not_bits for option in ("--and-mark", "--or-mark", "--xor-mark")},
    **{("CONNMARK", option): _not_bits for option in ("--and-mark", "--or-mark", "--xor-mark", "--nfmask", "--ctmask", "--mask")},
    **{("conntrack", f"--ct{way}{end}"): _not_host for way in ("orig", "repl") for end in ("src", "dst")},
    **{("conntrack", f"--ct{way}{end}port"): _not_ct_port for way in ("orig", "repl") for end in ("src", "dst")},
    **{(target, "--to-ports"): _not_nat_ports for target in ("MASQUERADE", "REDIRECT")},
    ("SNAT", "--to-source"): _not_snat,
    ("icmp", "--icmp-type"): _not_icmp_type(["any", *ICMP_TYPE_NAMES, *ICMP_CODE_NAMES]),  # ip6tables knows no `any`
    ("icmp6", "--icmpv6-type"): _not_icmp_type([*ICMPV6_TYPE_NAMES, *ICMPV6_CODE_NAMES]),
}


def _check_values(blocks: list[_Block]) -> None:
    """Raise _Malformed for the first option value iptables-restore would refuse."""
    for block in blocks:
        for o in block.options:
            check = VALUE_CHECKS.get((block.name, o.name))
            wanted = check(o.value) if check is not None and o.values else None
            if wanted is not None:
                raise _Malformed(f"{block.shown([o])}: not {wanted} (iptables-restore refuses it)")


MATCH_HANDLERS: dict[str, Callable[[_SectionParser, str, _Option, list[Term]], bool]] = {
    **{name: _SectionParser._ports for name in PORT_MATCHES},
    **{name: _icmp for name in ICMP_MATCHES},
    "multiport": _SectionParser._multiport,
    "conntrack": _SectionParser._conntrack,
    "state": _SectionParser._conntrack,
    "iprange": _SectionParser._iprange,
    "set": _SectionParser._set,
    "addrtype": _addrtype,
    "physdev": _physdev,
    "owner": _owner,
    "mac": _mac,
    **{name: _hop_limit for name in HOP_MATCHES},
}


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


SNAT_FLAGS = {"--random", "--random-fully", "--persistent"}  # how ports are picked: the address stays


def _source_nat(name: str, block: object) -> Snat | Masquerade | None:
    """`-j MASQUERADE`, `-j SNAT --to-source A` (one address, any ports and flags: the audit
    judges the address, audit/snat.py): the IR's source NAT; None for other forms (a range
    of addresses: which one a connection gets is not read)."""
    options = getattr(block, "options", ())
    if name == "MASQUERADE":
        return Masquerade() if all(o.name in ("--to-ports", *SNAT_FLAGS) for o in options) else None
    targets = [o for o in options if o.name == "--to-source"]
    if len(targets) != 1 or any(o.name not in SNAT_FLAGS for o in options if o is not targets[0]):
        return None
    text = targets[0].value
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with ports
    try:
        address = IPNetwork(text)
    except (AddrFormatError, ValueError):
        return None
    return Snat(address.version, address) if address.size == 1 and "/" not in text else None
