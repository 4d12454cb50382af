"""The automatic rollback of `fwmatrix apply`: recorded and started before the load, so
that an apply killed at any point is undone (the watchdog); with `--confirm SECONDS`,
armed once the load is verified, it restores the backup unless `fwmatrix confirm`
runs in time. Its timer is a process
of its own (a daemon: double fork, new session; or a systemd-run timer where systemd
runs), so it fires when the operator's SSH session dies with the firewall. The timer
runs `python -m fwmatrix.ops.apply timer --state-dir DIR --token T` (`main`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from fwmatrix.errors import BackendError, FwmatrixError
from fwmatrix.ops.apply.drivers import DRIVERS
from fwmatrix.ops.apply.errors import ApplyError, LockedError
from fwmatrix.ops.apply.executors import Executor, HostExecutor, executor_for
from fwmatrix.ops.apply.restore import recover, restore_backup
from fwmatrix.ops.apply.state import LOCK_WAIT, Backup, StateDir, iso_time

TIMERS = ("auto", "detached", "systemd")
POLL = 0.1  # seconds between the timer's looks at pending.json


def in_init_netns(ns_dir: str = "/proc") -> bool | None:
    """Whether this process is in PID 1's network namespace (None: cannot be told, /proc/1 unreadable).
    A systemd-run timer runs where PID 1 runs: started from a shell inside another namespace
    (`ip netns exec`, an sshd there) it would restore the backup into PID 1's namespace."""
    try:
        return os.stat(f"{ns_dir}/self/ns/net").st_ino == os.stat(f"{ns_dir}/1/ns/net").st_ino
    except OSError:
        return None


def timer_kind(target: str, wanted: str = "auto", ns_dir: str = "/proc") -> str:
    if wanted not in TIMERS:
        raise FwmatrixError(f"unknown timer {wanted!r}; choose one of {', '.join(TIMERS)}")
    here = True if target != "host" else in_init_netns(ns_dir)  # a --netns target is named in the record: found from anywhere
    if wanted == "systemd" and here is False:
        raise FwmatrixError("--timer systemd: this process is not in the network namespace of PID 1, where systemd would run "
                            "the rollback and restore the backup into the wrong ruleset; use --timer detached (docs/apply.md)")
    if wanted != "auto":
        return wanted
    # a systemd timer escapes the login session's cgroup, which logind may kill with the session
    systemd = os.path.isdir("/run/systemd/system") and shutil.which("systemd-run") is not None
    return "systemd" if systemd and target == "host" and here is True else "detached"


def timer_argv(state: StateDir, token: str) -> list[str]:
    return [sys.executable, "-m", "fwmatrix.ops.apply", "timer", "--state-dir", str(state.root.resolve()), "--token", token]


def systemd_argv(unit: str, seconds: float, command: list[str]) -> list[str]:
    return ["systemd-run", "--unit", unit, "--description", "fwmatrix: roll back the ruleset unless confirmed",
            f"--on-active={max(1, round(seconds * 1000))}ms", "--timer-property=AccuracySec=100ms", "--collect", "--", *command]


def arm(state: StateDir, backup: Backup, target: str, seconds: float | None, wanted: str = "auto",
        host: Executor | None = None, step: Callable[[str], None] | None = None) -> dict:
    """Before the load: record the rollback durably (phase "loading"), then start its timer.

    Until the apply marks it armed (`start_countdown`), the timer is a watchdog: should
    the apply die (kill -9) it finds the lock free and the record still "loading", and
    puts the backup back at once (`settle_interrupted`). Without --confirm the apply
    removes the record when it is done. The record goes if the timer cannot start."""
    if seconds is not None and seconds <= 0:
        raise FwmatrixError("--confirm needs a positive number of seconds")
    kind = timer_kind(target, wanted) if seconds is not None else "detached"  # a watchdog runs from the start
    token = uuid.uuid4().hex
    now = time.time()
    pending = {"token": token, "phase": "loading", "backup": backup.name, "backend": backup.meta["backend"], "target": target,
               "seconds": seconds, "started": iso_time(now), "apply_pid": os.getpid(), "timer": kind}
    if kind == "systemd":
        pending["unit"] = f"fwmatrix-rollback-{token[:12]}"  # known before it starts: disarm can stop it
    state.write_pending(pending)
    try:
        if step is not None:
            step("recorded")
        command = timer_argv(state, token)
        if kind == "systemd":
            assert seconds is not None
            (host or HostExecutor()).run(systemd_argv(pending["unit"], seconds, command))
        else:
            pending["pid"] = spawn_detached(command, state.log_path)
            with contextlib.suppress(OSError):  # informative; pending.json has the pid
                state.pid_path.write_text(f"{pending['pid']}\n")
        state.write_pending(pending)
    except BaseException:
        state.clear_pending()
        raise
    return pending


def start_countdown(state: StateDir, pending: dict) -> dict:
    """After the load is verified: the rollback fires at now + seconds unless confirmed."""
    now = time.time()
    pending.update(phase="armed", armed=iso_time(now), deadline=now + float(pending["seconds"]))
    state.write_pending(pending)
    return pending


def settle_interrupted(state: StateDir, pending: dict, by: str) -> str | None:
    """Finish off an apply that died (kill -9, power cut) after recording its rollback:
    its record is still "loading" although the caller holds the lock, so no apply runs.
    The backup comes back wherever the new ruleset may have been loaded. Returns one
    line saying what was done, or None when the apply had finished (its journal line
    carries the token) and only its record was left over."""
    token = pending["token"]
    if state.last_event("apply", token=token) is not None:
        disarm(state, pending)
        return None
    who = f"an apply started at {pending.get('started')} (pid {pending.get('apply_pid')}) was interrupted before it finished"
    target = pending["target"]
    if target.startswith("netns:") and not os.path.exists(f"/run/netns/{target.removeprefix('netns:')}"):
        done = f"its network namespace {target.removeprefix('netns:')} is gone: nothing to restore"
    else:
        try:
            backup = state.backup(pending["backup"])
            done = recover(DRIVERS[backup.meta["backend"]], executor_for(target), backup.files(), backup.own)
        except (FwmatrixError, OSError, KeyError) as exc:
            with contextlib.suppress(FwmatrixError):
                state.journal("rollback-failed", reason="the apply was interrupted", backup=pending["backup"], target=target,
                              token=token, by=by, error=str(exc))
            raise BackendError(f"{who}, and its backup {pending['backup']} could not be restored: {exc}; check the firewall, "
                               f"then `fwmatrix rollback --backup NAME` or remove {state.pending_path}") from None
        done = f"{done} (backup {backup.name})"
    state.journal("rollback", reason=f"the apply (pid {pending.get('apply_pid')}) was interrupted before it finished",
                  backup=pending["backup"], target=target, token=token, by=by, restored=done)
    disarm(state, pending)
    return f"{who}: {done}"


def disarm(state: StateDir, pending: dict, host: Executor | None = None) -> None:
    """Forget the armed rollback and stop its timer (a timer that finds no record does nothing).
    The timer itself may call this: it never signals itself."""
    state.clear_pending()
    if pending.get("timer") == "systemd" and pending.get("unit"):
        for suffix in (".timer", ".service"):
            (host or HostExecutor()).run(["systemctl", "stop", pending["unit"] + suffix], check=False)
    elif isinstance(pending.get("pid"), int) and pending["pid"] != os.getpid() and _is_timer(pending["pid"], pending["token"]):
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


def stale_note(pending: dict) -> str:
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
    """The timer's body. While the record is "loading" it watches the apply: should the
    lock come free with the record still there, the apply died, and the backup comes
    back now. Once "armed", it waits for the deadline unless confirmed, then restores."""
    while True:
        pending = state.pending()
        if pending is None or pending.get("token") != token:
            if pending is None and state.last_event("apply", token=token) is None:
                _log("confirmed or cancelled: no rollback")
            return 0
        if pending.get("phase", "armed") == "loading":
            with contextlib.suppress(LockedError), state.lock():
                current = state.pending()
                if current is not None and current.get("token") == token and current.get("phase") == "loading":
                    try:
                        said = settle_interrupted(state, current, by="timer")
                    except FwmatrixError as exc:
                        _log(f"FAILED: {exc}")
                        return 1
                    _log(said or "the apply finished: nothing to do")
                    return 0
        elif time.time() >= float(pending["deadline"]):
            return _fire(state, token)
        time.sleep(POLL)


def _fire(state: StateDir, token: str) -> int:
    """The deadline passed unconfirmed: restore the backup (waiting for the lock as long as it takes)."""
    while True:
        try:
            with state.lock(wait=LOCK_WAIT):
                return _restore_unconfirmed(state, token)
        except LockedError as exc:
            _log(f"still waiting to roll back: {exc}")


def _restore_unconfirmed(state: StateDir, token: str) -> int:
    pending = state.pending()
    if pending is None or pending.get("token") != token:
        return 0
    # the journal line is written before the pending record goes: whoever sees no rollback
    # armed any more (confirm, a test, an operator) finds in the journal what became of it
    try:
        try:
            result = restore_backup(state, executor_for(pending["target"]), state.backup(pending["backup"]))
        except FwmatrixError as exc:
            with contextlib.suppress(FwmatrixError):
                state.journal("rollback-failed", reason="not confirmed in time", backup=pending["backup"], target=pending["target"], error=str(exc))
            _log(f"rollback to {pending['backup']} FAILED: {exc}")
            return 1
        with contextlib.suppress(FwmatrixError):  # the ruleset is back: a full disk does not undo that
            state.journal("rollback", reason=f"not confirmed within {pending['seconds']} s", backup=pending["backup"],
                          target=pending["target"], token=token, seconds=round(result, 4))
        _log(f"not confirmed within {pending['seconds']} s: restored {pending['backup']} in {result * 1000:.0f} ms")
        return 0
    finally:
        state.clear_pending()
        with contextlib.suppress(OSError):
            if state.pid_path.read_text().strip() == str(os.getpid()):
                state.pid_path.unlink()


def _log(message: str) -> None:
    """A line in rollback.log; a full disk must not stop the timer."""
    with contextlib.suppress(OSError):
        print(f"{iso_time(time.time())} {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m fwmatrix.ops.apply timer --state-dir DIR --token T`: the detached timer."""
    parser = argparse.ArgumentParser(prog="python -m fwmatrix.ops.apply")
    sub = parser.add_subparsers(dest="command", required=True)
    timer = sub.add_parser("timer", help="wait for the armed rollback's deadline, then roll back unless confirmed")
    timer.add_argument("--state-dir", required=True)
    timer.add_argument("--token", required=True)
    args = parser.parse_args(argv)
    return run_timer(StateDir(args.state_dir), args.token)
