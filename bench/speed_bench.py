#!/usr/bin/env python3
"""Issue 13's compile and review rows: `fwmatrix compile`, `diff` and `lint` at 10,000 openings.

    .venv/bin/python bench/speed_bench.py [--before TREE] [--sizes 10000] [--repeat 5]

For each size, a matrix of bench/gen_matrix.py (--seed, one firewall) and a
change of it (bench/mutate_matrix.py: services changed, openings removed and
renamed). Each command runs as a whole process (bench/_spawn.py): CPU seconds
(user + system), wall seconds and peak RSS, the run of median CPU time
reported. CPU is the figure to compare: the machine is shared, and wall time
grows with everyone else's load. The baseline of the same run is
`yaml.load` of the matrix with libyaml (CSafeLoader), as in bench/run.py.

With --before TREE (a checkout of an older commit: `git worktree add --detach
DIR REV`), the same commands also run from TREE's code (bench/_at_tree.py)
in the same run, interleaved with the current code's runs, and their outputs
are compared byte for byte: an optimisation must not change them.

Writes bench/results/speed.md (or --output).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as B  # noqa: E402
import gen_matrix  # noqa: E402
import mutate_matrix  # noqa: E402

GOALS = {"compile": (0.5, 150), "compile-iptables": (1.0, None), "compile-pf": (1.0, None), "diff": (2.0, None), "lint": (2.0, None)}  # CPU s, MB (issue 13, at 10,000)
WORKS = ("startup", "compile", "compile-iptables", "compile-pf", "diff", "lint")
AT_TREE = os.path.join(B.BENCH_DIR, "_at_tree.py")


def python() -> str:
    return os.path.join(B.VENV_BIN, "python")


def commands(matrix: str, changed: str, out: str) -> dict[str, tuple[list[str], str]]:
    """work -> (fwmatrix arguments, the output file or directory it writes)"""
    # compile -o (deprecated for --out-dir): the same words for an older --before tree
    return {
        "startup": (["--version"], ""),
        "compile": (["compile", matrix, "-o", os.path.join(out, "compiled"), "--backend", "nftables"], os.path.join(out, "compiled")),
        "compile-iptables": (["compile", matrix, "-o", os.path.join(out, "compiled-iptables"), "--backend", "iptables"], os.path.join(out, "compiled-iptables")),
        "compile-pf": (["compile", matrix, "-o", os.path.join(out, "compiled-pf"), "--backend", "pf"], os.path.join(out, "compiled-pf")),
        "diff": (["diff", matrix, changed, "--format", "json", "-o", os.path.join(out, "diff.json")], os.path.join(out, "diff.json")),
        "lint": (["lint", matrix, "--format", "json", "-o", os.path.join(out, "lint.json")], os.path.join(out, "lint.json")),
    }


def same_output(a: str, b: str) -> bool:
    if os.path.isdir(a):
        names = sorted(os.listdir(a))
        return names == sorted(os.listdir(b)) and all(filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False) for n in names)
    return filecmp.cmp(a, b, shallow=False)


def ok(run: B.Run, work: str) -> bool:
    return run.ok or (work == "lint" and run.returncode == 1 and not run.timed_out)  # lint exits 1 on findings


def measure_size(n: int, args: argparse.Namespace, workdir: str) -> dict:
    matrix = os.path.join(workdir, f"m{n}.yaml")
    changed = os.path.join(workdir, f"m{n}-changed.yaml")
    B.log(f"[{n:,}] generating the matrix and its change")
    with open(matrix, "w", encoding="utf-8") as handle:
        handle.write(gen_matrix.generate(n, seed=args.seed, firewalls=1))
    mutate_matrix.main([matrix, "-o", changed, "--change", str(args.change), "--remove", str(args.remove), "--rename", str(args.rename)])
    sides = {"after": [os.path.join(B.VENV_BIN, "fwmatrix")]}
    if args.before:
        sides["before"] = [python(), AT_TREE, args.before]
    runs: dict[tuple[str, str], list[B.Run]] = {}
    baseline = [python(), "-c", "import sys, yaml; yaml.load(open(sys.argv[1]), Loader=yaml.CSafeLoader)", matrix]
    outputs = {side: os.path.join(workdir, f"{side}-{n}") for side in sides}
    for side in sides:
        os.makedirs(outputs[side], exist_ok=True)
    # bytecode cached, as an installed fwmatrix has it (pip compiles it at install): one round
    # first that is not measured, so that no measured run compiles fwmatrix's sources (about
    # 0.12 s CPU a process; PYTHONDONTWRITEBYTECODE, which forbids the cache, is dropped in main)
    B.log(f"[{n:,}] warming up (bytecode)")
    for side, prefix in sides.items():
        for work, (argv, _) in commands(matrix, changed, outputs[side]).items():
            if work in args.works:
                B.measure(prefix + argv)
    for i in range(args.repeat):
        B.log(f"[{n:,}] round {i + 1}/{args.repeat}")
        runs.setdefault(("baseline", ""), []).append(B.measure(baseline))
        for side, prefix in sides.items():
            for work, (argv, _) in commands(matrix, changed, outputs[side]).items():
                if work not in args.works:
                    continue
                runs.setdefault((work, side), []).append(B.measure(prefix + argv))
    result = {"n": n, "medians": {}, "failed": {}, "identical": {}}
    if args.aerleon is not None and n == 10_000:  # the peer on the same matrix, once (a run takes over 10 s)
        result["aerleon"] = _aerleon(matrix, args.aerleon, workdir)
    for (work, side), rs in runs.items():
        good = [r for r in rs if ok(r, work)]
        if good:
            result["medians"][(work, side)] = B.median_cpu_run(good)
        else:
            result["failed"][(work, side)] = rs[0].error_line()
    if args.before:
        for work, (_, path) in commands(matrix, changed, outputs["after"]).items():
            if path and work in args.works:
                other = commands(matrix, changed, outputs["before"])[work][1]
                result["identical"][work] = os.path.exists(path) and os.path.exists(other) and same_output(path, other)
    if n == 10_000:  # where compile's time goes, phase by phase (as bench/run.py shows it)
        import subprocess

        proc = subprocess.run([python(), os.path.join(B.BENCH_DIR, "profile_compile.py"), matrix, "--no-gc"],
                              capture_output=True, text=True, timeout=1800)
        result["profile"] = (proc.stdout or proc.stderr).rstrip()
    return result


def _aerleon(matrix: str, venv: str, workdir: str) -> tuple[str, B.Run | None, str]:
    """(Aerleon's version, its aclgen run on the matrix translated as bench/peer_aerleon.py does, why not)."""
    import peer_aerleon

    aclgen, version = peer_aerleon.ensure_aerleon(venv or os.environ.get("AERLEON_VENV", peer_aerleon.DEFAULT_VENV))
    if aclgen is None:
        return "", None, version
    policy, defs, base = peer_aerleon.write_policy(peer_aerleon.translate(matrix), os.path.join(workdir, "aerleon"), 10_000)
    B.log("Aerleon aclgen (one run)")
    run = B.measure([aclgen, f"--base_directory={base}", f"--definitions_directory={defs}", f"--output_directory={os.path.join(workdir, 'aerleon-out')}",
                     f"--policy_file={policy}", "--nooptimize", "--noshade_check"], timeout=1800)
    return version, run if run.ok else None, "" if run.ok else run.error_line()


def cell(run: B.Run | None) -> str:
    return "–" if run is None else f"**{run.cpu:.2f}** / {B.fmt_s(run.wall)} / {B.fmt_mb(run.rss_mb)}"


def report(results: list[dict], args: argparse.Namespace, info: dict[str, str]) -> str:
    lines = ["# fwmatrix speed: compile, diff, lint (issue 13)", ""] + B.machine_lines(info) + [
        f"- matrices: `bench/gen_matrix.py N --seed {args.seed}` (one firewall); the change: `bench/mutate_matrix.py "
        f"--change {args.change} --remove {args.remove} --rename {args.rename}`",
        f"- each figure: CPU seconds (user + system) / wall seconds / peak RSS MB of the whole process, the run of median CPU "
        f"of {args.repeat}; the machine is shared and was loaded by other work, so wall times are inflated and CPU is the "
        "figure to compare",
        "- baseline of the same run: `yaml.load` of the matrix with libyaml (CSafeLoader)",
        "- bytecode cached (as an installed package has it): one unmeasured round first writes it for both sides "
        "(PYTHONDONTWRITEBYTECODE dropped from the environment)",
    ]
    if args.before:
        lines.append(f"- before: the code of `{args.before_label}`, run from its checkout by bench/_at_tree.py in the same run, "
                     "interleaved with the current code's runs; outputs compared byte for byte")
    lines.append("")
    for r in results:
        med = r["medians"]
        base = med.get(("baseline", ""))
        lines += [f"## {r['n']:,} openings", ""]
        header = ["work", "after: CPU s / wall s / MB"] + (["before: CPU s / wall s / MB", "after ÷ before (CPU)", "outputs identical"] if args.before else []) + [
            "after ÷ yaml.load (CPU)", "goal (CPU s, MB)"]
        rows = []
        for work in args.works:
            after, before = med.get((work, "after")), med.get((work, "before"))
            goal = GOALS.get(work) if r["n"] == 10_000 else None  # the goals are at 10,000 openings
            goal_text = "–"
            if goal and after is not None:
                met = after.cpu <= goal[0] and (goal[1] is None or after.rss_mb <= goal[1])
                goal_text = f"≤ {goal[0]} s" + (f", ≤ {goal[1]} MB" if goal[1] else "") + (" — met" if met else " — **missed**")
            row = [{"startup": "`fwmatrix --version`", "compile": "`fwmatrix compile` (nftables)", "compile-iptables": "`fwmatrix compile` (iptables)",
                    "compile-pf": "`fwmatrix compile` (pf)"}.get(work, f"`fwmatrix {work}`"), cell(after) if after else r["failed"].get((work, "after"), "–")]
            if args.before:
                row += [cell(before) if before else r["failed"].get((work, "before"), "–"),
                        f"{after.cpu / before.cpu:.2f}×" if after and before and before.cpu else "–",
                        {True: "yes", False: "**no**"}.get(r["identical"].get(work), "–")]
            row += [f"{after.cpu / base.cpu:.1f}×" if after and base and base.cpu else "–", goal_text]
            rows.append(row)
        rows.append(["`yaml.load` (baseline)", cell(base)] + (["", "", ""] if args.before else []) + ["1.0×", "–"])
        if r.get("aerleon"):
            version, aer, why = r["aerleon"]
            rows.append([f"Aerleon {version} `aclgen` (peer, nftables; one run)", cell(aer) if aer else why] + (["", "", ""] if args.before else [])
                        + ([f"{aer.cpu / base.cpu:.1f}×" if aer and base and base.cpu else "–", "–"]))
        lines += [B.md_table(header, rows), ""]
        if r.get("aerleon") and r["aerleon"][1] and med.get(("compile", "after")):
            aer, fwm = r["aerleon"][1], med[("compile", "after")]
            lines += [f"Compile to nftables, fwmatrix ÷ Aerleon (CPU, the same matrix translated by bench/peer_aerleon.py): "
                      f"{fwm.cpu / aer.cpu:.2f}× ({fwm.cpu:.2f} s against {aer.cpu:.2f} s).", ""]
        if r.get("profile"):
            lines += ["Where compile's time goes, in one process (`bench/profile_compile.py MATRIX --no-gc`; the command "
                      "runs with the collector paused too):", "", "```", r["profile"], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--change", type=int, default=100)
    parser.add_argument("--remove", type=int, default=40)
    parser.add_argument("--rename", type=int, default=20)
    parser.add_argument("--before", metavar="TREE", help="a checkout of older code to measure in the same run")
    parser.add_argument("--before-label", default="", help="how to name TREE in the report (default: its commit)")
    parser.add_argument("--output", default=os.path.join(B.RESULTS_DIR, "speed.md"))
    parser.add_argument("--keep", metavar="DIR")
    parser.add_argument("--aerleon", metavar="VENV", nargs="?", const="",
                        help="also time Aerleon's aclgen on the 10,000-opening matrix (installed into VENV as bench/peer_aerleon.py does)")
    parser.add_argument("--works", default=",".join(WORKS), help=f"which to measure (default: all of {', '.join(WORKS)})")
    args = parser.parse_args(argv)
    args.works = tuple(w for w in WORKS if w in args.works.split(","))
    if args.before and not args.before_label:
        import subprocess

        head = subprocess.run(["git", "-C", args.before, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        args.before_label = head or args.before
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # see measure_size: runs read cached bytecode
    info = B.machine()
    workdir = args.keep or tempfile.mkdtemp(prefix="fwmatrix-speed-")
    os.makedirs(workdir, exist_ok=True)
    try:
        results = [measure_size(int(n), args, workdir) for n in args.sizes.split(",") if n]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, args, info)
    print(text)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write(text)
    B.log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
