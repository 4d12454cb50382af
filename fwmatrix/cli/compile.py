"""`fwmatrix compile`, `check` and `show`: a matrix turned into rulesets, validated, shown."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from fwmatrix.cli.common import (
    EXIT_FINDINGS, EXIT_OK, emit, err_console, fail_on_option, firewall_option, format_option, json_takes_one, load_intent,
    matrices_argument, matrix_argument, output_option, replace_file_set, selected_backends, user_errors,
)
from fwmatrix.cli.completion import from_matrix
from fwmatrix.compile.intent import Intent
from fwmatrix.compile.ruleset import compile_intent
from fwmatrix.errors import BackendError, FwmatrixError, did_you_mean
from fwmatrix.ir import Ruleset
from fwmatrix.targets import BACKENDS, backend, output_suffixes

if TYPE_CHECKING:
    from fwmatrix.report.ci import BackendCheck, CheckReport


def _rendered(intent: Intent, firewall: str | None, backend_names: tuple[str, ...], options: dict[str, dict] | None = None) -> dict[str, str]:
    """file name -> text, for every selected firewall and backend (with each backend's options)."""
    files: dict[str, str] = {}
    for fw_name, ruleset in compile_intent(intent).items():
        if firewall is not None and fw_name != firewall:
            continue
        for name in backend_names:
            for suffix, text in backend(name).render_files(ruleset, **(options or {}).get(name, {})).items():
                files[f"{fw_name}{suffix}"] = text
    return files


@click.command("compile")
@matrix_argument
@firewall_option
@click.option("--backend", "-b", "backend_name", type=click.Choice(BACKENDS + ("all",)), default="nftables", show_default=True, help="Ruleset syntax.")
@click.option("--out-dir", "out_dir", metavar="DIR", help="Write FIREWALL.SUFFIX files into DIR (each firewall's files of the chosen backends replaced as a set: "
                   "a file this compile no longer writes is removed; compiles into one directory take turns); without it, the rulesets go to standard output. Formerly -o.")
@click.option("--output", "-o", "old_output", metavar="DIR|-", hidden=True, help="Deprecated: --out-dir DIR (-o is a file for every other command).")
@click.option("--iptables-mode", type=click.Choice(("own-chains", "full")), default="own-chains", show_default=True,
              help="own-chains: only fwmatrix's FWM-* chains (a container runtime's chains survive; the apply step hooks them); full: the whole filter and nat tables.")
@click.option("--pf-dialect", type=click.Choice(("openbsd", "freebsd")), default="openbsd", show_default=True,
              help="openbsd: match/pass ... rdr-to (OpenBSD 4.7+); freebsd: rdr ... -> (FreeBSD, pfSense, OPNsense).")
@user_errors
def compile_command(matrix: str, firewall: str | None, backend_name: str, out_dir: str | None, old_output: str | None, iptables_mode: str,
                    pf_dialect: str) -> None:
    """Compile MATRIX into a ruleset for each firewall: to standard output, or with
    --out-dir DIR one file per firewall and backend (FIREWALL.nft, .ipt4/.ipt6, .pf.conf)."""
    output = _output_directory(out_dir, old_output)
    options = {"iptables": {"mode": iptables_mode}, "pf": {"dialect": pf_dialect}}
    intent = load_intent(matrix, firewall)
    backend_names = selected_backends(backend_name)
    files = _rendered(intent, firewall, backend_names, options)
    if output is None:
        for text in files.values():
            click.echo(text, nl=False)
        return
    # each firewall's files of these backends are replaced as a set: an .ipset an earlier
    # compile needed and this one does not goes, another backend's files stay
    firewalls = [firewall] if firewall is not None else list(intent.firewalls)
    replaced = {f"{fw}{suffix}" for fw in firewalls for name in backend_names for suffix in output_suffixes(name)}
    replace_file_set(output, files, replaced)
    for name in files:
        err_console.print(f"wrote {os.path.join(output, name)}", highlight=False, markup=False)


def _output_directory(out_dir: str | None, old_output: str | None) -> str | None:
    """The directory to write into (None: standard output). `-o` was compile's directory
    before every other command took it for a file: still read, with a line saying so."""
    if out_dir == "-":
        raise click.UsageError("--out-dir -: standard output is where the rulesets go without --out-dir")
    if old_output is None:
        return out_dir
    if out_dir is not None:
        raise click.UsageError("give --out-dir DIR alone (-o is its deprecated spelling)")
    hint = "leave it out for standard output" if old_output == "-" else f"use --out-dir {old_output}"
    err_console.print(f"warning: compile -o is deprecated: {hint} (-o names a file for every other command)", markup=False, highlight=False)
    return None if old_output == "-" else old_output


@click.command("check")
@matrices_argument
@firewall_option
@click.option("--backend", "-b", "backend_name", type=click.Choice(BACKENDS + ("all",)), default="all", show_default=True, help="Which backends' output to validate.")
@click.option("--no-kernel", is_flag=True, help="Skip the validation by the backends' own tools (nft -c ...).")
@format_option
@output_option
@fail_on_option("a result (a refused ruleset: high, a warning: medium, a ruleset not checked: info)", default="high")
@user_errors
def check_command(matrices: tuple[str, ...], firewall: str | None, backend_name: str, no_kernel: bool, fmt: str, output: str | None, fail_on: str) -> None:
    """Load and validate each MATRIX; check the compiled rulesets with the targets' own tools.

    The rulesets are checked in a private network namespace (nft -c, as root
    or through an unprivileged user namespace), so nothing is loaded. A
    ruleset a target refuses exits 1; so do warnings with --fail-on medium."""
    from fwmatrix.report.ci import CheckReport, check_fails, check_markdown, check_outcome, print_check  # not for compile

    json_takes_one(fmt, matrices)
    reports = [_check(path, firewall, selected_backends(backend_name), no_kernel) for path in matrices]
    emit(fmt, output, reports, table=print_check, markdown=check_markdown, to_json=CheckReport.to_json, outcome=check_outcome, fail_on=fail_on)
    sys.exit(EXIT_FINDINGS if any(check_fails(r, fail_on) for r in reports) else EXIT_OK)


def _check(matrix_path: str, firewall: str | None, backend_names: tuple[str, ...], no_kernel: bool) -> CheckReport:
    from fwmatrix.report.ci import CheckReport, FirewallCheck

    from fwmatrix.review.lint import check_accepted_kinds  # not for compile

    intent = load_intent(matrix_path, firewall)
    check_accepted_kinds(intent.matrix.accepts)
    firewalls = []
    for fw_name, ruleset in compile_intent(intent).items():
        if firewall is not None and fw_name != firewall:
            continue
        fw = intent.firewalls[fw_name]
        results = tuple(_check_backend(name, fw_name, ruleset, no_kernel) for name in backend_names)
        own = sum(not i.management for i in fw.inputs)
        firewalls.append(FirewallCheck(fw_name, fw.firewall.where, len(fw.flows), len(fw.interface_pairs), len(fw.dnats), results,
                                       len(fw.snats), own, len(fw.inputs) - own))
    return CheckReport(intent.matrix, intent.warnings, firewalls)


def _check_backend(name: str, fw_name: str, ruleset: Ruleset, no_kernel: bool) -> BackendCheck:
    from fwmatrix.report.ci import BackendCheck

    module = backend(name)
    files = module.render_files(ruleset)
    names = tuple(f"{fw_name}{suffix}" for suffix in files)
    if no_kernel:
        return BackendCheck(name, names, "skipped", reason="--no-kernel")
    try:
        problems = module.check_files(files)
    except BackendError as exc:  # no checker here: said, not failed
        return BackendCheck(name, names, "unchecked", reason=str(exc))
    return BackendCheck(name, names, "refused" if problems else "accepted", tuple(problems))


@click.command("show")
@matrix_argument
@firewall_option
@click.option("--opening", "openings", metavar="NAME", multiple=True, shell_complete=from_matrix("openings"),
              help="Only this opening (repeatable); the management accesses are then left out.")
@click.option("--format", "fmt", type=click.Choice(("table", "json", "markdown")), default="table", show_default=True,
              help="table for people, json for tools (schema fwmatrix.show/1), markdown for a design document or a pull request.")
@output_option
@user_errors
def show_command(matrix: str, firewall: str | None, openings: tuple[str, ...], fmt: str, output: str | None) -> None:
    """Show MATRIX as a table, like the connectivity matrix of a design document,
    with the firewalls and interfaces each opening is placed on."""
    from fwmatrix.report.matrixview import MatrixView, matrix_view, print_view, view_markdown  # not for compile

    intent = load_intent(matrix, firewall)
    known = [o.name for o in intent.matrix.openings]
    for name in openings:
        if name not in known:
            raise FwmatrixError(f"no opening named '{name}' in the matrix{did_you_mean(name, known)}", matrix)
    view = matrix_view(intent, firewall, openings)
    emit(fmt, output, [view], table=print_view, markdown=view_markdown, to_json=MatrixView.to_json,
         outcome=lambda v: None, fail_on=None)  # type: ignore[arg-type,return-value] - no junit or sarif


COMMANDS = (compile_command, check_command, show_command)
