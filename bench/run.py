#!/usr/bin/env python3
"""The compile benchmark: `make bench` runs `.venv/bin/python bench/run.py`.

For each size (default 1,000 / 10,000 / 100,000 openings, plus 10,000 with
two firewalls in a row) it generates a matrix with bench/gen_matrix.py and
measures, all in one run so that ratios compare like with like:

  - baseline: `python -c "import yaml; yaml.load(open(F), Loader=yaml.CSafeLoader)"`
    on the same file (the floor: reading the YAML with libyaml);
  - `fwmatrix compile MATRIX --out-dir DIR`, the whole process: wall time and peak
    RSS, median of --repeat runs (one run from 100,000 openings up);
  - what the kernel holds after loading the output: rules, named sets and
    their elements (`nft -j list ruleset`);
  - `ip netns exec NS nft -f FILE` into a fresh namespace (median);
  - `unshare -rn nft -c -f FILE`, the check fwmatrix runs without root, and
    `unshare -n nft -c -f FILE`, the one it runs as root.

Then, with --audit, bench/audit_bench.py (the audit benchmark) at the same
sizes, and (unless --no-peer) bench/peer_aerleon.py, the peer side by side.
Prints Markdown and writes bench/results/compile.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as B  # noqa: E402
import gen_matrix  # noqa: E402

TARGET_N = 10_000
TARGET_WALL = 0.5  # s, the whole `fwmatrix compile` process
TARGET_RSS = 150  # MB
TARGET_LOAD = 1.0  # s, nft -f into a kernel


def python() -> str:
    return os.path.join(B.VENV_BIN, "python")


def fwmatrix() -> str:
    return os.path.join(B.VENV_BIN, "fwmatrix")


def baseline_argv(matrix: str) -> list[str]:
    code = "import sys, yaml; yaml.load(open(sys.argv[1]), Loader=yaml.CSafeLoader)"
    return [python(), "-c", code, matrix]


class Case:
    def __init__(self, n: int, firewalls: int, label: str):
        self.n, self.firewalls, self.label = n, firewalls, label
        self.matrix = ""
        self.matrix_bytes = 0
        self.baseline: list[B.Run] = []
        self.compile: list[B.Run] = []
        self.files: list[str] = []
        self.output_bytes = 0
        self.loads: dict[str, B.LoadResult] = {}
        self.checks_user: dict[str, B.Run] = {}
        self.checks_root: dict[str, B.Run] = {}
        self.error = ""

    # -- summaries --------------------------------------------------------------

    @property
    def compile_med(self) -> B.Run | None:
        ok = [r for r in self.compile if r.ok]
        return B.median_run(ok) if ok else None

    @property
    def baseline_med(self) -> B.Run | None:
        ok = [r for r in self.baseline if r.ok]
        return B.median_run(ok) if ok else None

    def load_wall(self) -> float | None:
        if not self.loads or not all(l.ok for l in self.loads.values()):
            return None
        return sum(l.wall for l in self.loads.values())

    def total(self, attr: str) -> int | None:
        values = [getattr(l, attr) for l in self.loads.values()]
        return None if not values or any(v is None for v in values) else sum(values)


def run_case(case: Case, workdir: str, repeat: int, kernel: bool) -> None:
    times = 1 if case.n >= 100_000 else repeat
    case.matrix = os.path.join(workdir, f"matrix-{case.n}-fw{case.firewalls}.yaml")
    B.log(f"[{case.label}] generating {case.matrix}")
    with open(case.matrix, "w", encoding="utf-8") as handle:
        handle.write(gen_matrix.generate(case.n, seed=ARGS.seed, firewalls=case.firewalls))
    case.matrix_bytes = os.path.getsize(case.matrix)

    B.log(f"[{case.label}] baseline: yaml.load(CSafeLoader) x{times}")
    case.baseline = B.repeat(baseline_argv(case.matrix), times)

    out = os.path.join(workdir, f"out-{case.n}-fw{case.firewalls}")
    B.log(f"[{case.label}] fwmatrix compile x{times}")
    case.compile = B.repeat([fwmatrix(), "compile", case.matrix, "--out-dir", out], times,
                            before=lambda: shutil.rmtree(out, ignore_errors=True))
    if not case.compile[-1].ok:
        case.error = f"fwmatrix compile failed: {case.compile[-1].error_line()}"
        B.log(f"[{case.label}] {case.error}")
        return
    case.files = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".nft"))
    case.output_bytes = sum(os.path.getsize(f) for f in case.files)

    if not kernel:
        return
    for path in case.files:
        name = os.path.basename(path)
        B.log(f"[{case.label}] nft -f {name} into a fresh namespace x{times}")
        case.loads[name] = B.load_into_fresh_netns(path, times)
        if case.loads[name].error:
            B.log(f"[{case.label}]   load failed: {case.loads[name].error}")
        B.log(f"[{case.label}] unshare -rn / unshare -n nft -c -f {name}")
        case.checks_user[name] = B.check_run(path, unprivileged=True)
        case.checks_root[name] = B.check_run(path, unprivileged=False)


def check_cell(runs: dict[str, B.Run]) -> str:
    if not runs:
        return "–"
    wall = sum(r.wall for r in runs.values())
    failed = [r for r in runs.values() if not r.ok]
    if failed:
        return f"fails after {B.fmt_s(wall)} ({failed[0].error_line()})"
    return B.fmt_s(wall)


def profile_phases(case: Case) -> str:
    """bench/profile_compile.py on the case's matrix, with the garbage collector on and off."""
    import subprocess

    out = []
    for flags in ([], ["--no-gc"]):
        proc = subprocess.run([python(), os.path.join(B.BENCH_DIR, "profile_compile.py"), case.matrix] + flags,
                              capture_output=True, text=True, timeout=1800)
        out.append(f"$ .venv/bin/python bench/profile_compile.py MATRIX {' '.join(flags)}".rstrip())
        out.append((proc.stdout or proc.stderr).rstrip())
    return "\n".join(out)


# what follows this line in the results file was written by hand (measurements of
# particular changes): a new run replaces only the part above it
NOTES_MARK = "<!-- bench/run.py writes the part above this line; what follows is kept -->"


def write_keeping_notes(path: str, generated: str) -> None:
    """Write the generated report, keeping the hand-written notes after NOTES_MARK."""
    notes = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            _, mark, notes = handle.read().partition(NOTES_MARK)
        notes = mark + notes
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(generated.rstrip("\n") + "\n\n" + (notes or NOTES_MARK + "\n"))


def report(cases: list[Case], startup: list[B.Run], empty: list[B.Run], info: dict[str, str], repeat: int, kernel: str | None) -> str:
    lines = ["# fwmatrix compile benchmark", ""] + B.machine_lines(info) + [
        f"- matrices: `bench/gen_matrix.py N --seed {ARGS.seed}` (one firewall with every zone, or two firewalls in a row)",
        f"- wall times and peak RSS are medians of {repeat} runs (one run from 100,000 openings up); "
        "the machine is shared and noisy, so compare ratios within this run rather than across runs",
        "",
        "## Compile",
        "",
    ]
    s, e = B.median_run(startup), B.median_run(empty)
    header = ["openings", "matrix", "baseline yaml.load: s / MB", "fwmatrix compile: s / MB", "compile ÷ baseline: time / memory", "output"]
    rows = []
    for c in cases:
        b, m = c.baseline_med, c.compile_med
        if m is None or b is None:
            rows.append([c.label, f"{c.matrix_bytes / 1e6:.1f} MB", f"{B.fmt_s(b.wall)} / {B.fmt_mb(b.rss_mb)}" if b else "–",
                         c.error or "failed", "–", "–"])
            continue
        rows.append([
            c.label,
            f"{c.matrix_bytes / 1e6:.1f} MB",
            f"{B.fmt_s(b.wall)} / {B.fmt_mb(b.rss_mb)}",
            f"**{B.fmt_s(m.wall)}** / **{B.fmt_mb(m.rss_mb)}**",
            f"{m.wall / b.wall:.1f}× / {m.rss_mb / b.rss_mb:.1f}×",
            f"{len(c.files)} file{'s' if len(c.files) != 1 else ''}, {c.output_bytes / 1e6:.1f} MB",
        ])
    lines += [B.md_table(header, rows), ""]
    lines += [
        f"Fixed costs in the same run: `python -c pass` {B.fmt_s(e.wall)} s / {B.fmt_mb(e.rss_mb)} MB; "
        f"`fwmatrix --version` (interpreter and imports) {B.fmt_s(s.wall)} s / {B.fmt_mb(s.rss_mb)} MB.",
        "",
        "## Kernel",
        "",
    ]
    if kernel is not None:
        lines += [f"Not measured: {kernel}.", ""]
    else:
        header = ["openings", "rules", "named sets", "set elements", "nft -f into a fresh netns (s)",
                  "check `unshare -rn nft -c` (s)", "check `unshare -n nft -c`, root (s)"]
        rows = []
        for c in cases:
            if c.error:
                rows.append([c.label, "–", "–", "–", "–", "–", "–"])
                continue
            load = c.load_wall()
            failed = [l for l in c.loads.values() if not l.ok]
            rows.append([
                c.label,
                B.fmt_int(c.total("rules")),
                B.fmt_int(c.total("sets")),
                B.fmt_int(c.total("set_elements")),
                f"**{B.fmt_s(load)}**" if load is not None else f"fails ({failed[0].error})",
                check_cell(c.checks_user),
                check_cell(c.checks_root),
            ])
        lines += [B.md_table(header, rows), ""]
        lines += ["With two firewalls the times are the sums over their files (each loaded into its own namespace).", ""]
        if any("Message too long" in r.stderr for c in cases for r in c.checks_user.values()):
            lines += ["`unshare -rn nft -c` (a user namespace, the way `fwmatrix check` checks without root) fails with "
                      "\"Message too long\" once a ruleset's netlink batch outgrows what nft may use there (here already at "
                      "a few thousand interval-set elements), while the same check as root (`unshare -n`) accepts it: "
                      "without root, `fwmatrix check` reports such rulesets as refused by the target.", ""]

    if PROFILE:
        lines += ["## Where the time goes (in one process, 10,000 openings)", "", "```", PROFILE, "```", "",
                  "The phases are those of `fwmatrix compile`, run through the same functions in one process "
                  "(bench/profile_compile.py; `--cprofile FILE` lists the functions).", ""]
    lines += ["## Targets (from the issue, at 10,000 openings)", ""]
    target = next((c for c in cases if c.n == TARGET_N and c.firewalls == 1), None)
    if target is None or target.compile_med is None:
        lines += ["Not measured in this run.", ""]
    else:
        m = target.compile_med
        load = target.load_wall()

        def verdict(ok: bool) -> str:
            return "met" if ok else "**missed**"

        lines += [
            f"- compile under {TARGET_WALL} s wall (whole process): {B.fmt_s(m.wall)} s — {verdict(m.wall < TARGET_WALL)}",
            f"- compile under {TARGET_RSS} MB peak RSS: {B.fmt_mb(m.rss_mb)} MB — {verdict(m.rss_mb < TARGET_RSS)}",
            f"- loads into a kernel in under {TARGET_LOAD:.0f} s: "
            + (f"{B.fmt_s(load)} s — {verdict(load < TARGET_LOAD)}" if load is not None else "not measured"),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global ARGS
    parser = argparse.ArgumentParser(description="fwmatrix compile benchmark (see bench/README.md)")
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated numbers of openings")
    parser.add_argument("--two-firewalls", default="10000", help="sizes to run again with two firewalls in a row ('' for none)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement below 100,000 openings (median reported)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-kernel", action="store_true", help="skip nft loads and checks")
    parser.add_argument("--no-profile", action="store_true", help="skip the phase profile of the 10,000-opening compile")
    parser.add_argument("--no-peer", action="store_true", help="skip bench/peer_aerleon.py")
    parser.add_argument("--audit", action="store_true",
                        help="then bench/audit_bench.py at the same sizes (naive rulesets; long: their first loads take minutes)")
    parser.add_argument("--keep", metavar="DIR", help="keep matrices and outputs in DIR (default: a temporary directory, removed)")
    parser.add_argument("--output", default=os.path.join(B.RESULTS_DIR, "compile.md"), help="where to write the Markdown")
    ARGS = parser.parse_args(argv)

    kernel = "skipped (--no-kernel)" if ARGS.no_kernel else B.kernel_available()
    for tool in (python(), fwmatrix()):
        if not os.path.exists(tool):
            B.log(f"error: {tool} is missing: run 'make venv' first")
            return 2
    info = B.machine()
    workdir = ARGS.keep or tempfile.mkdtemp(prefix="fwmatrix-bench-")
    os.makedirs(workdir, exist_ok=True)
    try:
        B.log("fixed costs: python -c pass, fwmatrix --version")
        empty = B.repeat([python(), "-c", "pass"], ARGS.repeat)
        startup = B.repeat([fwmatrix(), "--version"], ARGS.repeat)
        cases = [Case(int(n), 1, f"{int(n):,}") for n in ARGS.sizes.split(",") if n]
        cases += [Case(int(n), 2, f"{int(n):,} (2 firewalls)") for n in ARGS.two_firewalls.split(",") if n]
        global PROFILE
        for case in cases:
            run_case(case, workdir, ARGS.repeat, kernel is None)
            if case.n == TARGET_N and case.firewalls == 1 and case.compile_med is not None and not ARGS.no_profile:
                B.log(f"[{case.label}] bench/profile_compile.py, garbage collector on and off")
                PROFILE = profile_phases(case)
        text = report(cases, startup, empty, info, ARGS.repeat, kernel)
        print(text)
        os.makedirs(os.path.dirname(ARGS.output), exist_ok=True)
        write_keeping_notes(ARGS.output, text)
        B.log(f"wrote {ARGS.output}")
    finally:
        if not ARGS.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    if ARGS.audit:
        if kernel is not None:
            B.log(f"audit benchmark skipped: {kernel}")
        else:
            import audit_bench

            rc = audit_bench.main(["--seed", str(ARGS.seed), "--repeat", str(ARGS.repeat), "--sizes", ARGS.sizes])
            if rc:
                return rc

    if not ARGS.no_peer:
        import peer_aerleon

        return peer_aerleon.main(["--seed", str(ARGS.seed), "--repeat", str(ARGS.repeat)] + (["--no-kernel"] if ARGS.no_kernel else []))
    return 0


ARGS: argparse.Namespace
PROFILE = ""

if __name__ == "__main__":
    sys.exit(main())
