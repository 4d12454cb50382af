"""The `fwmatrix` command.

Exit codes: 0 all good; 1 findings or a failed check; 2 a usage or input
error (bad matrix, unknown firewall). User errors print one line, never a
traceback (FWMATRIX_DEBUG=1 shows tracebacks of internal errors).
"""

from __future__ import annotations

import functools
import io
import os
import sys
import tempfile
from typing import Callable, TypeVar

import click
from rich.console import Console
from rich.table import Table as RichTable

from . import __version__
from .compile import compile_intent
from .errors import BackendError, FwmatrixError
from .gcpause import gc_paused
from .intent import Intent, build_intent
from .loader import load_matrix, load_text
from .audit import SEVERITIES, AuditReport, audit, fail
from .report import as_json, markdown, print_review, print_table, review_json, review_markdown
from .review import review
from .targets import BACKENDS, backend, read_live, read_ruleset

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
F = TypeVar("F", bound=Callable[..., object])

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
        from .errors import did_you_mean

        raise FwmatrixError(f"no firewall named '{firewall}' in the matrix{did_you_mean(firewall, intent.firewalls)}; it has: {', '.join(intent.firewalls)}", matrix_path)
    return intent


def _backends(name: str) -> tuple[str, ...]:
    return BACKENDS if name == "all" else (name,)


def _rendered(intent: Intent, firewall: str | None, backend_names: tuple[str, ...]) -> dict[str, str]:
    """file name -> text, for every selected firewall and backend."""
    files: dict[str, str] = {}
    for fw_name, ruleset in compile_intent(intent).items():
        if firewall is not None and fw_name != firewall:
            continue
        for name in backend_names:
            for suffix, text in backend(name).render_files(ruleset).items():
                files[f"{fw_name}{suffix}"] = text
    return files


def write_file_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    write_atomically(directory, {os.path.basename(path): text})


def write_atomically(directory: str, files: dict[str, str]) -> None:
    """Each file appears whole or not at all: written aside, then renamed into place."""
    os.makedirs(directory, exist_ok=True)
    staged: list[tuple[str, str]] = []
    try:
        for name, text in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
            staged.append((tmp, os.path.join(directory, name)))
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
firewall_option = click.option("--firewall", "-f", metavar="NAME", help="Only this firewall (default: every firewall in the matrix).")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fwmatrix")
def main() -> None:
    """fwmatrix: a firewall connectivity matrix kept as data.

    The matrix (YAML, see docs/matrix-format.md) says who may talk to whom, on
    which ports, through which NAT. fwmatrix compiles it into rulesets, one per
    firewall the traffic crosses.

    Exit codes: 0 ok, 1 findings or a failed check, 2 usage or input error.
    """


@main.command("compile")
@matrix_argument
@firewall_option
@click.option("--backend", "-b", "backend_name", type=click.Choice(BACKENDS + ("all",)), default="nftables", show_default=True, help="Ruleset syntax.")
@click.option("--output", "-o", metavar="DIR|-", default="-", show_default=True, help="Directory to write FIREWALL.SUFFIX files into, or - for standard output.")
@user_errors
def compile_command(matrix: str, firewall: str | None, backend_name: str, output: str) -> None:
    """Compile MATRIX into a ruleset for each firewall."""
    files = _rendered(_intent(matrix, firewall), firewall, _backends(backend_name))
    if output == "-":
        for text in files.values():
            click.echo(text, nl=False)
        return
    write_atomically(output, files)
    for name in files:
        err_console.print(f"wrote {os.path.join(output, name)}", highlight=False)


@main.command("check")
@matrix_argument
@firewall_option
@click.option("--backend", "-b", "backend_name", type=click.Choice(BACKENDS + ("all",)), default="all", show_default=True, help="Which backends' output to validate.")
@click.option("--no-kernel", is_flag=True, help="Skip the validation by the backends' own tools (nft -c ...).")
@user_errors
def check_command(matrix: str, firewall: str | None, backend_name: str, no_kernel: bool) -> None:
    """Load and validate MATRIX; check the compiled rulesets with the targets' own tools.

    The rulesets are checked in a private network namespace (nft -c, as root
    or through an unprivileged user namespace), so nothing is loaded."""
    console = _console()
    intent = _intent(matrix, firewall)
    m = intent.matrix
    console.print(f"[green]✓[/] {matrix}: matrix '{m.name}' is valid — {len(m.zones)} zones, {len(m.hosts)} hosts, {len(m.services)} services, {len(m.firewalls)} firewalls, {len(m.openings)} openings")
    for warning in intent.warnings:
        console.print(f"[yellow]![/] {warning.where}: {warning.message}")
    failed = False
    rulesets = compile_intent(intent)
    for fw_name, ruleset in rulesets.items():
        if firewall is not None and fw_name != firewall:
            continue
        fw = intent.firewalls[fw_name]
        console.print(f"  firewall '{fw_name}': {len(fw.flows)} flows on {len(fw.interface_pairs)} interface pairs, {len(fw.dnats)} DNAT mappings")
        for name in _backends(backend_name):
            module = backend(name)
            files = module.render_files(ruleset)
            if no_kernel:
                continue
            try:
                problems = module.check_files(files)
            except BackendError as exc:
                console.print(f"  [yellow]?[/] {name}: not checked ({exc})")
                continue
            if problems:
                failed = True
                console.print(f"  [red]✗[/] {name}: the target refuses the ruleset:")
                for line in problems[:20]:
                    console.print(f"      {line}", markup=False)
            else:
                console.print(f"  [green]✓[/] {name}: {', '.join(f'{fw_name}{s}' for s in files)} accepted by the target's checker")
    sys.exit(EXIT_FINDINGS if failed else EXIT_OK)


@main.command("show")
@matrix_argument
@firewall_option
@user_errors
def show_command(matrix: str, firewall: str | None) -> None:
    """Show MATRIX as a table, like the connectivity matrix of a design document,
    with the firewalls and interfaces each opening is placed on."""
    intent = _intent(matrix, firewall)
    m = intent.matrix
    from .resolve import Resolver

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


@main.command("audit")
@matrix_argument
@click.option("--firewall", "-f", metavar="NAME", help="The firewall whose ruleset this is (may be left out when the matrix has one).")
@click.option("--live", is_flag=True, help="Read the running kernel's ruleset (on the firewall itself; needs root).")
@click.option("--ruleset", "-r", "ruleset_path", metavar="FILE", type=click.Path(dir_okay=False), help="A saved ruleset: nft -j list ruleset, a .nft file, iptables-save output, or pf.conf.")
@click.option("--backend", "-b", "backend_name", type=click.Choice(("auto",) + BACKENDS), default="auto", show_default=True, help="What wrote the ruleset (auto: guess from its text).")
@click.option("--format", "fmt", type=click.Choice(("table", "json", "markdown")), default="table", show_default=True)
@click.option("--output", "-o", metavar="FILE", help="Write the report to FILE (atomically) instead of standard output.")
@click.option("--fail-on", type=click.Choice(SEVERITIES), default="low", show_default=True, help="Exit 1 when a finding is at least this severe.")
@user_errors
def audit_command(matrix: str, firewall: str | None, live: bool, ruleset_path: str | None, backend_name: str, fmt: str, output: str | None, fail_on: str) -> None:
    """Audit a firewall's live ruleset against MATRIX.

    Finds openings that are missing (or the part of them), traffic forwarded
    in excess (and the rule that forwards it), wrong or missing port
    forwards, replies that cannot come back, explicit openings from the DMZ
    towards the internet (never needed: replies pass by connection
    tracking), rules that can never match, and constructs fwmatrix cannot
    model. Exit 1 when a finding reaches --fail-on."""
    if live == (ruleset_path is not None):
        raise click.UsageError("give exactly one of --live or --ruleset FILE")
    intent = _intent(matrix, firewall)
    if firewall is None:
        if len(intent.firewalls) != 1:
            raise click.UsageError(f"the matrix has several firewalls ({', '.join(intent.firewalls)}): say which with --firewall")
        firewall = next(iter(intent.firewalls))
    if live:
        ruleset, source = read_live(backend_name), f"live ({'nftables' if backend_name == 'auto' else backend_name})"
    else:
        assert ruleset_path is not None
        ruleset, used = read_ruleset(ruleset_path, backend_name)
        source = f"{ruleset_path} ({used})"
    report = audit(intent, firewall, ruleset, source)
    if fmt == "table" and output is None:
        print_table(report, _console())
    else:
        text = as_json(report) if fmt == "json" else markdown(report) if fmt == "markdown" else _plain_table(report)
        if output is None:
            click.echo(text, nl=False)
        else:
            write_file_atomically(output, text)
    sys.exit(EXIT_FINDINGS if fail(report, fail_on) else EXIT_OK)


@main.command("diff")
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False), required=False)
@click.option("--git", "git_rev", metavar="REV", help="Compare OLD as it is at git revision REV with the working tree (NEW is then not given).")
@click.option("--backend", "-b", "backend_name", type=click.Choice(BACKENDS + ("all",)), default="nftables", show_default=True, help="Which rulesets to diff.")
@click.option("--format", "fmt", type=click.Choice(("table", "json", "markdown")), default="table", show_default=True)
@click.option("--output", "-o", metavar="FILE", help="Write the review to FILE (atomically) instead of standard output.")
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
    if fmt == "table" and output is None:
        print_review(result, _console())
    else:
        text = review_json(result) if fmt == "json" else review_markdown(result) if fmt == "markdown" else _recorded(lambda c: print_review(result, c))
        if output is None:
            click.echo(text, nl=False)
        else:
            write_file_atomically(output, text)
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
    console = Console(record=True, width=160, file=io.StringIO(), highlight=False)
    printer(console)
    return console.export_text()


def _plain_table(report: "AuditReport") -> str:
    console = Console(record=True, width=160, file=io.StringIO(), highlight=False)
    print_table(report, console)
    return console.export_text()


if __name__ == "__main__":  # pragma: no cover
    main()
