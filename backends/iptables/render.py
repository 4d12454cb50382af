"""Rendering: the Ruleset IR as iptables-restore and ip6tables-restore input (own-chains or
full mode), with the ipset restore input for the address groups that became ipsets."""

from __future__ import annotations

from fwmatrix.backends.iptables.ipset import _SetBook, render_ipsets
from fwmatrix.backends.iptables.lower import _Lowering, _table_families, _TableOut
from fwmatrix.backends.iptables.modes import DEFAULT_MODE, MODES, Mode, _mode_lines
from fwmatrix.backends.iptables.names import (
    BUILTINS,
    CHAIN_MAX,
    CHAIN_PREFIX,
    FAMILY_SUFFIX,
    SUFFIX_IPSET,
    SUFFIX_V4,
    SUFFIX_V6,
    TABLES,
)
from fwmatrix.backends.iptables.safe import CHAIN_RE, RenderError, _header, short_name
from fwmatrix.ir import Ruleset


def _chain_names(ruleset: Ruleset) -> dict[tuple[str, str, str], str]:
    """iptables names for the IR's regular chains: FWM-<name>, at most 28 characters, unique,
    never an entry chain's name (FWM-<BUILTIN>), so `apply` can tell entry chains by name."""
    used = {CHAIN_PREFIX + b for builtins in BUILTINS.values() for b in builtins}
    names: dict[tuple[str, str, str], str] = {}
    for table in ruleset.tables:
        for chain in table.chains:
            if not CHAIN_RE.match(chain.name):
                raise RenderError(f"refusing {chain.name!r} as a chain name")
            if chain.hook is not None:
                continue
            name = short_name(CHAIN_PREFIX, chain.name, CHAIN_MAX)
            n = 2
            while name in used:
                name = short_name(CHAIN_PREFIX, f"{chain.name}_{n}", CHAIN_MAX)
                n += 1
            used.add(name)
            names[(table.family, table.name, chain.name)] = name
    return names


def render_family(ruleset: Ruleset, family: int, mode: Mode = DEFAULT_MODE, book: _SetBook | None = None) -> str:
    """The iptables-restore (family 4) or ip6tables-restore (family 6) input for a ruleset."""
    if mode not in MODES:
        raise ValueError(f"unknown iptables mode {mode!r}; choose one of {', '.join(MODES)}")
    book = book if book is not None else _SetBook()
    lowered = _Lowering(ruleset, family, mode, book, _chain_names(ruleset)).tables()
    out = _header(ruleset, _mode_lines(mode, family))
    for ipt_table in TABLES:
        t = lowered.get(ipt_table, _TableOut())
        decl: list[str] = []
        body: list[str] = []
        if mode == "full":
            for builtin in BUILTINS[ipt_table]:
                policy = t.base[builtin][1].policy if builtin in t.base else None
                decl.append(f":{builtin} {(policy or 'accept').upper()} [0:0]")
        else:
            for builtin in BUILTINS[ipt_table]:
                if builtin in t.base and t.base[builtin][1].policy == "drop":
                    decl.append(f":{builtin} DROP [0:0]")  # sets the policy; --noflush keeps its rules
        for name, rules in t.chains.items():
            builtin = name.removeprefix(CHAIN_PREFIX)
            if mode == "own-chains" and not rules and builtin in t.base and t.base[builtin][1].policy != "drop":
                continue  # an empty entry chain on an accepting hook does nothing: no chain, no hook
            if name not in BUILTINS[ipt_table]:
                decl.append(f":{name} - [0:0]")  # creates the chain, or flushes it under --noflush
            body.extend(r.text(name) for r in rules)
        if mode == "full" or decl:
            out += [f"*{ipt_table}"] + decl + body + ["COMMIT"]
    return "\n".join(out) + "\n"


def render_files(ruleset: Ruleset, mode: Mode = DEFAULT_MODE) -> dict[str, str]:
    """File suffix -> contents, for one firewall: .ipt4 / .ipt6 for each family an IR table
    covers, and .ipset when some address group became an ipset."""
    families = sorted({f for table in ruleset.tables for f in _table_families(table)})
    book = _SetBook()
    files = {FAMILY_SUFFIX[f]: render_family(ruleset, f, mode, book) for f in families}
    if book.sets:
        files[SUFFIX_IPSET] = render_ipsets(ruleset, book)
    return files


def rule_count(files: dict[str, str]) -> int:
    return sum(line.startswith("-A ") for suffix in (SUFFIX_V4, SUFFIX_V6) for line in files.get(suffix, "").splitlines())
