"""Fetch one source by its format and keep the bytes in a staging folder, named by checksum."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .completeness import check_complete
from .content_check import FileKind, sniff
from .errors import PermanentFetchError
from .google_sheets import export_private_sheet, is_google_sheet_url, public_export_url
from .http_source import download_http
from .local_files import copy_local_source
from .streaming import FetchLimits, ProgressCallback, StreamedBytes
from .url_guard import UrlGuard


@dataclass(frozen=True)
class FetchedFile:
    path: Path
    size: int
    md5: str
    kind: FileKind
    original_filename: str
    source_type: str  # how the bytes were fetched: http | google_export | google_api | local
    content_type: str | None
    seconds: float
    mtime_ns: int | None = None  # the staged file's mtime when its bytes were hashed

    @property
    def mb_per_s(self) -> float:
        return self.size / 1024 / 1024 / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class SourceFetcher:
    limits: FetchLimits
    guard: UrlGuard
    local_sources_root: str | None = None
    google_credentials_path: str | None = None

    def fetch(
        self, source_url: str, fmt: str, dest_dir: Path, progress: ProgressCallback | None = None
    ) -> FetchedFile:
        """Fetch `source_url` (format `fmt`) into `dest_dir`/<md5><ext>. Raises FetchError."""
        started = time.monotonic()
        content_type = None
        filename = None
        if fmt == "google_sheets":
            if not is_google_sheet_url(source_url):
                raise PermanentFetchError(
                    "format is google_sheets but the URL is not a Google Sheets link"
                )
            if self.google_credentials_path:
                streamed = export_private_sheet(
                    source_url, self.google_credentials_path, dest_dir, self.limits, progress
                )
                source_type = "google_api"
            else:
                streamed, content_type, filename = self._http(
                    public_export_url(source_url), dest_dir, progress
                )
                source_type = "google_export"
        elif is_local_path(source_url) and fmt in ("csv", "excel"):
            local, streamed = copy_local_source(
                source_url, self.local_sources_root, dest_dir, self.limits, progress
            )
            source_type, filename = "local", local.name
        else:
            streamed, content_type, filename = self._http(source_url, dest_dir, progress)
            source_type = "http"
        return self._keep(streamed, fmt, dest_dir, filename, content_type, source_type, started)

    def _http(self, url: str, dest_dir: Path, progress):
        download = download_http(url, dest_dir, self.limits, self.guard, progress)
        return download.streamed, download.content_type, download.filename

    @staticmethod
    def _keep(streamed: StreamedBytes, fmt, dest_dir, filename, content_type, source_type, started):
        try:
            kind = sniff(streamed.temp_path, fmt)
            check_complete(streamed.temp_path, kind)  # a body cut short never leaves staging
            final = dest_dir / f"{streamed.md5}{kind.extension}"
            os.replace(streamed.temp_path, final)
        except BaseException:
            streamed.temp_path.unlink(missing_ok=True)
            raise
        return FetchedFile(
            path=final,
            size=streamed.size,
            md5=streamed.md5,
            kind=kind,
            original_filename=filename or f"price-list{kind.extension}",
            source_type=source_type,
            content_type=content_type,
            seconds=time.monotonic() - started,
            mtime_ns=streamed.mtime_ns,
        )


def is_local_path(source: str) -> bool:
    """A path, not a URL: no scheme (a one-letter 'scheme' is a Windows drive)."""
    scheme = urlsplit(source).scheme
    return not scheme or len(scheme) == 1
