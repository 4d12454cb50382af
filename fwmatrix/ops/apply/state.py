"""The state directory (default /var/lib/fwmatrix, mode 0700): the lock, the backups,
the armed rollback and the journal.

  lock                 the lock file (holds the pid of the holder)
  backups/<UTC time>-<backend>/
                       meta.json and the saved ruleset (ruleset.nft and ruleset.json;
                       iptables.save, ip6tables.save, ipset.save; pf.conf)
  pending.json         the rollback an apply prepared before loading ("loading": undone if the
                       apply dies) and, once verified with --confirm, the armed one ("armed")
  rollback.pid         the detached timer's pid
  rollback.log         what the detached timer wrote
  journal.jsonl        one JSON line per apply, confirm, rollback and failure
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fwmatrix.errors import FwmatrixError, did_you_mean
from fwmatrix.ops.apply.errors import LockedError, StateDirError

if TYPE_CHECKING:
    from fwmatrix.ops.apply.drivers import Own, Snapshot

DEFAULT_STATE_DIR = "/var/lib/fwmatrix"
LOCK_WAIT = 30.0  # seconds confirm, rollback and the timer wait for a running apply


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

    def command(self, name: str) -> str:
        """How to run `fwmatrix NAME` on this state directory (the hints name it unless it is the default)."""
        return f"fwmatrix {name}" + ("" if str(self.root) == DEFAULT_STATE_DIR else f" --state-dir {shlex.quote(str(self.root))}")

    def used(self) -> bool:
        """Whether the directory is there (or cannot be looked at: `ensure` then says why);
        a command with nothing to do in a state directory that is not there creates none."""
        try:
            os.stat(self.root)
        except FileNotFoundError:
            return False
        except OSError:
            pass
        return True

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
            with contextlib.suppress(OSError):  # the holder's pid only informs; a full disk must not stop a rollback
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    # backups

    def save_backup(self, backend: str, target: str, snap: Snapshot, **meta: object) -> Backup:
        """Write a backup whole or not at all: into a hidden directory, then renamed."""
        self.ensure()
        for stale in self.backups.glob(".new-*"):  # left by an apply killed while saving (the caller holds the lock)
            shutil.rmtree(stale, ignore_errors=True)
        now = time.time()
        name = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z-{backend}"
        staging: Path | None = None
        try:
            with self.writing("the backup"):
                staging = Path(tempfile.mkdtemp(prefix=".new-", dir=self.backups))
                info = {"backend": backend, "target": target, "created": iso_time(now), "files": sorted(snap), **meta}
                for file_name, text in {**snap, "meta.json": json.dumps(info, indent=2) + "\n"}.items():
                    with open(staging / file_name, "w", encoding="utf-8") as out:
                        out.write(text)
                        out.flush()
                        os.fsync(out.fileno())
                os.rename(staging, self.backups / name)
                fsync_dir(self.backups)
        except BaseException:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.backup(name)

    @contextlib.contextmanager
    def writing(self, what: str) -> Iterator[None]:
        """An OSError writing `what` (ENOSPC, EROFS, EIO) becomes one line naming the directory."""
        try:
            yield
        except OSError as exc:
            raise StateDirError(f"cannot write {what} in the state directory {self.root}: {exc.strerror or exc}") from None

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
        """Durably: once this returns, the record survives a kill -9 or a power cut."""
        self.ensure()
        with self.writing(self.pending_path.name):
            write_json(self.pending_path, pending)

    def clear_pending(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pending_path.unlink()
            fsync_dir(self.root)

    def journal(self, event: str, **fields: object) -> None:
        """Append one line, durably; on failure (a full disk) the journal is cut back to
        what it was, so no half line is left."""
        self.ensure()
        line = (json.dumps({"time": iso_time(time.time()), "event": event, **fields}) + "\n").encode()
        with self.writing("the journal"):
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                size = os.fstat(fd).st_size
                try:
                    if os.write(fd, line) != len(line):
                        raise OSError(28, os.strerror(28))  # a short write: the disk filled up
                    os.fsync(fd)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)

    def last_event(self, *events: str, token: str | None = None) -> dict | None:
        """The newest journal line of one of `events` (and with `token`, when given)."""
        try:
            lines = self.journal_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return None
        for line in reversed(lines):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") in events and (token is None or entry.get("token") == token):
                    return entry
        return None


def iso_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def write_json(path: Path, data: dict) -> None:
    """Replace a state file whole (a reader sees the old or the new one), private to root:
    pending.json holds the token that lets a timer roll back."""
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(data, indent=2) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(staged, path)
        fsync_dir(path.parent)  # the rename itself survives a power cut
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
