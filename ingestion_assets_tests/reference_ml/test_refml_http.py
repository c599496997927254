"""The reference ml-analyze over real HTTP: the contract's endpoints and real files."""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path
from typing import Any

import openpyxl
import pytest

# For request bodies built by hand; parametrize lists exist before fixtures do.
ANY_SUPPLIER = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"


def stored_items(server: Any, job_id: str) -> dict[int, dict[str, Any]]:
    """Items the job stored, by spreadsheet row number, read straight from SQLite."""
    with sqlite3.connect(server.db_path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM items WHERE job_id = ?", (job_id,)).fetchall()
    return {row["row_number"]: dict(row) for row in rows}


# --- files -------------------------------------------------------------------

SUPPLIER_XLSX_ROWS: list[list[Any]] = [
    ["ООО «ИнструментСнаб» — инструмент и крепёж оптом"],
    ["Москва, ул. Складская, 12 · Тел.: +7 (495) 123-45-67 · sales@instrument-snab.ru"],
    [],
    ["ПРАЙС-ЛИСТ на 01.03.2025 (цены с НДС)"],  # merged A4:F4
    # Two labels in two cells, one says "цены", one "товар": a header that is not.
    ["Цены действительны до 31.03.2025", None, None, "Товар под заказ — 5 дней"],
    [],
    ["№", "Наименование товара", "Артикул", "Бренд", "Ед. изм.", "Цена, руб."],  # row 7
    [None, "Электроинструмент"],  # section heading, merged B8:F8
    [1, "Дрель ударная Bosch GSB 13 RE (600 Вт)", "06011A2000", "Bosch", "шт", "4 590,00 ₽"],
    [2, "Шуруповерт аккумуляторный Makita DF333DWYE", "DF333DWYE", "Makita", "шт", 7990],
    [3, "Impact wrench Milwaukee M18 FHIWF12", 4933459695, "Milwaukee", "pcs", "$289.00"],
    [4, "Пылесос строительный Karcher WD 3", "1.629-801.0", "Karcher", "шт", "9\u00a0990 руб."],
    [None, "Ручной инструмент"],
    [5, "Молоток слесарный 800 г Зубр", "20050-800", "Зубр", "шт", "по запросу"],  # row 14
    [6, "Claw hammer Estwing 16oz", "E3-16C", "Estwing", "pcs", "12,5 BYN"],
    [7, "Рулетка 5 м Stanley", "0-30-697", "Stanley", "шт", "1 250,50"],
    [8, "Рулетка 5 м Stanley", "0-30-697", "Stanley", "шт", "1 250,50"],  # duplicate of row 16
    [9, "Бур SDS-max 16x540 мм Bosch", "2608685866", "Bosch", "шт", 2350.5],
    [10, "Круг лепестковый 115 мм P60", "KL-115-60", None, "шт", "185 р."],
    [11, "Кофемашина Delonghi Magnifica", "ECAM22", "De'Longhi", "шт", "32 000,00 ₽"],
    [12, "Saw blade 190 mm", "SB190", None, "pcs", "€19.90"],
    [13, "Стремянка алюминиевая 5 ступеней", "ST-5", None, "шт", None],  # row 22, no price
    [None, "Итого позиций: 13"],
    [14, None, "X-1", None, None, 100],  # no name
]


def write_xlsx(path: Path, rows: list[list[Any]], merged: tuple[str, ...] = ()) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    for cell_range in merged:
        sheet.merge_cells(cell_range)
    workbook.save(path)
    return path


def write_biff8_xls(path: Path, rows: list[list[Any]]) -> Path:
    """A minimal Excel 97 workbook: the BIFF8 stream xlrd reads, without the OLE2 wrapper.

    No package here writes .xls, and xlrd accepts a bare workbook stream.
    """

    def record(kind: int, data: bytes = b"") -> bytes:
        return struct.pack("<HH", kind, len(data)) + data

    def bof(substream: int) -> bytes:
        return record(0x0809, struct.pack("<HHHHII", 0x0600, substream, 0, 0, 0, 0))

    xf = record(0x00E0, struct.pack("<HHHBBBBIiH", 0, 0, 0x0001, 0x20, 0, 0, 0, 0, 0, 0x20C0))

    def globals_stream(sheet_offset: int) -> bytes:
        boundsheet = record(0x0085, struct.pack("<IBBBB", sheet_offset, 0, 0, 6, 0) + b"Sheet1")
        return bof(0x0005) + xf + boundsheet + record(0x000A)

    cells = b""
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, str):
                label = struct.pack("<HHHHB", r, c, 0, len(value), 1) + value.encode("utf-16-le")
                cells += record(0x0204, label)
            elif value is not None:
                cells += record(0x0203, struct.pack("<HHHd", r, c, 0, float(value)))
    workbook = globals_stream(len(globals_stream(0)))
    path.write_bytes(workbook + bof(0x0010) + cells + record(0x000A))
    return path


# --- the contract's endpoints ------------------------------------------------


def test_health(api: Any) -> None:
    response = api.http.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["service"] == "ml-analyze"
    assert body["version"]
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["catalogue"]["products"] >= 40


def test_supplier_xlsx_with_header_on_row_7(
    api: Any, shared_server: Any, supplier_id: str, tmp_path: Path
) -> None:
    path = write_xlsx(tmp_path / "supplier.xlsx", SUPPLIER_XLSX_ROWS, merged=("A4:F4", "B8:F8"))
    job = api.wait(api.submit(path, "excel", metadata={"source": "test"}))

    assert job["status"] == "completed"  # row problems make it partial, not failed
    assert job["phase"] == "done"
    assert job["progress_percentage"] == 100
    assert job["items_total"] == 13 and job["items_processed"] == 13
    assert job["errors"] == [
        "Row 14: price 'по запросу' is not a number",
        "Row 22: price is missing",
    ]
    assert job["successful_extractions"] == 10
    assert job["failed_extractions"] == 2
    assert job["duplicates_removed"] == 1
    assert (job["items_matched"], job["items_review"], job["items_unmatched"]) == (4, 3, 3)
    assert job["created_at"] <= job["started_at"] <= job["completed_at"]

    items = stored_items(shared_server, job["job_id"])
    assert {row: item["price"] for row, item in items.items()} == {
        9: 4590.0,
        10: 7990.0,
        11: 289.0,
        12: 9990.0,
        15: 12.5,
        16: 1250.5,
        18: 2350.5,
        19: 185.0,
        20: 32000.0,
        21: 19.9,
    }
    drill = items[9]
    assert drill["supplier_id"] == supplier_id
    assert (drill["sku"], drill["brand"], drill["unit"]) == ("06011A2000", "Bosch", "шт")
    assert (drill["match_status"], drill["matched_product"]) == (
        "matched",
        "Дрель ударная Bosch GSB 13 RE",
    )
    assert items[11]["sku"] == "4933459695"  # a number cell, kept as an article
    assert items[19]["match_status"] == "review" and items[19]["matched_product"]
    assert items[20]["match_status"] == "unmatched" and items[20]["matched_product"] is None


def test_csv_cp1251_semicolon_russian_headers(api: Any, shared_server: Any, tmp_path: Path) -> None:
    text = (
        "Прайс ООО «Крепёж-Центр», тел. 8-800-555-35-35;;;\r\n"
        ";;;\r\n"
        "Наименование;Код;Цена опт;РРЦ\r\n"
        "Дюбель распорный 6x40 (100 шт);D-640;1 234,56;1 500,00\r\n"
        "Анкерный болт М10x100;AB-10100;45,5;60\r\n"
    )
    path = tmp_path / "krepezh.csv"
    path.write_bytes(text.encode("cp1251"))
    job = api.wait(api.submit(path, "csv"))

    assert job["status"] == "completed" and job["errors"] == []
    assert job["items_total"] == 2 and job["items_matched"] == 2
    items = stored_items(shared_server, job["job_id"])
    assert {row: (item["name"], item["sku"], item["price"]) for row, item in items.items()} == {
        4: ("Дюбель распорный 6x40 (100 шт)", "D-640", 1234.56),  # the wholesale price, not РРЦ
        5: ("Анкерный болт М10x100", "AB-10100", 45.5),
    }


def test_csv_utf8_bom_english_headers(api: Any, shared_server: Any, tmp_path: Path) -> None:
    text = (
        "SKU,Product name,Price,Category,Brand,Unit\n"
        'STHT0-33501,Tape Measure 8 m Stanley FatMax,"$1,234.00",Measuring,Stanley,pcs\n'
        "EC-25,Extension Cord 25 m 3x1.5 mm²,€9.99,Electrical,,pcs\n"
        "GN-1,Garden gnome statue,call us,Garden,,pcs\n"
    )
    path = tmp_path / "tools.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    job = api.wait(api.submit(path, "csv"))

    assert job["status"] == "completed"
    assert job["errors"] == ["Row 4: price 'call us' is not a number"]
    assert (job["items_total"], job["successful_extractions"], job["items_matched"]) == (3, 2, 2)
    items = stored_items(shared_server, job["job_id"])
    tape, cord = items[2], items[3]
    assert (tape["sku"], tape["price"], tape["category"], tape["brand"]) == (
        "STHT0-33501",  # the first label, right after the BOM
        1234.0,
        "Measuring",
        "Stanley",
    )
    assert (cord["name"], cord["price"]) == ("Extension Cord 25 m 3x1.5 mm²", 9.99)  # read as UTF-8


def test_two_row_header(api: Any, shared_server: Any, tmp_path: Path) -> None:
    rows = [
        ["Наименование", "Артикул", "Цена", None, "Бренд"],  # "Цена" merged over C1:D1
        [None, None, "Опт", "Розница", None],
        ["Сверло по металлу HSS 6 мм Bosch", "2608595061", "149,90", "199,00", "Bosch"],
        ["Лента малярная 48 мм x 50 м", "LM-48", 89, 120, None],
    ]
    path = write_xlsx(tmp_path / "two-rows.xlsx", rows, merged=("C1:D1",))
    job = api.wait(api.submit(path, "excel"))

    assert job["status"] == "completed" and job["errors"] == []
    assert job["items_total"] == 2
    items = stored_items(shared_server, job["job_id"])
    assert (items[3]["price"], items[3]["brand"]) == (149.9, "Bosch")
    assert items[4]["price"] == 89.0


def test_xls_workbook(api: Any, shared_server: Any, tmp_path: Path) -> None:
    rows = [
        ["Прайс-лист"],
        [None],
        ["Товар", "Артикул", "Стоимость"],
        ["Очки защитные прозрачные", "OZ-1", 150.0],
        ["Перчатки рабочие х/б с ПВХ", 4607, "35,50 руб."],
    ]
    path = write_biff8_xls(tmp_path / "old.xls", rows)
    job = api.wait(api.submit(path, "excel"))

    assert job["status"] == "completed" and job["errors"] == []
    items = stored_items(shared_server, job["job_id"])
    assert {row: (item["sku"], item["price"]) for row, item in items.items()} == {
        4: ("OZ-1", 150.0),
        5: ("4607", 35.5),
    }


def test_pdf_fails_with_a_clear_message(api: Any, tmp_path: Path) -> None:
    path = tmp_path / "prices.pdf"
    path.write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    job = api.wait(api.submit(path, "pdf"))
    assert job["status"] == "failed"
    assert job["errors"] == ["PDF is not supported by the reference server"]
    assert job["completed_at"]


@pytest.mark.parametrize(
    ("content", "file_type", "message"),
    [
        (b"this is not a workbook", "excel", "Could not read the file as Excel"),
        (b"PK\x03\x04 broken zip", "excel", "Could not read the file as XLSX"),
        ("Дата;Сумма\n01.03;100\n".encode(), "csv", "No header row with a name and a price column"),
    ],
)
def test_unreadable_file_fails(
    api: Any, tmp_path: Path, content: bytes, file_type: str, message: str
) -> None:
    path = tmp_path / "broken.bin"
    path.write_bytes(content)
    job = api.wait(api.submit(path, file_type))
    assert job["status"] == "failed"
    assert len(job["errors"]) == 1 and job["errors"][0].startswith(message)


def test_missing_file_is_400(api: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.xlsx"
    response = api.http.post(
        "/analyze/file",
        json={"file_url": str(missing), "supplier_id": ANY_SUPPLIER, "file_type": "excel"},
    )
    assert response.status_code == 400
    assert response.json() == {"detail": f"File not found: {missing}"}


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        (
            {"supplier_id": "not-a-uuid", "file_type": "excel"},
            [["body", "file_url"], ["body", "supplier_id"]],
        ),
        (
            {"file_url": "/x.xlsx", "supplier_id": ANY_SUPPLIER, "file_type": "docx"},
            [["body", "file_type"]],
        ),
        (
            {"file_url": 5, "supplier_id": 7, "file_type": "csv"},
            [["body", "file_url"], ["body", "supplier_id"]],
        ),
        ([1, 2], [["body"]]),
    ],
)
def test_validation_errors_are_422_with_a_detail_list(
    api: Any, body: Any, locs: list[list[str]]
) -> None:
    response = api.http.post("/analyze/file", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [entry["loc"] for entry in detail] == locs
    assert all(entry["msg"] and entry["type"] for entry in detail)


def test_invalid_json_is_422(api: Any) -> None:
    response = api.http.post(
        "/analyze/file", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_unknown_job_is_404(api: Any) -> None:
    for method in ("GET", "DELETE"):
        response = api.http.request(method, "/analyze/status/00000000-0000-4000-8000-000000000000")
        assert response.status_code == 404
        assert response.json() == {"detail": "Job not found"}


def test_delete_forgets_the_job(api: Any, tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("name,price\nClaw Hammer 16 oz Estwing,25\n", encoding="utf-8")
    job_id = api.submit(path, "csv")
    api.wait(job_id)

    response = api.http.delete(f"/analyze/status/{job_id}")
    assert response.status_code == 204 and response.content == b""
    assert api.http.get(f"/analyze/status/{job_id}").status_code == 404
    assert api.http.delete(f"/analyze/status/{job_id}").status_code == 404


def test_unknown_route_answers_json(api: Any) -> None:
    response = api.http.get("/analyze/nothing")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_errors_in_the_status_are_capped(api: Any, tmp_path: Path) -> None:
    lines = ["name;price"] + [f"Товар без цены {i};звоните" for i in range(105)]
    path = tmp_path / "no-prices.csv"
    path.write_text("\n".join(lines), encoding="utf-8")
    job = api.wait(api.submit(path, "csv"))

    assert job["status"] == "completed" and job["failed_extractions"] == 105
    assert len(job["errors"]) == 101
    assert job["errors"][0] == "Row 2: price 'звоните' is not a number"
    assert job["errors"][-1] == "... and 5 more problems"
