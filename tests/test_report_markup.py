"""User text in terminal reports is printed as written, never read as rich markup.

A path, a rule or a note can hold square brackets (`[root@host ~]`, `[bold]`);
rich would take them for style tags and swallow them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from fwmatrix.cli import main

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "matrices" / "contact-highway-7.yaml"
DRIFT = ROOT / "examples" / "drift" / "edge.json"


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_audit_table_keeps_brackets_in_the_ruleset_path_and_findings(tmp_path):
    live = tmp_path / "[bold]edge [root@host ~].json"
    shutil.copy(DRIFT, live)
    result = run("audit", str(SEED), "--ruleset", str(live))
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())  # the table folds long cells
    assert "[bold]edge" in flat and "[root@host ~]" in flat


def test_check_keeps_brackets_in_the_matrix_path(tmp_path):
    matrix = tmp_path / "[red]seed.yaml"
    shutil.copy(SEED, matrix)
    result = run("check", str(matrix))
    assert "[red]seed.yaml" in " ".join(result.output.split()), result.output
