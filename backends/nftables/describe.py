"""nft-like text of the JSON expressions and statements of a listing.

The parser names what it cannot model (Unmodelled, UnmodelledAction, a set
kept as text) in the words `nft list ruleset` would use, so that a finding
quotes the rule as the operator knows it.
"""

from __future__ import annotations

import json
from typing import Any, Callable


def as_list(raw: Any) -> list[Any]:
    """A JSON value that may be one item or a list of them, as a list (None: empty)."""
    if raw is None:
        return []
    return raw if isinstance(raw, list) else [raw]


def describe(raw: Any) -> str:
    """nft-like text of a JSON expression or statement, for Unmodelled and UnmodelledAction."""
    if raw is None:
        return ""
    if isinstance(raw, bool):
        return "exists" if raw else "missing"
    if isinstance(raw, (int, float, str)):
        return str(raw)
    if isinstance(raw, list):
        return ",".join(describe(item) for item in raw)
    if not isinstance(raw, dict) or len(raw) != 1:
        return json.dumps(raw, separators=(",", ":"), sort_keys=True)
    ((kind, arg),) = raw.items()
    special = _TEXT.get(kind)
    if special is not None:
        try:
            return special(arg)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
    if arg is None:
        return kind
    if isinstance(arg, dict):
        return " ".join([kind] + [f"{name} {describe(value)}" for name, value in arg.items()])
    return f"{kind} {describe(arg)}"


def _set_text(items: Any) -> str:
    parts = [f"{describe(item[0])} : {describe(item[1])}" if isinstance(item, list) and len(item) == 2 else describe(item) for item in as_list(items)]
    return "{ " + ", ".join(parts) + " }"


def _rate_text(arg: dict) -> str:
    unit = arg.get("rate_unit", "packets")
    rate = f"{arg['rate']}/{arg['per']}" if unit == "packets" else f"{arg['rate']} {unit}/{arg['per']}"
    burst = f" burst {arg['burst']} {arg.get('burst_unit', 'packets')}" if arg.get("burst") else ""
    return f"limit rate {'over ' if arg.get('inv') else ''}{rate}{burst}"


def _match_text(arg: dict) -> str:
    left = arg["left"]
    plain = arg["op"] == "in" or (arg["op"] == "==" and not (isinstance(left, dict) and set(left) & {"&", "|", "^"}))
    op = "" if plain else f"{arg['op']} "
    return f"{describe(left)} {op}{describe(arg['right'])}"


def _dynset_text(arg: dict) -> str:
    """`add @set { ip saddr limit rate 3/minute }`: a statement that adds to a set from the packet path."""
    inside = " ".join([describe(arg["elem"])] + [describe(stmt) for stmt in as_list(arg.get("stmt"))])
    return f"{arg['op']} {arg['set']} {{ {inside} }}"


def _nat_text(kind: str) -> Callable[[Any], str]:
    def text(arg: Any) -> str:
        if not isinstance(arg, dict):
            return kind
        family = f" {arg['family']}" if "family" in arg else ""
        target = describe(arg.get("addr")) + (f":{describe(arg['port'])}" if "port" in arg else "")
        to = f" to {target}" if target else ""
        flags = f" {describe(arg['flags'])}" if "flags" in arg else ""
        return f"{kind}{family}{to}{flags}"

    return text


_TEXT: dict[str, Callable[[Any], str]] = {
    "match": _match_text,
    "set": lambda arg: _set_text(arg) if not isinstance(arg, dict) else _dynset_text(arg),
    "range": lambda arg: f"{describe(arg[0])}-{describe(arg[1])}",
    "prefix": lambda arg: f"{arg['addr']}/{arg['len']}",
    "concat": lambda arg: " . ".join(describe(part) for part in arg),
    "elem": lambda arg: describe(arg["val"]),
    "payload": lambda arg: f"{arg['protocol']} {arg['field']}" if "protocol" in arg else f"@{arg['base']},{arg['offset']},{arg['len']}",
    "meta": lambda arg: f"meta {arg['key']}",
    "ct": lambda arg: " ".join(["ct"] + ([arg["dir"]] if "dir" in arg else []) + [arg["key"]]),
    "fib": lambda arg: f"fib {' . '.join(as_list(arg['flags']))} {arg['result']}",
    "map": lambda arg: f"{describe(arg['key'])} map {describe(arg['data'])}",
    "|": lambda arg: " | ".join(describe(part) for part in arg),
    "&": lambda arg: " & ".join(describe(part) for part in arg),
    "^": lambda arg: " ^ ".join(describe(part) for part in arg),
    "jump": lambda arg: f"jump {arg['target']}",
    "goto": lambda arg: f"goto {arg['target']}",
    "limit": _rate_text,
    "quota": lambda arg: f"quota name {arg}" if isinstance(arg, str) else f"quota {'over ' if arg.get('inv') else ''}{arg['val']} {arg.get('val_unit', 'bytes')}",
    "ct count": lambda arg: f"ct count {'over ' if arg.get('inv') else ''}{arg['val']}",
    "mangle": lambda arg: f"{describe(arg['key'])} set {describe(arg['value'])}",
    "meter": lambda arg: f"meter {arg['name']} {{ {describe(arg['key'])} {describe(arg['stmt'])} }}",
    "queue": lambda arg: "queue" + (f" num {describe(arg['num'])}" if "num" in arg else "") + (f" {describe(arg['flags'])}" if "flags" in arg else ""),
    "snat": _nat_text("snat"),
    "dnat": _nat_text("dnat"),
    "masquerade": _nat_text("masquerade"),
    "redirect": _nat_text("redirect"),
    "dup": lambda arg: f"dup to {describe(arg['addr'])}" + (f" device {describe(arg['dev'])}" if "dev" in arg else ""),
    "reject": lambda arg: "reject" + (f" with {arg.get('type', '')} {describe(arg.get('expr'))}".rstrip() if arg else ""),
    "vmap": lambda arg: f"{describe(arg['key'])} vmap {describe(arg['data'])}",
    "xt": lambda arg: f"xt {arg.get('type', '')} {arg.get('name', '')}".strip(),
}
