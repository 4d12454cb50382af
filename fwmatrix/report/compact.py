"""`--format compact`: one line per finding, for a terminal, a log or grep.

Written from the neutral shape every command already gives JUnit and SARIF
(report/ci.py: an Outcome's issues), so audit, lint, check, diff and lab read
alike: the verdict, then per finding its kind, its severity, the matrix line
it is about as FILE:LINE (the commands that judge the matrix file: lint,
check, diff), its
message and its first packets or live rule, with how many more lines the
other formats show. An accepted finding says so at the end of its line.
"""

from __future__ import annotations

from fwmatrix.report.ci import Issue, Outcome

DETAILS = 2  # detail lines (live rule, packets) on a finding's line; the rest is counted
LOCATED = ("lint", "check", "diff")  # their findings are about a line of the matrix file


def compact(outcomes: list[Outcome]) -> str:
    out: list[str] = []
    for outcome in outcomes:
        out.append(outcome.title)
        kinds = max((len(issue.rule) for issue in outcome.issues), default=0)
        levels = max((len(issue.level) for issue in outcome.issues), default=0)
        for issue in outcome.issues:
            out.append(f"  {issue.rule:<{kinds}}  {issue.level:<{levels}}  {_text(issue, outcome.command in LOCATED)}")
    return "\n".join(out) + "\n"


def _text(issue: Issue, located: bool) -> str:
    text = f"{issue.where}: " if located and issue.where is not None and issue.where.line > 0 else ""
    text += issue.message.replace("\n", " ")
    shown = issue.details[:DETAILS]
    if shown:
        text += " — " + "; ".join(shown)
    if len(issue.details) > DETAILS:
        text += f" (+{len(issue.details) - DETAILS} more)"
    return text + (f" [accepted: {issue.accepted}]" if issue.accepted else "")
