"""Shared test helpers.

Kernel tests (marked `kernel`) need root and network namespaces. On a laptop
they skip with the reason; CI sets FWMATRIX_REQUIRE_KERNEL=1, which turns
such a skip into a failure, so CI cannot pass without running them. Tests
that need a program (Graphviz, Chromium) call `require_tool`; CI sets
FWMATRIX_REQUIRE_TOOLS=1 for them likewise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Every audit the tests make (in this process and in the CLI's subprocesses) checks that the
# forwarded set's cover is the grants' union (audit/evaluate/effective.py): set before fwmatrix
# is imported, which reads it once.
os.environ.setdefault("FWMATRIX_CHECK_COVER", "1")

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "matrices" / "contact-highway-7.yaml"
GOLDEN = Path(__file__).resolve().parent / "golden"
# the smallest whole matrix, which tests vary by replacing its lines
SMALL = """\
fwmatrix: 1
name: small
zones:
  internet: any
  lan: 10.0.0.0/24
firewalls:
  edge:
    interfaces:
      wan0: internet
      lan0: lan
openings:
  - from: lan
    to: internet
    service: tcp/443
"""


@pytest.fixture(autouse=True)
def _no_terminal_size_in_the_environment() -> None:
    """fwmatrix honours COLUMNS even into a pipe; GNU readline, which pytest imports, puts
    COLUMNS=80 and LINES=24 into the process's C environment (not os.environ), so every
    command a test starts would inherit them. Tests that want a width say so."""
    for name in ("COLUMNS", "LINES"):
        if name not in os.environ:
            os.unsetenv(name)


KERNEL_TOOLS = (
    "ip", "nft", "iptables", "ip6tables", "iptables-restore", "ip6tables-restore",
    "iptables-save", "ip6tables-save", "ipset",
)


def kernel_unavailable() -> str | None:
    """Why kernel tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in KERNEL_TOOLS:
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"needs the '{tool}' tool"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        return "cannot create network namespaces here"
    return None


def require_kernel() -> None:
    reason = kernel_unavailable()
    if reason is not None:
        kernel_cannot(reason)


def kernel_cannot(reason: str) -> None:
    """A kernel test that cannot run here: skipped, but a failure in CI (FWMATRIX_REQUIRE_KERNEL=1)."""
    if os.environ.get("FWMATRIX_REQUIRE_KERNEL") == "1":
        pytest.fail(f"kernel test cannot run but FWMATRIX_REQUIRE_KERNEL=1: {reason}")
    pytest.skip(f"kernel test skipped: {reason}")


@pytest.fixture
def kernel() -> None:
    require_kernel()


def require_tool(tool: str, package: str) -> str:
    """The path of a program a test needs (Graphviz's dot, Chromium). Without it the test
    skips, but CI (FWMATRIX_REQUIRE_TOOLS=1, set by .ci/run) fails: the Makefile installs them."""
    path = shutil.which(tool)
    if path is not None:
        return path
    if os.environ.get("FWMATRIX_REQUIRE_TOOLS") == "1":
        pytest.fail(f"'{tool}' is not installed but FWMATRIX_REQUIRE_TOOLS=1 (Debian package {package}, in the Makefile's APT_PACKAGES)")
    pytest.skip(f"needs '{tool}' (Debian package {package})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("kernel") is not None and "kernel" not in getattr(item, "fixturenames", ()):
            item.fixturenames.append("kernel")  # type: ignore[attr-defined]


@pytest.fixture
def write_matrix(tmp_path: Path):
    """Write YAML text to a matrix file and return its path."""

    def write(text: str, name: str = "matrix.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def check_golden(actual: str, path: Path) -> None:
    """Compare with a golden file; FWMATRIX_UPDATE_GOLDEN=1 rewrites it."""
    if os.environ.get("FWMATRIX_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
    assert path.exists(), f"no golden file {path}; run with FWMATRIX_UPDATE_GOLDEN=1 once and review it"
    assert actual == path.read_text(), f"output differs from {path}; if intended, FWMATRIX_UPDATE_GOLDEN=1 and review the diff"
