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
    file_url: str
    supplier_id: str
    file_type: str


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

    errors: list[dict[str, Any]] = []
    for name in ("file_url", "supplier_id", "file_type"):
        if name not in data:
            errors.append(_error("missing", ["body", name], "Field required", data))

    file_url = data.get("file_url")
    if "file_url" in data and not isinstance(file_url, str):
        errors.append(
            _error("string_type", ["body", "file_url"], "Input should be a valid string", file_url)
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

    if errors:
        return None, errors
    return AnalyzeRequest(file_url=file_url, supplier_id=supplier_id, file_type=file_type), []


def _error(kind: str, loc: list[Any], msg: str, value: Any, **ctx: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx:
        entry["ctx"] = ctx
    return entry
