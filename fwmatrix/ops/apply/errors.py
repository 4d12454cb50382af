"""What an apply, confirm or rollback raises when it is refused or fails (exit 1), or when
its state directory cannot be written (exit 2)."""

from __future__ import annotations

from fwmatrix.errors import BackendError, FwmatrixError


class ApplyError(BackendError):
    """The apply did not go through (the live ruleset is as it was), or was refused."""


class LockoutError(ApplyError):
    """The new ruleset would cut management access to the firewall."""


class LockedError(ApplyError):
    """Another apply, confirm or rollback holds the state directory."""


class NotArmedError(BackendError):
    """`confirm` found no armed rollback (exit 1: perhaps it fired already)."""


class RolledBackError(NotArmedError):
    """`confirm` came after the automatic rollback fired: the apply is undone."""


class StateDirError(FwmatrixError):
    """The state directory cannot be written (full, read-only): exit 2 when nothing was
    changed yet; after the load the apply is undone and fails (exit 1)."""
