"""What did we actually receive? Sniffed from the first bytes, never trusted from the name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import PermanentFetchError


@dataclass(frozen=True)
class FileKind:
    file_type: str  # what ml-analyze is told: excel | csv | pdf
    extension: str
    mime_type: str


XLSX = FileKind(
    "excel", ".xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
)
XLS = FileKind("excel", ".xls", "application/vnd.ms-excel")
PDF = FileKind("pdf", ".pdf", "application/pdf")
CSV = FileKind("csv", ".csv", "text/csv")

_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<script")


def sniff(path: Path, expected_format: str) -> FileKind:
    """Classify the file, or raise when it cannot be a price list.

    `expected_format` is the master sheet's format: google_sheets and excel must be a
    workbook; csv must be text; url may be any of the three.
    """
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not head:
        raise PermanentFetchError("the file is empty (0 bytes)")
    if head.startswith(b"PK\x03\x04"):
        kind = XLSX
    elif head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        kind = XLS
    elif head.startswith(b"%PDF-"):
        kind = PDF
    elif _looks_like_html(head):
        raise PermanentFetchError(
            "received an HTML page instead of a spreadsheet (a login or error page: "
            "is the file shared publicly, or are credentials needed?)"
        )
    elif b"\x00" in head:
        raise PermanentFetchError("received a binary file that is not XLSX, XLS, PDF or CSV")
    else:
        kind = CSV
    if expected_format in ("google_sheets", "excel") and kind.file_type != "excel":
        raise PermanentFetchError(
            f"expected an Excel workbook for format '{expected_format}', received {kind.file_type.upper()}"
        )
    if expected_format == "csv" and kind is not CSV:
        raise PermanentFetchError(f"expected a CSV file, received {kind.extension[1:].upper()}")
    return kind


def _looks_like_html(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return any(text.startswith(marker) for marker in _HTML_MARKERS) or b"<html" in text[:1024]
