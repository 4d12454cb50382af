"""fwmatrix as people install tools: the sdist and the wheel are built, the wheel is
installed into a clean virtual environment outside the checkout (no system site
packages: pipx's situation, so Debian's nftables binding is not importable there),
and the commands run from there on the seed matrix.

Building isolates itself (pip fetches setuptools into a build environment) and the
clean environment installs fwmatrix's dependencies: both need the package index,
which CI has. Without it the test skips, but not in CI (FWMATRIX_REQUIRE_TOOLS=1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import fwmatrix
from fwmatrix.schemas import SCHEMAS

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "matrices" / "contact-highway-7.yaml"
DEBIAN_PYTHON = "/usr/bin/python3"  # the interpreter that has python3-nftables in its system site packages


def _run(argv: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, timeout=600, **kwargs)


def _needs_index(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode == 0:
        return
    message = f"{what} failed (rc {proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}"
    if os.environ.get("FWMATRIX_REQUIRE_TOOLS") != "1" and "Could not find a version" in proc.stderr + proc.stdout:
        pytest.skip(f"needs the package index: {message}")
    pytest.fail(message)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _needs_index(_run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=out), "python -m build")
    return out


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a clean venv (outside the checkout) with the wheel installed."""
    python = DEBIAN_PYTHON if Path(DEBIAN_PYTHON).exists() else sys.executable
    venv = tmp_path_factory.mktemp("pipx") / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    (wheel,) = dist.glob("fwmatrix-*.whl")
    _needs_index(_run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], cwd=venv), "pip install")
    return venv / "bin"


def test_the_version_comes_from_one_place(dist: Path) -> None:
    (wheel,) = dist.glob("fwmatrix-*.whl")
    (sdist,) = dist.glob("fwmatrix-*.tar.gz")
    assert wheel.name.startswith(f"fwmatrix-{fwmatrix.__version__}-")
    assert sdist.name == f"fwmatrix-{fwmatrix.__version__}.tar.gz"


def test_the_wheel_holds_what_the_commands_read(dist: Path) -> None:
    (wheel,) = dist.glob("fwmatrix-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for family in ("nftables", "iptables", "pf"):
        assert f"fwmatrix/backends/{family}/__init__.py" in names
    for path in SCHEMAS.values():
        assert f"fwmatrix/schemadata/{path}" in names
    assert {"fwmatrix/report/assets/report.css", "fwmatrix/report/assets/report.js"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "bench/", "docs/")) or n.endswith(".md") for n in names)
    metadata = next(zipfile.ZipFile(wheel).read(n) for n in names if n.endswith(".dist-info/METADATA")).decode()
    assert f"Version: {fwmatrix.__version__}" in metadata
    assert "License-Expression: Apache-2.0" in metadata
    assert "Classifier: Topic :: System :: Networking :: Firewalls" in metadata


def test_the_sdist_builds_the_same_tree(dist: Path) -> None:
    (sdist,) = dist.glob("fwmatrix-*.tar.gz")
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    assert {"LICENSE", "README.md", "pyproject.toml", "docs/matrix.schema.json", "backends/pf/__init__.py"} <= names


def test_the_installed_commands_run_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    fwm = str(installed / "fwmatrix")
    python = str(installed / "python")
    # pipx's environment: no system site packages, so the nftables binding is not there
    # and every nft call goes through the nft binary (docs/nftables-binding.md)
    probe = _run([python, "-c", "import nftables"], cwd=tmp_path)
    assert probe.returncode != 0 and "No module named 'nftables'" in probe.stderr
    located = _run([python, "-c", "import fwmatrix; print(fwmatrix.__file__)"], cwd=tmp_path)
    assert located.returncode == 0 and not located.stdout.startswith(str(ROOT)), located.stdout

    version = _run([fwm, "--version"], cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"fwmatrix, version {fwmatrix.__version__}"

    schema = _run([fwm, "schema", "matrix"], cwd=tmp_path)
    assert schema.returncode == 0 and json.loads(schema.stdout) == json.loads((ROOT / "docs" / "matrix.schema.json").read_text())

    out = tmp_path / "out"
    compiled = _run([fwm, "compile", str(SEED), "--backend", "all", "--out-dir", str(out)], cwd=tmp_path)
    assert compiled.returncode == 0, compiled.stderr
    assert {p.name for p in out.iterdir()} >= {"edge.nft", "edge.ipt4", "edge.ipt6", "edge.pf.conf"}

    # the audit reads the .nft text through nft (-j) without the binding: the compiled ruleset is clean
    audited = _run([fwm, "audit", str(SEED), "-f", "edge", "-r", str(out / "edge.nft"), "--format", "json"], cwd=tmp_path)
    assert audited.returncode == 0, audited.stderr
    report = json.loads(audited.stdout)
    assert report["findings"] == [] and not any(report["counts"].values()), report


@pytest.mark.kernel
def test_check_validates_with_the_nft_binary_when_the_binding_is_absent(installed: Path, tmp_path: Path) -> None:
    checked = _run([str(installed / "fwmatrix"), "check", str(SEED)], cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    for backend in ("nftables", "iptables", "pf"):
        assert f"{backend}: " in checked.stdout and "accepted by the target's checker" in checked.stdout


def test_every_schema_in_docs_is_shipped_and_named() -> None:
    """A schema added to docs/ without a name in fwmatrix.schemas would be missing from
    the wheel's `fwmatrix schema` list (the wheel carries what SCHEMAS names)."""
    docs = ROOT / "docs"
    written = {"matrix.schema.json"} | {f"schemas/{p.name}" for p in (docs / "schemas").iterdir() if p.suffix in (".json", ".xsd")}
    assert set(SCHEMAS.values()) == written
