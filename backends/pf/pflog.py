"""`log` rules of the IR (a counted, rate-limited log that decides nothing) as pf's `log`.

Two shapes are written, the two fwmatrix compiles: a bare log rule that ends a filter chain
(log what the policy drops) becomes `log` on the rule that drops it there (the default
`block drop log all` for the forward chain, `block drop in log quick from any to self` for
the input chain); a log rule on an opening's packets becomes `match in log on IF ...`
(OpenBSD: a match rule decides nothing, as the IR's log rule; it follows the translation
rules, so it sees the translated destination, as the forward chain does). pflog has no rate
limit: pf logs every packet such a rule matches (pflogd writes them to a file, not to the
kernel log). FreeBSD's pf has no match rules: a log on an opening is refused there.
"""

from __future__ import annotations

from fwmatrix.backends.pf.lower import _Cell, _cells, _Flat, _Lowered
from fwmatrix.backends.pf.names import RenderError
from fwmatrix.ir import Chain, Table


def lower_log(low: _Lowered, table: Table, chain: Chain, flat: _Flat, *, last: bool) -> None:
    cells = [cell for cell, state in _cells(flat, table) if state in (None, "new")]
    bare = all(cell == _Cell(None, None, cell.family, None, None, None, None, cell.note) for cell in cells)
    if bare:
        if not last or chain.hook not in ("forward", "input"):
            raise RenderError(f"chain '{chain.name}': a log of every packet has a pf form only as the chain's last rule (its policy drop)")
        low.log_drops.add(chain.hook)
        return
    if any(cell.oif is not None and chain.hook == "input" for cell in cells):
        raise RenderError(f"input chain '{chain.name}': an output interface on the input hook matches nothing")
    low.log_rules.append((flat.comment, [_Cell(c.iif, None, c.family, c.saddr, c.daddr, c.proto, c.dport, c.note, dnat=c.dnat) for c in cells],
                          chain.hook == "input"))
