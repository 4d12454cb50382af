#!/usr/bin/env python3
"""Fetch the registry corpus: rulesets others wrote, as Debian packages ship them.

CI reaches no network but the package registries, so this corpus comes from there:
each package named in MANIFEST.tsv is downloaded with `apt-get download PKG=VERSION`
(no install), checked against the manifest's sha256 and unpacked with `dpkg-deb -x`.
When the archive no longer has that version (a point release replaced it), the version
it has now is taken instead (`apt-get download PKG`, nothing to check its sha256
against): the tests still hold every file to its expectation, and say which version
each came from (<file>.source beside it);
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
from dataclasses import dataclass
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
    # LC_ALL=C: apt's "Version ... was not found" is matched below, in English
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, "LC_ALL": "C"})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Source:
    """The package version a corpus file came from: the pinned one (sha256 checked) or, when the
    archive no longer serves it (a point release replaced it), the one it serves now, unchecked."""
    package: str
    version: str
    pinned: str

    @property
    def fallback(self) -> bool:
        return self.version != self.pinned

    def __str__(self) -> str:
        if not self.fallback:
            return f"{self.package} {self.version} (pinned, sha256 checked)"
        return f"{self.package} {self.version} (the archive's current; pinned {self.pinned} is gone, sha256 not checked)"

    def line(self) -> str:
        return f"{self.package}\t{self.version}\t{self.pinned}\n"

    @classmethod
    def parse(cls, line: str) -> "Source":
        package, version, pinned = line.rstrip("\n").split("\t")
        return cls(package, version, pinned)


def _apt_download(spec: str, debs: Path) -> subprocess.CompletedProcess:
    result = _run(["apt-get", "download", "-q", spec], cwd=debs)
    if result.returncode != 0 and os.geteuid() == 0:  # a fresh machine may have no package lists yet
        _run(["apt-get", "update", "-qq"])
        result = _run(["apt-get", "download", "-q", spec], cwd=debs)
    return result


def _last_words(result: subprocess.CompletedProcess) -> str:
    return (result.stderr.strip().splitlines() or ["no reason given"])[-1]


def _deb_version(deb: Path) -> str:
    result = _run(["dpkg-deb", "-f", str(deb), "Version"])
    if result.returncode != 0:
        raise FetchError(f"dpkg-deb -f {deb.name} Version failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _download(package: str, version: str, sha256: str, debs: Path) -> tuple[Path, Source]:
    """The package's .deb in `debs`: the pinned version, checked against its sha256; if the archive
    no longer has that version, the version it has now (a suite must not break because a mirror
    moved on: every file's expectation still runs on it, and the Source says which version it was)."""
    pinned = [p for p in debs.glob(f"{package}_*.deb") if _sha256(p) == sha256]
    if pinned:
        return pinned[0], Source(package, version, version)
    if shutil.which("apt-get") is None:
        raise FetchError(f"{package}={version}: apt-get is not here (the registry corpus needs Debian's apt)")
    debs.mkdir(parents=True, exist_ok=True)
    result = _apt_download(f"{package}={version}", debs)
    if result.returncode == 0:
        got = [p for p in debs.glob(f"{package}_*.deb") if _sha256(p) == sha256]
        if not got:
            raise FetchError(f"{package}={version}: the downloaded .deb's sha256 is not the manifest's {sha256} "
                             f"(the archive serves other bytes under this version: check them, then record the new sha256)")
        return got[0], Source(package, version, version)
    if f"Version '{version}' for '{package}' was not found" not in result.stderr:
        raise FetchError(f"apt-get download {package}={version} failed: {_last_words(result)}")
    current = debs / "current" / package  # its own directory: the one .deb there is the one just fetched
    shutil.rmtree(current, ignore_errors=True)
    current.mkdir(parents=True)
    result = _apt_download(package, current)
    got = list(current.glob(f"{package}_*.deb"))
    if result.returncode != 0 or len(got) != 1:
        raise FetchError(f"{package}={version} is no longer in the archive, and apt-get download {package} failed too: "
                         f"{_last_words(result)}")
    return got[0], Source(package, _deb_version(got[0]), version)


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


def source_path(dest: Path) -> Path:
    """Where the package version a cached corpus file came from is recorded, beside it."""
    return dest.with_name(dest.name + ".source")


def fetch(cache: Path | None = None) -> dict[str, tuple[Path, Source]]:
    """Every manifest entry's file in the cache (fetched when missing): name -> (path, the package
    version it came from)."""
    cache = cache or default_cache()
    out: dict[str, tuple[Path, Source]] = {}
    unpacked: dict[tuple[str, str], tuple[Path, Source]] = {}
    for row in manifest():
        dest = corpus_path(cache, row)
        if dest.exists() and source_path(dest).exists():
            out[row["name"]] = (dest, Source.parse(source_path(dest).read_text(encoding="utf-8")))
            continue
        key = (row["package"], row["version"])
        if key not in unpacked:
            deb, source = _download(row["package"], row["version"], row["sha256"], cache / "debs")
            unpacked[key] = (_unpack(deb, cache / "unpacked"), source)
        root, source = unpacked[key]
        path = root / row["path"]
        if not path.is_file():
            raise FetchError(f"{row['package']}={source.version} has no {row['path']}"
                             + (f" (the manifest's {row['version']} is gone from the archive)" if source.fallback else ""))
        text = _ferm(root, path) if row["format"].startswith("ferm") else path.read_text(encoding="utf-8")
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        if row["format"] == "ferm-translate":
            text = _translate(text, partial)
        partial.write_text(text, encoding="utf-8")
        source_path(dest).write_text(source.line(), encoding="utf-8")
        partial.replace(dest)
        out[row["name"]] = (dest, source)
    return out


def main(argv: list[str]) -> int:
    cache = Path(argv[1]) if len(argv) > 1 else default_cache()
    try:
        files = fetch(cache)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for source in sorted({source for _, source in files.values()}, key=str):
        print(source)
    print(f"{len(files)} files in the registry corpus -> {cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
