"""nftables backend: Ruleset IR -> an `nft -f` script, and a live ruleset
(nft's JSON listing, or nft text) -> the Ruleset IR.

  render      IR -> the script (render, RenderError)
  binding     the python-nftables binding, or the nft binary: check (`nft -c`),
              load and list, in private network namespaces
  parse       nft -j JSON, or nft text, -> IR (parse_json, parse_text, read_live):
              the listing's tables, their sets, maps and chains
  statements  a rule's statements -> IR rules: its matches and one action
  matches     a `match` statement -> IR matches, through the table's context
  values      the values in them
  describe    nft-like text for what parse cannot model

The script replaces fwmatrix's own tables in one transaction and touches
nothing else: `table X {}` makes sure the table exists, `delete table X`
removes it with everything in it, and the full definition follows. `nft -f`
applies a file atomically, so the kernel sees the old ruleset or the new one,
never a mix, and other tables (a container runtime's) survive.

Every string placed in the script is either an identifier made of
[A-Za-z0-9_] or a quoted string checked to hold no quote, backslash or
newline: a name in the matrix cannot smuggle syntax into the ruleset.

What it cannot model: the IR knows interface names, the address family,
addresses, the layer-4 protocol, ports and the ct state and status bits, and
gives a rule one action. Reading a ruleset, nothing is dropped silently: a
match the IR cannot express becomes Unmodelled (it may or may not match):
other header fields, marks, fib, interface indices with no name, named sets
of other types, rate limits, quotas, meters, sets filled from the packet
path, iptables-nft (xt) expressions. A statement that may change the
packet's fate becomes UnmodelledAction: SNAT, masquerade, queue, changes to
the packet, a DNAT with options fwmatrix does not model, and any verdict
behind one of them. Only statements that never change a verdict (counter,
log, nftrace, flow offload) are skipped. A table with flags fwmatrix cannot
read may be dormant: an Unmodelled rule in front of its base chains says so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fwmatrix.backends.nftables.render import RenderError, render
from fwmatrix.ir import Ruleset

if TYPE_CHECKING:
    from fwmatrix.backends.nftables.binding import check, list_ruleset_json, load
    from fwmatrix.backends.nftables.parse import parse_json, parse_text, read_live
    from fwmatrix.backends.nftables.statements import XT_TEXT

# imported when first asked for: compiling needs neither (parse, binding and what they import
# were about a fifth of `fwmatrix compile`'s imports)
_LAZY = {"check": "binding", "list_ruleset_json": "binding", "load": "binding",
         "XT_TEXT": "statements", "parse_json": "parse", "parse_text": "parse", "read_live": "parse"}

__all__ = [
    "NAME", "SUFFIX", "render_files", "check_files",
    "RenderError", "render", "check", "load", "list_ruleset_json",
    "XT_TEXT", "parse_json", "parse_text", "read_live",
]

NAME = "nftables"
SUFFIX = ".nft"


# -- the backend interface (see fwmatrix/targets.py) ----------------------------


def render_files(ruleset: Ruleset) -> dict[str, str]:
    """File suffix -> contents, for one firewall."""
    return {SUFFIX: render(ruleset)}


def check_files(files: dict[str, str]) -> list[str]:
    from fwmatrix.backends.nftables.binding import check

    return check(files[SUFFIX])


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
