"""Fetch one source by its format and keep the bytes in a staging folder, named by checksum."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .completeness import check_complete
from .content_check import FileKind, sniff
from .errors import PermanentFetchError
from .google_sheets import export_private_sheet, is_google_sheet_url, public_export_url
from .http_source import NotModified, download_http
from .local_files import copy_local_source
from .streaming import FetchLimits, ProgressCallback, StreamedBytes
from .url_guard import UrlGuard
from .validators import LastDownload, Validators


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
    validators: Validators = Validators()  # the source's, for the next fetch to send back
    unchanged_since: str | None = None  # set when the source answered 304: no body came

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
        self,
        source_url: str,
        fmt: str,
        dest_dir: Path,
        progress: ProgressCallback | None = None,
        last: LastDownload | None = None,
    ) -> FetchedFile:
        """Fetch `source_url` (format `fmt`) into `dest_dir`/<md5><ext>. Raises FetchError.

        With `last` (the source's last good download), an HTTP source is asked whether the file
        changed; if it says no (304), the staged copy is the file and nothing is transferred."""
        started = time.monotonic()
        content_type = None
        filename = None
        validators = Validators()
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
                ask = last if last is not None and last.usable_for(source_url) else None
                answer = self._http(public_export_url(source_url), dest_dir, progress, ask)
                if isinstance(answer, NotModified):
                    return self._unchanged(ask, answer, fmt, "google_export", started)
                streamed, content_type, filename, validators = answer
                source_type = "google_export"
        elif is_local_path(source_url) and fmt in ("csv", "excel"):
            local, streamed = copy_local_source(
                source_url, self.local_sources_root, dest_dir, self.limits, progress
            )
            source_type, filename = "local", local.name
        else:
            ask = last if last is not None and last.usable_for(source_url) else None
            answer = self._http(source_url, dest_dir, progress, ask)
            if isinstance(answer, NotModified):
                return self._unchanged(ask, answer, fmt, "http", started)
            streamed, content_type, filename, validators = answer
            source_type = "http"
        fetched = self._keep(streamed, fmt, dest_dir, filename, content_type, source_type, started)
        return dataclasses.replace(fetched, validators=validators)

    def _http(
        self, url: str, dest_dir: Path, progress: ProgressCallback | None, ask: LastDownload | None
    ) -> tuple[StreamedBytes, str | None, str | None, Validators] | NotModified:
        validators = ask.validators if ask else None
        download = download_http(url, dest_dir, self.limits, self.guard, progress, validators)
        if isinstance(download, NotModified):
            return download
        return download.streamed, download.content_type, download.filename, download.validators

    @staticmethod
    def _unchanged(
        last: LastDownload | None, answer: NotModified, fmt: str, source_type: str, started: float
    ) -> FetchedFile:
        """The source answered 304: its file is the last staged copy, checked just before."""
        assert last is not None  # validators are sent only with a last download
        return FetchedFile(
            path=last.path,
            size=last.size,
            md5=last.md5,
            kind=sniff(last.path, fmt),
            original_filename=last.original_filename,
            source_type=source_type,
            content_type=last.content_type,
            seconds=time.monotonic() - started,
            mtime_ns=last.path.stat().st_mtime_ns,
            validators=answer.validators,
            unchanged_since=last.downloaded_at,
        )

    @staticmethod
    def _keep(
        streamed: StreamedBytes,
        fmt: str,
        dest_dir: Path,
        filename: str | None,
        content_type: str | None,
        source_type: str,
        started: float,
    ) -> FetchedFile:
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
