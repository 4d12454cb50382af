"""Source NAT (a postrouting nat chain of `snat`/`masquerade` rules) as pf's `nat-to` on the
out rules that pass the packets (OpenBSD).

pf translates a `match out ... nat-to` before the out filter rules, which would then see the
new source, where netfilter's forward chain sees the old one (postrouting comes after it). A
pass rule's own `nat-to` applies to exactly the packets that rule passes, so the out rules
keep matching the source the forward chain matched, as netfilter does. Each accept cell on
an output interface is checked against the source NAT cells of that interface: inside one
it takes its translation; apart from all it takes none; anything else (partly inside, or
inside two with different translations) would translate a different set of packets than
netfilter, and is refused. FreeBSD's pf has no `nat-to` on pass rules: refused there (the
writer says so).
"""

from __future__ import annotations

from dataclasses import replace

from fwmatrix.backends.pf.lower import _Cell, _cell_within, _cells, _flatten, _Lowered, _meet
from fwmatrix.backends.pf.names import RenderError
from fwmatrix.ir import Chain, Masquerade, Table


def snat_cells(table: Table, chain: Chain) -> list[_Cell]:
    """The postrouting chain's translations as cells, each with its output interface and `snat`."""
    if chain.policy not in (None, "accept"):
        raise RenderError(f"nat chain '{chain.name}' has policy {chain.policy}: pf translation rules cannot drop")
    out: list[_Cell] = []
    for flat in _flatten(table, chain):
        if flat.verdict != "snat" or flat.snat is None:
            raise RenderError(f"postrouting nat chain '{chain.name}': only source NAT has a pf form here, not '{flat.verdict}'")
        for cell, state in _cells(flat, table):
            if state is not None or cell.dnat or cell.iif is not None:
                raise RenderError(f"nat chain '{chain.name}': source NAT on ct state, ct status or an input interface has no pf form")
            if cell.oif is None:
                raise RenderError(f"nat chain '{chain.name}': source NAT without an output interface has no pf form")
            if isinstance(flat.snat, Masquerade):
                out.append(replace(cell, snat=cell.oif))
                continue
            if cell.family not in (None, flat.snat.family):
                continue  # `snat ip to` never applies to the other family's packets
            out.append(replace(cell, family=flat.snat.family, snat=flat.snat.address))
    return out


def apply_snat(low: _Lowered, translations: list[_Cell]) -> None:
    """Give every accept cell the translation of the source NAT cells that hold it."""
    if not translations:
        return
    for index, (verdict, note, cells) in enumerate(low.filter_rules):
        if verdict != "accept":
            continue
        low.filter_rules[index] = (verdict, note, [_translated(cell, translations) for cell in cells])


def _translated(cell: _Cell, translations: list[_Cell]) -> _Cell:
    meeting = [t for t in translations if _overlap(cell, t)]
    if not meeting:
        return cell
    targets = {t.snat for t in meeting}
    holder = next((t for t in meeting if cell.oif == t.oif and cell.family is not None and t.proto in (None, cell.proto)
                   and _cell_within(cell, t)), None)
    if holder is None or len(targets) > 1:
        raise RenderError(f"the accept rule {_text(cell)} is partly inside a source NAT (or inside two): pf translates on "
                          "the pass rule, so it would translate other packets than netfilter's postrouting")
    return replace(cell, snat=holder.snat)


def _overlap(a: _Cell, b: _Cell) -> bool:
    """Can a packet match both? (b is a translation cell: its oif is set, its iif is not)"""
    if a.oif is not None and a.oif != b.oif:
        return False
    if a.family is not None and b.family is not None and a.family != b.family:
        return False
    family = a.family or b.family or 4
    pairs = ((a.saddr, b.saddr, "ip.saddr" if family == 4 else "ip6.saddr"), (a.daddr, b.daddr, "ip.daddr" if family == 4 else "ip6.daddr"),
             (a.proto, b.proto, "l4proto"), (a.dport, b.dport, "dport"))
    return all(x is None or y is None or _meet(f, x, y) is not None for x, y, f in pairs)  # type: ignore[arg-type]


def _text(cell: _Cell) -> str:
    return f"out on {cell.oif} from {cell.saddr or 'any'} to {cell.daddr or 'any'} proto {cell.proto} port {cell.dport}"
