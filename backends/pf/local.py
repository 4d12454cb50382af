"""The input chain (the firewall's own services, policy drop) as pf rules.

pf has no input hook: a packet for the firewall itself meets the same `pass in` rules as a
forwarded one, and `self` names the firewall's addresses. The input chain's accept cells
become `pass in quick ... to self` (or to the address the cell names), and a
`block drop in quick from any to self` follows them, before the forward pre-filter, whose
`pass in` rules (meant for forwarding) would otherwise let in a packet for the firewall that
netfilter's input chain drops. pf checks the state table first, as the chain's leading
`ct state established,related accept` does; `set skip on lo` is its loopback accept.
"""

from __future__ import annotations

from dataclasses import replace

from fwmatrix.backends.pf.lower import _Cell, _cells, _flatten, _Lowered
from fwmatrix.backends.pf.names import RenderError
from fwmatrix.backends.pf.pflog import lower_log
from fwmatrix.ir import Chain, Table

ICMPV6 = 58
LOOPBACK = "lo"


def lower_input(low: _Lowered, table: Table, chain: Chain) -> None:
    if chain.policy != "drop":
        raise RenderError(f"input chain '{chain.name}' has policy {chain.policy}: the pf backend writes input chains with policy drop only")
    flats = _flatten(table, chain)
    for index, flat in enumerate(flats):
        if flat.verdict == "log":
            lower_log(low, table, chain, flat, last=index == len(flats) - 1)
            continue
        cells = list(_cells(flat, table))
        states = {state for _, state in cells}
        bare = all(cell == _Cell(None, None, cell.family, None, None, None, None, cell.note) for cell, _ in cells)
        if bare and (flat.verdict, states) in (("accept", {"established", "related"}), ("drop", {"invalid"})):
            continue  # the state table (see the forward chain's lowering)
        if flat.verdict != "accept" or states - {None, "new"}:
            raise RenderError(f"input chain '{chain.name}': only accept rules (on new connections) have a pf form here")
        kept = []
        for cell, _ in cells:
            if cell.iif == LOOPBACK and replace(cell, iif=None) == _Cell(None, None, cell.family, None, None, None, None, cell.note):
                continue  # `set skip on lo`
            if cell.oif is not None:
                raise RenderError(f"input chain '{chain.name}': an output interface on the input hook matches nothing")
            kept.append(replace(cell, family=6) if cell.proto == ICMPV6 and cell.family is None else cell)
        if kept:
            low.input_rules.append((flat.comment, kept))
