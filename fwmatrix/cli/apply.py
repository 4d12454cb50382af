"""The commands that change a firewall: `apply`, `confirm`, `rollback`.

They follow the conventions of fwmatrix/cli/common.py: one-line errors
through `user_errors`, exit 0 when all went well, 1 when a ruleset was
refused, an apply failed (the firewall then runs what it ran before), or
nothing was armed to confirm, 2 for usage and input errors (and when not run
as root).

`apply` and `rollback` act on this host's network namespace, the firewall
itself; `--netns NAME` points them at a network namespace instead (a lab,
the tests). docs/apply.md describes the whole procedure.
"""

from __future__ import annotations

import json
import os
import signal
import time

import click
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from fwmatrix.report.tables import Table

from fwmatrix.cli.common import firewall_option_saying, matrix_argument, require_root, stdout_console, user_errors
from fwmatrix.errors import BackendError
from fwmatrix.ops.apply import (
    DEFAULT_KEEP,
    DEFAULT_STATE_DIR,
    DRIVERS,
    TIMERS,
    ApplyRequest,
    ApplyResult,
    Checkpoint,
    Executor,
    HostExecutor,
    NamespaceExecutor,
    Plan,
    StateDir,
    apply,
    confirm,
    NotArmedError,
    RolledBackError,
    rollback,
)
from fwmatrix.ops.signals import interrupting

json_option = click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table", show_default=True,
                           help="table for people, json for tools (docs/apply.md, \"Output for tools\").")

state_dir_option = click.option("--state-dir", metavar="DIR", default=DEFAULT_STATE_DIR, show_default=True,
                                help="Where backups, the lock and the armed rollback live.")
netns_option = click.option("--netns", metavar="NAME", help="Act inside network namespace NAME instead of this host (labs, tests).")


def _executor(netns: str | None) -> Executor:
    return NamespaceExecutor(netns) if netns else HostExecutor()


def _test_stops() -> Checkpoint | None:
    """FWMATRIX_TEST_KILL_AT=STEP makes the process SIGKILL itself at that checkpoint,
    FWMATRIX_TEST_STOP_AT=STEP SIGSTOP itself (the test then looks, and kills it): how
    tests/test_apply.py proves that a kill -9 at any step leaves a known state."""
    stops = {os.environ.get("FWMATRIX_TEST_KILL_AT"): signal.SIGKILL, os.environ.get("FWMATRIX_TEST_STOP_AT"): signal.SIGSTOP}
    stops.pop(None, None)
    if not stops:
        return None

    def checkpoint(name: str) -> None:
        if name in stops:
            os.kill(os.getpid(), stops[name])

    return checkpoint


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# -- apply -------------------------------------------------------------------------------------


@click.command("apply")
@matrix_argument
@firewall_option_saying("The firewall this machine is.", required=True)
@click.option("--backend", "-b", "backend_name", type=click.Choice(tuple(DRIVERS)), default="nftables", show_default=True)
@click.option("--dry-run", is_flag=True, help="Validate and show what would change; change nothing.")
@click.option("--confirm", "confirm_seconds", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Roll back automatically unless `fwmatrix confirm` runs within SECONDS.")
@click.option("--force", is_flag=True, help="Apply even when management access to the firewall would be cut or cannot be judged.")
@state_dir_option
@click.option("--keep", type=click.IntRange(min=1), default=DEFAULT_KEEP, show_default=True, help="Backups kept in the state directory.")
@click.option("--timer", type=click.Choice(TIMERS), default="auto", show_default=True,
              help="What waits to roll back: a systemd-run timer, a detached process, or (auto) systemd where it runs.")
@netns_option
@click.option("--compiled", metavar="DIR", help="Load FIREWALL's files that `fwmatrix compile --out-dir DIR` wrote (on a controller) "
              "as they are, instead of compiling MATRIX here; MATRIX still judges them.")
@json_option
@user_errors
def apply_command(matrix: str, firewall: str, backend_name: str, dry_run: bool, confirm_seconds: float | None, force: bool,
                  state_dir: str, keep: int, timer: str, netns: str | None, compiled: str | None, fmt: str) -> None:
    """Apply MATRIX's ruleset for FIREWALL to this machine, safely.

    Validates the ruleset with the target's own tool, shows what changes
    (the audit findings it fixes, the diff of fwmatrix's own tables),
    refuses a ruleset that would cut the management access the matrix
    declares, saves the live ruleset, then loads the new one atomically.
    Any failure puts the previous ruleset back. With --confirm SECONDS the
    previous ruleset comes back by itself unless `fwmatrix confirm` runs in
    time, even if this session dies."""
    require_root("apply", "it reads and loads the kernel's ruleset")
    request = ApplyRequest(matrix, firewall, backend_name, dry_run, confirm_seconds, force, keep, timer, compiled)
    if fmt == "json":
        _apply_json(request, netns, state_dir)
        return
    console = stdout_console()
    with interrupting():
        result = apply(request, _executor(netns), StateDir(state_dir), show=lambda plan: print_plan(plan, console),
                       checkpoint=_test_stops())
    print_result(result, console, state_dir)


def _apply_json(request: ApplyRequest, netns: str | None, state_dir: str) -> None:
    """One JSON document on stdout once the plan is made, also when the apply is refused or
    fails (`error`; the one-line error and exit 1 follow as without --format json)."""
    from fwmatrix.report.apply import apply_json

    planned: list[Plan] = []
    try:
        with interrupting():
            result = apply(request, _executor(netns), StateDir(state_dir), show=planned.append, checkpoint=_test_stops())
    except BackendError as exc:
        if planned:
            click.echo(json.dumps(apply_json(planned[0], None, str(exc)), indent=2))
        raise
    click.echo(json.dumps(apply_json(result.plan, result, None), indent=2))


def print_plan(plan: Plan, console: Console) -> None:
    console.print(f"[bold]fwmatrix apply[/]: firewall [bold]{escape(plan.firewall)}[/], {plan.backend}, on {escape(plan.target)}")
    for note in plan.notes:
        console.print(f"[yellow]note[/]: {escape(note)}", soft_wrap=True)
    if plan.problems:
        console.print(f"[bold red]refused[/] by the {plan.backend} tools:")
        for problem in plan.problems:
            console.print(f"  {escape(problem)}", soft_wrap=True)
        return
    console.print(f"[green]validated[/]: the {plan.backend} tools accept the ruleset ({', '.join(sorted(plan.files))})")
    if plan.before is not None and plan.after is not None:
        console.print(f"live ruleset: {len(plan.before.findings)} findings against the matrix; "
                      f"after the apply (predicted): {len(plan.after.findings)}")
        _findings_table(console, "fixed by this apply", plan.fixed)
        _findings_table(console, "still there after the apply", plan.after.findings)
    for verdict in plan.access_after:
        before = next((v for v in plan.access_before if v.access.index == verdict.access.index), None)
        was = "" if before is None else f" (now: {'kept' if before.kept else 'already cut'})"
        style = "green" if verdict.kept else "bold red"
        console.print(f"management access [{style}]{'kept' if verdict.kept else 'CUT'}[/]: {escape(verdict.label)}{was}")
        for line in verdict.lost[:6]:
            console.print(f"  lost: {escape(line)}", soft_wrap=True)
    for text in plan.unjudged:
        console.print(f"management access [yellow]not judged[/]: {escape(text)}")
    diff = plan.diff
    if diff:
        console.print("fwmatrix's own part of the ruleset, live → after the apply:")
        console.print(Syntax(diff, "diff", theme="ansi_dark", background_color="default"))
    elif plan.own_after or plan.own_before:
        console.print("fwmatrix's own part of the ruleset does not change")


def _findings_table(console: Console, title: str, findings: list) -> None:
    if not findings:
        return
    table = Table(title=f"{title}: {len(findings)}", title_justify="left", show_lines=False)
    for column in ("kind", "severity", "finding", "opening / rule"):
        table.add_column(column, overflow="fold")
    for f in findings:
        where = f"{f.opening.name} (row {f.opening.index})" if f.opening is not None else f.rule
        table.add_row(f.kind, f.level, escape(f.message), escape(where))
    console.print(table)


def print_result(result: ApplyResult, console: Console, state_dir: str = DEFAULT_STATE_DIR) -> None:
    steps = ", ".join(f"{name} {_ms(s)}" for name, s in result.timings.items())
    if not result.applied:
        console.print(f"[bold]dry run[/]: nothing was changed ({steps})")
        return
    assert result.backup is not None
    console.print(f"[bold green]applied[/] in {_ms(result.timings.get('load', 0.0))} "
                  f"(steps: {steps}); previous ruleset saved as backup {result.backup.name}")
    if result.as_predicted is False:
        console.print("[yellow]note[/]: fwmatrix's part of the live ruleset differs from the plan's prediction; audit it")
    for verdict in result.access_live:
        console.print(f"management access on the live ruleset: {escape(str(verdict))}")
    if result.pending is not None:
        p = result.pending
        at = time.strftime("%H:%M:%S", time.localtime(float(p["deadline"])))
        how = f"systemd unit {p['unit']}" if p["timer"] == "systemd" else f"detached process {p['pid']}"
        console.print(f"[bold yellow]rollback armed[/]: run `{escape(StateDir(state_dir).command('confirm'))}` within {p['seconds']:g} s (before {at}), "
                      f"or backup {p['backup']} is restored ({how})")


# -- confirm and rollback ----------------------------------------------------------------------------


@click.command("confirm")
@state_dir_option
@json_option
@user_errors
def confirm_command(state_dir: str, fmt: str) -> None:
    """Keep the ruleset applied with --confirm: cancel its automatic rollback.

    Exits 1 when nothing is armed, e.g. because the rollback already fired."""
    require_root("confirm", "it cancels the rollback that root's apply armed")
    if fmt == "json":
        from fwmatrix.report.apply import confirm_json

        try:
            pending = confirm(StateDir(state_dir), checkpoint=_test_stops())
        except NotArmedError as exc:
            click.echo(json.dumps(confirm_json(None, str(exc), rolled_back=isinstance(exc, RolledBackError)), indent=2))
            raise
        click.echo(json.dumps(confirm_json(pending, None), indent=2))
        return
    pending = confirm(StateDir(state_dir), checkpoint=_test_stops())
    left = float(pending["deadline"]) - time.time()
    stdout_console().print(f"[bold green]confirmed[/]: the ruleset applied at {pending['armed']} stays "
                           f"(the rollback to {pending['backup']} was {left:.1f} s away)")


@click.command("rollback")
@state_dir_option
@click.option("--backup", "backup_name", metavar="NAME", help="Restore this backup (default: the newest).")
@netns_option
@user_errors
def rollback_command(state_dir: str, backup_name: str | None, netns: str | None) -> None:
    """Restore the previous ruleset now: the newest backup, or the one named.

    An armed automatic rollback is cancelled."""
    require_root("rollback", "it loads the kernel's ruleset")
    with interrupting():
        result = rollback(StateDir(state_dir), _executor(netns), backup_name)
    console = stdout_console()
    if result.interrupted is not None:
        console.print(f"[yellow]note[/]: {escape(result.interrupted)}", soft_wrap=True)
    console.print(f"[bold green]rolled back[/] to backup {result.backup.name} (taken {result.backup.meta.get('created')}) "
                  f"in {_ms(result.seconds)}")
    if result.cancelled is not None:
        console.print(f"the armed rollback of {result.cancelled['armed']} is cancelled")


COMMANDS = (apply_command, confirm_command, rollback_command)
