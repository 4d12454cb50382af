"""A live ruleset (nft's JSON listing, or nft text) as the Ruleset IR.

The audit judges what a firewall really runs. The source is the JSON of
`nft -j list ruleset` (libnftables-json(5)); text is loaded into a private
network namespace and listed back (binding.list_text), so nft itself parses
the text and normalises it (`meta l4proto udp th dport 53` lists as
`udp dport 53`) and this code reads meaning, never syntax.

What the IR cannot express becomes Unmodelled or UnmodelledAction, never
nothing (the package docstring says what). Malformed *listings* are the
user's error (BackendError); an expression this code does not know is the
ruleset's business (Unmodelled).

The rules are read in statements.py (their actions) and matches.py (their matches,
through a _TableContext); this module reads the listing's tables, their sets and
maps, and their chains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Callable, cast

from fwmatrix.backends.nftables.describe import as_list, describe
from fwmatrix.backends.nftables.matches import _SHAPE_ERRORS, _TableContext, _why
from fwmatrix.backends.nftables.statements import _parse_rule
from fwmatrix.backends.nftables.values import Scalars, _unwrap, _value, _verdict
from fwmatrix.errors import BackendError
from fwmatrix.gcpause import gc_paused
from fwmatrix.ir import Chain, Element, Key, Rule, Ruleset, SetDef, Table, Unmodelled, Verdict

PRIORITY_VALUES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
# Table flags: `dormant` switches a table off. nft 1.0.6 prints the table's name
# in place of its flags, so any other value may hide a dormant table.
TABLE_FLAGS = {"dormant", "owner", "persist"}

# Named stateful objects a listing may hold: rules reference them (`counter name`,
# `quota name`, `flow add @ft`) and those references are judged where they occur.
NAMED_OBJECTS = {"counter", "quota", "limit", "flowtable", "ct helper", "ct timeout", "ct expectation", "secmark", "synproxy", "tunnel"}
# nft set type -> (value kind, the field assumed when no rule looks the set up: a type names no packet field).
SET_TYPES = {
    "ipv4_addr": ("ip", "ip.daddr"), "ipv6_addr": ("ip6", "ip6.daddr"), "inet_service": ("port", "dport"),
    "inet_proto": ("proto", "l4proto"), "ifname": ("ifname", "iif"), "iface_index": ("ifindex", "iif"),
    "ct_state": ("ct_state", "ct.state"), "nf_proto": ("nfproto", "nfproto"), "ether_addr": ("ether", "ether.saddr"),
}
# nft map data type -> (value kind, field) for the maps a DNAT statement reads its target from.
MAP_DATA_TYPES = {"ipv4_addr": ("ip", "ip.daddr"), "ipv6_addr": ("ip6", "ip6.daddr"), "inet_service": ("port", "dport")}


# -- sets, chains, tables ------------------------------------------------------------


def _type_names(raw: Any) -> tuple[str, ...]:
    """A set's type: "ipv4_addr", ["ipv4_addr", "inet_service"] or "ipv4_addr . inet_service"."""
    if isinstance(raw, list):
        return tuple(str(t) for t in raw)
    return tuple(part.strip() for part in str(raw).split(" . "))


@dataclass
class _SetInfo:
    name: str
    key_types: tuple[str, ...]
    key_kinds: tuple[str, ...]
    data_types: tuple[str, ...]
    data_kinds: tuple[str, ...]  # () for a set, ("verdict",) for a verdict map
    elements: tuple[Element, ...]
    opaque: str = ""  # why rules cannot look it up exactly (its values are kept as text)
    dynamic: bool = False  # `flags dynamic`: the packet path may add to it

    def definition(self, uses: tuple[str, ...] | None, filled: bool) -> SetDef:
        key = uses if uses else tuple(SET_TYPES.get(t, ("", f"nft:{t}"))[1] for t in self.key_types)
        if self.data_kinds == ("verdict",):
            data: tuple[str, ...] = ("verdict",)
        else:
            data = tuple(MAP_DATA_TYPES.get(t, ("", f"nft:{t}"))[1] for t in self.data_types)
        return SetDef(self.name, key, self.elements, data, dynamic=filled or self.dynamic)


def _set_info(body: dict, is_map: bool, scalars: Scalars) -> _SetInfo:
    key_types = _type_names(body["type"])
    data_types = _type_names(body["map"]) if is_map else ()
    key_kinds = tuple(SET_TYPES.get(t, ("raw", ""))[0] for t in key_types)
    if data_types == ("verdict",):
        data_kinds: tuple[str, ...] = ("verdict",)
    else:
        data_kinds = tuple(MAP_DATA_TYPES.get(t, ("raw", ""))[0] for t in data_types)
    raw_elements = body.get("elem") or []
    opaque = ""
    try:
        read_key = _key_reader(key_kinds, scalars)
        if not data_kinds:
            elements = _set_elements(scalars, key_kinds, read_key, raw_elements)
        elif data_kinds == ("verdict",):  # a `continue` entry falls through exactly like a miss
            elements = tuple(e for e in (_parse_entry(read_key, _verdict_data, item) for item in raw_elements) if e.data)
        else:
            read_data = _key_reader(data_kinds, scalars)
            elements = tuple(_parse_entry(read_key, read_data, item) for item in raw_elements)
        if "raw" in key_kinds + data_kinds:
            opaque = f"holds values of type {' . '.join(key_types + data_types)}, which fwmatrix does not model"
    except _SHAPE_ERRORS as exc:
        elements = tuple(Element((describe(item),)) for item in raw_elements)
        opaque = "has elements fwmatrix cannot read" + _why(exc)
    return _SetInfo(body["name"], key_types, key_kinds, data_types, data_kinds, elements, opaque, "dynamic" in as_list(body.get("flags")))


def _key_reader(kinds: tuple[str, ...], scalars: Scalars) -> Callable[[Any], Key]:
    """How the keys (or map data) of one set's elements are read: a type the IR has no
    field for is kept as text, part by part."""
    if "raw" in kinds:
        return lambda raw: tuple(_value("raw", part) for part in _parts(raw, len(kinds)))
    return scalars.keys(kinds)


def _comment(raw_key: Any) -> str:
    return raw_key["elem"].get("comment", "") if isinstance(raw_key, dict) and "elem" in raw_key else ""


def _set_elements(scalars: Scalars, kinds: tuple[str, ...], read_key: Callable[[Any], Key], raw_elements: list[Any]) -> tuple[Element, ...]:
    """The elements of a set: their keys (there may be hundreds of thousands: read column by
    column when they have the plain shape, Scalars.plain_keys; else one by one)."""
    plain = scalars.plain_keys(kinds, raw_elements) if "raw" not in kinds else None
    if plain is not None:
        keys, comments = plain
        return tuple(map(Element, keys, repeat((), len(keys)), comments))
    elements = []
    for item in raw_elements:
        comment = _comment(item)
        elements.append(Element(read_key(item), (), comment))
    return tuple(elements)


def _parse_entry(read_key: Callable[[Any], Key], read_data: Callable[[Any], Key], item: Any) -> Element:
    """An element of a map: [key, data]."""
    raw_key, raw_data = item
    comment = _comment(raw_key)
    return Element(read_key(raw_key), read_data(raw_data), comment)


def _verdict_data(raw: Any) -> Key:
    """A verdict map's data: Element.data holds Values; here a verdict (see the report on the IR);
    () for `continue`."""
    target = _verdict(raw)
    return cast(Key, (target,) if target is not None else ())


def _parts(raw: Any, count: int) -> list[Any]:
    raw = _unwrap(raw)
    if count > 1 and isinstance(raw, dict) and isinstance(raw.get("concat"), list):
        return list(raw["concat"])
    return [raw]


def _priority(raw: Any, where: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw in PRIORITY_VALUES:
        return PRIORITY_VALUES[raw]
    raise BackendError(f"nftables JSON: {where} has priority {raw!r}, which fwmatrix cannot read")


@dataclass
class _TableParts:
    """One table's objects as the listing gives them, before parsing."""

    family: str
    name: str
    flags: tuple[str, ...] = ()
    chains: dict[str, dict] = field(default_factory=dict)
    sets: dict[str, tuple[dict, bool]] = field(default_factory=dict)  # name -> (object, is a map)
    rules: dict[str, list[dict]] = field(default_factory=dict)  # chain -> its rules in order


def _build_table(parts: _TableParts) -> Table:
    scalars = Scalars()
    sets = {name: _set_info(body, is_map, scalars) for name, (body, is_map) in parts.sets.items()}
    ctx = _TableContext(parts.family, parts.name, sets, scalars)
    unknown_flags = [flag for flag in parts.flags if flag not in TABLE_FLAGS]
    chains = []
    for name, body in parts.chains.items():
        rules = tuple(ir_rule for rule in parts.rules.get(name, []) for ir_rule in _parse_rule(rule, ctx, name))
        # A dormant table is registered on no hook: its base chains see no packets,
        # which the IR says by making them regular chains.
        if body.get("hook") is None or "dormant" in parts.flags:
            chains.append(Chain(name, rules))
            continue
        if unknown_flags:
            # The table may be dormant: its base chains may be skipped, which is what
            # accepting first means (the packet goes on to the next base chain).
            maybe_off = Unmodelled(f"table flags {','.join(unknown_flags)}: flags fwmatrix cannot read; the table may be dormant (off)")
            rules = (Rule((maybe_off,), Verdict("accept"), origin=f"{parts.family} {parts.name} {name} (table flags)"),) + rules
        where = f"chain {parts.family} {parts.name} {name}"
        devices = tuple(str(d) for d in as_list(body["dev"])) if "dev" in body else None
        chains.append(Chain(name, rules, hook=str(body["hook"]), type=str(body.get("type", "filter")), priority=_priority(body.get("prio", 0), where),
                            policy=str(body.get("policy", "accept")), devices=devices))
    sets = tuple(info.definition(ctx.uses.get(name), name in ctx.filled) for name, info in ctx.sets.items())
    return Table(parts.family, parts.name, tuple(chains), sets)


def _listing(data: dict | str | bytes) -> list[Any]:
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise BackendError(f"not nftables JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise BackendError("not nftables JSON fwmatrix reads: arrays or objects nested too deeply") from None
        except ValueError:  # an integer of more digits than Python converts (4300)
            raise BackendError("not nftables JSON fwmatrix reads: a number with thousands of digits") from None
    if not isinstance(data, dict) or not isinstance(data.get("nftables"), list):
        raise BackendError("not an nftables JSON listing: expected {\"nftables\": [...]}, the output of `nft -j list ruleset`")
    return data["nftables"]


def _required(body: Any, kind: str, index: int, *keys: str) -> tuple[str, ...]:
    if not isinstance(body, dict):
        raise BackendError(f"nftables JSON: {kind} (item {index}) is not an object")
    missing = [key for key in keys if not isinstance(body.get(key), str)]
    if missing:
        raise BackendError(f"nftables JSON: {kind} (item {index}) has no '{missing[0]}'")
    return tuple(body[key] for key in keys)


def parse_json(data: dict | str | bytes) -> Ruleset:
    """The JSON of `nft -j list ruleset` (a dict, or its text) as a Ruleset."""
    with gc_paused():
        return _parse_listing(_listing(data))


def _parse_listing(items: list[Any]) -> Ruleset:
    tables: dict[tuple[str, str], _TableParts] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            raise BackendError(f"nftables JSON: item {index} is not an object with one key")
        ((kind, body),) = item.items()
        if kind == "metainfo" or kind in NAMED_OBJECTS:
            continue
        if kind == "table":
            family, name = _required(body, kind, index, "family", "name")
            tables.setdefault((family, name), _TableParts(family, name, tuple(str(flag) for flag in as_list(body.get("flags")))))
            continue
        if kind not in ("chain", "set", "map", "rule"):
            raise BackendError(f"nftables JSON: unknown object '{kind}' (item {index}); fwmatrix reads the output of `nft -j list ruleset`")
        family = table = chain = None
        if kind == "rule" and type(body) is dict:  # most items: names read without _required's calls, which say what is wrong
            family, table, chain = body.get("family"), body.get("table"), body.get("chain")
        if not (isinstance(family, str) and isinstance(table, str)):
            family, table = _required(body, kind, index, "family", "table")
        parts = tables.get((family, table))
        if parts is None:
            raise BackendError(f"nftables JSON: {kind} (item {index}) belongs to table '{family} {table}', which is not listed before it")
        if kind == "rule":
            if not isinstance(chain, str):
                (chain,) = _required(body, kind, index, "chain")
            if chain not in parts.chains:
                raise BackendError(f"nftables JSON: rule (item {index}) belongs to chain '{chain}', which table '{family} {table}' does not list before it")
            parts.rules.setdefault(chain, []).append(body)
            continue
        (name,) = _required(body, kind, index, "name")
        if kind == "chain":
            parts.chains[name] = body
        else:
            if "type" not in body or (kind == "map" and "map" not in body):
                raise BackendError(f"nftables JSON: {kind} '{name}' (item {index}) has no type")
            parts.sets[name] = (body, kind == "map")
    return Ruleset(tuple(_build_table(parts) for parts in tables.values()))


def parse_text(text: str, source: str = "<nft text>") -> Ruleset:
    """An nft ruleset as text (an `nft -f` file or `nft list ruleset` output) as a Ruleset.

    It is loaded into a private, empty network namespace that vanishes with the
    process (a user namespace too when not root) and listed back as JSON, so
    nft's own parser reads the text. Invalid text raises BackendError with
    nft's first error and its line."""
    from fwmatrix.backends.nftables.binding import list_text  # namespaces and nft: only for text (the audit reads JSON)

    return parse_json(list_text(text, source))


def read_live() -> Ruleset:
    """The ruleset of the current network namespace's kernel (in tests and labs:
    `NetNamespace.call(read_live)`, which runs it inside the namespace)."""
    from fwmatrix.backends.nftables.binding import list_live

    return parse_json(list_live())
