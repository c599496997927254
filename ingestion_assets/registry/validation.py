"""Rows of the master sheet → suppliers. Every refused row is reported with its reason."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

from ..fetching.fetcher import is_local_path
from ..fetching.google_sheets import is_google_sheet_url
from .identity import derived_supplier_id, supplier_key
from .models import Registry, RowProblem, Supplier
from .tables import MasterSheetError

MAX_NAME_LENGTH = 200
MAX_URL_LENGTH = 2048

COLUMN_ALIASES = {
    "name": ("name", "supplier", "supplier_name", "company", "название", "поставщик"),
    "source_url": ("source_url", "url", "link", "source", "ссылка"),
    "format": ("format", "type", "source_type", "формат"),
    "active": ("active", "enabled", "is_active", "активен"),
    "use_ml_processing": ("use_ml_processing", "use_ml", "ml_processing", "ml"),
    "sheet_name": ("sheet_name", "sheet", "worksheet", "лист"),
    "notes": ("notes", "note", "comment", "comments", "примечание"),
    "supplier_id": ("supplier_id", "uuid", "id"),
}
REQUIRED = ("name", "source_url")
FORMAT_ALIASES = {
    "google_sheets": (
        "google_sheets",
        "google_sheet",
        "google",
        "gsheet",
        "gsheets",
        "google sheets",
    ),
    "csv": ("csv",),
    "excel": ("excel", "xlsx", "xls"),
    "url": ("url", "http", "https", "link"),
}
TRUE_WORDS = {"true", "yes", "y", "1", "on", "x", "✓", "да", "д"}
FALSE_WORDS = {"false", "no", "n", "0", "off", "нет", "н"}


class RowError(ValueError):
    pass


def _normalize_header(header: str) -> str:
    return re.sub(r"[\s\-]+", "_", header.replace("\ufeff", "").strip().lower())


def map_columns(header: list[str]) -> dict[str, int]:
    """Field → column index, by name or alias. Raises MasterSheetError if a required one is absent."""
    normalized = [_normalize_header(h) for h in header]
    mapping: dict[str, int] = {}
    for field, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in normalized:
                mapping[field] = normalized.index(alias)
                break
    missing = [f for f in REQUIRED if f not in mapping]
    if missing:
        found = ", ".join(repr(h) for h in header if h.strip()) or "none"
        raise MasterSheetError(
            f"the master sheet has no column for {', '.join(missing)} "
            f"(accepted names: {', '.join('/'.join(COLUMN_ALIASES[m][:3]) for m in missing)}); "
            f"columns found: {found}"
        )
    return mapping


def build_registry(rows: list[list[str]]) -> Registry:
    """The first non-empty row is the header; each later row is a supplier or a reported problem."""
    start = next((i for i, row in enumerate(rows) if any(cell.strip() for cell in row)), None)
    if start is None:
        raise MasterSheetError("the master sheet is empty")
    header = rows[start]
    columns = map_columns(header)
    suppliers: list[Supplier] = []
    problems: list[RowProblem] = []
    seen_keys: dict[str, int] = {}
    seen_ids: dict[str, int] = {}
    for index in range(start + 1, len(rows)):
        row_number = index + 1
        cells = {field: _cell(rows[index], col) for field, col in columns.items()}
        if not any(cells.values()):
            continue
        try:
            supplier = _supplier_from_row(cells, row_number)
            for seen, value, what in (
                (seen_keys, supplier.key, "name"),
                (seen_ids, supplier.supplier_id, "supplier_id"),
            ):
                if value in seen:
                    raise RowError(f"duplicate supplier: same {what} as row {seen[value]}")
        except RowError as exc:
            problems.append(
                RowProblem(row=row_number, supplier=cells.get("name") or None, reason=str(exc))
            )
            continue
        seen_keys[supplier.key] = row_number
        seen_ids[supplier.supplier_id] = row_number
        suppliers.append(supplier)
    return Registry(
        suppliers=suppliers, problems=problems, columns=[h for h in header if h.strip()]
    )


def _cell(row: list[str], col: int) -> str:
    return row[col].strip() if col < len(row) and row[col] is not None else ""


def _supplier_from_row(cells: dict[str, str], row_number: int) -> Supplier:
    name = " ".join(cells["name"].split())
    if not name:
        raise RowError("missing supplier name")
    if len(name) > MAX_NAME_LENGTH:
        raise RowError(f"supplier name longer than {MAX_NAME_LENGTH} characters")
    url = cells["source_url"]
    try:
        fmt = parse_format(cells.get("format", ""), url)
        validate_source(url, fmt)
    except RowError:
        raise
    except ValueError as exc:  # urlsplit refuses some strings outright: 'http://[::1'
        raise RowError(f"invalid source URL: {exc}") from exc
    key = supplier_key(name)
    return Supplier(
        key=key,
        supplier_id=_supplier_id(cells.get("supplier_id", ""), key),
        name=name,
        source_url=url,
        format=fmt,
        active=_parse_bool(cells.get("active", ""), "active"),
        use_ml_processing=_parse_bool(cells.get("use_ml_processing", ""), "use_ml_processing"),
        sheet_name=cells.get("sheet_name") or None,
        notes=(cells.get("notes") or None),
        row=row_number,
    )


def parse_format(raw: str, url: str) -> str:
    value = raw.strip().lower()
    if not value:
        return infer_format(url)
    for fmt, aliases in FORMAT_ALIASES.items():
        if value in aliases:
            return fmt
    raise RowError(f"unknown format '{raw[:40]}' (expected google_sheets, csv, excel or url)")


def infer_format(url: str) -> str:
    if is_google_sheet_url(url):
        return "google_sheets"
    path = urlsplit(url).path.lower()
    if path.endswith(".csv"):
        return "csv"
    if path.endswith((".xlsx", ".xls")):
        return "excel"
    return "url"


def validate_source(url: str, fmt: str) -> None:
    if not url:
        raise RowError("missing source URL")
    if len(url) > MAX_URL_LENGTH:
        raise RowError(f"source URL longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise RowError("invalid source: it contains control characters")
    if is_local_path(url) and fmt in ("csv", "excel"):
        return  # a local path may hold spaces; where it may point is checked when it is read
    if any(ch.isspace() for ch in url):
        raise RowError("invalid source URL: it contains spaces")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise RowError(f"invalid source URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"'{scheme}://'" if scheme else "none"
        raise RowError(f"invalid source URL: unsupported scheme {shown} (use http or https)")
    if not parts.hostname:
        raise RowError("invalid source URL: no host")
    if fmt == "google_sheets" and not is_google_sheet_url(url):
        raise RowError(
            "invalid source URL: format google_sheets needs a '/spreadsheets/d/<id>' link"
        )


def _parse_bool(raw: str, column: str) -> bool:
    value = raw.strip().lower()
    if not value:
        return True
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise RowError(f"{column} '{raw[:20]}' is not yes/no")


def _supplier_id(raw: str, key: str) -> str:
    """The sheet's supplier_id (a UUID), or the one derived from the key when blank."""
    if not raw:
        return derived_supplier_id(key)
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        raise RowError(f"supplier_id '{raw[:60]}' is not a UUID") from exc
