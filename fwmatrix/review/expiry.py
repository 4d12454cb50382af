"""Openings and groups past their `expires` date, or close to it: lint's `expired`
(medium: remove it, or extend it) and `expiring` (info: within `--expiring-within`
days) findings, at the `expires` line."""

from __future__ import annotations

from datetime import date

from fwmatrix.matrix.model import Matrix, Metadata, Where

DEFAULT_WITHIN_DAYS = 30


def expiry_findings(matrix: Matrix, today: date, within_days: int, finding: type) -> list:
    """`finding`: the lint finding class (kind, message, where, opening=, definition=)."""
    out = []
    subjects = [(f"opening '{o.name}' (row {o.index})", o.meta, o.where, {"opening": o}) for o in matrix.openings]
    subjects += [(f"group '{g.name}'", g.meta, g.where, {"definition": ("group", g.name)}) for g in matrix.groups.values()]
    for what, meta, where, about in subjects:
        if meta is None or meta.expires is None:
            continue
        at = Where(where.file, meta.expires_line or where.line)
        days = (meta.expires - today).days
        whose = _whose(meta)
        if days < 0:
            out.append(finding("expired", f"{what} expired on {meta.expires.isoformat()}{whose}: remove it, or extend it", at, **about))
        elif days <= within_days:
            out.append(finding("expiring", f"{what} expires on {meta.expires.isoformat()}{whose}, within the {within_days} days "
                                           "lint looks ahead: is it still needed?", at, **about))
    return out


def _whose(meta: Metadata) -> str:
    parts = [f"owner {meta.owner}" if meta.owner else "", f"ticket {meta.ticket}" if meta.ticket else ""]
    text = ", ".join(p for p in parts if p)
    return f" ({text})" if text else ""
