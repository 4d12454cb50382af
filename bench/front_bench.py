#!/usr/bin/env python3
"""The front end every command pays: YAML compose, load (the rest of load_matrix) and intent, by CPU.

    .venv/bin/python bench/front_bench.py MATRIX [--before TREE] [--rounds 9]

Each round runs, in a fresh process per side, what bench/profile_compile.py times as its
compose, load and intent phases (collector off): composing the file's nodes alone, then
load_matrix (which composes again: its compose time is subtracted), then build_intent. With
--before TREE (a checkout of an older commit), the same runs with TREE's fwmatrix, interleaved
round by round with the current code's. Prints the median and the minimum of each phase, and
of load + intent (the part this front end can change; compose is libyaml's parse and the nodes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import gc, sys, time
if sys.argv[1]:
    sys.path.insert(0, sys.argv[1])
gc.disable()
import fwmatrix.cli  # what a command imports
from fwmatrix.compile.intent import build_intent
from fwmatrix.matrix import yamlnodes
from fwmatrix.matrix.loader import load_matrix
assert not sys.argv[1] or fwmatrix.cli.__file__.startswith(sys.argv[1]), fwmatrix.cli.__file__
start = time.process_time()
yamlnodes.compose(yamlnodes.read_source(sys.argv[2]))
composed = time.process_time()
matrix = load_matrix(sys.argv[2])
loaded = time.process_time()
build_intent(matrix)
placed = time.process_time()
print(composed - start, (loaded - composed) - (composed - start), placed - loaded)
"""


def measure(tree: str, matrix: str) -> tuple[float, float, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, tree, matrix], capture_output=True, text=True, check=True).stdout
    compose, load, intent = map(float, out.split())
    return compose, load, intent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("matrix")
    parser.add_argument("--before", metavar="TREE", help="a checkout of older code, measured in the same run")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    sides = {"after": ""} | ({f"before ({os.path.abspath(args.before)})": os.path.abspath(args.before)} if args.before else {})
    runs: dict[str, list[tuple[float, float, float]]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side, tree in sides.items():
            runs[side].append(measure(tree, args.matrix))
    print(f"{os.path.basename(args.matrix)}, {args.rounds} rounds, CPU s (median / min)")
    print(f"{'side':<12} {'compose':>13} {'load':>13} {'intent':>13} {'load+intent':>13}")
    for side, rows in runs.items():
        columns = list(zip(*rows)) + [[load + intent for _, load, intent in rows]]
        cells = [f"{statistics.median(c):.3f} / {min(c):.3f}" for c in columns]
        print(f"{side.split(' ')[0]:<12} " + " ".join(f"{cell:>13}" for cell in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
