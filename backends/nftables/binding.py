"""Talking to nftables: check, load and list rulesets, in private network namespaces.

The official python binding (Debian's python3-nftables, over libnftables) is
preferred; where it cannot be imported, the `nft` binary does the same job.
docs/nftables-binding.md says why. Everything here returns what nft says
(errors, JSON listings as text or dicts); reading a listing into the IR is
parse.py's work.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess

from fwmatrix.errors import BackendError
from fwmatrix.netns import NetNamespace, is_root, run_private, tool_path


def _binding():  # pragma: no cover - depends on the machine
    try:
        import nftables as binding  # type: ignore[import-not-found]
    except ImportError:
        return None
    return binding.Nftables()


def run_nft(script: str, json_output: bool = False) -> tuple[int, str, str]:
    """Run an nft script in the current network namespace: (rc, output, error)."""
    nft = _binding()
    if nft is not None:
        nft.set_json_output(json_output)
        rc, out, err = nft.cmd(script)
        return rc, out, err
    argv = [tool_path("nft")] + (["-j"] if json_output else []) + ["-f", "-"]
    proc = subprocess.run(argv, input=script, capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def check(text: str) -> list[str]:
    """Errors `nft -c` finds in a script, checked in a private network namespace."""
    proc = run_private(["nft", "-c", "-f", "-"], stdin=text)
    if proc.returncode == 0:
        return []
    if not is_root() and "Message too long" in proc.stderr:
        # in an unprivileged user namespace netlink batches are capped: the ruleset is
        # not wrong, only too large to check this way (as root it is checked)
        raise BackendError("too large to check without root (netlink refuses so large a batch in a user namespace); run the check as root")
    return [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()] or [f"nft exited with {proc.returncode}"]


def load(ns: NetNamespace, text: str) -> None:
    """Load a script into a namespace (one transaction) with the binding."""

    def apply() -> None:
        rc, _, err = run_nft(text)
        if rc != 0:
            raise BackendError(err.strip() or f"nft failed with {rc}")

    ns.call(apply)


def list_ruleset_json(ns: NetNamespace) -> dict:
    """`nft -j list ruleset` of a namespace, as parsed JSON."""

    def listing() -> str:
        rc, out, err = run_nft("list ruleset", json_output=True)
        if rc != 0:
            raise BackendError(err.strip() or f"nft failed with {rc}")
        return out

    return json.loads(ns.call(listing))


def list_live() -> str:
    """`nft -j list ruleset` of the current network namespace, as text."""
    rc, out, err = run_nft("list ruleset", json_output=True)
    if rc != 0:
        raise BackendError(f"nft list ruleset failed: {err.strip() or rc}")
    return out


NFT_ERROR_RE = re.compile(r"^(?:/dev/stdin|-):(\d+):[\d-]+: Error: (.*)$")


def list_text(text: str, source: str) -> str:
    """`nft -j list ruleset` after loading an nft text into a private, empty
    network namespace that vanishes with the process (a user namespace too when
    not root). Invalid text raises BackendError with nft's first error and its line."""
    nft = shlex.quote(tool_path("nft"))
    proc = run_private(["sh", "-c", f"{nft} -f - && {nft} -j list ruleset"], stdin=text)
    if proc.returncode != 0:
        raise _nft_failure(proc.stderr or proc.stdout, source)
    return proc.stdout


def _nft_failure(output: str, source: str) -> BackendError:
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [NFT_ERROR_RE.match(line) for line in lines]
    located = [m for m in errors if m is not None]
    if not located:
        first = next((line for line in lines if "Error" in line), lines[0] if lines else "nft failed")
        return BackendError(first.strip(), file=source)
    more = f" (and {len(located) - 1} more error{'s' if len(located) > 2 else ''})" if len(located) > 1 else ""
    return BackendError(located[0][2] + more, file=source, line=int(located[0][1]))
