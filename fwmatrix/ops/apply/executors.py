"""Where the firewall tools run: an `Executor` on this host (the CLI, on the firewall
itself) or in a named network namespace (`ip netns exec`: tests and labs). A backup
records the executor's `target` and is only ever restored there.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fwmatrix.errors import BackendError, FwmatrixError
from fwmatrix.netns import tool_path


class Executor(Protocol):
    """Runs a firewall tool where the ruleset lives. `target` names the place ("host",
    "netns:NAME"); backups record it, and are restored only where they were taken."""

    @property
    def target(self) -> str: ...

    def run(self, argv: Sequence[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]: ...


def _run(argv: Sequence[str], full: list[str], stdin: str | None, check: bool, where: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BackendError(f"{' '.join(argv)}{where} did not finish within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip() or f"exit code {proc.returncode}"
        raise BackendError(f"{' '.join(argv)}{where} failed: {message}")
    return proc


@dataclass(frozen=True)
class HostExecutor:
    """This machine's own network namespace: the firewall itself."""

    timeout: float = 120.0

    @property
    def target(self) -> str:
        return "host"

    def run(self, argv: Sequence[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(argv, [tool_path(argv[0]), *argv[1:]], stdin, check, "", self.timeout)


@dataclass(frozen=True)
class NamespaceExecutor:
    """A named network namespace standing in for the firewall (`ip netns exec NAME ...`)."""

    name: str
    timeout: float = 120.0

    @property
    def target(self) -> str:
        return f"netns:{self.name}"

    def run(self, argv: Sequence[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        if not os.path.exists(f"/run/netns/{self.name}"):
            raise BackendError(f"there is no network namespace named {self.name!r}")
        return _run(argv, ["ip", "netns", "exec", self.name, tool_path(argv[0]), *argv[1:]], stdin, check, f" in namespace {self.name}", self.timeout)


def executor_for(target: str) -> Executor:
    """The executor a recorded target names."""
    if target == "host":
        return HostExecutor()
    if target.startswith("netns:"):
        return NamespaceExecutor(target.removeprefix("netns:"))
    raise FwmatrixError(f"unknown apply target {target!r}")
