"""The registry corpus's fetch when Debian's archive has moved on: the pinned version gone, the
archive's current one is taken (and named), and a real change still fails.

apt-get is replaced by a script on PATH that serves .debs built here with the real dpkg-deb, so
these tests need no network and decide the same way every run.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "corpus" / "registry"))
import fetch  # noqa: E402  (tests/corpus/registry/fetch.py)

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not here (Debian's dpkg builds the test packages)")

# Serves $FAKE_ARCHIVE/PKG=VERSION.deb for `download PKG=VERSION` and $FAKE_ARCHIVE/PKG.deb for
# `download PKG`, with apt's own words when a version is not there.
FAKE_APT = """#!/usr/bin/env python3
import os, shutil, sys
argv = [a for a in sys.argv[1:] if a not in ("-q", "--download-only")]
while "-o" in argv:  # apt's configuration options: this archive needs none
    del argv[argv.index("-o"):argv.index("-o") + 2]
archive, (command, *args) = os.environ["FAKE_ARCHIVE"], argv
if command == "update":
    sys.exit(0)
spec = args[0]
served = os.path.join(archive, spec + (".src" if command == "source" else ".deb"))
if not os.path.exists(served):
    package, _, version = spec.partition("=")
    if command == "source":
        print(f"E: Can not find version '{version}' of package '{package}'" if version else "", file=sys.stderr)
        print(f"E: Unable to find a source package for {package}", file=sys.stderr)
    else:
        print(f"E: Version '{version}' for '{package}' was not found" if version else f"E: Unable to locate package {package}", file=sys.stderr)
    sys.exit(100)
if command == "source":
    for name in os.listdir(served):
        shutil.copy(os.path.join(served, name), name)
else:
    shutil.copy(served, f"{spec.split('=')[0]}_fromfake_all.deb")
"""

HEADER = "name\tfamily\tformat\tpackage\tversion\tsha256\tpath\tlicence\texpect\tkernel\tdescription\n"
RULES = "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority 0; policy drop;\n\t}\n}\n"


def build_deb(archive: Path, package: str, version: str, files: dict[str, str]) -> Path:
    root = archive / f"build-{package}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n", encoding="utf-8")
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    deb = archive / f"{package}_{version}.built"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir, archive = tmp_path / "bin", tmp_path / "archive"
    bin_dir.mkdir()
    archive.mkdir()
    (bin_dir / "apt-get").write_text(FAKE_APT, encoding="utf-8")
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin:/usr/sbin:/sbin")
    monkeypatch.setenv("FAKE_ARCHIVE", str(archive))
    return archive


def serve(archive: Path, deb: Path, spec: str) -> None:
    shutil.copy(deb, archive / f"{spec}.deb")


def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, sha256: str, path: str = "usr/share/doc/x/a.nft",
             package: str = "x", form: str = "nft") -> None:
    file = tmp_path / "MANIFEST.tsv"
    file.write_text(HEADER + f"x-a\tnftables\t{form}\t{package}\t{version}\t{sha256}\t{path}\tGPL-2\tread\tprobe\ttest\n", encoding="utf-8")
    monkeypatch.setattr(fetch, "MANIFEST", file)


def serve_source(archive: Path, spec: str, version: str, files: dict[str, str]) -> Path:
    """A source package as apt-get source leaves it: its .dsc and its upstream tarball."""
    served = archive / f"{spec}.src"
    served.mkdir()
    upstream = version.partition("-")[0]
    (served / f"y_{version}.dsc").write_text(f"Format: 3.0 (quilt)\nSource: y\nVersion: {version}\n", encoding="utf-8")
    tree = archive / f"tree-{version}" / f"y-{upstream}"
    for path, text in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text, encoding="utf-8")
    tarball = served / f"y_{upstream}.orig.tar.gz"
    with tarfile.open(tarball, "w:gz") as out:
        out.add(tree, arcname=tree.name)
    return tarball


def private_apt(cache: Path) -> None:
    """The private deb-src list is written once from the machine's sources; here, beforehand."""
    (cache / "apt").mkdir(parents=True)
    (cache / "apt" / "sources.list").write_text("deb-src http://archive.invalid/debian stable main\n", encoding="utf-8")


def test_the_pinned_version_is_fetched_and_checked(tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deb = build_deb(archive, "x", "1.0-1", {"usr/share/doc/x/a.nft": RULES})
    serve(archive, deb, "x=1.0-1")
    manifest(tmp_path, monkeypatch, "1.0-1", hashlib.sha256(deb.read_bytes()).hexdigest())
    path, source = fetch.fetch(tmp_path / "cache")["x-a"]
    assert path.read_text(encoding="utf-8") == RULES
    assert (source.version, source.fallback) == ("1.0-1", False)
    assert str(source) == "x 1.0-1 (pinned, sha256 checked)"


def test_a_files_relative_includes_are_copied_beside_it(tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fwmatrix reads an nft file as `cd DIR && nft -f FILE` does: what it includes by `./` (and
    what that includes, from the same directory) is copied beside the cached copy, and a cache
    missing them is filled again."""
    main = 'include "./inc/b.nft"\n'
    deb = build_deb(archive, "x", "1.0-1", {"usr/share/doc/x/a.nft": main, "usr/share/doc/x/inc/b.nft": 'include "./c.nft"\n',
                                           "usr/share/doc/x/c.nft": RULES, "usr/share/doc/x/unused.nft": RULES})
    serve(archive, deb, "x=1.0-1")
    manifest(tmp_path, monkeypatch, "1.0-1", hashlib.sha256(deb.read_bytes()).hexdigest())
    path, _ = fetch.fetch(tmp_path / "cache")["x-a"]
    assert path.read_text(encoding="utf-8") == main
    assert (path.parent / "inc" / "b.nft").is_file() and (path.parent / "c.nft").read_text(encoding="utf-8") == RULES
    assert not (path.parent / "unused.nft").exists()
    (path.parent / "inc" / "b.nft").unlink()
    fetch.fetch(tmp_path / "cache")
    assert (path.parent / "inc" / "b.nft").is_file()


def test_the_pinned_version_with_other_bytes_fails(tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(archive, build_deb(archive, "x", "1.0-1", {"usr/share/doc/x/a.nft": RULES}), "x=1.0-1")
    manifest(tmp_path, monkeypatch, "1.0-1", "0" * 64)
    with pytest.raises(fetch.FetchError, match="sha256 is not the manifest's"):
        fetch.fetch(tmp_path / "cache")


def test_a_version_gone_from_the_archive_falls_back_to_the_current_one(tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(archive, build_deb(archive, "x", "1.0-2", {"usr/share/doc/x/a.nft": RULES}), "x")
    manifest(tmp_path, monkeypatch, "0~cannot-exist", "0" * 64)
    path, source = fetch.fetch(tmp_path / "cache")["x-a"]
    assert path.read_text(encoding="utf-8") == RULES
    assert (source.version, source.pinned, source.fallback) == ("1.0-2", "0~cannot-exist", True)
    assert str(source) == "x 1.0-2 (the archive's current; pinned 0~cannot-exist is gone, sha256 not checked)"
    # the cache remembers which version it holds, with no apt-get at all
    monkeypatch.setenv("PATH", "/nonexistent")
    assert fetch.fetch(tmp_path / "cache")["x-a"][1] == source


def test_a_file_missing_from_the_current_version_fails(tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(archive, build_deb(archive, "x", "1.0-2", {"usr/share/doc/x/renamed.nft": RULES}), "x")
    manifest(tmp_path, monkeypatch, "0~cannot-exist", "0" * 64)
    with pytest.raises(fetch.FetchError, match=r"x=1.0-2 has no usr/share/doc/x/a.nft \(the manifest's 0~cannot-exist is gone"):
        fetch.fetch(tmp_path / "cache")


def test_a_package_gone_altogether_fails_and_says_so(tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest(tmp_path, monkeypatch, "0~cannot-exist", "0" * 64)
    with pytest.raises(fetch.FetchError, match="no longer in the archive, and fetching x failed too: E: Unable to locate package x"):
        fetch.fetch(tmp_path / "cache")


def test_a_source_package_s_listed_files_from_its_pinned_tarball(tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = serve_source(archive, "y=1.0-1", "1.0-1", {"test/pf/a.conf": "pass all\n", "test/pf/b.conf": "block all\n"})
    manifest(tmp_path, monkeypatch, "1.0-1", hashlib.sha256(tarball.read_bytes()).hexdigest(), "test/pf/a.conf", "y", fetch.SOURCE)
    private_apt(tmp_path / "cache")
    path, source = fetch.fetch(tmp_path / "cache")["x-a"]
    assert path.read_text(encoding="utf-8") == "pass all\n" and str(source) == "y 1.0-1 (pinned, sha256 checked)"
    assert not list((tmp_path / "cache" / "unpacked").rglob("b.conf"))  # only what the manifest lists is taken out


def test_a_source_version_gone_falls_back_to_the_current_one(tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve_source(archive, "y", "2.0-3", {"test/pf/a.conf": "pass all\n"})
    manifest(tmp_path, monkeypatch, "0~cannot-exist", "0" * 64, "test/pf/a.conf", "y", fetch.SOURCE)
    private_apt(tmp_path / "cache")
    path, source = fetch.fetch(tmp_path / "cache")["x-a"]
    assert path.read_text(encoding="utf-8") == "pass all\n"
    assert (source.version, source.fallback) == ("2.0-3", True)
