"""Measuring helpers shared by bench/run.py and bench/peer_aerleon.py.

Only the standard library: the benchmarks run with the project's venv but
never import fwmatrix to time it (they time the `fwmatrix` command).

Peak memory is the child's own `ru_maxrss`, from `os.wait4` on its pid in a
small launcher (bench/_spawn.py): the same number
`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` gives in a fresh parent that
ran only that child. Two traps avoided: RUSAGE_CHILDREN in a long-lived
parent is the maximum over every child reaped so far, and a child's
ru_maxrss starts at the RSS of the process it was forked from, so the
driver (which grows while it generates matrices and parses listings) must
not fork the measured commands itself.

Kernel loads go into throw-away network namespaces named
`fwmbench-<pid>-<random>`; this module deletes only the ones it created, also
when interrupted, and never loads anything into the host's own namespace.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")


@dataclass
class Run:
    """One finished process."""

    argv: list[str]
    wall: float  # seconds, fork to reap
    maxrss_kb: int  # the child's peak resident set size
    returncode: int
    stderr: str = ""
    timed_out: bool = False
    cpu: float = 0.0  # seconds of CPU, user + system (on a loaded machine the figure to compare)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def rss_mb(self) -> float:
        return self.maxrss_kb / 1024

    def error_line(self) -> str:
        if self.timed_out:
            return "timed out"
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1][:200] if lines else f"exit status {self.returncode}"


SPAWN = os.path.join(BENCH_DIR, "_spawn.py")


def measure(argv: list[str], timeout: float = 900) -> Run:
    """Run argv to completion: wall time and the child's own peak RSS (see _spawn.py)."""
    with tempfile.TemporaryFile(mode="w+b") as err:
        proc = subprocess.run([sys.executable, "-S", "-I", SPAWN, str(timeout)] + argv,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"the launcher failed ({proc.returncode}): {stderr.strip()[-500:]}")
    data = json.loads(proc.stdout)
    return Run(argv, data["wall"], data["maxrss_kb"], data["returncode"], stderr, data["timed_out"], data.get("cpu", 0.0))


def repeat(argv: list[str], times: int, timeout: float = 900, before=None) -> list[Run]:
    runs = []
    for _ in range(times):
        if before is not None:
            before()
        runs.append(measure(argv, timeout))
    return runs


def median_run(runs: list[Run]) -> Run:
    """The run of median wall time (its RSS is reported with it)."""
    ordered = sorted(runs, key=lambda r: r.wall)
    return ordered[(len(ordered) - 1) // 2]


def median_cpu_run(runs: list[Run]) -> Run:
    """The run of median CPU time (its wall time and RSS are reported with it)."""
    ordered = sorted(runs, key=lambda r: r.cpu)
    return ordered[(len(ordered) - 1) // 2]


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- network namespaces ---------------------------------------------------------

_created: list[str] = []


def _cleanup() -> None:
    for name in list(_created):
        delete_netns(name)


atexit.register(_cleanup)


def _on_signal(signum, frame):  # pragma: no cover - interactive
    _cleanup()
    raise SystemExit(128 + signum)


for _sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_sig, _on_signal)


def create_netns() -> str:
    name = f"fwmbench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    _created.append(name)
    return name


def delete_netns(name: str) -> None:
    if name not in _created:
        raise ValueError(f"refusing to delete namespace {name}: not created by this run")
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    _created.remove(name)


@dataclass
class LoadResult:
    runs: list[Run] = field(default_factory=list)
    rules: int | None = None
    set_elements: int | None = None
    sets: int | None = None
    chains: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.ok for r in self.runs)

    @property
    def wall(self) -> float:
        return median([r.wall for r in self.runs])


def kernel_available() -> str | None:
    """Why kernel loads cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    for tool in ("ip", "nft", "unshare"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed"
    return None


def load_into_fresh_netns(path: str, times: int, count: bool = True, timeout: float = 900) -> LoadResult:
    """`ip netns exec NS nft -f path`, each time into a new namespace; count what the kernel holds."""
    result = LoadResult()
    for i in range(times):
        name = create_netns()
        try:
            run = measure(["ip", "netns", "exec", name, "nft", "-f", path], timeout)
            result.runs.append(run)
            if not run.ok:
                result.error = run.error_line()
                break
            if count and i == 0:
                counts = count_kernel_ruleset(name, timeout)
                result.rules, result.set_elements, result.sets, result.chains = counts
        finally:
            delete_netns(name)
    return result


def count_kernel_ruleset(netns: str, timeout: float = 900) -> tuple[int, int, int, int]:
    """(rules, named set/map elements, named sets/maps, chains) the kernel holds in netns."""
    proc = subprocess.run(["ip", "netns", "exec", netns, "nft", "-j", "list", "ruleset"],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"nft -j list ruleset failed: {proc.stderr.strip()}")
    rules = elements = sets = chains = 0
    for item in json.loads(proc.stdout)["nftables"]:
        if "rule" in item:
            rules += 1
        elif "chain" in item:
            chains += 1
        elif "set" in item or "map" in item:
            sets += 1
            elements += len((item.get("set") or item.get("map")).get("elem", []))
    return rules, elements, sets, chains


def check_run(path: str, unprivileged: bool = True, timeout: float = 900) -> Run:
    """`unshare -rn nft -c -f path` (a user namespace, as fwmatrix does without root), or `unshare -n` as root."""
    prefix = ["unshare", "-rn"] if unprivileged else ["unshare", "-n"]
    return measure(prefix + ["nft", "-c", "-f", path], timeout)


# -- the machine ----------------------------------------------------------------


def machine() -> dict[str, str]:
    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    python = os.path.join(VENV_BIN, "python")
    commit = out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "-C", ROOT, "status", "--porcelain", "--", "fwmatrix", "backends", "pyproject.toml"])
    return {
        "commit": commit + (" with uncommitted changes to fwmatrix/ or backends/" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": out([python if os.path.exists(python) else sys.executable, "-c", "import sys; print(sys.version.split()[0])"]),
        "pyyaml": out([python if os.path.exists(python) else sys.executable, "-c",
                       "import yaml; print(yaml.__version__, 'libyaml' if yaml.__with_libyaml__ else 'pure-python')"]),
        "nft": out(["nft", "--version"]),
        "fwmatrix": out([os.path.join(VENV_BIN, "fwmatrix"), "--version"]),
        "loadavg": " ".join(open("/proc/loadavg").read().split()[:3]) if os.path.exists("/proc/loadavg") else "?",
    }


def machine_lines(info: dict[str, str]) -> list[str]:
    return [
        f"- date: {info['date']}",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, load average at start {info['loadavg']}",
        f"- Python {info['python']}, PyYAML {info['pyyaml']}; {info['nft']}; {info['fwmatrix']} at commit {info['commit']}",
    ]


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def fmt_mb(mb: float | None) -> str:
    return "–" if mb is None else f"{mb:.0f}"


def fmt_int(n: int | None) -> str:
    return "–" if n is None else f"{n:,}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
