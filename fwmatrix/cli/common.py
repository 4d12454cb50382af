"""What every `fwmatrix` command shares: exit codes, one-line errors, consoles, the
common arguments and options, report output, atomic file writes.

Exit codes: 0 clean; 1 findings at or above the threshold (`--fail-on`,
default low, for audit, lint, diff; high for check), a refused ruleset, or an
internal error; 2 a usage or input error (bad matrix, unknown firewall, a
ruleset file that cannot be read). User
errors print one line, never a traceback (FWMATRIX_DEBUG=1 shows tracebacks of
internal errors); user text in them is escaped, never read as rich markup
(`[root@host ~]` prints as written). Every report command writes `--format table|json|markdown|
junit|sarif` (docs/reports.md), to standard output or atomically to `--output`.

The command modules import this one; it imports no command module.
"""

from __future__ import annotations

import fcntl
import functools
import os
import sys
import tempfile
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

import click

from fwmatrix.cli.consoles import err_console, make_console, recorded
from fwmatrix.cli.completion import from_matrix
from fwmatrix.compile.intent import Intent, build_intent
from fwmatrix.errors import BackendError, FwmatrixError, did_you_mean
from fwmatrix.gcpause import gc_paused
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.severity import SEVERITIES
from fwmatrix.targets import BACKENDS

if TYPE_CHECKING:  # the report formats import every report's module: only emit() needs them
    from rich.console import Console  # made by consoles.py, which imports rich only then

    from fwmatrix.report.ci import Outcome

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
FORMATS = ("table", "compact", "json", "markdown", "junit", "sarif")
F = TypeVar("F", bound=Callable[..., object])
R = TypeVar("R")



def stdout_console() -> Console:
    """Standard output, as wide as COLUMNS or the terminal, coloured as --color says (consoles.py)."""
    return make_console()


def user_errors(fn: F) -> F:
    """Turn the errors a user can cause into one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            with gc_paused():  # bulk work, few cycles: see fwmatrix/gcpause.py
                try:
                    return fn(*args, **kwargs)
                except SystemExit as exc:  # a command's end: its exit code
                    code = exc.code
                # the exception's traceback held the command's frames, with all they made: freed
                # here, the collector's first pass once back on would walk them all (0.5 s of CPU
                # for a diff at 10,000 openings)
            sys.exit(code)
        except BackendError as exc:
            from rich.markup import escape

            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
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


def require_root(command: str, why: str) -> None:
    if os.geteuid() != 0:
        raise FwmatrixError(f"fwmatrix {command} needs root: {why}")


def load_intent(matrix_path: str, firewall: str | None) -> Intent:
    """The matrix's intent; `firewall`, when given, must be one of its firewalls."""
    intent = build_intent(load_matrix(matrix_path))
    if firewall is not None and firewall not in intent.firewalls:
        raise FwmatrixError(f"no firewall named '{firewall}' in the matrix{did_you_mean(firewall, intent.firewalls)}; it has: {', '.join(intent.firewalls)}", matrix_path)
    return intent


def the_firewall(intent: Intent, firewall: str | None, matrix_path: str) -> str:
    """The firewall a command acts on: the one named, or the matrix's only one."""
    if firewall is not None:
        return firewall
    if len(intent.firewalls) != 1:
        have = f"several firewalls ({', '.join(intent.firewalls)})" if intent.firewalls else "no firewall"
        raise FwmatrixError(f"the matrix has {have}: say which with --firewall NAME", matrix_path)
    return next(iter(intent.firewalls))


def selected_backends(name: str) -> tuple[str, ...]:
    """The backends a `--backend` choice names ("all": every one)."""
    return BACKENDS if name == "all" else (name,)


# -- writing files whole or not at all --------------------------------------------------------


def write_output(path: str, data: str | bytes) -> None:
    """`data` to the file `path` (atomically, saying so on standard error), or to standard output for '-'."""
    if path == "-":
        click.echo(data, nl=False)
        return
    write_file_atomically(path, data)
    err_console.print(f"wrote {path}", highlight=False, markup=False)


def write_file_atomically(path: str, text: str | bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    write_atomically(directory, {os.path.basename(path): text})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(directory: str, files: dict[str, str] | dict[str, bytes]) -> None:
    """Each file appears whole or not at all: written aside, then renamed into place.
    Text is written as UTF-8; bytes (a workbook, a picture) as they are."""
    os.makedirs(directory, exist_ok=True)
    staged: list[tuple[str, str]] = []
    try:
        for name, text in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
            staged.append((tmp, os.path.join(directory, name)))
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a ruleset is an ordinary file
            with (os.fdopen(fd, "wb") if isinstance(text, bytes) else os.fdopen(fd, "w", encoding="utf-8")) as out:
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


def replace_file_set(directory: str, files: dict[str, str], replaced: set[str]) -> None:
    """Write `files` into `directory` and remove the names in `replaced` they no longer
    include (the files an earlier run wrote that this one does not), holding an exclusive
    lock on the directory: two runs at once end with one run's whole set, never a mix."""
    os.makedirs(directory, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
        write_atomically(directory, files)
        for name in sorted(replaced - files.keys()):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass
    finally:
        os.close(fd)


# -- arguments and options shared by several commands -------------------------------------------


matrix_argument = click.argument("matrix", type=click.Path(dir_okay=False))
matrices_argument = click.argument("matrices", metavar="MATRIX...", nargs=-1, required=True, type=click.Path(dir_okay=False))
def firewall_option_saying(help_text: str, required: bool = False) -> Callable[[F], F]:
    """--firewall NAME, completed from the matrix's firewalls."""
    return click.option("--firewall", "-f", metavar="NAME", required=required, shell_complete=from_matrix("firewalls"), help=help_text)


firewall_option = firewall_option_saying("Only this firewall (default: every firewall in the matrix).")
format_option = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
    help="table for people, compact for one line per finding, json for tools, markdown for a pull request comment, junit and sarif for CI (docs/reports.md).",
)
output_option = click.option("--output", "-o", metavar="FILE", help="Write the report to FILE (atomically) instead of standard output.")


def file_output_option(what: str = "The file") -> Callable[[F], F]:
    """-o of the commands whose result is a file (written by `write_output`)."""
    return click.option("--output", "-o", metavar="FILE", required=True, help=f"{what} to write (atomically), or - for standard output.")


DEFAULT_FAIL_ON = "low"  # every finding but info: the one default of audit, lint, diff and fleet-report (docs/reports.md)


def fail_on_option(what: str, fails: str = "Exit 1", default: str = DEFAULT_FAIL_ON, note: str = "") -> Callable[[F], F]:
    """--fail-on: the least severity of `what` that fails (`fails`: what failing does)."""
    rule = "every finding but info" if default == DEFAULT_FAIL_ON else "only a refused ruleset"
    return click.option("--fail-on", type=click.Choice(SEVERITIES), default=default, show_default=True,
                        help=f"{fails} when {what} is at least this severe ({default}: {rule}{note}; docs/reports.md#exit-codes).")


# -- report output ------------------------------------------------------------------------------


def json_takes_one(fmt: str, matrices: Sequence[str]) -> None:
    if fmt == "json" and len(matrices) != 1:
        raise click.UsageError("--format json reports on one matrix: run once per matrix (junit and sarif take several)")


def emit(fmt: str, output: str | None, reports: Sequence[R], *, table: Callable[[R, Console], None], markdown: Callable[[R], str],
         to_json: Callable[[R], dict], outcome: Callable[[R], Outcome], fail_on: str | None) -> None:
    """Print the reports in the chosen format, or write them atomically to `output`.
    JUnit cases fail for issues at or above `fail_on` (None: none fails)."""
    if fmt == "table" and output is None:
        console = stdout_console()
        for report in reports:
            table(report, console)
        return
    if fmt == "table":

        def print_all(console: Console) -> None:
            for report in reports:
                table(report, console)

        text = recorded(print_all)
    elif fmt == "compact":
        from fwmatrix.report.compact import compact

        text = compact([outcome(report) for report in reports])
    elif fmt == "markdown":
        text = "\n".join(markdown(report) for report in reports)
    elif fmt == "json":  # JUnit and SARIF's module (report/ci.py) not imported for it
        from fwmatrix.report import json_text

        (report,) = reports
        text = json_text(to_json(report))
    elif fmt == "junit":
        from fwmatrix.report.ci import junit

        text = junit([outcome(report) for report in reports], fail_on)
    else:
        from fwmatrix.report.ci import sarif

        text = sarif([outcome(report) for report in reports])
    if output is None:
        click.echo(text, nl=False)
    else:
        write_file_atomically(output, text)
