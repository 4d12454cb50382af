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
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST = Path(__file__).resolve().parent / "MANIFEST.tsv"
CACHE_ENV = "FWMATRIX_REGISTRY_CORPUS"
EXTENSIONS = {"nftables": "nft", "iptables": "ipt", "pf": "conf"}
FERM = "usr/sbin/ferm"
SOURCE = "source"  # the `format` of a file read from a source package's upstream tarball


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


def _last_words(result: subprocess.CompletedProcess) -> str:
    return (result.stderr.strip().splitlines() or ["no reason given"])[-1]


class _Binary:
    """Binary packages: `apt-get download`, the .deb is the file pinned by sha256."""
    what = ".deb"

    def __init__(self, cache: Path) -> None:
        self.cache = cache

    def command(self, spec: str) -> list[str]:
        return ["apt-get", "download", "-q", spec]

    def update(self) -> None:
        if os.geteuid() == 0:  # a fresh machine may have no package lists yet
            _run(["apt-get", "update", "-qq"])

    def missing(self, package: str, version: str) -> str:
        return f"Version '{version}' for '{package}' was not found"

    def files(self, where: Path, package: str) -> list[Path]:
        return list(where.glob(f"{package}_*.deb"))

    def version_of(self, deb: Path) -> str:
        result = _run(["dpkg-deb", "-f", str(deb), "Version"])
        if result.returncode != 0:
            raise FetchError(f"dpkg-deb -f {deb.name} Version failed: {result.stderr.strip()}")
        return result.stdout.strip()


class _SourcePackage(_Binary):
    """Source packages: `apt-get source --download-only` with apt's own configuration pointed at a
    private deb-src list, state and cache under the corpus cache (the machine's apt state is not
    touched); the upstream tarball is the file pinned by sha256 and the files are read from it."""
    what = "upstream tarball"

    def __init__(self, cache: Path) -> None:
        super().__init__(cache)
        self.apt = cache / "apt"

    def _options(self) -> list[str]:
        sources = self.apt / "sources.list"
        if not sources.exists():
            (self.apt / "parts").mkdir(parents=True, exist_ok=True)
            (self.apt / "state" / "lists" / "partial").mkdir(parents=True, exist_ok=True)
            (self.apt / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
            sources.write_text(_deb_src_lines(), encoding="utf-8")
        return ["-o", f"Dir::Etc::sourcelist={sources}", "-o", f"Dir::Etc::sourceparts={self.apt / 'parts'}",
                "-o", f"Dir::State={self.apt / 'state'}", "-o", "Dir::State::status=/var/lib/dpkg/status",
                "-o", f"Dir::Cache={self.apt / 'cache'}"]

    def command(self, spec: str) -> list[str]:
        return ["apt-get", "source", "--download-only", "-q", *self._options(), spec]

    def update(self) -> None:
        _run(["apt-get", "update", "-qq", *self._options()])

    def missing(self, package: str, version: str) -> str:
        return f"Can not find version '{version}' of package '{package}'"

    def files(self, where: Path, package: str) -> list[Path]:
        return [p for p in where.glob(f"{package}_*.tar.*") if p.suffix in (".gz", ".xz", ".bz2") and ".debian.tar." not in p.name]

    def version_of(self, tarball: Path) -> str:
        (dsc,) = tarball.parent.glob("*.dsc")
        return next(line.split()[1] for line in dsc.read_text(encoding="utf-8").splitlines() if line.startswith("Version:"))


def _deb_src_lines() -> str:
    """The machine's own apt sources (one-line and deb822) as deb-src lines: the same mirror."""
    lines = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.list")) + [Path("/etc/apt/sources.list")]:
        if path.is_file():
            lines += ["deb-src" + line.strip()[3:] for line in path.read_text(encoding="utf-8").splitlines() if line.strip().startswith("deb ")]
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in path.read_text(encoding="utf-8").split("\n\n"):
            fields = dict(line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith(("#", " ")))
            fields = {k.strip(): v.strip() for k, v in fields.items()}
            if "deb" not in fields.get("Types", "").split() or fields.get("Enabled", "yes") == "no":
                continue
            signed = f"[signed-by={fields['Signed-By']}] " if fields.get("Signed-By", "").startswith("/") else ""
            for uri in fields.get("URIs", "").split():
                for suite in fields.get("Suites", "").split():
                    lines.append(f"deb-src {signed}{uri} {suite} {fields.get('Components', 'main')}")
    if not lines:
        raise FetchError("no Debian apt source on this machine to take deb-src lines from")
    return "\n".join(lines) + "\n"


def _apt(kind: _Binary, spec: str, where: Path) -> subprocess.CompletedProcess:
    result = _run(kind.command(spec), cwd=where)
    if result.returncode != 0:  # no package lists yet, or old ones
        kind.update()
        result = _run(kind.command(spec), cwd=where)
    return result


def _download(kind: _Binary, package: str, version: str, sha256: str, where: Path) -> tuple[Path, Source]:
    """The package's pinned file (.deb or upstream tarball) in `where`, checked against its sha256;
    if the archive no longer has that version, the one it has now (a suite must not break because
    a mirror moved on: every file's expectation still runs on it, and the Source says which)."""
    pinned = [p for p in kind.files(where, package) if _sha256(p) == sha256]
    if pinned:
        return pinned[0], Source(package, version, version)
    if shutil.which("apt-get") is None:
        raise FetchError(f"{package}={version}: apt-get is not here (the registry corpus needs Debian's apt)")
    where.mkdir(parents=True, exist_ok=True)
    result = _apt(kind, f"{package}={version}", where)
    if result.returncode == 0:
        got = [p for p in kind.files(where, package) if _sha256(p) == sha256]
        if not got:
            raise FetchError(f"{package}={version}: the downloaded {kind.what}'s sha256 is not the manifest's {sha256} "
                             f"(the archive serves other bytes under this version: check them, then record the new sha256)")
        return got[0], Source(package, version, version)
    if kind.missing(package, version) not in result.stderr:
        raise FetchError(f"{' '.join(kind.command(package + '=' + version)[:3])} {package}={version} failed: {_last_words(result)}")
    current = where / "current" / package  # its own directory: what is there is what was just fetched
    shutil.rmtree(current, ignore_errors=True)
    current.mkdir(parents=True)
    result = _apt(kind, package, current)
    got = kind.files(current, package)
    if result.returncode != 0 or len(got) != 1:
        raise FetchError(f"{package}={version} is no longer in the archive, and fetching {package} failed too: {_last_words(result)}")
    return got[0], Source(package, kind.version_of(got[0]), version)


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


def _unpack_source(tarball: Path, root: Path, wanted: set[str]) -> Path:
    """Only the wanted files of an upstream tarball, by their paths below its top directory."""
    target = root / tarball.name
    if all((target / path).is_file() for path in wanted):
        return target
    partial = root / (tarball.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        for member in archive:
            inner = member.name.partition("/")[2]
            if member.isfile() and inner in wanted:
                (partial / inner).parent.mkdir(parents=True, exist_ok=True)
                (partial / inner).write_bytes(archive.extractfile(member).read())
    shutil.rmtree(target, ignore_errors=True)
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


# `include "./x.nft"`: nft reads it from the directory it runs in, which for the corpus is the
# cached file's (fwmatrix reads a file as `cd DIR && nft -f FILE`): the file is copied there too
INCLUDE_RE = re.compile(r'^\s*include\s+"(\.\.?/[^"*?\[]+)"', re.M)


def included(text: str) -> list[str]:
    """The relative paths an nft file includes (literal ones; globs are not copied)."""
    return INCLUDE_RE.findall(text)


def _copy_included(text: str, source: Path, target: Path) -> None:
    """What an nft file includes by relative path, and what those include (nft reads all from
    the one directory it runs in), from beside the original to beside the cached copy."""
    pending, seen = included(text), set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target / name)
        pending += included((source / name).read_text(encoding="utf-8"))


def source_path(dest: Path) -> Path:
    """Where the package version a cached corpus file came from is recorded, beside it."""
    return dest.with_name(dest.name + ".source")


def fetch(cache: Path | None = None) -> dict[str, tuple[Path, Source]]:
    """Every manifest entry's file in the cache (fetched when missing): name -> (path, the package
    version it came from)."""
    cache = cache or default_cache()
    out: dict[str, tuple[Path, Source]] = {}
    unpacked: dict[tuple[bool, str, str], tuple[Path, Source]] = {}
    rows = manifest()
    for row in rows:
        dest = corpus_path(cache, row)
        if dest.exists() and source_path(dest).exists() and all((dest.parent / name).is_file() for name in included(dest.read_text(encoding="utf-8"))):
            out[row["name"]] = (dest, Source.parse(source_path(dest).read_text(encoding="utf-8")))
            continue
        key = (row["format"] == SOURCE, row["package"], row["version"])
        if key not in unpacked and key[0]:
            tarball, source = _download(_SourcePackage(cache), row["package"], row["version"], row["sha256"], cache / "sources")
            wanted = {r["path"] for r in rows if (r["format"], r["package"], r["version"]) == (SOURCE, *key[1:])}
            unpacked[key] = (_unpack_source(tarball, cache / "unpacked", wanted), source)
        elif key not in unpacked:
            deb, source = _download(_Binary(cache), row["package"], row["version"], row["sha256"], cache / "debs")
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
        _copy_included(text, path.parent, dest.parent)
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
