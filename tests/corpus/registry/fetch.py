#!/usr/bin/env python3
"""Fetch the registry corpus: rulesets others wrote, as Debian packages ship them.

CI reaches no network but the package registries, so this corpus comes from there:
each package named in MANIFEST.tsv is downloaded with `apt-get download PKG=VERSION`
(no install), checked against the manifest's sha256 and unpacked with `dpkg-deb -x`;
each listed file is then copied (or, for `format` ferm, compiled by the same package's
own `ferm --remote`, which prints iptables-save text; for `ferm-translate`, that text
then turned into nft commands by iptables-restore-translate, as users migrating to
nftables do) to <cache>/<family>/<name>.<ext>.
Nothing is committed: the files are other people's work under their own licences.

The cache is the first argument, else $FWMATRIX_REGISTRY_CORPUS, else
~/.cache/fwmatrix-corpus/registry; what is there already is reused.

    python3 tests/corpus/registry/fetch.py [CACHE]
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

MANIFEST = Path(__file__).resolve().parent / "MANIFEST.tsv"
CACHE_ENV = "FWMATRIX_REGISTRY_CORPUS"
EXTENSIONS = {"nftables": "nft", "iptables": "ipt", "pf": "conf"}
FERM = "usr/sbin/ferm"


class FetchError(Exception):
    """A package the manifest pins could not be had (the message says which and why)."""


def default_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fwmatrix-corpus" / "registry")


def manifest() -> list[dict[str, str]]:
    with MANIFEST.open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle, delimiter="\t") if not row["name"].startswith("#")]


def corpus_path(cache: Path, row: dict[str, str]) -> Path:
    return cache / row["family"] / f"{row['name']}.{EXTENSIONS[row['family']]}"


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(package: str, version: str, sha256: str, debs: Path) -> Path:
    """The package's .deb in `debs`, downloaded once and checked against its sha256."""
    found = [p for p in debs.glob(f"{package}_*.deb") if _sha256(p) == sha256]
    if found:
        return found[0]
    if shutil.which("apt-get") is None:
        raise FetchError(f"{package}={version}: apt-get is not here (the registry corpus needs Debian's apt)")
    debs.mkdir(parents=True, exist_ok=True)
    result = _run(["apt-get", "download", "-q", f"{package}={version}"], cwd=debs)
    if result.returncode != 0 and os.geteuid() == 0:  # a fresh machine may have no package lists yet
        _run(["apt-get", "update", "-qq"])
        result = _run(["apt-get", "download", "-q", f"{package}={version}"], cwd=debs)
    if result.returncode != 0:
        words = (result.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise FetchError(f"apt-get download {package}={version} failed: {words} (if Debian's archive moved on, "
                         f"pin the version it serves now and its sha256 in {MANIFEST.name})")
    got = [p for p in debs.glob(f"{package}_*.deb") if _sha256(p) == sha256]
    if not got:
        raise FetchError(f"{package}={version}: the downloaded .deb's sha256 is not the manifest's {sha256} "
                         f"(the archive serves other bytes under this version: check them, then record the new sha256)")
    return got[0]


def _unpack(deb: Path, root: Path) -> Path:
    target = root / deb.stem
    if not target.is_dir():
        partial = root / (deb.stem + ".part")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        result = _run(["dpkg-deb", "-x", str(deb), str(partial)])
        if result.returncode != 0:
            raise FetchError(f"dpkg-deb -x {deb.name} failed: {result.stderr.strip()}")
        partial.rename(target)
    return target


def _ferm(unpacked: Path, source: Path) -> str:
    """A ferm configuration compiled by the package's own ferm: iptables-save text, nothing run."""
    result = _run(["perl", str(unpacked / FERM), "--remote", str(source)])
    if result.returncode != 0:
        raise FetchError(f"ferm --remote {source.name} failed: {result.stderr.strip().splitlines()[0] if result.stderr.strip() else result.returncode}")
    return result.stdout


def _translate(text: str, scratch: Path) -> str:
    """iptables-save text as iptables' own iptables-restore-translate writes it in nft commands."""
    scratch.write_text(text, encoding="utf-8")
    tool = shutil.which("iptables-restore-translate") or "/usr/sbin/iptables-restore-translate"
    result = _run([tool, "-f", str(scratch)])
    scratch.unlink()
    if result.returncode != 0:
        raise FetchError(f"iptables-restore-translate failed: {result.stderr.strip()[:200]}")
    return result.stdout


def fetch(cache: Path | None = None) -> dict[str, Path]:
    """Every manifest entry's file in the cache (fetched when missing): name -> path."""
    cache = cache or default_cache()
    out: dict[str, Path] = {}
    unpacked: dict[tuple[str, str], Path] = {}
    for row in manifest():
        dest = corpus_path(cache, row)
        out[row["name"]] = dest
        if dest.exists():
            continue
        key = (row["package"], row["version"])
        if key not in unpacked:
            unpacked[key] = _unpack(_download(row["package"], row["version"], row["sha256"], cache / "debs"), cache / "unpacked")
        source = unpacked[key] / row["path"]
        if not source.is_file():
            raise FetchError(f"{row['package']}={row['version']} has no {row['path']}")
        text = _ferm(unpacked[key], source) if row["format"].startswith("ferm") else source.read_text(encoding="utf-8")
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        if row["format"] == "ferm-translate":
            text = _translate(text, partial)
        partial.write_text(text, encoding="utf-8")
        partial.replace(dest)
    return out


def main(argv: list[str]) -> int:
    cache = Path(argv[1]) if len(argv) > 1 else default_cache()
    try:
        files = fetch(cache)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(files)} files in the registry corpus -> {cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
