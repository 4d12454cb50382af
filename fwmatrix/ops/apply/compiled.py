"""A ruleset compiled elsewhere (`fwmatrix compile --out-dir DIR` on a controller), applied as it
is: the firewall's files read from DIR, and read back into the IR the plan predicts with.
The matrix still judges it (the audits before and after, the management accesses), so a
compiled file that differs from the matrix shows as findings of the plan's `after`."""

from __future__ import annotations

import os

from fwmatrix.errors import BackendError, FwmatrixError, RulesetError
from fwmatrix.ir import Ruleset
from fwmatrix.targets import MAX_RULESET_BYTES, backend, output_suffixes, parse_text


def read_compiled(directory: str, firewall: str, backend_name: str) -> dict[str, str]:
    """suffix -> text of FIREWALL's files for the backend in `directory`."""
    files: dict[str, str] = {}
    for suffix in output_suffixes(backend_name):
        path = os.path.join(directory, f"{firewall}{suffix}")
        try:
            if os.path.getsize(path) > MAX_RULESET_BYTES:
                raise FwmatrixError(f"more than the {MAX_RULESET_BYTES} bytes fwmatrix reads", path)
            with open(path, encoding="utf-8") as handle:
                files[suffix] = handle.read()
        except FileNotFoundError:
            if backend_name == "iptables" and suffix == backend(backend_name).SUFFIX_IPSET:
                continue  # a firewall without sets has no set file
            raise FwmatrixError(f"no compiled {backend_name} ruleset for firewall '{firewall}' "
                                f"(fwmatrix compile MATRIX -f {firewall} -b {backend_name} --out-dir {directory})", path) from None
        except OSError as exc:
            raise FwmatrixError(f"cannot read: {exc.strerror or exc}", path) from None
        except UnicodeDecodeError:
            raise FwmatrixError("not UTF-8 text", path) from None
    return files


def compiled_ruleset(directory: str, firewall: str, backend_name: str) -> Ruleset:
    """The compiled files as IR (nft reads nftables text in a private namespace)."""
    files = read_compiled(directory, firewall, backend_name)
    source = os.path.join(directory, firewall)
    try:
        if backend_name != "iptables":
            (suffix, text), = files.items()
            return parse_text(backend_name, text, source + suffix)
        module = backend("iptables")
        tables = []
        for family, suffix in module.FAMILY_SUFFIX.items():
            tables += module.parse_save(files[suffix], family, source + suffix, files.get(module.SUFFIX_IPSET)).tables
        return Ruleset(tuple(tables))
    except BackendError as exc:  # the file's own fault: an input error, naming it
        raise RulesetError(exc.message, exc.file or source, exc.line) from None
