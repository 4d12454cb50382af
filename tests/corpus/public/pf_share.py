#!/usr/bin/env python3
"""The unmodelled share of the public pf rulesets, read two ways, and what is left by construct.

1. bare: as `parse_ruleset(text)` reads a file alone (what tests/test_public_corpus.py counts);
2. with the firewall: as an audit reads it, knowing the firewall's interfaces and groups and
   their addresses (the matrix and --pf-interface / --pf-group). The corpus has no matrix, so
   every interface the ruleset filters on or names as an address gets a placeholder address
   (10.K.0.1/24, fd00:K::1/64) and every interface group the first of them as its member;
   the routes are the interfaces' networks and a default route out of that first one.
   Whether a rule is modelled does not depend on the addresses' values, only on whether they
   are known; what stays unmodelled needs more than the firewall's interfaces (anchors and
   tables loaded from files, route-to).

A rule counts as unmodelled when one of its matches is `Unmodelled` or its action an
`UnmodelledAction` (as in tests/test_public_corpus.py).

    python3 tests/corpus/public/pf_share.py [CORPUS_DIR]     (default: $FWMATRIX_PUBLIC_CORPUS)
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fwmatrix.backends.pf.convert import detect_dialect
from fwmatrix.backends.pf.reader import _Reader
from fwmatrix.backends.pf import parse_ruleset
from fwmatrix.ir import Ruleset, Unmodelled, UnmodelledAction


@dataclass
class Share:
    rules: int = 0
    unmodelled: int = 0
    constructs: Counter[str] = field(default_factory=Counter)

    @property
    def value(self) -> float:
        return self.unmodelled / self.rules if self.rules else 0.0

    def add(self, ruleset: Ruleset) -> None:
        for rule in (r for t in ruleset.tables for c in t.chains for r in c.rules):
            texts = [m.text for m in rule.matches if isinstance(m, Unmodelled)]
            if isinstance(rule.action, UnmodelledAction):
                texts.append(rule.action.text)
            self.rules += 1
            if texts:
                self.unmodelled += 1
                for text in {part for t in texts for part in t.split("; ")}:
                    self.constructs[_construct(text)] += 1


def _construct(text: str) -> str:
    """A construct's name without the file's own words (interfaces, tables, lines)."""
    text = re.sub(r"\S+\.conf:\d+", "FILE:LINE", text)
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r"<[^>]*>", "<…>", text)
    text = re.sub(r'"[^"]*"', '"…"', text)
    text = re.sub(r"\b[a-z]+\d+\b", "IF", text)
    return re.sub(r"\d+", "N", text)[:100]


def firewall_facts(text: str, source: str) -> dict[str, object]:
    """Placeholder addresses for every interface the ruleset names, and a member for every group."""
    reader = _Reader(source, detect_dialect(text), None, None)
    reader.read(text, source)
    names = sorted(reader.firewall_interfaces() | {m.group(1) for m in re.finditer(r"\(?\b([a-z]+\d+)(?::\w+)*\)?", text)
                                                    if m.group(1) in reader.seen_interfaces})
    names = [n for n in names if not re.fullmatch(r"lo\d*", n)] or ["em0"]
    addresses = {name: [f"10.{k + 1}.0.1/24", f"fd00:{k + 1}::1/64"] for k, name in enumerate(names)}
    groups = {group: (names[0],) for group in reader.seen_groups if group != "lo"}
    # routes: each interface's own network, and the default route out of the first
    return {"interfaces": tuple(names), "addresses": addresses, "groups": groups,
            "routes": {name: () for name in names}, "default_route": (names[0],)}


def measure(corpus: Path, names: set[str] | None = None) -> tuple[Share, Share, dict[str, tuple[int, int, int]]]:
    """Both shares over the corpus's pf/*.conf (only those named, when `names` is given)."""
    bare, known = Share(), Share()
    per_file: dict[str, tuple[int, int, int]] = {}
    for path in sorted(p for p in (corpus / "pf").glob("*.conf") if names is None or p.stem in names):
        text = path.read_text(encoding="utf-8")
        before = (bare.unmodelled, known.unmodelled)
        bare.add(parse_ruleset(text, str(path)))
        rules = known.rules
        known.add(parse_ruleset(text, str(path), **firewall_facts(text, str(path))))  # type: ignore[arg-type]
        per_file[path.stem] = (known.rules - rules, bare.unmodelled - before[0], known.unmodelled - before[1])
    return bare, known, per_file


def main(argv: list[str]) -> int:
    corpus = Path(argv[1] if len(argv) > 1 else os.environ.get("FWMATRIX_PUBLIC_CORPUS", "/work/corpus/public"))
    bare, known, per_file = measure(corpus)
    print(f"{'file':36} {'rules':>5} {'bare':>5} {'known':>5}")
    for name, (rules, b, k) in per_file.items():
        print(f"{name:36} {rules:5} {b:5} {k:5}")
    for title, share in (("bare", bare), ("with the firewall's interfaces", known)):
        print(f"\n{title}: {share.unmodelled}/{share.rules} rules unmodelled ({share.value:.1%})")
        for construct, count in share.constructs.most_common(25):
            print(f"  {count:4}  {construct}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
