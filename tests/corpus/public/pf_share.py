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
3. with companions: as 2, and the anchors and tables the ruleset loads from files its own
   repository publishes (COMPANIONS.tsv; fetch.py puts them under CORPUS/companions), given as
   --pf-anchor / --pf-table would give them. A separate figure: 2 stays what a file alone says.

A rule counts as unmodelled when one of its matches is `Unmodelled` or its action an
`UnmodelledAction` (as in tests/test_public_corpus.py). Counted two ways:
- IR rules (the figure tests/test_public_corpus.py holds to its ceiling): one pf rule becomes
  an IR rule in each chain it may act in (in, out, the nat chain, the firewall's own input and
  source NAT chains), of each family its addresses say, and the reader adds rules of its own
  (pf's state table in each chain, the input chain's head), counted as modelled;
- pf rules as written: each FILE:LINE of the ruleset or of an anchor's file that became IR
  rules, unmodelled when any of them is (its replies' or translated packets' rules too); the
  reader's own rules are not counted.

    python3 tests/corpus/public/pf_share.py [CORPUS_DIR]

CORPUS_DIR defaults to $FWMATRIX_PUBLIC_CORPUS (the corpus fetch.py fetched), else to the
files vendored in tests/corpus/public/files (those whose licence allows them here).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fwmatrix.backends.pf.convert import detect_dialect
from fwmatrix.backends.pf.reader import _Reader
from fwmatrix.backends.pf import parse_ruleset
from fwmatrix.errors import BackendError
from fwmatrix.ir import Ruleset, Unmodelled, UnmodelledAction


_WRITTEN_RE = re.compile(r"^(.*?:\d+)")  # an IR rule's origin: FILE:LINE, then what it is beside the rule


@dataclass
class Share:
    rules: int = 0
    unmodelled: int = 0
    constructs: Counter[str] = field(default_factory=Counter)
    # pf rules as written (FILE:LINE) -> the unmodelled constructs of the IR rules made from it
    written: dict[str, set[str]] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return self.unmodelled / self.rules if self.rules else 0.0

    @property
    def written_unmodelled(self) -> int:
        return sum(1 for texts in self.written.values() if texts)

    @property
    def written_value(self) -> float:
        return self.written_unmodelled / len(self.written) if self.written else 0.0

    def written_constructs(self) -> Counter[str]:
        return Counter(construct for texts in self.written.values() for construct in texts)

    def add(self, ruleset: Ruleset) -> None:
        for rule in (r for t in ruleset.tables for c in t.chains for r in c.rules):
            texts = [m.text for m in rule.matches if isinstance(m, Unmodelled)]
            if isinstance(rule.action, UnmodelledAction):
                texts.append(rule.action.text)
            constructs = {_construct(part) for t in texts for part in t.split("; ")}
            self.rules += 1
            if texts:
                self.unmodelled += 1
                self.constructs.update(constructs)
            written = _WRITTEN_RE.match(rule.origin)
            if written is not None:  # (none: pf's state table, the input chain's head)
                self.written.setdefault(written.group(1), set()).update(constructs)


def _construct(text: str) -> str:
    """A construct's name without the file's own words (interfaces, tables, lines)."""
    text = re.sub(r"\S+\.conf:\d+", "FILE:LINE", text)
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r"<[^>]*>", "<…>", text)
    text = re.sub(r'"[^"]*"', '"…"', text)
    text = re.sub(r"\b[a-z]+\d+\b", "IF", text)
    return re.sub(r"\d+", "N", text)[:100]


def firewall_facts(text: str, source: str, anchors: dict[str, str] | None = None) -> dict[str, object]:
    """Placeholder addresses for every interface the ruleset names (its anchors' too, when
    given), and a member for every group."""
    reader = _Reader(source, detect_dialect(text), None, anchors)
    reader.read(text, source)
    names = sorted(reader.firewall_interfaces() | {m.group(1) for m in re.finditer(r"\(?\b([a-z]+\d+)(?::\w+)*\)?", text)
                                                    if m.group(1) in reader.seen_interfaces})
    names = [n for n in names if not re.fullmatch(r"lo\d*", n)] or ["em0"]
    addresses = {name: [f"10.{k + 1}.0.1/24", f"fd00:{k + 1}::1/64"] for k, name in enumerate(names)}
    groups = {group: (names[0],) for group in reader.seen_groups if group != "lo"}
    # routes: each interface's own network, and the default route out of the first
    return {"interfaces": tuple(names), "addresses": addresses, "groups": groups,
            "routes": {name: () for name in names}, "default_route": (names[0],)}


def _fetch_module():
    # loaded by path: tests/corpus/registry has a module named fetch too
    spec = importlib.util.spec_from_file_location("public_corpus_fetch", Path(__file__).resolve().parent / "fetch.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def companions(corpus: Path, name: str) -> dict[str, dict[str, str]]:
    """The anchors and tables COMPANIONS.tsv lists for ruleset `name`, as parse_ruleset's
    `anchors` and `tables` (those fetched: a missing file is left out, so stays unmodelled)."""
    fetch = _fetch_module()
    given: dict[str, dict[str, str]] = {"anchors": {}, "tables": {}}
    for row in fetch.read_tsv(fetch.COMPANIONS):
        path = fetch.companion_path(corpus, row)
        if row["ruleset"] == name and path.exists():
            given["anchors" if row["kind"] == "anchor" else "tables"][row["name"]] = path.read_text(encoding="utf-8")
    return given


def measure(corpus: Path, names: set[str] | None = None, with_companions: Share | None = None) -> tuple[Share, Share, dict[str, tuple[int, ...]]]:
    """Both shares over the corpus's pf/*.conf (only those named, when `names` is given); the
    third (with companions) added to `with_companions` when given."""
    bare, known = Share(), Share()
    per_file: dict[str, tuple[int, ...]] = {}
    for path in sorted(p for p in (corpus / "pf").glob("*.conf") if names is None or p.stem in names):
        text = path.read_text(encoding="utf-8")
        before = (bare.unmodelled, known.unmodelled)
        try:
            bare.add(parse_ruleset(text, str(path)))
        except BackendError:
            continue  # refused: tests/test_public_corpus.py says why
        rules = known.rules
        facts = firewall_facts(text, str(path))
        known.add(parse_ruleset(text, str(path), **facts))  # type: ignore[arg-type]
        per_file[path.stem] = (known.rules - rules, bare.unmodelled - before[0], known.unmodelled - before[1])
        if with_companions is not None:
            rules, unmodelled = with_companions.rules, with_companions.unmodelled
            given = companions(corpus, path.stem)
            facts = firewall_facts(text, str(path), given["anchors"]) if given["anchors"] else facts
            with_companions.add(parse_ruleset(text, str(path), **facts, **given))  # type: ignore[arg-type]
            per_file[path.stem] += (with_companions.rules - rules, with_companions.unmodelled - unmodelled)
    return bare, known, per_file


def main(argv: list[str]) -> int:
    corpus = Path(argv[1] if len(argv) > 1 else os.environ.get("FWMATRIX_PUBLIC_CORPUS") or Path(__file__).resolve().parent / "files")
    given = Share()
    fetch = _fetch_module()
    listed = {row["name"] for row in fetch.read_tsv(fetch.MANIFEST) if row["family"] == "pf"}
    bare, known, per_file = measure(corpus, listed, with_companions=given)
    refused = sorted(listed - set(per_file))
    if refused:
        print(f"not measured (missing or refused): {', '.join(refused)}")
    print(f"{'file':36} {'rules':>5} {'bare':>5} {'known':>5}   {'rules':>5} {'with companions':>5}")
    for name, (rules, b, k, c_rules, c) in per_file.items():
        print(f"{name:36} {rules:5} {b:5} {k:5}   {c_rules:5} {c:5}")
    for title, share in (("bare", bare), ("with the firewall's interfaces", known),
                         ("with the firewall's interfaces and the companions (COMPANIONS.tsv)", given)):
        print(f"\n{title}: {share.unmodelled}/{share.rules} IR rules unmodelled ({share.value:.1%}); "
              f"pf rules as written: {share.written_unmodelled}/{len(share.written)} ({share.written_value:.1%})")
        print("  IR rules  pf rules  construct")
        written = share.written_constructs()
        for construct, count in share.constructs.most_common(25):
            print(f"  {count:8}  {written[construct]:8}  {construct}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
