"""Validation of POST /analyze/file bodies, with errors shaped like FastAPI's 422 `detail`.

The deployed service is FastAPI + pydantic v2; clients parse its `detail`
list, so the reference reproduces its entries (type, loc, msg, input).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

FILE_TYPES = ("excel", "csv", "pdf")
_EXPECTED_FILE_TYPES = "'excel', 'csv' or 'pdf'"


@dataclass(frozen=True)
class AnalyzeRequest:
    file_url: str  # the request's `file_path` when it has one (a later generation's name)
    supplier_id: str
    file_type: str
    priority_sheet: str | None = None  # the sheet to read (the newer service's field)


def parse_analyze_request(body: bytes) -> tuple[AnalyzeRequest | None, list[dict[str, Any]]]:
    """The request, or None and the list of errors."""
    if not body.strip():
        return None, [_error("missing", ["body"], "Field required", None)]
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        position = getattr(exc, "pos", 0)
        return None, [
            _error("json_invalid", ["body", position], "JSON decode error", {}, error=str(exc))
        ]
    if not isinstance(data, dict):
        return None, [
            _error(
                "model_attributes_type",
                ["body"],
                "Input should be a valid dictionary or object to extract fields from",
                data,
            )
        ]

    # A later generation names the path `file_path`; when both are given, it wins.
    path_field = "file_path" if data.get("file_path") is not None else "file_url"
    errors: list[dict[str, Any]] = []
    for name in (path_field, "supplier_id", "file_type"):
        if name not in data:
            errors.append(_error("missing", ["body", name], "Field required", data))

    file_url = data.get(path_field)
    if path_field in data and not isinstance(file_url, str):
        errors.append(
            _error("string_type", ["body", path_field], "Input should be a valid string", file_url)
        )

    supplier_id = data.get("supplier_id")
    if "supplier_id" in data:
        if not isinstance(supplier_id, str):
            errors.append(
                _error(
                    "uuid_type",
                    ["body", "supplier_id"],
                    "UUID input should be a string, bytes or UUID object",
                    supplier_id,
                )
            )
        else:
            try:
                supplier_id = str(uuid.UUID(supplier_id))
            except ValueError as exc:
                errors.append(
                    _error(
                        "uuid_parsing",
                        ["body", "supplier_id"],
                        f"Input should be a valid UUID, {exc}",
                        supplier_id,
                        error=str(exc),
                    )
                )

    file_type = data.get("file_type")
    if "file_type" in data and file_type not in FILE_TYPES:
        errors.append(
            _error(
                "literal_error",
                ["body", "file_type"],
                f"Input should be {_EXPECTED_FILE_TYPES}",
                file_type,
                expected=_EXPECTED_FILE_TYPES,
            )
        )

    priority_sheet = data.get("priority_sheet")
    if priority_sheet is not None and not isinstance(priority_sheet, str):
        errors.append(
            _error(
                "string_type",
                ["body", "priority_sheet"],
                "Input should be a valid string",
                priority_sheet,
            )
        )

    if errors:
        return None, errors
    # Without errors every field is a string; str() tells the type checker so.
    request = AnalyzeRequest(
        file_url=str(file_url),
        supplier_id=str(supplier_id),
        file_type=str(file_type),
        priority_sheet=priority_sheet,
    )
    return request, []


def _error(kind: str, loc: list[Any], msg: str, value: Any, **ctx: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx:
        entry["ctx"] = ctx
    return entry
