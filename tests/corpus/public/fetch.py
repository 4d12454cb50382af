#!/usr/bin/env python3
"""Download the public real-world ruleset corpus listed in MANIFEST.tsv.

Each file is taken from https://raw.githubusercontent.com/<repo>/<commit>/<path>
(pinned to its commit, so the bytes never change) and written to
<target>/<family>/<name>.<ext>: .nft (nftables text), .json (nft -j),
.ipt (iptables-save / iptables-restore input), .conf (pf.conf).

The target directory is the first argument, else $FWMATRIX_PUBLIC_CORPUS,
else /work/corpus/public. Files already present are skipped. The rulesets are
other people's work under their own licences (see the manifest's licence
column): those whose licence allows it are also committed, unmodified and with
their notices, under files/ (files/README.md), which is what CI reads; the
others exist only where this script fetched them.

COMPANIONS.tsv lists what some pf rulesets load from other files of the same
repository (`load anchor NAME from FILE`, `table <NAME> file FILE`): each is written
to <target>/companions/<ruleset>/<kind>/<NAME, %-quoted>, where pf_share.py gives
them as --pf-anchor / --pf-table would.

Needs network access; CI has none, so nothing runs this there (it runs
tests/test_public_corpus.py on files/ instead).

    python3 tests/corpus/public/fetch.py [TARGET]
"""

from __future__ import annotations

import csv
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

MANIFEST = Path(__file__).resolve().parent / "MANIFEST.tsv"
COMPANIONS = Path(__file__).resolve().parent / "COMPANIONS.tsv"
DEFAULT_TARGET = "/work/corpus/public"
EXTENSIONS = {"nftables": "nft", "iptables": "ipt", "pf": "conf"}
TIMEOUT = 60


def file_name(row: dict[str, str]) -> str:
    ext = "json" if row["format"] == "json" else EXTENSIONS[row["family"]]
    return f"{row['name']}.{ext}"


def companion_path(target: Path, row: dict[str, str]) -> Path:
    """Where a COMPANIONS.tsv row's file goes (an anchor's name may hold '/')."""
    return target / "companions" / row["ruleset"] / row["kind"] / urllib.parse.quote(row["name"], safe="")


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def url(row: dict[str, str]) -> str:
    return f"https://raw.githubusercontent.com/{row['repo']}/{row['commit']}/{urllib.parse.quote(row['path'])}"


def main(argv: list[str]) -> int:
    target = Path(argv[1] if len(argv) > 1 else os.environ.get("FWMATRIX_PUBLIC_CORPUS") or DEFAULT_TARGET)
    rows = read_tsv(MANIFEST)
    companions = read_tsv(COMPANIONS)
    fetched = skipped = 0
    failed: list[str] = []
    for row, dest in [(r, target / r["family"] / file_name(r)) for r in rows] + [(r, companion_path(target, r)) for r in companions]:
        if dest.exists():
            skipped += 1
            continue
        try:
            with urllib.request.urlopen(url(row), timeout=TIMEOUT) as response:
                data = response.read()
        except (urllib.error.URLError, OSError) as exc:
            what = f"{row['ruleset']} {row['kind']} {row['name']}" if "ruleset" in row else row["name"]
            failed.append(f"{what}: {getattr(exc, 'reason', exc)}")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        partial.write_bytes(data)
        partial.replace(dest)
        fetched += 1
    for line in failed:
        print(f"failed: {line}", file=sys.stderr)
    print(f"{len(rows)} files in the manifest and {len(companions)} companions: {fetched} fetched, {skipped} already present, {len(failed)} failed -> {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
