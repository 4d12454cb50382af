"""The reader: pf text (a pf.conf, or a `pfctl -sr` / `-sn` / `-sa` listing) as the
rules it says (syntax.py), macros expanded, anchors given read in place.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Iterable, Mapping, Sequence

from netaddr import IPNetwork, IPRange

from fwmatrix.backends.pf.include import Includes
from fwmatrix.backends.pf.lexer import _NL, _Bad, _Cursor, _lex, _listing_text, _statements, _Tok
from fwmatrix.backends.pf.names import IDENT_RE, PF_KEYWORDS, wildcard_child
from fwmatrix.backends.pf.own import OwnAddresses
from fwmatrix.backends.pf.syntax import ROUTE_UNKNOWN, _Group, _Host, _If, _Item, _Opaque, _Ports, _Route, _Rule, _TableValue, _Target
from fwmatrix.backends.pf.values import (
    PF_PROTOCOLS, PF_ICMP_TYPES, PF_ICMP6_TYPES, PF_ICMP_CODES, PF_ICMP6_CODES, _IF_ADDRESS_RE, _net, _port_number, _merge_ports, _port_op, _table_value, _iface_host, _icmp_types, _table_words, _table_entries,
)
from fwmatrix.errors import BackendError
from fwmatrix.matrix.model import PortRange

_MACRO_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
# Interface groups OpenBSD makes by itself: their members are known only on the firewall.
PF_GROUPS = frozenset({"egress", "carp", "enc", "pflog", "pfsync", "tun", "tap", "gif", "gre", "wg", "vlan", "bridge",
                       "veb", "tpmr", "pppoe", "all"})


# -- the reader: statements -> items -----------------------------------------------------


# What a filter rule may say after its hosts and fwmatrix does not need: ignored, with
# their arguments (the count of tokens that follow, or a group).
_IGNORED_OPTIONS = {"ridentifier": 1, "tracker": 1, "flags": 1, "allow-opts": 0, "queue": 1, "dnpipe": 1, "dnqueue": 1,
                    "scrub": 1, "max-mss": 1, "min-ttl": 1, "random-id": 0, "no-df": 0}
_STATE_LIMITS = ("max", "max-src-conn", "max-src-conn-rate", "max-src-nodes", "max-src-states", "overload")
_POOL_OPTIONS = ("round-robin", "random", "sticky-address", "least-states", "bitmask", "static-port", "prefer-ipv6")


def run_time_table(name: str, overloads: Sequence[str] = ()) -> str:
    """What is unknown of a table the file lists no addresses of; `overloads`: the rules that
    add the sources past their state limits to it (any source those rules pass: nothing
    bounds them, and pfctl may add to the table too)."""
    by = f": by overload in {', '.join(overloads)} (the sources past its state limits) or by pfctl" if overloads else ""
    return f"table <{name}> has no addresses in the file (they are added at run time{by})"


def _is_hash_key(word: str | None) -> bool:
    return word is not None and word not in PF_KEYWORDS and (word[:1].isalnum() or word[:1] == '"')
# Statements that do not change what is forwarded: normalisation, queues, limiters.
_IGNORED_STATEMENTS = frozenset({"scrub", "altq", "queue", "scrub-anchor", "dummynet-anchor", "state", "source"})
# Statements whose rules are elsewhere, and the chains those rules may act in: an
# include that cannot be read (the text is no file) may hold anything, ether rules may block.
_OPAQUE_STATEMENTS = {"include": frozenset({"in", "out", "nat"}), "ether": frozenset({"in", "out"})}
# ... and anchors not given to parse_ruleset: filter anchors may block or pass (and on
# OpenBSD translate), FreeBSD's translation anchors translate, a nat-anchor may hold `nat pass`.
_ANCHOR_CHAINS = {"anchor": frozenset({"in", "out"}), "rdr-anchor": frozenset({"nat"}), "binat-anchor": frozenset({"nat"}),
                  "nat-anchor": frozenset({"out"})}


class _Reader:
    def __init__(self, source: str, dialect: str, tables: Mapping[str, str] | None, anchors: Mapping[str, str] | None,
                 interfaces: Iterable[str] = (), groups: Mapping[str, Sequence[str]] | None = None,
                 own: OwnAddresses | None = None, includes: Includes | None = None) -> None:
        self.source = source
        # where includes are read from: None when the text is no file (nothing to resolve against)
        self.includes = includes
        self.own = own or OwnAddresses()
        # the firewall's, when known (none of them is a group), and those whose addresses are given
        self.interfaces = frozenset(interfaces) | frozenset(self.own.by_iface)
        self.groups = {name: tuple(members) for name, members in (groups or {}).items()}
        self.dialect = dialect
        self.macros: dict[str, str] = {}
        self.tables: dict[str, _TableValue] = {}
        self.given_tables = {name: _table_value(_table_entries(_table_words(text))) for name, text in (tables or {}).items()}
        self.anchors = dict(anchors or {})
        # the anchor and table names the text reads (the given anchors' texts too): a name given
        # that none of them is was never read (cli/rulesetinput.py says so)
        self.referenced_anchors: set[str] = set()
        self.referenced_tables: set[str] = set()
        self.skip: list[tuple[_If, str]] = []
        self.seen_interfaces: set[str] = set()
        self.seen_groups: set[str] = set()
        self.block_reject = False
        self.if_bound = False  # `set state-policy if-bound`: a state matches only on its interface
        # rules that set a tag but become no rule of their own (source nat, binat's outbound
        # half without pass): what `tagged` means must know of them
        self.hidden: list[_Rule] = []
        # old-style source translation (`nat on`, binat's outbound half without pass): it comes
        # before every filter rule, which see the translated source (pf.conf(5), TRANSLATION)
        self.source_nats: list[_Rule] = []
        # table -> the rules that add to it (`overload <T>`): what fills a table the file lists no addresses of
        self.overloads: dict[str, list[str]] = {}

    def read(self, text: str, where: str, parents: tuple[_Rule, ...] = ()) -> list[_Item]:
        items: list[_Item] = []
        for stmt in _statements(_lex(_listing_text(text), where), where):
            items += self._statement(stmt, where, parents)
        return items

    def _statement(self, stmt: list[_Tok], where: str, parents: tuple[_Rule, ...]) -> list[_Item]:
        line = stmt[0].line
        try:
            toks = self._expand([t for t in stmt if t.text != _NL or t.quoted], where)
            head = toks[0].text if not toks[0].quoted else ""
            if len(toks) >= 2 and toks[1].text == "=" and not toks[1].quoted and IDENT_RE.match(head):
                self._macro(toks)
                return []
            origin = f"{where}:{line}"
            if head in ("anchor", "rdr-anchor", "nat-anchor", "binat-anchor"):
                return self._anchor(self._expand_keeping_lines(stmt, where), where, origin, parents)
            if head == "include" and self.includes is not None and where in self.includes.files:
                return self._include(toks, where, origin, parents)
            if head in ("pass", "block", "match", "rdr", "nat", "binat", "no"):
                return self._rule(_Cursor(toks), origin, parents)
            if head == "table":
                self._table(_Cursor(toks))
            elif head == "set":
                self._set(_Cursor(toks), origin)
            elif head == "antispoof":
                return self._antispoof(_Cursor(toks), origin, parents)
            elif head in _OPAQUE_STATEMENTS:
                what = f"{head} {toks[1].text if len(toks) > 1 else ''} (its rules are not read{self._why_not_read(head)})"
                return [_Opaque(origin, what, _Rule(origin, "anchor", parents=parents), _OPAQUE_STATEMENTS[head])]
            elif head == "load":
                if len(toks) < 5 or toks[1].text != "anchor" or toks[3].text != "from":
                    raise _Bad("expected: load anchor NAME from FILE")
            elif head not in _IGNORED_STATEMENTS:
                raise _Bad(f"unknown statement '{toks[0].text}'")
            return []
        except _Bad as bad:
            raise BackendError(str(bad), file=where, line=line) from None

    def _why_not_read(self, head: str) -> str:
        if head != "include":
            return ""
        if self.includes is None:  # stdin, a `pfctl -sr` listing (pfctl prints no includes), text given as such
            return ": the ruleset is no file, so there is no directory to resolve it from as pfctl would"
        return ": an include in an anchor's file (--pf-anchor) is not followed"

    def _expand(self, toks: list[_Tok], where: str) -> list[_Tok]:
        """Macros expanded where they stand (a macro may hold a list, even braces)."""
        out: list[_Tok] = []
        for tok in toks:
            if tok.text.startswith("$") and not tok.quoted:
                # `$ext_if:network`, `$a$b`: pfctl expands in its input and reads on
                text = _MACRO_RE.sub(lambda found: self._macro_value(found.group(1)), tok.text)
                out += [t for t in _lex(text, where, tok.line) if t.text != _NL]
            else:
                out.append(tok)
        return out

    def _macro_value(self, name: str) -> str:
        if name not in self.macros:
            raise _Bad(f"macro '{name}' is not defined")
        return self.macros[name]

    def _expand_keeping_lines(self, stmt: list[_Tok], where: str) -> list[_Tok]:
        return [t for tok in stmt for t in (self._expand([tok], where) if tok.text != _NL else [tok])]

    def _include(self, toks: list[_Tok], where: str, origin: str, parents: tuple[_Rule, ...]) -> list[_Item]:
        """`include "FILE"`: the file's statements in its place, with the macros defined so far
        (and its own after it), its rules at their own FILE:LINE."""
        if len(toks) != 2 or not toks[1].quoted:
            raise _Bad('expected: include "FILE"')
        includes = self.includes
        assert includes is not None
        name = toks[1].text
        text = includes.enter(name, origin)
        shown = includes.shown(name)
        includes.files.add(shown)
        try:
            return self.read(text, shown, parents)
        except BackendError as exc:
            # where the ruleset file includes it (a loop's or depth's chain says it already)
            if len(includes.trail) == 1 and exc.file != where and f"{origin} ->" not in exc.message:
                exc.message += f" (included from {origin})"
            raise
        finally:
            includes.leave()

    def _macro(self, toks: list[_Tok]) -> None:
        name = toks[0].text
        if name in PF_KEYWORDS:
            raise _Bad(f"a macro cannot be named '{name}' (a pf keyword)")
        if len(toks) < 3:
            raise _Bad(f"macro '{name}' has no value")
        self.macros[name] = " ".join(t.text for t in toks[2:])

    def _table(self, c: _Cursor) -> None:
        c.next("table")
        tok = c.next("the table's name")
        if tok.startswith("<") and not tok.endswith(">"):  # pfctl's lexer ends a name at a blank too
            raise _Bad(f"a table name in <angle brackets> holds no blank: '{tok} {c.peek() or ''}...'")
        if not (tok.startswith("<") and tok.endswith(">")):
            raise _Bad(f"expected a table name in <angle brackets>, found {tok!r}")
        name = tok[1:-1]
        entries: list[tuple[bool, str]] = []
        files: list[str] = []
        listed = False
        while not c.done():
            word = c.next("a table option")
            if word in ("persist", "const", "counters"):
                continue
            if word == "timeout":
                c.arg("the timeout")
            elif word == "file":
                files.append(c.next("the file name"))
            elif word == "{":
                c.i -= 1
                entries += _table_entries(c.group("{", "}"))
                listed = True
            else:
                raise _Bad(f"unexpected {word!r} in a table definition")
        value = _table_value(entries)
        if files:
            value = replace(value, unknown=value.unknown + tuple(f'addresses from file "{f}"' for f in files))
        elif not listed:
            value = replace(value, unknown=(run_time_table(name),))
        self.referenced_tables.add(name)
        self.tables[name] = self.given_tables.get(name, value)

    def _set(self, c: _Cursor, origin: str) -> None:
        c.next("set")
        option = c.next("an option")
        if option == "skip":
            if not c.word("on"):
                raise _Bad("expected: set skip on INTERFACE")
            self.skip += [(iface, origin) for iface in self._ifspec(c)]
        elif option == "block-policy":
            policy = c.next("drop or return")
            if policy not in ("drop", "return"):
                raise _Bad(f"block-policy is drop or return, not {policy!r}")
            self.block_reject = policy == "return"
        elif option == "state-policy":
            self.if_bound = c.next("if-bound or floating") == "if-bound"
        elif option == "state-defaults":  # (OpenBSD) the state options of every rule: `if-bound` among them
            words = {t.text for t in c.toks[c.i:] if not t.quoted}
            if "if-bound" in words or "floating" in words:
                self.if_bound = "if-bound" in words
        # the other options (timeouts, limits, optimization, ...) tune the
        # engine but do not change which packets pass

    # -- interfaces, hosts, ports ------------------------------------------------------

    def is_interface(self, name: str) -> bool:
        """Is this name an interface or a group (not a host name)? When the ruleset filters on it."""
        return name in self.seen_interfaces or name in self.interfaces or name in self.groups

    def _iface(self, name: str, negate: bool) -> tuple[_If, ...]:
        """An interface, or a group: its members when they are known (a negated one stays whole)."""
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
            raise _Bad(f"bad interface name {name!r}")
        self.seen_interfaces.add(name)
        if name == "lo":
            return (_If("lo", negate),)  # the loopback group: the universe's "lo"
        if name in self.interfaces:
            return (_If(name, negate),)
        if name in self.groups:
            members = self.groups[name]
            return (_If(name, True, True, members),) if negate else tuple(_If(m) for m in members)
        # OpenBSD's interface names end in a unit number: a name without one is a group
        group = name in PF_GROUPS or (self.dialect == "openbsd" and not name[-1].isdigit() and name != "any")
        if group:
            self.seen_groups.add(name)
        return (_If(name, negate, group),)

    def firewall_interfaces(self) -> set[str]:
        """The firewall's interfaces as far as known: the given ones and those the ruleset
        filters on (groups, `any` and loopback aside). `self` needs the addresses of all."""
        named = {n for n in self.seen_interfaces - self.seen_groups - set(self.groups) if n != "any" and n != "lo"}
        return named | set(self.interfaces)

    def _ifspec(self, c: _Cursor) -> tuple[_If, ...]:
        """An interface or a { list }."""
        if c.word("{"):
            out: list[_If] = []
            while not c.word("}"):
                if not c.word(","):
                    out += self._if_item(c)
            return tuple(out)
        return self._if_item(c)

    def _if_item(self, c: _Cursor) -> tuple[_If, ...]:
        negate = c.word("!")
        return self._iface(c.next("an interface"), negate)

    def _hosts(self, c: _Cursor) -> tuple[_Host, ...]:
        if c.word("{"):
            out: list[_Host] = []
            while not c.word("}"):
                if c.word(","):
                    continue
                out.append(self._host(c))
            if not out:
                raise _Bad("empty address list")
            return tuple(out)
        return (self._host(c),)

    def _host(self, c: _Cursor) -> _Host:
        negate = c.word("!")
        word = c.next("an address")
        if word in ("any", "self"):
            return _Host(negate, word)
        if word == "localhost":  # /etc/hosts: 127.0.0.1 and ::1, the loopback's addresses
            return _Host(negate, "iface", name="localhost (the loopback's addresses)", iface="lo0")
        if word in ("no-route", "urpf-failed"):
            return _Host(negate, word, name=f"{word} (depends on the firewall's routes)")
        if word == "route":
            return _Host(negate, "unknown", name=f"route {c.next('a route label')} (a routing label)")
        if word.startswith("<") and word.endswith(">"):
            self.referenced_tables.add(word[1:-1])
            return _Host(negate, "table", name=word[1:-1])
        if word == "(":
            inner = []
            while not c.word(")"):
                inner.append(c.next("')'"))
            found = _IF_ADDRESS_RE.fullmatch(inner[0]) if len(inner) == 1 else None
            if found is None:
                return _Host(negate, "unknown", name=f"({' '.join(inner)}) (the addresses of an interface)")
            return _iface_host(negate, inner[0], found, parenthesised=True)
        net = _net(word)
        if net is None and word.count("-") == 1 and _net(word.split("-")[0]) is not None:
            first, last = word.split("-")  # written without spaces
            return self._range(negate, first, last)
        if net is not None and c.peek() == "-":
            c.next("-")
            return self._range(negate, word, c.next("the end of the address range"))
        if c.word("weight"):
            c.next("a weight")
        found = _IF_ADDRESS_RE.fullmatch(word) if net is None else None
        if found is not None:
            return _iface_host(negate, word, found, parenthesised=False)
        if net is None:
            return _Host(negate, "unknown", name=f"{word} (a host name: resolved on the firewall)")
        return _Host(negate, "net", net)

    def _range(self, negate: bool, first: str, last: str) -> _Host:
        a, b = _net(first), _net(last)
        if a is None or b is None or a.size != 1 or b.size != 1 or a.version != b.version or a.first > b.first:
            raise _Bad(f"bad address range {first} - {last}")
        return _Host(negate, "net", IPRange(a.ip, b.ip))

    def _ports(self, c: _Cursor) -> _Ports:
        items: list[list[PortRange] | str] = []
        if c.word("{"):
            while not c.word("}"):
                if c.word(","):
                    continue
                items.append(self._port_item(c))
        else:
            items.append(self._port_item(c))
        ranges = [r for item in items if not isinstance(item, str) for r in item]
        return _Ports(_merge_ports(ranges), tuple(item for item in items if isinstance(item, str)))

    def _port_item(self, c: _Cursor) -> list[PortRange] | str:
        op = c.next("a port operator") if c.peek() in ("=", "!=", "<", "<=", ">", ">=") else "="
        first = c.next("a port")
        second: str | None = None
        if op == "=" and c.peek() in ("><", "<>", ":"):
            op = c.next("")
            second = c.next("the end of the port range")
        elif op == "=" and ":" in first:
            first, second = first.split(":", 1)
            op = ":"
        a = _port_number(first)
        b = _port_number(second) if second is not None else None
        if a is None or (second is not None and b is None):
            return f"port {first}{':' + second if second else ''} (a service name fwmatrix does not know)"
        if b is not None and b < a:
            raise _Bad(f"port range {a}:{b} is empty")
        return _port_op(op, a, b)

    def _protos(self, c: _Cursor) -> tuple[int | str, ...]:
        out: list[int | str] = []
        for word in c.items("protocol"):
            if word.isdigit():
                if int(word) > 255:
                    raise _Bad(f"protocol {word} is out of range")
                out.append(int(word))
            else:
                out.append(PF_PROTOCOLS.get(word, word))
        return tuple(out)

    def _target(self, c: _Cursor, af: int | None = None) -> _Target:
        """A translation's target: `ADDR [port P]` and pool options. `(IF)`, `IF:0`: the
        interface's address, when it has one of the rule's family (given: own.py); several
        would be a pool."""
        text = c.arg("the translation address")
        net = _net(text)
        address = net if net is not None and net.size == 1 else None
        found = _IF_ADDRESS_RE.fullmatch(text.strip("( )")) if net is None and af is not None else None
        if found is not None and (found.group(2) or "0") == "0" and found.group(1) not in self.groups:
            known = self.own.interface([found.group(1)], "0" if found.group(2) or found.group(3) else "")
            mine = [n for n in (known.iter_cidrs() if known is not None else ()) if n.version == af]
            address = mine[0] if len(mine) == 1 and mine[0].size == 1 else None
        port: PortRange | None = None
        if c.word("port"):
            word = c.next("the translation port")
            text += f" port {word}"
            low, _, high = word.partition(":")
            number = _port_number(low)
            if number is None or high:
                address = None  # a port range mapped to a range (`:*`), or a name not known
            else:
                port = PortRange(number, number)
        static = self._pool_options(c)
        return _Target(address, port, text, static)

    def _route(self, c: _Cursor) -> _Route:
        word = c.next("route-to")
        target = "" if word == "fastroute" else c.arg("the route target")
        pooled = c.peek() in _POOL_OPTIONS or c.peek() == "source-hash"
        self._pool_options(c)
        return _Route(word, None if pooled else self._route_iface(target), f"{word}{' ' + target if target else ''}{ROUTE_UNKNOWN}")

    def _route_iface(self, target: str) -> str | None:
        """The interface of `IF`, `(IF)`, `(IF ADDR)`, `{ (IF ADDR) }`: one plain interface (not
        a group, a pool of several or an address alone, whose interface only the routes know)."""
        words = target.strip("{ }").strip("( )").split()
        if not words or len(words) > 2 or _net(words[0]) is not None or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", words[0]) \
                or (len(words) == 2 and _net(words[1]) is None):
            return None
        found = self._iface(words[0], False)
        return found[0].name if len(found) == 1 and not found[0].group and found[0].name not in ("any", "lo") else None

    @staticmethod
    def _pool_options(c: _Cursor) -> bool:
        """Reads the pool options; whether one was `static-port`."""
        static = False
        while c.peek() in _POOL_OPTIONS or c.peek() == "source-hash":
            static = static or c.peek() == "static-port"
            # pfctl's `source-hash [key]`: the key is any word that is no keyword — `0x` and 32 hex
            # digits, or a string it hashes (fwbuilder's own pf tests write `source-hash hex-key`)
            if c.next("") == "source-hash" and _is_hash_key(c.peek()):
                c.next("the hash key")
        return static

    # -- rules ---------------------------------------------------------------------------

    def _rule(self, c: _Cursor, origin: str, parents: tuple[_Rule, ...]) -> list[_Item]:
        rule = self._action(c, _Rule(origin, "", parents=parents))
        rule = self._header(c, rule)
        rule, binat_to = self._options(c, rule)
        return self._finish(rule, binat_to)

    def _action(self, c: _Cursor, rule: _Rule) -> _Rule:
        action = c.next("an action")
        if action == "no":
            action = "no-" + c.next("rdr, nat or binat")
            if action not in ("no-rdr", "no-nat", "no-binat"):
                raise _Bad(f"unexpected 'no {action[3:]}'")
        reject = False
        if action == "block":
            if c.word("return", "return-rst", "return-icmp", "return-icmp6"):
                if c.peek() == "(":
                    c.group("(", ")")
                reject = True
            elif not c.word("drop"):
                reject = self.block_reject  # `set block-policy`
        return replace(rule, action=action, reject=reject)

    def _header(self, c: _Cursor, rule: _Rule) -> _Rule:
        """Direction, log, quick, on, af, proto, hosts: what comes before the options."""
        changes: dict[str, object] = {}
        unknown = list(rule.unknown)
        old_style = rule.action in ("rdr", "nat", "binat", "no-rdr", "no-nat", "no-binat")
        while not c.done() and not c.quoted():
            tok = c.peek()
            if tok in ("in", "out") and "direction" not in changes and not old_style:
                changes["direction"] = c.next("")
            elif tok == "log":
                c.next("")
                if c.peek() == "(":
                    c.group("(", ")")
            elif tok == "quick":
                changes["quick"] = bool(c.next(""))
            elif tok == "pass" and old_style:
                changes["passes"] = bool(c.next(""))
            elif tok == "on":
                c.next("")
                if c.word("rdomain"):
                    unknown.append(f"on rdomain {c.next('a routing domain')}")
                else:
                    changes["on"] = self._ifspec(c)
            elif tok in ("inet", "inet6"):
                changes["af"] = 4 if c.next("") == "inet" else 6
            elif tok == "proto":
                c.next("")
                changes["protos"] = self._protos(c)
            elif tok == "all":
                c.next("")
            elif tok in ("route-to", "reply-to", "dup-to", "fastroute"):  # FreeBSD writes them before the hosts
                changes["route"] = self._route(c)
            elif tok in ("from", "to"):
                c.next("")
                if c.peek() not in ("port", "os") and not c.word("any"):  # `to port 22`: any address
                    changes["src" if tok == "from" else "dst"] = self._hosts(c)
                if c.word("port"):
                    ports = self._ports(c)
                    changes["dport" if tok == "to" else "sport"] = ports
                if tok == "from" and c.word("os"):
                    unknown.append(f"os {c.arg('an operating system')}")
            else:
                break
        rule = replace(rule, unknown=tuple(unknown), **changes)  # type: ignore[arg-type]
        if (rule.dport is not None or rule.sport is not None) and not rule.protos:
            raise _Bad("'port' needs 'proto tcp' or 'proto udp' (pfctl refuses it otherwise)")
        return rule

    def _options(self, c: _Cursor, rule: _Rule) -> tuple[_Rule, _Target | None]:
        """The filter options after the hosts; also a binat-to target, which _finish expands."""
        unknown = list(rule.unknown)
        changes: dict[str, object] = {}
        while not c.done():
            if c.word(","):
                continue
            negate = c.word("!")
            word = c.next("an option")
            if negate and word not in ("tagged", "received-on"):
                raise _Bad(f"'!' before {word!r}")
            if word in _IGNORED_OPTIONS:
                for _ in range(_IGNORED_OPTIONS[word]):
                    c.arg(f"the argument of {word}")
            elif word == "set":
                what = c.next("prio, queue, tos or delay")
                if what not in ("prio", "queue", "tos", "delay"):
                    raise _Bad(f"unexpected 'set {what}' in a rule")
                c.arg(f"the {what}")
            elif word in ("keep", "modulate", "synproxy", "no"):
                if not c.word("state"):
                    raise _Bad(f"expected 'state' after {word!r}")
                changes["keep_state"] = word != "no"
                if c.peek() == "(":
                    opts = c.group("(", ")")
                    changes["if_bound"] = "if-bound" in opts
                    limits = [o for o in opts if o in _STATE_LIMITS]
                    for k, word in enumerate(opts[:-1]):
                        if word == "overload" and opts[k + 1].startswith("<"):
                            self.overloads.setdefault(opts[k + 1].strip("<>"), []).append(rule.origin)
                    if limits:
                        changes["limited"] = f"state limits ({', '.join(limits)}): new connections beyond them are refused"
            elif word == "label":
                changes["label"] = c.next("the label")
            elif word == "tag":
                changes["tag"] = c.next("a tag")
            elif word == "tagged":
                changes["tagged"] = (c.next("a tag"), negate)
            elif word == "received-on":
                ifaces = self._iface(c.next("an interface"), negate)
                changes["received_on"] = None if ifaces == (_If("any"),) else ifaces
            elif word in ("icmp-type", "icmp6-type"):
                tokens = c.items(word)
                if c.word("code"):
                    tokens += ["code", c.next("a code")]
                v4 = word == "icmp-type"
                types = _icmp_types(PF_ICMP_TYPES if v4 else PF_ICMP6_TYPES, PF_ICMP_CODES if v4 else PF_ICMP6_CODES, tokens)
                if types is None:
                    unknown.append(f"{word} {' '.join(tokens)} (an icmp type or code name fwmatrix does not know)")
                else:
                    changes["icmp"] = ("icmp.type" if word == "icmp-type" else "icmpv6.type", types)
            elif word in ("user", "group"):
                unknown.append(f"{word} {self._op_arg(c)} (the owner of a local socket)")
            elif word == "prio" and c.peek() == "(":
                c.group("(", ")")  # the pair assigned priorities before `set prio` (OpenBSD 5.0): it only queues
            elif word in ("tos", "prio", "probability", "rtable", "max-pkt-rate", "os"):
                unknown.append(f"{word} {c.arg(word)}")
            elif word in ("once", "fragment", "divert-reply"):
                unknown.append(word)
            elif word in ("route-to", "reply-to", "dup-to", "fastroute"):
                c.i -= 1
                changes["route"] = self._route(c)
            elif word in ("divert-to", "divert-packet"):
                host = c.next("a host") + " " if word == "divert-to" else ""
                if not c.word("port"):
                    raise _Bad(f"expected 'port' in {word}")
                unknown.append(f"{word} {host}port {c.next('a port')} (the packet goes to a local socket)")
            elif word in ("state", "source"):
                if not c.word("limiter"):
                    raise _Bad(f"expected 'limiter' after {word!r}")
                name = c.next("the limiter's name")
                if c.peek() == "(":
                    c.group("(", ")")
                unknown.append(f"{word} limiter {name}: new connections beyond it are refused")
            elif word == "rdr-to" or (word == "->" and rule.action in ("rdr", "nat", "binat")):
                changes["rdr"] = self._target(c, rule.af)
            elif word in ("nat-to", "binat-to"):
                target = self._target(c)
                changes["snat"] = True
                if word == "nat-to":
                    changes["nat_to"] = target
                if word == "binat-to":
                    changes["binat_to"] = target
            elif word == "af-to":
                rest = [c.next("")]
                while not c.done() and c.peek() not in ("label", "tag", "rtable"):
                    rest.append(c.next(""))
                unknown.append(f"af-to {' '.join(rest)} (translated to another address family)")
            else:
                raise _Bad(f"unknown option {word!r}")
        binat_to = changes.pop("binat_to", None)
        route = changes.get("route", rule.route)
        if changes.pop("if_bound", False) and isinstance(route, _Route):
            changes["route"] = replace(route, if_bound=True)
        if changes.get("limited") and (rule.action != "pass" or "rdr" in changes):
            unknown.append(changes.pop("limited"))  # (judged as a match where the verdict is not the rule's own)
        return replace(rule, unknown=tuple(dict.fromkeys(unknown)), **changes), binat_to  # type: ignore[arg-type]

    @staticmethod
    def _op_arg(c: _Cursor) -> str:
        if c.peek() == "{":
            return c.arg("a list")
        op = c.next("") if c.peek() in ("=", "!=", "<", "<=", ">", ">=") else ""
        first = c.next("a value")
        if c.peek() in ("><", "<>"):
            return f"{first} {c.next('')} {c.next('a value')}"
        return f"{op} {first}".strip()

    def _finish(self, rule: _Rule, binat_to: _Target | None) -> list[_Item]:
        """Old-style translation and binat-to become the rules they stand for."""
        action = rule.action
        if action in ("nat", "no-nat"):
            # source NAT changes no forward decision; `nat pass` lets the packet out unfiltered
            if action == "nat" and rule.passes:
                return [replace(rule, direction="out")]
            if rule.tag is not None:
                self.hidden.append(replace(rule, direction="out"))
            # old-style nat rules are first-match among themselves: `no nat` is an exception
            self.source_nats.append(replace(rule, direction="out", snat=action == "nat"))
            return []
        if action == "no-binat":
            return [_Opaque(rule.origin, "no binat (an exception to a binat rule)", rule, frozenset({"nat"}))]
        if action in ("rdr", "binat") and rule.rdr is None:
            raise _Bad(f"{action} without '-> ADDRESS'")
        if action == "binat":
            if rule.tag is not None and not rule.passes:
                self.hidden.append(replace(rule, action="nat", direction="out", rdr=None))
            if not rule.passes:
                self.source_nats.append(replace(rule, action="nat", direction="out", rdr=None, snat=True))
            inbound = replace(rule, action="rdr", binat=True, rdr=None)
            return self._binat(inbound, rule.rdr, outbound=replace(rule, action="nat", direction="out", rdr=None) if rule.passes else None)  # type: ignore[arg-type]
        if action in ("rdr", "no-rdr"):
            return [replace(rule, direction="in")]
        if binat_to is not None:
            outbound = replace(rule, direction="out") if rule.direction != "in" else None
            return self._binat(replace(rule, direction="in"), binat_to, outbound=outbound)
        return [rule]

    def _binat(self, rule: _Rule, external: _Target, outbound: _Rule | None) -> list[_Item]:
        """binat's inbound half: from the peers to the external address, redirected to the
        internal one (ports are never translated). The outbound half is source NAT."""
        inner = rule.src or ()
        single = len(inner) == 1 and inner[0].kind == "net" and not inner[0].negate and isinstance(inner[0].net, IPNetwork) and inner[0].net.size == 1
        out: list[_Item] = [outbound] if outbound is not None else []
        if not single or external.address is None or rule.dport is not None:
            return out + [_Opaque(rule.origin, f"binat of {inner[0].net if single else 'several addresses'} to {external.text} "
                                  "(only one address to one address is modelled)", replace(rule, src=None, dst=None, dport=None), frozenset({"nat"}))]
        target = _Target(inner[0].net, None, str(inner[0].net))  # type: ignore[arg-type]
        return out + [replace(rule, src=rule.dst, dst=(_Host(False, "net", external.address),), rdr=target, direction="in")]

    def _children(self, wildcard: str) -> list[str]:
        """The given anchors directly below `X/*` (X/a, not X/a/b), in pf's order (by name)."""
        return sorted(n for n in self.anchors if wildcard_child(n, wildcard))

    def _antispoof(self, c: _Cursor, origin: str, parents: tuple[_Rule, ...]) -> list[_Item]:
        """`antispoof for IF` blocks, in on other interfaces, sources from IF's networks, and
        everywhere sources that are IF's own addresses (pf.conf(5)); only loopback's are known."""
        c.next("antispoof")
        quick = False
        while c.peek() in ("log", "quick"):
            quick |= c.next("") == "quick"
            if c.peek() == "(":
                c.group("(", ")")
        if not c.word("for"):
            raise _Bad("expected: antispoof for INTERFACE")
        names = self._antispoof_names(c)
        af = (4 if c.next("") == "inet" else 6) if c.peek() in ("inet", "inet6") else None
        while not c.done():
            word = c.next("label or ridentifier")
            if word not in ("label", "ridentifier", "tracker"):
                raise _Bad(f"unexpected {word!r} in antispoof")
            c.next("its argument")
        rules: list[_Item] = []
        block = _Rule(origin, "block", reject=self.block_reject, direction="in", quick=quick, af=af, parents=parents)
        for name in names:
            # a group stays whole (pfctl looks the group's addresses up): `on ! GROUP from GROUP:network`
            elsewhere = self._iface(name, True)
            if name in ("lo", "lo0"):
                for family, net in ((4, "127.0.0.0/8"), (6, "::1/128")):
                    if af in (None, family):
                        rules.append(replace(block, on=elsewhere, af=family, src=(_Host(False, "net", IPNetwork(net)),)))
                continue
            # pfctl's expansion (pf.conf(5), BLOCKING SPOOFED TRAFFIC): `block in on ! IF from
            # IF:network`, `block in from IF's addresses`
            rules.append(replace(block, on=elsewhere, src=(_Host(False, "iface", name=f"{name}:network (antispoof)",
                                                                 iface=name, modifier="network"),)))
            rules.append(replace(block, src=(_Host(False, "iface", name=f"{name} (antispoof: its own addresses)",
                                                   iface=name, modifier=""),)))
        return rules

    def _antispoof_names(self, c: _Cursor) -> list[str]:
        """antispoof's interfaces: `IF`, `(IF)` (the same interface, its addresses followed as
        they change), or a { list } of them."""
        listed = c.word("{")
        names: list[str] = []
        while not c.done():
            if listed and c.word("}"):
                break
            if c.word(","):
                continue
            if c.word("!"):
                raise _Bad("antispoof for '!' an interface")
            if c.word("("):
                names.append(c.next("an interface"))
                if not c.word(")"):
                    raise _Bad(f"expected ')' after '({names[-1]}'")
            else:
                name = c.next("an interface")
                if not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
                    raise _Bad(f"bad interface name {name!r}")
                names.append(name)
            if not listed:
                break
        if not names:
            raise _Bad("expected: antispoof for INTERFACE")
        return names

    def _anchor(self, stmt: list[_Tok], where: str, origin: str, parents: tuple[_Rule, ...]) -> list[_Item]:
        body_at = next((i for i, t in enumerate(stmt[:-1]) if t.text == "{" and not t.quoted and stmt[i + 1].text == _NL), None)
        header = [t for t in (stmt if body_at is None else stmt[:body_at]) if t.text != _NL or t.quoted]
        c = _Cursor(header)
        kind = c.next("anchor")
        name = ""
        if c.quoted() or (c.peek() is not None and c.peek() not in ("in", "out", "log", "quick", "on", "inet", "inet6", "proto", "from", "to", "all")):
            name = c.next("the anchor's name")
        if name:
            self.referenced_anchors.add(name)
        cond = self._header(c, _Rule(origin, "anchor", parents=parents))
        cond, binat_to = self._options(c, cond)
        if cond.rdr is not None or binat_to is not None:
            raise _Bad("an anchor rule cannot translate")
        inner = parents + (cond,)
        if body_at is not None:
            if stmt[-1].text != "}":
                raise _Bad("an anchor's rules end with '}' on a line of its own")
            items = [item for st in _statements(stmt[body_at + 1:-1], where) for item in self._statement(st, where, inner)]
        elif name in self.anchors:
            items = self.read(self.anchors[name], f"{self.source}[{name}]", inner)
        elif name.endswith("/*") and self._children(name):
            # `anchor "X/*"`: pf evaluates X's child anchors in the order of their names, as
            # if each stood here; the children given are taken as all of them
            items = [item for child in self._children(name) for item in self.read(self.anchors[child], f"{self.source}[{child}]", inner)]
        else:
            chains = _ANCHOR_CHAINS[kind] | ({"nat"} if kind == "anchor" and self.dialect == "openbsd" else set())
            return [_Opaque(origin, f"{kind} '{name}' (its rules are not in the file)", cond, chains)]
        return [_Group(tuple(items))] if cond.quick else items
