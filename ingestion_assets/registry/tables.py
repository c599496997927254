"""Read a master sheet file (CSV, XLSX, XLS) into rows of strings."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

from ..errors import CourierError


class MasterSheetError(CourierError):
    """The master sheet as a whole cannot be used (unreadable, no such worksheet, columns
    missing): it will not heal until someone edits it."""


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM) first; cp1251, the usual Russian Excel export, otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1251", errors="replace")


def read_csv_rows(data: bytes) -> list[list[str]]:
    return [[cell.strip() for cell in row] for row in csv_rows(data)]


def csv_rows(data: bytes) -> Iterator[list[str]]:
    """The rows of a CSV file as its cells are, one at a time (a price list is counted without
    holding all of it as lists)."""
    text = decode_text(data)
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    # The file's size is already capped (MAX_FILE_SIZE_MB): no cell can be longer than the text,
    # and csv's own 128 KB field limit would reject the whole sheet for one pasted cell.
    previous_limit = csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    try:
        yield from csv.reader(io.StringIO(text), dialect)
    except csv.Error as exc:
        raise MasterSheetError(f"cannot read the CSV: {exc}") from exc
    finally:
        csv.field_size_limit(previous_limit)


def read_workbook_rows(path: Path, worksheet: str | None) -> list[list[str]]:
    if path.suffix == ".xls":
        return _read_xls(path, worksheet)
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a broken file
        raise MasterSheetError(f"cannot open the workbook: {exc}") from exc
    try:
        sheet = workbook[_pick_sheet(workbook.sheetnames, worksheet)]
        return [[_cell_text(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()


def _read_xls(path: Path, worksheet: str | None) -> list[list[str]]:
    import xlrd

    try:
        book = xlrd.open_workbook(path)
    except xlrd.XLRDError as exc:
        raise MasterSheetError(f"cannot open the workbook: {exc}") from exc
    sheet = book.sheet_by_name(_pick_sheet(book.sheet_names(), worksheet))
    return [[_cell_text(v) for v in sheet.row_values(i)] for i in range(sheet.nrows)]


def _pick_sheet(names: list[str], wanted: str | None) -> str:
    """The named worksheet (case-insensitive); a workbook with a single sheet needs no name."""
    if wanted:
        for name in names:
            if name.strip().lower() == wanted.strip().lower():
                return name
    if len(names) == 1:
        return names[0]
    raise MasterSheetError(f"worksheet '{wanted}' not found; the workbook has: {', '.join(names)}")


def _cell_text(value: object) -> str:  # an openpyxl or xlrd cell value
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value).strip()
