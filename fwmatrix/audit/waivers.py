"""Findings accepted with a reason: the matrix's `accept:` list and a baseline file
(fwmatrix/matrix/accepts.py reads both) applied to the findings of an audit or a
lint. An accepted finding stays in the report, marked with its acceptance, and
counts for no threshold; once its acceptance has expired it is a finding again,
marked with the acceptance that lapsed. `--write-baseline` turns a report's
findings into baseline entries, so that only new findings fail."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Iterable, Sequence, TypeVar

from fwmatrix.errors import MatrixError, did_you_mean
from fwmatrix.matrix.model import Acceptance, Where

F = TypeVar("F")  # an audit Finding or a LintFinding: kind, message, opening, accepted, expired
BASELINE_DAYS = 365  # how long a baseline entry is accepted unless --baseline-expires says otherwise


def check_kinds(accepts: Iterable[Acceptance], kinds: Sequence[str], what: str) -> None:
    """Refuse an acceptance of a kind of finding that does not exist (a typo accepts nothing)."""
    for a in accepts:
        if a.kind not in kinds:
            raise MatrixError(f"accepted finding of unknown kind '{a.kind}'{did_you_mean(a.kind, kinds)}; {what} findings are: {', '.join(kinds)}",
                              a.where.file, a.where.line)


def _rule_matches(wanted: str, rule: str) -> bool:
    """A rule as written in the acceptance: the same text, or a FILE:LINE without its directory."""
    return rule == wanted or rule.endswith("/" + wanted)


def matches(a: Acceptance, finding: object, firewall: str | None) -> bool:
    if a.kind != getattr(finding, "kind"):
        return False
    if a.firewall is not None and a.firewall != firewall:
        return False
    opening = getattr(finding, "opening", None)
    if a.opening is not None and (opening is None or opening.name != a.opening):
        return False
    if a.rule is not None and not _rule_matches(a.rule, getattr(finding, "rule", "")):
        return False
    if a.regions and not set(getattr(finding, "regions", ())) <= set(a.regions):
        return False
    return a.message is None or a.message == getattr(finding, "message")


def accept(findings: Iterable[F], accepts: Sequence[Acceptance], firewall: str | None, today: date) -> list[F]:
    """The findings, each marked with the first acceptance that matches it (`accepted`), or,
    when every one that matches has expired, the latest of those (`expired`)."""
    out = []
    for finding in findings:
        matching = [a for a in accepts if matches(a, finding, firewall)]
        valid = [a for a in matching if a.expires >= today]
        if valid:
            finding = replace(finding, accepted=valid[0])  # type: ignore[type-var]
        elif matching:
            finding = replace(finding, expired=max(matching, key=lambda a: a.expires))  # type: ignore[type-var]
        out.append(finding)
    return out


def baseline_entries(findings: Iterable[object], firewall: str, today: date, owner: str, expires: date | None) -> list[Acceptance]:
    """One entry per finding, with every selector it has (so a finding that grows is new)."""
    expires = expires or today + timedelta(days=BASELINE_DAYS)
    reason = f"known when the baseline was written ({today.isoformat()})"
    out = []
    for f in findings:
        opening = getattr(f, "opening", None)
        rule, regions = getattr(f, "rule", ""), tuple(str(r) for r in getattr(f, "regions", ()))  # the lines, not their fields
        entry = Acceptance(kind=getattr(f, "kind"), reason=reason, owner=owner, expires=expires, where=Where("", 0), firewall=firewall,
                           opening=opening.name if opening is not None else None, rule=rule or None, regions=regions,
                           message=None if (opening is not None or rule or regions) else getattr(f, "message"))
        if entry not in out:
            out.append(entry)
    return out


def acceptance_text(finding: object) -> str:
    """How a report marks a finding: accepted (by whom, until when, why), or its lapsed acceptance."""
    accepted, expired = getattr(finding, "accepted", None), getattr(finding, "expired", None)
    if accepted is not None:
        return f"ACCEPTED ({accepted.label()})"
    if expired is not None:
        return f"acceptance EXPIRED on {expired.expires.isoformat()} ({expired.owner}: {expired.reason})"
    return ""
