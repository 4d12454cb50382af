"""Reports for CI: JUnit XML and SARIF 2.1.0, for `audit`, `lint`, `check` and `diff`.

Every command's results are first put in one neutral shape, an Outcome: the
test cases that exist (each opening; for `check` each firewall × backend) and
the issues found, each with its kind (a SARIF rule), severity, message and the
matrix line it is about. JUnit and SARIF are written from that shape only, so
the four commands cannot drift apart in how they report.

- JUnit: a case fails when an issue about it reaches the threshold
  (`--fail-on`; for `diff`, `--exit-code`), so a dashboard's failures are the
  exit code's reasons; issues below it are kept in the case's system-out.
  Issues about no opening (an excess rule, an unused host) get cases of their
  own. Built with xml.etree, never by concatenating strings.
- SARIF: every issue is a result at its matrix file and line (for the audit,
  the opening's line, or the firewall's when no opening is concerned); rules are
  the kinds, with their help text.

This module also holds what `check` records and the human forms of `lint` and
`check` (report.py holds those of `audit` and `diff`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from fwmatrix import __version__
from fwmatrix.audit.findings import AuditReport
from fwmatrix.audit.waivers import acceptance_text
from fwmatrix.severity import reaches
from fwmatrix.compile.intent import Intent, Warning_
from fwmatrix.review.lint import HELP as LINT_HELP
from fwmatrix.review.lint import KINDS as LINT_KINDS
from fwmatrix.review.lint import SEVERITY_OF as LINT_SEVERITY
from fwmatrix.review.lint import LintReport
from fwmatrix.matrix.model import Matrix, Where
from fwmatrix.report import json_text as as_json
from fwmatrix.report.text import KIND_TITLES, MAX_REGIONS, _marked, _md, _traffic

if TYPE_CHECKING:  # only named in annotations: the lab's and diff's modules, and rich, are not imported for every report
    from rich.console import Console

    from fwmatrix.ops.labrun import LabReport
    from fwmatrix.review.diff import Review

# -- the neutral shape ---------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    title: str
    help: str
    level: str  # the kind's default severity


@dataclass(frozen=True)
class Case:
    name: str
    where: Where | None = None
    skipped: str = ""  # why it was not run


@dataclass(frozen=True)
class Issue:
    rule: str  # the finding's kind
    level: str  # one of SEVERITIES
    message: str
    where: Where | None  # the matrix line it is about (line 0: the file as a whole)
    case: str  # the case it belongs to: an opening's name, or a case of its own
    details: tuple[str, ...] = ()  # the live rule, the packets: more lines for people
    accepted: str = ""  # accepted with a reason (who, until when, why): fails nothing, SARIF `suppressions`
    about: tuple[tuple[str, str], ...] = ()  # more SARIF result properties, e.g. the host and firewall of a fleet audit


@dataclass
class Outcome:
    command: str  # 'audit', 'lint', 'check', 'diff'
    suite: str  # the JUnit suite, e.g. 'contact-highway-7.edge'
    title: str  # one line saying what was judged
    category: str  # SARIF automation id: runs of one category are one analysis
    rules: dict[str, Rule]
    cases: list[Case] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)


# -- JUnit XML ------------------------------------------------------------------------

# XML 1.0 has no place for most control characters; a live rule's comment may hold one.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def junit(outcomes: list[Outcome], fail_on: str | None) -> str:
    """JUnit XML (the Jenkins/Surefire form CI dashboards read, docs/schemas/junit-10.xsd)."""
    root = ET.Element("testsuites", name=f"fwmatrix {outcomes[0].command}" if outcomes else "fwmatrix")
    totals = {"tests": 0, "failures": 0}
    for outcome in outcomes:
        suite = ET.SubElement(root, "testsuite", name=_x(outcome.suite))
        by_case: dict[str, list[Issue]] = {}
        for issue in outcome.issues:
            by_case.setdefault(issue.case, []).append(issue)
        cases = list(outcome.cases)
        declared = {c.name for c in cases}
        cases += [Case(name, issues[0].where) for name, issues in by_case.items() if name not in declared]
        counts = {"tests": len(cases), "failures": 0, "skipped": 0}
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="title", value=_x(outcome.title))
        for case in cases:
            element = ET.SubElement(suite, "testcase", classname=_x(f"fwmatrix.{outcome.command}.{outcome.suite}"), name=_x(case.name))
            issues = by_case.get(case.name, [])
            failing = [i for i in issues if reaches(i.level, fail_on) and not i.accepted]
            for issue in failing:
                failure = ET.SubElement(element, "failure", type=issue.rule, message=_x(f"{issue.level}: {issue.message}"))
                failure.text = _x("\n".join(_where_lines(issue.where) + list(issue.details)))
            if failing:
                counts["failures"] += 1
            elif case.skipped:
                ET.SubElement(element, "skipped", message=_x(case.skipped))
                counts["skipped"] += 1
            notes = ([] if failing else _where_lines(case.where)) + [
                f"{i.level} {i.rule}: {i.message}" + (f" [accepted: {i.accepted}]" if i.accepted else "") for i in issues if i not in failing]
            if notes:
                ET.SubElement(element, "system-out").text = _x("\n".join(notes))
        for key, value in counts.items():
            suite.set(key, str(value))
        for key in totals:
            totals[key] += counts[key]
        suite.set("errors", "0")
    for key in ("tests", "failures"):  # the schema has no 'skipped' on <testsuites>
        root.set(key, str(totals[key]))
    root.set("errors", "0")
    ET.indent(root)
    out = io.BytesIO()
    ET.ElementTree(root).write(out, encoding="UTF-8", xml_declaration=True)
    return out.getvalue().decode() + "\n"


def _where_lines(where: Where | None) -> list[str]:
    if where is None:
        return []
    return [f"{where.file}:{where.line}" if where.line > 0 else where.file]


# -- SARIF 2.1.0 ------------------------------------------------------------------------

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_LEVEL = {"high": "error", "medium": "warning", "low": "note", "info": "note"}
# GitHub code scanning ranks security alerts by this property (0.1-3.9 low, 4-6.9 medium, 7-8.9 high).
SECURITY_SEVERITY = {"high": "8.0", "medium": "5.0", "low": "2.0"}


def sarif(outcomes: list[Outcome]) -> str:
    """One SARIF log; outcomes of one category (several matrices linted) make one run."""
    runs: dict[str, dict] = {}
    for outcome in outcomes:
        run = runs.get(outcome.category)
        if run is None:
            run = runs[outcome.category] = {
                "tool": {"driver": {"name": "fwmatrix", "version": __version__, "semanticVersion": __version__, "rules": []}},
                "automationDetails": {"id": outcome.category},
                "columnKind": "unicodeCodePoints",
                "results": [],
            }
        rules = run["tool"]["driver"]["rules"]
        known = [r["id"] for r in rules]
        for kind, rule in outcome.rules.items():
            if kind not in known:
                rules.append(_sarif_rule(kind, rule))
                known.append(kind)
        for issue in outcome.issues:
            run["results"].append(_sarif_result(outcome, issue, known.index(issue.rule)))
    log = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": list(runs.values())}
    return as_json(log)


def _sarif_rule(kind: str, rule: Rule) -> dict:
    properties: dict = {"tags": ["firewall", "fwmatrix"]}
    if rule.level in SECURITY_SEVERITY:
        properties["tags"].append("security")
        properties["security-severity"] = SECURITY_SEVERITY[rule.level]
    return {
        "id": kind,
        "name": "".join(word.capitalize() for word in re.split(r"[^A-Za-z0-9]+", kind)),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.help},
        "help": {"text": rule.help},
        "defaultConfiguration": {"level": SARIF_LEVEL[rule.level]},
        "properties": properties,
    }


def _sarif_result(outcome: Outcome, issue: Issue, rule_index: int) -> dict:
    text = issue.message
    if issue.details:
        shown = list(issue.details[:MAX_REGIONS]) + ([f"… and {len(issue.details) - MAX_REGIONS} more"] if len(issue.details) > MAX_REGIONS else [])
        text += "\n" + "\n".join(shown)
    result: dict = {
        "ruleId": issue.rule,
        "ruleIndex": rule_index,
        "level": SARIF_LEVEL[issue.level],
        "message": {"text": text},
        "properties": {"severity": issue.level, "case": issue.case, **dict(issue.about)},
    }
    if issue.where is not None:
        location: dict = {"artifactLocation": {"uri": _uri(issue.where.file)}}
        if issue.where.line > 0:
            location["region"] = {"startLine": issue.where.line}
        result["locations"] = [{"physicalLocation": location}]
    # Stable across edits that only move lines, so code scanning keeps one alert per finding.
    digest = hashlib.sha256("\0".join((outcome.category, issue.rule, issue.case, issue.message)).encode()).hexdigest()
    result["partialFingerprints"] = {"fwmatrixFinding/v1": digest[:32]}
    if issue.accepted:
        result["suppressions"] = [{"kind": "external", "status": "accepted", "justification": issue.accepted}]
    return result


def _uri(path: str) -> str:
    """A repository-relative URI when the file is under the working directory (what code
    scanning maps onto the repository), else a file: URI."""
    absolute = Path(os.path.abspath(path))
    try:
        return quote(absolute.relative_to(Path.cwd()).as_posix())
    except ValueError:
        return absolute.as_uri()


# -- audit ---------------------------------------------------------------------------------

AUDIT_RULES = {
    "missing": Rule(KIND_TITLES["missing"], "An opening of the matrix, or the part of it named in the finding, is not forwarded by the firewall. Deploy the compiled ruleset, or find the rule that drops it.", "high"),
    "excess": Rule(KIND_TITLES["excess"], "The firewall forwards traffic that no opening asks for; the finding names the rule that grants it. Remove the rule, or add the opening to the matrix if the traffic is wanted.", "high"),
    "dmz-to-internet": Rule(KIND_TITLES["dmz-to-internet"], LINT_HELP["dmz-to-internet"], "medium"),
    "nat": Rule(KIND_TITLES["nat"], "A port forward of the matrix is missing or goes to another host or port, or the firewall forwards a port no opening asks for.", "high"),
    "reply-blocked": Rule(KIND_TITLES["reply-blocked"], "The answers of an opening cannot come back: no rule accepts them as an established connection (e.g. an established/related rule limited to TCP).", "high"),
    "shadowed": Rule(KIND_TITLES["shadowed"], "A rule that can never match: earlier rules decide every packet it would. Remove it, or move it before the rules that hide it.", "low"),
    "unmodelled": Rule(KIND_TITLES["unmodelled"], "A construct fwmatrix cannot model (marks, rate limits, queues, unknown matches): the audit judged the ruleset both ways, and reports what depends on it.", "medium"),
    "nd-blocked": Rule(KIND_TITLES["nd-blocked"], "The firewall drops ICMPv6 neighbour solicitations or advertisements arriving on an interface, so IPv6 through it cannot work: accept icmpv6 nd-neighbor-solicit and nd-neighbor-advert in the input chain.", "high"),
    "not-audited": Rule(KIND_TITLES["not-audited"], "The input covers one address family only (iptables-save without ip6tables-save, or the other way round): the other was not audited. Pass both files with -r.", "info"),
}


def audit_outcome(report: AuditReport, intent: Intent) -> Outcome:
    matrix = intent.matrix
    fw = matrix.firewalls[report.firewall]
    placed = sorted({f.opening.index: f.opening for f in intent.firewalls[report.firewall].flows}.values(), key=lambda o: o.index)
    outcome = Outcome(
        "audit", f"{report.matrix}.{report.firewall}", f"{report.verdict()} (live ruleset: {report.source})",
        f"fwmatrix/audit/{report.matrix}/{report.firewall}/", AUDIT_RULES,
        [Case(o.name, o.where) for o in placed],
    )
    for f in report.findings:
        details = ((f"live rule: {f.rule}",) if f.rule else ()) + f.regions + _expired(f)
        accepted = f.accepted.label() if f.accepted else ""
        if f.opening is not None:
            outcome.issues.append(Issue(f.kind, f.level, f.message, f.opening.where, f.opening.name, details, accepted))
        else:
            outcome.issues.append(Issue(f.kind, f.level, f.message, fw.where, f"{f.kind}: {f.rule or f.message}", details, accepted))
    return outcome


# -- lint ---------------------------------------------------------------------------------------

LINT_TITLES = {
    "dmz-to-internet": "DMZ → internet: explicit openings that are never needed",
    "no-firewall": "Openings that cross no firewall",
    "redundant": "Redundant: openings other openings already cover",
    "broad-from-internet": "Broad: every port open from the internet",
    "zone-to-zone": "Broad: a whole zone opened to a whole zone",
    "unused": "Unused: hosts, services and groups no opening uses",
    "management-dropped": "Lockout: management accesses a firewall on their way drops",
    "expired": "Expired: openings and groups past their expiry date",
    "expiring": "Expiring: openings and groups that expire soon",
}
LINT_RULES = {kind: Rule(LINT_TITLES[kind], LINT_HELP[kind], LINT_SEVERITY[kind]) for kind in LINT_KINDS}


def lint_outcome(report: LintReport) -> Outcome:
    outcome = Outcome("lint", report.matrix, report.verdict(), "fwmatrix/lint/", LINT_RULES, [Case(o.name, o.where) for o in report.openings])
    for f in report.findings:
        case = f.opening.name if f.opening is not None else f"{f.kind}: {' '.join(f.definition) if f.definition else f.message}"
        details = ((f"covered by: {', '.join(f.covering)}",) if f.covering else ()) + _expired(f)
        outcome.issues.append(Issue(f.kind, f.level, f.message, f.where, case, details, f.accepted.label() if f.accepted else ""))
    return outcome


def _expired(finding: object) -> tuple[str, ...]:
    """A lapsed acceptance, as a detail line of the finding it no longer accepts."""
    text = acceptance_text(finding)
    return (text,) if text and getattr(finding, "expired", None) is not None else ()


# -- check ----------------------------------------------------------------------------------------

CHECK_SEVERITY = {"refused": "high", "warning": "medium", "unchecked": "info"}
CHECK_RULES = {
    "refused": Rule("The target's own checker refuses a compiled ruleset", "nft -c, iptables-restore --test or the pf checker refused the ruleset compiled for this firewall: a bug in fwmatrix or a target too old for it. The problems are in the finding.", "high"),
    "warning": Rule("The matrix loads, with a warning", "The matrix is valid but something in it is likely a mistake, e.g. an opening whose sources and destinations share a zone, so it crosses no firewall.", "medium"),
    "unchecked": Rule("A ruleset could not be checked here", "The target's checker is not available (not installed, or no network namespace could be made), so the ruleset was not checked.", "info"),
}


@dataclass(frozen=True)
class BackendCheck:
    backend: str
    files: tuple[str, ...]
    status: str  # 'accepted', 'refused', 'unchecked' (no checker here), 'skipped' (--no-kernel)
    problems: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class FirewallCheck:
    name: str
    where: Where
    flows: int
    interface_pairs: int
    dnats: int
    backends: tuple[BackendCheck, ...]
    snats: int = 0  # source NAT mappings (postrouting)
    inputs: int = 0  # openings to the firewall itself (its input chain), management apart
    management: int = 0  # management accesses that arrive on it


@dataclass
class CheckReport:
    """What `fwmatrix check` found: the matrix loaded (else it exits 2 first), its warnings,
    and each compiled ruleset as its target's checker judged it."""

    matrix: Matrix
    warnings: tuple[Warning_, ...]
    firewalls: list[FirewallCheck]

    def levels(self) -> list[str]:
        levels = [CHECK_SEVERITY["warning"]] * len(self.warnings)
        levels += [CHECK_SEVERITY[b.status] for fw in self.firewalls for b in fw.backends if b.status in CHECK_SEVERITY]
        return levels

    def statuses(self) -> dict[str, int]:
        counts = {"accepted": 0, "refused": 0, "unchecked": 0, "skipped": 0}
        for fw in self.firewalls:
            for b in fw.backends:
                counts[b.status] += 1
        return counts

    def verdict(self) -> str:
        m = self.matrix
        parts = [f"matrix '{m.name}' is valid"]
        counts = {k: n for k, n in self.statuses().items() if n}
        if counts:
            parts.append("rulesets " + ", ".join(f"{n} {status}" for status, n in counts.items()))
        if self.warnings:
            parts.append(f"{len(self.warnings)} warning{'s' if len(self.warnings) != 1 else ''}")
        return "; ".join(parts)

    def sizes(self) -> dict[str, int]:
        m = self.matrix
        return {"zones": len(m.zones), "hosts": len(m.hosts), "services": len(m.services), "firewalls": len(m.firewalls), "openings": len(m.openings)}

    def to_json(self) -> dict:
        return {
            "schema": "fwmatrix.check/1",
            "matrix": self.matrix.name,
            "file": self.matrix.file,
            "verdict": self.verdict(),
            "sizes": self.sizes(),
            "warnings": [
                {"kind": "warning", "severity": CHECK_SEVERITY["warning"], "message": w.message, "file": w.where.file, "line": w.where.line}
                for w in self.warnings
            ],
            "firewalls": [
                {
                    "name": fw.name,
                    "line": fw.where.line,
                    "flows": fw.flows,
                    "interface_pairs": fw.interface_pairs,
                    "dnats": fw.dnats,
                    "snats": fw.snats,
                    "inputs": fw.inputs,
                    "management": fw.management,
                    "backends": [
                        {"backend": b.backend, "files": list(b.files), "status": b.status, "problems": list(b.problems), "reason": b.reason}
                        for b in fw.backends
                    ],
                }
                for fw in self.firewalls
            ],
        }


def check_fails(report: CheckReport, threshold: str) -> bool:
    return any(reaches(level, threshold) for level in report.levels())


def check_outcome(report: CheckReport) -> Outcome:
    m = report.matrix
    outcome = Outcome("check", m.name, report.verdict(), "fwmatrix/check/", CHECK_RULES)
    openings = {o.where: o.name for o in m.openings}
    for w in report.warnings:
        subject = f"opening {openings[w.where]}" if w.where in openings else f"line {w.where.line}"
        outcome.issues.append(Issue("warning", CHECK_SEVERITY["warning"], w.message, w.where, f"warning: {subject}"))
    for fw in report.firewalls:
        for b in fw.backends:
            name = f"{fw.name} × {b.backend}"
            skipped = {"unchecked": f"not checked: {b.reason}", "skipped": b.reason}.get(b.status, "")
            outcome.cases.append(Case(name, fw.where, skipped))
            if b.status == "refused":
                outcome.issues.append(Issue("refused", "high", f"{b.backend} refuses the ruleset of firewall '{fw.name}' ({', '.join(b.files)})", fw.where, name, b.problems))
            elif b.status == "unchecked":
                outcome.issues.append(Issue("unchecked", "info", f"{b.backend}: the ruleset of firewall '{fw.name}' was not checked: {b.reason}", fw.where, name))
    return outcome


# -- diff ------------------------------------------------------------------------------------------

DIFF_RULES = {
    "added": Rule("Opening added", "A new opening: the traffic it opens is listed.", "info"),
    "removed": Rule("Opening removed", "An opening was removed: the traffic it no longer opens is listed.", "info"),
    "widened": Rule("Opening widened", "An opening now opens more traffic.", "info"),
    "narrowed": Rule("Opening narrowed", "An opening now opens less traffic.", "info"),
    "changed": Rule("Opening changed", "An opening opens some new traffic and closes some.", "info"),
    "nat": Rule("Port forward changed", "A port forward was added, removed or re-targeted.", "info"),
    "definition": Rule("Definition moves traffic", "A host, service, zone, group or firewall changed, and with it what some openings open.", "info"),
}


# -- lab -------------------------------------------------------------------------------------------

LAB_RULES = {
    "open": Rule("Opening does not work", "Real packets of an opening did not arrive where they should, or its answer did not come back.", "high"),
    "closed": Rule("Closed traffic got through", "A new connection the matrix leaves closed was seen beyond the firewall.", "high"),
}


def lab_outcome(report: LabReport, matrix: Matrix) -> Outcome:
    """One case per check of the lab; a failed check is an issue (high) on its opening's line."""
    outcome = Outcome("lab", f"{report.matrix}.{report.firewall}.{report.backend}", report.summary(), f"fwmatrix/lab/{report.firewall}/", LAB_RULES)
    rows = {o.index: o for o in matrix.openings}
    for r in report.results:
        opening = rows.get(r.check.row) if r.check.row is not None else None
        where = opening.where if opening is not None else None
        name = f"{r.check.kind}: {r.check.name} {r.check.service}"
        outcome.cases.append(Case(name, where))
        if not r.passed:
            verb = "does not work" if r.check.kind == "open" else "is not closed"
            outcome.issues.append(Issue(r.check.kind, "high", f"{r.check.name} ({r.check.route}, {r.check.service}) {verb}: {r.detail()}",
                                        where, name, tuple(str(x) for x in r.results)))
    return outcome


def diff_outcome(review: Review, matrix: Matrix) -> Outcome:
    """The change as issues (all of level info): with --exit-code every change fails its case."""
    outcome = Outcome("diff", matrix.name, review.summary(), f"fwmatrix/diff/{matrix.name}/", DIFF_RULES)
    lines = {o.name: o.where for o in matrix.openings}
    outcome.cases = [Case(o.name, o.where) for o in matrix.openings]
    outcome.cases += [Case(c.name) for fw in review.firewalls for c in fw.openings if c.kind == "removed" and c.name not in lines]
    whole_file = Where(matrix.file, 0)
    for fw in review.firewalls:
        for c in fw.openings:
            if c.kind == "renamed":
                continue  # no change in what is open
            changes = [f"+ {_traffic(x)}" for x in c.opened] + [f"- {_traffic(x)}" for x in c.closed]
            message = f"opening '{c.name}' {c.kind} on firewall {fw.name}: opens {len(c.opened)}, closes {len(c.closed)}"
            outcome.issues.append(Issue(c.kind, "info", message, lines.get(c.name, whole_file), c.name, tuple(changes)))
        for n in fw.nat:
            before_after = f"{n.old or '—'} → {n.new or '—'}"
            outcome.issues.append(Issue("nat", "info", f"port forward {n.kind} on firewall {fw.name}: {n.what}: {before_after}", lines.get(n.opening, whole_file), n.opening))
    for d in review.definitions:
        if d.moves:
            where = _definition_where(matrix, d.kind, d.name) or whole_file
            outcome.issues.append(Issue("definition", "info", f"{d.kind} '{d.name}': {d.old} → {d.new} (moves {', '.join(d.moves)})", where, f"{d.kind} {d.name}"))
    return outcome


def _definition_where(matrix: Matrix, kind: str, name: str) -> Where | None:
    table: dict = {"host": matrix.hosts, "service": matrix.services, "zone": matrix.zones, "group": matrix.groups, "firewall": matrix.firewalls}
    item = table.get(kind, {}).get(name)
    return item.where if item is not None else None


# -- lint and check for people (audit and diff: report.py) ----------------------------------------


def print_lint(report: LintReport, console: Console) -> None:
    from rich.markup import escape

    from fwmatrix.report.tables import Table

    style = "bold green" if not report.standing else "bold yellow"
    console.print(f"[{style}]{report.verdict()}[/]")
    if not report.findings:
        return
    table = Table(show_lines=False, expand=False)
    for column in ("line", "severity", "kind", "finding"):
        table.add_column(column, overflow="fold")
    for f in report.findings:
        table.add_row(escape(_line(f.where, report.file)), f.level, f.kind, escape(_marked(f)))
    console.print(f"matrix file {report.file}", style="dim", markup=False)
    console.print(table)


def lint_markdown(report: LintReport) -> str:
    icon = "✅" if not report.standing else "⚠️"
    out = [f"### {icon} fwmatrix lint: {report.verdict()}", "", f"Matrix file `{report.file}`.", ""]
    if report.findings:
        out += ["| line | severity | kind | finding |", "|---|---|---|---|"]
        for f in report.findings:
            out.append(f"| {_md(_line(f.where, report.file))} | {f.level} | {f.kind} | {_md(_marked(f))} |")
    return "\n".join(out).rstrip() + "\n"


def _line(where: Where, matrix_file: str) -> str:
    """A finding's line; with its file when an included file holds it."""
    return str(where.line) if where.file == matrix_file else f"{where.file}:{where.line}"


def print_check(report: CheckReport, console: Console) -> None:
    from rich.markup import escape

    m = report.matrix
    sizes = report.sizes()
    console.print(
        f"[green]✓[/] {escape(m.file)}: matrix '{escape(m.name)}' is valid — {sizes['zones']} zones, {sizes['hosts']} hosts, "
        f"{sizes['services']} services, {sizes['firewalls']} firewalls, {sizes['openings']} openings"
    )
    for warning in report.warnings:
        console.print(f"[yellow]![/] {escape(str(warning.where))}: {escape(warning.message)}")
    for fw in report.firewalls:
        console.print(f"  firewall '{escape(fw.name)}': {_count(fw.flows, 'flow')} on {_count(fw.interface_pairs, 'interface pair')}, "
                      f"{_count(fw.dnats, 'DNAT mapping')}, {_count(fw.snats, 'SNAT mapping')}, "
                      f"{_count(fw.inputs, 'own-service input')}, {_count(fw.management, 'management input')}")
        for b in fw.backends:
            if b.status == "unchecked":
                console.print(f"  [yellow]?[/] {b.backend}: not checked ({escape(b.reason)})")
            elif b.status == "refused":
                console.print(f"  [red]✗[/] {b.backend}: the target refuses the ruleset:")
                for line in b.problems[:20]:
                    console.print(f"      {line}", markup=False)
            elif b.status == "accepted":
                console.print(f"  [green]✓[/] {b.backend}: {escape(', '.join(b.files))} accepted by the target's checker")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def check_markdown(report: CheckReport) -> str:
    refused = report.statuses()["refused"]
    out = [f"### {'❌' if refused else '✅'} fwmatrix check: {report.verdict()}", "", f"Matrix file `{report.matrix.file}`.", ""]
    for w in report.warnings:
        out.append(f"- ⚠️ line {w.where.line}: {_md(w.message)}")
    if report.warnings:
        out.append("")
    rows = [(fw, b) for fw in report.firewalls for b in fw.backends]
    if rows:
        out += ["| firewall | backend | files | result |", "|---|---|---|---|"]
        for fw, b in rows:
            result = {"accepted": "✅ accepted", "refused": "❌ refused", "unchecked": "❔ not checked", "skipped": "skipped"}[b.status]
            result += f" ({_md(b.reason)})" if b.reason else ""
            result += "".join(f"<br>`{_md(p)}`" for p in b.problems[:MAX_REGIONS])
            out.append(f"| `{fw.name}` | {b.backend} | {', '.join(f'`{f}`' for f in b.files)} | {result} |")
    return "\n".join(out).rstrip() + "\n"


__all__ = [
    "Rule", "Case", "Issue", "Outcome", "junit", "sarif",
    "audit_outcome", "lint_outcome", "check_outcome", "diff_outcome",
    "BackendCheck", "FirewallCheck", "CheckReport", "check_fails",
    "print_lint", "lint_markdown", "print_check", "check_markdown", "as_json",
]
