"""`fwmatrix query`: is a packet allowed, and why — by the matrix, or by a firewall's ruleset."""

from __future__ import annotations

import sys

import click

from fwmatrix.cli.common import EXIT_FINDINGS, EXIT_OK, emit, firewall_option_saying, load_intent, matrix_argument, output_option, the_firewall, user_errors
from fwmatrix.cli.completion import from_matrix
from fwmatrix.cli.rulesetinput import RulesetInput, ruleset_options
from fwmatrix.query.matrix import MatrixQuery, Placement
from fwmatrix.query.packet import packets
from fwmatrix.query.render import QueryReport, print_query, query_markdown
from fwmatrix.query.trace import dnat_pieces, query_ruleset


@click.command("query")
@matrix_argument
@click.option("--from", "source", required=True, metavar="ADDRESS|NAME", shell_complete=from_matrix("names"), help="The source: an address (IPv4 or IPv6), or a host, host.address, role, group of the matrix.")
@click.option("--to", "destination", required=True, metavar="ADDRESS|NAME", shell_complete=from_matrix("names"), help="The destination, likewise (a firewall's public address too, e.g. edge.public).")
@click.option("--service", required=True, metavar="SERVICE", shell_complete=from_matrix("services"), help="A service of the matrix or literals: https, tcp/443, udp/10000-30000, icmp (comma-separated).")
@firewall_option_saying("With --ruleset/--live: the firewall whose ruleset it is (may be left out when the matrix has one).")
@ruleset_options
@click.option("--expect", type=click.Choice(("allow", "deny")), help="Assert the verdict: exit 0 when it is this, 1 otherwise (for CI).")
@click.option("--format", "fmt", type=click.Choice(("table", "json", "markdown")), default="table", show_default=True,
              help="table for people, json for tools (schema fwmatrix.query/1), markdown for a pull request comment.")
@output_option
@user_errors
def query_command(matrix: str, source: str, destination: str, service: str, firewall: str | None, ruleset_input: RulesetInput,
                  expect: str | None, fmt: str, output: str | None) -> None:
    """Is a NEW connection from --from to --to on --service allowed, and why.

    Against MATRIX: by which opening (name, row, YAML line), through which
    firewalls and interfaces, with the port forward on each; for a packet it
    does not allow, the nearest openings (other ports, other hosts). With
    --ruleset FILE or --live: the firewall's ruleset, judged by the audit's
    evaluator, with the rules the packet meets in order, the DNAT, and the
    verdict; a rule fwmatrix cannot model "may match".

    Exit 0 allowed, 1 denied (or partly, or uncertain), 2 input error; with
    --expect, 0 when the verdict is the expected one."""
    if ruleset_input.live and ruleset_input.paths:
        raise click.UsageError("give one of --live or --ruleset FILE, not both")
    intent = load_intent(matrix, firewall)
    asked = packets(intent.matrix, source, destination, service)
    question = f"{source} → {destination} {service}"
    matrix_query = MatrixQuery(intent)
    if not ruleset_input.given:
        report = QueryReport(intent.matrix.name, intent.matrix.file, question, [a for p in asked for a in matrix_query.answers(p)], firewall, expect=expect)
    else:
        firewall = the_firewall(intent, firewall, matrix)
        ruleset, where = ruleset_input.read(intent, firewall)
        own = ruleset_input.own(intent, firewall)
        placement = Placement(matrix_query, firewall, own)
        known = list(intent.matrix.firewalls[firewall].interfaces)
        answers = []
        for packet in asked:
            for piece in dnat_pieces(ruleset, known, packet, *placement.of(packet)[:2], own):
                iif, oif, local = placement.of(piece)
                answers.append(query_ruleset(ruleset, known, piece, iif, oif, placement.route, local, where, own))
        report = QueryReport(intent.matrix.name, intent.matrix.file, question, answers, firewall, where, expect)
    emit(fmt, output, [report], table=print_query, markdown=query_markdown, to_json=QueryReport.to_json, outcome=lambda r: None, fail_on=None)  # type: ignore[arg-type,return-value]
    sys.exit(EXIT_OK if report.as_expected else EXIT_FINDINGS)


COMMANDS = (query_command,)
