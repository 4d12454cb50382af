"""The structural checker: a rendered pf.conf read back against the subset of
pf.conf(5) the renderer (writer.py) writes.

pfctl does not exist on Linux: `check` (the backend's check_files) reports
structural problems (undefined macros or tables, unbalanced braces, bad ports,
rules out of order, a missing default block). On a BSD host, `pfctl -nf FILE`
is the real check. docs/backend-pf.md says more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netaddr import AddrFormatError, IPNetwork

from fwmatrix.backends.pf.lexer import _Bad, _Cursor, _strip_comment, _Tok, _tokens
from fwmatrix.backends.pf.names import (
    _DIALECT_RE, DEFAULT_DIALECT, DIALECTS, IDENT_RE, LABEL_MAX, PF_KEYWORDS, PROTO_NUMBERS, TABLE_NAME_MAX, TAG_MAX, RenderError,
    interface_name,
)


def check(text: str, dialect: str | None = None) -> list[str]:
    return parse(text, dialect).problems


@dataclass
class PfRule:
    """One rule line, macros expanded. Addresses: 'any', 'self', a literal or '<table>'."""

    line: int
    action: str  # 'pass', 'block', 'match', 'rdr', 'anchor'
    block: str | None = None  # 'drop' or 'return' for block
    direction: str | None = None
    quick: bool = False
    on: str | None = None
    af: str | None = None
    protos: tuple[str, ...] = ()
    src: tuple[str, ...] = ("any",)
    dst: tuple[str, ...] = ("any",)
    ports: tuple[str, ...] = ()  # destination ports: '443' or '10000:30000'
    icmp6_types: tuple[str, ...] = ()
    received_on: str | None = None
    tag: str | None = None
    tagged: str | None = None
    rdr_to: str | None = None
    rdr_port: int | None = None
    log: bool = False
    nat_to: str | None = None  # source NAT on a pass out rule: an address, or '(IF)' for the interface's address
    label: str | None = None
    name: str | None = None  # anchor name
    all: bool = False

    @property
    def expanded(self) -> int:
        """Rules pfctl makes of this one: lists expand, tables do not."""
        n = 1
        for items in (self.protos, self.src, self.dst, self.ports, self.icmp6_types):
            n *= max(1, len(items))
        return n


@dataclass
class PfConf:
    dialect: str
    macros: dict[str, str] = field(default_factory=dict)
    tables: dict[str, tuple[str, ...]] = field(default_factory=dict)
    skip: list[str] = field(default_factory=list)
    rules: list[PfRule] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def rule_count(self) -> int:
        return sum(1 for r in self.rules if r.action != "anchor")

    @property
    def expanded_rule_count(self) -> int:
        return sum(r.expanded for r in self.rules if r.action != "anchor")


_ICMP6_TYPES = ("neighbrsol", "neighbradv")


def parse(text: str, dialect: str | None = None) -> PfConf:
    """Parse a rendered file back; structural problems are collected, not raised."""
    found = _DIALECT_RE.search(text)
    conf = PfConf(dialect or (found.group(1) if found else DEFAULT_DIALECT))
    if conf.dialect not in DIALECTS:
        conf.problems.append(f"1: unknown dialect {conf.dialect!r}")
        return conf
    section = 0  # freebsd order: options 0, translation 1, filter 2
    default_block = False
    for number, raw in enumerate(text.split("\n"), 1):
        try:
            if "\\" in raw:
                raise _Bad("backslash: pfctl would join lines (even inside a comment)")
            if "\r" in raw:
                raise _Bad("carriage return in a line")
            body = _strip_comment(raw)
            toks = _tokens(body)
            if not toks:
                continue
            toks = _expand_macros(conf, toks)
            if toks.count("{") != toks.count("}"):
                raise _Bad("unbalanced braces")
            head = toks[0]
            if len(toks) >= 3 and toks[1] == "=" and head not in PF_KEYWORDS:
                _parse_macro(conf, toks)
            elif head == "table":
                _parse_table(conf, toks)
            elif head == "set":
                if toks[:3] != ["set", "skip", "on"] or len(toks) != 4:
                    raise _Bad("only 'set skip on IFACE' is written")
                if section > 0 and conf.dialect == "freebsd":
                    raise _Bad("options must come before translation and filter rules")
                conf.skip.append(toks[3])
            else:
                rule = _parse_rule(conf, toks, number)
                kind = 1 if rule.action in ("rdr", "nat") else 2
                if conf.dialect == "freebsd" and kind < section:
                    raise _Bad("translation rules must come before filter rules (pfctl require-order)")
                section = max(section, kind)
                if rule.action == "block" and rule.all and rule.direction is None and not rule.quick and rule.on is None:
                    default_block = True
                elif rule.action in ("pass", "block") and not rule.quick:
                    raise _Bad("a filter rule without 'quick': the last match would decide, not the first")
                if rule.action in ("pass", "block", "match") and not default_block:
                    raise _Bad("a filter rule before the default 'block drop all'")
                conf.rules.append(rule)
        except _Bad as bad:
            conf.problems.append(f"{number}: {bad}")
    if not default_block:
        conf.problems.append("0: no default 'block drop all': pf passes what no rule matches")
    return conf


def _expand_macros(conf: PfConf, toks: list[str]) -> list[str]:
    out: list[str] = []
    for tok in toks:
        if tok.startswith("$"):
            name = tok[1:]
            if name not in conf.macros:
                raise _Bad(f"macro '{name}' is not defined")
            out += _tokens(conf.macros[name])
        else:
            out.append(tok)
    return out


def _parse_macro(conf: PfConf, toks: list[str]) -> None:
    name, value = toks[0], toks[2:]
    if not IDENT_RE.match(name):
        raise _Bad(f"bad macro name {name!r}")
    if len(value) != 1 or not value[0].startswith('"'):
        raise _Bad("a macro's value is written as one quoted string")
    if name in conf.macros:
        raise _Bad(f"macro '{name}' is defined twice")
    conf.macros[name] = value[0][1:-1]


def _parse_table(conf: PfConf, toks: list[str]) -> None:
    if len(toks) < 5 or toks[2] != "const" or toks[3] != "{" or toks[-1] != "}":
        raise _Bad("a table is written as: table <name> const { address ... }")
    name = _table_name(toks[1])
    if name in conf.tables:
        raise _Bad(f"table <{name}> is defined twice")
    members = tuple(t for t in toks[4:-1] if t != ",")
    if not members:
        raise _Bad(f"table <{name}> is empty")
    for member in members:
        _check_address(member, None)
    conf.tables[name] = members


def _table_name(tok: str) -> str:
    name = tok[1:-1] if tok.startswith("<") and tok.endswith(">") else ""
    if not IDENT_RE.match(name) or len(name) > TABLE_NAME_MAX or name in PF_KEYWORDS:
        raise _Bad(f"bad table name {tok!r}")
    return name


def _check_address(tok: str, af: str | None) -> None:
    try:
        net = IPNetwork(tok)
    except (AddrFormatError, ValueError, TypeError):
        raise _Bad(f"{tok!r} is not an address") from None
    if (net.version == 4 and "." not in tok) or (net.version == 6 and ":" not in tok):
        raise _Bad(f"{tok!r} is not written as an address")
    if af is not None and (af == "inet") != (net.version == 4):
        raise _Bad(f"{tok} does not belong to address family {af}")


def _parse_rule(conf: PfConf, toks: list[str], line: int) -> PfRule:
    c = _Cursor([_Tok(tok, line) for tok in toks])
    action = c.next("an action")
    if action == "anchor":
        name = c.next("the anchor's name")
        if not name.startswith('"') or c.peek() is not None:
            raise _Bad('an anchor is written as: anchor "name"')
        return PfRule(line, "anchor", name=name[1:-1])
    if action not in ("pass", "block", "match", "rdr", "nat"):
        raise _Bad(f"unknown statement {action!r}")
    if action == "match" and conf.dialect != "openbsd":
        raise _Bad("'match' rules are OpenBSD syntax")
    if action == "rdr" and conf.dialect != "freebsd":
        raise _Bad("'rdr ... ->' was removed in OpenBSD 4.7: use match in ... rdr-to")
    if action == "nat" and conf.dialect != "freebsd":
        raise _Bad("'nat ... ->' was removed in OpenBSD 4.7: use pass out ... nat-to")
    rule = PfRule(line, action)
    if action == "block":
        rule.block = "drop" if c.word("drop") else "return" if c.word("return") else None
        if rule.block is None:
            raise _Bad("block without drop or return depends on set block-policy")
    if action not in ("rdr", "nat"):
        direction = c.peek()
        rule.direction = direction if c.word("in", "out") else None
        rule.log = c.word("log")
        rule.quick = c.word("quick")
    if c.word("on"):
        rule.on = _iface(c.next("an interface"))
    if c.peek() in ("inet", "inet6"):
        rule.af = c.next("")
    if c.word("proto"):
        rule.protos = tuple(c.items("protocol", strict=True))
        for proto in rule.protos:
            if proto not in PROTO_NUMBERS and not (proto.isdigit() and int(proto) <= 255):
                raise _Bad(f"unknown protocol {proto!r}")
    if c.word("all"):
        rule.all = True
    else:
        if not c.word("from"):
            raise _Bad("expected 'from' or 'all'")
        rule.src = _hosts(conf, c, rule.af)
        if not c.word("to"):
            raise _Bad("expected 'to'")
        rule.dst = _hosts(conf, c, rule.af)
        if c.word("port"):
            rule.ports = tuple(c.items("port", strict=True))
            for port in rule.ports:
                _check_port(port)
            if not rule.protos or any(p not in ("tcp", "udp") for p in rule.protos):
                raise _Bad("'port' applies to tcp and udp only")
    while c.peek() is not None:
        opt = c.next("an option")
        if opt == "icmp6-type":
            rule.icmp6_types = tuple(c.items("icmp6 type", strict=True))
            if rule.protos != ("icmp6",) or any(t not in _ICMP6_TYPES for t in rule.icmp6_types):
                raise _Bad("icmp6-type goes with proto icmp6 and the types neighbrsol, neighbradv")
        elif opt == "received-on" and conf.dialect == "openbsd" and action in ("pass", "block") and rule.direction == "out":
            rule.received_on = _iface(c.next("an interface"))
        elif opt == "tag" and ((action == "pass" and rule.direction == "in" and conf.dialect == "freebsd")
                               or action == "match" or (action in ("rdr", "nat") and rule.rdr_to is None and rule.nat_to is None)):
            # freebsd: the input interface, for the out rules; translation rules: fwm_dnat
            # (pf.conf(5): an rdr rule's tag comes before '->')
            rule.tag = _tag_name(c, opt, rule.tag)
        elif opt == "tagged" and (action in ("pass", "block") or (action == "match" and rule.log)
                                  or (action == "nat" and rule.nat_to is None)):  # freebsd: the input interface's tag
            rule.tagged = _tag_name(c, opt, rule.tagged)
        elif opt == "rdr-to" and action == "match" and rule.direction == "in":
            rule.rdr_to, rule.rdr_port = _redirect(c, rule.af)
        elif opt == "nat-to" and action == "pass" and rule.direction == "out" and conf.dialect == "openbsd" and rule.nat_to is None:
            rule.nat_to = _nat_to(c, rule.af)
        elif opt == "->" and action == "rdr":
            rule.rdr_to, rule.rdr_port = _redirect(c, rule.af)
        elif opt == "->" and action == "nat" and rule.on is not None and rule.nat_to is None:
            rule.nat_to = _nat_to(c, rule.af)
        elif opt == "label" and action not in ("rdr", "nat"):
            text = c.next("the label")
            if not text.startswith('"') or len(text) - 2 > LABEL_MAX or "$" in text:
                raise _Bad(f"bad label {text}")
            rule.label = text[1:-1]
        else:
            raise _Bad(f"unexpected {opt!r} in a {action} rule")
    if action in ("match", "rdr") and rule.rdr_to is None and not rule.log:
        raise _Bad(f"a {action} rule without a redirection")
    if action == "nat" and (rule.nat_to is None or rule.on is None):
        raise _Bad("a nat rule is written as: nat on IF ... -> ADDRESS (or (IF))")
    return rule


def _tag_name(c: _Cursor, opt: str, before: str | None) -> str:
    if before is not None:
        raise _Bad(f"'{opt}' twice in one rule")
    tag = c.next("a tag")
    if not IDENT_RE.match(tag) or tag in PF_KEYWORDS or len(tag) > TAG_MAX:
        raise _Bad(f"bad tag {tag!r}")
    return tag


def _iface(tok: str) -> str:
    try:
        return interface_name(tok)
    except RenderError:
        raise _Bad(f"bad interface name {tok!r}") from None


def _hosts(conf: PfConf, c: _Cursor, af: str | None) -> tuple[str, ...]:
    items = tuple(c.items("address", strict=True))
    for item in items:
        if item in ("any", "self"):
            if len(items) > 1 and item == "any":
                raise _Bad("'any' inside a list")
        elif item.startswith("<"):
            name = _table_name(item)
            if name not in conf.tables:
                raise _Bad(f"table <{name}> is not defined (pf would create it empty)")
            for member in conf.tables[name]:
                _check_address(member, af)
        else:
            _check_address(item, af)
    return items


def _nat_to(c: _Cursor, af: str | None) -> str:
    """`nat-to ADDRESS` or `nat-to (IF)` (the interface's address, followed as it changes)."""
    if c.word("("):
        iface = _iface(c.next("an interface"))
        if not c.word(")"):
            raise _Bad("expected ')' after the interface of nat-to")
        return f"({iface})"
    addr = c.next("the source address")
    _check_address(addr, af)
    if "/" in addr:
        raise _Bad("a source translation goes to one address")
    return addr


def _check_port(tok: str) -> None:
    low, _, high = tok.partition(":")
    if not low.isdigit() or (high and not high.isdigit()):
        raise _Bad(f"bad port {tok!r}")
    lo, hi = int(low), int(high or low)
    if not (0 <= lo <= hi <= 65535):
        raise _Bad(f"port {tok!r} is out of range")


def _redirect(c: _Cursor, af: str | None) -> tuple[str, int | None]:
    addr = c.next("the redirection address")
    _check_address(addr, af)
    if "/" in addr:
        raise _Bad("a redirection goes to one address")
    port = None
    if c.word("port"):
        tok = c.next("the redirection port")
        if not tok.isdigit() or not 1 <= int(tok) <= 65535:
            raise _Bad(f"bad redirection port {tok!r}")
        port = int(tok)
    return addr, port


# Used by tests and reports: how many rules a rendered file holds (written, and as pfctl expands them).
def rule_counts(text: str) -> tuple[int, int]:
    conf = parse(text)
    return conf.rule_count, conf.expanded_rule_count
