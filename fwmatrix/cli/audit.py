"""`fwmatrix audit`: a firewall's ruleset, saved or live, against the matrix."""

from __future__ import annotations

import sys
from datetime import date
from typing import TYPE_CHECKING

import click

from fwmatrix.audit.findings import AuditReport, audit, fail
from fwmatrix.audit.waivers import BASELINE_DAYS, accept, baseline_entries
from fwmatrix.compile.intent import Intent
from fwmatrix.cli.rulesetinput import RulesetInput, ruleset_options
from fwmatrix.cli.common import (
    firewall_option_saying,
    EXIT_FINDINGS, EXIT_OK, err_console, write_file_atomically, emit, fail_on_option, format_option, load_intent, matrix_argument, output_option, the_firewall, user_errors,
)
from fwmatrix.matrix.accepts import baseline_text, load_baseline
from fwmatrix.review.lint import check_accepted_kinds
from fwmatrix.report.text import markdown, print_table

if TYPE_CHECKING:
    from fwmatrix.report.ci import Outcome


@click.command("audit")
@matrix_argument
@firewall_option_saying("The firewall whose ruleset this is (may be left out when the matrix has one).")
@ruleset_options
@click.option("--baseline", metavar="FILE", type=click.Path(dir_okay=False),
              help="Findings accepted in FILE (a baseline) fail nothing; they stay in the report, marked. With --write-baseline, FILE is (re)written first.")
@click.option("--write-baseline", is_flag=True, help="Write every finding the matrix does not accept into --baseline FILE (adoption on a large firewall: only new findings fail from now on).")
@click.option("--baseline-owner", metavar="WHO", default="baseline", show_default=True, help="The owner written into new baseline entries.")
@click.option("--baseline-expires", metavar="YYYY-MM-DD", help=f"When new baseline entries expire (default: {BASELINE_DAYS} days from today).")
@format_option
@output_option
@fail_on_option("a finding")
@user_errors
def audit_command(matrix: str, firewall: str | None, ruleset_input: RulesetInput, baseline: str | None, write_baseline: bool, baseline_owner: str,
                  baseline_expires: str | None, fmt: str, output: str | None, fail_on: str) -> None:
    """Audit a firewall's live ruleset against MATRIX.

    Finds openings that are missing (or the part of them), traffic forwarded
    in excess (and the rule that forwards it), wrong or missing port
    forwards, replies that cannot come back, explicit openings from the DMZ
    towards the internet (never needed: replies pass by connection
    tracking), rules that can never match, and constructs fwmatrix cannot
    model. Exit 1 when a finding reaches --fail-on.

    A pf ruleset is read with what the matrix says of the firewall: its
    interfaces, its public addresses (part of `self`), and the group `egress`
    (the interfaces facing the `any` zone); --pf-interface and --pf-group add
    what only the firewall knows."""
    if ruleset_input.live == bool(ruleset_input.paths):
        raise click.UsageError("give exactly one of --live or --ruleset FILE")
    intent = load_intent(matrix, firewall)
    firewall = the_firewall(intent, firewall, matrix)
    ruleset, source = ruleset_input.read(intent, firewall)
    report = audit(intent, firewall, ruleset, source, ruleset_input.local_addresses)
    report.findings = accepted_findings(intent, firewall, report, baseline, write_baseline, baseline_owner, baseline_expires)
    emit(fmt, output, [report], table=print_table, markdown=markdown, to_json=AuditReport.to_json,
         outcome=lambda r: outcome_of(r, intent), fail_on=fail_on)
    sys.exit(EXIT_FINDINGS if fail(report, fail_on) else EXIT_OK)


def outcome_of(report: AuditReport, intent: Intent) -> Outcome:
    from fwmatrix.report.ci import audit_outcome  # JUnit, SARIF and compact only: not for json

    return audit_outcome(report, intent)


def accepted_findings(intent: Intent, firewall: str, report: AuditReport, baseline: str | None, write: bool, owner: str,
                      expires: str | None) -> list:
    """The report's findings marked by the matrix's acceptances and the baseline's; with
    `write`, the baseline is first rewritten to accept every finding the matrix does not."""
    today = date.today()
    accepts = intent.matrix.accepts
    check_accepted_kinds(accepts)
    if write:
        if baseline is None:
            raise click.UsageError("--write-baseline needs --baseline FILE")
        try:
            until = date.fromisoformat(expires) if expires else None
        except ValueError:
            raise click.UsageError(f"--baseline-expires {expires}: not a date written YYYY-MM-DD") from None
        standing = [f for f in accept(report.findings, accepts, firewall, today) if f.accepted is None]
        write_file_atomically(baseline, baseline_text(intent.matrix.name, firewall, baseline_entries(standing, firewall, today, owner, until)))
        err_console.print(f"wrote {baseline}: {len(standing)} findings accepted as the baseline", markup=False, highlight=False)
    if baseline is not None:
        accepts = accepts + load_baseline(baseline)
        check_accepted_kinds(accepts)
    return accept(report.findings, accepts, firewall, today)


COMMANDS = (audit_command,)
