"""`fwmatrix export` and `fwmatrix import`: the matrix as a spreadsheet, and back."""

from __future__ import annotations

import click

from fwmatrix.cli.common import file_output_option, matrix_argument, user_errors, write_output
from fwmatrix.exchange import EXPORT_FORMATS, export_matrix, import_spreadsheet
from fwmatrix.exchange.layout import LANGUAGES
from fwmatrix.matrix.loader import load_matrix


@click.command("export")
@matrix_argument
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="xlsx", show_default=True,
              help="xlsx: a workbook, one sheet a table; csv: one file, one [section] a table; markdown: tables for a document.")
@click.option("--language", type=click.Choice(LANGUAGES), default="en", show_default=True,
              help="The headers' language (it: the source document's Sorgente, Tipologia traffico, IP Destinazione, ...).")
@file_output_option()
@user_errors
def export_command(matrix: str, fmt: str, language: str, output: str) -> None:
    """Export MATRIX as a spreadsheet: one row per opening in the source document's columns
    (source, traffic type, destination, destination port, NAT, notes, name), and sheets for
    zones, hosts (EXT and INT addresses), groups, services, firewalls and management access.
    `fwmatrix import` reads the XLSX and CSV forms back into the same matrix."""
    write_output(output, export_matrix(load_matrix(matrix), fmt, language))


@click.command("import")
@click.argument("spreadsheet", type=click.Path(dir_okay=False))
@click.option("--output", "-o", metavar="MATRIX.yaml", required=True, help="The matrix file to write (atomically; nothing is written on an error), or - for standard output.")
@user_errors
def import_command(spreadsheet: str, output: str) -> None:
    """Read SPREADSHEET (.xlsx, or .csv with [section] lines) into a matrix file.

    Headers may be English or Italian; names are checked against the zones,
    hosts, groups, services and firewalls sheets, and the matrix as `fwmatrix
    check` checks it. Each error names its cell (sheet 'openings', row 7,
    column D) and exits 2, writing nothing."""
    write_output(output, import_spreadsheet(spreadsheet))


COMMANDS = (export_command, import_command)
