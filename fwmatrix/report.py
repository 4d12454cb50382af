"""Audit reports for people (a rich terminal table, Markdown) and machines (JSON).

The JSON form is versioned (`"schema": "fwmatrix.audit/1"`) and documented in
docs/audit.md; it is what other tools should read.
"""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from .audit import KINDS, AuditReport, Finding

MAX_REGIONS = 8  # region lines shown per finding in human forms (JSON has them all)

KIND_TITLES = {
    "missing": "Missing: openings the firewall does not forward",
    "excess": "Excess: forwarded traffic no opening asks for",
    "dmz-to-internet": "DMZ → internet: explicit openings that are never needed",
    "nat": "NAT: port forwards missing, wrong or extra",
    "reply-blocked": "Replies blocked: answers cannot come back",
    "shadowed": "Shadowed: rules that can never match",
    "unmodelled": "Unmodelled: constructs judged both ways",
}


def _opening_text(f: Finding) -> str:
    if f.opening is None:
        return ""
    o = f.opening
    text = f"{o.name} (row {o.index}, line {o.where.line})"
    return text + (f" — {o.note}" if o.note else "")


def _regions(f: Finding) -> list[str]:
    lines = list(f.regions[:MAX_REGIONS])
    if len(f.regions) > MAX_REGIONS:
        lines.append(f"… and {len(f.regions) - MAX_REGIONS} more")
    return lines


def print_table(report: AuditReport, console: Console) -> None:
    style = "bold green" if not report.findings else "bold red"
    console.print(f"[{style}]{report.verdict()}[/]")
    console.print(f"matrix {report.matrix}, live ruleset: {report.source}", style="dim")
    for kind in KINDS:
        findings = [f for f in report.findings if f.kind == kind]
        if not findings:
            continue
        table = Table(title=KIND_TITLES[kind], title_justify="left", show_lines=True, expand=False)
        table.add_column("severity")
        table.add_column("finding", overflow="fold")
        table.add_column("opening", overflow="fold")
        table.add_column("live rule", overflow="fold")
        table.add_column("packets", overflow="fold")
        for f in findings:
            table.add_row(f.level, f.message, _opening_text(f), f.rule, "\n".join(_regions(f)))
        console.print(table)


def markdown(report: AuditReport) -> str:
    icon = "✅" if not report.findings else "❌"
    out = [f"### {icon} {report.verdict()}", "", f"Matrix `{report.matrix}`, live ruleset `{report.source}`.", ""]
    for kind in KINDS:
        findings = [f for f in report.findings if f.kind == kind]
        if not findings:
            continue
        out += [f"#### {KIND_TITLES[kind]}", "", "| severity | finding | opening | live rule | packets |", "|---|---|---|---|---|"]
        for f in findings:
            packets = "<br>".join(f"`{_md(line)}`" for line in _regions(f))
            out.append(f"| {f.level} | {_md(f.message)} | {_md(_opening_text(f))} | {('`' + _md(f.rule) + '`') if f.rule else ''} | {packets} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _md(text: str) -> str:
    """Table-cell safe: no pipes or newlines from rule text or notes."""
    return text.replace("|", "\\|").replace("\n", " ")


def as_json(report: AuditReport) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"
