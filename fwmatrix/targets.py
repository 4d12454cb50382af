"""The backends fwmatrix compiles to, found by name.

Each backend module (under backends/, installed as fwmatrix.backends) offers:
  NAME                      its name on the command line;
  render_files(ruleset)     file suffix -> text, for one firewall;
  check_files(files)        the errors the target's own tool finds in them
                            (checked in a private network namespace).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import sys
from types import ModuleType

from fwmatrix.errors import BackendError, FwmatrixError, RulesetError
from fwmatrix.ir import Ruleset, jump_problem

BACKENDS = ("nftables", "iptables", "pf")


def backend(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}")
    return importlib.import_module(f"fwmatrix.backends.{name}")


def output_suffixes(name: str) -> tuple[str, ...]:
    """Every file suffix a backend's render_files may write for one firewall."""
    module = backend(name)
    if name == "iptables":
        return (module.SUFFIX_V4, module.SUFFIX_V6, module.SUFFIX_IPSET)
    return (module.SUFFIX,)


def interface_name_refusal(name: str) -> str | None:
    """Why some backend could not write `name` as an interface name, or None.
    The matrix refuses such names at load time, so every backend compiles every matrix."""
    keywords, pattern = _pf_interface_rule()  # pf is the strictest
    if name in keywords:
        return f"'{name}' is a pf keyword"
    if not pattern.match(name):
        return "pf cannot read it as an interface name"
    return None


@functools.cache
def _pf_interface_rule() -> tuple[frozenset[str], re.Pattern[str]]:
    """pf's keywords and interface-name pattern, from backends/pf/names.py alone.

    Importing the pf package for them (every pf module, about 15 ms) was paid by every
    command that loads a matrix; and netaddr's exceptions at those modules' import stay in
    reference cycles with the frames below them, the loader's, so that its whole YAML tree
    waited for the cyclic collector (0.15 s of CPU at 10,000 openings)."""
    names = sys.modules.get("fwmatrix.backends.pf.names")
    if names is None:
        import fwmatrix.backends

        path = os.path.join(fwmatrix.backends.__path__[0], "pf", "names.py")
        spec = importlib.util.spec_from_file_location("fwmatrix.backends._pf_names", path)
        assert spec is not None and spec.loader is not None
        names = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(names)
    return names.PF_KEYWORDS, names.IFACE_RE



# -- reading live rulesets (the audit) ---------------------------------------------

MAX_RULESET_BYTES = 256 * 1024 * 1024


def include_directory(source: str) -> str | None:
    """The directory a ruleset file's own tool runs in to read it: the file's own, as
    `cd DIR && nft -f FILE` or `cd DIR && pfctl -nf FILE` reads it (both take a relative
    include from where they run); None for text that is no file (a listing, a string),
    whose includes cannot be resolved."""
    return os.path.dirname(os.path.abspath(source)) if source and os.path.isfile(source) else None
PF_KEYWORDS = ("pass", "block", "match", "rdr", "nat", "binat", "set", "scrub", "antispoof", "anchor", "no", "rdr-anchor", "nat-anchor")


def detect(text: str) -> str:
    """Which backend wrote a ruleset text: nft JSON or text, iptables-save, or pf."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return "nftables"
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("*filter", "*nat", "*mangle", "*raw", "*security", ":FORWARD", ":INPUT", "-A ")):
            return "iptables"
        words = line.split()
        if words[0] == "table" and len(words) > 1 and words[1].startswith("<"):
            return "pf"  # pf: table <name> { ... }
        if line.startswith(("table ", "flush ruleset", "add table", "define ")):
            return "nftables"
        if words[0] in PF_KEYWORDS or (len(words) > 1 and words[1] == "="):
            return "pf"  # a pf rule, or a macro definition
    # nothing but `include "..."` (nft and pf both write it) and comments: what the comments say
    if NFT_SHEBANG_RE.search(text):
        return "nftables"
    if PF_ID_RE.search(text):
        return "pf"
    raise FwmatrixError("cannot tell which firewall wrote this ruleset: give --backend nftables, iptables or pf")


NFT_SHEBANG_RE = re.compile(r"\A#!\s*\S*/nft\b")  # `#!/usr/sbin/nft -f`
PF_ID_RE = re.compile(r"^#.*\$(?:OpenBSD|FreeBSD): \S*pf\.conf\b", re.M)  # the id line of the systems' stock pf.conf, kept by many


def parse_text(name: str, text: str, source: str) -> Ruleset:
    module = backend(name)
    if name == "nftables":
        return module.parse_json(text) if text.lstrip().startswith("{") else module.parse_text(text, source)
    if name == "iptables":
        # fwmatrix's own files say their family in the suffix; saved dumps in their header
        base = os.path.basename(source)
        family = 6 if base.endswith(".ipt6") or "ip6tables" in base else 4 if base.endswith(".ipt4") else None
        return module.parse_save(text, family=family, source=source)
    return module.parse_ruleset(text, source=source)


def read_ruleset(path: str, name: str = "auto") -> tuple[Ruleset, str]:
    """A ruleset file (nft -j list ruleset, a .nft file, iptables-save, pf.conf) as IR."""
    try:
        size = os.path.getsize(path)
        if size > MAX_RULESET_BYTES:
            raise FwmatrixError(f"the ruleset is {size} bytes, more than the {MAX_RULESET_BYTES} fwmatrix reads", path)
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise FwmatrixError(f"cannot read: {exc.strerror or exc}", path) from None
    except UnicodeDecodeError:
        raise FwmatrixError("not UTF-8 text", path) from None
    if not text.strip():
        raise FwmatrixError("the ruleset file is empty", path)
    if name == "auto":
        try:
            name = detect(text)
        except FwmatrixError as exc:
            raise FwmatrixError(exc.message, path) from None
    try:
        ruleset = parse_text(name, text, path)
    except BackendError as exc:  # the ruleset's own fault: an input error (exit 2), naming the file
        raise RulesetError(exc.message, exc.file or path, exc.line) from None
    except RecursionError:  # a reader that recurses over the input's nesting
        raise RulesetError("nested too deeply to read", path) from None
    return followable(ruleset, path), name


def followable(ruleset: Ruleset, source: str) -> Ruleset:
    """The ruleset, if the audit can follow its jumps (no loop, no missing chain); else RulesetError."""
    for table in ruleset.tables:
        problem = jump_problem(table)
        if problem is not None:
            raise RulesetError(problem, source)
    return ruleset


def read_live(name: str) -> Ruleset:
    """The running kernel's ruleset (this host's network namespace), as IR."""
    if name == "pf":
        raise FwmatrixError("pf cannot be read live on this system: save `pfctl -sr` and `pfctl -sn` on the firewall and pass them with --ruleset")
    return followable(backend("nftables" if name == "auto" else name).read_live(), "the live ruleset")
