"""The Ruleset IR as an `nft -f` script: where the nftables script is written.

Names reach the script only through ident(), quoted() and comment(), which
refuse (RenderError) or replace anything that could be read as syntax; the
package docstring says what the script does when it is loaded.
"""

from __future__ import annotations

import re
from operator import attrgetter

from netaddr import IPNetwork, IPRange

from fwmatrix.ir import DnatMap, Element, Jump, Log, Masquerade, Match, Rule, Ruleset, SetDef, Snat, Table, Value, Verdict, VerdictMap
from fwmatrix.matrix.model import PortRange

# field -> (expression, set type)
FIELD_SYNTAX = {
    "iif": ("iifname", "ifname"),
    "oif": ("oifname", "ifname"),
    "l4proto": ("meta l4proto", "inet_proto"),
    "dport": ("th dport", "inet_service"),
    "ip.saddr": ("ip saddr", "ipv4_addr"),
    "ip.daddr": ("ip daddr", "ipv4_addr"),
    "ip6.saddr": ("ip6 saddr", "ipv6_addr"),
    "ip6.daddr": ("ip6 daddr", "ipv6_addr"),
    "ct.state": ("ct state", "ct_state"),
    "ct.status": ("ct status", "ct_status"),
}
PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "ipv6-icmp"}
PRIORITY_NAMES = {-100: "dstnat", 0: "filter", 100: "srcnat", -300: "raw", -150: "mangle"}
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\Z")  # Linux: at most 15 bytes
SAFE_STRING_RE = re.compile(r"[A-Za-z0-9 _.,:;/()+=@#%<>-]*\Z")
SAFE_COMMENT_RE = re.compile(r"[^A-Za-z0-9 _.,:;/()+=@#%<>-]")


class RenderError(ValueError):
    """The IR holds something this renderer refuses to write (never user-reachable after validation)."""


def ident(name: str) -> str:
    if not IDENT_RE.match(name):
        raise RenderError(f"refusing to write {name!r} as an nftables identifier")
    return name


def quoted(text: str) -> str:
    if not SAFE_STRING_RE.match(text):
        raise RenderError(f"refusing to write {text!r} as an nftables string")
    return f'"{text}"'


def comment(text: str) -> str:
    """Comments are free text from the matrix: anything outside a safe set becomes '_'."""
    return f'comment "{SAFE_COMMENT_RE.sub("_", text)[:128]}"'


def value(field: str, v: Value) -> str:
    if field in ("iif", "oif"):
        if not isinstance(v, str) or not IFNAME_RE.match(v):
            raise RenderError(f"refusing to write {v!r} as an interface name")
        return f'"{v}"'
    if field == "l4proto":
        assert isinstance(v, int)
        return PROTO_NAMES.get(v, str(v))
    if field == "dport":
        if isinstance(v, PortRange):
            return str(v)
        return str(int(v))  # type: ignore[arg-type]
    if field in ("ct.state", "ct.status"):
        assert isinstance(v, str) and IDENT_RE.match(v)
        return v
    return _address_text(v)  # type: ignore[arg-type]


def _address_text(net: IPNetwork | IPRange) -> str:
    """A host as its address, a network in CIDR form."""
    if isinstance(net, IPRange):
        return f"{net[0]}-{net[-1]}"
    return str(net.ip) if net.size == 1 else str(net.cidr)


class _Texts:
    """The text of each value of a set's elements, made once per object and type: large sets
    repeat their hosts and port ranges, and netaddr objects are slow to hash, so the cache goes
    by identity (the objects are held, so that no id is reused while the cache lives). The
    per-element loops run in map() and join(): at 75,000 elements a Python loop a value was
    most of the writing."""

    def __init__(self) -> None:
        self.by_type: dict[str, dict[int, str]] = {}
        self.held: list[Value] = []
        self.comments: dict[str, str] = {}  # an element's comment -> its text after the key

    def column(self, field: str, values: tuple[Value, ...]) -> list[str]:
        # by the field's type: a source and a destination network are written alike
        cache = self.by_type.setdefault(FIELD_SYNTAX[field][1], {})
        ids = list(map(id, values))
        try:
            return list(map(cache.__getitem__, ids))
        except KeyError:  # values not seen yet: their text made once each
            for v in dict(zip(ids, values)).values():
                if id(v) not in cache:
                    cache[id(v)] = value(field, v)
                    self.held.append(v)
            return list(map(cache.__getitem__, ids))

    def keys(self, fields: tuple[str, ...], keys: list[tuple[Value, ...]]) -> list[str]:
        """Each key as `key_text` writes it."""
        if set(map(len, keys)) - {len(fields)}:  # what zip() in key_text would do
            return [key_text(fields, key) for key in keys]
        if not fields:
            return [""] * len(keys)
        columns = [self.column(field, values) for field, values in zip(fields, zip(*keys))]
        return list(map(" . ".join, zip(*columns)))

    def comment_texts(self, comments: list[str]) -> list[str]:
        """' comment "..."' after each key, or nothing: the openings' names repeat from set to set."""
        cache = self.comments
        for text in set(comments).difference(cache):
            cache[text] = " " + comment(text) if text else ""
        return list(map(cache.__getitem__, comments))


def key_text(fields: tuple[str, ...], key: tuple[Value, ...]) -> str:
    return " . ".join(value(f, v) for f, v in zip(fields, key))


def expr(fields: tuple[str, ...]) -> str:
    return " . ".join(FIELD_SYNTAX[f][0] for f in fields)


def set_type(fields: tuple[str, ...]) -> str:
    return " . ".join(FIELD_SYNTAX[f][1] for f in fields)


def render(ruleset: Ruleset) -> str:
    out: list[str] = ["#!/usr/sbin/nft -f"]
    if ruleset.header is not None:
        h = ruleset.header
        out += [
            f"# Generated by {h.generator} from matrix '{h.matrix}' for firewall '{h.firewall}'.",
            f"# matrix sha256: {h.content_hash}",
            "# Do not edit: change the matrix and compile again.",
            "# Loading this file replaces fwmatrix's own tables in one transaction; other tables are left alone.",
        ]
    for table in ruleset.tables:
        out.append("")
        out.extend(_table(table))
    return "\n".join(out) + "\n"


def _table(table: Table) -> list[str]:
    head = f"{ident(table.family)} {ident(table.name)}"
    lines = [f"table {head} {{}}", f"delete table {head}", f"table {head} {{"]
    texts = _Texts()
    for set_def in table.sets:
        lines.extend(_set(set_def, texts))
        lines.append("")
    for chain in table.chains:
        lines.append(f"\tchain {ident(chain.name)} {{")
        if chain.hook is not None:
            prio = PRIORITY_NAMES.get(chain.priority, str(chain.priority))
            policy = f" policy {chain.policy};" if chain.policy else ""
            lines.append(f"\t\ttype {ident(chain.type)} hook {ident(chain.hook)} priority {prio};{policy}")
        for rule in chain.rules:
            lines.append("\t\t" + _rule(rule))
        lines.append("\t}")
        lines.append("")
    if lines[-1] == "":
        lines.pop()
    lines.append("}")
    return lines


_key_of, _data_of, _comment_of = attrgetter("key"), attrgetter("data"), attrgetter("comment")


def _set(set_def: SetDef, texts: _Texts) -> list[str]:
    kind = "map" if set_def.is_map else "set"
    type_text = set_type(set_def.key) + (f" : {set_type(set_def.data)}" if set_def.is_map else "")
    lines = [f"\t{kind} {ident(set_def.name)} {{", f"\t\ttype {type_text}"]
    if any(f in set_def.key for f in ("ip.saddr", "ip.daddr", "ip6.saddr", "ip6.daddr", "dport")):
        lines.append("\t\tflags interval")
    if set_def.elements:
        lines.append("\t\telements = {")
        elements = set_def.elements
        keys = texts.keys(set_def.key, list(map(_key_of, elements)))
        comments = texts.comment_texts(list(map(_comment_of, elements)))
        if set_def.is_map:
            rows = map("{}{} : {}".format, keys, comments, texts.keys(set_def.data, list(map(_data_of, elements))))
        else:
            rows = map(str.__add__, keys, comments)
        lines.append("\t\t\t" + ",\n\t\t\t".join(rows))  # one line an element, a comma after all but the last
        lines.append("\t\t}")
    lines.append("\t}")
    return lines


def _match(match: Match) -> str:
    op = "!= " if match.negate else ""
    if match.set_name is not None:
        return f"{expr(match.fields)} {op}@{ident(match.set_name)}"
    if len(match.values) == 1:
        return f"{expr(match.fields)} {op}{key_text(match.fields, match.values[0])}"
    if match.fields in (("ct.state",), ("ct.status",)):
        return f"{expr(match.fields)} {op}{','.join(key_text(match.fields, v) for v in match.values)}"
    return f"{expr(match.fields)} {op}{{ {', '.join(key_text(match.fields, v) for v in match.values)} }}"


def _action(action: object) -> str:
    if action is None:
        return ""
    if isinstance(action, Verdict):
        return ident(action.kind)
    if isinstance(action, Jump):
        return f"{'goto' if action.goto else 'jump'} {ident(action.chain)}"
    if isinstance(action, VerdictMap):
        entries = ", ".join(f"{key_text(action.fields, key)} : {_action(act)}" for key, act in action.entries)
        return f"{expr(action.fields)} vmap {{ {entries} }}"
    if isinstance(action, DnatMap):
        family = "ip" if action.family == 4 else "ip6"
        return f"dnat {family} to {expr(action.fields)} map @{ident(action.map_name)}"
    if isinstance(action, Snat):
        if action.address.size != 1 or action.address.version != action.family:
            raise RenderError(f"refusing to write SNAT to {action.address!r}: one IPv{action.family} address")
        return f"snat {'ip' if action.family == 4 else 'ip6'} to {_address_text(action.address)}"
    if isinstance(action, Masquerade):
        return "masquerade"
    if isinstance(action, Log):  # counted always, logged within the rate
        return f"counter limit rate {int(action.per_minute)}/minute log prefix {quoted(action.prefix)}"
    raise RenderError(f"no nftables form for {action!r}")


def _rule(rule: Rule) -> str:
    parts = [_match(m) for m in rule.matches]
    action = _action(rule.action)
    if action:
        parts.append(action)
    if rule.comment:
        parts.append(comment(rule.comment))
    return " ".join(parts)
