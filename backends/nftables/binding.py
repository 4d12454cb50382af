"""Talking to nftables: check, load and list rulesets, in private network namespaces.

The official python binding (Debian's python3-nftables, over libnftables) is
preferred; where it cannot be imported, the `nft` binary does the same job.
docs/nftables-binding.md says why. Everything here returns what nft says
(errors, JSON listings as text or dicts); reading a listing into the IR is
parse.py's work.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from typing import Any, Callable

from fwmatrix.errors import BackendError
from fwmatrix.targets import include_directory
from fwmatrix.netns import NetNamespace, Placeholders, is_root, run_private, tool_path


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


# nft resolves interface, user and group names where it runs: "Interface does not exist" for
# `iif eth2` in an empty namespace. The error's place (file, line, columns) holds the name; the
# file is the script (/dev/stdin) or one it includes.
MISSING_RE = re.compile(r"^(\S+?):(\d+):(\d+)-(\d+): Error: (Interface|User|Group) does not exist$", re.M)
STDIN = ("/dev/stdin", "-", "<cmdline>")  # what nft (and the binding) call the script it was given
INCLUDE_RE = re.compile(r"^\s*include\s", re.M)  # names in other files: placeholders as they come
ACCOUNTS_RE = re.compile(r"\b(?:skuid|skgid|uid|gid)\b")  # the text may name users or groups
MAX_PLACEHOLDER_ROUNDS = 32  # nft names one missing name per set each time
Runner = Callable[[list[str], str, Placeholders], "subprocess.CompletedProcess[str]"]
# `delete table T` fails on a host without T ("No such file or directory"), as in a private
# namespace; on the ruleset's own host T existed. Whatever T held, nothing of it is left after
# the delete, so adding an empty T first (on the same line: error lines stay true) is exact.
# `destroy table T` (nft 1.0.8: delete T if it exists) leaves the same: written so for older nft.
DELETE_TABLE_RE = re.compile(r"^(\s*)(?:delete|destroy)(\s+table\s+(?:(?:ip|ip6|inet|arp|bridge|netdev)\s+)?[A-Za-z_][\w.-]*)(\s*(?:[;#].*)?)$", re.M)
# nft 1.1 lists `fib ... oif exists|missing` as `fib ... check exists|missing` (the same expression:
# nft's own tests read the one and list the other); nft 1.0.6 knows only the first spelling
FIB_CHECK_RE = re.compile(r"(\bfib\s[^;#{}\n]*?)\bcheck(\s+(?:exists|missing)\b)")


def with_deleted_tables(text: str) -> str:
    """The script with `add table T;` in front of each `delete table T` (see DELETE_TABLE_RE)."""
    return DELETE_TABLE_RE.sub(r"\1add\2; delete\2\3", text)


def for_this_nft(text: str) -> str:
    """The script as this host's nft loads it where it means the same: `delete`/`destroy table` of
    a table only the ruleset's host had, newer spellings of what this nft writes otherwise. Each
    change stays on its line, so nft's error lines are the file's."""
    parts = with_deleted_tables(text).split('"')
    parts[::2] = [FIB_CHECK_RE.sub(r"\1oif\2", part) for part in parts[::2]]  # not inside quoted strings
    return '"'.join(parts)


def run_nft_private(argv: list[str], text: str, runner: Runner | None = None,
                    directory: str | None = None) -> tuple[subprocess.CompletedProcess[str], Placeholders]:
    """Run nft on a script in a private namespace in which the interfaces, users and groups
    it names exist (as placeholders: dummy links, generated passwd and group entries), so a
    ruleset written on another host loads here as it does there. A name nft still misses
    after that, or that cannot be a placeholder, is left to nft's error. Returns nft's
    result and the placeholders it needed. `runner` runs it elsewhere (the lab's namespace);
    `directory` is where nft runs (include_directory)."""
    placeholders = Placeholders(accounts=ACCOUNTS_RE.search(text) is not None)
    text = for_this_nft(text)
    lines = {name: text.splitlines() for name in STDIN}  # as nft reads it: its columns
    run = runner or (lambda argv, script, p: run_private(argv, stdin=script, placeholders=p, cwd=directory))
    for _ in range(MAX_PLACEHOLDER_ROUNDS):
        proc = run(argv, text, placeholders)
        if proc.returncode == 0:
            return proc, placeholders
        added = False
        for m in MISSING_RE.finditer(proc.stderr):
            line, first, last, kind = int(m[2]), int(m[3]), int(m[4]), m[5].lower()
            if m[1] not in lines:  # a file the script includes
                lines[m[1]] = _file_lines(os.path.join(directory or ".", m[1]))
            written = lines[m[1]]
            name = written[line - 1][first - 1 : last].strip('"') if 0 < line <= len(written) else ""
            added |= placeholders.add(kind, name)
            placeholders.accounts |= kind != "interface"  # named in an included file the script's text does not show
        if not added:
            return proc, placeholders
    return proc, placeholders


def _file_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return []  # nft read it, so this does not happen; without its lines no placeholder is made


def load_with_accounts(ns: NetNamespace, text: str, directory: str | None = None) -> None:
    """Load a script naming users or groups of another host (`meta skuid nm-openvpn`) into a
    namespace: nft resolves them in a private mount namespace's placeholder accounts (nft
    lists them by number, as the placeholders' ids). `directory`: where nft runs (its includes)."""
    proc, _ = run_nft_private(["nft", "-f", "-"], text, runner=lambda argv, script, p: ns.run_with_accounts(argv, script, p, cwd=directory),
                              directory=directory)
    if proc.returncode != 0:
        raise _nft_failure(proc.stderr or proc.stdout, "nft")


def check(text: str) -> list[str]:
    """Errors `nft -c` finds in a script, checked in a private network namespace."""
    proc, _ = run_nft_private(["nft", "-c", "-f", "-"], text)
    if proc.returncode == 0:
        return []
    if not is_root() and "Message too long" in proc.stderr:
        # in an unprivileged user namespace netlink batches are capped: the ruleset is
        # not wrong, only too large to check this way (as root it is checked)
        raise BackendError("too large to check without root (netlink refuses so large a batch in a user namespace); run the check as root")
    return [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()] or [f"nft exited with {proc.returncode}"]


def load(ns: NetNamespace, text: str, directory: str | None = None) -> None:
    """Load a script into a namespace (one transaction) with the binding; `directory`: where
    its includes are read from (include_directory)."""

    def apply() -> None:
        if directory is not None:
            os.chdir(directory)  # in the child ns.call forks
        rc, _, err = run_nft(text)
        if rc != 0:
            raise BackendError(err.strip() or f"nft failed with {rc}")

    ns.call(apply)


def list_ruleset_json(ns: NetNamespace) -> dict:
    """`nft -j list ruleset` of a namespace, as parsed JSON (devices completed, see `with_devices`)."""
    return json.loads(ns.call(list_live))


def list_live() -> str:
    """`nft -j list ruleset` of the current network namespace, as text (devices completed)."""
    rc, out, err = run_nft("list ruleset", json_output=True)
    if rc != 0:
        raise BackendError(f"nft list ruleset failed: {err.strip() or rc}")
    if '"ingress"' in out or '"egress"' in out:
        rc, chains, err = run_nft("list chains")
        if rc == 0:
            out = with_devices(out, chains)
    return out


CHAIN_HEADER_RE = re.compile(r'^\s*(table|chain)\s+(?:(\w+)\s+)?("[^"]*"|\S+)\s*\{')
DEVICES_RE = re.compile(r'\bhook\s+(?:ingress|egress)\s+(?:device\s+("[^"]*"|\S+)|devices\s*=\s*\{([^}]*)\})')


def with_devices(listing: str, chains_text: str) -> str:
    """The JSON listing with each ingress/egress chain's devices ("dev"), which nft's JSON
    leaves out before 1.0.7, taken from the text listing of the same chains (`nft list chains`)."""
    devices: dict[tuple[str, str, str], list[str]] = {}
    table: tuple[str, str] = ("", "")
    chain = ""
    for line in chains_text.splitlines():
        header = CHAIN_HEADER_RE.match(line)
        if header:
            if header.group(1) == "table":
                table = (header.group(2) or "ip", header.group(3).strip('"'))
            else:
                chain = header.group(3).strip('"')
            continue
        found = DEVICES_RE.search(line)
        if found:
            names = [found.group(1)] if found.group(1) else found.group(2).split(",")
            devices[table + (chain,)] = [n.strip().strip('"') for n in names if n.strip()]
    data = json.loads(listing)
    for item in data.get("nftables", []):
        body = item.get("chain") if isinstance(item, dict) else None
        if isinstance(body, dict) and body.get("hook") in ("ingress", "egress") and "dev" not in body:
            key = (body.get("family"), body.get("table"), body.get("name"))
            if key in devices:
                body["dev"] = devices[key]  # type: ignore[index]
    return json.dumps(data)


NFT_ERROR_RE = re.compile(r"^(\S+?):(\d+):(\d+)(?:-(\d+))?: Error: (.*)$")
KERNEL_REFUSED = "Could not process rule: "  # the kernel's errno alone: the statement it refused is added
INCLUDED_RE = re.compile(r"^(?:In file included from|\s+from) (\S+?):(\d+):[\d-]+:$")  # innermost first
NOT_FOUND = "File not found: "


def list_text(text: str, source: str) -> str:
    """`nft -j list ruleset` after loading an nft text into a private, empty
    network namespace that vanishes with the process (a user namespace too when
    not root), nft running in the file's directory (include_directory). Invalid
    text raises BackendError with nft's first error, its file and its line."""
    nft = shlex.quote(tool_path("nft"))
    directory = include_directory(source)
    proc, placeholders = run_nft_private(["sh", "-c", f"{nft} -f - && {nft} -j list ruleset && printf '\\0' && {nft} list chains"], text,
                                         directory=directory)
    if proc.returncode != 0:
        raise _nft_failure(proc.stderr or proc.stdout, source, directory)
    listing, _, chains = proc.stdout.partition("\0")
    listing = with_devices(listing, chains) if chains else listing
    if not placeholders.ids:
        return listing
    data = json.loads(listing)
    _account_names(data, placeholders.ids)
    return json.dumps(data)


ACCOUNT_KEYS = {"skuid": "user", "skgid": "group", "uid": "user", "gid": "group"}  # meta keys and set types


def _account_names(node: Any, ids: dict[str, dict[int, str]]) -> None:
    """nft lists users and groups by number: the placeholders get the names the text gave
    them back (in matches on meta skuid/skgid, alone or concatenated, and in sets of uid/gid)."""
    if isinstance(node, list):
        for item in node:
            _account_names(item, ids)
        return
    if not isinstance(node, dict):
        return
    match, named_set = node.get("match"), node.get("set")
    if isinstance(match, dict) and "right" in match:
        match["right"] = _renamed(match["right"], _account_kinds(match.get("left")), ids)
    elif isinstance(named_set, dict) and "elem" in named_set:
        types = named_set.get("type")
        kinds = [ACCOUNT_KEYS.get(t) if isinstance(t, str) else None for t in (types if isinstance(types, list) else [types])]
        named_set["elem"] = _renamed({"set": named_set["elem"]}, kinds, ids)["set"]
    for value in node.values():
        _account_names(value, ids)


def _account_kinds(left: Any) -> list[str | None]:
    """Per position of a match's left side: 'user', 'group' or None."""
    parts = left["concat"] if isinstance(left, dict) and isinstance(left.get("concat"), list) else [left]
    return [ACCOUNT_KEYS.get(p["meta"].get("key")) if isinstance(p, dict) and isinstance(p.get("meta"), dict) else None for p in parts]


def _renamed(value: Any, kinds: list[str | None], ids: dict[str, dict[int, str]]) -> Any:
    if not any(kinds):
        return value
    if isinstance(value, dict) and isinstance(value.get("set"), list):
        return {**value, "set": [_renamed(item, kinds, ids) for item in value["set"]]}
    if isinstance(value, dict) and isinstance(value.get("elem"), dict) and "val" in value["elem"]:
        return {**value, "elem": {**value["elem"], "val": _renamed(value["elem"]["val"], kinds, ids)}}
    if isinstance(value, dict) and isinstance(value.get("concat"), list) and len(value["concat"]) == len(kinds):
        return {**value, "concat": [_renamed(v, [k], ids) for v, k in zip(value["concat"], kinds)]}
    if isinstance(value, int) and len(kinds) == 1 and kinds[0] is not None:
        return ids.get(kinds[0], {}).get(value, value)
    return value


def _nft_failure(output: str, source: str, directory: str | None = None) -> BackendError:
    """nft's first error as one line, at its place: the ruleset file's line, or the line of a
    file it includes (named as the user would reach it, and where the ruleset includes it)."""
    lines = [line for line in output.splitlines() if line.strip()]
    located: list[tuple[re.Match[str], list[re.Match[str]], str]] = []
    chain: list[re.Match[str]] = []
    for n, line in enumerate(lines):
        included, error = INCLUDED_RE.match(line), NFT_ERROR_RE.match(line)
        if included:
            chain.append(included)
        elif error:
            located.append((error, chain, lines[n + 1] if n + 1 < len(lines) else ""))  # nft echoes the line it means
            chain = []
    if not located:
        first = next((line for line in lines if "Error" in line), lines[0] if lines else "nft failed")
        return BackendError(first.strip(), file=source)
    (error, chain, echoed), more = located[0], len(located) - 1
    message = error[5] + _where_not_found(error[5], directory)
    if error[5].startswith(KERNEL_REFUSED):
        refused = " ".join(echoed[int(error[3]) - 1 : int(error[4] or error[3])].split())
        message += f": `{refused}`" if refused else ""
    if chain:  # where the ruleset file includes it: the outermost inclusion
        message += f" (included from {_shown(chain[-1][1], source, directory)}:{chain[-1][2]})"
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return BackendError(message, file=_shown(error[1], source, directory), line=int(error[2]))


def _shown(name: str, source: str, directory: str | None) -> str:
    """A file as nft names it in an error, as the user would reach it: the ruleset itself for the
    script nft read from stdin, an included file by its path beside the ruleset's."""
    if name in STDIN:
        return source
    if os.path.isabs(name) or directory is None:
        return name
    return os.path.relpath(os.path.join(directory, name)) if not os.path.isabs(source) else os.path.normpath(os.path.join(directory, name))


def _where_not_found(message: str, directory: str | None) -> str:
    """Where nft looked for an include it did not find (nft says only the name)."""
    if not message.startswith(NOT_FOUND):
        return ""
    name = message.removeprefix(NOT_FOUND)
    if name.startswith(("./", "../")):
        return f" (no {os.path.normpath(os.path.join(directory or os.getcwd(), name))}: nft reads './' and '../' from the ruleset's directory)"
    if not os.path.isabs(name):
        return " (not in nft's include path, /etc unless -I says otherwise: write './' for a file beside the ruleset)"
    return ""
