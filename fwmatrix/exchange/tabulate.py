"""A matrix as tables: one row per opening, zone, host, group, service, firewall, management access.

Every cell is text, written so that `build` reads it back into the same
matrix: lists are joined by ", ", named values are "name: value", and a
port forward's NAT is "HOST" or "HOST port N". The destination port column
shows the ports an opening's services stand for (what a reader of the
source document looks for); the traffic type column keeps the services'
names, and is left empty when the opening names no service.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from fwmatrix.matrix.model import Host, Matrix, Metadata, Opening, parse_service_literal
from fwmatrix.exchange.layout import ACCEPTED, FIREWALLS, GROUPS, HOSTS, MANAGEMENT, MATRIX, OPENINGS, SERVICES, SHEETS, ZONES, Column, Sheet

LIST_SEPARATOR = ", "
# the named addresses that have a column of their own (the source document's EXT and INT)
OWN_COLUMNS = ("ext", "int")


@dataclass(frozen=True)
class Table:
    sheet: Sheet
    rows: tuple[dict[str, str], ...]  # column key -> cell text

    @cached_property  # once: each row's cells ask for it
    def columns(self) -> tuple[Column, ...]:
        """The sheet's columns, but the optional ones no row fills."""
        return tuple(c for c in self.sheet.columns if not c.optional or any(row.get(c.key) for row in self.rows))


def joined(items: object) -> str:
    return LIST_SEPARATOR.join(str(item) for item in items)  # type: ignore[attr-defined]


def is_literal_service(ref: str) -> bool:
    try:
        return parse_service_literal(ref) is not None
    except ValueError:
        return True


def opening_row(opening: Opening, matrix: Matrix) -> dict[str, str]:
    services = opening.services
    named = any(not is_literal_service(ref) for ref in services)
    if named:
        ports: list[str] = []
        for ref in services:
            parts = matrix.services[ref].parts if ref in matrix.services else (parse_service_literal(ref),)
            ports += [str(part) for part in parts if str(part) not in ports]
    nat = ""
    if opening.nat is not None:
        nat = opening.nat.target + (f" port {opening.nat.port}" if opening.nat.port is not None else "")
    return {
        "from": joined(opening.sources),
        "service": joined(services) if named else "",
        "to": joined(opening.destinations),
        "ports": joined(ports) if named else joined(services),
        "nat": nat,
        "note": opening.note,
        "name": opening.name,
        "snat": opening.snat.target if opening.snat is not None else "",
        **metadata_cells(opening.meta),
        "log": "yes" if opening.log else "",
    }


def metadata_cells(meta: Metadata | None) -> dict[str, str]:
    if meta is None:
        return {}
    return {"owner": meta.owner, "ticket": meta.ticket, "expires": meta.expires.isoformat() if meta.expires else ""}


def host_row(host: Host) -> dict[str, str]:
    row = {"name": host.name, "roles": joined(host.roles), "note": host.note}
    others = []
    for addr_name, addresses in host.addresses.items():
        if addr_name == "":
            row["address"] = joined(addresses)
        elif addr_name in OWN_COLUMNS:
            row[addr_name] = joined(addresses)
        else:
            others.append(f"{addr_name}: {' '.join(str(a) for a in addresses)}")
    row["other"] = joined(others)
    return row


def tables(matrix: Matrix) -> list[Table]:
    """The matrix's tables in export order; sheets without rows are left out (but zones,
    firewalls, openings and the matrix sheet are always there)."""
    by_sheet: dict[str, list[dict[str, str]]] = {
        OPENINGS.name: [opening_row(o, matrix) for o in matrix.openings],
        ZONES.name: [
            {"name": z.name, "networks": "any" if z.is_any else joined(z.networks), "note": z.note} for z in matrix.zones.values()
        ],
        HOSTS.name: [host_row(h) for h in matrix.hosts.values()],
        GROUPS.name: [{"name": g.name, "members": joined(g.members), "note": g.note, **metadata_cells(g.meta)} for g in matrix.groups.values()],
        SERVICES.name: [{"name": s.name, "ports": joined(s.parts), "note": s.note} for s in matrix.services.values()],
        FIREWALLS.name: [
            {
                "name": fw.name,
                # the firewall's own addresses on an interface after '@': 'lan0: lan @ 10.40.0.1'
                "interfaces": joined(f"{iface}: {zone}" + "".join(f" @ {a}" for a in fw.addresses.get(iface, ()))
                                     for iface, zone in fw.interfaces.items()),
                "public": str(fw.public["public"]) if list(fw.public) == ["public"] else joined(f"{n}: {a}" for n, a in fw.public.items()),
                "note": fw.note,
                "log": "yes" if fw.log else "",
            }
            for fw in matrix.firewalls.values()
        ],
        MANAGEMENT.name: [
            {"firewall": fw.name, "from": joined(a.sources), "to": joined(a.destinations), "service": joined(a.services), "note": a.note}
            for fw in matrix.firewalls.values()
            for a in fw.management
        ],
        ACCEPTED.name: [
            {"kind": a.kind, "firewall": a.firewall or "", "opening": a.opening or "", "rule": a.rule or "", "regions": "\n".join(a.regions),
             "message": a.message or "", "reason": a.reason, "owner": a.owner, "expires": a.expires.isoformat()}
            for a in matrix.accepts
        ],
        MATRIX.name: [
            {"key": "fwmatrix", "value": "1"},
            {"key": "name", "value": matrix.name},
            {"key": "title", "value": matrix.title},
        ],
    }
    return [Table(sheet, tuple(by_sheet[sheet.name])) for sheet in SHEETS if by_sheet[sheet.name] or sheet.required]
