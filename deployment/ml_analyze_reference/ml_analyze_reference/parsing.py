"""Reading supplier price lists: tables, header row, column mapping, prices.

Everything here is a plain function of its input, so it can be tested without
the server.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import io
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import openpyxl
import xlrd

Cell = str | float | int | None
Row = list[Cell]

# Real price lists put logos, contact lines and banners above the header.
HEADER_SEARCH_ROWS = 15
# A longer text is a sentence (a banner, a note), not a column label.
MAX_LABEL_LENGTH = 60

# Checked in this order: the generic name words ("товар", "product") also
# occur in labels such as "Код товара" or "Цена товара", which belong to the
# more specific fields. Within a field a lower rank wins ("Цена опт" over
# "РРЦ").
_FIELD_PATTERNS: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    (
        "price",
        (
            (r"\bцен", r"\bстоимост", r"\bprice", r"\bcost"),
            (r"\bопт", r"\bwholesale"),
            (r"\bррц", r"\brrp", r"\bmsrp"),
        ),
    ),
    ("sku", ((r"\bартикул", r"\bsku", r"\bart", r"\bарт\b"), (r"\bкод", r"\bcode"))),
    ("category", ((r"\bкатегор", r"\bcategor"), (r"\bгрупп", r"\bgroup", r"\bраздел"))),
    ("brand", ((r"\bбренд", r"\bbrand"), (r"\bпроизводител", r"\bmanufacturer", r"\bмарка\b"))),
    ("unit", ((r"\bед\b", r"\bединиц", r"\bunit", r"\buom\b"),)),
    (
        "name",
        ((r"\bнаименован", r"\bназван", r"\bname"), (r"\bтовар", r"\bproduct", r"\bноменклатур")),
    ),
)
_FIELD_REGEXES = [
    (field, rank, re.compile(pattern))
    for field, ranks in _FIELD_PATTERNS
    for rank, patterns in enumerate(ranks)
    for pattern in patterns
]
# A barcode column says "код" but is not the supplier's article number.
_IGNORED_LABEL = re.compile(r"\bштрих|barcode|\bean\b|\bgtin\b")

# What may stand before or after the digits of a price, dots dropped ("руб." is "руб").
CURRENCY_MARKS = frozenset(
    {"", "₽", "$", "€", "£", "¥", "₴", "₸", "руб", "р", "rub", "rur", "usd", "eur"}
    | {"byn", "byr", "kzt", "uah", "грн", "тг", "уе"}
)
_PRICE_TEXT = re.compile(r"(?P<pre>\D*?)(?P<num>\d[\d.,']*)(?P<post>\D*)")


class TableReadError(Exception):
    """The file could not be read as a table of the given type."""


class PriceError(ValueError):
    """A price cell that is not a number."""

    def __init__(self, raw: object) -> None:
        super().__init__(f"price '{raw}' is not a number")


@dataclass(frozen=True)
class Header:
    row_index: int  # 0-based index of the (first) header row
    data_start: int  # 0-based index of the first data row
    columns: dict[str, int]  # field -> column index


@dataclass(frozen=True)
class RawItem:
    row_number: int  # 1-based, as the supplier sees it in the spreadsheet
    name: str
    price: Cell
    sku: str | None = None
    category: str | None = None
    brand: str | None = None
    unit: str | None = None


# --- reading ---------------------------------------------------------------


def read_table(
    path: str | Path, file_type: str, sheet_name: str | None = None, active_sheet: bool = False
) -> list[Row]:
    """Rows of one sheet (excel) or of the file (csv), cells normalised.

    The sheet: with `active_sheet`, the workbook's active one (the first of an XLS), as the
    production service reads; else the one named `sheet_name` (case-insensitive); else, or
    when there is no such sheet, the first.
    """
    path = Path(path)
    if file_type == "csv":
        return read_csv(path)
    if file_type == "excel":
        with path.open("rb") as handle:
            is_zip = handle.read(4) == b"PK\x03\x04"
        reader = _read_xlsx if is_zip else _read_xls
        return reader(path, sheet_name, active_sheet)
    raise TableReadError(f"Unsupported file type: {file_type}")


def _read_xlsx(path: Path, sheet_name: str | None, active_sheet: bool) -> list[Row]:
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a broken zip
        raise TableReadError(f"Could not read the file as XLSX: {exc}") from exc
    try:
        sheets = workbook.worksheets  # chart sheets left out
        if active_sheet:
            sheet = workbook.active if workbook.active in sheets else sheets[0]
        else:
            sheet = sheets[_sheet_index([s.title for s in sheets], sheet_name)]
        # Some writers store a wrong <dimension>; without this rows get cut.
        sheet.reset_dimensions()
        return [[_normalise(value) for value in row] for row in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()


def _read_xls(path: Path, sheet_name: str | None, active_sheet: bool) -> list[Row]:
    try:
        book = xlrd.open_workbook(str(path), logfile=io.StringIO())
    except Exception as exc:  # xlrd raises XLRDError, struct.error, ...
        raise TableReadError(f"Could not read the file as Excel (XLS/XLSX): {exc}") from exc
    try:
        index = 0 if active_sheet else _sheet_index(book.sheet_names(), sheet_name)
        sheet = book.sheet_by_index(index)
        return [[_normalise(value) for value in sheet.row_values(i)] for i in range(sheet.nrows)]
    finally:
        book.release_resources()


def _sheet_index(names: Sequence[str], sheet_name: str | None) -> int:
    """The index of the sheet named `sheet_name`, case and outer spaces ignored; else 0."""
    wanted = (sheet_name or "").strip().casefold()
    found = (i for i, name in enumerate(names) if wanted and name.strip().casefold() == wanted)
    return next(found, 0)


def read_csv(path: Path) -> list[Row]:
    text = decode_csv(path.read_bytes())
    reader = csv.reader(io.StringIO(text), delimiter=sniff_delimiter(text))
    try:
        return [[_normalise(value) for value in row] for row in reader]
    except csv.Error as exc:
        raise TableReadError(f"Could not read the file as CSV: {exc}") from exc


def decode_csv(data: bytes) -> str:
    """UTF-8 (with or without BOM), else cp1251, the usual Russian Excel export."""
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1251", errors="replace")


def sniff_delimiter(text: str) -> str:
    """The delimiter among ; tab , that splits most lines into the same width.

    Counting characters is not enough: ';' files carry decimal commas in
    their prices, and banner lines carry commas in addresses.
    """
    lines = [line for line in text[:65536].splitlines()[:40] if line.strip()]

    def score(delimiter: str) -> tuple[int, int]:
        widths = Counter(len(row) for row in csv.reader(lines, delimiter=delimiter) if len(row) > 1)
        if not widths:
            return (0, 0)
        width, count = widths.most_common(1)[0]
        return (count, width)

    return max((";", "\t", ","), key=score) if lines else ","


def _normalise(value: object) -> Cell:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    text = str(value).strip()
    return text or None


# --- header and columns ----------------------------------------------------


def label_field(label: Cell) -> tuple[str, int] | None:
    """(field, rank) a column label stands for, or None."""
    if not isinstance(label, str) or len(label) > MAX_LABEL_LENGTH:
        return None
    text = " ".join(label.lower().split())
    if _IGNORED_LABEL.search(text):
        return None
    for field, rank, regex in _FIELD_REGEXES:
        if regex.search(text):
            return field, rank
    return None


def map_columns(labels: Sequence[Cell]) -> dict[str, int]:
    """field -> column index; for a field named twice the lowest rank, then the leftmost."""
    best: dict[str, tuple[int, int]] = {}
    for index, label in enumerate(labels):
        found = label_field(label)
        if found is None:
            continue
        field, rank = found
        if field not in best or (rank, index) < best[field]:
            best[field] = (rank, index)
    return {field: index for field, (_, index) in best.items()}


def find_header(rows: Sequence[Row]) -> Header | None:
    """The header row among the first rows: the one naming most fields, name and price required.

    A following row of labels (no numbers, at least one known label) refines
    it: a merged "Цена" above "Опт | Розница" becomes "Цена Опт", "Цена Розница".
    """
    best: tuple[int, dict[str, int]] | None = None
    for index, row in enumerate(rows[:HEADER_SEARCH_ROWS]):
        columns = map_columns(row)
        if (
            "name" in columns
            and "price" in columns
            and (best is None or len(columns) > len(best[1]))
        ):
            best = (index, columns)
    if best is None:
        return None
    index, columns = best
    if index + 1 < len(rows) and _is_subheader(rows[index + 1]):
        merged = map_columns(merge_header_rows(rows[index], rows[index + 1]))
        if "name" in merged and "price" in merged:
            return Header(index, index + 2, merged)
    return Header(index, index + 1, columns)


def _is_subheader(row: Row) -> bool:
    cells = [cell for cell in row if cell is not None]
    if not cells or not all(isinstance(cell, str) for cell in cells):
        return False
    if any(_looks_like_price(cell) for cell in cells):
        return False
    return any(label_field(cell) for cell in cells)


def _looks_like_price(cell: Cell) -> bool:
    try:
        return parse_price(cell) is not None
    except PriceError:
        return False


def merge_header_rows(top: Row, bottom: Row) -> list[str | None]:
    """Join two header rows column by column, spreading a merged top label over its span."""
    merged: list[str | None] = []
    carried: Cell = None
    for index in range(max(len(top), len(bottom))):
        upper = top[index] if index < len(top) else None
        lower = bottom[index] if index < len(bottom) else None
        if upper is not None:
            carried = upper
        elif lower is None:
            carried = None  # an empty column ends a merged span
        else:
            upper = carried  # under a merged cell: only its top-left holds the text
        parts = [str(part) for part in (upper, lower) if part is not None]
        merged.append(" ".join(parts) or None)
    return merged


def extract_items(rows: Sequence[Row], header: Header) -> Iterator[RawItem]:
    """Rows below the header that name a product.

    A row with a name but neither price nor article is a section heading
    ("Электроинструмент") and is skipped like an empty row.
    """
    columns = header.columns

    def cell(row: Row, field: str) -> Cell:
        index = columns.get(field)
        return row[index] if index is not None and index < len(row) else None

    for index in range(header.data_start, len(rows)):
        row = rows[index]
        name = _text(cell(row, "name"))
        if name is None:
            continue
        price, sku = cell(row, "price"), _text(cell(row, "sku"))
        if price is None and sku is None:
            continue
        yield RawItem(
            row_number=index + 1,
            name=name,
            price=price,
            sku=sku,
            category=_text(cell(row, "category")),
            brand=_text(cell(row, "brand")),
            unit=_text(cell(row, "unit")),
        )


def _text(value: Cell) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # article numbers typed into Excel become floats
    return str(value).strip() or None


# --- prices ----------------------------------------------------------------


def parse_price(value: Cell) -> float | None:
    """A price cell as a float; None for an empty cell; PriceError if it is not a number.

    Accepts text such as '1 234,56 ₽', '$12.50', '12,5 BYN', '1\xa0234 руб.'.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    compact = re.sub(r"\s+", "", str(value)).lower()  # \s also covers non-breaking spaces
    if not compact:
        return None
    match = _PRICE_TEXT.fullmatch(compact)
    if match is None or not all(
        match[side].replace(".", "") in CURRENCY_MARKS for side in ("pre", "post")
    ):
        raise PriceError(value)
    try:
        return float(_decimal_point(match["num"]))
    except ValueError:
        raise PriceError(value) from None


def _decimal_point(number: str) -> str:
    """Rewrite grouping and decimal separators so float() reads the number."""
    number = number.replace("'", "")
    commas, dots = number.count(","), number.count(".")
    if commas and dots:
        # The separator that comes last is the decimal one: 1.234,56 / 1,234.56.
        if number.rfind(",") > number.rfind("."):
            return number.replace(".", "").replace(",", ".")
        return number.replace(",", "")
    if commas > 1 or dots > 1:
        return number.replace(",", "").replace(".", "")
    if commas:
        whole, fraction = number.split(",")
        # '1,234' is a thousands group: prices have no third decimal place.
        return whole + fraction if len(fraction) == 3 else f"{whole}.{fraction}"
    return number
