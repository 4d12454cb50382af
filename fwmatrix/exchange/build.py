"""Tables read from a spreadsheet -> a matrix file, every error at its cell.

The sheets' rows become a YAML document with each value's cell remembered
by its path in the document (`("openings", 6, "to")`). The document is
checked by the matrix loader itself — one set of rules for YAML and for
spreadsheets — and each error the loader raises at a line is moved to the
cell that line came from. Only what the loader cannot see is checked here:
the sheets and their headers, cell types, and the destination port column
(which must agree with the traffic type it stands beside).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Iterator

import yaml
from netaddr import AddrFormatError, IPAddress

from fwmatrix.compile.intent import build_intent
from fwmatrix.errors import FwmatrixError, MatrixError, did_you_mean
from fwmatrix.exchange.names import canonical_references, folded_names
from fwmatrix.exchange.layout import (
    ACCEPTED, FIREWALLS, GROUPS, HOSTS, MANAGEMENT, MATRIX, OPENINGS, SERVICES, SHEETS, ZONES, Column, Sheet, column_for_header,
    column_letter, sheet_named,
)
from fwmatrix.exchange.tabulate import OWN_COLUMNS
from fwmatrix.matrix.loader import load_text
from fwmatrix.matrix.model import PROTOCOLS, parse_service_literal
from fwmatrix.matrix.yamlnodes import line_of

Path = tuple[object, ...]
METADATA_KEYS = ("owner", "ticket", "expires")  # of an opening or a group
# a multi-protocol port as the source document writes it: UDP+TCP/5060
_COMBINED_RE = re.compile(r"(?P<protos>[a-z0-9]+(?:\+[a-z0-9]+)+)/(?P<ports>.+)\Z")
# characters no cell may hold (as no matrix file may): C0 and C1 controls but tab and new lines
CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# CSV cells that a spreadsheet program would run as a formula are written with a leading quote
FORMULA_STARTS = ("=", "+", "-", "@")


class ExchangeError(FwmatrixError):
    """A spreadsheet fwmatrix cannot read into a matrix: printed as FILE: PLACE: message, exit 2."""


@dataclass(frozen=True)
class Place:
    """A sheet (or a CSV file's section), a row, a column."""

    sheet: str
    row: int | None = None
    column: int | None = None  # 0-based
    section: bool = False  # a CSV section: rows are the file's lines

    def __str__(self) -> str:
        text = f"{'section' if self.section else 'sheet'} '{self.sheet}'"
        if self.row is not None:
            text += f", {'line' if self.section else 'row'} {self.row}"
        if self.column is not None:
            text += f", column {column_letter(self.column)}"
        return text

    def at(self, row: int | None = None, column: int | None = None) -> Place:
        return Place(self.sheet, row, column, self.section)


@dataclass
class RawCell:
    value: object  # str, int, float, bool, a date, or None
    formula: bool = False


@dataclass
class RawSheet:
    """A sheet as a reader found it: its name and its non-empty rows by number."""

    name: str
    place: Place
    rows: list[tuple[int, list[RawCell]]]  # (row number, cells from column A), in order
    trailing_blank_rows: set[int] = field(default_factory=set)


@dataclass
class _Cell:
    text: str
    place: Place


class _Rows:
    """A sheet's data rows as {column key: cell}, after its header is checked."""

    def __init__(self, raw: RawSheet, sheet: Sheet, file: str):
        self.sheet, self.file = sheet, file
        self.rows: list[tuple[Place, dict[str, _Cell]]] = []
        rows = list(raw.rows)
        if not rows and not sheet.required:
            return  # an empty groups or services sheet: none of them
        if not rows:
            raise self.error(raw.place, f"the sheet is empty: it needs a header row ({', '.join(c.english for c in sheet.columns)})")
        header_number, header = rows[0]
        columns: dict[int, Column] = {}
        seen: dict[str, int] = {}
        for index, cell in enumerate(header):
            if cell.value is None or str(cell.value).strip() == "":
                continue
            place = raw.place.at(header_number, index)
            self.refuse_formula(cell, place)
            column = column_for_header(sheet, str(cell.value))
            if column is None:
                expected = ", ".join(f"'{c.english}' ('{c.italian}')" for c in sheet.columns)
                raise self.error(place, f"unknown header '{cell.value}'{did_you_mean(str(cell.value), [h for c in sheet.columns for h in c.headers()])}; this sheet's columns are: {expected}")
            if column.key in seen:
                raise self.error(place, f"duplicate header '{cell.value}': column {column_letter(seen[column.key])} is already '{column.english}'")
            seen[column.key] = index
            columns[index] = column
        for column in sheet.columns:
            if column.required and column.key not in seen:
                raise self.error(raw.place.at(header_number), f"no '{column.english}' column ('{column.italian}')")
        previous = header_number
        for number, cells in rows[1:]:
            row_place = raw.place.at(number)
            if number != previous + 1 and not raw.place.section:
                raise self.error(raw.place.at(previous + 1), "an empty row inside the table: delete it (or is what follows another table? a sheet holds one)")
            previous = number
            row: dict[str, _Cell] = {}
            for index, cell in enumerate(cells):
                if cell.value is None or (isinstance(cell.value, str) and cell.value.strip() == ""):
                    continue
                place = raw.place.at(number, index)
                self.refuse_formula(cell, place)
                if index not in columns:
                    raise self.error(place, "a value in a column without a header")
                row[columns[index].key] = _Cell(self.text(cell.value, columns[index], place), place)
            self.rows.append((row_place, row))

    def error(self, place: Place, message: str) -> ExchangeError:
        return ExchangeError(f"{place}: {message}", self.file)

    def refuse_formula(self, cell: RawCell, place: Place) -> None:
        if cell.formula:
            raise self.error(place, f"a formula ('{cell.value}'): fwmatrix reads values, write the value itself")

    def text(self, value: object, column: Column, place: Place) -> str:
        if isinstance(value, str):
            control = CONTROL_RE.search(value)
            if control:
                raise self.error(place, f"a control character ({control.group()!r}) in the cell: only text, tabs and new lines")
            return value.strip()
        if column.key == "expires" and isinstance(value, (datetime, date)):  # a date cell
            return value.date().isoformat() if isinstance(value, datetime) else value.isoformat()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(place, f"{type(value).__name__} '{value}' where text belongs: format the cell as text")
        if column.key in ("note", "value", "ticket") and float(value).is_integer():  # a ticket number typed as a number
            return str(int(value))
        if column.key in ("note", "value", "ticket"):
            return str(value)
        hint = " (write protocol/port, e.g. tcp/443)" if column.key == "ports" else ""
        raise self.error(place, f"the number {value} where text belongs{hint}: format the cell as text")


def items(text: str) -> list[str]:
    """A cell's list: items separated by commas or new lines."""
    return [item.strip() for item in re.split(r"[,\n;]", text) if item.strip()]


def named_items(cell: _Cell, what: str, error: type[ExchangeError] = ExchangeError, file: str = "") -> list[tuple[str, str]]:
    """'wan0: internet, dmz0: dmz' -> [('wan0', 'internet'), ('dmz0', 'dmz')] (split at each item's first colon)."""
    out = []
    for item in items(cell.text):
        name, colon, value = item.partition(":")
        if not colon or not name.strip() or not value.strip():
            raise error(f"{cell.place}: '{item}' is not '{what}'", file)
        out.append((name.strip(), value.strip()))
    return out


def _yes(text: str) -> object:
    """A log cell: yes/no (also true/false, sì, x); anything else is passed on for the loader to refuse, at its cell."""
    word = text.strip().lower()
    return True if word in ("yes", "true", "sì", "si", "x", "1") else False if word in ("no", "false", "0", "") else text


def _interface(text: str) -> object:
    """'lan' -> 'lan'; 'lan @ 10.40.0.1 @ fd00:40::1' -> {zone: lan, address: [...]}: the firewall's own addresses."""
    zone, *addresses = [part.strip() for part in text.split("@")]
    if not addresses:
        return zone
    return {"zone": zone, "address": addresses[0] if len(addresses) == 1 else addresses}


def service_literals(cell: _Cell, file: str) -> list[str]:
    """The destination ports of a cell, as service literals: 'UDP+TCP/5060, TCP/5061' -> udp/5060, tcp/5060, tcp/5061."""
    out: list[str] = []
    for item in items(cell.text):
        lowered = item.lower().replace(" ", "")
        combined = _COMBINED_RE.match(lowered)
        candidates = [f"{proto}/{combined['ports']}" for proto in combined["protos"].split("+")] if combined else [lowered]
        for candidate in candidates:
            try:
                part = parse_service_literal(candidate)
            except ValueError as exc:
                raise ExchangeError(f"{cell.place}: '{item}' is not a port range: {exc}", file) from None
            if part is None:
                raise ExchangeError(f"{cell.place}: '{item}' is not a port range (write protocol/port or protocol/low-high, e.g. tcp/443 or udp/10000-30000; protocols: {', '.join(PROTOCOLS)})", file)
            out.append(candidate)
    return out


class _Builder:
    def __init__(self, sheets: dict[str, _Rows], file: str, default_name: str):
        self.sheets, self.file, self.default_name = sheets, file, default_name
        self.cells: dict[Path, Place] = {}
        self.doc: dict[str, object] = {}

    def error(self, place: Place, message: str) -> ExchangeError:
        return ExchangeError(f"{place}: {message}", self.file)

    def rows(self, sheet: Sheet) -> list[tuple[Place, dict[str, _Cell]]]:
        return self.sheets[sheet.name].rows if sheet.name in self.sheets else []

    def put(self, path: Path, value: object, cell: _Cell | Place) -> object:
        self.cells[path] = cell.place if isinstance(cell, _Cell) else cell
        return value

    def required(self, row: dict[str, _Cell], key: str, sheet: Sheet, place: Place) -> _Cell:
        if key not in row:
            column = sheet.column(key)
            raise self.error(place, f"no {column.english} ('{column.italian}') in this row")
        return row[key]

    @staticmethod
    def one_or_list(values: list[str]) -> object:
        return values[0] if len(values) == 1 else values

    def build(self) -> dict[str, object]:
        self.doc = {"fwmatrix": 1, "name": self.default_name}
        self.matrix_fields()
        for key, builder in (("zones", self.zones), ("hosts", self.hosts), ("groups", self.groups), ("services", self.services),
                             ("firewalls", self.firewalls), ("openings", self.openings), ("accept", self.accepted)):
            self.doc[key] = builder((key,))
        if not self.doc["accept"]:
            del self.doc["accept"]
        canonical_references(self.doc)
        return self.doc

    def matrix_fields(self) -> None:
        for place, row in self.rows(MATRIX):
            key = self.required(row, "key", MATRIX, place)
            if key.text not in ("fwmatrix", "name", "title"):
                raise self.error(key.place, f"unknown key '{key.text}'{did_you_mean(key.text, ('fwmatrix', 'name', 'title'))}: the matrix sheet holds fwmatrix (the format version), name and title")
            value = self.required(row, "value", MATRIX, place)
            self.doc[key.text] = self.put((key.text,), int(value.text) if value.text.isdigit() else value.text, value)

    def with_note(self, path: Path, value: object, key: str, row: dict[str, _Cell]) -> object:
        if "note" not in row:
            return value
        return {key: value, "note": self.put(path + ("note",), row["note"].text, row["note"])}

    def named_rows(self, sheet: Sheet, section: Path) -> Iterator[tuple[str, Path, Place, dict[str, _Cell]]]:
        seen: dict[str, Place] = {}
        for place, row in self.rows(sheet):
            name = self.required(row, "name", sheet, place)
            if name.text in seen:
                raise self.error(name.place, f"'{name.text}' is already defined in {seen[name.text]}")
            seen[name.text] = name.place
            path = section + (name.text,)
            self.put(path, None, name)
            yield name.text, path, place, row

    def zones(self, section: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, path, place, row in self.named_rows(ZONES, section):
            cell = self.required(row, "networks", ZONES, place)
            networks = self.put(path + ("networks",), self.one_or_list(items(cell.text)), cell)
            out[name] = self.with_note(path, networks, "networks", row)
        return out

    def hosts(self, section: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, path, place, row in self.named_rows(HOSTS, section):
            addr_path = path + ("addresses",)
            named: dict[str, object] = {}
            for key in OWN_COLUMNS:
                if key in row:
                    named[key] = self.put(addr_path + (key,), self.one_or_list(items(row[key].text)), row[key])
            if "other" in row:
                for addr_name, value in named_items(row["other"], "name: address", file=self.file):
                    if addr_name in named:
                        raise self.error(row["other"].place, f"address '{addr_name}' of host '{name}' is named twice")
                    named[addr_name] = self.put(addr_path + (addr_name,), self.one_or_list(value.split()), row["other"])
            if "address" in row and named:
                raise self.error(row["address"].place, f"host '{name}' has an address and named addresses ({', '.join(named)}): a host has one or the other")
            if "address" in row:
                addresses: object = self.put(addr_path, self.one_or_list(items(row["address"].text)), row["address"])
            elif named:
                addresses = named
            else:
                raise self.error(place, f"host '{name}' has no address (address, EXT, INT or other named addresses)")
            host: dict[str, object] = {"addresses": addresses}
            if "roles" in row:
                host["roles"] = self.put(path + ("roles",), items(row["roles"].text), row["roles"])
            if "note" in row:
                host["note"] = self.put(path + ("note",), row["note"].text, row["note"])
            out[name] = host
        return out

    def groups(self, section: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, path, place, row in self.named_rows(GROUPS, section):
            cell = self.required(row, "members", GROUPS, place)
            members = self.put(path + ("members",), items(cell.text), cell)
            extra = {key: self.put(path + (key,), row[key].text, row[key]) for key in ("note",) + METADATA_KEYS if key in row}
            out[name] = {"members": members, **extra} if extra else members
        return out

    def services(self, section: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, path, place, row in self.named_rows(SERVICES, section):
            cell = self.required(row, "ports", SERVICES, place)
            ports = self.put(path + ("ports",), self.one_or_list(service_literals(cell, self.file)), cell)
            out[name] = self.with_note(path, ports, "ports", row)
        return out

    def firewalls(self, section: Path) -> dict[str, object]:
        out: dict[str, dict[str, object]] = {}
        for name, path, place, row in self.named_rows(FIREWALLS, section):
            cell = self.required(row, "interfaces", FIREWALLS, place)
            interfaces = {iface: self.put(path + ("interfaces", iface), _interface(zone), cell)
                          for iface, zone in named_items(cell, "interface: zone", file=self.file)}
            fw: dict[str, object] = {"interfaces": self.put(path + ("interfaces",), interfaces, cell)}
            if "public" in row:
                fw["public"] = self.public(row["public"], path + ("public",))
            if "note" in row:
                fw["note"] = self.put(path + ("note",), row["note"].text, row["note"])
            if "log" in row:
                fw["log"] = self.put(path + ("log",), _yes(row["log"].text), row["log"])
            out[name] = fw
        for place, row in self.rows(MANAGEMENT):
            firewall = self.required(row, "firewall", MANAGEMENT, place)
            if firewall.text not in out:
                raise self.error(firewall.place, f"unknown firewall '{firewall.text}'{did_you_mean(firewall.text, out)}")
            accesses = out[firewall.text].setdefault("management", [])
            assert isinstance(accesses, list)
            path = section + (firewall.text, "management", len(accesses))
            self.put(path, None, place)
            access: dict[str, object] = {}
            for key in ("from", "to", "service", "note"):
                if key in row:
                    value = row[key].text if key == "note" else self.one_or_list(items(row[key].text))
                    access[key] = self.put(path + (key,), value, row[key])
            self.required(row, "from", MANAGEMENT, place)
            self.required(row, "service", MANAGEMENT, place)
            accesses.append(access)
        return dict(out)

    def public(self, cell: _Cell, path: Path) -> object:
        try:
            IPAddress(cell.text, flags=0)
            return self.put(path, cell.text, cell)  # one address: `fw.public`
        except (AddrFormatError, ValueError, TypeError):
            pass
        return {name: self.put(path + (name,), address, cell) for name, address in named_items(cell, "name: address", file=self.file)}

    def openings(self, section: Path) -> list[object]:
        out: list[object] = []
        service_ports = self.service_ports()
        for index, (place, row) in enumerate(self.rows(OPENINGS)):
            path = section + (index,)
            self.put(path, None, place)
            opening: dict[str, object] = {}
            if "name" in row:
                opening["name"] = self.put(path + ("name",), row["name"].text, row["name"])
            for key in ("from", "to"):
                cell = self.required(row, key, OPENINGS, place)
                opening[key] = self.put(path + (key,), self.one_or_list(items(cell.text)), cell)
            opening["service"] = self.opening_services(row, place, path, service_ports)
            if "nat" in row:
                opening["nat"] = self.nat(row["nat"], path + ("nat",))
            if "snat" in row:
                opening["snat"] = self.put(path + ("snat",), row["snat"].text, row["snat"])
            if "log" in row:
                opening["log"] = self.put(path + ("log",), _yes(row["log"].text), row["log"])
            for key in ("note",) + METADATA_KEYS:
                if key in row:
                    opening[key] = self.put(path + (key,), row[key].text, row[key])
            out.append(opening)
        return out

    def accepted(self, section: Path) -> list[object]:
        """The accepted findings: one a row; packets one a line (a packet line may hold commas)."""
        out: list[object] = []
        for index, (place, row) in enumerate(self.rows(ACCEPTED)):
            path = section + (index,)
            self.put(path, None, place)
            entry: dict[str, object] = {}
            for column in ACCEPTED.columns:
                if column.key in row:
                    cell = row[column.key]
                    value = [line.strip() for line in cell.text.splitlines() if line.strip()] if column.key == "regions" else cell.text
                    entry[column.key] = self.put(path + (column.key,), value, cell)
            out.append(entry)
        return out

    def service_ports(self) -> dict[str, set[str]]:
        """Service name -> its ports as literals (to check the port column against)."""
        out: dict[str, set[str]] = {}
        for place, row in self.rows(SERVICES):
            if "name" in row and "ports" in row:
                out[row["name"].text] = {str(parse_service_literal(p)) for p in service_literals(row["ports"], self.file)}
        return out

    def opening_services(self, row: dict[str, _Cell], place: Place, path: Path, service_ports: dict[str, set[str]]) -> object:
        ports = service_literals(row["ports"], self.file) if "ports" in row else []
        if "service" not in row:
            if not ports:
                raise self.error(place, "neither a traffic type nor a destination port: say which service this opening is for")
            return self.put(path + ("service",), self.one_or_list(ports), row["ports"])
        refs = items(row["service"].text)
        folded = folded_names(service_ports)
        refs = [ref if ref in service_ports else folded.get(ref.casefold()) or _literal_or(ref, ref) for ref in refs]
        if ports:
            meant: set[str] = set()
            for ref in refs:
                literal = _literal_or(ref, None)
                if ref in service_ports:
                    meant |= service_ports[ref]
                elif literal is not None:
                    meant.add(literal)
                else:
                    meant = set()  # an unknown service: the loader says so, at the traffic type
                    break
            written = {str(parse_service_literal(p)) for p in ports}
            if meant and written != meant:
                raise self.error(row["ports"].place, f"the destination ports ({', '.join(sorted(written))}) are not those of "
                                 f"traffic type '{row['service'].text}' ({', '.join(sorted(meant))}): correct one of them, or leave the ports empty")
        return self.put(path + ("service",), self.one_or_list(refs), row["service"])

    def nat(self, cell: _Cell, path: Path) -> object:
        match = re.fullmatch(r"(\S+)(?:\s+(?:port|porta)\s+(\S+))?", cell.text, re.IGNORECASE)
        if match is None:
            raise self.error(cell.place, f"'{cell.text}' is not a NAT target: write HOST or HOST port N (e.g. nginx, sipproxy.ext port 8443)")
        if match[2] is None:
            return self.put(path, match[1], cell)
        if not match[2].isdigit():
            raise self.error(cell.place, f"NAT port '{match[2]}' is not a number")
        return self.put(path, {"to": match[1], "port": int(match[2])}, cell)


def _literal_or(ref: str, default: str | None) -> str | None:
    """A service literal as the loader reads it ('TCP/443' -> 'tcp/443'), or `default`."""
    lowered = ref.lower()
    try:
        part = parse_service_literal(lowered)
    except ValueError:
        return default
    return str(part) if part is not None else default


def read_sheets(raw_sheets: list[RawSheet], file: str) -> dict[str, _Rows]:
    sheets: dict[str, _Rows] = {}
    names = [s.name for s in SHEETS]
    for raw in raw_sheets:
        sheet = sheet_named(raw.name)
        if sheet is None:
            raise ExchangeError(f"{raw.place}: not a sheet fwmatrix reads{did_you_mean(raw.name, names)}; the sheets are: {', '.join(names)}", file)
        if sheet.name in sheets:
            raise ExchangeError(f"{raw.place}: a second '{sheet.name}' sheet", file)
        sheets[sheet.name] = _Rows(raw, sheet, file)
    for sheet in SHEETS:
        if sheet.required and sheet.name not in sheets:
            raise ExchangeError(f"no '{sheet.name}' sheet (every matrix has {', '.join(s.name for s in SHEETS if s.required)})", file)
    return sheets


def _lines_to_places(text: str, cells: dict[Path, Place]) -> dict[int, Place]:
    """Each line of the YAML text -> the cell its key or value came from (the longest known path)."""
    out: dict[int, Place] = {}

    def place_of(path: Path) -> Place | None:
        for end in range(len(path), 0, -1):
            if path[:end] in cells:
                return cells[path[:end]]
        return None

    stack: list[tuple[yaml.Node, Path]] = [(yaml.compose(text, Loader=yaml.SafeLoader), ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = path + (key.value,)
                place = place_of(child)
                if place is not None:
                    out.setdefault(line_of(key), place)
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, path + (index,)) for index, item in enumerate(node.value))
        else:
            place = place_of(path)
            if place is not None:
                out.setdefault(line_of(node), place)
    return out


class _Dumper(yaml.SafeDumper):
    """Every value written where it is (the matrix loader refuses YAML aliases)."""

    def ignore_aliases(self, data: object) -> bool:
        return True


class _Block(dict):
    """A mapping written one key a line (an opening), even when its values are plain."""


_Dumper.add_representer(_Block, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=False))


def readable(doc: dict[str, object]) -> dict[str, object]:
    """The document as a person would write it: hosts with nothing but addresses in the short
    form, one opening a block (the same matrix: the loader reads both forms alike)."""
    out = dict(doc)
    hosts = doc.get("hosts") or {}
    assert isinstance(hosts, dict)
    out["hosts"] = {name: host["addresses"] if list(host) == ["addresses"] else host for name, host in hosts.items()}
    openings = doc.get("openings") or []
    assert isinstance(openings, list)
    out["openings"] = [_Block(opening) for opening in openings]
    return out


def dump(doc: dict[str, object], flow: bool | None) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=flow, width=1 << 30 if flow is False else 120)


def check(doc: dict[str, object], cells: dict[Path, Place], file: str) -> None:
    """Load the document as a matrix (and place its openings): a MatrixError moves to its cell."""
    text = dump(doc, flow=False)  # one value a line: each line is one cell
    try:
        build_intent(load_text(text.encode("utf-8"), file))
    except MatrixError as exc:
        places = _lines_to_places(text, cells)
        place = places.get(exc.line or 0)
        # the loader's "line N" of another place (a first definition) becomes that place too
        message = re.sub(r"\bline (\d+)\b", lambda m: str(places.get(int(m[1]), m[0])), exc.message)
        raise ExchangeError(f"{place}: {message}" if place else message, file) from None


def build_matrix(raw_sheets: list[RawSheet], file: str, default_name: str) -> str:
    """The matrix YAML text the sheets hold; ExchangeError at the first bad cell."""
    builder = _Builder(read_sheets(raw_sheets, file), file, default_name)
    doc = builder.build()
    check(doc, builder.cells, file)
    return dump(readable(doc), flow=None)
