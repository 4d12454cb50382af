"""Rulesets others wrote and ship in Debian packages, read and probed in every test run, CI too.

tests/corpus/registry/MANIFEST.tsv names each file (package, pinned version and sha256, path
inside, licence) and what fwmatrix must make of it (`expect`: `read`, or `refused: <reason>`).
tests/corpus/registry/fetch.py downloads the packages from Debian's archive (the one network
CI has) into a cache outside the repository ($FWMATRIX_REGISTRY_CORPUS, else
~/.cache/fwmatrix-corpus/registry): nothing of them is committed here. Without apt or the
archive these tests skip and say why; in CI (FWMATRIX_REQUIRE_TOOLS=1) they fail instead.

Each file is read or refused as expected (tests/test_public_corpus.py's checks); each one read
whose `kernel` column is `probe` is loaded in a lab's private namespaces and probed with
$FWMATRIX_CORPUS_PROBES real packets (default 40: CI time is bounded; raise it for a longer
run), and the evaluator's verdicts must be the kernel's. The summary prints per family the
files, read, refused (with reasons), unmodelled share, probes sent and disagreements.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest
from test_public_corpus import FAMILIES, Outcome, assert_expected, family_lines, kernel_tally, read_outcome, report_summary

sys.path.insert(0, str(Path(__file__).resolve().parent / "corpus" / "registry"))
import fetch  # noqa: E402  (tests/corpus/registry/fetch.py)

PROBES_ENV = "FWMATRIX_CORPUS_PROBES"
ROWS = fetch.manifest()
# The unmodelled share of the rules read when the expectations were recorded (rounded up):
# a change that models less fails here; one that models more should lower these.
UNMODELLED_CEILING = {"nftables": 0.028, "iptables": 0.072, "pf": 0.33}  # 3/111, 16/223, 728/2378 (2026-12-07)

_files: dict[str, tuple[Path, fetch.Source]] = {}
_outcomes: dict[str, Outcome] = {}
_tallies: dict[str, object] = {}


def corpus_file(row: dict[str, str]) -> Path:
    """The entry's file, the whole corpus fetched once per session."""
    if not _files:
        try:
            _files.update(fetch.fetch())
        except (fetch.FetchError, OSError, TimeoutError) as exc:
            message = f"the registry corpus cannot be fetched: {exc}"
            if os.environ.get("FWMATRIX_REQUIRE_TOOLS") == "1":
                pytest.fail(message + " (FWMATRIX_REQUIRE_TOOLS=1)")
            pytest.skip(message)
    return _files[row["name"]][0]


def outcome(row: dict[str, str]) -> Outcome:
    if row["name"] not in _outcomes:
        _outcomes[row["name"]] = read_outcome(corpus_file(row), row["family"])
    return _outcomes[row["name"]]


@pytest.mark.parametrize("row", ROWS, ids=[row["name"] for row in ROWS])
def test_registry_ruleset_read_or_refused_as_expected(row: dict[str, str]) -> None:
    assert_expected(row, outcome(row))


# the `kernel` column: `probe` (it loads: probe it), `no: <the kernel's reason>` (iptables-restore
# or nft refuses it; a chain a fragment jumps to and its companions make is declared empty first:
# test_public_corpus.declare_missing_chain), `-` (not read)
LOADED = [row for row in ROWS if row["kernel"] != "-"]
NO = "no: "


def probes() -> int:
    return int(os.environ.get(PROBES_ENV) or 40)


@pytest.mark.kernel
@pytest.mark.parametrize("row", LOADED, ids=[row["name"] for row in LOADED])
def test_registry_ruleset_kernel_agreement(row: dict[str, str]) -> None:
    """Loaded in the lab's firewall namespace, read back as the audit reads it, probed with real
    packets: no disagreement. One the manifest says the kernel refuses must be refused so."""
    from test_kernel_agreement import assert_agreement

    result = outcome(row)
    assert result.ruleset is not None, f"the manifest has it loaded, but it is not read: {result.error}"
    tally = kernel_tally(result, row["family"], f"registry {row['name']}", ipv6=row["format"] == "restore-input6", probes=probes())
    if row["kernel"].startswith(NO):
        assert isinstance(tally, str) and row["kernel"].removeprefix(NO) in tally, f"expected the kernel to refuse it ({row['kernel']}), got: {tally}"
        return
    assert row["kernel"] == "probe", f"{row['name']}: the kernel column must be 'probe', 'no: REASON' or '-', not {row['kernel']!r}"
    assert not isinstance(tally, str), f"this kernel does not load it: {tally}"
    _tallies[row["name"]] = tally
    assert_agreement(tally, min_each=0)


# pf with the firewall's interfaces known (placeholder addresses, as tests/test_pf_real.py measures
# the public corpus): the share measured when recorded, rounded up
PF_KNOWN_FIREWALL_CEILING = 0.20


def test_registry_pf_with_the_firewall_known() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "corpus" / "public"))
    from pf_share import measure

    read = [row for row in ROWS if row["family"] == "pf" and row["expect"] == "read"]
    paths = {corpus_file(row) for row in read}
    (cache,) = {path.parent.parent for path in paths}
    bare, known, per_file = measure(cache, {path.stem for path in paths})
    assert len(per_file) == len(read) and known.rules
    assert known.value <= PF_KNOWN_FIREWALL_CEILING, f"{known.unmodelled}/{known.rules} rules unmodelled ({known.value:.1%})"
    assert known.value < bare.value


def test_registry_corpus_summary(capsys: pytest.CaptureFixture[str], record_property) -> None:
    """Per family: files, read, refused (with reasons), unmodelled share, probes and disagreements."""
    reasons: Counter[tuple[str, str]] = Counter()
    lines, shares = [], {}
    for family in FAMILIES:
        rows = [row for row in ROWS if row["family"] == family]
        line, shares[family] = family_lines(family, [outcome(row) for row in rows], reasons)
        tallies = [_tallies[row["name"]] for row in rows if row["name"] in _tallies]
        line += (f"  probed {len(tallies):3} files, {sum(t.probes for t in tallies)} probes, "
                 f"{sum(len(t.disagreements) for t in tallies)} disagreements")
        lines.append(line)
        record_property(f"{family}_unmodelled_share", f"{shares[family]:.4f}")
    lines += [f"from {source}" for source in sorted({str(source) for _, source in _files.values()})]
    report_summary(capsys, f"registry corpus ({fetch.default_cache()}, {probes()} probes a file)", lines, reasons, shares, UNMODELLED_CEILING)
