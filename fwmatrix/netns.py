"""Network namespaces: private ones for checking rulesets, named ones for tests and labs.

Namespace names are shared by the whole machine, so every name made here
carries the pid and a random part, and only namespaces made here are deleted.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import tempfile
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


def run_private(argv: list[str], stdin: str | None = None, timeout: float = 120, placeholders: "Placeholders | None" = None,
                cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command in a fresh, empty network namespace that vanishes with it.

    As root a plain network namespace; otherwise a user namespace too
    (`unshare -rn`), which lets nft and iptables-restore check a ruleset
    without privileges. With `placeholders`, its interfaces exist there as
    veth links, and its users and groups in a private mount namespace's
    /etc/passwd and /etc/group: a ruleset from another host loads as it
    would on that host, and the host sees none of it. `cwd`: the directory it runs in."""
    prefix = ["unshare", "-n"] if is_root() else ["unshare", "-rn"]
    argv = [tool_path(argv[0])] + argv[1:]
    try:
        if placeholders is None or placeholders.empty():
            return subprocess.run(prefix + argv, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        with tempfile.TemporaryDirectory(prefix="fwm-placeholders-") as scratch:
            setup = placeholders.write(scratch)
            return subprocess.run(prefix + ["-m", "sh", "-c", PLACEHOLDER_SCRIPT, "sh", *setup, *argv], input=stdin, capture_output=True, text=True,
                                  timeout=timeout, cwd=cwd)
    except FileNotFoundError as exc:
        raise BackendError(f"cannot run {prefix[0]}: {exc}") from None


# $1: an `ip -batch` file of placeholder links (or ""), $2/$3: passwd/group files to bind over /etc's
# (or ""); the rest is the command. unshare -m makes the mounts private to the namespace.
PLACEHOLDER_SCRIPT = (
    'set -e; [ -z "$1" ] || ip -batch "$1"; [ -z "$2" ] || mount --bind "$2" /etc/passwd; '
    '[ -z "$3" ] || mount --bind "$3" /etc/group; shift 3; exec "$@"'
)
IFNAME_RE = re.compile(r"[^\s/:]{1,15}\Z")  # what the kernel accepts as a link name (not . or ..)
ACCOUNT_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@$-]{0,31}\Z")
FIRST_PLACEHOLDER_ID = 3_900_000_000  # far from the ids rulesets write (uid_t is 32 bits)


@dataclass
class Placeholders:
    """Names a ruleset from another host refers to that this host may not have."""

    interfaces: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    accounts: bool = False  # own /etc/passwd and /etc/group, holding only the users and groups above
    ids: dict[str, dict[int, str]] = field(default_factory=dict)  # 'user'/'group' -> id given -> name

    def empty(self) -> bool:
        return not (self.interfaces or self.accounts)

    def add(self, kind: str, name: str) -> bool:
        """Add a name of kind 'interface', 'user' or 'group'; False if it is known or cannot be one."""
        names = {"interface": self.interfaces, "user": self.users, "group": self.groups}[kind]
        valid = IFNAME_RE.match(name) and name not in (".", "..") if kind == "interface" else ACCOUNT_RE.match(name)
        if not valid or name in names:
            return False
        names.add(name)
        return True

    def write(self, scratch: str) -> list[str]:
        """The files PLACEHOLDER_SCRIPT takes, written under `scratch`: its first three arguments."""
        links = passwd = group = ""
        if self.interfaces:
            links = os.path.join(scratch, "links")
            names = sorted(self.interfaces - {"lo"})
            peers = (peer for peer in (f"fwmpeer{i}" for i in range(2 * len(names) + 1)) if peer not in self.interfaces)
            with open(links, "w") as out:  # veth: the lab needs it anyway, where dummy may be missing
                out.writelines(f"link add {name} type veth peer name {next(peers)}\n" for name in names)
        if self.accounts:
            passwd, group = os.path.join(scratch, "passwd"), os.path.join(scratch, "group")
            self.ids["user"] = _accounts(passwd, self.users, lambda name, uid: f"{name}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin")
            self.ids["group"] = _accounts(group, self.groups, lambda name, gid: f"{name}:x:{gid}:")
        for path in (links, passwd, group):
            if path:
                os.chmod(path, 0o644)
        os.chmod(scratch, 0o755)
        return [links, passwd, group]


def _accounts(path: str, names: set[str], line: Callable[[str, int], str]) -> dict[int, str]:
    """An accounts file holding only `names` (not the host's: a name means what the ruleset's
    host made of it, and comes back by name): the ids given."""
    given = {FIRST_PLACEHOLDER_ID + i: name for i, name in enumerate(sorted(names))}
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(line(name, number) + "\n" for number, name in given.items())
    return given


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

    def run(self, argv: list[str], stdin: str | None = None, check: bool = True, timeout: float = 120,
            cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ip", "netns", "exec", self.name] + argv, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        if check and proc.returncode != 0:
            raise BackendError(f"{' '.join(argv)} in namespace {self.name} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def run_with_accounts(self, argv: list[str], stdin: str | None, placeholders: "Placeholders",
                          cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command here with the placeholders' users and groups (not its links: this
        namespace has its own) in a private mount namespace's /etc/passwd and /etc/group."""
        with tempfile.TemporaryDirectory(prefix="fwm-placeholders-") as scratch:
            _, passwd, group = placeholders.write(scratch)
            return self.run(["unshare", "-m", "sh", "-c", PLACEHOLDER_SCRIPT, "sh", "", passwd, group, *argv], stdin=stdin, check=False, cwd=cwd)

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
