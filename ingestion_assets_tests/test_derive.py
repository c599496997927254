"""Derived workbooks for the parser: CSV -> .xlsx, one sheet of a workbook -> .xlsx, row counts.

No .xls writer (xlwt) is installed, so .xls is exercised only on the "unreadable" path.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import openpyxl
import pytest

from ingestion_assets.handoff.derive import (
    DerivationError,
    count_data_rows,
    csv_to_xlsx,
    single_sheet_xlsx,
)


def read_back(path: Path) -> tuple[list[str], list[tuple[object, ...]]]:
    """Sheet titles and the rows of the first sheet, as the parser would see them."""
    workbook = openpyxl.load_workbook(path)
    try:
        assert workbook.active.title == workbook.sheetnames[0]
        return workbook.sheetnames, [tuple(r) for r in workbook.active.iter_rows(values_only=True)]
    finally:
        workbook.close()


def make_workbook(path: Path) -> Path:
    """Cover (active), Price and Notes; Price has a blank row in the middle."""
    workbook = openpyxl.Workbook()
    cover = workbook.active
    cover.title = "Cover"
    cover.append(["ООО Поставщик"])
    cover.append(["Прайс-лист на 01.03.2025"])
    price = workbook.create_sheet("Price")
    price.append(["Артикул", "Наименование", "Цена", "Дата", "В наличии"])
    price.append(["A-1", "Болт М8", 12.5, dt.datetime(2025, 3, 1), True])
    price.append([None, None, None, None, None])
    price.append(["=not a formula", "Гайка", 7, dt.datetime(2025, 3, 2, 10, 30), False])
    price.append(["B-2", "1 234,56 ₽", None, None, None])
    price["A4"].data_type = "s"  # text that looks like a formula, as Excel keeps "'=..."
    notes = workbook.create_sheet("Notes")
    notes.append(["n"])
    workbook.active = 0
    workbook.save(path)
    return path


# --- csv_to_xlsx ---------------------------------------------------------------------------


def test_cp1251_semicolon_csv_keeps_its_text(tmp_path):
    text = (
        "Артикул;Наименование;Цена;Остаток\r\n"
        "A-1;Болт М8 оцинкованный;1 234,56;00120\r\n"
        "A-2;Гайка «Ёж»;;5\r\n"
        "A-3;Шайба;0,50 ₽;\r\n"
    )
    # cp1251 has no ₽: the supplier's file would not either.
    source = tmp_path / "price.csv"
    source.write_bytes(text.replace("₽", "руб.").encode("cp1251"))
    target = tmp_path / "price.xlsx"

    assert csv_to_xlsx(source, target) == 4

    sheets, rows = read_back(target)
    assert len(sheets) == 1
    assert rows == [
        ("Артикул", "Наименование", "Цена", "Остаток"),
        ("A-1", "Болт М8 оцинкованный", "1 234,56", "00120"),
        ("A-2", "Гайка «Ёж»", None, "5"),
        ("A-3", "Шайба", "0,50 руб.", None),
    ]


def test_utf8_bom_comma_csv(tmp_path):
    source = tmp_path / "p.csv"
    source.write_bytes('\ufeffSKU,Name,Price\nX1,Кабель ВВГ,"1 234,56 ₽"\n'.encode())
    target = tmp_path / "p.xlsx"

    assert csv_to_xlsx(source, target) == 2

    _, rows = read_back(target)
    assert rows == [("SKU", "Name", "Price"), ("X1", "Кабель ВВГ", "1 234,56 ₽")]


def test_tab_csv(tmp_path):
    source = tmp_path / "p.csv"
    source.write_text("SKU\tName\tPrice\nX1\tLamp, E27\t99.90\nX2\tSwitch\t10\n", "utf-8")
    target = tmp_path / "p.xlsx"

    assert csv_to_xlsx(source, target) == 3

    _, rows = read_back(target)
    assert rows == [
        ("SKU", "Name", "Price"),
        ("X1", "Lamp, E27", "99.90"),
        ("X2", "Switch", "10"),
    ]


def test_quoted_field_with_delimiter_and_newline(tmp_path):
    source = tmp_path / "p.csv"
    source.write_text(
        'sku;name;price\nA1;"Болт; М8\nоцинкованный";10\nA2;Гайка;5\n', "utf-8", newline=""
    )
    target = tmp_path / "p.xlsx"

    assert csv_to_xlsx(source, target) == 3

    _, rows = read_back(target)
    assert rows == [
        ("sku", "name", "price"),
        ("A1", "Болт; М8\nоцинкованный", "10"),
        ("A2", "Гайка", "5"),
    ]


def test_formula_and_error_lookalikes_stay_text(tmp_path):
    source = tmp_path / "p.csv"
    source.write_text("a,b,c\n=SUM(A1:A2),#N/A,-5\n", "utf-8")
    target = tmp_path / "p.xlsx"

    csv_to_xlsx(source, target)

    workbook = openpyxl.load_workbook(target)
    cells = list(workbook.active.iter_rows(min_row=2))[0]
    assert [c.value for c in cells] == ["=SUM(A1:A2)", "#N/A", "-5"]
    assert [c.data_type for c in cells] == ["s", "s", "s"]


def test_empty_csv_gives_an_empty_valid_workbook(tmp_path):
    source = tmp_path / "empty.csv"
    source.write_bytes(b"")
    target = tmp_path / "empty.xlsx"

    assert csv_to_xlsx(source, target) == 0

    sheets, rows = read_back(target)
    assert len(sheets) == 1
    assert all(value is None for row in rows for value in row)


# --- single_sheet_xlsx ---------------------------------------------------------------------


def test_named_sheet_becomes_the_only_sheet(tmp_path):
    source = make_workbook(tmp_path / "book.xlsx")
    target = tmp_path / "derived.xlsx"

    written = single_sheet_xlsx(source, target, " price ")

    sheets, rows = read_back(target)
    assert sheets == ["Price"]
    original = openpyxl.load_workbook(source)["Price"]
    assert rows == [tuple(r) for r in original.iter_rows(values_only=True)]
    assert written == len(rows) == 5
    assert rows[1] == ("A-1", "Болт М8", 12.5, dt.datetime(2025, 3, 1), True)
    assert rows[3][0] == "=not a formula"  # text in the source, text in the copy
    assert isinstance(rows[3][2], int)


def test_source_extension_does_not_matter(tmp_path):
    """The kind is read from the bytes: a staging name without .xlsx still works."""
    source = make_workbook(tmp_path / "book.xlsx").rename(tmp_path / "staged.bin")
    target = tmp_path / "derived.xlsx"

    assert single_sheet_xlsx(source, target, "NOTES") == 1
    assert read_back(target) == (["Notes"], [("n",)])


def test_missing_sheet_lists_the_sheets(tmp_path):
    source = make_workbook(tmp_path / "book.xlsx")
    target = tmp_path / "derived.xlsx"

    with pytest.raises(DerivationError) as caught:
        single_sheet_xlsx(source, target, "Прайс")

    message = str(caught.value)
    assert "worksheet 'Прайс' not found; the workbook has: Cover, Price, Notes" in message
    assert "book.xlsx" in message
    assert not target.exists()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(None, id="truncated-xlsx"),
        pytest.param(b"PK\x03\x04" + b"\x00" * 200, id="zip-magic-garbage"),
        pytest.param(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, id="xls-magic-garbage"),
        pytest.param(b"<html><table><tr><td>1</td></tr></table></html>", id="html-as-xls"),
    ],
)
def test_unreadable_workbook_is_a_derivation_error(tmp_path, content):
    source = tmp_path / "broken.xlsx"
    if content is None:
        full = make_workbook(tmp_path / "full.xlsx").read_bytes()
        content = full[: len(full) // 2]
    source.write_bytes(content)

    with pytest.raises(DerivationError, match="broken.xlsx"):
        single_sheet_xlsx(source, tmp_path / "derived.xlsx", "Price")


# --- count_data_rows -----------------------------------------------------------------------


def test_count_uses_the_active_sheet_by_default(tmp_path):
    source = make_workbook(tmp_path / "book.xlsx")

    assert count_data_rows(source, "excel") == 2  # Cover


def test_count_uses_the_named_sheet_and_skips_blank_rows(tmp_path):
    source = make_workbook(tmp_path / "book.xlsx")

    assert count_data_rows(source, "excel", "PRICE ") == 4  # 5 rows, one blank
    assert count_data_rows(source, "excel", "nowhere") is None


def test_count_csv_skips_blank_rows(tmp_path):
    source = tmp_path / "p.csv"
    source.write_text("a;b\n1;2\n\n ; \n3;4\n", "utf-8")

    assert count_data_rows(source, "csv") == 3


def test_count_is_none_for_pdf_and_garbage(tmp_path):
    pdf = tmp_path / "p.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    garbage = tmp_path / "g.xlsx"
    garbage.write_bytes(b"PK\x03\x04not really a zip")

    assert count_data_rows(pdf, "pdf") is None
    assert count_data_rows(garbage, "excel") is None
    assert count_data_rows(tmp_path / "absent.csv", "csv") is None
