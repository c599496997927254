"""Derived workbooks: what the parsing service can read, made beside the original file.

The production parser reads only Excel workbooks, and only their ACTIVE sheet with the header
on the first row. A CSV therefore becomes a one-sheet .xlsx, and a workbook whose price list is
on another sheet becomes a one-sheet .xlsx holding just that sheet. The original file is kept
untouched; these functions only write the derived copy to the path they are given.

openpyxl and xlrd are imported when a workbook is first read or written, not with the module:
every run worker loads this module with the code location, and a run that reads no workbook
(a CSV, a PDF) would pay openpyxl's import (≈0.13 s of CPU) for nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ingestion_assets.errors import CourierError
from ingestion_assets.registry.tables import MasterSheetError, csv_rows, read_csv_rows

if TYPE_CHECKING:
    import xlrd
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet

__all__ = ["DerivationError", "count_data_rows", "csv_to_xlsx", "single_sheet_xlsx"]

CSV_SHEET_TITLE = "Sheet1"

_ZIP_MAGIC = b"PK\x03\x04"  # .xlsx (an Office Open XML package)
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0"  # .xls (BIFF in an OLE2 compound document)

# Beyond these a sheet is not a valid workbook for Excel or the readers that follow it.
_MAX_ROWS = 1_048_576
_MAX_COLUMNS = 16_384

Row = Sequence[object]


class DerivationError(CourierError):
    """The file cannot be turned into a workbook the parser reads (it will not heal by itself);
    the message is for the user."""


def csv_to_xlsx(source: Path, target: Path) -> int:
    """Write the CSV as a one-sheet .xlsx of text cells; return the number of rows written.

    Every cell stays the CSV's text ("1 234,56 ₽" is not a number to us): the parser, not the
    courier, decides what a price is. Empty cells become empty cells.
    """
    try:
        rows = read_csv_rows(source.read_bytes())
    except MasterSheetError as exc:
        raise DerivationError(f"{source.name}: {exc}") from exc
    if len(rows) > _MAX_ROWS:
        raise DerivationError(
            f"{source.name}: {len(rows)} rows, more than an Excel sheet holds ({_MAX_ROWS})"
        )
    widest = max((len(row) for row in rows), default=0)
    if widest > _MAX_COLUMNS:
        raise DerivationError(
            f"{source.name}: {widest} columns, more than an Excel sheet holds ({_MAX_COLUMNS})"
        )

    import openpyxl

    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet(CSV_SHEET_TITLE)
    cells = _Cells(sheet)
    for row in rows:
        sheet.append([cells.text(cell) if cell else None for cell in row])
    workbook.save(target)
    return len(rows)


def single_sheet_xlsx(source: Path, target: Path, sheet_name: str) -> int:
    """Copy the values of one sheet of an .xlsx or .xls into a one-sheet .xlsx; return its rows.

    The sheet is found case-insensitively, ignoring surrounding spaces, and keeps its title.
    Values keep their type (numbers, dates, text); formulas become their last computed value.
    Raises DerivationError when the workbook cannot be read or has no such sheet; OSError
    (the file itself missing or unreadable) is left to the caller.
    """
    import openpyxl

    written = 0
    with _open_sheet(source, sheet_name) as (title, rows):
        workbook = openpyxl.Workbook(write_only=True)
        sheet = workbook.create_sheet(title)
        cells = _Cells(sheet)
        for row in rows:
            sheet.append([cells.value(value) for value in row])
            written += 1
        workbook.save(target)
    return written


def count_data_rows(path: Path, file_type: str, sheet_name: str | None = None) -> int | None:
    """Rows with at least one non-blank cell in what the parser will analyse; None if unknown.

    For "excel" that is the named sheet, or else the active one (the first sheet of an .xls).
    Used only for a warning, so a broken file or a PDF gives None and never an exception.
    """
    try:
        if file_type == "csv":
            return sum(1 for row in csv_rows(path.read_bytes()) if _has_data(row))
        if file_type == "excel":
            with _open_sheet(path, sheet_name) as (_, rows):
                return sum(1 for row in rows if _has_data(row))
    except Exception:  # any failure to read means "unknown", by design
        return None
    return None


@contextmanager
def _open_sheet(path: Path, sheet_name: str | None) -> Iterator[tuple[str, Iterator[Row]]]:
    """The title and the rows of values of one sheet; by the file's bytes, not its extension.

    Without a sheet name: the active sheet of an .xlsx, the first sheet of an .xls.
    """
    with path.open("rb") as handle:
        magic = handle.read(len(_ZIP_MAGIC))
        handle.seek(0)
        if magic == _ZIP_MAGIC:
            with _open_xlsx_sheet(handle, path, sheet_name) as opened:
                yield opened
        elif magic == _OLE2_MAGIC:
            with _open_xls_sheet(path, sheet_name) as opened:
                yield opened
        else:
            raise DerivationError(f"{path.name}: not an Excel workbook (.xlsx or .xls)")


@contextmanager
def _open_xlsx_sheet(
    handle: BinaryIO, path: Path, sheet_name: str | None
) -> Iterator[tuple[str, Iterator[Row]]]:
    import openpyxl
    from openpyxl.worksheet._read_only import ReadOnlyWorksheet

    # A file object, not a path: openpyxl would refuse a name without an .xlsx extension.
    try:
        workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a broken file
        raise DerivationError(f"{path.name}: cannot open the workbook: {exc}") from exc
    try:
        if sheet_name is None:
            sheet = workbook.active
        else:
            sheet = workbook[_pick_sheet(path, workbook.sheetnames, sheet_name)]
        if not isinstance(sheet, ReadOnlyWorksheet):
            title = getattr(sheet, "title", "")
            raise DerivationError(f"{path.name}: sheet '{title}' has no cells (a chart sheet?)")
        # Some generators write a wrong <dimension>; read_only would cut the rows to it.
        sheet.reset_dimensions()
        yield sheet.title, _guarded(path, sheet.iter_rows(values_only=True))
    finally:
        workbook.close()


@contextmanager
def _open_xls_sheet(path: Path, sheet_name: str | None) -> Iterator[tuple[str, Iterator[Row]]]:
    import xlrd

    try:
        book = xlrd.open_workbook(str(path), on_demand=True)
    except Exception as exc:  # xlrd raises XLRDError, CompDocError, struct.error, ...
        raise DerivationError(f"{path.name}: cannot open the workbook: {exc}") from exc
    try:
        names: list[str] = book.sheet_names()
        try:
            if sheet_name is None:
                sheet = book.sheet_by_index(0)
            else:
                sheet = book.sheet_by_name(_pick_sheet(path, names, sheet_name))
        except DerivationError:
            raise
        except Exception as exc:
            raise DerivationError(f"{path.name}: cannot read the workbook: {exc}") from exc
        datemode: int = book.datemode
        rows = ([_xls_value(cell, datemode) for cell in row] for row in sheet.get_rows())
        yield str(sheet.name), _guarded(path, rows)
    finally:
        book.release_resources()


def _guarded(path: Path, rows: Iterable[Row]) -> Iterator[Row]:
    """Rows are read lazily: a sheet broken past its first rows fails here, not at opening."""
    try:
        yield from rows
    except Exception as exc:
        raise DerivationError(f"{path.name}: cannot read the workbook: {exc}") from exc


def _pick_sheet(path: Path, names: Sequence[str], wanted: str) -> str:
    """The sheet whose name matches, case-insensitive and ignoring surrounding spaces."""
    key = wanted.strip().casefold()
    for name in names:
        if name.strip().casefold() == key:
            return name
    raise DerivationError(
        f"{path.name}: worksheet '{wanted.strip()}' not found; the workbook has: {', '.join(names)}"
    )


def _xls_value(cell: xlrd.sheet.Cell, datemode: int) -> object:
    """An .xls cell as the value openpyxl would give for the same cell of an .xlsx."""
    import xlrd  # loaded by _open_xls_sheet: a lookup

    kind: int = cell.ctype
    value: object = cell.value
    if kind in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK):
        return None
    if kind == xlrd.XL_CELL_NUMBER and isinstance(value, float):
        # .xls stores every number as a float; an .xlsx read gives 5, not 5.0, for a 5.
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if kind == xlrd.XL_CELL_DATE:
        try:
            when: dt.datetime = xlrd.xldate.xldate_as_datetime(value, datemode)
        except (xlrd.xldate.XLDateError, ValueError, OverflowError):
            return value  # a date Excel itself cannot show: keep the serial number
        return when
    if kind == xlrd.XL_CELL_BOOLEAN:
        return bool(value)
    if kind == xlrd.XL_CELL_ERROR:
        error: str = xlrd.error_text_from_code.get(value, "#N/A")
        return error
    return value


def _has_data(row: Row) -> bool:
    return any(value is not None and (not isinstance(value, str) or value.strip()) for value in row)


class _Cells:
    """Cells for a write-only sheet: text stays text, everything else as openpyxl types it."""

    def __init__(self, sheet: WriteOnlyWorksheet) -> None:
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.cell.cell import (
            ERROR_CODES,
            ILLEGAL_CHARACTERS_RE,
        )

        self.sheet, self.cell_type = sheet, WriteOnlyCell
        self.error_codes, self.illegal = ERROR_CODES, ILLEGAL_CHARACTERS_RE

    def value(self, value: object) -> object:
        """A workbook value to write."""
        if isinstance(value, str) and value not in self.error_codes:
            return self.text(value)
        return value

    def text(self, text: str) -> object:
        """Text that stays text: openpyxl would write "=..." as a formula and "#N/A" as an
        error. Control characters XML cannot hold are dropped (openpyxl refuses them outright).
        """
        text = self.illegal.sub("", text)
        if text.startswith("=") or text in self.error_codes:
            cell = self.cell_type(self.sheet, value=text)
            cell.data_type = "s"
            return cell
        return text
