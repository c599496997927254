"""Fetch the master sheet (through the same guarded fetcher as suppliers' files) and read it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..fetching.fetcher import FetchedFile, SourceFetcher, is_local_path
from .models import Registry
from .tables import MasterSheetError, read_csv_rows, read_workbook_rows
from .validation import build_registry, infer_format


def load_master_sheet(
    url: str, worksheet: str, fetcher: SourceFetcher, staging_dir: Path
) -> tuple[Registry, FetchedFile]:
    if is_local_path(url):
        # The master sheet's own path is the operator's setting, not a sheet cell: trust its folder.
        fetcher = dataclasses.replace(fetcher, local_sources_root=str(Path(url).resolve().parent))
    fmt = infer_format(url)
    fetched = fetcher.fetch(url, "csv" if fmt == "url" and is_local_path(url) else fmt, staging_dir)
    if fetched.kind.file_type == "csv":
        rows = read_csv_rows(fetched.path.read_bytes())
    elif fetched.kind.file_type == "excel":
        rows = read_workbook_rows(fetched.path, worksheet)
    else:
        raise MasterSheetError(
            f"the master sheet is a {fetched.kind.file_type.upper()}, not a table"
        )
    return build_registry(rows), fetched
