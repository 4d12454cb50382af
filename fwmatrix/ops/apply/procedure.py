"""The three procedures on a firewall: `apply` (plan, show, back up, load, verify, arm
the automatic rollback; undo on any failure), `confirm` and `rollback`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from fwmatrix.errors import BackendError, FwmatrixError
from fwmatrix.ops import management  # management.check, looked up when called (tests replace it)
from fwmatrix.ops.apply.drivers import DRIVERS
from fwmatrix.ops.apply.errors import ApplyError, LockoutError, NotArmedError, RolledBackError, StateDirError
from fwmatrix.ops.apply.executors import Executor
from fwmatrix.ops.apply.plan import JUDGING_ERRORS, ApplyRequest, Checkpoint, Plan, StepTimer, load_request, make_plan
from fwmatrix.ops.apply.restore import NOT_CHANGED, recover, restore_backup
from fwmatrix.ops.apply.state import LOCK_WAIT, Backup, StateDir
from fwmatrix.ops.apply.timer import arm, disarm, settle_interrupted, stale_note, start_countdown
from fwmatrix.ops.management import AccessVerdict


@dataclass
class ApplyResult:
    plan: Plan
    applied: bool
    backup: Backup | None = None
    pending: dict | None = None
    access_live: list[AccessVerdict] = field(default_factory=list)  # management access on what the kernel runs now
    as_predicted: bool | None = None  # fwmatrix's part of the live ruleset is what the plan showed
    removed_backups: list[str] = field(default_factory=list)

    @property
    def timings(self) -> dict[str, float]:
        return self.plan.timings


def apply(request: ApplyRequest, ex: Executor, state: StateDir, *, show: Callable[[Plan], None] | None = None,
          checkpoint: Checkpoint | None = None) -> ApplyResult:
    """Plan, show, back up, record the rollback and start its timer, load, verify and
    (with request.confirm) arm the automatic rollback.

    Raises ApplyError (LockoutError, LockedError) when refused or failed; the live
    ruleset is then what it was. Checkpoints, in order: validated, planned, backed-up,
    recorded, guarded, load:TOOL (before each command of the load), loaded, verified,
    armed (with confirm), journaled. A kill -9 at any of them leaves the old ruleset running, or the new one with an armed rollback:
    from "recorded" on the record is on disk, and from "guarded" on its timer undoes an
    apply that dies (docs/apply.md, "An apply that is killed")."""
    step = checkpoint or (lambda name: None)
    intent, accesses, ruleset = load_request(request)
    driver = DRIVERS[request.backend]
    with contextlib.nullcontext() if request.dry_run else state.lock():
        pending = state.pending()
        interrupted = None
        interrupted = undone_by_timer(state)
        if pending is not None and pending.get("phase") == "loading":
            if request.dry_run:  # without the lock: that apply may still be running
                interrupted = (f"an apply started at {pending.get('started')} (pid {pending.get('apply_pid')}) is running or was "
                               f"interrupted; if interrupted, the next apply, confirm or rollback restores its backup {pending.get('backup')} first")
            else:
                interrupted = settle_interrupted(state, pending, by="apply")
                if interrupted is not None:
                    interrupted += "; this apply starts from there"
            pending = None
        if pending is not None and not request.dry_run:
            raise ApplyError(f"a rollback is armed (apply of {pending.get('armed')}, backup {pending.get('backup')}): "
                             f"run `{state.command('confirm')}` or `{state.command('rollback')}` first" + stale_note(pending))
        plan = make_plan(request, intent, accesses, ruleset, ex, step)
        if interrupted is not None:
            plan.notes.insert(0, interrupted)
        if pending is not None:
            plan.notes.append(f"a rollback is armed (backup {pending.get('backup')}): an apply waits for `{state.command('confirm')}` or `{state.command('rollback')}`")
        step("planned")
        if show is not None:
            show(plan)
        refusal = plan.refusal(request.force)
        if refusal is not None:
            raise (ApplyError if plan.problems else LockoutError)(refusal)
        if request.dry_run:
            return ApplyResult(plan, applied=False)
        timer = StepTimer(plan.timings)
        with timer("backup"):
            backup = state.save_backup(request.backend, ex.target, plan.snapshot, own=[list(t) for t in plan.own],
                                       firewall=request.firewall, matrix=os.path.abspath(request.matrix))
        result = ApplyResult(plan, applied=False, backup=backup)
        result.removed_backups = state.prune(max(1, request.keep))
        guard: dict | None = None  # the rollback recorded before the load, and its timer
        try:
            step("backed-up")
            with timer("arm"):
                guard = arm(state, backup, ex.target, request.confirm, request.timer, step=step)
            step("guarded")
            with timer("load"):
                driver.load(_Announcing(ex, step), plan.files)
            step("loaded")
            with timer("verify"):
                live = driver.snapshot(ex)
                result.as_predicted = driver.own_text(live, plan.own) == plan.own_after
                if accesses and driver.models_input:
                    try:
                        result.access_live = management.check(driver.parse(live), intent.matrix, request.firewall, accesses)
                    except JUDGING_ERRORS as exc:
                        if not request.force:  # forced: it could not be judged before the load either
                            raise LockoutError(f"management access on the ruleset the kernel now runs cannot be judged: {exc}") from exc
                    cut = [v for v in result.access_live if not v.kept]
                    if cut and not request.force:
                        raise LockoutError("the ruleset the kernel now runs cuts management access: " + "; ".join(map(str, cut)))
            step("verified")
            if request.confirm is not None:
                result.pending = start_countdown(state, guard)
                step("armed")
            state.journal("apply", firewall=request.firewall, backend=request.backend, target=ex.target, backup=backup.name,
                          confirm=request.confirm, token=guard["token"],
                          seconds={k: round(v, 4) for k, v in plan.timings.items()})
            step("journaled")
        except BaseException as exc:
            with timer("recover"):
                restored = recover(driver, ex, plan.snapshot, plan.own)
            if guard is not None:  # only now: had the recovery been killed, the timer would have finished it
                disarm(state, guard)
            with contextlib.suppress(FwmatrixError):  # a full disk must not hide what became of the ruleset
                state.journal("failed", firewall=request.firewall, backend=request.backend, target=ex.target,
                              backup=backup.name, error=f"{type(exc).__name__}: {exc}", restored=restored)
            if not isinstance(exc, Exception):
                raise  # an interrupt: the ruleset is back, the interrupt goes on
            if isinstance(exc, StateDirError) and restored == NOT_CHANGED:
                raise StateDirError(f"{exc}; nothing was changed") from None  # as before the backup: exit 2
            raise _undone(exc, restored) from exc
        if request.confirm is None:
            disarm(state, guard)  # done: the watchdog goes (the journal line tells a later look that it finished)
        result.applied = True
        return result


@dataclass(frozen=True)
class _Announcing:
    """The executor, calling the checkpoint `load:TOOL` before each command of the load: a
    load is several commands on iptables (ipsets, then each family), and tests kill between."""

    inner: Executor
    step: Checkpoint

    @property
    def target(self) -> str:
        return self.inner.target

    def run(self, argv: Sequence[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.step(f"load:{argv[0]}")
        return self.inner.run(argv, stdin, check)


def undone_by_timer(state: StateDir) -> str | None:
    """When the last thing that happened is a timer undoing an interrupted apply: say so."""
    last = state.last_event("apply", "rollback", "rollback-failed", "failed", "confirm")
    if last is None or last["event"] != "rollback" or last.get("by") != "timer":
        return None
    return f"{last['reason']}: its rollback timer put back backup {last.get('backup')} at {last['time']}"


def _undone(exc: Exception, restored: str) -> ApplyError:
    """The error to raise for a failed step, saying what became of the ruleset."""
    if isinstance(exc, StateDirError):
        return ApplyError(f"apply failed: {exc}; {restored}")
    if isinstance(exc, ApplyError):
        return type(exc)(f"apply {'refused' if isinstance(exc, LockoutError) else 'failed'}: {exc}; {restored}")
    return ApplyError(f"apply failed: {type(exc).__name__}: {exc}; {restored}")


# -- confirm and rollback ------------------------------------------------------------------------


@contextlib.contextmanager
def _done_but(done: str) -> Iterator[None]:
    """A journal line that cannot be written after the deed: say that the deed was done."""
    try:
        yield
    except StateDirError as exc:
        raise StateDirError(f"{done}, but {exc}") from None


def confirm(state: StateDir, checkpoint: Checkpoint | None = None) -> dict:
    """Keep the applied ruleset: cancel the armed rollback. Returns what was armed.
    An apply that was interrupted before it was verified cannot be confirmed: it is undone."""
    step = checkpoint or (lambda name: None)
    if not state.used():  # no apply ever armed anything here: say so, and create nothing
        raise NotArmedError(f"nothing to confirm: no rollback is armed in {state.root} (no apply has used it; "
                            "an apply run with --state-dir DIR is confirmed with --state-dir DIR)")
    with state.lock(wait=LOCK_WAIT):
        pending = state.pending()
        if pending is not None and pending.get("phase") == "loading":
            said = settle_interrupted(state, pending, by="confirm")
            if said is not None:
                raise NotArmedError(f"nothing to confirm: {said}")
            pending = state.pending()
        if pending is None:
            fired = state.last_event("rollback", "rollback-failed")
            last_apply = state.last_event("apply")
            if fired and (last_apply is None or fired["time"] > last_apply["time"]):
                raise RolledBackError(f"nothing to confirm: the apply was rolled back at {fired['time']} "
                                    f"({fired.get('reason', 'on demand')}, backup {fired.get('backup')})")
            raise NotArmedError(f"nothing to confirm: no rollback is armed in {state.root}")
        state.clear_pending()
        step("confirm-cleared")  # killed here: the timer finds no record and ends; the ruleset stays
        disarm(state, pending)
        with _done_but("confirmed: the rollback is cancelled"):
            state.journal("confirm", backup=pending["backup"], target=pending["target"], token=pending["token"],
                          after=round(time.time() - (float(pending["deadline"]) - float(pending["seconds"])), 3))
        return pending


@dataclass(frozen=True)
class RollbackResult:
    backup: Backup
    seconds: float
    cancelled: dict | None  # the armed rollback this one replaced
    interrupted: str | None = None  # what became of an interrupted apply found first


def rollback(state: StateDir, ex: Executor, name: str | None = None) -> RollbackResult:
    """Restore the newest backup (or the one named) now; an armed rollback is cancelled,
    an interrupted apply undone first."""
    if not state.used():  # nothing was ever saved here: say so, and create nothing
        raise FwmatrixError(f"no backup to roll back to: {state.root} does not exist (no apply has used it)")
    with state.lock(wait=LOCK_WAIT):
        pending = state.pending()
        interrupted = None
        interrupted = undone_by_timer(state)
        if pending is not None and pending.get("phase") == "loading":
            try:
                interrupted = settle_interrupted(state, pending, by="rollback")
            except BackendError as exc:  # its backup cannot come back: the one asked for may (the record goes with it)
                interrupted = str(exc)
        backup = state.backup(name) if name else state.latest()
        if backup is None:
            raise FwmatrixError(f"no backup to roll back to in {state.backups}")
        pending = state.pending()
        seconds = restore_backup(state, ex, backup)
        if pending is not None:
            disarm(state, pending)
        with _done_but(f"rolled back to {backup.name}"):
            state.journal("rollback", reason="on demand", backup=backup.name, target=ex.target, seconds=round(seconds, 4))
        return RollbackResult(backup, seconds, pending, interrupted)
