"""`fwmatrix lab`: a matrix's ruleset proved with real packets, in network namespaces.

Exit 0 when every check passed, 1 when one failed, 2 for usage and input
errors (and when not run as root); every namespace is deleted at the end.
"""

from __future__ import annotations

import sys

import click

from fwmatrix.cli.common import (
    firewall_option_saying,
    EXIT_FINDINGS, EXIT_OK, emit, format_option, load_intent, matrix_argument, output_option, require_root, the_firewall, user_errors,
)
from fwmatrix.ops.lab import DEFAULT_TIMEOUT
from fwmatrix.ops.labrun import LAB_BACKENDS, lab_markdown, print_lab, run_lab
from fwmatrix.ops.signals import interrupting
from fwmatrix.report.ci import lab_outcome


@click.command("lab")
@matrix_argument
@firewall_option_saying("The firewall to build (may be left out when the matrix has one).")
@click.option("--backend", "-b", "backend_name", type=click.Choice(LAB_BACKENDS), default="nftables", show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0.05), default=DEFAULT_TIMEOUT, show_default=True, metavar="SECONDS",
              help="How long a probe waits for packets that may never come.")
@format_option
@output_option
@user_errors
def lab_command(matrix: str, firewall: str | None, backend_name: str, timeout: float, fmt: str, output: str | None) -> None:
    """Prove MATRIX's ruleset for a firewall with real packets, in network namespaces.

    Builds the firewall with one interface per zone and a namespace behind
    each, loads the compiled ruleset, and checks that every opening works
    (TCP handshakes, UDP round trips, port forwards landing on their target)
    and that a sample of what must stay closed is closed. Exits 1 when a
    check fails. Needs root; every namespace is deleted at the end, also
    when interrupted."""
    require_root("lab", "it creates network namespaces")
    intent = load_intent(matrix, firewall)
    firewall = the_firewall(intent, firewall, matrix)
    with interrupting():
        report = run_lab(intent, firewall, backend_name, timeout)
    emit(fmt, output, [report], table=print_lab, markdown=lab_markdown, to_json=lambda r: r.to_json(),
         outcome=lambda r: lab_outcome(r, intent.matrix), fail_on="high")
    sys.exit(EXIT_OK if report.passed else EXIT_FINDINGS)


COMMANDS = (lab_command,)
