"""Spreadsheet files: XLSX (openpyxl), CSV (one section a table), Markdown (export only).

Writers take `tabulate`'s tables; readers give `build` raw sheets, refusing
what a sheet may hold but a matrix cannot (merged cells, formulas) at its
cell. Text that a spreadsheet program would run as a formula is never
written as one: XLSX cells are typed as text, CSV cells get a leading quote
(which the reader takes off again).
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile

from fwmatrix.errors import FwmatrixError, one_line
from fwmatrix.exchange.build import FORMULA_STARTS, ExchangeError, Place, RawCell, RawSheet
from fwmatrix.exchange.layout import header_text
from fwmatrix.exchange.tabulate import Table

MAX_BYTES = 64 * 1024 * 1024  # as a matrix file
MAX_UNPACKED = 512 * 1024 * 1024  # an XLSX is a zip: what it may unpack to
MAX_COLUMNS = 256  # a sheet has a dozen; a value beyond is a mistake (and a cost)
HEADER_FILL = "1F4E79"
SECTION_RE = re.compile(r"\[([^\[\]]+)\]\Z")


def _header(table: Table, language: str) -> list[str]:
    return [header_text(column, language) for column in table.columns]


def _row(table: Table, row: dict[str, str]) -> list[str]:
    return [row.get(column.key, "") for column in table.columns]


# -- XLSX -------------------------------------------------------------------------------------


def write_xlsx(tables: list[Table], language: str, title: str) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    book = Workbook()
    book.remove(book.active)
    book.properties.title = title
    for table in tables:
        sheet = book.create_sheet(table.sheet.name)
        sheet.append(_header(table, language))
        for cell in sheet[1]:
            cell.font = Font(bold=True, color="FFFFFF")
            cell.fill = PatternFill("solid", start_color=HEADER_FILL)
            cell.alignment = Alignment(vertical="center", wrap_text=True)
        for row in table.rows:
            sheet.append(_row(table, row))
        for line in sheet.iter_rows(min_row=2):
            for cell in line:
                cell.data_type = "s"  # text, never a formula (a note may start with '=')
                cell.alignment = Alignment(vertical="top", wrap_text=True)
        for index, column in enumerate(table.columns, start=1):
            sheet.column_dimensions[get_column_letter(index)].width = column.width
        sheet.freeze_panes = "A2"
        sheet.auto_filter.ref = sheet.dimensions
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _unpacked_size(path: str) -> int:
    try:
        with zipfile.ZipFile(path) as archive:
            return sum(item.file_size for item in archive.infolist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise FwmatrixError(f"cannot read as an XLSX workbook: {exc}", path) from None


def read_xlsx(path: str) -> list[RawSheet]:
    from openpyxl import load_workbook

    size = _unpacked_size(path)
    if size > MAX_UNPACKED:  # a small zip can unpack to gigabytes
        raise FwmatrixError(f"the workbook unpacks to {size} bytes, more than the {MAX_UNPACKED} fwmatrix reads", path)
    try:
        book = load_workbook(path, data_only=False)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise FwmatrixError(f"cannot read as an XLSX workbook: {type(exc).__name__}: {exc}", path) from None
    sheets = []
    for sheet in book.worksheets:
        place = Place(sheet.title)
        for merged in sorted(sheet.merged_cells.ranges, key=lambda r: (r.min_row, r.min_col)):
            raise ExchangeError(f"{place.at(merged.min_row, merged.min_col - 1)}: merged cells ({merged.coord}): unmerge them, one value a cell", path)
        # the cells that exist, not the rectangle up to the farthest one (iter_rows would make
        # every cell up to XFD1048576 when one value sits there)
        by_row: dict[int, dict[int, RawCell]] = {}
        for (row, column), cell in sorted(sheet._cells.items()):
            if cell.value is None or (isinstance(cell.value, str) and not cell.value.strip()):
                continue
            if column > MAX_COLUMNS:
                raise ExchangeError(f"{place.at(row, column - 1)}: a value far to the right of any table", path)
            by_row.setdefault(row, {})[column - 1] = RawCell(cell.value, cell.data_type == "f")
        rows = [(number, [cells.get(i, RawCell(None)) for i in range(max(cells) + 1)]) for number, cells in sorted(by_row.items())]
        sheets.append(RawSheet(sheet.title, place, rows))
    return sheets


# -- CSV --------------------------------------------------------------------------------------


def _csv_cell(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_STARTS + ("'",)) else text


def write_csv(tables: list[Table], language: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for number, table in enumerate(tables):
        if number:
            writer.writerow([])
        writer.writerow([f"[{table.sheet.name}]"])
        writer.writerow(_header(table, language))
        for row in table.rows:
            writer.writerow([_csv_cell(cell) for cell in _row(table, row)])
    return out.getvalue()


def _csv_value(text: str) -> RawCell:
    if text.startswith("'"):
        return RawCell(text[1:])
    return RawCell(text, formula=text.startswith("="))


def read_csv(path: str) -> list[RawSheet]:
    """Sections, each `[name]` on a line of its own, then the header and the rows, ended by
    an empty line. A file without a `[name]` line is one table: the openings."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            lines = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FwmatrixError(f"cannot read as CSV: {getattr(exc, 'strerror', None) or exc}", path) from None
    sheets: list[RawSheet] = []
    current: RawSheet | None = None
    ended = False
    for number, line in enumerate(lines, start=1):
        filled = [cell for cell in line if cell.strip()]
        section = SECTION_RE.match(line[0].strip()) if len(filled) == 1 and line[0].strip() else None
        if section:
            current = RawSheet(section[1].strip(), Place(section[1].strip(), section=True), [])
            sheets.append(current)
            ended = False
        elif not filled:
            ended = current is not None and bool(current.rows)
        elif current is None and not sheets:
            current = RawSheet("openings", Place("openings", section=True), [])
            sheets.append(current)
            current.rows.append((number, [_csv_value(cell) for cell in line]))
        elif current is None or ended:
            raise ExchangeError(f"{Place(current.name if current else 'openings', number - 1, section=True)}: an empty line inside a section (a section ends with one; start the next with [name])", path)
        else:
            current.rows.append((number, [_csv_value(cell) for cell in line]))
    return sheets


# -- Markdown ---------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    if not text:
        return " "
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return one_line(text.replace("\r\n", "\n").replace("\n", "<br>"))  # control characters escaped, as in messages


def write_markdown(tables: list[Table], language: str, title: str) -> str:
    out = [f"# {_md_cell(title)}", ""]
    for table in tables:
        out += [f"## {table.sheet.name}", "", "| " + " | ".join(_header(table, language)) + " |",
                "|" + "---|" * len(table.columns)]
        out += ["| " + " | ".join(_md_cell(cell) for cell in _row(table, row)) + " |" for row in table.rows]
        out.append("")
    return "\n".join(out)


# -- by file name -----------------------------------------------------------------------------


def read_spreadsheet(path: str) -> list[RawSheet]:
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise FwmatrixError(f"cannot read: {exc.strerror or exc}", path) from None
    if size > MAX_BYTES:
        raise FwmatrixError(f"file is {size} bytes, more than the {MAX_BYTES} a spreadsheet may have", path)
    if path.lower().endswith(".csv"):
        return read_csv(path)
    if path.lower().endswith((".xlsx", ".xlsm")):
        return read_xlsx(path)
    raise FwmatrixError("fwmatrix imports .xlsx and .csv files", path)
