"""The `fwmatrix` command.

Exit codes: 0 clean; 1 findings at or above the threshold (`--fail-on` for
audit, lint and check; `--exit-code` for diff), a refused ruleset, or an
internal error; 2 a usage or input error (bad matrix, unknown firewall). User
errors print one line, never a traceback (FWMATRIX_DEBUG=1 shows tracebacks of
internal errors). Every report command writes `--format table|json|markdown|
junit|sarif` (docs/reports.md), to standard output or atomically to `--output`.
"""

from __future__ import annotations

import functools
import io
import os
import sys
import tempfile
from typing import Callable, Sequence, TypeVar

import click
from rich.console import Console
from rich.table import Table as RichTable

from fwmatrix import __version__
from fwmatrix.compile.ruleset import compile_intent
from fwmatrix.errors import BackendError, FwmatrixError
from fwmatrix.gcpause import gc_paused
from fwmatrix.ir import Ruleset
from fwmatrix.compile.intent import Intent, build_intent, management_arrivals
from fwmatrix.matrix.loader import load_matrix, load_text
from fwmatrix.audit.findings import SEVERITIES, AuditReport, audit, fail
from fwmatrix.report.ci import (
    BackendCheck, CheckReport, FirewallCheck, Outcome, as_json, audit_outcome, check_fails, check_markdown,
    check_outcome, diff_outcome, junit, lint_markdown, lint_outcome, print_check, print_lint, sarif,
)
from fwmatrix.ir import Ruleset
from fwmatrix.review.lint import LintReport, lint
from fwmatrix.matrix.model import Matrix
from fwmatrix.matrix.resolve import Resolver
from fwmatrix.review.lint import fail as lint_fails
from fwmatrix.report.text import markdown, print_review, print_table, review_markdown
from fwmatrix.review.diff import Review, review
from fwmatrix.targets import BACKENDS, backend, read_live, read_ruleset

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
FORMATS = ("table", "json", "markdown", "junit", "sarif")
F = TypeVar("F", bound=Callable[..., object])
R = TypeVar("R")

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _console() -> Console:
    """Standard output; lines are not cut when it is a pipe or a file."""
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 200  # tables: wide enough for a CI log or a file
    return console


def user_errors(fn: F) -> F:
    """Turn the errors a user can cause into one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            with gc_paused():  # bulk work, few cycles: see fwmatrix/gcpause.py
                return fn(*args, **kwargs)
        except BackendError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
            sys.exit(EXIT_FINDINGS)
        except FwmatrixError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: one line unless debugging
            if os.environ.get("FWMATRIX_DEBUG"):
                raise
            click.echo(f"internal error: {type(exc).__name__}: {exc} (set FWMATRIX_DEBUG=1 for a traceback)", err=True)
            sys.exit(EXIT_FINDINGS)

    return wrapper  # type: ignore[return-value]


def _intent(matrix_path: str, firewall: str | None) -> Intent:
    intent = build_intent(load_matrix(matrix_path))
    if firewall is not None and firewall not in intent.firewalls:
        from fwmatrix.errors import did_you_mean

        raise FwmatrixError(f"no firewall named '{firewall}' in the matrix{did_you_mean(firewall, intent.firewalls)}; it has: {', '.join(intent.firewalls)}", matrix_path)
    return intent


def _backends(name: str) -> tuple[str, ...]:
    return BACKENDS if name == "all" else (name,)


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


def write_file_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    write_atomically(directory, {os.path.basename(path): text})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(directory: str, files: dict[str, str]) -> None:
    """Each file appears whole or not at all: written aside, then renamed into place."""
    os.makedirs(directory, exist_ok=True)
    staged: list[tuple[str, str]] = []
    try:
        for name, text in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
            staged.append((tmp, os.path.join(directory, name)))
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a ruleset is an ordinary file
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
        for tmp, final in staged:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise


matrix_argument = click.argument("matrix", type=click.Path(dir_okay=False))
matrices_argument = click.argument("matrices", metavar="MATRIX...", nargs=-1, required=True, type=click.Path(dir_okay=False))
firewall_option = click.option("--firewall", "-f", metavar="NAME", help="Only this firewall (default: every firewall in the matrix).")
format_option = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
    help="table for people, json for tools, markdown for a pull request comment, junit and sarif for CI (docs/reports.md).",
)
output_option = click.option("--output", "-o", metavar="FILE", help="Write the report to FILE (atomically) instead of standard output.")


def _fail_on(default: str, what: str) -> Callable[[F], F]:
    return click.option("--fail-on", type=click.Choice(SEVERITIES), default=default, show_default=True, help=f"Exit 1 when {what} is at least this severe.")


def _json_takes_one(fmt: str, matrices: Sequence[str]) -> None:
    if fmt == "json" and len(matrices) != 1:
        raise click.UsageError("--format json reports on one matrix: run once per matrix (junit and sarif take several)")


def _emit(fmt: str, output: str | None, reports: Sequence[R], *, table: Callable[[R, Console], None], markdown: Callable[[R], str],
          to_json: Callable[[R], dict], outcome: Callable[[R], Outcome], fail_on: str | None) -> None:
    """Print the reports in the chosen format, or write them atomically to `output`.
    JUnit cases fail for issues at or above `fail_on` (None: none fails)."""
    if fmt == "table" and output is None:
        console = _console()
        for report in reports:
            table(report, console)
        return
    if fmt == "table":

        def print_all(console: Console) -> None:
            for report in reports:
                table(report, console)

        text = _recorded(print_all)
    elif fmt == "markdown":
        text = "\n".join(markdown(report) for report in reports)
    elif fmt == "json":
        (report,) = reports
        text = as_json(to_json(report))
    elif fmt == "junit":
        text = junit([outcome(report) for report in reports], fail_on)
    else:
        text = sarif([outcome(report) for report in reports])
    if output is None:
        click.echo(text, nl=False)
    else:
        write_file_atomically(output, text)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fwmatrix")
def main() -> None:
    """fwmatrix: a firewall connectivity matrix kept as data.

    The matrix (YAML, see docs/matrix-format.md) says who may talk to whom, on
    which ports, through which NAT. fwmatrix compiles it into rulesets, one per
    firewall the traffic crosses.

    Exit codes: 0 clean; 1 findings or changes at or above the threshold
    (--fail-on, or --exit-code for diff); 2 usage or input error.
    """


@main.command("compile")
@matrix_argument
@firewall_option
@click.option("--backend", "-b", "backend_name", type=click.Choice(BACKENDS + ("all",)), default="nftables", show_default=True, help="Ruleset syntax.")
@click.option("--output", "-o", metavar="DIR|-", default="-", show_default=True, help="Directory to write FIREWALL.SUFFIX files into, or - for standard output.")
@click.option("--iptables-mode", type=click.Choice(("own-chains", "full")), default="own-chains", show_default=True,
              help="own-chains: only fwmatrix's FWM-* chains (a container runtime's chains survive; the apply step hooks them); full: the whole filter and nat tables.")
@click.option("--pf-dialect", type=click.Choice(("openbsd", "freebsd")), default="openbsd", show_default=True,
              help="openbsd: match/pass ... rdr-to (OpenBSD 4.7+); freebsd: rdr ... -> (FreeBSD, pfSense, OPNsense).")
@user_errors
def compile_command(matrix: str, firewall: str | None, backend_name: str, output: str, iptables_mode: str, pf_dialect: str) -> None:
    """Compile MATRIX into a ruleset for each firewall."""
    options = {"iptables": {"mode": iptables_mode}, "pf": {"dialect": pf_dialect}}
    files = _rendered(_intent(matrix, firewall), firewall, _backends(backend_name), options)
    if output == "-":
        for text in files.values():
            click.echo(text, nl=False)
        return
    write_atomically(output, files)
    for name in files:
        err_console.print(f"wrote {os.path.join(output, name)}", highlight=False)


@main.command("check")
@matrices_argument
@firewall_option
@click.option("--backend", "-b", "backend_name", type=click.Choice(BACKENDS + ("all",)), default="all", show_default=True, help="Which backends' output to validate.")
@click.option("--no-kernel", is_flag=True, help="Skip the validation by the backends' own tools (nft -c ...).")
@format_option
@output_option
@_fail_on("high", "a result (a refused ruleset: high, a warning: medium, a ruleset not checked: info)")
@user_errors
def check_command(matrices: tuple[str, ...], firewall: str | None, backend_name: str, no_kernel: bool, fmt: str, output: str | None, fail_on: str) -> None:
    """Load and validate each MATRIX; check the compiled rulesets with the targets' own tools.

    The rulesets are checked in a private network namespace (nft -c, as root
    or through an unprivileged user namespace), so nothing is loaded. A
    ruleset a target refuses exits 1; so do warnings with --fail-on medium."""
    _json_takes_one(fmt, matrices)
    reports = [_check(path, firewall, _backends(backend_name), no_kernel) for path in matrices]
    _emit(fmt, output, reports, table=print_check, markdown=check_markdown, to_json=CheckReport.to_json, outcome=check_outcome, fail_on=fail_on)
    sys.exit(EXIT_FINDINGS if any(check_fails(r, fail_on) for r in reports) else EXIT_OK)


def _check(matrix_path: str, firewall: str | None, backend_names: tuple[str, ...], no_kernel: bool) -> CheckReport:
    intent = _intent(matrix_path, firewall)
    firewalls = []
    for fw_name, ruleset in compile_intent(intent).items():
        if firewall is not None and fw_name != firewall:
            continue
        fw = intent.firewalls[fw_name]
        results = tuple(_check_backend(name, fw_name, ruleset, no_kernel) for name in backend_names)
        firewalls.append(FirewallCheck(fw_name, fw.firewall.where, len(fw.flows), len(fw.interface_pairs), len(fw.dnats), results))
    return CheckReport(intent.matrix, intent.warnings, firewalls)


def _check_backend(name: str, fw_name: str, ruleset: Ruleset, no_kernel: bool) -> BackendCheck:
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


@main.command("lint")
@matrices_argument
@format_option
@output_option
@_fail_on("low", "a finding")
@user_errors
def lint_command(matrices: tuple[str, ...], fmt: str, output: str | None, fail_on: str) -> None:
    """Lint each MATRIX: findings about the matrix itself, each at its file:line.

    Explicit openings from a DMZ towards the internet (never needed: replies
    pass by connection tracking), openings that cross no firewall, openings
    other openings already cover (naming them), every port open from the
    internet, a whole zone opened to a whole zone, and hosts, services and
    groups no opening uses. Exit 1 when a finding reaches --fail-on."""
    _json_takes_one(fmt, matrices)
    reports = [lint(build_intent(load_matrix(path))) for path in matrices]
    _emit(fmt, output, reports, table=print_lint, markdown=lint_markdown, to_json=LintReport.to_json, outcome=lint_outcome, fail_on=fail_on)
    sys.exit(EXIT_FINDINGS if any(lint_fails(r, fail_on) for r in reports) else EXIT_OK)


@main.command("show")
@matrix_argument
@firewall_option
@user_errors
def show_command(matrix: str, firewall: str | None) -> None:
    """Show MATRIX as a table, like the connectivity matrix of a design document,
    with the firewalls and interfaces each opening is placed on."""
    intent = _intent(matrix, firewall)
    m = intent.matrix
    resolver = Resolver(m)
    placement: dict[int, list[str]] = {}
    for fw_name, fw in intent.firewalls.items():
        if firewall is not None and fw_name != firewall:
            continue
        for flow in fw.flows:
            text = f"{fw_name}: {flow.in_iface}→{flow.out_iface}"
            placement.setdefault(flow.opening.index, [])
            if text not in placement[flow.opening.index]:
                placement[flow.opening.index].append(text)
    table = RichTable(title=f"{m.title} — {m.name}", show_lines=True)
    for column in ("#", "opening", "from", "to", "service", "NAT", "placed on", "note"):
        table.add_column(column, overflow="fold")
    for opening in m.openings:
        if firewall is not None and opening.index not in placement:
            continue
        nat = ""
        if opening.nat is not None:
            nat = opening.nat.target + (f" port {opening.nat.port}" if opening.nat.port else "")
        services = ", ".join(str(p) for p in resolver.services(opening))
        named = ", ".join(opening.services)
        table.add_row(
            str(opening.index),
            opening.name,
            ", ".join(opening.sources),
            ", ".join(opening.destinations),
            services if named == services else f"{named}\n({services})",
            nat,
            "\n".join(placement.get(opening.index, ["(crosses no firewall)"])),
            opening.note,
        )
    console = _console()
    console.print(table)
    console.print(
        "Replies to these openings pass by connection tracking (established/related): "
        "nothing needs opening from the DMZ towards the internet."
    )
    _show_management(console, m, resolver, firewall)


def _show_management(console: Console, m: Matrix, resolver: Resolver, only: str | None) -> None:
    """The management accesses the matrix declares: what `fwmatrix apply` will not let a ruleset cut."""
    table = RichTable(title="management access to the firewalls (kept by `fwmatrix apply`)", show_lines=True)
    for column in ("firewall", "#", "from", "to", "service", "arrives on", "note"):
        table.add_column(column, overflow="fold")
    for fw in m.firewalls.values():
        if only is not None and fw.name != only:
            continue
        for access in fw.management:
            arrives = sorted({iface for ifaces, _ in management_arrivals(m, fw.name, access, resolver) for iface in ifaces})
            services = ", ".join(str(p) for p in resolver.services(access.as_opening()))
            table.add_row(fw.name, str(access.index), ", ".join(access.sources), ", ".join(access.destinations) or "(any address of it)",
                          services, ", ".join(arrives), access.note)
    if table.row_count:
        console.print(table)


@main.command("audit")
@matrix_argument
@click.option("--firewall", "-f", metavar="NAME", help="The firewall whose ruleset this is (may be left out when the matrix has one).")
@click.option("--live", is_flag=True, help="Read the running kernel's ruleset (on the firewall itself; needs root).")
@click.option("--ruleset", "-r", "ruleset_paths", metavar="FILE", multiple=True, type=click.Path(dir_okay=False),
              help="A saved ruleset: nft -j list ruleset, a .nft file, iptables-save output, or pf.conf. Repeat it for rulesets that run together (e.g. iptables-save and ip6tables-save).")
@click.option("--backend", "-b", "backend_name", type=click.Choice(("auto",) + BACKENDS), default="auto", show_default=True, help="What wrote the ruleset (auto: guess from its text).")
@format_option
@output_option
@_fail_on("low", "a finding")
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
    intent = _intent(matrix, firewall)
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
    _emit(fmt, output, [report], table=print_table, markdown=markdown, to_json=AuditReport.to_json,
          outcome=lambda r: audit_outcome(r, intent), fail_on=fail_on)
    sys.exit(EXIT_FINDINGS if fail(report, fail_on) else EXIT_OK)


@main.command("diff")
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False), required=False)
@click.option("--git", "git_rev", metavar="REV", help="Compare OLD as it is at git revision REV with the working tree (NEW is then not given).")
@click.option("--backend", "-b", "backend_name", type=click.Choice(BACKENDS + ("all",)), default="nftables", show_default=True, help="Which rulesets to diff.")
@format_option
@output_option
@click.option("--exit-code", is_flag=True, help="Exit 1 when the change opens, closes or re-targets anything (like git diff --exit-code).")
@user_errors
def diff_command(old: str, new: str | None, git_rev: str | None, backend_name: str, fmt: str, output: str | None, exit_code: bool) -> None:
    """Review a change of the matrix: what it opens and closes, per firewall.

    Compares OLD and NEW (or OLD at --git REV with OLD in the working tree) as
    traffic, not text: openings added, removed, widened and narrowed, port
    forwards changed, definitions whose change moves traffic, and the diff of
    every rendered ruleset. A rename or a reordering is "no change in what is
    open"."""
    if git_rev is not None:
        if new is not None:
            raise click.UsageError("with --git REV give one matrix: it is compared with itself at REV")
        before, old_label = load_text(git_show(git_rev, old), f"{git_rev}:{old}"), f"{git_rev}:{old}"
        after, new_label = load_matrix(old), old
    else:
        if new is None:
            raise click.UsageError("give OLD and NEW, or one matrix with --git REV")
        before, old_label = load_matrix(old), old
        after, new_label = load_matrix(new), new
    result = review(build_intent(before), build_intent(after), old_label, new_label, _backends(backend_name))
    # JUnit: with --exit-code every change fails its case, as it fails the exit code
    _emit(fmt, output, [result], table=print_review, markdown=review_markdown, to_json=Review.to_json,
          outcome=lambda r: diff_outcome(r, after), fail_on="info" if exit_code else None)
    sys.exit(EXIT_FINDINGS if exit_code and result.changed else EXIT_OK)


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


def _recorded(printer: Callable[[Console], None]) -> str:
    """What a printer writes to a console, as plain text (for --format table --output FILE)."""
    console = Console(record=True, width=160, file=io.StringIO(), highlight=False)
    printer(console)
    return console.export_text()


# apply, confirm, rollback and lab live in cli_ops, which imports from this module and registers
# them on `main` itself: `from .cli_ops import COMMANDS` here would fail when cli_ops is imported first.
from fwmatrix.cli import ops as cli_ops  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    main()
