"""`fwmatrix show`: the matrix as the connectivity matrix of a design document, with the
firewalls and interfaces each opening is placed on and the management accesses, as a
table, Markdown or JSON (schema fwmatrix.show/1). One view, built once from the intent;
each format only writes it."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape

from fwmatrix.compile.intent import Intent, management_arrivals
from fwmatrix.matrix.resolve import Resolver
from fwmatrix.report.tables import Table

REPLIES = ("Replies to these openings pass by connection tracking (established/related): "
           "nothing needs opening from the DMZ towards the internet.")
MANAGEMENT_TITLE = "management access to the firewalls (kept by `fwmatrix apply`)"


@dataclass
class OpeningRow:
    index: int
    name: str
    sources: list[str]
    destinations: list[str]
    services: list[str]  # as the matrix names them
    ports: list[str]  # what they are: tcp/443, udp/10000-30000
    nat: str
    placed_on: list[str]  # "edge: wan0→dmz0"; empty: it crosses no firewall
    note: str
    meta: dict  # owner, ticket, expires
    meta_text: str  # the same for people
    file: str
    line: int

    def cells(self) -> list[str]:
        named, ports = ", ".join(self.services), ", ".join(self.ports)
        return [str(self.index), self.name, ", ".join(self.sources), ", ".join(self.destinations),
                ports if named == ports else f"{named}\n({ports})", self.nat,
                "\n".join(self.placed_on or ["(crosses no firewall)"]), "\n".join(t for t in (self.note, self.meta_text) if t)]

    def to_json(self) -> dict:
        return {"row": self.index, "name": self.name, "from": self.sources, "to": self.destinations, "services": self.services,
                "ports": self.ports, "nat": self.nat or None, "placed_on": self.placed_on, "note": self.note, "file": self.file,
                "line": self.line} | self.meta


@dataclass
class ManagementRow:
    firewall: str
    index: int
    sources: list[str]
    destinations: list[str]  # empty: any address of the firewall
    ports: list[str]
    arrives_on: list[str]
    note: str
    forwarded_by: list[str]  # the other firewalls on its way: "core: lan0→transit0"

    def cells(self) -> list[str]:
        return [self.firewall, str(self.index), ", ".join(self.sources), ", ".join(self.destinations) or "(any address of it)",
                ", ".join(self.ports), ", ".join(self.arrives_on), self.note, "\n".join(self.forwarded_by)]

    def to_json(self) -> dict:
        return {"firewall": self.firewall, "index": self.index, "from": self.sources, "to": self.destinations, "ports": self.ports,
                "arrives_on": self.arrives_on, "note": self.note, "forwarded_by": self.forwarded_by}


@dataclass
class MatrixView:
    matrix: str
    title: str
    file: str
    firewall: str | None
    openings: list[OpeningRow] = field(default_factory=list)
    management: list[ManagementRow] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"schema": "fwmatrix.show/1", "matrix": self.matrix, "title": self.title, "file": self.file, "firewall": self.firewall,
                "openings": [row.to_json() for row in self.openings], "management": [row.to_json() for row in self.management]}


OPENING_COLUMNS = ("#", "opening", "from", "to", "service", "NAT", "placed on", "note")
MANAGEMENT_COLUMNS = ("firewall", "#", "from", "to", "service", "arrives on", "note", "forwarded by")


def matrix_view(intent: Intent, firewall: str | None = None, openings: tuple[str, ...] = ()) -> MatrixView:
    """The view of the matrix: every opening (those placed on `firewall`, those named in
    `openings`, when given) and, unless openings are named, the management accesses."""
    m = intent.matrix
    resolver = Resolver(m)
    placement: dict[int, list[str]] = {}
    by_access: dict[str, list[str]] = {}
    for fw_name, fw in intent.firewalls.items():
        if firewall is not None and fw_name != firewall:
            continue
        placed = [(flow.opening, f"{fw_name}: {flow.in_iface}→{flow.out_iface}") for flow in fw.flows]
        placed += [(item.opening, f"{fw_name}: {item.in_iface}→itself") for item in fw.inputs]  # its input chain
        placed += [(snat.opening, f"{fw_name}: source NAT out of {snat.out_iface}") for snat in fw.snats]
        for opening, text in placed:
            lines = placement.setdefault(opening.index, [])
            if text not in lines:
                lines.append(text)
            if opening.index < 0:  # a management access (intent.build_intent names it FIREWALL-management-N)
                by_access[opening.name] = lines
    view = MatrixView(m.name, m.title, m.file, firewall)
    for opening in m.openings:
        if (firewall is not None and opening.index not in placement) or (openings and opening.name not in openings):
            continue
        nat = ""
        if opening.nat is not None:
            nat = opening.nat.target + (f" port {opening.nat.port}" if opening.nat.port else "")
        if opening.snat is not None:
            nat = f"source: {opening.snat.target}"
        view.openings.append(OpeningRow(
            opening.index, opening.name, list(opening.sources), list(opening.destinations), list(opening.services),
            [str(p) for p in resolver.services(opening)], nat, placement.get(opening.index, []), opening.note,
            opening.meta.to_json() if opening.meta else {}, opening.meta.text() if opening.meta else "", opening.where.file, opening.where.line))
    if openings:
        return view
    for fw in m.firewalls.values():
        if firewall is not None and fw.name != firewall:
            continue
        for access in fw.management:
            arrives = sorted({iface for ifaces, _ in management_arrivals(m, fw.name, access, resolver) for iface in ifaces})
            on_the_way = [line for line in by_access.get(f"{fw.name}-management-{access.index}", []) if not line.startswith(f"{fw.name}: ")]
            view.management.append(ManagementRow(fw.name, access.index, list(access.sources), list(access.destinations),
                                                 [str(p) for p in resolver.services(access.as_opening())], arrives, access.note, on_the_way))
    return view


def print_view(view: MatrixView, console: Console) -> None:
    table = Table(title=escape(f"{view.title} — {view.matrix}"), show_lines=True)
    for column in OPENING_COLUMNS:
        table.add_column(column, overflow="fold")
    for row in view.openings:
        table.add_row(*(escape(cell) for cell in row.cells()))  # user text: never rich markup
    console.print(table)
    console.print(REPLIES)
    if view.management:
        table = Table(title=MANAGEMENT_TITLE, show_lines=True)
        for column in MANAGEMENT_COLUMNS:
            table.add_column(column, overflow="fold")
        for access in view.management:
            table.add_row(*(escape(cell) for cell in access.cells()))
        console.print(table)


def view_markdown(view: MatrixView) -> str:
    out = [f"### {_md(view.title)} — {_md(view.matrix)}", "", *_md_table(OPENING_COLUMNS, [row.cells() for row in view.openings]), "", REPLIES]
    if view.management:
        out += ["", f"#### {_md(MANAGEMENT_TITLE)}", "", *_md_table(MANAGEMENT_COLUMNS, [row.cells() for row in view.management])]
    return "\n".join(out) + "\n"


def _md_table(columns: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]


def _md(text: str) -> str:
    """Table-cell safe: pipes escaped, lines joined by <br>."""
    return text.replace("|", "\\|").replace("\n", "<br>")

