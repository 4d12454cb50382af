#!/usr/bin/env python3
"""What the audit's missing check would cost over the forward chain's whole accept matches (a probe, not a feature).

    .venv/bin/python bench/whole_match_probe.py MATRIX NFT_JSON_LISTING [--firewall edge]

The missing check asks, of every opening's boxes, whether they lie within the forwarded set's
new connections (audit/within.py over the coalesced grants). A grant is what its rule takes of
the packets earlier rules left, so a network rule after many host rules is thousands of pieces,
and a network-to-network opening is tested against all of them (bench/results/speed.md, this
issue's last section). This runs the audit once, recording the boxes that check asks and the
whole match of every accept rule the walk meets, and then asks the same boxes of a Within built
over those whole matches (coalesced, in the new states), printing the time and the boxes not
shown by each.

Only a measure for a ruleset whose forward chain is accepts alone (the naive bench listings:
`ct state established,related accept`, then one accept per opening row), where the union of the
whole matches is the forwarded set itself. It says nothing about exactness elsewhere: rules that
drop before an accept, other chains on the way, judged-both-ways rules and the reading's
transformations are what a real implementation must carry through (and prove).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fwmatrix import cli  # noqa: E402,F401  (what the command imports)
from fwmatrix.audit import findings  # noqa: E402
from fwmatrix.audit.evaluate import chains  # noqa: E402
from fwmatrix.compile.intent import build_intent  # noqa: E402
from fwmatrix.gcpause import gc_paused  # noqa: E402
from fwmatrix.ir import Verdict  # noqa: E402
from fwmatrix.matrix.loader import load_matrix  # noqa: E402
from fwmatrix.space import Space  # noqa: E402
from fwmatrix.targets import backend  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("matrix")
    parser.add_argument("listing", help="an `nft -j list ruleset` listing")
    parser.add_argument("--firewall", default="edge")
    args = parser.parse_args()

    whole: dict[int, Space] = {}  # accept rule (by id) -> its match
    rule_space = chains.rule_space

    def recording_rule_space(reading, table, rule, origin):  # type: ignore[no-untyped-def]
        found = rule_space(reading, table, rule, origin)
        if found is not None and isinstance(rule.action, Verdict) and rule.action.kind == "accept":
            whole[id(rule)] = found[0]
        return found

    asked: list["_Asked"] = []

    class _Asked(findings.Within):  # type: ignore[misc]
        def __init__(self, space: Space) -> None:
            super().__init__(space)
            self.space, self.seconds, self.boxes, self.not_shown = space, 0.0, [], 0
            asked.append(self)

        def holds_all(self, boxes):  # type: ignore[no-untyped-def]
            boxes = list(boxes)
            start = time.process_time()
            held = super().holds_all(boxes)
            self.seconds += time.process_time() - start
            self.boxes.append(boxes)
            self.not_shown += not held
            return held

    chains.rule_space = recording_rule_space
    plain_within, findings.Within = findings.Within, _Asked
    with gc_paused():
        intent = build_intent(load_matrix(args.matrix))
        with open(args.listing, encoding="utf-8") as handle:
            ruleset = backend("nftables").parse_json(json.load(handle))
        findings.audit(intent, args.firewall, ruleset, args.listing)
        missing = asked[0]  # the first Within the audit makes is the missing check's
        count = sum(map(len, missing.boxes))
        print(f"grants (as the audit has them): holds_all {missing.seconds:.2f} s CPU over {count:,} boxes, "
              f"{missing.not_shown} openings not shown")
        start = time.process_time()
        matches = Space(missing.space.ifaces, [b for space in whole.values() for b in space.boxes])
        over = plain_within(findings._in_states(matches.coalesced(), findings.CT_NEW | findings.CT_NEW_DNAT))
        built = time.process_time() - start
        start = time.process_time()
        not_shown = sum(not over.holds_all(boxes) for boxes in missing.boxes)
        print(f"whole matches of {len(whole):,} accept rules ({len(matches.boxes):,} boxes): built in {built:.2f} s, "
              f"holds_all {time.process_time() - start:.2f} s CPU, {not_shown} openings not shown")


if __name__ == "__main__":
    main()
