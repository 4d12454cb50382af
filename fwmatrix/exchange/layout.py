"""The spreadsheet's layout: its sheets, their columns and the headers each column answers to.

One table of `Sheet`s drives export (which columns, in which order, how wide)
and import (which header means which column, in English or Italian — the
source document's own words: Sorgente, Tipologia traffico, IP Destinazione,
Porta Destinazione, Note). A new matrix key is one more `Column` here, one
more cell in `tabulate` and one more field in `build`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    key: str  # the name `tabulate` and `build` use
    english: str  # the header export writes by default
    italian: str  # the header export writes with --language it
    aliases: tuple[str, ...] = ()  # other headers import accepts
    width: int = 16  # export's column width, in characters
    required: bool = False  # import refuses a sheet without it
    optional: bool = False  # export leaves it out when no row fills it (a key few matrices use)

    def headers(self) -> tuple[str, ...]:
        return (self.english, self.italian) + self.aliases


@dataclass(frozen=True)
class Sheet:
    name: str
    columns: tuple[Column, ...]
    aliases: tuple[str, ...] = ()  # other sheet names import accepts (Italian)
    required: bool = False

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)


NOTE = Column("note", "notes", "Note", ("note", "nota", "comment", "comments"), width=40)
# who answers for an opening or a group, its change ticket, its last day (written when some row has them)
METADATA = (
    Column("owner", "owner", "Responsabile", (), 18, optional=True),
    Column("ticket", "ticket", "Ticket", ("change", "change ticket"), 14, optional=True),
    Column("expires", "expires", "Scadenza", ("until", "fino al"), 12, optional=True),
)

OPENINGS = Sheet("openings", (
    Column("from", "source", "Sorgente", ("from", "sources"), 22, required=True),
    Column("service", "traffic type", "Tipologia traffico", ("tipo traffico", "service", "services", "servizio", "servizi"), 18),
    Column("to", "destination", "IP Destinazione", ("destination ip", "to", "destinazione", "destinations"), 22, required=True),
    Column("ports", "destination port", "Porta Destinazione", ("destination ports", "port", "ports", "porta", "porte", "porte destinazione"), 24),
    Column("nat", "NAT", "NAT", ("nat to", "nat verso"), 20),
    NOTE,
    Column("name", "name", "Nome", ("opening", "apertura"), 22),
    Column("snat", "source NAT", "NAT sorgente", ("snat", "source nat to", "masquerade"), 18, optional=True),
    *METADATA,
    Column("log", "log", "Log", ("logging",), 8, optional=True),
), aliases=("matrice connettività", "matrice connettivita", "matrice", "aperture", "connectivity matrix"), required=True)

ZONES = Sheet("zones", (
    Column("name", "zone", "Zona", ("name", "nome"), 16, required=True),
    Column("networks", "networks", "Reti", ("network", "rete", "subnet"), 30, required=True),
    NOTE,
), aliases=("zone",), required=True)

HOSTS = Sheet("hosts", (
    Column("name", "host", "Host", ("name", "nome", "server"), 16, required=True),
    Column("address", "address", "Indirizzo IP", ("addresses", "ip", "indirizzo", "indirizzi"), 24),
    Column("ext", "EXT address", "IP EXT", ("ext", "ip ext", "ext ip"), 18),
    Column("int", "INT address", "IP INT", ("int", "ip int", "int ip"), 18),
    Column("other", "other named addresses", "Altri indirizzi", ("other addresses",), 24),
    Column("roles", "roles", "Ruoli", ("role", "ruolo"), 18),
    NOTE,
), aliases=("server",))

GROUPS = Sheet("groups", (
    Column("name", "group", "Gruppo", ("name", "nome"), 16, required=True),
    Column("members", "members", "Membri", ("membro",), 40, required=True),
    NOTE,
    *METADATA,
), aliases=("gruppi",))

SERVICES = Sheet("services", (
    Column("name", "service", "Servizio", ("name", "nome", "traffic type", "tipologia traffico"), 16, required=True),
    Column("ports", "ports", "Porte", ("port", "porta", "destination port", "porta destinazione"), 30, required=True),
    NOTE,
), aliases=("servizi",))

FIREWALLS = Sheet("firewalls", (
    Column("name", "firewall", "Firewall", ("name", "nome"), 16, required=True),
    Column("interfaces", "interfaces (interface: zone)", "Interfacce (interfaccia: zona)", ("interfaces", "interfacce"), 40, required=True),
    Column("public", "public addresses", "IP pubblici", ("public", "public address", "ip pubblico", "indirizzi pubblici"), 30),
    NOTE,
    Column("log", "log drops", "Log scarti", ("log", "logging"), 10, optional=True),
), aliases=("firewall",), required=True)

MANAGEMENT = Sheet("management", (
    Column("firewall", "firewall", "Firewall", (), 16, required=True),
    Column("from", "source", "Sorgente", ("from",), 22, required=True),
    Column("to", "destination", "IP Destinazione", ("to", "destinazione"), 22),
    Column("service", "service", "Servizio", ("services", "traffic type", "tipologia traffico", "porta"), 18, required=True),
    NOTE,
), aliases=("gestione",))

ACCEPTED = Sheet("accepted", (
    Column("kind", "kind", "Tipo", ("finding kind",), 16, required=True),
    Column("firewall", "firewall", "Firewall", (), 14),
    Column("opening", "opening", "Apertura", (), 18),
    Column("rule", "rule", "Regola", ("live rule",), 28),
    Column("regions", "packets (one a line)", "Pacchetti (uno per riga)", ("packets", "regions", "pacchetti"), 40),
    Column("message", "finding", "Rilievo", ("message", "messaggio"), 30),
    Column("reason", "reason", "Motivo", (), 30, required=True),
    Column("owner", "owner", "Responsabile", (), 20, required=True),
    Column("expires", "expires", "Scadenza", ("until", "fino al"), 12, required=True),
), aliases=("accept", "accepted findings", "accettati", "rilievi accettati"))

MATRIX = Sheet("matrix", (
    Column("key", "key", "Chiave", ("field", "campo"), 14, required=True),
    Column("value", "value", "Valore", ("valore",), 60, required=True),
), aliases=("matrice fwmatrix",))

# the matrix file's keys each sheet carries (tests/test_exchange.py compares them with the
# loader's: a key the loader learns and the spreadsheet does not carry fails that test)
CARRIED_KEYS = {
    # `include` is carried by being read: a spreadsheet holds the included definitions as its own
    "top": ("fwmatrix", "name", "title", "include", "zones", "hosts", "groups", "services", "firewalls", "openings", "accept"),
    "opening": ("name", "from", "to", "service", "services", "nat", "snat", "log", "note", "owner", "ticket", "expires"),
    "group": ("members", "note", "owner", "ticket", "expires"),
    "firewall": ("interfaces", "public", "management", "log", "note"),
    "management": ("from", "to", "service", "services", "note"),
    "host": ("addresses", "roles", "note"),
    "accept": ("kind", "firewall", "opening", "rule", "regions", "message", "reason", "owner", "expires"),
}

# in the order export writes them (the openings first, as in the source document)
SHEETS: tuple[Sheet, ...] = (OPENINGS, ZONES, HOSTS, GROUPS, SERVICES, FIREWALLS, MANAGEMENT, ACCEPTED, MATRIX)
LANGUAGES = ("en", "it")


def header_text(column: Column, language: str) -> str:
    return column.italian if language == "it" else column.english


def normalized(text: str) -> str:
    """A header or sheet name as import compares it: case, spaces and accents ignored."""
    text = text.strip().casefold().replace("à", "a").replace("è", "e").replace("é", "e").replace("ì", "i").replace("ò", "o").replace("ù", "u")
    return re.sub(r"[\s_]+", " ", text)


def sheet_named(name: str) -> Sheet | None:
    key = normalized(name)
    for sheet in SHEETS:
        if key in {normalized(n) for n in (sheet.name,) + sheet.aliases}:
            return sheet
    return None


def column_for_header(sheet: Sheet, header: str) -> Column | None:
    key = normalized(header)
    for column in sheet.columns:
        if key in {normalized(h) for h in column.headers()}:
            return column
    return None


def column_letter(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters
