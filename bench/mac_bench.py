#!/usr/bin/env python3
"""The cost of MAC atoms: evaluating an iptables-save file, with and without MAC matches.

    .venv/bin/python bench/mac_bench.py FILE [--before TREE] [--synth-macs] [--repeat 1] [--output bench/results/mac.md]

Each evaluation (parse_save, interfaces_of over the ruleset's own interfaces, evaluate)
runs as a whole process (CPU user + system, wall, peak RSS; bench/benchlib.py), with
this checkout's code and, with --before, with TREE's (bench/_at_tree.py), interleaved
run by run. --synth-macs also evaluates a copy of FILE whose values that are not MAC
addresses (published files hide theirs: `XX:XX:XX:XX:XX:XX`) are replaced by a distinct
MAC each, the most atoms such a file can make: what the file costs with its real MACs.
Writes the Markdown to --output and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

PLACEHOLDER = re.compile(r"(--mac-source\s+(?:!\s+)?)(\S+)")
MAC = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5}\Z")


def synthesized(text: str) -> tuple[str, int]:
    """The text with each --mac-source value that is not a MAC replaced by a distinct one."""
    count = 0

    def replace(m: re.Match) -> str:
        nonlocal count
        if MAC.match(m[2]):
            return m[0]
        count += 1
        return f"{m[1]}02:00:{count >> 24 & 255:02x}:{count >> 16 & 255:02x}:{count >> 8 & 255:02x}:{count & 255:02x}"

    return PLACEHOLDER.sub(replace, text), count


def evaluate_here(path: str) -> None:
    """In this process (the code of whatever tree is imported): print what one evaluation took."""
    from fwmatrix.audit.evaluate import evaluate, interfaces_of
    from fwmatrix.backends import iptables

    started = time.process_time()
    ruleset = iptables.parse_save(open(path, encoding="utf-8").read(), None, path)
    parsed = time.process_time()
    ifaces = interfaces_of(ruleset, [])
    effective = evaluate(ruleset, ifaces)
    done = time.process_time()
    print(json.dumps({"interfaces": len(ifaces.names), "macs": len(getattr(ifaces, "macs", ())), "bits": ifaces.all.bit_length(),
                      "parse": parsed - started, "evaluate": done - parsed, "unmodelled": len(effective.unmodelled),
                      "forwarded": len(effective.forwarded)}), file=sys.stderr)  # the launcher keeps stdout for its own


def argv_for(tree: str | None, path: str) -> list[str]:
    python = os.path.join(B.VENV_BIN, "python")
    if tree is None:
        return [python, os.path.abspath(__file__), "--evaluate", path]
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from _at_tree import _TreeFinder; "
            "sys.meta_path.insert(0, _TreeFinder(sys.argv[2])); import mac_bench; mac_bench.evaluate_here(sys.argv[3])")
    return [python, "-c", code, os.path.dirname(os.path.abspath(__file__)), os.path.abspath(tree), path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?")
    parser.add_argument("--evaluate", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--before", metavar="TREE")
    parser.add_argument("--synth-macs", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--output", default=os.path.join(B.RESULTS_DIR, "mac.md"))
    args = parser.parse_args()
    if args.evaluate:
        evaluate_here(args.evaluate)
        return
    if not args.file:
        parser.error("give an iptables-save FILE")
    info = B.machine()
    files = [("as published", os.path.abspath(args.file))]
    scratch = tempfile.mkdtemp(prefix="fwm-macbench-")
    if args.synth_macs:
        text, count = synthesized(open(args.file, encoding="utf-8").read())
        path = os.path.join(scratch, "synthesized.ipt")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        files.append((f"{count} placeholders as distinct MACs", path))
    codes = [("after", None)] + ([("before", args.before)] if args.before else [])
    rows = []
    for label, path in files:
        results: dict[str, list[tuple[B.Run, dict]]] = {code: [] for code, _ in codes}
        for i in range(args.repeat):
            for code, tree in codes:  # interleaved, run by run
                measured = B.measure(argv_for(tree, path), args.timeout)
                figures = _figures(measured)
                results[code].append((measured, figures))
                B.log(f"[{label}] {code} run {i + 1}: {measured.wall:.1f} s wall, {measured.cpu:.1f} s CPU, {measured.rss_mb:.0f} MB, "
                      f"exit {measured.returncode}, {figures}")
        for code, _ in codes:
            ordered = sorted(results[code], key=lambda pair: pair[0].cpu)
            measured, figures = ordered[(len(ordered) - 1) // 2]
            rows.append([label, code, str(figures.get("interfaces", "–")), str(figures.get("macs", "–")), str(figures.get("bits", "–")),
                         f"{measured.cpu:.1f}", f"{measured.wall:.1f}", f"{measured.rss_mb:.0f}",
                         f"{figures['evaluate']:.1f}" if "evaluate" in figures else measured.error_line(), str(len(ordered))])
    lines = ["# The cost of MAC atoms (bench/mac_bench.py)", "", *B.machine_lines(info),
             f"- file: `{os.path.basename(args.file)}`; before: {args.before or '–'} (bench/_at_tree.py); each a whole process, "
             "interleaved, median by CPU", "",
             B.md_table(["ruleset", "code", "interfaces", "MACs", "bits of a mask", "CPU s", "wall s", "peak MB", "evaluate CPU s", "runs"], rows), ""]
    text = "\n".join(lines)
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)


def _figures(measured: B.Run) -> dict:
    """The evaluation's own figures, from the JSON line it printed on standard error."""
    for line in reversed(measured.stderr.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


if __name__ == "__main__":
    main()
