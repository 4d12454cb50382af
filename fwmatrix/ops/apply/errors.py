"""What an apply, confirm or rollback raises when it is refused or fails (exit 1)."""

from __future__ import annotations

from fwmatrix.errors import BackendError


class ApplyError(BackendError):
    """The apply did not go through (the live ruleset is as it was), or was refused."""


class LockoutError(ApplyError):
    """The new ruleset would cut management access to the firewall."""


class LockedError(ApplyError):
    """Another apply, confirm or rollback holds the state directory."""


class NotArmedError(BackendError):
    """`confirm` found no armed rollback (exit 1: perhaps it fired already)."""
