"""The HTML report: one self-contained file with the matrix, its diagram, the audit findings
per firewall (filtered by kind and severity in the page) and lab results.

Self-contained: the style sheet and the filter script (assets/) are inlined,
the diagram is inline SVG, nothing is fetched. Every text that comes from a
matrix, a ruleset or a lab report is HTML-escaped where it is written (`_e`);
a Content-Security-Policy admits the one script by its hash and no fetch at
all, a second wall should anything slip through.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass
from importlib.resources import files

from fwmatrix import __version__
from fwmatrix.audit.findings import KINDS, AuditReport, Finding
from fwmatrix.compile.intent import Intent
from fwmatrix.exchange.tabulate import opening_row
from fwmatrix.matrix.model import Opening
from fwmatrix.report.text import KIND_TITLES
from fwmatrix.severity import SEVERITIES

STATUSES = ("standing", "accepted", "expired")  # a finding not accepted, accepted, or its acceptance lapsed
OPENING_COLUMNS = (("from", "source"), ("service", "traffic type"), ("to", "destination"), ("ports", "destination port"), ("nat", "NAT"))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _asset(name: str) -> str:
    return files("fwmatrix.report").joinpath("assets", name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Diagram:
    svg: str | None  # Graphviz's SVG, or None when it could not be drawn
    note: str = ""  # why not, or how it is drawn


def inline_svg(svg: str) -> str:
    """Graphviz's SVG document as an element for the page: no XML prolog, doctype or comments."""
    svg = svg[svg.index("<svg"):] if "<svg" in svg else ""
    return re.sub(r"<!--.*?-->", "", svg, flags=re.DOTALL)


def _placements(intent: Intent) -> dict[int, list[str]]:
    placed: dict[int, list[str]] = {}
    for fw_name, fw in intent.firewalls.items():
        for flow in fw.flows:
            text = f"{fw_name}: {flow.in_iface} → {flow.out_iface}"
            if text not in placed.setdefault(flow.opening.index, []):
                placed[flow.opening.index].append(text)
    return placed


def _matrix_section(intent: Intent) -> str:
    m = intent.matrix
    placed = _placements(intent)
    columns = OPENING_COLUMNS + ((("snat", "source NAT"),) if any(o.snat is not None for o in m.openings) else ())
    head = "".join(f"<th>{_e(title)}</th>" for title in ("#", "opening", *(t for _, t in columns), "placed on", "notes"))
    rows = []

    def meta(opening: Opening) -> str:
        return f'<div class="muted meta">{_e(opening.meta.text())}</div>' if opening.meta is not None else ""

    for opening in m.openings:
        cells = opening_row(opening, m)
        rows.append(
            f'<tr class="opening" id="opening-{opening.index}"><td>{opening.index}</td><td>{_e(opening.name)}</td>'
            + "".join(f"<td>{_e(cells[key])}</td>" for key, _ in columns)
            + f'<td>{"<br>".join(_e(p) for p in placed.get(opening.index, ["(crosses no firewall)"]))}</td><td>{_e(opening.note)}{meta(opening)}</td></tr>'
        )
    firewalls = "".join(
        f"<tr><td>{_e(fw.name)}</td><td>{_e(', '.join(f'{i}: {z}' for i, z in fw.interfaces.items()))}</td>"
        f"<td>{_e(', '.join(f'{fw.name}.{n} {a}' for n, a in fw.public.items()))}</td><td>{_e(fw.note)}</td></tr>"
        for fw in m.firewalls.values()
    )
    return (
        f'<section id="matrix"><h2>Connectivity matrix</h2><table id="openings"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        f'<h3>Firewalls</h3><table id="firewalls"><thead><tr><th>firewall</th><th>interfaces (interface: zone)</th><th>public addresses</th><th>notes</th></tr></thead>'
        f"<tbody>{firewalls}</tbody></table>"
        '<p class="muted">Replies pass by connection tracking (established/related): nothing needs opening from the DMZ towards the internet.</p></section>'
    )


def _diagram_section(diagram: Diagram) -> str:
    body = f'<div class="diagram">{inline_svg(diagram.svg)}</div>' if diagram.svg else ""
    note = f'<p class="muted">{_e(diagram.note)}</p>' if diagram.note else ""
    return f'<section id="diagram"><h2>Diagram</h2>{body}{note}</section>'


def _opening_text(finding: Finding) -> str:
    o = finding.opening
    if o is None:
        return ""
    return f"{o.name} (row {o.index}, line {o.where.line})" + (f" — {o.note}" if o.note else "")


def _status(finding: Finding) -> tuple[str, str]:
    """standing, accepted or expired (an acceptance that lapsed), and what the acceptance says."""
    if finding.accepted is not None:
        return "accepted", f"accepted: {finding.accepted.label()}"
    if finding.expired is not None:
        return "expired", f"acceptance expired: {finding.expired.label()}"
    return "standing", ""


def _finding_row(finding: Finding) -> str:
    regions = "\n".join(finding.regions)
    status, acceptance = _status(finding)
    note = f'<div class="acceptance {status}">{_e(acceptance)}</div>' if acceptance else ""
    return (
        f'<tr class="finding" data-kind="{_e(finding.kind)}" data-severity="{_e(finding.level)}" data-status="{status}">'
        f'<td><span class="badge {_e(finding.level)}">{_e(finding.level)}</span></td><td>{_e(finding.kind)}</td>'
        f'<td><div class="message">{_e(finding.message)}</div>{note}</td><td>{_e(_opening_text(finding))}</td>'
        f'<td><code>{_e(finding.rule)}</code></td><td><code>{_e(regions)}</code></td></tr>'
    )


def _filters(reports: list[AuditReport]) -> str:
    kinds = [k for k in KINDS if any(f.kind == k for r in reports for f in r.findings)]
    boxes = "".join(f'<label><input type="checkbox" data-filter="kind" value="{_e(k)}" checked> {_e(k)}</label>' for k in kinds)
    levels = "".join(f'<label><input type="checkbox" data-filter="severity" value="{_e(s)}" checked> {_e(s)}</label>' for s in reversed(SEVERITIES))
    statuses = "".join(f'<label><input type="checkbox" data-filter="status" value="{s}" checked> {s}</label>' for s in STATUSES)
    return (f'<div class="filters"><fieldset><legend>kind</legend>{boxes}</fieldset>'
            f'<fieldset><legend>severity</legend>{levels}</fieldset><fieldset><legend>acceptance</legend>{statuses}</fieldset>'
            '<span id="findings-shown" class="muted"></span></div>')


def _audit_section(intent: Intent, audits: dict[str, AuditReport]) -> str:
    parts = ['<section id="audit"><h2>Audit</h2>']
    if not audits:
        parts.append('<p class="muted">No ruleset was given (--ruleset FIREWALL=FILE): nothing audited.</p></section>')
        return "".join(parts)
    reports = list(audits.values())
    parts.append(_filters(reports))
    for fw_name in intent.firewalls:
        report = audits.get(fw_name)
        if report is None:
            parts.append(f'<div class="firewall" id="firewall-{_e(fw_name)}"><h3>firewall {_e(fw_name)}</h3><p class="muted">not audited: no ruleset given</p></div>')
            continue
        counts = "".join(f"<li>{_e(kind)}: <b>{n}</b></li>" for kind, n in report.counts().items() if n)
        parts.append(f'<div class="firewall" id="firewall-{_e(fw_name)}"><h3>firewall {_e(fw_name)}</h3>'
                     f'<p class="verdict">{_e(report.verdict())}</p><p class="muted">ruleset: {_e(report.source)}</p>'
                     f'<ul class="summary">{counts}</ul>')
        if report.findings:
            rows = "".join(_finding_row(f) for kind in KINDS for f in report.findings if f.kind == kind)
            parts.append('<table class="findings"><thead><tr><th>severity</th><th>kind</th><th>finding</th><th>opening</th>'
                         f"<th>live rule</th><th>packets</th></tr></thead><tbody>{rows}</tbody></table>")
        parts.append("</div>")
    kinds = "".join(f"<li><b>{_e(kind)}</b>: {_e(KIND_TITLES[kind].partition(': ')[2])}</li>" for kind in KINDS)
    parts.append(f'<details><summary>What the kinds mean</summary><ul>{kinds}</ul></details></section>')
    return "".join(parts)


def _lab_section(labs: list[dict]) -> str:
    if not labs:
        return ""
    parts = ['<section id="lab"><h2>Lab: real packets in network namespaces</h2>']
    for lab in labs:
        state = "pass" if lab["passed"] else "fail"
        rows = "".join(
            f'<tr class="lab-check {"pass" if c["passed"] else "fail"}"><td><span class="badge {"pass" if c["passed"] else "fail"}">'
            f'{"passed" if c["passed"] else "FAILED"}</span></td><td>{_e(c["kind"])}</td><td>{_e(c["name"])}</td><td>{_e(c["row"])}</td>'
            f'<td>{_e(c["route"])}</td><td>{_e(c["service"])}</td><td>{_e(c["detail"])}</td></tr>'
            for c in lab["checks"]
        )
        parts.append(f'<h3>firewall {_e(lab["firewall"])} ({_e(lab["backend"])}) <span class="badge {state}">{_e(state)}</span></h3>'
                     f'<p>{_e(lab["summary"])}</p><table class="lab"><thead><tr><th>result</th><th>check</th><th>opening</th><th>row</th>'
                     f"<th>route</th><th>service</th><th>detail</th></tr></thead><tbody>{rows}</tbody></table>")
    parts.append("</section>")
    return "".join(parts)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _summary(intent: Intent, audits: dict[str, AuditReport], labs: list[dict]) -> str:
    m = intent.matrix
    items = [f"<li>{_count(len(m.openings), 'opening')}</li>", f"<li>{_count(len(m.zones), 'zone')}</li>",
             f"<li>{_count(len(m.hosts), 'host')}</li>", f"<li>{_count(len(m.firewalls), 'firewall')}</li>"]
    items += [f"<li>{_e(fw)}: <b>{_count(len(r.findings), 'finding')}</b></li>" for fw, r in audits.items()]
    items += [f'<li>lab {_e(lab["firewall"])}: {"passed" if lab["passed"] else "FAILED"}</li>' for lab in labs]
    return f'<section id="summary"><ul class="summary">{"".join(items)}</ul></section>'


def html_report(intent: Intent, audits: dict[str, AuditReport], labs: list[dict], diagram: Diagram) -> str:
    m = intent.matrix
    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(m.title)} — fwmatrix report</title>",
        f"<style>{_asset('report.css')}</style></head><body>",
        f"<header><h1>{_e(m.title)}</h1><p>matrix <b>{_e(m.name)}</b> · sha256 <span class=\"mono\">{_e(m.content_hash)}</span> · fwmatrix {_e(__version__)}</p></header>",
        "<main>",
        _summary(intent, audits, labs),
        _audit_section(intent, audits),
        _lab_section(labs),
        _matrix_section(intent),
        _diagram_section(diagram),
        "</main>",
        f"<script>{script}</script>",
        "</body></html>",
        "",
    ])
