"""The merged audit of a fleet (schema fwmatrix.fleet-audit/1, written by the Ansible module
fwmatrix_fleet_report) as JUnit and SARIF, through ci.py's writers: one Outcome per firewall.

The merged report holds each firewall's audit as JSON, not the matrix, so the cases are the
findings themselves (a clean firewall gets one passing case), and a finding's place is its
opening's file and line when it has one. Every issue names its host and firewall: in the
JUnit suite's name and in the SARIF result's properties.
"""

from __future__ import annotations

from fwmatrix.audit.findings import SEVERITY_OF
from fwmatrix.errors import FwmatrixError
from fwmatrix.matrix.model import Where
from fwmatrix.report.ci import AUDIT_RULES, Case, Issue, Outcome, Rule
from fwmatrix.severity import SEVERITIES

SCHEMA = "fwmatrix.fleet-audit/1"


def fleet_outcomes(report: dict, source: str = "") -> list[Outcome]:
    """One Outcome per firewall of the merged report; FwmatrixError when it is not one."""
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise FwmatrixError(f"not a merged fleet audit (schema {SCHEMA}, written by fwmatrix_fleet_report)", source or None)
    firewalls, findings = report.get("firewalls"), report.get("findings")
    if not isinstance(firewalls, list) or not isinstance(findings, list):
        raise FwmatrixError("merged fleet audit: 'firewalls' and 'findings' must be lists", source or None)
    outcomes: dict[str, Outcome] = {}
    for row in firewalls:
        host, firewall = _names(row, source)
        title = f"{host}: {row.get('verdict') or 'audited'}"
        outcomes[host] = Outcome("audit", f"{host}.{firewall}", title, f"fwmatrix/fleet-audit/{row.get('matrix') or ''}/", AUDIT_RULES)
    for number, finding in enumerate(findings, start=1):
        host, firewall = _names(finding, source)
        outcome = outcomes.get(host)
        if outcome is None:
            raise FwmatrixError(f"merged fleet audit: finding #{number} is about host '{host}', which is not among the firewalls", source or None)
        issue = _issue(finding, host, firewall, number, source)
        if issue.rule not in outcome.rules:  # a kind this fwmatrix does not know (a newer one wrote it)
            outcome.rules = dict(outcome.rules) | {issue.rule: Rule(issue.rule, f"A finding of kind '{issue.rule}'; see the fwmatrix that wrote the audit.", issue.level)}
        outcome.issues.append(issue)
    for outcome in outcomes.values():
        if not outcome.issues:
            outcome.cases.append(Case(f"firewall {outcome.suite} matches the matrix"))
    return list(outcomes.values())


def _names(row: object, source: str) -> tuple[str, str]:
    if not isinstance(row, dict) or not isinstance(row.get("host"), str) or not isinstance(row.get("firewall"), str):
        raise FwmatrixError("merged fleet audit: every firewall and finding needs a 'host' and a 'firewall' (strings)", source or None)
    return row["host"], row["firewall"]


def _issue(finding: dict, host: str, firewall: str, number: int, source: str) -> Issue:
    kind, message = finding.get("kind"), finding.get("message")
    if not isinstance(kind, str) or not isinstance(message, str):
        raise FwmatrixError(f"merged fleet audit: finding #{number} needs a 'kind' and a 'message' (strings)", source or None)
    level = finding.get("severity") if finding.get("severity") in SEVERITIES else SEVERITY_OF.get(kind, "high")
    opening = finding.get("opening") if isinstance(finding.get("opening"), dict) else None
    where = None
    if opening is not None and isinstance(opening.get("file"), str) and isinstance(opening.get("line"), int):
        where = Where(opening["file"], opening["line"])
    rule = finding.get("rule") if isinstance(finding.get("rule"), str) else ""
    case = f"{kind}: {opening.get('name') if opening is not None else rule or message}"
    regions = finding.get("regions") if isinstance(finding.get("regions"), list) else []
    details = ((f"live rule: {rule}",) if rule else ()) + tuple(str(r) for r in regions)
    accepted = finding.get("accepted")
    label = str(accepted.get("reason", "accepted")) if isinstance(accepted, dict) else ""
    return Issue(kind, level, f"{firewall} ({host}): {message}", where, case, details, label, (("host", host), ("firewall", firewall)))


__all__ = ["SCHEMA", "fleet_outcomes"]
