"""Google Sheets: the native XLSX export of the whole spreadsheet, never a rebuild from cells.

Public sheets go through the sheet's own export link (plain HTTP, SSRF-guarded). Private
sheets go through gspread's service-account session against the Drive export endpoint.
gspread's BackOffHTTPClient can recurse without bound on endless 429s, so the plain
HTTPClient is used, and the export's retries are urllib3's, bounded, mounted on its session.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import urllib3
from urllib3.util.retry import Retry

from .errors import PermanentFetchError, TransientFetchError
from .streaming import FetchLimits, ProgressCallback, StreamedBytes, human_size, stream_to_temp

if TYPE_CHECKING:
    from urllib3.response import BaseHTTPResponse

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_SHEET_ID = re.compile(r"/spreadsheets/d/([A-Za-z0-9_-]{10,})")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_ATTEMPTS = 4
MAX_WAIT_S = 60  # the longest wait between two attempts, Retry-After included


class _ExportRetry(Retry):
    """urllib3's Retry, with the server's Retry-After capped at MAX_WAIT_S, so that a hostile
    header cannot hang a run (urllib3's own `retry_after_max` defaults to six hours and is
    recent; capping in parse_retry_after works on every urllib3 2.x), and honoured only on a
    status that is retried anyway (urllib3 would also retry a 413 that carries one)."""

    RETRY_AFTER_STATUS_CODES = RETRY_STATUSES & Retry.RETRY_AFTER_STATUS_CODES

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), MAX_WAIT_S)


def export_retry(backoff_s: float) -> Retry:
    """MAX_ATTEMPTS tries of the export GET while the answer is a retryable status.

    Waits: the server's Retry-After when it sends one, else urllib3's exponential backoff
    (the second try at once, then 2·backoff_s, 4·backoff_s …) plus up to backoff_s of random
    jitter; never more than MAX_WAIT_S. `backoff_s=0` waits not at all, not even for a
    Retry-After (tests). Connection and read errors are not retried here: they raise at once,
    as requests raises them, and the fetch as a whole is retried as a transient failure.
    After the last try the last answer is returned, not raised (raise_on_status=False).
    """
    return _ExportRetry(
        total=MAX_ATTEMPTS - 1,
        connect=0,
        read=False,
        other=0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        backoff_factor=backoff_s,
        backoff_jitter=backoff_s,
        backoff_max=MAX_WAIT_S,
        respect_retry_after_header=backoff_s > 0,
        raise_on_status=False,
    )


def spreadsheet_id(url: str) -> str:
    match = _SHEET_ID.search(url)
    if not match:
        raise PermanentFetchError("not a Google Sheets URL: no '/spreadsheets/d/<id>' in it")
    return match.group(1)


def is_google_sheet_url(url: str) -> bool:
    return bool(_SHEET_ID.search(url)) and urlsplit(url).scheme in ("http", "https")


def public_export_url(url: str) -> str:
    """The sheet's own XLSX export link, on the same host the sheet URL names."""
    parts = urlsplit(url)
    return (
        f"{parts.scheme}://{parts.netloc}/spreadsheets/d/{spreadsheet_id(url)}/export?format=xlsx"
    )


def export_private_sheet(
    url: str,
    credentials_path: str,
    dest_dir: Path,
    limits: FetchLimits,
    progress: ProgressCallback | None = None,
    backoff_s: float = 1.0,
) -> StreamedBytes:
    import gspread  # imported here: only private sheets need it
    import requests
    from google.auth.exceptions import GoogleAuthError
    from requests.adapters import HTTPAdapter

    sheet_id = spreadsheet_id(url)
    started = time.monotonic()
    try:
        client = gspread.service_account(filename=credentials_path, http_client=gspread.HTTPClient)
    except (OSError, ValueError) as exc:
        raise PermanentFetchError(f"cannot read the Google service account file: {exc}") from exc
    export_url = f"{gspread.urls.DRIVE_FILES_API_V3_URL}/{sheet_id}/export"
    session = client.http_client.session
    # Only the export's own URL: the session's other requests keep requests' defaults.
    session.mount(export_url, HTTPAdapter(max_retries=export_retry(backoff_s)))
    try:
        response = session.get(
            export_url,
            params={"mimeType": XLSX_MIME},
            stream=True,
            timeout=(limits.connect_timeout, limits.read_timeout),
        )
    except GoogleAuthError as exc:
        raise PermanentFetchError(f"Google rejected the service account: {exc}") from exc
    except requests.RequestException as exc:
        raise TransientFetchError(f"cannot reach the Google Drive API: {exc}") from exc
    with response:
        if response.status_code in RETRY_STATUSES:  # what urllib3 answered after its last try
            raise TransientFetchError(
                f"Google Drive answered HTTP {response.status_code} {MAX_ATTEMPTS} times in a row"
            )
        if response.status_code in (401, 403, 404):
            raise PermanentFetchError(
                f"Google Drive answered HTTP {response.status_code}: share the sheet with the "
                "service account, or check the sheet id"
            )
        if response.status_code != 200:
            raise PermanentFetchError(f"Google Drive answered HTTP {response.status_code}")
        # Content-Length counts encoded bytes; with gzip the decoded size is unknown up front.
        length = response.headers.get("content-length")
        encoded = response.headers.get("content-encoding", "identity") not in ("identity", "")
        expected = int(length) if length and length.isdigit() and not encoded else None
        if expected is not None and expected > limits.max_bytes:
            raise PermanentFetchError(
                f"file too large: the export is {human_size(expected)}, "
                f"the limit is {human_size(limits.max_bytes)} (MAX_FILE_SIZE_MB)"
            )
        try:
            return stream_to_temp(
                _body_chunks(response.raw),
                dest_dir,
                limits,
                expected_size=expected,
                started=started,
                progress=progress,
            )
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise TransientFetchError(f"the Google Drive export broke off: {exc}") from exc


def _body_chunks(raw: BaseHTTPResponse, size: int = 256 * 1024) -> Iterator[bytes]:
    """The decoded body as it arrives. Not `iter_content`: it blocks until a whole chunk is in,
    so a slow-drip body would reach the deadline check only once per chunk (minutes, hours)."""
    while chunk := raw.read1(size, decode_content=True):
        yield chunk
