"""`fwmatrix audit`: a firewall's ruleset, saved or live, against the matrix."""

from __future__ import annotations

import sys

import click

from fwmatrix.audit.findings import AuditReport, audit, fail
from fwmatrix.cli.common import (
    EXIT_FINDINGS, EXIT_OK, emit, fail_on_option, format_option, load_intent, matrix_argument, output_option, user_errors,
)
from fwmatrix.ir import Ruleset
from fwmatrix.report.ci import audit_outcome
from fwmatrix.report.text import markdown, print_table
from fwmatrix.targets import BACKENDS, read_live, read_ruleset


@click.command("audit")
@matrix_argument
@click.option("--firewall", "-f", metavar="NAME", help="The firewall whose ruleset this is (may be left out when the matrix has one).")
@click.option("--live", is_flag=True, help="Read the running kernel's ruleset (on the firewall itself; needs root).")
@click.option("--ruleset", "-r", "ruleset_paths", metavar="FILE", multiple=True, type=click.Path(dir_okay=False),
              help="A saved ruleset: nft -j list ruleset, a .nft file, iptables-save output, or pf.conf. Repeat it for rulesets that run together (e.g. iptables-save and ip6tables-save).")
@click.option("--backend", "-b", "backend_name", type=click.Choice(("auto",) + BACKENDS), default="auto", show_default=True, help="What wrote the ruleset (auto: guess from its text).")
@format_option
@output_option
@fail_on_option("low", "a finding")
@user_errors
def audit_command(matrix: str, firewall: str | None, live: bool, ruleset_paths: tuple[str, ...], backend_name: str, fmt: str, output: str | None, fail_on: str) -> None:
    """Audit a firewall's live ruleset against MATRIX.

    Finds openings that are missing (or the part of them), traffic forwarded
    in excess (and the rule that forwards it), wrong or missing port
    forwards, replies that cannot come back, explicit openings from the DMZ
    towards the internet (never needed: replies pass by connection
    tracking), rules that can never match, and constructs fwmatrix cannot
    model. Exit 1 when a finding reaches --fail-on."""
    if live == bool(ruleset_paths):
        raise click.UsageError("give exactly one of --live or --ruleset FILE")
    intent = load_intent(matrix, firewall)
    if firewall is None:
        if len(intent.firewalls) != 1:
            raise click.UsageError(f"the matrix has several firewalls ({', '.join(intent.firewalls)}): say which with --firewall")
        firewall = next(iter(intent.firewalls))
    if live:
        ruleset, source = read_live(backend_name), f"live ({'nftables' if backend_name == 'auto' else backend_name})"
    else:
        read = [(path,) + read_ruleset(path, backend_name) for path in ruleset_paths]
        # rulesets that run together on one firewall: their tables side by side
        ruleset = Ruleset(tuple(table for _, parsed, _ in read for table in parsed.tables))
        source = ", ".join(f"{path} ({used})" for path, _, used in read)
    report = audit(intent, firewall, ruleset, source)
    emit(fmt, output, [report], table=print_table, markdown=markdown, to_json=AuditReport.to_json,
         outcome=lambda r: audit_outcome(r, intent), fail_on=fail_on)
    sys.exit(EXIT_FINDINGS if fail(report, fail_on) else EXIT_OK)


COMMANDS = (audit_command,)
