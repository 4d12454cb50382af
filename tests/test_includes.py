"""`include:` of shared matrix files, through the CLI: the definitions of included
files count as the matrix's own, errors point into the file that holds them,
cycles are refused at the include that closes them, and `diff --git` reads the
included files at the same revision."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from fwmatrix.cli import main

ZONES = """fwmatrix: 1
include: hosts.yaml
zones:
  internet: any
  lan: 10.0.0.0/24
  dmz: 10.1.0.0/24
services:
  https: tcp/443
"""
HOSTS = """hosts:
  web: 10.1.0.10
  app: 10.0.0.5
groups:
  apps:
    members: [app]
"""
MATRIX = """fwmatrix: 1
name: inc
include: [shared/zones.yaml]
firewalls:
  fw:
    interfaces: {eth0: internet, eth1: lan, eth2: dmz}
openings:
  - name: app-to-web
    from: apps
    to: web
    service: https
"""
# the same matrix in one file
WHOLE = MATRIX.replace("include: [shared/zones.yaml]\n", ZONES.split("include: hosts.yaml\n")[1] + HOSTS)


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "zones.yaml").write_text(ZONES)
    (tmp_path / "shared" / "hosts.yaml").write_text(HOSTS)
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    (tmp_path / "whole.yaml").write_text(WHOLE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def without_header(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def test_included_definitions_compile_as_if_written_in_the_matrix(tree: Path) -> None:
    code, included = run("compile", "matrix.yaml")
    assert code == 0, included
    assert without_header(included) == without_header(run("compile", "whole.yaml")[1])
    # the header's hash covers the included files
    before = [line for line in included.splitlines() if "sha256" in line]
    (tree / "shared" / "hosts.yaml").write_text(HOSTS + "  # a comment changes the bytes\n")
    assert [line for line in run("compile", "matrix.yaml")[1].splitlines() if "sha256" in line] != before


@pytest.mark.parametrize("change, message", [
    (("shared/hosts.yaml", "members: [app]", "members: [app, nobody]"), "shared/hosts.yaml:6: group 'apps': unknown name 'nobody'"),
    (("shared/hosts.yaml", "  app: 10.0.0.5\n", "  app: 10.0.0.5\n  https: 10.0.0.9\n"),
     "shared/zones.yaml:8: duplicate name 'https': already a host on shared/hosts.yaml:4"),
    (("shared/hosts.yaml", "groups:", "include: ../matrix.yaml\ngroups:"),
     "shared/hosts.yaml:4: include cycle: matrix.yaml → shared/zones.yaml → shared/hosts.yaml → matrix.yaml"),
    (("shared/zones.yaml", "include: hosts.yaml", "include: [hosts.yaml, missing.yaml]"), "shared/zones.yaml:2: cannot include 'missing.yaml': cannot read"),
    (("shared/hosts.yaml", "groups:", "openings: []\ngroups:"), "shared/hosts.yaml:4: unknown key 'openings' in the included file hosts.yaml"),
    (("shared/zones.yaml", "  lan: 10.0.0.0/24", "  lan: 10.0.0.0/33"), "shared/zones.yaml:5:"),
])
def test_errors_point_into_the_file_that_holds_them(tree: Path, change: tuple[str, str, str], message: str) -> None:
    name, old, new = change
    path = tree / name
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    code, out = run("lint", "matrix.yaml")
    assert code == 2 and out.startswith(f"error: {message}") and len(out.splitlines()) == 1, out


def test_a_file_included_twice_is_read_once(tree: Path) -> None:
    (tree / "matrix.yaml").write_text(MATRIX.replace("include: [shared/zones.yaml]", "include: [shared/hosts.yaml, shared/zones.yaml]"))
    assert run("lint", "matrix.yaml")[0] == 0


def test_diff_at_a_git_revision_follows_the_includes(tree: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "."], check=True)
    subprocess.run(git + ["add", "matrix.yaml", "shared"], check=True)
    subprocess.run(git + ["commit", "-qm", "base"], check=True)
    assert run("diff", "matrix.yaml", "--git", "HEAD", "--exit-code")[0] == 0
    (tree / "shared" / "zones.yaml").write_text(ZONES.replace("https: tcp/443", "https: [tcp/443, tcp/8443]"))
    code, out = run("diff", "matrix.yaml", "--git", "HEAD", "--exit-code")
    assert code == 1 and "8443" in out, out
