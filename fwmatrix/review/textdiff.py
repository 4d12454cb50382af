"""The unified diff of two rendered rulesets: difflib's hunks, exactly, found in less time.

difflib.unified_diff asks SequenceMatcher for its matching blocks, and the
matcher finds each block by scanning every line of the range it is given
(`find_longest_match`), once per level of its recursion: at 10,000 openings,
2.6 million dictionary lookups for 77,000 lines of which a few hundred changed.
`_RunMatcher` answers the same question from runs of matching lines found
once: a block within a range is a run cut to that range, so difflib's block
is the longest cut run, the first of them in its own scanning order. Every
other step (which lines are too common to match, the recursion, the opcodes,
the hunks and their context) is difflib's own; `unified` writes the hunks as
difflib.unified_diff does. tests/test_textdiff.py checks both against difflib.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

Run = tuple[int, int, int]  # (first line in a, first line in b, length): a[i + t] == b[j + t] for t < length


class _RunMatcher(difflib.SequenceMatcher):
    """difflib's SequenceMatcher (no junk; its too-common lines, autojunk), its longest matches
    found among runs of matching lines, found once, rather than by a scan of each range.

    At first the runs are those that hold a line b has once (`_anchored_runs`, one pass):
    the answer is theirs when one is longer than any run of lines b has more than once can
    be. Otherwise every run within the range is found (the scan difflib would make there),
    and the ranges within it ask their runs of that list; unless the range's lines repeat so
    much that its runs outnumber its lines twice over: then it and the ranges within it are
    difflib's own scan, which keeps no runs."""

    def __init__(self, a: Sequence[str], b: Sequence[str]):
        super().__init__(None, a, b)
        self._anchored, self._longest_unanchored = _anchored_runs(self.a, self.b, self.b2j)
        # range -> (the runs that may meet it, whether they are all its runs; None: scan it),
        # filed when the range that holds it is answered: the order of difflib's recursion does not matter
        self._runs_within: dict[tuple[int, int, int, int], tuple[list[Run] | None, bool]] = {}

    def find_longest_match(self, alo: int = 0, ahi: int | None = None, blo: int = 0, bhi: int | None = None) -> difflib.Match:
        a, b = self.a, self.b
        ahi = len(a) if ahi is None else ahi
        bhi = len(b) if bhi is None else bhi
        runs, complete = self._runs_within.pop((alo, ahi, blo, bhi), (self._anchored, not self._longest_unanchored))
        if runs is not None:
            besti, bestj, bestsize = _longest_cut(runs, alo, ahi, blo, bhi)
            if not complete and bestsize <= self._longest_unanchored:  # a run the list lacks may be as long
                runs, complete = _all_runs(a, self.b2j, alo, ahi, blo, bhi, 2 * (ahi - alo) + 64), True
                if runs is not None:
                    besti, bestj, bestsize = _longest_cut(runs, alo, ahi, blo, bhi)
        if runs is None:
            besti, bestj, bestsize = super().find_longest_match(alo, ahi, blo, bhi)
        else:
            # as difflib: stretched over equal lines its index leaves out (too common)
            while besti > alo and bestj > blo and a[besti - 1] == b[bestj - 1]:
                besti, bestj, bestsize = besti - 1, bestj - 1, bestsize + 1
            while besti + bestsize < ahi and bestj + bestsize < bhi and a[besti + bestsize] == b[bestj + bestsize]:
                bestsize += 1
        if bestsize:
            # the ranges difflib asks about next (get_matching_blocks): a run meets at most one
            # of them, since one meeting both would be longer than this longest block
            i, j, k = besti, bestj, bestsize
            self._runs_within[(alo, i, blo, j)] = (None if runs is None else
                [r for r in runs if r[0] < i and r[1] < j and r[0] + r[2] > alo and r[1] + r[2] > blo], complete)
            self._runs_within[(i + k, ahi, j + k, bhi)] = (None if runs is None else
                [r for r in runs if r[0] + r[2] > i + k and r[1] + r[2] > j + k and r[0] < ahi and r[1] < bhi], complete)
        return difflib.Match(besti, bestj, bestsize)


def _longest_cut(runs: list[Run], alo: int, ahi: int, blo: int, bhi: int) -> Run:
    """The longest of the runs cut to a[alo:ahi] and b[blo:bhi] that difflib's scan would
    keep: it scans i upward, then j upward, and keeps a block only when it is longer than the
    best so far, so of the longest, the one that ends first in a, then in b. (alo, blo, 0) if none."""
    besti, bestj, bestsize = alo, blo, 0
    best_end = (ahi, bhi)
    for i, j, length in runs:
        skip = max(alo - i, blo - j, 0)
        size = min(ahi - i, bhi - j, length) - skip
        if size <= 0 or size < bestsize:
            continue
        end = (i + skip + size, j + skip + size)
        if size > bestsize or end < best_end:
            besti, bestj, bestsize, best_end = i + skip, j + skip, size, end
    return besti, bestj, bestsize


def _anchored_runs(a: Sequence[str], b: Sequence[str], b2j: dict[str, list[int]]) -> tuple[list[Run], int]:
    """The maximal runs of lines a[i + t] == b[j + t] that difflib's index pairs up (b2j) and
    that hold a line b has once, found from those lines; and the most lines in a row of b
    that b has more than once, the longest any other run can be."""
    runs: list[Run] = []
    la, lb = len(a), len(b)
    i = 0
    while i < la:
        js = b2j.get(a[i])
        if js is None or len(js) != 1:
            i += 1
            continue
        j = js[0]
        start = 0
        while i - start > 0 and j - start > 0 and a[i - start - 1] == b[j - start - 1] and b[j - start - 1] in b2j:
            start += 1
        stop = 1
        while i + stop < la and j + stop < lb and a[i + stop] == b[j + stop] and b[j + stop] in b2j:
            stop += 1
        runs.append((i - start, j - start, start + stop))
        # a line b has once that lies in this run pairs with b on this run's diagonal: no
        # other run starts from it
        i += stop
    repeated = sorted(j for js in b2j.values() if len(js) > 1 for j in js)
    longest = row = 0
    for k, j in enumerate(repeated):
        row = row + 1 if k and repeated[k - 1] == j - 1 else 1
        longest = max(longest, row)
    return runs, longest


def _all_runs(a: Sequence[str], b2j: dict[str, list[int]], alo: int, ahi: int, blo: int, bhi: int, most: int) -> list[Run] | None:
    """Every run of lines that difflib's index pairs up, cut to a[alo:ahi] and b[blo:bhi]:
    difflib's scan of the range, once; None when there are more than `most`."""
    runs: list[list[int]] = []
    open_runs: dict[int, list[int]] = {}  # line of b -> the run whose last pair ends there
    nothing: list[int] = []
    for i in range(alo, ahi):
        continuing: dict[int, list[int]] = {}
        for j in b2j.get(a[i], nothing):
            if j < blo:
                continue
            if j >= bhi:
                break
            run = open_runs.get(j - 1)
            if run is None:
                if len(runs) == most:
                    return None
                run = [i, j, 0]
                runs.append(run)
            run[2] += 1
            continuing[j] = run
        open_runs = continuing
    return [(i, j, length) for i, j, length in runs]


def unified(before: str, after: str, fromfile: str, tofile: str, context: int = 3) -> str:
    """difflib.unified_diff(before's lines, after's lines, fromfile, tofile), joined."""
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    out: list[str] = []
    for group in _RunMatcher(a, b).get_grouped_opcodes(context):
        if not out:
            out += [f"--- {fromfile}\n", f"+++ {tofile}\n"]
        first, last = group[0], group[-1]
        out.append(f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@\n")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out += [" " + line for line in a[i1:i2]]
                continue
            if tag in ("replace", "delete"):
                out += ["-" + line for line in a[i1:i2]]
            if tag in ("replace", "insert"):
                out += ["+" + line for line in b[j1:j2]]
    return "".join(out)


def _range(start: int, stop: int) -> str:
    """A hunk's range as unified diffs write it: 'first,count', the count left out when 1,
    an empty range named by the line before it."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"
