#!/usr/bin/env python3
"""Where `fwmatrix compile` spends its time and memory, phase by phase.

    .venv/bin/python bench/profile_compile.py MATRIX [--backend B] [--cprofile FILE] [--top N]

Runs what `fwmatrix compile MATRIX --out-dir DIR --backend B` (default nftables) runs, through the
same functions, in this one process, and prints per phase the wall time, the
CPU time (the figure to compare on a loaded machine) and the peak RSS so far:

  import        importing fwmatrix (click, rich, netaddr, yaml ...)
  compose       read the file and build PyYAML's node tree (libyaml parser)
  load          the rest of load_matrix: walking the nodes, validating,
                resolving every reference (Resolver.check_all)
  intent        build_intent: placing openings on firewalls
  compile       compile_intent: intents -> Ruleset IR (sets, layers, maps)
  render        the backend's text
  write         writing the files

With --no-gc, Python's cyclic garbage collector is off for the whole run
(what `gc.disable()` or `gc.freeze()` in the command would give: the matrix's
node tree and the IR are millions of long-lived objects that every full
collection walks again). The collections counted are printed either way.

With --cprofile, the whole thing also runs under cProfile and the top
functions by cumulative and by own time are printed (and the raw profile
saved to FILE for snakeviz/pstats).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import resource
import sys
import tempfile
import time


def rss_mb() -> float:
    """This process's peak RSS: VmHWM, which (unlike ru_maxrss) does not start
    from the peak of the process that started us."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(matrix: str, outdir: str, backend_name: str = "nftables") -> list[tuple[str, float, float, float]]:
    phases: list[tuple[str, float, float, float]] = []  # name, wall, CPU, peak RSS so far
    t, c = time.perf_counter(), time.process_time()

    def mark(name: str) -> None:
        nonlocal t, c
        now, cpu = time.perf_counter(), time.process_time()
        phases.append((name, now - t, cpu - c, rss_mb()))
        t, c = now, cpu

    from fwmatrix import cli  # noqa: F401  (what the command imports)
    from fwmatrix.compile.ruleset import compile_intent
    from fwmatrix.compile.intent import build_intent
    from fwmatrix.matrix.loader import load_matrix
    from fwmatrix.targets import backend
    from fwmatrix.matrix import yamlnodes

    mark("import")
    yamlnodes.compose(yamlnodes.read_source(matrix))
    mark("compose")
    t_load, c_load = time.perf_counter(), time.process_time()
    m = load_matrix(matrix)  # composes again: its own compose time is subtracted below
    load_total, load_cpu = time.perf_counter() - t_load, time.process_time() - c_load
    phases.append(("load", max(0.0, load_total - phases[-1][1]), max(0.0, load_cpu - phases[-1][2]), rss_mb()))
    t, c = time.perf_counter(), time.process_time()
    intent = build_intent(m)
    mark("intent")
    rulesets = compile_intent(intent)
    mark("compile")
    files = {}
    target = backend(backend_name)
    for name, ruleset in rulesets.items():
        for suffix, text in target.render_files(ruleset).items():
            files[f"{name}{suffix}"] = text
    mark("render")
    cli.write_atomically(outdir, files)
    mark("write")
    return phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("matrix")
    parser.add_argument("--backend", default="nftables", choices=("nftables", "iptables", "pf"))
    parser.add_argument("--cprofile", metavar="FILE", help="also profile with cProfile; save the raw profile here")
    parser.add_argument("--no-gc", action="store_true", help="run with the cyclic garbage collector off")
    parser.add_argument("--top", type=int, default=35, help="functions to list from the profile")
    args = parser.parse_args(argv)
    outdir = tempfile.mkdtemp(prefix="fwmatrix-profile-")
    if args.no_gc:
        gc.disable()
    start = time.perf_counter()
    profiler = cProfile.Profile() if args.cprofile else None
    if profiler:
        profiler.enable()
    phases = run(args.matrix, outdir, args.backend)
    if profiler:
        profiler.disable()
    total = time.perf_counter() - start
    cpu_total = sum(cpu for _, _, cpu, _ in phases)
    print(f"{'phase':<10} {'seconds':>8} {'CPU s':>8} {'share':>6} {'peak RSS so far (MB)':>21}")
    for name, seconds, cpu, rss in phases:
        print(f"{name:<10} {seconds:8.3f} {cpu:8.3f} {cpu / cpu_total:6.0%} {rss:21.0f}")
    print(f"{'total':<10} {total:8.3f} {cpu_total:8.3f}  (in-process; add interpreter start-up for the whole command; share: of CPU)"
          + ("  [under cProfile: everything is slower]" if profiler else ""))
    collections = [stat["collections"] for stat in gc.get_stats()]
    print(f"garbage collector {'off' if args.no_gc else 'on'}: collections per generation {collections}")
    if profiler:
        profiler.dump_stats(args.cprofile)
        for key in ("cumulative", "tottime"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(key).print_stats(args.top)
            text = out.getvalue()
            print(f"\n--- top {args.top} by {key} ---")
            print(text[text.find("   ncalls"):].rstrip())
    for name in os.listdir(outdir):
        os.unlink(os.path.join(outdir, name))
    os.rmdir(outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
