"""Spreadsheets both ways: a matrix exported as XLSX, CSV or Markdown, and XLSX or CSV imported.

`layout` says which sheets and columns there are (English and Italian
headers); `tabulate` turns a matrix into tables; `files` writes and reads
the file formats; `build` turns what was read back into a matrix file,
checked by the matrix loader, every error at its cell.
"""

from __future__ import annotations

import os
import re

from fwmatrix.exchange.build import CONTROL_RE, ExchangeError, Place, build_matrix
from fwmatrix.exchange.files import read_spreadsheet, write_csv, write_markdown, write_xlsx
from fwmatrix.exchange.tabulate import Table, tables
from fwmatrix.matrix.model import Matrix

EXPORT_FORMATS = ("xlsx", "csv", "markdown")


def export_matrix(matrix: Matrix, fmt: str, language: str = "en") -> bytes | str:
    """The matrix as an XLSX workbook (bytes), a CSV file or a Markdown page (text)."""
    found = tables(matrix)
    if fmt in ("xlsx", "csv"):
        _refuse_control_characters(found, matrix.file)
    if fmt == "xlsx":
        return write_xlsx(found, language, matrix.title)
    if fmt == "csv":
        return write_csv(found, language)
    return write_markdown(found, language, f"{matrix.title} — {matrix.name}")


def _refuse_control_characters(found: list[Table], file: str) -> None:
    """A note may hold a control character written as a YAML escape ("\\e"); a workbook cannot
    hold it, and import refuses it: say where, rather than write what does not come back."""
    for table in found:
        for number, row in enumerate(table.rows, start=2):
            for index, column in enumerate(table.columns):
                control = CONTROL_RE.search(row.get(column.key, ""))
                if control:
                    raise ExchangeError(f"cannot export {Place(table.sheet.name, number, index)}: a control character "
                                        f"({control.group()!r}) that a spreadsheet cannot hold; remove it from the matrix", file)


def import_spreadsheet(path: str) -> str:
    """The matrix YAML text an XLSX or CSV file holds (ExchangeError at the first bad cell)."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", os.path.splitext(os.path.basename(path))[0]).strip("-")
    default_name = stem if stem[:1].isalpha() else f"m-{stem}" if stem else "imported"
    return build_matrix(read_spreadsheet(path), path, default_name[:48])


__all__ = ["EXPORT_FORMATS", "ExchangeError", "export_matrix", "import_spreadsheet"]
