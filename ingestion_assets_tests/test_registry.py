"""The master sheet → the supplier registry: columns, row-by-row problems, encodings, workbooks."""

from __future__ import annotations

import uuid
from pathlib import Path

import openpyxl
import pytest

from ingestion_assets.fetching.errors import PermanentFetchError
from ingestion_assets.registry.identity import SUPPLIER_NAMESPACE, supplier_key
from ingestion_assets.registry.master_sheet import load_master_sheet
from ingestion_assets.registry.tables import MasterSheetError, read_csv_rows, read_workbook_rows
from ingestion_assets.registry.validation import build_registry, infer_format

from .loopback import file_body, html_page

HEADER = ["name", "source_url", "format", "active", "use_ml_processing", "sheet_name", "notes"]
SHEET_ID = "1aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789abcdEF_"


def row(
    name="Alpha", url="https://example.com/a.csv", fmt="", active="", ml="", sheet="", notes=""
):
    return [name, url, fmt, active, ml, sheet, notes]


def only_supplier(rows):
    registry = build_registry(rows)
    assert registry.problems == [], registry.problems
    assert len(registry.suppliers) == 1
    return registry.suppliers[0]


def problem_of(bad_row, header=HEADER):
    registry = build_registry([header, row("Good", "https://example.com/good.csv"), bad_row])
    assert [s.name for s in registry.suppliers] == ["Good"]  # the valid row is kept
    assert len(registry.problems) == 1
    problem = registry.problems[0]
    assert problem.row == 3
    return problem


def xlsx(path: Path, sheets: dict[str, list[list]]) -> Path:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for r in rows:
            sheet.append(r)
    workbook.save(path)
    return path


# --- columns ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        ["name", "source_url", "format"],
        ["Supplier", "URL", "Type"],
        ["Company", "Link", "Format"],
        ["supplier name", "Source URL", "source-type"],
        ["\ufeffName", " url ", "TYPE"],
        ["Поставщик", "Ссылка", "Формат"],
        ["Название", "source", "формат"],
    ],
)
def test_column_aliases(header):
    supplier = only_supplier([header, ["Alpha", "https://example.com/prices.xlsx", "xlsx"]])
    assert (supplier.name, supplier.source_url, supplier.format) == (
        "Alpha",
        "https://example.com/prices.xlsx",
        "excel",
    )


def test_optional_columns_by_alias_in_any_order():
    header = ["Notes", "ML", "Worksheet", "Enabled", "Link", "ID", "Company"]
    supplier_id = "8a7a9d0b-1111-4222-8333-444455556666"
    supplier = only_supplier(
        [
            header,
            ["call first", "no", "Прайс", "нет", "https://example.com/p.csv", supplier_id, "Beta"],
        ]
    )
    assert supplier.notes == "call first"
    assert supplier.use_ml_processing is False
    assert supplier.sheet_name == "Прайс"
    assert supplier.active is False
    assert supplier.supplier_id == supplier_id
    assert supplier.name == "Beta"


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        (["Company", "Format", "Active"], "source_url"),
        (["Link", "Type", "Comment"], "name"),
        (["foo", "bar"], "name, source_url"),
    ],
)
def test_a_missing_required_column_lists_the_columns_found(header, missing):
    with pytest.raises(MasterSheetError) as caught:
        build_registry([header, ["x", "y", "z"]])
    message = str(caught.value)
    assert f"no column for {missing}" in message
    assert "columns found: " + ", ".join(repr(h) for h in header) in message


def test_an_empty_sheet_is_an_error():
    with pytest.raises(MasterSheetError, match="empty"):
        build_registry([])
    with pytest.raises(MasterSheetError, match="empty"):
        build_registry([["", " "], []])


def test_registry_lists_the_sheets_columns():
    registry = build_registry(
        [["Supplier", "", "URL", "Extra"], ["Alpha", "", "https://e.com/a.csv", "1"]]
    )
    assert registry.columns == ["Supplier", "URL", "Extra"]


# --- rows: every bad one reported with its number and reason ---------------------------------


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (row(fmt="pdf"), "unknown format 'pdf' (expected google_sheets, csv, excel or url)"),
        (row(url="ftp://files.example.com/a.csv"), "unsupported scheme 'ftp://'"),
        (row(url="file:///etc/passwd"), "unsupported scheme 'file://'"),
        (row(url="file:///etc/passwd", fmt="csv"), "unsupported scheme 'file://'"),
        (row(url="javascript:alert(1)"), "unsupported scheme 'javascript://'"),
        (row(url="not a url"), "invalid source URL: it contains spaces"),
        (row(url="notaurl"), "unsupported scheme none"),
        (row(url="https://"), "invalid source URL: no host"),
        (row(url="https://example.com:99999/a.csv"), "invalid source URL"),
        (row(url="https://example.com/a\n.csv"), "control characters"),
        (row(url="https://example.com/" + "a" * 2100), "longer than 2048"),
        (row(name=""), "missing supplier name"),
        (row(name="   "), "missing supplier name"),
        (row(name="x" * 201), "longer than 200"),
        (row(url=""), "missing source URL"),
        (row(fmt="google_sheets", url="https://example.com/a.xlsx"), "'/spreadsheets/d/<id>'"),
        (row(active="maybe"), "active 'maybe' is not yes/no"),
        (row(ml="sometimes"), "use_ml_processing 'sometimes' is not yes/no"),
    ],
)
def test_bad_rows_are_reported_with_row_number_and_reason(bad, reason):
    problem = problem_of(bad)
    assert reason in problem.reason
    assert problem.supplier == (bad[0].strip() or None)


def test_duplicate_supplier_name():
    registry = build_registry(
        [HEADER, row("ООО «Альфа»"), row("Beta"), row("ооо альфа", "https://example.com/other.csv")]
    )
    assert [s.name for s in registry.suppliers] == ["ООО «Альфа»", "Beta"]
    [problem] = registry.problems
    assert (problem.row, problem.supplier) == (4, "ооо альфа")
    assert problem.reason == "duplicate supplier: same name as row 2"


def test_duplicate_supplier_id():
    header = [*HEADER, "supplier_id"]
    same = "8a7a9d0b-1111-4222-8333-444455556666"
    registry = build_registry(
        [header, [*row("Alpha"), same], [*row("Beta"), same.upper()], [*row("Gamma"), ""]]
    )
    assert [s.name for s in registry.suppliers] == ["Alpha", "Gamma"]
    [problem] = registry.problems
    assert (problem.row, problem.supplier) == (3, "Beta")
    assert problem.reason == "duplicate supplier: same supplier_id as row 2"


def test_supplier_id_must_be_a_uuid():
    header = [*HEADER, "supplier_id"]
    registry = build_registry([header, [*row("Alpha"), "42"], [*row("Beta"), "not-a-uuid"]])
    assert registry.suppliers == []
    assert [(p.row, p.reason) for p in registry.problems] == [
        (2, "supplier_id '42' is not a UUID"),
        (3, "supplier_id 'not-a-uuid' is not a UUID"),
    ]


def test_many_problems_each_reported_and_valid_rows_kept():
    rows = [
        [],  # blank rows before the header
        ["", ""],
        HEADER,
        row("Alpha", "https://example.com/a.csv"),
        row("Beta", "ftp://x/b.csv"),
        ["", "", "", "", "", "", ""],  # a blank row inside: skipped silently
        row("", "https://example.com/c.csv"),
        row("Delta", "https://example.com/d.xlsx", fmt="excel"),
        row("Eps", "https://example.com/e", fmt="word"),
    ]
    registry = build_registry(rows)
    assert [(s.name, s.row) for s in registry.suppliers] == [("Alpha", 4), ("Delta", 8)]
    assert [(p.row, p.supplier) for p in registry.problems] == [(5, "Beta"), (7, None), (9, "Eps")]


# --- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fmt"),
    [
        (f"https://docs.google.com/spreadsheets/d/{SHEET_ID}/edit#gid=0", "google_sheets"),
        ("https://example.com/prices.csv", "csv"),
        ("https://example.com/PRICES.CSV?dl=1", "csv"),
        ("https://example.com/prices.xlsx", "excel"),
        ("https://example.com/prices.xls", "excel"),
        ("https://example.com/download?id=7", "url"),
        ("https://example.com/prices.pdf", "url"),
        ("suppliers/alpha.csv", "csv"),
    ],
)
def test_format_is_inferred_when_blank(url, fmt):
    assert infer_format(url) == fmt
    assert only_supplier([HEADER, row(url=url)]).format == fmt


@pytest.mark.parametrize(
    ("raw", "fmt"),
    [
        ("Google Sheets", "google_sheets"),
        ("GSHEET", "google_sheets"),
        ("XLSX", "excel"),
        ("xls", "excel"),
        (" CSV ", "csv"),
        ("link", "url"),
        ("https", "url"),
    ],
)
def test_format_aliases(raw, fmt):
    url = (
        f"https://docs.google.com/spreadsheets/d/{SHEET_ID}/edit"
        if fmt == "google_sheets"
        else "https://example.com/x"
    )
    assert only_supplier([HEADER, row(url=url, fmt=raw)]).format == fmt


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("yes", True),
        ("Yes", True),
        ("TRUE", True),
        ("1", True),
        ("да", True),
        ("Да", True),
        ("y", True),
        ("x", True),
        ("", True),
        ("no", False),
        ("No", False),
        ("false", False),
        ("0", False),
        ("нет", False),
        ("НЕТ", False),
        ("n", False),
        ("off", False),
    ],
)
def test_booleans(raw, value):
    supplier = only_supplier([HEADER, row(active=raw, ml=raw)])
    assert supplier.active is value
    assert supplier.use_ml_processing is value


def test_missing_boolean_columns_mean_true():
    supplier = only_supplier([["name", "url"], ["Alpha", "https://example.com/a.csv"]])
    assert supplier.active is True and supplier.use_ml_processing is True


def test_inactive_suppliers_stay_in_the_registry_but_not_in_active():
    registry = build_registry([HEADER, row("Alpha", active="no"), row("Beta", active="yes")])
    assert [s.name for s in registry.suppliers] == ["Alpha", "Beta"]
    assert [s.name for s in registry.active] == ["Beta"]
    assert registry.get("alpha").active is False
    assert registry.get("nobody") is None


def test_ids_and_keys_are_deterministic():
    rows = [HEADER, row("ООО «Альфа»"), row("Beta Trading Ltd.", "https://example.com/b.csv")]
    first, second = build_registry(rows), build_registry([list(r) for r in rows])
    assert [s.supplier_id for s in first.suppliers] == [s.supplier_id for s in second.suppliers]
    alpha = first.suppliers[0]
    assert alpha.key == "ooo-alfa"
    assert alpha.supplier_id == str(uuid.uuid5(SUPPLIER_NAMESPACE, "ooo-alfa"))
    assert uuid.UUID(alpha.supplier_id).version == 5
    assert first.suppliers[1].key == "beta-trading-ltd"
    # the id follows the name, not the row's position or URL
    moved = build_registry(
        [HEADER, row("Gamma"), row("ООО «Альфа»", "https://other.example/x.csv")]
    )
    assert moved.get("ooo-alfa").supplier_id == alpha.supplier_id


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("ООО «Альфа»", "ooo-alfa"),
        ("ТД Щука & Ёж", "td-shchuka-ezh"),
        ("  Beta   Trading  ", "beta-trading"),
        ("Завод №1", "zavod-no1"),
    ],
)
def test_cyrillic_names_give_readable_latin_slugs(name, key):
    assert supplier_key(name) == key


def test_a_name_without_latin_transliteration_still_gets_a_stable_key():
    key = supplier_key("!!!")
    assert key.startswith("supplier-") and key == supplier_key("!!!")
    assert supplier_key("???") != key


def test_an_explicit_supplier_id_is_kept_normalized():
    header = [*HEADER, "supplier_id"]
    supplier = only_supplier([header, [*row(), "8A7A9D0B-1111-4222-8333-444455556666"]])
    assert supplier.supplier_id == "8a7a9d0b-1111-4222-8333-444455556666"


def test_names_are_whitespace_normalized_and_local_paths_allowed_for_files():
    supplier = only_supplier([HEADER, row("  Alpha \t  Beta ", "alpha/prices.csv", fmt="csv")])
    assert supplier.name == "Alpha Beta"
    assert supplier.source_url == "alpha/prices.csv"
    problem = problem_of(row("Gamma", "alpha/prices.csv", fmt="url"))
    assert "unsupported scheme none" in problem.reason


# --- CSV encodings ---------------------------------------------------------------------------

RUSSIAN_SHEET = (
    "Поставщик;Ссылка;Формат;Активен;Примечание\r\n"
    "ООО «Альфа»;https://example.com/a.csv;csv;да;оплата по счёту, доставка\r\n"
    "ИП Петров, филиал;https://example.com/p.xlsx;excel;нет;\r\n"
    "ЗАО Бета;https://example.com/b?x=1,2;;1;срок, цена, остаток\r\n"
)


def _check_russian(rows):
    registry = build_registry(rows)
    assert registry.problems == []
    assert registry.columns == ["Поставщик", "Ссылка", "Формат", "Активен", "Примечание"]
    assert [(s.name, s.format, s.active) for s in registry.suppliers] == [
        ("ООО «Альфа»", "csv", True),
        ("ИП Петров, филиал", "excel", False),
        ("ЗАО Бета", "url", True),
    ]
    assert registry.suppliers[0].notes == "оплата по счёту, доставка"
    assert registry.suppliers[2].source_url == "https://example.com/b?x=1,2"


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "cp1251"])
def test_csv_semicolons_in_each_encoding(encoding):
    _check_russian(read_csv_rows(RUSSIAN_SHEET.encode(encoding)))


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "cp1251"])
def test_csv_commas_in_each_encoding(encoding):
    text = (
        "name,url,format,active\n"
        '"ООО ""Ромашка"", Москва",https://example.com/r.csv,csv,да\n'
        "Ёлки-Палки,https://example.com/e.xlsx,,нет\n"
    )
    registry = build_registry(read_csv_rows(text.encode(encoding)))
    assert registry.problems == []
    assert [(s.name, s.format, s.active) for s in registry.suppliers] == [
        ('ООО "Ромашка", Москва', "csv", True),
        ("Ёлки-Палки", "excel", False),
    ]


def test_csv_tab_separated():
    rows = read_csv_rows(b"name\turl\nAlpha\thttps://example.com/a.csv\n")
    assert rows == [["name", "url"], ["Alpha", "https://example.com/a.csv"]]


@pytest.mark.parametrize("fmt", ["", "url", "csv"])
def test_a_url_urlsplit_cannot_parse_refuses_its_row_only(fmt):
    """'http://[::1' makes urlsplit raise: one such cell must not stop the whole sheet."""
    registry = build_registry(
        [
            ["name", "url", "format"],
            ["Bad", "http://[::1", fmt],
            ["Good", "https://example.com/g.csv", ""],
        ]
    )

    assert [(p.row, p.reason) for p in registry.problems] == [
        (2, "invalid source URL: Invalid IPv6 URL")
    ]
    assert [s.key for s in registry.suppliers] == ["good"]


def test_a_cell_longer_than_the_csv_modules_field_limit_refuses_its_row_only():
    """csv's default limit is 128 KB a field: one pasted cell must not make the sheet unreadable."""
    text = f"name,url,notes\n{'A' * 200_000},https://example.com/a.csv,\nBeta,https://example.com/b.csv,{'n' * 150_000}\n"

    registry = build_registry(read_csv_rows(text.encode()))

    assert [p.reason for p in registry.problems] == ["supplier name longer than 200 characters"]
    assert [s.key for s in registry.suppliers] == ["beta"]
    assert len(registry.suppliers[0].notes) == 150_000


def test_a_bom_does_not_end_up_in_the_first_column_name():
    rows = read_csv_rows("name,url\nAlpha,https://example.com/a.csv\n".encode("utf-8-sig"))
    assert rows[0][0] == "name"


# --- workbooks -------------------------------------------------------------------------------


def test_xlsx_with_a_suppliers_worksheet_among_others(tmp_path):
    path = xlsx(
        tmp_path / "master.xlsx",
        {
            "Readme": [["This sheet lists our suppliers"]],
            "Suppliers": [
                ["Supplier", "Link", "Type", "Active", "ID"],
                ["ООО «Альфа»", "https://example.com/a.csv", "csv", 1, None],
                ["Beta", "https://example.com/b.xlsx", None, 0, None],
                [
                    "Gamma",
                    "https://example.com/g.csv",
                    "csv",
                    True,
                    "8a7a9d0b-1111-4222-8333-444455556666",
                ],
            ],
            "Archive": [["name", "url"], ["Old", "https://example.com/old.csv"]],
        },
    )
    registry = build_registry(read_workbook_rows(path, "Suppliers"))
    assert registry.problems == []
    assert [(s.name, s.format, s.active) for s in registry.suppliers] == [
        ("ООО «Альфа»", "csv", True),
        ("Beta", "excel", False),
        ("Gamma", "csv", True),
    ]
    assert registry.suppliers[2].supplier_id == "8a7a9d0b-1111-4222-8333-444455556666"
    # the worksheet name is matched without regard to case or spaces
    assert read_workbook_rows(path, " suppliers ") == read_workbook_rows(path, "Suppliers")


def test_xlsx_with_one_sheet_needs_no_name(tmp_path):
    path = xlsx(
        tmp_path / "one.xlsx", {"Лист1": [["name", "url"], ["Alpha", "https://example.com/a.csv"]]}
    )
    registry = build_registry(read_workbook_rows(path, "Suppliers"))
    assert [s.name for s in registry.suppliers] == ["Alpha"]
    assert read_workbook_rows(path, None) == read_workbook_rows(path, "Suppliers")


def test_missing_worksheet_lists_the_sheets(tmp_path):
    path = xlsx(tmp_path / "two.xlsx", {"Readme": [["x"]], "Поставщики 2023": [["name", "url"]]})
    with pytest.raises(MasterSheetError) as caught:
        read_workbook_rows(path, "Suppliers")
    assert "worksheet 'Suppliers' not found" in str(caught.value)
    assert "the workbook has: Readme, Поставщики 2023" in str(caught.value)


def test_cells_become_text(tmp_path):
    path = xlsx(
        tmp_path / "cells.xlsx", {"Suppliers": [["a", "b", "c", "d"], [3.0, 2.5, None, "  x  "]]}
    )
    assert read_workbook_rows(path, "Suppliers")[1] == ["3", "2.5", "", "x"]


def test_a_broken_workbook_is_a_master_sheet_error(tmp_path):
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    with pytest.raises(MasterSheetError, match="cannot open the workbook"):
        read_workbook_rows(path, "Suppliers")


# --- load_master_sheet -----------------------------------------------------------------------


def test_load_master_sheet_csv_from_a_url(server, fetcher, staging):
    url = server.route("/master.csv", file_body(RUSSIAN_SHEET.encode("cp1251"), "text/csv"))
    registry, fetched = load_master_sheet(url, "Suppliers", fetcher, staging)
    _check_russian([[c for c in r] for r in read_csv_rows(fetched.path.read_bytes())])
    assert [s.name for s in registry.suppliers] == ["ООО «Альфа»", "ИП Петров, филиал", "ЗАО Бета"]
    assert fetched.path.read_bytes() == RUSSIAN_SHEET.encode("cp1251")


def test_load_master_sheet_xlsx_from_a_url_without_extension(server, fetcher, staging, tmp_path):
    path = xlsx(
        tmp_path / "m.xlsx",
        {
            "Readme": [["hi"]],
            "Suppliers": [["name", "url"], ["Alpha", "https://example.com/a.csv"], ["", "x"]],
        },
    )
    url = server.route("/download", file_body(path.read_bytes()))
    registry, fetched = load_master_sheet(url, "Suppliers", fetcher, staging)
    assert fetched.kind.file_type == "excel"
    assert [s.name for s in registry.suppliers] == ["Alpha"]
    assert [(p.row, p.reason) for p in registry.problems] == [(3, "missing supplier name")]


def test_load_master_sheet_from_a_public_google_sheet_export(server, fetcher, staging, tmp_path):
    path = xlsx(
        tmp_path / "g.xlsx",
        {"Suppliers": [["name", "url"], ["Alpha", "https://example.com/a.csv"]]},
    )
    server.route(f"/spreadsheets/d/{SHEET_ID}/export", file_body(path.read_bytes()))
    registry, fetched = load_master_sheet(
        server.url(f"/spreadsheets/d/{SHEET_ID}/edit#gid=0"), "Suppliers", fetcher, staging
    )
    assert fetched.source_type == "google_export"
    assert [s.name for s in registry.suppliers] == ["Alpha"]


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ""])
def test_load_master_sheet_from_a_local_path_outside_the_sources_root(
    fetcher, staging, tmp_path, suffix
):
    folder = tmp_path / "config"
    folder.mkdir()
    master = folder / f"master{suffix}"
    if suffix == ".xlsx":
        xlsx(master, {"Suppliers": [["name", "url"], ["Alpha", "https://example.com/a.csv"]]})
    else:
        master.write_bytes("name;url\r\nAlpha;https://example.com/a.csv\r\n".encode("cp1251"))
    assert not master.resolve().is_relative_to(Path(fetcher.local_sources_root).resolve())

    registry, fetched = load_master_sheet(str(master), "Suppliers", fetcher, staging)

    assert fetched.source_type == "local"
    assert [s.name for s in registry.suppliers] == ["Alpha"]
    assert fetcher.local_sources_root != str(folder)  # the caller's fetcher is not changed


def test_load_master_sheet_html_instead_of_a_sheet(server, fetcher, staging):
    url = server.route("/master.csv", html_page())
    with pytest.raises(PermanentFetchError, match="HTML page"):
        load_master_sheet(url, "Suppliers", fetcher, staging)


def test_load_master_sheet_pdf_is_not_a_table(server, fetcher, staging):
    url = server.route("/master", file_body(b"%PDF-1.7\n%...\n%%EOF\n", "application/pdf"))
    with pytest.raises(MasterSheetError, match="is a PDF, not a table"):
        load_master_sheet(url, "Suppliers", fetcher, staging)


def test_load_master_sheet_missing_column(server, fetcher, staging):
    url = server.route(
        "/master.csv", file_body(b"company;website\r\nAlpha;https://e.com\r\n", "text/csv")
    )
    with pytest.raises(MasterSheetError, match="columns found: 'company', 'website'"):
        load_master_sheet(url, "Suppliers", fetcher, staging)
