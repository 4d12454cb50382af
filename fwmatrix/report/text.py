"""Audit reports for people (a rich terminal table, Markdown) and machines (JSON).

The JSON form is versioned (`"schema": "fwmatrix.audit/1"`) and documented in
docs/audit.md; it is what other tools should read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fwmatrix.audit.findings import KINDS, AuditReport, Finding
from fwmatrix.audit.waivers import acceptance_text
from fwmatrix.report import json_text

if TYPE_CHECKING:  # rich is imported by the printers: `audit --format json` never loads it
    from rich.console import Console

    from fwmatrix.review.diff import Review

MAX_REGIONS = 8  # region lines shown per finding in human forms (JSON has them all)

KIND_TITLES = {
    "missing": "Missing: openings the firewall does not forward",
    "excess": "Excess: forwarded traffic no opening asks for",
    "dmz-to-internet": "DMZ → internet: explicit openings that are never needed",
    "nat": "NAT: port forwards missing, wrong or extra",
    "reply-blocked": "Replies blocked: answers cannot come back",
    "shadowed": "Shadowed: rules that can never match",
    "unmodelled": "Unmodelled: constructs judged both ways",
    "nd-blocked": "ND blocked: IPv6 openings that cannot work",
    "not-audited": "Not audited: address families the input does not cover",
}


def _opening_text(f: Finding) -> str:
    if f.opening is None:
        return ""
    o = f.opening
    text = f"{o.name} (row {o.index}, line {o.where.line})"
    text += f" — {o.note}" if o.note else ""
    return text + (f" [{o.meta.text()}]" if o.meta is not None else "")


def _regions(f: Finding) -> list[str]:
    lines = list(f.regions[:MAX_REGIONS])
    if len(f.regions) > MAX_REGIONS:
        lines.append(f"… and {len(f.regions) - MAX_REGIONS} more")
    return lines


def print_table(report: AuditReport, console: Console) -> None:
    from rich.markup import escape

    from fwmatrix.report.tables import Table

    style = "bold green" if not report.standing else "bold red"
    console.print(f"[{style}]{escape(report.verdict())}[/]")
    console.print(f"matrix {report.matrix}, live ruleset: {report.source}", style="dim", markup=False)
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
            table.add_row(f.level, *map(escape, (_marked(f), _opening_text(f), f.rule, "\n".join(_regions(f)))))
        console.print(table)


def markdown(report: AuditReport) -> str:
    icon = "✅" if not report.standing else "❌"
    out = [f"### {icon} {report.verdict()}", "", f"Matrix `{report.matrix}`, live ruleset `{report.source}`.", ""]
    for kind in KINDS:
        findings = [f for f in report.findings if f.kind == kind]
        if not findings:
            continue
        out += [f"#### {KIND_TITLES[kind]}", "", "| severity | finding | opening | live rule | packets |", "|---|---|---|---|---|"]
        for f in findings:
            packets = "<br>".join(f"`{_md(line)}`" for line in _regions(f))
            out.append(f"| {f.level} | {_md(_marked(f))} | {_md(_opening_text(f))} | {('`' + _md(f.rule) + '`') if f.rule else ''} | {packets} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _marked(f: object) -> str:
    """A finding's message, with its acceptance (or the one that lapsed) after it."""
    mark = acceptance_text(f)
    return getattr(f, "message") + (f"\n{mark}" if mark else "")


def _md(text: str) -> str:
    """Table-cell safe: no pipes or newlines from rule text or notes."""
    return text.replace("|", "\\|").replace("\n", " ")


def as_json(report: AuditReport) -> str:
    return json_text(report.to_json())


# -- change review (fwmatrix diff) ------------------------------------------------------


def _traffic(line: str) -> str:
    """A review line without the connection state: every opening is about new connections,
    which a port forward's are once translated."""
    if line.endswith("  ct new dnat"):
        return line.removesuffix("  ct new dnat") + "  after DNAT"
    return line.removesuffix("  ct new")


def print_review(review: Review, console: Console, show_rulesets: bool = True) -> None:
    from rich.markup import escape

    from fwmatrix.report.tables import Table

    style = "bold yellow" if review.changed else "bold green"
    console.print(f"[{style}]{escape(review.summary())}[/]")
    console.print(f"{review.old_label} → {review.new_label}", style="dim", markup=False)
    for old, new in review.renames:
        console.print(f"renamed: opening {old} → {new} (same traffic)", markup=False)
    for fw in review.firewalls:
        if not (fw.changed or fw.openings or fw.ruleset_diffs):
            continue
        table = Table(title=f"firewall {escape(fw.name)}", title_justify="left", show_lines=True)
        for column in ("change", "opening", "opens", "closes", "note"):
            table.add_column(column, overflow="fold")
        for c in fw.openings:
            name = f"{c.old_name} → {c.name}" if c.old_name else c.name
            opened = "\n".join("+ " + _traffic(x) for x in c.opened)
            closed = "\n".join("- " + _traffic(x) for x in c.closed)
            table.add_row(c.kind, *map(escape, (name, opened, closed, c.note)))
        if fw.openings:
            console.print(table)
        if fw.nat:
            nat = Table(title=f"port forwards on {escape(fw.name)}", title_justify="left")
            for column in ("change", "port forward", "before", "after", "opening"):
                nat.add_column(column, overflow="fold")
            for n in fw.nat:
                nat.add_row(n.kind, *map(escape, (n.what, n.old, n.new, n.opening)))
            console.print(nat)
        if show_rulesets:
            for name, diff in fw.ruleset_diffs.items():
                console.print(f"--- ruleset {name}", style="bold", markup=False)
                console.print(diff, markup=False, highlight=False)
    for d in review.definitions:
        moves = f" (moves {', '.join(d.moves)})" if d.moves else ""
        console.print(f"{d.kind} {d.name}: {d.old} → {d.new}{moves}", markup=False)


def review_markdown(review: Review) -> str:
    icon = "🔀" if review.changed else "✅"
    out = [f"### {icon} fwmatrix review: {review.summary()}", "", f"`{review.old_label}` → `{review.new_label}`", ""]
    for old, new in review.renames:
        out.append(f"- renamed: opening `{old}` → `{new}` (same traffic)")
    if review.renames:
        out.append("")
    for fw in review.firewalls:
        if not (fw.changed or fw.openings or fw.ruleset_diffs):
            continue
        out += [f"#### Firewall `{fw.name}`", ""]
        if fw.openings:
            out += ["| change | opening | opens | closes | note |", "|---|---|---|---|---|"]
            for c in fw.openings:
                name = f"`{_md(c.old_name)}` → `{_md(c.name)}`" if c.old_name else f"`{_md(c.name)}`"
                opens = "<br>".join(f"➕ `{_md(_traffic(x))}`" for x in c.opened)
                closes = "<br>".join(f"➖ `{_md(_traffic(x))}`" for x in c.closed)
                out.append(f"| {c.kind} | {name} | {opens} | {closes} | {_md(c.note)} |")
            out.append("")
        if fw.nat:
            out += ["| port forward | change | before | after | opening |", "|---|---|---|---|---|"]
            for n in fw.nat:
                out.append(f"| {_md(n.what)} | {n.kind} | {_md(n.old)} | {_md(n.new)} | `{_md(n.opening)}` |")
            out.append("")
        for name, diff in fw.ruleset_diffs.items():
            out += [f"<details><summary>ruleset <code>{name}</code></summary>", "", "```diff", diff.rstrip("\n"), "```", "", "</details>", ""]
    if review.definitions:
        out += ["#### Definitions changed", "", "| kind | name | before | after | moves |", "|---|---|---|---|---|"]
        for d in review.definitions:
            out.append(f"| {d.kind} | `{d.name}` | {_md(d.old)} | {_md(d.new)} | {', '.join(f'`{m}`' for m in d.moves)} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def review_json(review: Review) -> str:
    return json_text(review.to_json())
