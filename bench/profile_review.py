#!/usr/bin/env python3
"""Where `fwmatrix diff` and `fwmatrix lint` spend their CPU, phase by phase.

    .venv/bin/python bench/profile_review.py lint MATRIX
    .venv/bin/python bench/profile_review.py diff OLD NEW

Runs the command (`--format json` to a temporary file) in this one process,
through the CLI as it runs, with the functions of its phases wrapped by a
CPU-time counter (user + system of this process), and prints per phase the CPU
seconds, the number of calls and the µs per call, then the collections the cyclic garbage
collector made after the command gave it back (commands pause it), with what
each found and cost. Phases nest (diff's `review` holds its spaces and ruleset
diffs, `_unified` the matcher's index of lines and its search for matching
blocks; lint's `_redundant` holds `_layers`): a phase's time includes those
inside it (loading holds composing the YAML, the openings' walk and the
resolver's check; `_compiled` the compile's `_flow_layers` and
`_disjoint_layers`). The phases called by the thousand (`flow_space`,
`BoxIndex.overlapping`) each add the wrapper's own ~1 µs per call to the phases
around them. bench/profile_compile.py does the same for compile, with cProfile.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
import tempfile
import time
from collections import Counter

PHASES = {
    "lint": {
        "fwmatrix.cli.common": ["load_matrix", "build_intent"],
        "fwmatrix.matrix.loader": ["compose", "_load_openings"],
        "fwmatrix.matrix.resolve:Resolver": ["check_all"],
        "fwmatrix.cli.review": ["emit"],
        "fwmatrix.review.lint": ["_flow_spaces", "flow_space", "_dmz_to_internet", "_redundant", "_layers", "_broad", "_unused"],
        "fwmatrix.space:BoxIndex": ["overlapping"],  # module:class
    },
    "diff": {
        "fwmatrix.cli.review": ["load_matrix", "build_intent", "review", "emit"],
        "fwmatrix.matrix.loader": ["compose", "_load_openings"],
        "fwmatrix.matrix.resolve:Resolver": ["check_all"],
        "fwmatrix.review.diff": ["_compiled", "_renames", "_opening_spaces", "flow_space", "_changed", "_opening_changes", "_unified"],
        "fwmatrix.compile.ruleset": ["_flow_layers", "_disjoint_layers"],
        "fwmatrix.backends.nftables": ["render_files"],
        "fwmatrix.space:Space": ["subtract", "lines"],
        "fwmatrix.review.textdiff:_RunMatcher": ["__init__", "get_matching_blocks"],
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(PHASES))
    parser.add_argument("matrices", nargs="+")
    args = parser.parse_args()
    seconds: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    start = time.process_time()
    from fwmatrix.cli import main as fwmatrix_main

    importlib.import_module("fwmatrix.cli.review")
    seconds["imports (cli, review)"] = time.process_time() - start
    for where, names in PHASES[args.command].items():
        module_name, _, class_name = where.partition(":")
        owner = importlib.import_module(module_name)
        if class_name:
            owner = getattr(owner, class_name)
        for name in names:
            _wrap(owner, name, f"{class_name or module_name.rsplit('.', 1)[-1]}.{name}", seconds, calls)
    collections: list[str] = []

    def collected(phase: str, info: dict) -> None:
        if phase == "start":
            collected.began = time.process_time()  # type: ignore[attr-defined]
        else:
            collections.append(f"generation {info['generation']}: {info['collected']} objects freed, "
                               f"{time.process_time() - collected.began:.3f} s")  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "report.json")
        gc.callbacks.append(collected)
        start = time.process_time()
        try:
            fwmatrix_main.main([args.command, *args.matrices, "--format", "json", "-o", out], standalone_mode=False)
        except SystemExit:
            pass
        seconds["the command, all"] = time.process_time() - start
        gc.callbacks.remove(collected)
    print(f"{'phase':32s} {'CPU s':>7s} {'calls':>7s} {'µs/call':>8s}")
    for name, value in seconds.items():
        count = calls[name]
        print(f"{name:32s} {value:7.3f} {count or '':>7} {f'{value / count * 1e6:8.1f}' if count > 2 else ''}")
    print("collections after the command:" if collections else "no collection after the command")
    for line in collections:
        print("  " + line)


def _wrap(owner: object, name: str, label: str, seconds: Counter[str], calls: Counter[str]) -> None:
    original = getattr(owner, name)

    def timed(*args: object, **kwargs: object) -> object:
        began = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[label] += time.process_time() - began
            calls[label] += 1

    setattr(owner, name, timed)


if __name__ == "__main__":
    sys.exit(main())
