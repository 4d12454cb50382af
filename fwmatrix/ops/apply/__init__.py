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
  3. save the live ruleset as a backup in the state directory;
  4. load the new ruleset atomically (nftables: one `nft -f` transaction
     that replaces only fwmatrix's tables; iptables: the backend's own-chains
     apply, one `iptables-restore --noflush` per family; pf: `pfctl -f`);
  5. read the live ruleset back and judge management access again on what
     the kernel really runs;
  6. with a confirmation time, arm a timer that restores the backup unless
     `fwmatrix confirm` runs in time. The timer is a process of its own (a
     daemon: double fork, new session; or a systemd-run timer where systemd
     runs), so it fires when the operator's SSH session dies with the firewall.

From step 3 on, any failure or interrupt reads the live ruleset and, when
what fwmatrix touches differs from the backup, restores the backup and
checks that it took. A lock in the state directory keeps a second apply
(or a confirm or rollback) out while one runs.

Commands run through an `Executor`: on this host (the CLI, on the firewall
itself) or in a named network namespace (`ip netns exec`: tests and labs).
A backup records where it was taken and is only ever restored there.

The state directory (default /var/lib/fwmatrix, mode 0700):

  lock                 the lock file (holds the pid of the holder)
  backups/<UTC time>-<backend>/
                       meta.json and the saved ruleset (ruleset.nft and ruleset.json;
                       iptables.save, ip6tables.save, ipset.save; pf.conf)
  pending.json         the armed rollback: token, backup, target, deadline, timer
  rollback.pid         the detached timer's pid
  rollback.log         what the detached timer wrote
  journal.jsonl        one JSON line per apply, confirm, rollback and failure
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

from fwmatrix.ops import signals
from fwmatrix.audit.findings import AuditReport, Finding, audit
from fwmatrix.compile.ruleset import compile_firewall
from fwmatrix.errors import BackendError, FwmatrixError, did_you_mean
from fwmatrix.audit.evaluate import EvaluationError
from fwmatrix.compile.intent import Intent, build_intent
from fwmatrix.ir import Ruleset
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.ops.management import AccessVerdict
from fwmatrix.ops.management import check as check_access
from fwmatrix.matrix.model import Management
from fwmatrix.netns import NetNamespace, have, run_private, tool_path, unique_name
from fwmatrix.targets import backend as backend_module

DEFAULT_STATE_DIR = "/var/lib/fwmatrix"
DEFAULT_KEEP = 10
TIMERS = ("auto", "detached", "systemd")
LOCK_WAIT = 30.0  # seconds confirm, rollback and the timer wait for a running apply
POLL = 0.1  # seconds between the timer's looks at pending.json

Snapshot = dict[str, str]  # saved file name -> text
Checkpoint = Callable[[str], None]  # called after each step of an apply; raising there fails that step (tests)
Own = tuple[tuple[str, str], ...]  # fwmatrix's own nftables tables: (family, name)


class ApplyError(BackendError):
    """The apply did not go through (the live ruleset is as it was), or was refused."""


class LockoutError(ApplyError):
    """The new ruleset would cut management access to the firewall."""


class LockedError(ApplyError):
    """Another apply, confirm or rollback holds the state directory."""


class NotArmedError(BackendError):
    """`confirm` found no armed rollback (exit 1: perhaps it fired already)."""


# -- where commands run ---------------------------------------------------------------------------


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


# -- the backends' apply steps --------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """The firewall's whole ruleset after the apply (IR), and fwmatrix's own part of it as text."""

    ruleset: Ruleset
    own_text: str


class Driver:
    """One backend's apply steps. `touched` is the normalised text of everything an apply
    may change: equal texts before and after mean the firewall runs what it ran."""

    name = ""
    models_input = True  # its live ruleset parses into input/output chains (anti-lockout can judge it)

    def render(self, ruleset: Ruleset) -> dict[str, str]:
        return backend_module(self.name).render_files(ruleset)

    def validate(self, ex: Executor, files: dict[str, str]) -> list[str]:
        return backend_module(self.name).check_files(files)

    def snapshot(self, ex: Executor) -> Snapshot:
        raise NotImplementedError

    def parse(self, snap: Snapshot) -> Ruleset:
        raise NotImplementedError

    def touched(self, snap: Snapshot, own: Own) -> str:
        raise NotImplementedError

    def own_text(self, snap: Snapshot, own: Own) -> str:
        return self.touched(snap, own)

    def predict(self, snap: Snapshot, files: dict[str, str], ruleset: Ruleset, own: Own) -> Prediction:
        raise NotImplementedError

    def load(self, ex: Executor, files: dict[str, str]) -> None:
        raise NotImplementedError

    def restore(self, ex: Executor, snap: Snapshot, own: Own) -> None:
        raise NotImplementedError


TABLE_HEAD_RE = re.compile(r"table (\S+) (\S+) \{\Z")


def nft_blocks(listing: str) -> dict[tuple[str, str], str]:
    """`nft list ruleset` text -> each table's block (from `table F N {` to its closing `}`)."""
    blocks: dict[tuple[str, str], str] = {}
    current: tuple[str, str] | None = None
    lines: list[str] = []
    for line in listing.splitlines():
        if current is None:
            head = TABLE_HEAD_RE.match(line)
            if head:
                current, lines = (head[1], head[2]), [line]
        else:
            lines.append(line)
            if line == "}":
                blocks[current] = "\n".join(lines) + "\n"
                current = None
    return blocks


class NftDriver(Driver):
    """nftables: the script replaces fwmatrix's own tables in one transaction; a restore
    replaces them (or removes them) the same way, and never touches other tables."""

    name = "nftables"
    LISTING, JSON = "ruleset.nft", "ruleset.json"

    def snapshot(self, ex: Executor) -> Snapshot:
        return {self.LISTING: ex.run(["nft", "list", "ruleset"]).stdout, self.JSON: ex.run(["nft", "-j", "list", "ruleset"]).stdout}

    def parse(self, snap: Snapshot) -> Ruleset:
        from fwmatrix.backends import nftables

        return nftables.parse_json(snap[self.JSON])

    def touched(self, snap: Snapshot, own: Own) -> str:
        blocks = nft_blocks(snap[self.LISTING])
        return "".join(blocks.get(table, "") for table in own)

    def predict(self, snap: Snapshot, files: dict[str, str], ruleset: Ruleset, own: Own) -> Prediction:
        from fwmatrix.backends.nftables import SUFFIX

        # fwmatrix's tables as the kernel lists them: loaded alone into a private namespace
        proc = run_private(["sh", "-c", '"$0" -f - && "$0" list ruleset', tool_path("nft")], stdin=files[SUFFIX])
        if proc.returncode != 0:
            raise BackendError(f"nft refused the ruleset: {proc.stderr.strip()}")
        blocks = nft_blocks(proc.stdout)
        others = tuple(t for t in self.parse(snap).tables if (t.family, t.name) not in own)
        return Prediction(Ruleset(others + ruleset.tables, ruleset.header), "".join(blocks.get(t, "") for t in own))

    def load(self, ex: Executor, files: dict[str, str]) -> None:
        from fwmatrix.backends.nftables import SUFFIX

        ex.run(["nft", "-f", "-"], stdin=files[SUFFIX])

    def restore(self, ex: Executor, snap: Snapshot, own: Own) -> None:
        blocks = nft_blocks(snap[self.LISTING])
        script = "".join(f"table {f} {n} {{}}\ndelete table {f} {n}\n" + blocks.get((f, n), "") for f, n in own)
        ex.run(["nft", "-f", "-"], stdin=script)


COUNTERS_RE = re.compile(r"\s*\[\d+:\d+\]\Z")


class IptablesDriver(Driver):
    """iptables (own-chains mode): the apply changes fwmatrix's FWM-* chains, the jumps to
    them, the policies of built-in chains and fwmatrix's ipsets; a restore puts back the
    whole nat and filter tables of each family (iptables-restore, atomic per table) and
    fwmatrix's ipsets, and leaves other tables (mangle, raw) and other sets alone."""

    name = "iptables"
    SAVES: ClassVar[dict[int, str]] = {4: "iptables.save", 6: "ip6tables.save"}
    IPSETS = "ipset.save"
    TABLES = ("nat", "filter")

    def snapshot(self, ex: Executor) -> Snapshot:
        from fwmatrix.backends.iptables import SAVE_TOOL

        snap = {self.SAVES[family]: ex.run([tool]).stdout for family, tool in SAVE_TOOL.items()}
        ipsets = ex.run(["ipset", "save"], check=False) if have("ipset") else None
        snap[self.IPSETS] = ipsets.stdout if ipsets is not None and ipsets.returncode == 0 else ""
        return snap

    def parse(self, snap: Snapshot) -> Ruleset:
        from fwmatrix.backends.iptables import SAVE_TOOL, parse_save

        tables = []
        for family, name in self.SAVES.items():
            tables += parse_save(snap[name], family, SAVE_TOOL[family], snap.get(self.IPSETS) or None).tables
        return Ruleset(tuple(tables))

    def _tables(self, snap: Snapshot) -> Iterator[tuple[int, str, list[str]]]:
        """(family, table, its lines without counters) for nat and filter; a table that is
        empty (built-in chains accepting, nothing else) is the same as no table."""
        from fwmatrix.backends.iptables import (
            _sections,  # the backend's reader of restore/save sections
        )

        for family, name in self.SAVES.items():
            sections = _sections(snap[name])
            for table in self.TABLES:
                lines = [COUNTERS_RE.sub("", line) for line in sections.get(table, [])]
                if not all(line.startswith(":") and line.split()[1] == "ACCEPT" for line in lines):
                    yield family, table, lines

    def _own_sets(self, snap: Snapshot) -> dict[str, list[str]]:
        """fwmatrix's ipsets in an `ipset save` text: name -> its create line, then its add lines."""
        from fwmatrix.backends.iptables import SET_PREFIX

        sets: dict[str, list[str]] = {}
        for line in snap.get(self.IPSETS, "").splitlines():
            words = line.split()
            if len(words) > 1 and words[0] in ("create", "add") and words[1].startswith(tuple(SET_PREFIX.values())):
                sets.setdefault(words[1], []).append(line)
        return sets

    def touched(self, snap: Snapshot, own: Own) -> str:
        out = [f"*{table} (IPv{family})\n" + "".join(f"{line}\n" for line in lines) for family, table, lines in self._tables(snap)]
        out += ["".join(f"{line}\n" for line in sorted(lines)) for _, lines in sorted(self._own_sets(snap).items())]
        return "".join(out)

    def own_text(self, snap: Snapshot, own: Own) -> str:
        from fwmatrix.backends.iptables import CHAIN_PREFIX

        out = []
        for family, table, lines in self._tables(snap):
            mine = [line for line in lines if line.startswith((f":{CHAIN_PREFIX}", f"-A {CHAIN_PREFIX}"))
                    or (line.startswith(":") and line.split()[1] != "-") or line.endswith(f"-j {CHAIN_PREFIX}{line.split()[1]}")]
            if mine:
                out.append(f"*{table} (IPv{family})\n" + "".join(f"{line}\n" for line in mine))
        out += ["".join(f"{line}\n" for line in lines) for _, lines in sorted(self._own_sets(snap).items())]
        return "".join(out)

    def predict(self, snap: Snapshot, files: dict[str, str], ruleset: Ruleset, own: Own) -> Prediction:
        """Replay: the live ruleset and the apply, in a scratch network namespace, read back."""
        from fwmatrix.backends import iptables

        with NetNamespace(unique_name("fwmapply")) as scratch:
            ex = NamespaceExecutor(scratch.name)
            if snap.get(self.IPSETS, "").strip():
                ex.run(["ipset", "restore"], stdin=snap[self.IPSETS])
            for family, name in self.SAVES.items():
                if snap[name].strip():
                    ex.run([iptables.RESTORE_TOOL[family]], stdin=snap[name])
            iptables.apply(files, ex.run)
            after = self.snapshot(ex)
        return Prediction(self.parse(after), self.own_text(after, own))

    def load(self, ex: Executor, files: dict[str, str]) -> None:
        from fwmatrix.backends import iptables

        iptables.apply(files, ex.run)

    def restore(self, ex: Executor, snap: Snapshot, own: Own) -> None:
        from fwmatrix.backends.iptables import BUILTINS, RESTORE_TOOL, SET_PREFIX, _sections

        saved = self._own_sets(snap)
        existing = set(ex.run(["ipset", "list", "-n"], check=False).stdout.split()) if have("ipset") else set()
        script: list[str] = []
        for name, lines in saved.items():  # sets first: the restored rules may use them
            create, adds = lines[0], lines[1:]
            if name not in existing:
                script += [create, *adds]
                continue
            scratch = f"fwm-rb-{uuid.uuid4().hex[:12]}"  # filled aside and swapped in, as the apply does
            script += [create.replace(f"create {name} ", f"create {scratch} ", 1)]
            script += [a.replace(f"add {name} ", f"add {scratch} ", 1) for a in adds]
            script += [f"swap {scratch} {name}", f"destroy {scratch}"]
        if script:
            ex.run(["ipset", "restore"], stdin="\n".join(script) + "\n")
        for family, name in self.SAVES.items():
            sections = _sections(snap[name])
            text: list[str] = []
            for table in self.TABLES:
                lines = sections.get(table) or [f":{chain} ACCEPT [0:0]" for chain in BUILTINS[table]]
                text += [f"*{table}", *lines, "COMMIT"]
            ex.run([RESTORE_TOOL[family]], stdin="\n".join(text) + "\n")
        for name in ex.run(["ipset", "list", "-n"], check=False).stdout.split() if have("ipset") else ():
            if name.startswith(tuple(SET_PREFIX.values())) and name not in saved:
                ex.run(["ipset", "destroy", name])


class PfDriver(Driver):
    """pf: fwmatrix's pf.conf is the firewall's whole main ruleset (`pfctl -f`). The backup
    is the running ruleset as pfctl lists it (tables, translation and filter rules), loaded
    back with `pfctl -f`. Not runnable on Linux: tested with a fake executor only."""

    name = "pf"
    models_input = False  # the parsed pf ruleset holds forwarding only
    CONF = "pf.conf"

    def validate(self, ex: Executor, files: dict[str, str]) -> list[str]:
        from fwmatrix.backends.pf import SUFFIX

        problems = backend_module(self.name).check_files(files)
        proc = ex.run(["pfctl", "-nf", "-"], stdin=files[SUFFIX], check=False)
        if proc.returncode != 0:
            problems += [f"pfctl -nf: {line}" for line in (proc.stderr or proc.stdout).splitlines() if line.strip()] or [f"pfctl -nf failed ({proc.returncode})"]
        return problems

    def snapshot(self, ex: Executor) -> Snapshot:
        parts = []
        for name in ex.run(["pfctl", "-sT"], check=False).stdout.split():
            members = ex.run(["pfctl", "-t", name, "-T", "show"]).stdout.split()
            parts.append(f"table <{name}> {{ {' '.join(members)} }}")
        parts.append(ex.run(["pfctl", "-sn"], check=False).stdout.rstrip())  # FreeBSD: translation first
        parts.append(ex.run(["pfctl", "-sr"]).stdout.rstrip())
        return {self.CONF: "\n".join(p for p in parts if p) + "\n"}

    def parse(self, snap: Snapshot) -> Ruleset:
        from fwmatrix.backends.pf import parse_ruleset

        return parse_ruleset(snap[self.CONF], "pfctl -sr")

    def touched(self, snap: Snapshot, own: Own) -> str:
        return snap[self.CONF]

    def predict(self, snap: Snapshot, files: dict[str, str], ruleset: Ruleset, own: Own) -> Prediction:
        from fwmatrix.backends.pf import SUFFIX, parse_ruleset

        return Prediction(parse_ruleset(files[SUFFIX], "the new pf.conf"), files[SUFFIX])

    def load(self, ex: Executor, files: dict[str, str]) -> None:
        from fwmatrix.backends.pf import SUFFIX

        ex.run(["pfctl", "-f", "-"], stdin=files[SUFFIX])

    def restore(self, ex: Executor, snap: Snapshot, own: Own) -> None:
        ex.run(["pfctl", "-f", "-"], stdin=snap[self.CONF])


DRIVERS: dict[str, Driver] = {d.name: d for d in (NftDriver(), IptablesDriver(), PfDriver())}


def own_tables(ruleset: Ruleset) -> Own:
    return tuple((t.family, t.name) for t in ruleset.tables)


# -- the state directory --------------------------------------------------------------------------


@dataclass(frozen=True)
class Backup:
    path: Path
    meta: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def own(self) -> Own:
        return tuple((f, n) for f, n in self.meta.get("own", []))

    def files(self) -> Snapshot:
        return {name: (self.path / name).read_text(encoding="utf-8") for name in self.meta["files"]}


class StateDir:
    def __init__(self, root: str | os.PathLike[str] = DEFAULT_STATE_DIR):
        self.root = Path(root)
        self.backups = self.root / "backups"
        self.pending_path = self.root / "pending.json"
        self.pid_path = self.root / "rollback.pid"
        self.log_path = self.root / "rollback.log"
        self.journal_path = self.root / "journal.jsonl"

    def ensure(self) -> None:
        try:
            self.backups.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.root, 0o700)  # rulesets and the timer's token are root's business
        except OSError as exc:
            raise FwmatrixError(f"cannot use the state directory {self.root}: {exc.strerror or exc}") from None

    @contextlib.contextmanager
    def lock(self, wait: float = 0.0) -> Iterator[None]:
        """Hold the state directory (fcntl), or fail at once (wait=0) or after `wait` seconds."""
        self.ensure()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                        raise LockedError(f"another fwmatrix apply, confirm or rollback is running (pid {holder}, lock {self.root / 'lock'})") from None
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    # backups

    def save_backup(self, backend: str, target: str, snap: Snapshot, **meta: object) -> Backup:
        """Write a backup whole or not at all: into a hidden directory, then renamed."""
        self.ensure()
        now = time.time()
        name = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z-{backend}"
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=self.backups))
        try:
            info = {"backend": backend, "target": target, "created": _iso(now), "files": sorted(snap), **meta}
            for file_name, text in {**snap, "meta.json": json.dumps(info, indent=2) + "\n"}.items():
                with open(staging / file_name, "w", encoding="utf-8") as out:
                    out.write(text)
                    out.flush()
                    os.fsync(out.fileno())
            os.rename(staging, self.backups / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.backup(name)

    def backup(self, name: str) -> Backup:
        names = self.backup_names()
        path = self.backups / name
        try:
            if name not in names:  # only a backup of this directory, never a path elsewhere
                raise FileNotFoundError(name)
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise FwmatrixError(f"no backup named {name!r} in {self.backups}{did_you_mean(name, names)}") from None
        return Backup(path, meta)

    def backup_names(self) -> list[str]:
        """Oldest first (names start with their UTC time)."""
        if not self.backups.is_dir():
            return []
        return sorted(p.name for p in self.backups.iterdir() if p.is_dir() and not p.name.startswith("."))

    def latest(self) -> Backup | None:
        names = self.backup_names()
        return self.backup(names[-1]) if names else None

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest `keep` backups (never the one an armed rollback needs)."""
        pending = self.pending()
        needed = pending.get("backup") if pending else None
        names = self.backup_names()
        removed = [n for n in names[: max(0, len(names) - keep)] if n != needed]
        for name in removed:
            shutil.rmtree(self.backups / name, ignore_errors=True)
        return removed

    # the armed rollback

    def pending(self) -> dict | None:
        try:
            return json.loads(self.pending_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise FwmatrixError(f"cannot read {self.pending_path}: {exc.strerror or exc}") from None
        except ValueError:
            raise FwmatrixError(f"{self.pending_path} is not valid JSON: remove it once no rollback timer runs") from None

    def write_pending(self, pending: dict) -> None:
        self.ensure()
        _write_json(self.pending_path, pending)

    def clear_pending(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pending_path.unlink()

    def journal(self, event: str, **fields: object) -> None:
        self.ensure()
        with open(self.journal_path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"time": _iso(time.time()), "event": event, **fields}) + "\n")

    def last_event(self, *events: str) -> dict | None:
        try:
            lines = self.journal_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return None
        for line in reversed(lines):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") in events:
                    return entry
        return None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _write_json(path: Path, data: dict) -> None:
    """Replace a state file whole (a reader sees the old or the new one), private to root:
    pending.json holds the token that lets a timer roll back."""
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(data, indent=2) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(staged, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        raise


# -- planning -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyRequest:
    matrix: str
    firewall: str
    backend: str = "nftables"
    dry_run: bool = False
    confirm: float | None = None  # seconds until the automatic rollback
    force: bool = False  # apply even when management access would be cut or cannot be judged
    keep: int = DEFAULT_KEEP  # backups kept
    timer: str = "auto"  # auto, detached or systemd


@dataclass
class Plan:
    firewall: str
    backend: str
    target: str
    files: dict[str, str]
    own: Own
    problems: list[str]  # what the target's own tool refused
    snapshot: Snapshot = field(default_factory=dict)
    before: AuditReport | None = None  # the live ruleset against the matrix
    after: AuditReport | None = None  # the predicted ruleset against the matrix
    own_before: str = ""
    own_after: str = ""
    access_before: list[AccessVerdict] = field(default_factory=list)
    access_after: list[AccessVerdict] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)  # management accesses that could not be judged, and why
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def diff(self) -> str:
        if self.own_before == self.own_after:
            return ""
        name = f"{self.firewall}.{self.backend}"
        return "".join(difflib.unified_diff(self.own_before.splitlines(keepends=True), self.own_after.splitlines(keepends=True),
                                            f"{name} (live)", f"{name} (after the apply)"))

    @property
    def fixed(self) -> list[Finding]:
        """Findings against the live ruleset that the predicted ruleset no longer has."""
        if self.before is None or self.after is None:
            return []
        left = {_finding_key(f) for f in self.after.findings}
        return [f for f in self.before.findings if _finding_key(f) not in left]

    @property
    def cuts(self) -> list[AccessVerdict]:
        return [v for v in self.access_after if not v.kept]

    def refusal(self, force: bool) -> str | None:
        """Why the plan must not be applied (None: it may)."""
        if self.problems:
            return f"the {self.backend} tools refuse the ruleset: " + "; ".join(self.problems[:5])
        if force:
            return None
        if self.cuts:
            return "the new ruleset would cut management access: " + "; ".join(str(v) for v in self.cuts) + " (--force applies it anyway)"
        if self.unjudged:
            return "management access cannot be judged: " + "; ".join(self.unjudged) + " (--force applies it anyway)"
        return None


def _finding_key(f: Finding) -> tuple:
    return (f.kind, f.opening.index if f.opening else None, f.message, f.rule)


def load_request(request: ApplyRequest) -> tuple[Intent, tuple[Management, ...], Ruleset]:
    intent = build_intent(load_matrix(request.matrix))
    if request.firewall not in intent.firewalls:
        raise FwmatrixError(f"no firewall named '{request.firewall}' in the matrix{did_you_mean(request.firewall, intent.firewalls)}; "
                            f"it has: {', '.join(intent.firewalls)}", request.matrix)
    if request.backend not in DRIVERS:
        raise FwmatrixError(f"unknown backend {request.backend!r}; choose one of {', '.join(DRIVERS)}")
    return intent, intent.matrix.firewalls[request.firewall].management, compile_firewall(intent, intent.firewalls[request.firewall])


JUDGING_ERRORS = (FwmatrixError, EvaluationError)  # a ruleset that cannot be read or judged
T = TypeVar("T")


def _or_note(notes: list[str], cannot: str, call: Callable[[], T]) -> T | None:
    """What `call` gives, or None with a note saying what cannot be done, and why."""
    try:
        return call()
    except JUDGING_ERRORS as exc:
        notes.append(f"{cannot}: {exc}")
        return None


def make_plan(request: ApplyRequest, intent: Intent, accesses: Sequence[Management], ruleset: Ruleset, ex: Executor,
              checkpoint: Checkpoint | None = None) -> Plan:
    """Validate, read the live ruleset, predict the one after the apply, and judge both."""
    driver = DRIVERS[request.backend]
    fw = request.firewall
    timer = _Timer()
    with timer("render"):
        files = driver.render(ruleset)
    own = own_tables(ruleset)
    with timer("validate"):
        problems = driver.validate(ex, files)
    if checkpoint is not None:
        checkpoint("validated")
    plan = Plan(fw, request.backend, ex.target, files, own, problems, timings=timer.times)
    with timer("read"):
        plan.snapshot = driver.snapshot(ex)
    if problems:
        return plan
    with timer("plan"):
        # each judgement says what it can: one failing leaves the others
        live = _or_note(plan.notes, "the live ruleset cannot be read", lambda: driver.parse(plan.snapshot))
        if live is not None:
            plan.before = _or_note(plan.notes, "the live ruleset cannot be audited", lambda: audit(intent, fw, live, f"live ({ex.target})"))
            if accesses and driver.models_input:
                plan.access_before = _or_note(plan.notes, "management access on the live ruleset cannot be judged",
                                              lambda: check_access(live, intent.matrix, fw, accesses)) or []
        plan.own_before = driver.own_text(plan.snapshot, own)
        prediction = _or_note(plan.notes, "the ruleset after the apply cannot be predicted", lambda: driver.predict(plan.snapshot, files, ruleset, own))
        if prediction is None:
            plan.unjudged += [f"{a.label(fw)} (no prediction)" for a in accesses]
            return plan
        plan.own_after = prediction.own_text
        plan.after = _or_note(plan.notes, "the ruleset after the apply cannot be audited",
                              lambda: audit(intent, fw, prediction.ruleset, "after the apply (predicted)"))
        if accesses and driver.models_input:
            try:
                plan.access_after = check_access(prediction.ruleset, intent.matrix, fw, accesses)
            except JUDGING_ERRORS as exc:  # not a note: an access that cannot be judged refuses the apply
                plan.unjudged += [f"{a.label(fw)} ({exc})" for a in accesses]
        elif accesses:
            plan.unjudged += [f"{a.label(fw)} ({driver.name}: input rules are not modelled)" for a in accesses]
    return plan


class _Timer:
    """Wall time of named steps, in seconds."""

    def __init__(self, times: dict[str, float] | None = None):
        self.times = times if times is not None else {}

    @contextlib.contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.times[step] = self.times.get(step, 0.0) + time.monotonic() - start


# -- applying ----------------------------------------------------------------------------------


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
    """Plan, show, back up, load, verify and (with request.confirm) arm the automatic rollback.

    Raises ApplyError (LockoutError, LockedError) when refused or failed; the live
    ruleset is then what it was. Checkpoints: validated, planned, backed-up, loaded,
    verified, armed."""
    step = checkpoint or (lambda name: None)
    intent, accesses, ruleset = load_request(request)
    driver = DRIVERS[request.backend]
    with contextlib.nullcontext() if request.dry_run else state.lock():
        armed = state.pending()
        if armed is not None and not request.dry_run:
            raise ApplyError(f"a rollback is armed (apply of {armed.get('armed')}, backup {armed.get('backup')}): "
                             "run `fwmatrix confirm` or `fwmatrix rollback` first" + _stale(armed))
        plan = make_plan(request, intent, accesses, ruleset, ex, step)
        if armed is not None:
            plan.notes.append(f"a rollback is armed (backup {armed.get('backup')}): an apply waits for `fwmatrix confirm` or `fwmatrix rollback`")
        step("planned")
        if show is not None:
            show(plan)
        refusal = plan.refusal(request.force)
        if refusal is not None:
            raise (ApplyError if plan.problems else LockoutError)(refusal)
        if request.dry_run:
            return ApplyResult(plan, applied=False)
        timer = _Timer(plan.timings)
        with timer("backup"):
            backup = state.save_backup(request.backend, ex.target, plan.snapshot, own=[list(t) for t in plan.own],
                                       firewall=request.firewall, matrix=os.path.abspath(request.matrix))
        result = ApplyResult(plan, applied=False, backup=backup)
        result.removed_backups = state.prune(max(1, request.keep))
        try:
            step("backed-up")
            with timer("load"):
                driver.load(ex, plan.files)
            step("loaded")
            with timer("verify"):
                live = driver.snapshot(ex)
                result.as_predicted = driver.own_text(live, plan.own) == plan.own_after
                if accesses and driver.models_input:
                    try:
                        result.access_live = check_access(driver.parse(live), intent.matrix, request.firewall, accesses)
                    except JUDGING_ERRORS as exc:
                        if not request.force:  # forced: it could not be judged before the load either
                            raise LockoutError(f"management access on the ruleset the kernel now runs cannot be judged: {exc}") from exc
                    cut = [v for v in result.access_live if not v.kept]
                    if cut and not request.force:
                        raise LockoutError("the ruleset the kernel now runs cuts management access: " + "; ".join(map(str, cut)))
            step("verified")
            if request.confirm is not None:
                with timer("arm"):
                    result.pending = arm(state, backup, ex.target, request.confirm, request.timer)
                step("armed")
        except BaseException as exc:
            if result.pending is not None:
                disarm(state, result.pending)
            with timer("recover"):
                restored = recover(driver, ex, plan.snapshot, plan.own)
            state.journal("failed", firewall=request.firewall, backend=request.backend, target=ex.target,
                          backup=backup.name, error=f"{type(exc).__name__}: {exc}", restored=restored)
            if not isinstance(exc, Exception):
                raise  # an interrupt: the ruleset is back, the interrupt goes on
            raise _undone(exc, restored) from exc
        result.applied = True
        state.journal("apply", firewall=request.firewall, backend=request.backend, target=ex.target, backup=backup.name,
                      confirm=request.confirm, token=(result.pending or {}).get("token"),
                      seconds={k: round(v, 4) for k, v in plan.timings.items()})
        return result


def _undone(exc: Exception, restored: str) -> ApplyError:
    """The error to raise for a failed step, saying what became of the ruleset."""
    if isinstance(exc, ApplyError):
        return type(exc)(f"apply {'refused' if isinstance(exc, LockoutError) else 'failed'}: {exc}; {restored}")
    return ApplyError(f"apply failed: {type(exc).__name__}: {exc}; {restored}")


def recover(driver: Driver, ex: Executor, snap: Snapshot, own: Own) -> str:
    """Put the backup back when what an apply touches differs from it; say what was done.
    Interrupts wait until it is done: a half-restored firewall is the one thing to avoid."""
    with signals.held():
        try:
            unchanged = driver.touched(driver.snapshot(ex), own) == driver.touched(snap, own)
        except FwmatrixError:
            unchanged = False  # cannot tell: restore to be sure
        if unchanged:
            return "the live ruleset was not changed"
        driver.restore(ex, snap, own)
        if driver.touched(driver.snapshot(ex), own) != driver.touched(snap, own):
            raise BackendError("the previous ruleset could NOT be restored: run `fwmatrix rollback` and check the firewall")
        return "the previous ruleset was restored"


# -- the automatic rollback ----------------------------------------------------------------------


def timer_kind(target: str, wanted: str = "auto") -> str:
    if wanted not in TIMERS:
        raise FwmatrixError(f"unknown timer {wanted!r}; choose one of {', '.join(TIMERS)}")
    if wanted != "auto":
        return wanted
    # a systemd timer escapes the login session's cgroup, which logind may kill with the session
    systemd = os.path.isdir("/run/systemd/system") and shutil.which("systemd-run") is not None
    return "systemd" if systemd and target == "host" else "detached"


def timer_argv(state: StateDir, token: str) -> list[str]:
    return [sys.executable, "-m", "fwmatrix.ops.apply", "timer", "--state-dir", str(state.root.resolve()), "--token", token]


def systemd_argv(unit: str, seconds: float, command: list[str]) -> list[str]:
    return ["systemd-run", "--unit", unit, "--description", "fwmatrix: roll back the ruleset unless confirmed",
            f"--on-active={max(1, round(seconds * 1000))}ms", "--timer-property=AccuracySec=100ms", "--collect", "--", *command]


def arm(state: StateDir, backup: Backup, target: str, seconds: float, wanted: str = "auto",
        host: Executor | None = None) -> dict:
    """Record the armed rollback, then start its timer; the record goes if the timer cannot start."""
    if seconds <= 0:
        raise FwmatrixError("--confirm needs a positive number of seconds")
    kind = timer_kind(target, wanted)
    token = uuid.uuid4().hex
    now = time.time()
    pending = {"token": token, "backup": backup.name, "backend": backup.meta["backend"], "target": target,
               "seconds": seconds, "armed": _iso(now), "deadline": now + seconds, "timer": kind}
    state.write_pending(pending)
    try:
        command = timer_argv(state, token)
        if kind == "systemd":
            pending["unit"] = f"fwmatrix-rollback-{token[:12]}"
            (host or HostExecutor()).run(systemd_argv(pending["unit"], seconds, command))
        else:
            pending["pid"] = spawn_detached(command, state.log_path)
            state.pid_path.write_text(f"{pending['pid']}\n")
        state.write_pending(pending)
    except BaseException:
        state.clear_pending()
        raise
    return pending


def disarm(state: StateDir, pending: dict, host: Executor | None = None) -> None:
    """Forget the armed rollback and stop its timer (a timer that finds no record does nothing)."""
    state.clear_pending()
    if pending.get("timer") == "systemd" and pending.get("unit"):
        for suffix in (".timer", ".service"):
            (host or HostExecutor()).run(["systemctl", "stop", pending["unit"] + suffix], check=False)
    elif isinstance(pending.get("pid"), int) and _is_timer(pending["pid"], pending["token"]):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pending["pid"], signal.SIGTERM)
    with contextlib.suppress(FileNotFoundError):
        if state.pid_path.read_text().strip() == str(pending.get("pid")):
            state.pid_path.unlink()


def _is_timer(pid: int, token: str) -> bool:
    """The process is our timer (its command line holds the token): never signal a reused pid."""
    try:
        return token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _stale(pending: dict) -> str:
    """A note when the armed rollback's timer is gone although its time is up."""
    if time.time() < float(pending.get("deadline", 0)) + 5:
        return ""
    alive = pending.get("timer") == "systemd" or (isinstance(pending.get("pid"), int) and _is_timer(pending["pid"], pending.get("token", "")))
    return "" if alive else " (its timer is gone without rolling back: `fwmatrix rollback` restores the backup)"


def spawn_detached(argv: list[str], log_path: Path) -> int:
    """Start `argv` as a daemon and return its pid once it runs `argv`: double fork with a
    new session, so it has no controlling terminal, is in no process group of the caller's
    session, and outlives the caller and its SSH session; stdin from /dev/null, output to
    `log_path`."""
    pid_r, pid_w = os.pipe()
    exec_r, exec_w = os.pipe()  # close-on-exec: end of file once the daemon has exec'd (or died)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked children
        try:
            os.close(pid_r)
            os.close(exec_r)
            os.setsid()
            daemon = os.fork()
            if daemon:
                os.write(pid_w, str(daemon).encode())
                os._exit(0)
            os.close(pid_w)
            for sig in (signal.SIGHUP, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)  # ignored signals stay ignored across exec
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            null = os.open(os.devnull, os.O_RDONLY)
            log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.chdir("/")
            os.execv(argv[0], argv)
        except BaseException as exc:  # noqa: BLE001 - told to the parent, which raises
            with contextlib.suppress(OSError):
                os.write(exec_w, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(127)
    os.close(pid_w)
    os.close(exec_w)
    with os.fdopen(pid_r, "rb") as pipe:
        pid = pipe.read()
    os.waitpid(child, 0)
    with os.fdopen(exec_r, "rb") as pipe:
        failure = pipe.read()
    if not pid or failure:
        raise ApplyError(f"the rollback timer could not be started: {failure.decode(errors='replace') or 'it did not fork'}")
    return int(pid)


def run_timer(state: StateDir, token: str) -> int:
    """The timer's body: wait for the deadline unless confirmed, then restore the backup."""
    pending = state.pending()
    if pending is None or pending.get("token") != token:
        return 0
    deadline = time.monotonic() + max(0.0, float(pending["deadline"]) - time.time())
    while time.monotonic() < deadline:
        time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
        current = state.pending()
        if current is None or current.get("token") != token:
            print(f"{_iso(time.time())} confirmed or cancelled: no rollback", flush=True)
            return 0
    with state.lock(wait=LOCK_WAIT):
        pending = state.pending()
        if pending is None or pending.get("token") != token:
            return 0
        try:
            result = restore_backup(state, executor_for(pending["target"]), state.backup(pending["backup"]))
        except FwmatrixError as exc:
            state.journal("rollback-failed", reason="not confirmed in time", backup=pending["backup"], target=pending["target"], error=str(exc))
            print(f"{_iso(time.time())} rollback to {pending['backup']} FAILED: {exc}", flush=True)
            return 1
        finally:
            state.clear_pending()
            with contextlib.suppress(FileNotFoundError):
                if state.pid_path.read_text().strip() == str(os.getpid()):
                    state.pid_path.unlink()
        state.journal("rollback", reason=f"not confirmed within {pending['seconds']} s", backup=pending["backup"],
                      target=pending["target"], token=token, seconds=round(result, 4))
        print(f"{_iso(time.time())} not confirmed within {pending['seconds']} s: restored {pending['backup']} in {result * 1000:.0f} ms", flush=True)
    return 0


# -- confirm and rollback ------------------------------------------------------------------------


def confirm(state: StateDir) -> dict:
    """Keep the applied ruleset: cancel the armed rollback. Returns what was armed."""
    with state.lock(wait=LOCK_WAIT):
        pending = state.pending()
        if pending is None:
            fired = state.last_event("rollback", "rollback-failed")
            last_apply = state.last_event("apply")
            if fired and (last_apply is None or fired["time"] > last_apply["time"]):
                raise NotArmedError(f"nothing to confirm: the apply was rolled back at {fired['time']} "
                                    f"({fired.get('reason', 'on demand')}, backup {fired.get('backup')})")
            raise NotArmedError("nothing to confirm: no rollback is armed")
        disarm(state, pending)
        state.journal("confirm", backup=pending["backup"], target=pending["target"], token=pending["token"],
                      after=round(time.time() - (float(pending["deadline"]) - float(pending["seconds"])), 3))
        return pending


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


@dataclass(frozen=True)
class RollbackResult:
    backup: Backup
    seconds: float
    cancelled: dict | None  # the armed rollback this one replaced


def rollback(state: StateDir, ex: Executor, name: str | None = None) -> RollbackResult:
    """Restore the newest backup (or the one named) now; an armed rollback is cancelled."""
    with state.lock(wait=LOCK_WAIT):
        backup = state.backup(name) if name else state.latest()
        if backup is None:
            raise FwmatrixError(f"no backup to roll back to in {state.backups}")
        pending = state.pending()
        seconds = restore_backup(state, ex, backup)
        if pending is not None:
            disarm(state, pending)
        state.journal("rollback", reason="on demand", backup=backup.name, target=ex.target, seconds=round(seconds, 4))
        return RollbackResult(backup, seconds, pending)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m fwmatrix.ops.apply timer --state-dir DIR --token T`: the detached timer."""
    parser = argparse.ArgumentParser(prog="python -m fwmatrix.ops.apply")
    sub = parser.add_subparsers(dest="command", required=True)
    timer = sub.add_parser("timer", help="wait for the armed rollback's deadline, then roll back unless confirmed")
    timer.add_argument("--state-dir", required=True)
    timer.add_argument("--token", required=True)
    args = parser.parse_args(argv)
    return run_timer(StateDir(args.state_dir), args.token)


if __name__ == "__main__":  # pragma: no cover - the timer process
    sys.exit(main())
