"""Accepted findings: the matrix's `accept:` list, and baseline files of the same
entries (`fwmatrix audit --baseline FILE`). Each entry needs a kind, at least one
selector (opening, rule, regions, message), a reason, an owner and an expiry date;
errors point at the line of the entry. Which kinds exist is the audit's and lint's
business (fwmatrix/audit/waivers.py checks them), not the loader's."""

from __future__ import annotations

from typing import Any

import yaml

from fwmatrix.errors import MatrixError
from fwmatrix.matrix.model import Acceptance
from fwmatrix.matrix.yamlnodes import compose, line_of, read_source

ACCEPT_KEYS = ("kind", "firewall", "opening", "rule", "regions", "message", "reason", "owner", "expires")
SELECTORS = ("opening", "rule", "regions", "message")
BASELINE_VERSION = 1
BASELINE_KEYS = ("fwmatrix-baseline", "matrix", "firewall", "accept")


def parse_accepts(reader: Any, node: yaml.Node | None) -> tuple[Acceptance, ...]:
    """The entries of an `accept:` list (`reader`: the loader's typed node reader)."""
    if node is None:
        return ()
    out = []
    for item in reader.sequence(node, "'accept'"):
        fields = reader.mapping(item, "an accepted finding", ACCEPT_KEYS)
        what = "an accepted finding"
        for key in ("kind", "reason", "owner", "expires"):
            if key not in fields:
                raise reader.fail(item, f"{what} needs '{key}' (every acceptance says what it accepts, why, whose it is and until when)")
        if not any(key in fields for key in SELECTORS):
            raise reader.fail(item, f"{what} needs at least one of {', '.join(SELECTORS)}: a kind alone would accept every finding of it")

        def text(key: str) -> str | None:
            return reader.text(fields[key][1], f"'{key}' of {what}") if key in fields else None

        expires = reader.date(fields["expires"][1], "'expires'")
        for key in ("reason", "owner"):
            if not (text(key) or "").strip():
                raise reader.fail(fields[key][1], f"'{key}' of {what} is empty")
        regions = tuple(t for t, _ in reader.scalars(fields["regions"][1], "'regions'")) if "regions" in fields else ()
        out.append(Acceptance(
            kind=text("kind") or "", reason=text("reason") or "", owner=text("owner") or "", expires=expires,
            where=reader.where(item), firewall=text("firewall"), opening=text("opening"), rule=text("rule"),
            regions=regions, message=text("message"),
        ))
    return tuple(out)


def load_baseline(path: str) -> tuple[Acceptance, ...]:
    """The entries of a baseline file (written by `fwmatrix audit --write-baseline`)."""
    from fwmatrix.matrix.loader import _Reader  # the loader imports this module

    root = compose(read_source(path))
    reader = _Reader(path)
    top = reader.mapping(root, "a baseline", BASELINE_KEYS)
    if "fwmatrix-baseline" not in top:
        raise MatrixError("not a fwmatrix baseline: it has no 'fwmatrix-baseline' key", path, line_of(root))
    version = reader.integer(top["fwmatrix-baseline"][1], "'fwmatrix-baseline' (the format version)")
    if version != BASELINE_VERSION:
        raise reader.fail(top["fwmatrix-baseline"][1], f"baseline version {version} is not supported (this fwmatrix reads version {BASELINE_VERSION})")
    return parse_accepts(reader, top["accept"][1] if "accept" in top else None)


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar (JSON's escapes are YAML's)."""
    import json

    return json.dumps(text, ensure_ascii=False)


def baseline_text(matrix: str, firewall: str, entries: list[Acceptance]) -> str:
    """A baseline file holding these entries."""
    out = [
        "# fwmatrix baseline: findings known when it was written. `fwmatrix audit --baseline FILE`",
        "# marks them accepted (they stay in the report and fail nothing until they expire);",
        "# only new findings fail. Review it like code: every entry has a reason, an owner and an end.",
        f"fwmatrix-baseline: {BASELINE_VERSION}",
        f"matrix: {_quoted(matrix)}",
        f"firewall: {_quoted(firewall)}",
        "accept:" if entries else "accept: []",
    ]
    for a in entries:
        out.append(f"  - kind: {_quoted(a.kind)}")
        if a.firewall:
            out.append(f"    firewall: {_quoted(a.firewall)}")
        for key in ("opening", "rule", "message"):
            if getattr(a, key):
                out.append(f"    {key}: {_quoted(getattr(a, key))}")
        if a.regions:
            out.append("    regions:")
            out += [f"      - {_quoted(r)}" for r in a.regions]
        out += [f"    reason: {_quoted(a.reason)}", f"    owner: {_quoted(a.owner)}", f"    expires: {a.expires.isoformat()}"]
    return "\n".join(out) + "\n"
