"""The iptables tools at work: check rendered files (`iptables-restore --test`, in a private
network namespace), load them (`apply`), and list the live ruleset (`read_live`)."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from fwmatrix.backends.iptables.modes import file_mode, own_chains_plan
from fwmatrix.backends.iptables.names import FAMILY_SUFFIX, RESTORE_TOOL, SAVE_TOOL, SET_PREFIX, SUFFIX_IPSET, SUFFIX_V4, SUFFIX_V6
from fwmatrix.backends.iptables.parse import parse_save
from fwmatrix.errors import BackendError
from fwmatrix.ir import Ruleset, Table
from fwmatrix.netns import have, run_private, tool_path

# -- checking -------------------------------------------------------------------


_CHECK_SCRIPT = """
ipset=$1 ipset_file=$2 ipt=$3 ipt_file=$4 ip6t=$5 ip6t_file=$6 noflush=$7
if [ -n "$ipset_file" ]; then "$ipset" restore -file "$ipset_file" || exit 11; fi
if [ -n "$ipt_file" ]; then "$ipt" --test $noflush "$ipt_file" || exit 12; fi
if [ -n "$ip6t_file" ]; then "$ip6t" --test $noflush "$ip6t_file" || exit 13; fi
exit 0
"""


def check_files(files: dict[str, str]) -> list[str]:
    """Errors the tools find: the ipsets are created and the restore files tested (`--test`) in one
    private network namespace, so set references are checked too. [] when all is well."""
    failing = {11: SUFFIX_IPSET, 12: SUFFIX_V4, 13: SUFFIX_V6}
    texts = [files.get(s, "") for s in (SUFFIX_V4, SUFFIX_V6)]
    own = any(file_mode(t) == "own-chains" for t in texts if t)
    with tempfile.TemporaryDirectory(prefix="fwmatrix-iptables-") as tmp:
        paths = {}
        for suffix in (SUFFIX_IPSET, SUFFIX_V4, SUFFIX_V6):
            if suffix in files:
                paths[suffix] = str(Path(tmp) / f"ruleset{suffix}")
                Path(paths[suffix]).write_text(files[suffix])
        argv = ["sh", "-c", _CHECK_SCRIPT, "check"]
        argv += [tool_path("ipset") if SUFFIX_IPSET in paths else "", paths.get(SUFFIX_IPSET, "")]
        argv += [tool_path("iptables-restore") if SUFFIX_V4 in paths else "", paths.get(SUFFIX_V4, "")]
        argv += [tool_path("ip6tables-restore") if SUFFIX_V6 in paths else "", paths.get(SUFFIX_V6, "")]
        argv += ["--noflush" if own else ""]
        proc = run_private(argv)
    if proc.returncode == 0:
        return []
    suffix = failing.get(proc.returncode, "")
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip() and not line.startswith("Try `")]
    lines = [line.replace(tmp, "") for line in lines]
    return [f"{suffix}: {line}" if suffix else line for line in lines] or [f"check failed with exit code {proc.returncode}"]


# -- applying -------------------------------------------------------------------

Runner = Callable[..., "subprocess.CompletedProcess[str]"]  # run(argv, stdin=None); raises on failure


def apply(files: dict[str, str], run: Runner) -> None:
    """Load rendered files where `run` runs commands (e.g. `NetNamespace.run`).

    Order: ipsets first (new sets exist before rules use them), then each family's restore
    (atomic per table), then fwmatrix's sets nothing uses any more are destroyed. In own-chains
    mode the restore input is completed from the live ruleset: a jump to each entry chain
    where it is missing (and extra copies removed), and FWM-* chains this ruleset no longer has
    flushed, unhooked and deleted - so applying twice gives the same ruleset as applying once."""
    if SUFFIX_IPSET in files:
        run(["ipset", "restore"], stdin=files[SUFFIX_IPSET])
    for family, suffix in FAMILY_SUFFIX.items():
        if suffix not in files:
            continue
        text = files[suffix]
        if file_mode(text) == "own-chains":
            live = run([SAVE_TOOL[family]]).stdout
            run([RESTORE_TOOL[family], "--noflush"], stdin=own_chains_plan(text, live))
        else:
            run([RESTORE_TOOL[family]], stdin=text)
    if have("ipset"):
        wanted = set(re.findall(r"^create (\S+)", files.get(SUFFIX_IPSET, ""), re.MULTILINE))
        for name in run(["ipset", "list", "-n"]).stdout.split():
            if name.startswith(tuple(SET_PREFIX.values())) and name not in wanted:
                run(["ipset", "destroy", name])


# -- listing ------------------------------------------------------------------------

LEGACY_WARNING_RE = re.compile(r"Warning: ip6?tables-legacy tables present")


def read_live() -> Ruleset:
    """The iptables and ip6tables rulesets of the current network namespace (with its ipsets).

    `iptables-save` is the system's default variant. When it warns that iptables-legacy
    tables are present too, those run in the kernel as well and are read with
    `iptables-legacy-save` (as tables named "<table>-legacy")."""
    ipsets = None
    if have("ipset"):
        proc = subprocess.run([tool_path("ipset"), "save"], capture_output=True, text=True, timeout=120, check=False)
        ipsets = proc.stdout if proc.returncode == 0 else None  # no ipset support: set matches stay Unmodelled
    tables: list[Table] = []
    for family, tool in SAVE_TOOL.items():
        proc = _save(tool)
        tables += parse_save(proc.stdout, family, tool, ipsets).tables
        if LEGACY_WARNING_RE.search(proc.stderr):
            legacy_tool = tool.replace("tables-save", "tables-legacy-save")
            legacy = parse_save(_save(legacy_tool).stdout, family, legacy_tool, ipsets)
            tables += [Table(t.family, f"{t.name}-legacy", t.chains, t.sets) for t in legacy.tables]
    return Ruleset(tuple(tables))


def _save(tool: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([tool_path(tool)], capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise BackendError(f"{tool} failed: {(proc.stderr or proc.stdout).strip() or proc.returncode}")
    return proc
