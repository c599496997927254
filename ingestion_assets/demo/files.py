"""The demo's master sheet and files (python -m ingestion_assets.demo DIR [--http-port PORT]).

Existing files are left alone, so their checksums (and the hand-off reuse) stay stable.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import openpyxl
from openpyxl.worksheet.worksheet import Worksheet


def _new_workbook() -> tuple[openpyxl.Workbook, Worksheet]:
    """A new workbook and its one (active) worksheet."""
    wb = openpyxl.Workbook()
    ws = wb.active
    if not isinstance(ws, Worksheet):  # a new workbook's active sheet is its first worksheet
        raise TypeError(f"a new workbook's active sheet is {type(ws).__name__}")
    return wb, ws


def _alfa_workbook(path: Path) -> None:
    """A Russian price list as suppliers send them: logo and contacts above, header on row 4."""
    wb, ws = _new_workbook()
    ws.title = "Прайс"
    ws["A1"] = "ООО «Альфа Инструмент» — оптовый прайс-лист"
    ws.merge_cells("A1:E1")
    ws["A2"] = "Тел.: +7 495 000-00-00, info@alfa.example"
    ws.append([])
    ws.append(["Артикул", "Наименование", "Бренд", "Ед.", "Цена, руб."])
    rows: list[tuple[str, str, str, str, str | int]] = [
        ("AL-001", "Дрель ударная 750 Вт", "Makita", "шт", "4 990,00 ₽"),
        ("AL-002", "Шуруповёрт аккумуляторный 18 В", "Bosch", "шт", "7 450,50 ₽"),
        ("AL-003", "Набор бит 32 предмета", "Kraftool", "набор", 890),
        ("AL-004", "Перфоратор SDS-plus 800 Вт", "Makita", "шт", "12 300 ₽"),
        ("AL-005", "Уровень строительный 600 мм", "Stayer", "шт", "по запросу"),
    ]
    for row in rows:
        ws.append(row)
    wb.create_sheet("Условия").append(["Доставка по Москве бесплатно от 10 000 ₽"])
    wb.save(path)


def _beta_csv(path: Path) -> None:
    """A CSV in cp1251 with `;`, the usual export of a Russian 1C or Excel install."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow(["Код", "Товар", "Категория", "Цена"])
    writer.writerow(["B-10", "Молоток слесарный 500 г", "Ручной инструмент", "450,00"])
    writer.writerow(["B-11", "Отвёртка крестовая PH2", "Ручной инструмент", "120,50"])
    writer.writerow(["B-12", "Ключ разводной 250 мм", "Ручной инструмент", "780"])
    path.write_bytes(out.getvalue().encode("cp1251"))


def _gamma_workbook(path: Path) -> None:
    wb, ws = _new_workbook()
    ws.title = "Price list"
    ws.append(["SKU", "Product", "Brand", "Price"])
    ws.append(["G-1", "Cordless drill 18V", "DeWalt", "$129.00"])
    ws.append(["G-2", "Hammer 16 oz", "Stanley", "$19.50"])
    ws.append(["G-3", "Tape measure 5 m", "Stanley", 12.5])
    wb.save(path)


ZETA_ROWS = 15_000  # at the reference's row delay, minutes of "analyzing N %" to watch


def _zeta_csv(path: Path) -> None:
    """A big wholesale list: the reference ml-analyze takes a while over it, showing progress."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["sku", "name", "price"])
    for n in range(ZETA_ROWS):
        writer.writerow(
            [f"Z-{n:05d}", f"Wood screw 4x{30 + n % 50} mm, box of {100 + n % 7}", 3 + n % 40]
        )
    path.write_text(out.getvalue(), encoding="utf-8")


def write_demo(root: Path, http_port: int) -> Path:
    files, web = root / "files", root / "web"
    files.mkdir(parents=True, exist_ok=True)
    web.mkdir(parents=True, exist_ok=True)
    for path, writer in (
        (files / "alfa-instrument.xlsx", _alfa_workbook),
        (files / "beta-hardware.csv", _beta_csv),
        (web / "gamma-supply.xlsx", _gamma_workbook),
        (files / "zeta-wholesale.csv", _zeta_csv),
    ):
        if not path.exists():
            writer(path)
    master = root / "master_sheet.csv"
    rows = [
        ["name", "source_url", "format", "active", "use_ml_processing", "notes"],
        [
            "Альфа Инструмент",
            "alfa-instrument.xlsx",
            "excel",
            "yes",
            "yes",
            "local XLSX, header on row 4",
        ],
        ["Beta Hardware", "beta-hardware.csv", "csv", "yes", "yes", "local CSV in cp1251"],
        [
            "Gamma Supply",
            f"http://127.0.0.1:{http_port}/gamma-supply.xlsx",
            "url",
            "yes",
            "yes",
            "served over HTTP",
        ],
        [
            "Delta Paused",
            f"http://127.0.0.1:{http_port}/gamma-supply.xlsx",
            "url",
            "no",
            "yes",
            "inactive: not synced",
        ],
        [
            "Epsilon Moved",
            f"http://127.0.0.1:{http_port}/epsilon-moved.xlsx",
            "url",
            "yes",
            "yes",
            "fails: the file is no longer there (HTTP 404)",
        ],
        [
            "Zeta Wholesale",
            "zeta-wholesale.csv",
            "csv",
            "yes",
            "yes",
            f"{ZETA_ROWS:,} rows: analysed slowly, to watch the progress",
        ],
        [
            "Broken Row",
            "ftp://files.example.com/prices.xlsx",
            "excel",
            "yes",
            "yes",
            "refused: ftp",
        ],
    ]
    with master.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return master


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--http-port", type=int, default=8010)
    args = parser.parse_args()
    print(f"demo master sheet: {write_demo(args.root, args.http_port)}")
