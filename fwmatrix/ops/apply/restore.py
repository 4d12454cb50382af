"""Putting a saved ruleset back: after a failed apply (`recover`), and from a backup
(`restore_backup`: `fwmatrix rollback` and the automatic rollback). Both check that
it took, and hold interrupts until it is done.
"""

from __future__ import annotations

import time

from fwmatrix.errors import BackendError, FwmatrixError
from fwmatrix.ops import signals
from fwmatrix.ops.apply.drivers import DRIVERS, Driver, Own, Snapshot
from fwmatrix.ops.apply.executors import Executor
from fwmatrix.ops.apply.state import Backup, StateDir


NOT_CHANGED = "the live ruleset was not changed"
RESTORED = "the previous ruleset was restored"


def recover(driver: Driver, ex: Executor, snap: Snapshot, own: Own) -> str:
    """Put the backup back when what an apply touches differs from it; say what was done.
    Interrupts wait until it is done: a half-restored firewall is the one thing to avoid."""
    with signals.held():
        try:
            unchanged = driver.touched(driver.snapshot(ex), own) == driver.touched(snap, own)
        except FwmatrixError:
            unchanged = False  # cannot tell: restore to be sure
        if unchanged:
            return NOT_CHANGED
        driver.restore(ex, snap, own)
        if driver.touched(driver.snapshot(ex), own) != driver.touched(snap, own):
            raise BackendError("the previous ruleset could NOT be restored: run `fwmatrix rollback` and check the firewall")
        return RESTORED


def restore_backup(state: StateDir, ex: Executor, backup: Backup) -> float:
    """Restore a backup where it was taken and check that it took; the seconds it took."""
    if backup.meta.get("target") != ex.target:
        raise FwmatrixError(f"backup {backup.name} was taken on {backup.meta.get('target')}, not on {ex.target}: refusing to restore it here")
    driver = DRIVERS[backup.meta["backend"]]
    snap = backup.files()
    start = time.monotonic()
    with signals.held():
        driver.restore(ex, snap, backup.own)
        if driver.touched(driver.snapshot(ex), backup.own) != driver.touched(snap, backup.own):
            raise BackendError(f"restoring {backup.name} did not give back the saved ruleset: check the firewall")
    return time.monotonic() - start
