#!/usr/bin/env python3
"""A reviewed change of a generated matrix, for the diff benchmark.

    .venv/bin/python bench/mutate_matrix.py MATRIX -o NEW [--change 100] [--remove 40] [--rename 20]

Edits the `openings:` of a bench/gen_matrix.py matrix as a person would in a
change request, deterministically (evenly spaced openings, no randomness):
`--change` openings get another service (a literal TCP port of their own),
`--remove` openings are deleted, `--rename` openings only change name (the
review must pair them up by their traffic: `review._fingerprint`). Standard
library only; works on the generator's layout (`  - ` rows).
"""

from __future__ import annotations

import argparse
import sys


def mutate(text: str, change: int, remove: int, rename: int) -> str:
    lines = text.splitlines(keepends=True)
    head = lines.index("openings:\n") + 1
    rows: list[list[str]] = []  # each opening's lines
    for line in lines[head:]:
        if line.startswith("  - "):
            rows.append([line])
        elif rows and line.startswith("    "):
            rows[-1].append(line)
        else:
            raise SystemExit(f"error: unexpected line in openings: {line!r}")
    n = len(rows)
    every = max(1, n // max(1, change + remove + rename))
    picked = list(range(every // 2, n, every))
    changes, removals = picked[:change], picked[change : change + remove]
    # only named openings can be renamed (unnamed ones are named by their position)
    renames = [i for i in picked[change + remove :] if rows[i][0].startswith("  - name: ")][:rename]
    for k, i in enumerate(changes):
        rows[i] = [f"    service: tcp/{20000 + k}\n" if line.startswith("    service:") else line for line in rows[i]]
    for i in renames:
        rows[i][0] = rows[i][0].rstrip("\n") + "-renamed\n"
    gone = set(removals)
    return "".join(lines[:head]) + "".join("".join(row) for i, row in enumerate(rows) if i not in gone)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("matrix")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--change", type=int, default=100)
    parser.add_argument("--remove", type=int, default=40)
    parser.add_argument("--rename", type=int, default=20)
    args = parser.parse_args(argv)
    with open(args.matrix, encoding="utf-8") as handle:
        text = handle.read()
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write(mutate(text, args.change, args.remove, args.rename))
    return 0


if __name__ == "__main__":
    sys.exit(main())
