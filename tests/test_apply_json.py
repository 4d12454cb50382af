"""`fwmatrix apply --format json` and `confirm --format json` (fwmatrix/report/apply.py):
what tools read instead of the text for people (the Ansible collection's module does).
Each test applies inside a network namespace of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from conftest import ROOT, SEED, require_kernel

from fwmatrix.netns import NetNamespace, unique_name

CLI = [sys.executable, "-m", "fwmatrix"]


@pytest.fixture
def netns() -> Iterator[str]:
    require_kernel()
    with NetNamespace(unique_name("fwmapjson")) as ns:
        yield ns.name


def fwmatrix(*args: str) -> tuple[int, dict | None, str]:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None, proc.stderr


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_apply_and_confirm_say_what_they_did_as_json(backend: str, netns: str, tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    common = [str(SEED), "-f", "edge", "-b", backend, "--netns", netns, "--state-dir", state, "--format", "json"]
    rc, plan, err = fwmatrix("apply", *common, "--dry-run")
    assert rc == 0, err
    assert (plan["schema"], plan["dry_run"], plan["applied"], plan["changes"]) == ("fwmatrix.apply/1", True, False, True)
    assert plan["before"]["findings"] and plan["after"]["findings"] == []  # nothing loaded yet: all excess, then clean
    assert len(plan["fixed"]) == len(plan["before"]["findings"]) and plan["diff"].startswith(f"--- edge.{backend} (live)")

    rc, done, err = fwmatrix("apply", *common, "--confirm", "60", "--timer", "detached")
    assert rc == 0, err
    assert (done["applied"], done["dry_run"], done["as_predicted"], done["error"]) == (True, False, True, None)
    assert done["rollback"]["seconds"] == 60 and done["rollback"]["backup"] == done["backup"]
    assert {"load", "verify", "arm"} <= set(done["timings"])

    rc, refused, err = fwmatrix("apply", *common)  # an armed rollback waits for its confirmation
    assert rc == 1 and refused is None and err.startswith("error: a rollback is armed")  # refused before any plan

    rc, kept, err = fwmatrix("confirm", "--state-dir", state, "--format", "json")
    assert rc == 0, err
    assert (kept["confirmed"], kept["rolled_back"], kept["cancelled"]["token"]) == (True, False, done["rollback"]["token"])
    rc, again, err = fwmatrix("apply", *common, "--dry-run")
    assert (rc, again["changes"], again["diff"]) == (0, False, "")
    rc, nothing, err = fwmatrix("confirm", "--state-dir", state, "--format", "json")
    assert rc == 1 and (nothing["confirmed"], nothing["rolled_back"]) == (False, False)
    assert nothing["error"] == f"nothing to confirm: no rollback is armed in {state}" and err.startswith("error: nothing to confirm")


@pytest.mark.kernel
def test_confirm_after_the_rollback_fired_says_rolled_back(netns: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    rc, done, err = fwmatrix("apply", str(SEED), "-f", "edge", "--netns", netns, "--state-dir", str(state),
                             "--confirm", "1", "--timer", "detached", "--format", "json")
    assert rc == 0, err
    deadline = time.monotonic() + 60  # 1 s, but a loaded machine may start the timer late
    while (state / "pending.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    rc, late, err = fwmatrix("confirm", "--state-dir", str(state), "--format", "json")
    assert rc == 1 and (late["confirmed"], late["rolled_back"]) == (False, True), err
    assert "rolled back at" in late["error"]


@pytest.mark.kernel
def test_a_refused_apply_still_prints_its_plan(netns: str, tmp_path: Path, write_matrix) -> None:
    from test_apply import JUMP_HOST, MANAGEMENT_FROM_INTERNET, SEED_TEXT, with_management

    matrix = write_matrix(with_management(SEED_TEXT, MANAGEMENT_FROM_INTERNET, JUMP_HOST))
    rc, plan, err = fwmatrix("apply", matrix, "-f", "edge", "--netns", netns, "--state-dir", str(tmp_path / "state"), "--format", "json")
    assert rc == 1 and err.startswith("error: the new ruleset would cut management access")
    assert (plan["applied"], plan["dry_run"], plan["error"]) == (False, False, err[len("error: "):].strip())
    assert [access["kept"] for access in plan["management"]] == [False] and plan["management"][0]["lost"]
