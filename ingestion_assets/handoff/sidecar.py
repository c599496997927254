"""The `.meta.json` sidecar ml-analyze reads beside each handed-off file."""

from __future__ import annotations

from pydantic import BaseModel, field_validator

from .naming import display_safe

SIDECAR_SUFFIX = ".meta.json"


class FileMetadata(BaseModel):
    original_filename: str
    source_url: str  # credentials and tokens redacted
    source_type: str
    supplier_id: str
    supplier_name: str
    file_type: str  # excel | csv | pdf
    mime_type: str
    file_size_bytes: int
    checksum_md5: str
    downloaded_at: str  # ISO 8601, UTC
    downloaded_by: str
    job_id: str  # the Dagster run id
    # A file the courier derived for ml-analyze (a CSV as XLSX, one sheet of a workbook); the
    # original is handed off beside it, unchanged. Absent on originals.
    derived_from_file: str | None = None
    derived_from_md5: str | None = None
    derivation: str | None = None

    @field_validator("*", mode="after")
    @classmethod
    def _safe_to_display(cls, value: object) -> object:
        """A hostile Content-Disposition or sheet cell must not reach a screen that reads the
        sidecar with NUL, control or bidi characters in it."""
        return display_safe(value) if isinstance(value, str) else value

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2, exclude_none=True).encode("utf-8")
