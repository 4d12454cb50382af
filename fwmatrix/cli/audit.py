"""`fwmatrix audit`: a firewall's ruleset, saved or live, against the matrix."""

from __future__ import annotations

import sys
from datetime import date

import click
from netaddr import AddrFormatError, IPNetwork

from fwmatrix.audit.findings import KINDS, AuditReport, audit, fail
from fwmatrix.audit.waivers import BASELINE_DAYS, accept, baseline_entries, check_kinds
from fwmatrix.compile.intent import Intent
from fwmatrix.backends import pf
from fwmatrix.cli.common import (
    firewall_option_saying,
    F, EXIT_FINDINGS, EXIT_OK, err_console, write_file_atomically, emit, fail_on_option, format_option, load_intent, matrix_argument, output_option, the_firewall, user_errors,
)
from fwmatrix.errors import FwmatrixError
from fwmatrix.matrix.accepts import baseline_text, load_baseline
from fwmatrix.review.lint import KINDS as LINT_KINDS
from fwmatrix.ir import Ruleset
from fwmatrix.report.ci import audit_outcome
from fwmatrix.report.text import markdown, print_table
from fwmatrix.targets import BACKENDS, read_live, read_ruleset


def ruleset_options(fn: F) -> F:
    """--live, --ruleset, --backend, --pf-table, --pf-anchor: the ruleset a command reads (audit, query)."""
    for option in reversed((
        click.option("--live", is_flag=True, help="Read the running kernel's ruleset (on the firewall itself; needs root)."),
        click.option("--ruleset", "-r", "ruleset_paths", metavar="FILE", multiple=True, type=click.Path(dir_okay=False),
                     help="A saved ruleset: nft -j list ruleset, a .nft file, iptables-save output, or pf.conf. Repeat it for rulesets that run together (e.g. iptables-save and ip6tables-save)."),
        click.option("--backend", "-b", "backend_name", type=click.Choice(("auto",) + BACKENDS), default="auto", show_default=True, help="What wrote the ruleset (auto: guess from its text)."),
        click.option("--pf-table", "pf_tables", metavar="NAME=FILE", multiple=True,
                     help="pf: the addresses of table <NAME>, as `pfctl -t NAME -T show` prints them (else a table the ruleset only names is unmodelled). Repeatable."),
        click.option("--pf-anchor", "pf_anchors", metavar="NAME=FILE", multiple=True,
                     help="pf: the rules of anchor NAME, as `pfctl -a NAME -sr` prints them (an empty file: an empty anchor, such as fwmatrix's 'local' without rules). Repeatable."),
    )):
        fn = option(fn)
    return fn


@click.command("audit")
@matrix_argument
@firewall_option_saying("The firewall whose ruleset this is (may be left out when the matrix has one).")
@ruleset_options
@click.option("--pf-interface", "pf_interfaces", metavar="IF=ADDR/PREFIX[,...]", multiple=True,
              help="pf: the addresses of interface IF with their prefix, as ifconfig shows them (192.0.2.1/24): then `(IF)`, `IF:network`, antispoof and, once every interface has them, `self` are exact. Repeatable.")
@click.option("--pf-group", "pf_groups", metavar="NAME=IF[,IF...]", multiple=True,
              help="pf: the members of interface group NAME (egress defaults to the interfaces facing the matrix's internet zone). Repeatable.")
@click.option("--local-address", "local_addresses", metavar="CIDR", multiple=True,
              help="An address (or network) of the firewall itself; give them all: with the matrix's public addresses they are "
                   "what `fib daddr type local` and `-m addrtype --dst-type LOCAL` match (else only the public ones are known). Repeatable.")
@click.option("--baseline", metavar="FILE", type=click.Path(dir_okay=False),
              help="Findings accepted in FILE (a baseline) fail nothing; they stay in the report, marked. With --write-baseline, FILE is (re)written first.")
@click.option("--write-baseline", is_flag=True, help="Write every finding the matrix does not accept into --baseline FILE (adoption on a large firewall: only new findings fail from now on).")
@click.option("--baseline-owner", metavar="WHO", default="baseline", show_default=True, help="The owner written into new baseline entries.")
@click.option("--baseline-expires", metavar="YYYY-MM-DD", help=f"When new baseline entries expire (default: {BASELINE_DAYS} days from today).")
@format_option
@output_option
@fail_on_option("a finding")
@user_errors
def audit_command(matrix: str, firewall: str | None, live: bool, ruleset_paths: tuple[str, ...], backend_name: str,
                  pf_tables: tuple[str, ...], pf_anchors: tuple[str, ...], pf_interfaces: tuple[str, ...], pf_groups: tuple[str, ...],
                  local_addresses: tuple[str, ...], baseline: str | None, write_baseline: bool, baseline_owner: str,
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
    if live == bool(ruleset_paths):
        raise click.UsageError("give exactly one of --live or --ruleset FILE")
    own = tuple(_network(text) for text in local_addresses)
    intent = load_intent(matrix, firewall)
    firewall = the_firewall(intent, firewall, matrix)
    ruleset, source = read_input(intent, firewall, live, ruleset_paths, backend_name, pf_tables, pf_anchors, pf_interfaces, pf_groups,
                                 own if own else None)
    report = audit(intent, firewall, ruleset, source, own)
    report.findings = accepted_findings(intent, firewall, report, baseline, write_baseline, baseline_owner, baseline_expires)
    emit(fmt, output, [report], table=print_table, markdown=markdown, to_json=AuditReport.to_json,
         outcome=lambda r: audit_outcome(r, intent), fail_on=fail_on)
    sys.exit(EXIT_FINDINGS if fail(report, fail_on) else EXIT_OK)


def read_input(intent: Intent, firewall: str, live: bool, ruleset_paths: tuple[str, ...], backend_name: str,
               pf_tables: tuple[str, ...], pf_anchors: tuple[str, ...], pf_interfaces: tuple[str, ...] = (),
               pf_groups: tuple[str, ...] = (), local_addresses: tuple | None = None) -> tuple[Ruleset, str]:
    """The firewall's ruleset, live or from the files (read together), and how to name its source."""
    if live:
        return read_live(backend_name), f"live ({'nftables' if backend_name == 'auto' else backend_name})"
    pf_context = dict(pf.firewall_facts(intent.matrix, firewall), tables=_named_files(pf_tables), anchors=_named_files(pf_anchors))
    given = pf.interface_options(pf_interfaces, pf_groups)
    pf_context.update(addresses={**pf_context["addresses"], **given["addresses"]}, groups={**pf_context["groups"], **given["groups"]},
                      all_addresses=local_addresses)
    read = [(path,) + _read(path, backend_name, pf_context) for path in ruleset_paths]
    # rulesets that run together on one firewall: their tables side by side
    # (an iptables-save file covers its family only: together they cover what each covers)
    families = [parsed.families for _, parsed, _ in read]
    covered = None if None in families else frozenset().union(*families)
    ruleset = Ruleset(tuple(table for _, parsed, _ in read for table in parsed.tables), families=covered)
    return ruleset, ", ".join(f"{path} ({used})" for path, _, used in read)


def accepted_findings(intent: Intent, firewall: str, report: AuditReport, baseline: str | None, write: bool, owner: str,
                      expires: str | None) -> list:
    """The report's findings marked by the matrix's acceptances and the baseline's; with
    `write`, the baseline is first rewritten to accept every finding the matrix does not."""
    today = date.today()
    accepts = intent.matrix.accepts
    check_kinds(accepts, KINDS + LINT_KINDS, "audit and lint")
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
        check_kinds(accepts, KINDS + LINT_KINDS, "audit and lint")
    return accept(report.findings, accepts, firewall, today)


def _read(path: str, backend_name: str, pf_context: dict) -> tuple[Ruleset, str]:
    ruleset, used = read_ruleset(path, backend_name)
    if used == "pf":  # read again, knowing the firewall (checked and decoded by the first read)
        with open(path, encoding="utf-8") as handle:
            ruleset = pf.parse_ruleset(handle.read(), source=path, **pf_context)
    return ruleset, used


def _network(text: str) -> IPNetwork:
    """An address or a network; `10.0.0.1/24` (as `ip addr` prints an address) is refused:
    it may mean the address or its whole network, and only the address is the firewall's."""
    try:
        net = IPNetwork(text)
    except (AddrFormatError, ValueError):
        raise click.UsageError(f"--local-address {text!r} is not an address or a network (CIDR)") from None
    if net.ip != net.network:
        raise click.UsageError(f"--local-address {text}: host bits are set; give the address ({net.ip}) or the network ({net.cidr})")
    return net


def _named_files(pairs: tuple[str, ...]) -> dict[str, str]:
    """NAME=FILE options as {NAME: the file's text}."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, _, path = pair.partition("=")
        if not name or not path:
            raise click.UsageError(f"expected NAME=FILE, not {pair!r}")
        try:
            with open(path, encoding="utf-8") as handle:
                out[name] = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise FwmatrixError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", path) from None
    return out


COMMANDS = (audit_command,)
