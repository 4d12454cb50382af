"""Canonical regions (fwmatrix.space.canon) on hostile spaces, by CPU: how long `Space.regions()` takes.

    .venv/bin/python bench/canon_hostile.py [--n 10000] [--seed 1]

- holes: every packet ("any") minus N scattered host pairs (IPv4 source and destination), the
  space the walk leaves after N narrow rules;
- overlapping: N boxes that all overlap (source and destination ranges that all hold one
  address, each shifted by one: a staircase, a distinct cross-section per source segment);
- shuffled: the holes' boxes shuffled and cut again (the same set: the same regions).
"""

from __future__ import annotations

import argparse
import random
import time

from fwmatrix.space import V4_BASE, Interfaces, Space


def holes(ifaces: Interfaces, n: int, rng: random.Random) -> Space:
    full = Space.full(ifaces)
    hosts = [(V4_BASE + rng.randrange(1 << 32), V4_BASE + rng.randrange(1 << 32)) for _ in range(n)]
    removed = Space(ifaces, [b for s, d in hosts for b in full.make(src=((s, s),), dst=((d, d),)).boxes])
    return full.subtract(removed)


def overlapping(ifaces: Interfaces, n: int, rng: random.Random) -> Space:
    middle = V4_BASE + (1 << 31)
    full = Space.full(ifaces)
    boxes = []
    for i in range(n):
        low = middle - n + i
        boxes += full.make(src=((low, low + n),), dst=((low, low + n),), proto=((6, 6),)).boxes
    return Space(ifaces, boxes)


def timed(name: str, space: Space) -> list:
    start = time.process_time()
    regions = space.regions()
    took = time.process_time() - start
    print(f"{name}: {len(space.boxes):,} boxes -> {len(regions):,} regions, {took:.2f} s CPU")
    return list(regions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ifaces = Interfaces.of(["wan0", "lan0"])
    space = holes(ifaces, args.n, rng)
    first = timed("holes", space)
    boxes = list(space.boxes)
    rng.shuffle(boxes)
    cut = Space(ifaces, boxes).subtract(Space(ifaces, [])).union(Space(ifaces, boxes[: len(boxes) // 2]))
    again = timed("holes, shuffled and half repeated", cut)
    print("same regions:", again == first and [r.fields for r in again] == [r.fields for r in first])
    timed("overlapping", overlapping(ifaces, args.n, rng))


if __name__ == "__main__":
    main()
