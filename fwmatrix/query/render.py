"""A query's answers as text (a terminal, Markdown) and as versioned JSON
(`fwmatrix.query/1`, docs/schemas/query.schema.json)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape

from fwmatrix.matrix.model import Opening
from fwmatrix.query.matrix import ALLOWED, DENIED, MAYBE, MatrixAnswer
from fwmatrix.query.packet import endpoint_text
from fwmatrix.query.trace import RulesetAnswer

SCHEMA = "fwmatrix.query/1"
STYLE = {"allowed": "green", "denied": "red"}


@dataclass
class QueryReport:
    matrix: str
    file: str
    question: str  # the packets as asked: "--from X --to Y --service S"
    answers: list[MatrixAnswer | RulesetAnswer]
    firewall: str | None = None
    source: str = ""  # the ruleset, when the query is against one
    expect: str | None = None
    verdict: str = field(init=False)

    def __post_init__(self) -> None:
        verdicts = {a.verdict for a in self.answers}
        self.verdict = verdicts.pop() if len(verdicts) == 1 else "partly" if verdicts <= {ALLOWED, DENIED, "partly"} else "uncertain"

    @property
    def as_expected(self) -> bool:
        """The exit status's question: allowed (no --expect), or what --expect says."""
        wanted = ALLOWED if self.expect in (None, "allow") else DENIED
        return self.verdict == wanted

    def headline(self) -> str:
        against = f"firewall '{self.firewall}' ruleset {self.source}" if self.source else f"matrix '{self.matrix}'"
        expected = "" if self.expect is None else f" (expected: {self.expect}, {'as expected' if self.as_expected else 'NOT as expected'})"
        return f"{self.question}: {self.verdict} by {against}{expected}"

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "matrix": self.matrix, "file": self.file, "firewall": self.firewall,
                "source": self.source or None, "question": self.question, "verdict": self.verdict,
                "expect": self.expect, "as_expected": self.as_expected, "answers": [a.to_json() for a in self.answers]}


def _opening(o: Opening) -> str:
    row = f"row {o.index}" if o.index > 0 else "management access"  # management accesses are no rows (compile/intent.py)
    return f"{o.name} ({row}, {o.where.file}:{o.where.line})"


def lines(report: QueryReport) -> list[tuple[int, str]]:
    """The report as (indent, text) lines, shared by the table and Markdown forms."""
    out: list[tuple[int, str]] = [(0, report.headline())]
    for answer in report.answers:
        out.append((1, f"{answer.packet}: {answer.verdict}"))
        if isinstance(answer, MatrixAnswer):
            out += _matrix_lines(answer)
        else:
            out += _ruleset_lines(answer)
    return out


def _matrix_lines(answer: MatrixAnswer) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    if answer.reason:
        out.append((2, answer.reason))
    if answer.uncovered and answer.verdict != DENIED:
        out.append((2, ("not opened by the matrix" if answer.verdict == MAYBE else "not allowed") + ": ports " + ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in answer.uncovered)))
    for hop in answer.hops:
        nat = ""
        if hop.nat:
            port = hop.nat.port if hop.nat.port is not None else hop.part.ports
            nat = f"  DNAT → {endpoint_text(hop.nat.target, port)} by {_opening(hop.nat.opening)}"
        snat = f"  SNAT → {hop.snat}" if hop.snat else ""
        out.append((2, f"{hop.firewall}: {hop.in_iface} → {hop.out_iface}  {hop.src} → {hop.dst} {hop.part}{nat}{snat}"))
        for opening, service in hop.openings:
            out.append((3, f"opened by {_opening(opening)}: {service}"))
        if not hop.openings:
            out.append((3, "no opening lets it through here"))
    if answer.neighbours:
        out.append((2, "nearest openings:"))
        out += [(3, f"{n.kind}: {_opening(n.opening)}: {n.what}") for n in answer.neighbours]
    return out


def _ruleset_lines(answer: RulesetAnswer) -> list[tuple[int, str]]:
    where = f", DNAT {answer.nat}" if answer.nat else "" if answer.reason else f", leaves by {answer.out_iface}"
    out: list[tuple[int, str]] = [(2, f"arrives on {answer.in_iface}{where}")]
    if answer.reason:
        out.append((2, answer.reason))
    out += _steps(answer.trace) or [(3, "no rule matches it")]
    if answer.otherwise:
        out.append((2, "if the constructs fwmatrix cannot model do not match:"))
        out += _steps(answer.otherwise)
    return out


def _steps(steps: list) -> list[tuple[int, str]]:
    """The trace, each hook named once."""
    out, hook = [], None
    for step in steps:
        text = str(step)
        if step.hook == hook:
            text = " " * len(f"{step.hook:<11}") + text[len(f"{step.hook:<11}"):]
        hook = step.hook
        out.append((3, text))
    return out


def print_query(report: QueryReport, console: Console) -> None:
    for indent, text in lines(report):
        style = STYLE.get(report.verdict, "yellow") if indent == 0 else None
        console.print(escape("  " * indent + text), style=style, markup=True, highlight=False)


def query_markdown(report: QueryReport) -> str:
    out = []
    for indent, text in lines(report):
        text = text.replace("|", "\\|").replace("<", "&lt;")
        out.append(f"**{text}**\n" if indent == 0 else "  " * (indent - 1) + f"- {text}")
    return "\n".join(out) + "\n"
