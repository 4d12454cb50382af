"""The two modes (docs/backend-iptables.md), and the marker line that tells them apart:

  own-chains (default): only fwmatrix's FWM-* chains are declared and
      flushed (`iptables-restore --noflush`), so a container runtime's
      chains survive; each used built-in chain needs one jump to its
      FWM-<BUILTIN> entry chain, which `apply` adds atomically when missing.
  full: the files own the whole nat and filter tables (plain
      `iptables-restore` flushes them).

An own-chains file is completed against the live ruleset when applied (own_chains_plan),
and read by the audit with the jumps that apply adds (_hooked), so it is judged as it runs."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from typing import Literal

from fwmatrix.backends.iptables.names import BUILTIN_CHAINS, BUILTINS, CHAIN_PREFIX, RESTORE_TOOL, TABLES
from fwmatrix.ir import Chain, Jump, Rule, Table

Mode = Literal["own-chains", "full"]
MODES: tuple[Mode, ...] = ("own-chains", "full")
DEFAULT_MODE: Mode = "own-chains"
MODE_MARKER = "# fwmatrix-mode: "


def _mode_lines(mode: Mode, family: int) -> list[str]:
    tool = RESTORE_TOOL[family]
    if mode == "own-chains":
        return [
            f"{MODE_MARKER.removeprefix('# ')}own-chains",
            f"Load with `{tool} --noflush`: it replaces fwmatrix's FWM-* chains only, so other",
            "chains (a container runtime's) survive. Each FWM-<BUILTIN> entry chain needs one",
            "jump from its built-in chain, e.g. `-I FORWARD 1 -j FWM-FORWARD`; fwmatrix's apply",
            "step adds it in the same transaction when missing (see docs/backend-iptables.md).",
        ]
    return [
        f"{MODE_MARKER.removeprefix('# ')}full",
        f"Load with `{tool}`: it replaces the whole nat and filter tables.",
    ]


def file_mode(text: str) -> Mode:
    for line in text.splitlines():
        if line.startswith(MODE_MARKER):
            mode = line.removeprefix(MODE_MARKER).strip()
            if mode in MODES:
                return mode  # type: ignore[return-value]
    return "full"


def _sections(text: str) -> dict[str, list[str]]:
    """restore/save text -> {table: its lines between *table and COMMIT}."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = out.setdefault(line[1:].strip(), [])
        elif line.strip() == "COMMIT":
            current = None
        elif current is not None and line and not line.startswith("#"):
            current.append(line)
    return out


def own_chains_plan(text: str, live: str) -> str:
    """The own-chains restore input completed against the live ruleset (`iptables-save` text)."""
    ours, theirs = _sections(text), _sections(live)
    head = [line for line in text.splitlines() if line.startswith("#")]
    tables = [t for t in TABLES if t in ours or any(line.startswith(":" + CHAIN_PREFIX) for line in theirs.get(t, []))]
    out = head
    for table in tables:
        lines = ours.get(table, [])
        declared = {line[1:].split()[0] for line in lines if line.startswith(":")}
        live_lines = theirs.get(table, [])
        live_chains = [line[1:].split()[0] for line in live_lines if line.startswith(":")]
        live_rules = [line for line in live_lines if line.startswith("-A ")]
        stale = [c for c in live_chains if c.startswith(CHAIN_PREFIX) and c not in declared]
        extra: list[str] = []
        for builtin in BUILTINS[table]:
            entry = CHAIN_PREFIX + builtin
            if entry in declared:
                copies = live_rules.count(f"-A {builtin} -j {entry}")
                extra += [f"-I {builtin} 1 -j {entry}"] if copies == 0 else [f"-D {builtin} -j {entry}"] * (copies - 1)
        for rule in live_rules:  # references to stale chains from chains we do not flush
            words = rule.split()
            if not words[1].startswith(CHAIN_PREFIX) and any(a in ("-j", "-g") and b in stale for a, b in pairwise(words)):
                extra.append("-D" + rule[2:])
        extra += [f"-X {c}" for c in stale]
        decl = [line for line in lines if line.startswith(":")] + [f":{c} - [0:0]" for c in stale]
        body = [line for line in lines if not line.startswith(":")]
        out += [f"*{table}"] + decl + body + extra + ["COMMIT"]
    return "\n".join(out) + "\n"


def _hooked(table: Table, source: str) -> Table:
    """An own-chains table with the jumps apply adds: each FWM-<BUILTIN> chain is jumped to first
    thing from its built-in chain (made, accepting, where the file does not declare it)."""
    builtins = BUILTIN_CHAINS[table.name]
    chains = {c.name: c for c in table.chains}
    for builtin, (hook, kind, priority) in builtins.items():
        entry = CHAIN_PREFIX + builtin
        if entry not in chains:
            continue
        base = chains.get(builtin) or Chain(builtin, (), hook, kind, priority, "accept")
        if not any(isinstance(r.action, Jump) and r.action.chain == entry for r in base.rules):
            jump = Rule((), Jump(entry), origin=f"{source}: -A {builtin} -j {entry} (the jump apply adds)")
            chains[builtin] = replace(base, rules=(jump,) + base.rules)
    return replace(table, chains=tuple(chains.values()))
