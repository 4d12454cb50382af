"""`fwmatrix report`: one self-contained HTML file with the matrix, its diagram, the audit
findings per firewall and lab results."""

from __future__ import annotations

import json
import sys

import click

from fwmatrix.audit.findings import audit
from fwmatrix.cli.audit import accepted_findings
from fwmatrix.cli.rulesetinput import read_input
from fwmatrix.cli.common import fail_on_option, file_output_option, firewall_option, load_intent, matrix_argument, user_errors, write_output
from fwmatrix.compile.intent import Intent
from fwmatrix.errors import FwmatrixError, did_you_mean
from fwmatrix.graph import diagram, to_dot
from fwmatrix.graph.render import draw
from fwmatrix.report.ci import junit, sarif
from fwmatrix.report.fleet import fleet_outcomes
from fwmatrix.report.html import Diagram, html_report
from fwmatrix.targets import BACKENDS

LAB_KEYS = {"firewall": str, "backend": str, "passed": bool, "summary": str, "checks": list}
CHECK_KEYS = ("kind", "name", "row", "route", "service", "passed", "detail")


@click.command("report")
@matrix_argument
@firewall_option
@click.option("--ruleset", "-r", "rulesets", metavar="[FIREWALL=]FILE", multiple=True,
              help="A saved ruleset to audit (as `fwmatrix audit --ruleset` reads them), for FIREWALL (may be left out when the matrix has one). "
                   "Repeat it: for other firewalls, or for files that run together on one (iptables-save and ip6tables-save).")
@click.option("--backend", "-b", "backend_name", type=click.Choice(("auto",) + BACKENDS), default="auto", show_default=True, help="What wrote the rulesets (auto: guess from their text).")
@click.option("--lab", "labs", metavar="FILE", multiple=True, type=click.Path(dir_okay=False),
              help="A lab result to include: the output of `fwmatrix lab --format json`. Repeatable.")
@click.option("--format", "fmt", type=click.Choice(("html",)), default="html", show_default=True)
@file_output_option("The HTML file")
@user_errors
def report_command(matrix: str, firewall: str | None, rulesets: tuple[str, ...], backend_name: str, labs: tuple[str, ...], fmt: str, output: str) -> None:
    """Write an HTML report of MATRIX: the connectivity matrix, its diagram, the audit of each
    given ruleset (findings filtered by kind and severity in the page) and the lab results.
    One file, nothing fetched: it opens anywhere and can be mailed as it is."""
    intent = load_intent(matrix, firewall)
    audits = {}
    for fw_name, paths in _rulesets_by_firewall(intent, rulesets).items():
        ruleset, source = read_input(intent, fw_name, False, paths, backend_name, (), ())
        report = audit(intent, fw_name, ruleset, source)
        report.findings = accepted_findings(intent, fw_name, report, None, False, "", None)  # the matrix's `accept:`
        audits[fw_name] = report
    page = html_report(intent, audits, [_lab(path) for path in labs], _diagram(intent, firewall))
    write_output(output, page)


def _rulesets_by_firewall(intent: Intent, rulesets: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for item in rulesets:
        name, equals, path = item.partition("=")
        if not equals:
            if len(intent.firewalls) != 1:
                raise click.UsageError(f"the matrix has several firewalls ({', '.join(intent.firewalls)}): write --ruleset FIREWALL={item}")
            name, path = next(iter(intent.firewalls)), item
        if name not in intent.firewalls:
            raise click.UsageError(f"--ruleset {item}: no firewall named '{name}' in the matrix{did_you_mean(name, intent.firewalls)}")
        out.setdefault(name, []).append(path)
    return {name: tuple(paths) for name, paths in out.items()}


def _lab(path: str) -> dict:
    """A `fwmatrix lab --format json` result, checked enough to be shown."""
    try:
        with open(path, encoding="utf-8") as handle:
            lab = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FwmatrixError(f"cannot read a lab result: {getattr(exc, 'strerror', None) or exc}", path) from None
    if not isinstance(lab, dict) or lab.get("schema") != "fwmatrix.lab/1":
        raise FwmatrixError("not a lab result (the output of `fwmatrix lab --format json`, schema fwmatrix.lab/1)", path)
    for key, kind in LAB_KEYS.items():
        if not isinstance(lab.get(key), kind):
            raise FwmatrixError(f"lab result: '{key}' is missing or not a {kind.__name__}", path)
    for number, check in enumerate(lab["checks"], start=1):
        if not isinstance(check, dict) or any(key not in check for key in CHECK_KEYS):
            raise FwmatrixError(f"lab result: check #{number} lacks one of {', '.join(CHECK_KEYS)}", path)
    return lab


def _diagram(intent: Intent, firewall: str | None) -> Diagram:
    try:
        svg = draw(to_dot(diagram(intent.matrix, firewall)), "svg").decode("utf-8")
    except FwmatrixError as exc:  # no Graphviz here: the report without its picture, saying why
        return Diagram(None, f"no diagram: {exc}")
    return Diagram(svg)


@click.command("fleet-report")
@click.argument("merged", metavar="MERGED")
@click.option("--format", "fmt", type=click.Choice(("junit", "sarif")), required=True)
@click.option("--output", "-o", metavar="FILE", default="-", show_default=True, help="The file to write (atomically), or - for standard output.")
@fail_on_option("a finding", fails="A JUnit case fails (the exit code stays 0)")
@user_errors
def fleet_report_command(merged: str, fmt: str, output: str, fail_on: str) -> None:
    """Write the merged audit of a fleet (MERGED: the JSON the Ansible module
    fwmatrix_fleet_report writes, or - for standard input) as JUnit (a testsuite per firewall,
    a testcase per finding) or SARIF (a result per finding, its host and firewall in the
    result's properties). Exits 0 whatever the findings: the report is the answer."""
    try:
        if merged == "-":
            report = json.load(sys.stdin)
        else:
            with open(merged, encoding="utf-8") as handle:
                report = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FwmatrixError(f"cannot read the merged fleet audit: {getattr(exc, 'strerror', None) or exc}", merged) from None
    outcomes = fleet_outcomes(report, merged)
    write_output(output, junit(outcomes, fail_on) if fmt == "junit" else sarif(outcomes))


COMMANDS = (report_command, fleet_report_command)
