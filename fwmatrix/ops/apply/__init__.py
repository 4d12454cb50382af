"""Applying a compiled ruleset to a firewall, safely: `fwmatrix apply`, `confirm` and `rollback`.

An apply goes step by step, and a failure at any step leaves the firewall
running exactly what it ran before:

  1. render the firewall's ruleset and validate it with the target's own tool
     (`nft -c`, `iptables-restore --test` in a private network namespace;
     `pfctl -nf` on pf);
  2. read the live ruleset and plan: the audit findings the apply fixes (the
     live ruleset is audited, and so is the ruleset the firewall will run
     after the apply), the unified diff of fwmatrix's own part before and
     after, and whether each management access the matrix declares survives
     (anti-lockout: refused unless forced);
  3. save the live ruleset as a backup in the state directory, record the rollback
     (pending.json, fsync'd) and start its timer, which undoes the apply at once
     should the apply process die (kill -9) before it is done;
  4. load the new ruleset atomically (nftables: one `nft -f` transaction
     that replaces only fwmatrix's tables; iptables: the backend's own-chains
     apply, one `iptables-restore --noflush` per family; pf: `pfctl -f`);
  5. read the live ruleset back and judge management access again on what
     the kernel really runs;
  6. with a confirmation time, arm that timer: it restores the backup unless
     `fwmatrix confirm` runs in time; without, stop it. The timer is a process of its own (a
     daemon: double fork, new session; or a systemd-run timer where systemd
     runs), so it fires when the operator's SSH session dies with the firewall.

From step 3 on, any failure or interrupt reads the live ruleset and, when
what fwmatrix touches differs from the backup, restores the backup and
checks that it took. An apply that died with its record still on disk is
undone by its timer, or else by the next apply, confirm or rollback. A lock in the state directory keeps a second apply
(or a confirm or rollback) out while one runs.


Commands run through an `Executor`: on this host (the CLI, on the firewall
itself) or in a named network namespace (`ip netns exec`: tests and labs).
A backup records where it was taken and is only ever restored there.

The parts, each importing only those above it:

  errors.py      ApplyError, LockoutError, LockedError, NotArmedError, RolledBackError, StateDirError
  executors.py   where the tools run: HostExecutor, NamespaceExecutor
  drivers.py     each backend's apply steps: NftDriver, IptablesDriver, PfDriver (DRIVERS)
  state.py       the state directory: lock, backups, pending.json, journal
  plan.py        the request and the plan (steps 1 and 2)
  restore.py     putting a saved ruleset back, and checking that it took
  timer.py       the automatic rollback: arm, disarm, the detached or systemd timer, an interrupted apply
  procedure.py   apply (steps 3 to 6), confirm, rollback
  __main__.py    `python -m fwmatrix.ops.apply timer ...`: the timer process
"""

from __future__ import annotations

from fwmatrix.ops.apply.drivers import (
    DRIVERS, Driver, IptablesDriver, NftDriver, Own, PfDriver, Prediction, Snapshot, nft_blocks, own_tables,
)
from fwmatrix.ops.apply.errors import ApplyError, LockedError, LockoutError, NotArmedError, RolledBackError, StateDirError
from fwmatrix.ops.apply.executors import Executor, HostExecutor, NamespaceExecutor, executor_for
from fwmatrix.ops.apply.plan import DEFAULT_KEEP, ApplyRequest, Checkpoint, Plan, load_request, make_plan
from fwmatrix.ops.apply.procedure import ApplyResult, RollbackResult, apply, confirm, rollback
from fwmatrix.ops.apply.restore import recover, restore_backup
from fwmatrix.ops.apply.state import DEFAULT_STATE_DIR, LOCK_WAIT, Backup, StateDir
from fwmatrix.ops.apply.timer import (
    TIMERS, arm, disarm, run_timer, settle_interrupted, spawn_detached, start_countdown, systemd_argv, timer_argv, timer_kind,
)

__all__ = [
    "DEFAULT_KEEP", "DEFAULT_STATE_DIR", "DRIVERS", "LOCK_WAIT", "TIMERS",
    "ApplyError", "ApplyRequest", "ApplyResult", "Backup", "Checkpoint", "Driver", "Executor", "HostExecutor",
    "IptablesDriver", "LockedError", "LockoutError", "NamespaceExecutor", "NftDriver", "NotArmedError", "Own", "RolledBackError",
    "PfDriver", "Plan", "Prediction", "RollbackResult", "Snapshot", "StateDir", "StateDirError",
    "apply", "arm", "confirm", "disarm", "executor_for", "load_request", "make_plan", "nft_blocks", "own_tables",
    "recover", "restore_backup", "rollback", "run_timer", "settle_interrupted", "spawn_detached", "start_countdown",
    "systemd_argv", "timer_argv", "timer_kind",
]
