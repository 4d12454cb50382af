"""Spreadsheets both ways: export, import, the round trip, and bad spreadsheets refused at their cell."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from fwmatrix.cli import main
from fwmatrix.compile.intent import build_intent
from fwmatrix.compile.ruleset import compile_intent
from fwmatrix.exchange import export_matrix, import_spreadsheet
from fwmatrix.exchange.layout import CARRIED_KEYS
from fwmatrix.exchange.names import canonical_references
from fwmatrix.matrix import accepts, loader
from fwmatrix.matrix.loader import load_matrix, load_text
from fwmatrix.matrix.model import Matrix
from fwmatrix.targets import BACKENDS, backend

from conftest import ROOT, SEED
from strategies import matrix_yaml

EXAMPLES = sorted(ROOT.glob("examples/*/matrix.yaml"))
HASH_LINE = re.compile(r"^.*matrix sha256: [0-9a-f]{64}.*$", re.MULTILINE)


def compiled(matrix: Matrix) -> dict[str, str]:
    """Every backend's files for every firewall; the line with the matrix file's sha256 left
    out (an imported file is other bytes than the one exported: its hash differs, nothing else)."""
    out = {}
    for fw_name, ruleset in compile_intent(build_intent(matrix)).items():
        for name in BACKENDS:
            try:
                files = backend(name).render_files(ruleset)
            except Exception as exc:  # noqa: BLE001 - a backend that cannot write this matrix refuses both alike
                files = {f".{name}": f"refused: {exc}"}
            for suffix, text in files.items():
                out[f"{fw_name}{suffix}"] = HASH_LINE.sub("<hash>", text)
    return out


def meaning(m: Matrix) -> tuple:
    """What a matrix says, without where it says it (file, lines, hash)."""
    return (
        m.name, m.title,
        [(z.name, z.networks, z.is_any, z.note) for z in m.zones.values()],
        [(h.name, h.addresses, h.roles, h.note) for h in m.hosts.values()],
        [(g.name, g.members, g.note, _meta(g.meta)) for g in m.groups.values()],
        [(s.name, s.parts, s.note) for s in m.services.values()],
        [(f.name, f.interfaces, f.public, f.addresses, f.note, [(a.sources, a.destinations, a.services, a.note) for a in f.management])
         for f in m.firewalls.values()],
        [(o.index, o.name, o.sources, o.destinations, o.services, o.nat and (o.nat.target, o.nat.port), o.snat and o.snat.target, o.note, _meta(o.meta))
         for o in m.openings],
        [(a.kind, a.firewall, a.opening, a.rule, a.regions, a.message, a.reason, a.owner, a.expires) for a in m.accepts],
    )


def _meta(meta: object) -> tuple | None:
    return None if meta is None else (meta.owner, meta.ticket, meta.expires)  # type: ignore[attr-defined]


def round_trip(matrix: Matrix, fmt: str, tmp: Path) -> Matrix:
    sheet = tmp / f"m.{fmt}"
    data = export_matrix(matrix, fmt)
    sheet.write_bytes(data) if isinstance(data, bytes) else sheet.write_text(data)
    return load_text(import_spreadsheet(str(sheet)).encode(), "imported.yaml")


def seed_book() -> openpyxl.Workbook:
    return openpyxl.load_workbook(io.BytesIO(export_matrix(load_matrix(str(SEED)), "xlsx")))  # type: ignore[arg-type]


def import_error(tmp_path: Path, book: openpyxl.Workbook) -> str:
    """Import a workbook through the CLI: it must exit 2, write nothing, and print one line."""
    path = tmp_path / "bad.xlsx"
    book.save(path)
    out = tmp_path / "out.yaml"
    result = CliRunner().invoke(main, ["import", str(path), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert not out.exists()
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), result.output
    return lines[0].removeprefix(f"error: {path}: ")


# -- the seed --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
@pytest.mark.parametrize("path", [SEED] + EXAMPLES, ids=lambda p: p.parent.name if p.name == "matrix.yaml" else p.stem)
def test_round_trip_compiles_the_same_rulesets(path: Path, fmt: str, tmp_path: Path) -> None:
    original = load_matrix(str(path))
    back = round_trip(original, fmt, tmp_path)
    assert meaning(back) == meaning(original)
    assert compiled(back) == compiled(original)


def test_every_key_of_the_matrix_file_is_carried() -> None:
    """A key the loader learns (a new opening field, say) must get a column, or this fails:
    add a Column in fwmatrix/exchange/layout.py, its cell in tabulate.py and build.py, and the
    key in CARRIED_KEYS (docs/spreadsheets.md)."""
    for what, keys in (("top", loader.TOP_KEYS), ("opening", loader.OPENING_KEYS), ("firewall", loader.FIREWALL_KEYS),
                       ("management", loader.MANAGEMENT_KEYS), ("host", loader.HOST_KEYS), ("accept", accepts.ACCEPT_KEYS),
                       ("group", ("members", "note") + loader.METADATA_KEYS)):
        assert set(keys) <= set(CARRIED_KEYS[what]), f"{what} keys the spreadsheet does not carry: {set(keys) - set(CARRIED_KEYS[what])}"


def test_seed_xlsx_reads_like_the_source_table() -> None:
    book = seed_book()
    assert book.sheetnames[0] == "openings"
    assert {"zones", "hosts", "services", "firewalls", "groups", "matrix"} <= set(book.sheetnames)
    sheet = book["openings"]
    assert [c.value for c in sheet[1]] == ["source", "traffic type", "destination", "destination port", "NAT", "notes", "name"]
    assert [c.value for c in sheet[3]][:5] == ["internet", "sip-and-tls", "edge.public", "udp/5060, tcp/5060, tcp/5061", "sipproxy.ext"]
    assert sheet.max_row == 1 + 8
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == "A1:G9"
    assert sheet["A1"].font.bold and sheet["A1"].fill.start_color.rgb.endswith("1F4E79")
    assert sheet.column_dimensions["F"].width >= 30  # the notes
    hosts = book["hosts"]
    header = [c.value for c in hosts[1]]
    sipproxy = next(row for row in hosts.iter_rows(values_only=True) if row[0] == "sipproxy")
    assert sipproxy[header.index("EXT address")] == "172.16.10.21" and sipproxy[header.index("INT address")] == "172.16.20.21"


def test_italian_headers_are_written_and_read(tmp_path: Path) -> None:
    seed = load_matrix(str(SEED))
    path = tmp_path / "it.xlsx"
    path.write_bytes(export_matrix(seed, "xlsx", "it"))  # type: ignore[arg-type]
    header = [c.value for c in openpyxl.load_workbook(path)["openings"][1]]
    assert header[:5] == ["Sorgente", "Tipologia traffico", "IP Destinazione", "Porta Destinazione", "NAT"]
    assert compiled(load_text(import_spreadsheet(str(path)).encode(), "x.yaml")) == compiled(seed)


def test_the_source_documents_own_table_imports(tmp_path: Path) -> None:
    """Rows as the Italian document writes them: its headers, UDP+TCP/5060 and upper case
    ports and names, columns in another order, no name column."""
    seed_csv = export_matrix(load_matrix(str(SEED)), "csv")
    assert isinstance(seed_csv, str)
    others = seed_csv[seed_csv.index("[zones]"):]
    table = "\n".join([
        "[Matrice connettività]",
        "Sorgente,IP Destinazione,Porta Destinazione,Note,NAT,Tipologia traffico",
        'Internet,edge.public,"UDP+TCP/5060, TCP/5061",NAT verso IP EXT di SIPProxy (osips),SIPProxy.EXT,',
        "SIPProxy.int,CTI1,UDP+TCP/5060,,,",
        "NGINX,BAL,TCP/80,,,HTTP",
        "",
    ])
    path = tmp_path / "source.csv"
    path.write_text(table + "\n" + others)
    m = load_text(import_spreadsheet(str(path)).encode(), "x.yaml")
    assert [(o.name, o.sources, o.destinations, o.services, o.nat and o.nat.target) for o in m.openings] == [
        ("row1", ("internet",), ("edge.public",), ("udp/5060", "tcp/5060", "tcp/5061"), "sipproxy.ext"),
        ("row2", ("sipproxy.int",), ("cti1",), ("udp/5060", "tcp/5060"), None),
        ("row3", ("nginx",), ("bal",), ("http",), None),  # names as the document writes them: case is not a mistake
    ]


def test_markdown_export_escapes_cells() -> None:
    text = export_matrix(load_matrix(str(SEED)), "markdown")
    assert isinstance(text, str)
    assert "| source | traffic type | destination | destination port | NAT | notes | name |" in text
    assert "| internet | https | edge.public | tcp/443 | nginx | NAT verso NGINX (NAT to NGINX) | operator-https |" in text


def test_cli_export_then_import(tmp_path: Path) -> None:
    runner = CliRunner()
    sheet, back = tmp_path / "seed.xlsx", tmp_path / "back.yaml"
    assert runner.invoke(main, ["export", str(SEED), "--format", "xlsx", "-o", str(sheet)]).exit_code == 0
    result = runner.invoke(main, ["import", str(sheet), "-o", str(back)])
    assert result.exit_code == 0, result.output
    assert compiled(load_matrix(str(back))) == compiled(load_matrix(str(SEED)))


# -- every matrix ----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(matrix_yaml(max_openings=8))
def test_round_trip_of_generated_matrices(tmp_path: Path, text: str) -> None:
    original = load_text(text.encode(), "generated.yaml")
    for fmt in ("xlsx", "csv"):
        back = round_trip(original, fmt, tmp_path)
        assert meaning(back) == meaning(original)
        assert compiled(back) == compiled(original)


def test_round_trip_keeps_hostile_text_as_text(tmp_path: Path, write_matrix) -> None:
    seed_text = SEED.read_text()
    hostile = seed_text.replace("note: NAT verso NGINX (NAT to NGINX)", "note: \"=HYPERLINK(\\\"http://x\\\") | <b>'quote\"")
    original = load_matrix(write_matrix(hostile))
    path = tmp_path / "h.xlsx"
    path.write_bytes(export_matrix(original, "xlsx"))  # type: ignore[arg-type]
    cell = openpyxl.load_workbook(path)["openings"]["F2"]
    assert cell.data_type == "s" and cell.value.startswith("=HYPERLINK")
    row = next(csv.reader(io.StringIO(export_matrix(original, "csv").splitlines()[2])))  # type: ignore[union-attr]
    assert row[5].startswith("'=")  # a spreadsheet program opening the CSV sees text, not a formula
    for fmt in ("xlsx", "csv"):
        assert meaning(round_trip(original, fmt, tmp_path)) == meaning(original)


# -- bad spreadsheets ------------------------------------------------------------------------


# one cell of the seed's workbook changed, and the error that names it; a message ending in '…'
# is compared up to there (the rest lists choices)
BAD_CELLS = {
    "bad port range": ("openings", "D7", "udp/10000-3000O", "sheet 'openings', row 7, column D: 'udp/10000-3000O' is not a port range…"),
    "ports against the traffic type": ("openings", "D5", "tcp/8080", "sheet 'openings', row 5, column D: the destination ports (tcp/8080) are not those of traffic type 'http' (tcp/80)…"),
    "unknown name": ("openings", "C6", "cti2", "sheet 'openings', row 6, column C: unknown name 'cti2' (did you mean 'cti'?)"),
    "unknown zone": ("firewalls", "B2", "wan0: internet, dmz0: dmz-ext, dmz1: dmz-int, lan0: lann",
                     "sheet 'firewalls', row 2, column B: interface 'lan0' of firewall 'edge': unknown zone 'lann' (did you mean 'lan'?)"),
    "unknown service": ("openings", "B4", "rtp", "sheet 'openings', row 4, column B: unknown service 'rtp'…"),
    "bad address": ("hosts", "B2", "172.16.10.300", "sheet 'hosts', row 2, column B: address of host 'nginx' '172.16.10.300' is not an IP address…"),
    "two zones of one name": ("zones", "A4", "dmz-ext", "sheet 'zones', row 4, column A: 'dmz-ext' is already defined in sheet 'zones', row 3, column A"),
    "NAT to no public address": ("openings", "C2", "bal", "sheet 'openings', row 2, column C: opening 'operator-https' has a NAT, but its destination 'bal' is not a public address…"),
    "formula": ("openings", "A3", '=LOWER("INTERNET")', "sheet 'openings', row 3, column A: a formula ('=LOWER(\"INTERNET\")'): fwmatrix reads values, write the value itself"),
    "number for a port": ("openings", "D2", 443, "sheet 'openings', row 2, column D: the number 443 where text belongs (write protocol/port, e.g. tcp/443): format the cell as text"),
    "boolean for an address": ("hosts", "B2", True, "sheet 'hosts', row 2, column B: bool 'True' where text belongs: format the cell as text"),
    "duplicated header": ("openings", "H1", "Sorgente", "sheet 'openings', row 1, column H: duplicate header 'Sorgente': column A is already 'source'"),
    "unknown header": ("openings", "C1", "destinaton", "sheet 'openings', row 1, column C: unknown header 'destinaton' (did you mean 'destination'?)…"),
    "missing header": ("openings", "C1", None, "sheet 'openings', row 1: no 'destination' column ('IP Destinazione')"),
}


@pytest.mark.parametrize("case", BAD_CELLS)
def test_bad_cells_are_reported_at_their_cell(case: str, tmp_path: Path) -> None:
    sheet, cell, value, expected = BAD_CELLS[case]
    book = seed_book()
    book[sheet][cell] = value
    message = import_error(tmp_path, book)
    if expected.endswith("…"):
        assert message.startswith(expected[:-1]), message
    else:
        assert message == expected


def test_merged_cells_are_refused(tmp_path: Path) -> None:
    book = seed_book()
    book["openings"].merge_cells("E5:F5")
    assert import_error(tmp_path, book) == "sheet 'openings', row 5, column E: merged cells (E5:F5): unmerge them, one value a cell"


def test_an_empty_row_inside_a_table_is_refused(tmp_path: Path) -> None:
    book = seed_book()
    book["openings"].insert_rows(4)
    assert import_error(tmp_path, book).startswith("sheet 'openings', row 4: an empty row inside the table")


def test_empty_sheets(tmp_path: Path) -> None:
    book = seed_book()
    book["groups"].delete_rows(1, 2)  # no group, and no header either: the group sheet says nothing
    book["openings"]["A8"] = "cti1"  # the group's one user now names its member
    path = tmp_path / "empty.xlsx"
    book.save(path)
    assert load_text(import_spreadsheet(str(path)).encode(), "x.yaml").groups == {}
    book = seed_book()
    book["zones"].delete_rows(1, 5)
    assert import_error(tmp_path, book).startswith("sheet 'zones': the sheet is empty: it needs a header row (zone, networks, notes)")


def test_unknown_and_missing_sheets_are_refused(tmp_path: Path) -> None:
    book = seed_book()
    book["services"].title = "servizzi"
    assert import_error(tmp_path, book).startswith("sheet 'servizzi': not a sheet fwmatrix reads")
    book = seed_book()
    del book["zones"]
    assert import_error(tmp_path, book).startswith("no 'zones' sheet")


def test_csv_errors_name_the_line(tmp_path: Path) -> None:
    text = export_matrix(load_matrix(str(SEED)), "csv")
    assert isinstance(text, str)
    path = tmp_path / "bad.csv"
    path.write_text(text.replace("nginx,http,bal,tcp/80", "nginx,http,bal,=A1"))
    result = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path / "out.yaml")])
    assert result.exit_code == 2
    assert result.output == f"error: {path}: section 'openings', line 6, column D: a formula ('=A1'): fwmatrix reads values, write the value itself\n"
    assert not (tmp_path / "out.yaml").exists()


def test_case_is_forgiven_only_when_one_name_matches() -> None:
    doc = {"zones": {"lan": "10.0.0.0/8", "LAN": "10.1.0.0/16", "dmz": "192.0.2.0/24"},
           "openings": [{"from": ["Lan", "DMZ", "10.0.0.1"], "to": "Dmz", "service": "tcp/22"}]}
    canonical_references(doc)
    assert doc["openings"][0]["from"] == ["Lan", "dmz", "10.0.0.1"] and doc["openings"][0]["to"] == "dmz"


def test_what_a_sheet_cannot_carry_is_refused_at_export(tmp_path: Path, write_matrix) -> None:
    bell = write_matrix(SEED.read_text().replace("note: NAT verso NGINX (NAT to NGINX)", 'note: "bell\\a"'))
    result = CliRunner().invoke(main, ["export", bell, "--format", "xlsx", "-o", str(tmp_path / "x.xlsx")])
    assert result.exit_code == 2 and not (tmp_path / "x.xlsx").exists()
    assert result.output == f"error: {bell}: cannot export sheet 'openings', row 2, column F: a control character ('\\x07') that a spreadsheet cannot hold; remove it from the matrix\n"
    markdown = export_matrix(load_matrix(bell), "markdown")
    assert "bell\\x07" in markdown and "\a" not in markdown  # escaped, as in messages


def test_control_characters_and_far_cells_are_refused(tmp_path: Path) -> None:
    text = export_matrix(load_matrix(str(SEED)), "csv")
    assert isinstance(text, str)
    path = tmp_path / "esc.csv"
    path.write_text(text.replace("nginx,http,bal", "nginx,http,b\x1bal"))
    result = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path / "out.yaml")])
    assert result.exit_code == 2
    assert result.output == f"error: {path}: section 'openings', line 6, column C: a control character ('\\x1b') in the cell: only text, tabs and new lines\n"
    book = seed_book()
    book["zones"]["XFD1048576"] = "far"  # iterating up to it would make 17 billion cells
    assert import_error(tmp_path, book) == "sheet 'zones', row 1048576, column XFD: a value far to the right of any table"


def test_a_workbook_that_unpacks_too_far_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fwmatrix.exchange import files

    monkeypatch.setattr(files, "MAX_UNPACKED", 10_000)  # instead of writing a 512 MiB zip bomb
    path = tmp_path / "seed.xlsx"
    path.write_bytes(export_matrix(load_matrix(str(SEED)), "xlsx"))  # type: ignore[arg-type]
    result = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path / "out.yaml")])
    assert result.exit_code == 2 and "unpacks to" in result.output and "more than the 10000 fwmatrix reads" in result.output


ACCEPT = """
accept:
  - kind: dmz-to-internet
    rule: inet filter forward handle 18
    firewall: edge
    reason: "nginx fetches its updates: the vendor's mirror, tcp/80,443"
    owner: netops@example.com
    expires: 2027-06-30
  - kind: excess
    regions: ["wan0 → dmz0  0.0.0.0/0 → 172.16.10.10  tcp/8080  ct new,new dnat", "lan0 → dmz1  10.20.0.0/16 → 172.16.20.0/24  tcp/22  ct new"]
    reason: a test left behind, removed next sprint
    owner: ops
    expires: 2026-12-31
"""


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_accepted_findings_make_the_round_trip(fmt: str, tmp_path: Path, write_matrix) -> None:
    original = load_matrix(write_matrix(SEED.read_text() + ACCEPT))
    assert len(original.accepts) == 2
    assert meaning(round_trip(original, fmt, tmp_path)) == meaning(original)


def test_an_expiry_typed_as_a_date_cell_is_read(tmp_path: Path, write_matrix) -> None:
    import datetime

    original = load_matrix(write_matrix(SEED.read_text() + ACCEPT))
    book = openpyxl.load_workbook(io.BytesIO(export_matrix(original, "xlsx")))  # type: ignore[arg-type]
    sheet = book["accepted"]
    column = [c.value for c in sheet[1]].index("expires") + 1
    sheet.cell(2, column).value = datetime.datetime(2027, 6, 30)
    sheet.cell(3, column).value = "31/12/2026"
    path = tmp_path / "dates.xlsx"
    book.save(path)
    result = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path / "out.yaml")])
    assert result.exit_code == 2
    letter = "ABCDEFGHI"[column - 1]
    assert f"sheet 'accepted', row 3, column {letter}: 'expires' must be a date written YYYY-MM-DD, not '31/12/2026'" in result.output
    sheet.cell(3, column).value = datetime.date(2026, 12, 31)
    book.save(path)
    assert meaning(load_text(import_spreadsheet(str(path)).encode(), "x.yaml")) == meaning(original)


def test_text_formats_go_to_standard_output() -> None:
    for fmt in ("csv", "markdown"):
        result = CliRunner().invoke(main, ["export", str(SEED), "--format", fmt, "-o", "-"])
        assert result.exit_code == 0 and result.output == export_matrix(load_matrix(str(SEED)), fmt)


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_owners_tickets_and_expiry_make_the_round_trip(fmt: str, tmp_path: Path, write_matrix) -> None:
    text = SEED.read_text().replace("    service: http\n", "    service: http\n    owner: web team\n    ticket: CHG-1234\n    expires: 2027-01-31\n")
    text = text.replace("    note: the CTI servers (CTI1 today)\n", "    note: the CTI servers (CTI1 today)\n    owner: cti team\n")
    original = load_matrix(write_matrix(text))
    assert original.openings[3].meta is not None and original.groups["cti"].meta is not None
    back = round_trip(original, fmt, tmp_path)
    assert meaning(back) == meaning(original)


def test_an_including_matrix_exports_as_one(tmp_path: Path) -> None:
    seed = SEED.read_text()
    services = seed[seed.index("services:\n"):seed.index("firewalls:\n")]
    (tmp_path / "shared.yaml").write_text("fwmatrix: 1\n" + services)
    main_file = tmp_path / "main.yaml"
    main_file.write_text(seed.replace(services, "").replace("zones:\n", "include: shared.yaml\nzones:\n", 1))
    original = load_matrix(str(main_file))
    assert "https" in original.services
    back = round_trip(original, "xlsx", tmp_path)
    assert meaning(back) == meaning(original) and compiled(back) == compiled(original)
