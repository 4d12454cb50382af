"""Network namespaces: private ones for checking rulesets, named ones for tests and labs.

Namespace names are shared by the whole machine, so every name made here
carries the pid and a random part, and only namespaces made here are deleted.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from fwmatrix.errors import BackendError

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def is_root() -> bool:
    return os.geteuid() == 0


def have(tool: str) -> bool:
    return shutil.which(tool) is not None or os.path.exists(f"/usr/sbin/{tool}")


def tool_path(tool: str) -> str:
    found = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    if found is None:
        raise BackendError(f"'{tool}' is not installed (on Debian: apt-get install nftables iptables ipset)")
    return found


def run_private(argv: list[str], stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command in a fresh, empty network namespace that vanishes with it.

    As root a plain network namespace; otherwise a user namespace too
    (`unshare -rn`), which lets nft and iptables-restore check a ruleset
    without privileges."""
    prefix = ["unshare", "-n"] if is_root() else ["unshare", "-rn"]
    argv = [tool_path(argv[0])] + argv[1:]
    try:
        return subprocess.run(prefix + argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise BackendError(f"cannot run {prefix[0]}: {exc}") from None


def unique_name(prefix: str = "fwm") -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass
class NetNamespace:
    """A named network namespace that this process created and will delete."""

    name: str = field(default_factory=unique_name)
    created: bool = False

    def __enter__(self) -> "NetNamespace":
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def create(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.created = True
        self.run(["ip", "link", "set", "lo", "up"])

    def delete(self) -> None:
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            self.created = False

    def run(self, argv: list[str], stdin: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ip", "netns", "exec", self.name] + argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise BackendError(f"{' '.join(argv)} in namespace {self.name} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` in a forked child that has entered this namespace; return its result."""
        return call_in_netns(f"/run/netns/{self.name}", fn)


def call_in_netns(ns_path: str, fn: Callable[[], T]) -> T:
    import pickle

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: enter the namespace, run, send the result back
        os.close(read_fd)
        status = 0
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(ns_path) as ns:
                if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({ns_path})")
            payload = pickle.dumps((True, fn()))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            payload = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
            status = 1
        with os.fdopen(write_fd, "wb") as out:
            out.write(payload)
        os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    ok, result = pickle.loads(data)
    if not ok:
        raise BackendError(str(result))
    return result
