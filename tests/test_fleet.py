"""The Ansible collection in ansible/fwmatrix/fwmatrix: its modules' documentation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT

COLLECTION = ROOT / "ansible" / "fwmatrix" / "fwmatrix"
BIN = Path(sys.executable).parent


def test_ansible_doc_shows_the_modules() -> None:
    for module in ("fwmatrix_ruleset", "fwmatrix_fleet_report"):
        proc = subprocess.run([str(BIN / "ansible-doc"), "-M", str(COLLECTION / "plugins" / "modules"), module],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
        assert f"MODULE {module}" in proc.stdout.replace("\x1b[1m", "").replace("\x1b[0m", "")
        assert "EXAMPLES" in proc.stdout and "RETURN VALUES" in proc.stdout
