"""The backends fwmatrix compiles to, found by name.

Each backend module (under backends/, installed as fwmatrix.backends) offers:
  NAME                      its name on the command line;
  render_files(ruleset)     file suffix -> text, for one firewall;
  check_files(files)        the errors the target's own tool finds in them
                            (checked in a private network namespace).
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS = ("nftables", "iptables", "pf")


def backend(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}")
    return importlib.import_module(f"fwmatrix.backends.{name}")

