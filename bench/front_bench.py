#!/usr/bin/env python3
"""The front end every command pays: YAML compose, load (the rest of load_matrix) and intent, by CPU.

    .venv/bin/python bench/front_bench.py MATRIX [--before TREE] [--rounds 9]

Each round runs, in a fresh process per side, what bench/profile_compile.py times as its
compose, load and intent phases (collector off): composing the file's nodes alone, then
load_matrix (which composes again: its compose time is subtracted), then build_intent. With
--before TREE (a checkout of an older commit), the same runs with TREE's fwmatrix, interleaved
round by round with the current code's. Prints the median and the minimum of each phase, and
of load + intent (the part this front end can change; compose is libyaml's parse and the nodes).
The first column, events, is compose's floor on PyYAML: pulling the parser's events alone
(libyaml's parse and PyYAML's event objects), nothing built from them.

With --instructions, each side's phases are counted in instructions instead (valgrind's
cachegrind, one process per phase, string hashing seeded): the same figure on a loaded machine
as on a quiet one, for changes of a few percent that CPU seconds here cannot tell from noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import gc, sys, time
import yaml
if sys.argv[1]:
    sys.path.insert(0, sys.argv[1])
gc.disable()
import fwmatrix.cli  # what a command imports
from fwmatrix.compile.intent import build_intent
from fwmatrix.matrix import yamlnodes
from fwmatrix.matrix.loader import load_matrix
assert not sys.argv[1] or fwmatrix.cli.__file__.startswith(sys.argv[1]), fwmatrix.cli.__file__
start = time.process_time()
parser = yaml.CSafeLoader(open(sys.argv[2], encoding="utf-8").read())
while parser.get_event() is not None:
    pass
parser.dispose()
events = time.process_time() - start
start = time.process_time()
yamlnodes.compose(yamlnodes.read_source(sys.argv[2]))
composed = time.process_time()
matrix = load_matrix(sys.argv[2])
loaded = time.process_time()
build_intent(matrix)
placed = time.process_time()
print(events, composed - start, (loaded - composed) - (composed - start), placed - loaded)
"""


# --instructions: one process runs the imports and then one of these; a phase is the
# difference between two of them (events and compose: against the imports alone)
STAGE = r"""
import gc, os, sys
import yaml
if sys.argv[1]:
    sys.path.insert(0, sys.argv[1])
gc.disable()
import fwmatrix.cli
from fwmatrix.compile.intent import build_intent
from fwmatrix.matrix import yamlnodes
from fwmatrix.matrix.loader import load_matrix
assert not sys.argv[1] or fwmatrix.cli.__file__.startswith(sys.argv[1]), fwmatrix.cli.__file__
stage = sys.argv[3]
if stage == "events":
    parser = yaml.CSafeLoader(open(sys.argv[2], encoding="utf-8").read())
    while parser.get_event() is not None:
        pass
elif stage == "compose":
    yamlnodes.compose(yamlnodes.read_source(sys.argv[2]))
elif stage in ("load", "intent"):
    matrix = load_matrix(sys.argv[2])
    if stage == "intent":
        build_intent(matrix)
os._exit(0)  # the phases, not the freeing at exit
"""
STAGES = ("imports", "events", "compose", "load", "intent")


def instructions(tree: str, matrix: str) -> dict[str, int]:
    """Instructions of each phase (events, compose, load without compose, intent)."""
    counts = {}
    for stage in STAGES:
        result = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                                 sys.executable, "-c", STAGE, tree, matrix, stage],
                                capture_output=True, text=True, check=True, env=os.environ | {"PYTHONHASHSEED": "0"})
        counts[stage] = int(next(line for line in result.stderr.splitlines() if "I   refs:" in line).split()[-1].replace(",", ""))
    return {"events": counts["events"] - counts["imports"], "compose": counts["compose"] - counts["imports"],
            "load": counts["load"] - counts["compose"], "intent": counts["intent"] - counts["load"]}


def measure(tree: str, matrix: str) -> tuple[float, float, float, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, tree, matrix], capture_output=True, text=True, check=True).stdout
    events, compose, load, intent = map(float, out.split())
    return events, compose, load, intent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("matrix")
    parser.add_argument("--before", metavar="TREE", help="a checkout of older code, measured in the same run")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--instructions", action="store_true", help="count instructions (valgrind) instead of timing")
    args = parser.parse_args(argv)
    sides = {"after": ""} | ({f"before ({os.path.abspath(args.before)})": os.path.abspath(args.before)} if args.before else {})
    if args.instructions:
        print(f"{os.path.basename(args.matrix)}, millions of instructions")
        print(f"{'side':<12} {'events':>10} {'compose':>10} {'load':>10} {'intent':>10} {'load+intent':>12}")
        for side, tree in sides.items():
            phases = instructions(tree, args.matrix)
            cells = [f"{phases[p] / 1e6:>10,.0f}" for p in ("events", "compose", "load", "intent")]
            print(f"{side.split(' ')[0]:<12} " + " ".join(cells) + f" {(phases['load'] + phases['intent']) / 1e6:>12,.0f}")
        return 0
    runs: dict[str, list[tuple[float, float, float, float]]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side, tree in sides.items():
            runs[side].append(measure(tree, args.matrix))
    print(f"{os.path.basename(args.matrix)}, {args.rounds} rounds, CPU s (median / min)")
    print(f"{'side':<12} {'events':>13} {'compose':>13} {'load':>13} {'intent':>13} {'load+intent':>13}")
    for side, rows in runs.items():
        columns = list(zip(*rows)) + [[load + intent for _, _, load, intent in rows]]
        cells = [f"{statistics.median(c):.3f} / {min(c):.3f}" for c in columns]
        print(f"{side.split(' ')[0]:<12} " + " ".join(f"{cell:>13}" for cell in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
