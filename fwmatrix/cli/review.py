"""`fwmatrix diff` and `lint`: a change of the matrix reviewed, and the matrix itself linted."""

from __future__ import annotations

import os
import sys

import click

from fwmatrix.cli.common import (
    firewall_option_saying,
    EXIT_FINDINGS, EXIT_OK, emit, fail_on_option, firewall_option, format_option, json_takes_one, load_intent, matrices_argument,
    output_option, selected_backends, user_errors,
)
from fwmatrix.compile.intent import build_intent
from fwmatrix.errors import FwmatrixError, did_you_mean
from fwmatrix.matrix.loader import load_matrix, load_text
from fwmatrix.matrix.yamlnodes import Source
from fwmatrix.report.ci import diff_outcome, lint_markdown, lint_outcome, print_lint
from fwmatrix.report.text import print_review, review_markdown
from fwmatrix.review.diff import Review, review
from fwmatrix.review.expiry import DEFAULT_WITHIN_DAYS
from fwmatrix.review.lint import LintReport, lint, on_firewall
from fwmatrix.review.lint import fail as lint_fails
from fwmatrix.severity import reaches
from fwmatrix.targets import BACKENDS


@click.command("lint")
@matrices_argument
@firewall_option
@click.option("--expiring-within", metavar="DAYS", type=click.IntRange(0), default=DEFAULT_WITHIN_DAYS, show_default=True,
              help="Report openings and groups whose `expires` date is this many days away or less (info); past it they are `expired` (medium).")
@format_option
@output_option
@fail_on_option("a finding")
@user_errors
def lint_command(matrices: tuple[str, ...], firewall: str | None, expiring_within: int, fmt: str, output: str | None, fail_on: str) -> None:
    """Lint each MATRIX: findings about the matrix itself, each at its file:line.

    Explicit openings from a DMZ towards the internet (never needed: replies
    pass by connection tracking), openings that cross no firewall, openings
    other openings already cover (naming them), every port open from the
    internet, a whole zone opened to a whole zone, hosts, services and
    groups no opening uses, and openings and groups past (or close to) their
    `expires` date. Findings the matrix's `accept:` list accepts are shown,
    marked, and fail nothing. With --firewall, the findings about the
    openings placed on it (unused names and groups are the whole matrix's).
    Exit 1 when a finding reaches --fail-on."""
    json_takes_one(fmt, matrices)
    reports = []
    for path in matrices:
        intent = load_intent(path, firewall)
        report = lint(intent, expiring_within=expiring_within)
        reports.append(report if firewall is None else on_firewall(report, intent, firewall))
    emit(fmt, output, reports, table=print_lint, markdown=lint_markdown, to_json=LintReport.to_json, outcome=lint_outcome, fail_on=fail_on)
    sys.exit(EXIT_FINDINGS if any(lint_fails(r, fail_on) for r in reports) else EXIT_OK)


@click.command("diff")
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False), required=False)
@click.option("--git", "git_rev", metavar="REV", help="Compare OLD as it is at git revision REV with the working tree (NEW is then not given).")
@firewall_option_saying("Only the change on this firewall (default: every firewall of either matrix).")
@click.option("--backend", "-b", "backend_name", type=click.Choice(BACKENDS + ("all",)), default="nftables", show_default=True, help="Which rulesets to diff.")
@format_option
@output_option
@fail_on_option("a change", note="; every change is info: --fail-on info fails on any")
@click.option("--exit-code", is_flag=True, help="Exit 1 when the change opens, closes or re-targets anything, as git diff --exit-code: --fail-on info.")
@click.option("--diagram", is_flag=True, help="--format markdown: add a Mermaid diagram of the openings the change adds or changes (GitHub and GitLab draw it).")
@user_errors
def diff_command(old: str, new: str | None, git_rev: str | None, firewall: str | None, backend_name: str, fmt: str, output: str | None, fail_on: str,
                 exit_code: bool, diagram: bool) -> None:
    """Review a change of the matrix: what it opens and closes, per firewall.

    Compares OLD and NEW (or OLD at --git REV with OLD in the working tree) as
    traffic, not text: openings added, removed, widened and narrowed, port
    forwards changed, definitions whose change moves traffic, and the diff of
    every rendered ruleset. A rename or a reordering is "no change in what is
    open"."""
    if git_rev is not None:
        if new is not None:
            raise click.UsageError("with --git REV give one matrix: it is compared with itself at REV")
        at_rev = lambda path: Source(f"{git_rev}:{path}", git_show(git_rev, path))  # noqa: E731 - its includes, at the same revision
        before, old_label = load_text(git_show(git_rev, old), f"{git_rev}:{old}", read=at_rev, path=old), f"{git_rev}:{old}"
        after, new_label = load_matrix(old), old
    else:
        if new is None:
            raise click.UsageError("give OLD and NEW, or one matrix with --git REV")
        before, old_label = load_matrix(old), old
        after, new_label = load_matrix(new), new
    old_intent, new_intent = build_intent(before), build_intent(after)
    if firewall is not None and firewall not in old_intent.firewalls and firewall not in new_intent.firewalls:
        known = sorted(set(old_intent.firewalls) | set(new_intent.firewalls))
        raise FwmatrixError(f"no firewall named '{firewall}' in either matrix{did_you_mean(firewall, known)}; they have: {', '.join(known)}", new_label)
    result = review(old_intent, new_intent, old_label, new_label, selected_backends(backend_name), firewall)
    # every change is info (a rename, a reordering: none): only --fail-on info fails on one,
    # its JUnit case as the exit code
    threshold = "info" if exit_code else fail_on
    markdown = review_markdown
    if diagram:
        from fwmatrix.graph import changed_part_mermaid

        markdown = lambda r: review_markdown(r) + changed_part_mermaid(after, r)  # noqa: E731
    emit(fmt, output, [result], table=print_review, markdown=markdown, to_json=Review.to_json,
         outcome=lambda r: diff_outcome(r, after), fail_on=threshold)
    sys.exit(EXIT_FINDINGS if reaches("info", threshold) and result.changed else EXIT_OK)


def git_show(rev: str, path: str) -> bytes:
    """The bytes of `path` (as given, relative to here) at git revision `rev`."""
    import subprocess

    directory = os.path.dirname(os.path.abspath(path)) or "."
    try:
        prefix = subprocess.run(["git", "-C", directory, "rev-parse", "--show-prefix"], capture_output=True, text=True, check=True).stdout.strip()
        shown = subprocess.run(["git", "-C", directory, "show", f"{rev}:{prefix}{os.path.basename(path)}"], capture_output=True, check=True)
    except FileNotFoundError:
        raise FwmatrixError("git is not installed") from None
    except subprocess.CalledProcessError as exc:
        message = (exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or "").strip().splitlines()
        raise FwmatrixError(f"git cannot show it at {rev}: {message[-1] if message else 'failed'}", path) from None
    return shown.stdout


COMMANDS = (diff_command, lint_command)
