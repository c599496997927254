"""Google Sheets: the native XLSX export of the whole spreadsheet, never a rebuild from cells.

Public sheets go through the sheet's own export link (plain HTTP, SSRF-guarded). Private
sheets go through gspread's service-account session against the Drive export endpoint.
gspread's BackOffHTTPClient can recurse without bound on endless 429s, so the plain
HTTPClient is used and retries are bounded here.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import urlsplit

from .errors import PermanentFetchError, TransientFetchError
from .streaming import FetchLimits, ProgressCallback, StreamedBytes, human_size, stream_to_temp

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_SHEET_ID = re.compile(r"/spreadsheets/d/([A-Za-z0-9_-]{10,})")
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_ATTEMPTS = 4


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
    import urllib3
    from google.auth.exceptions import GoogleAuthError

    sheet_id = spreadsheet_id(url)
    started = time.monotonic()
    try:
        client = gspread.service_account(filename=credentials_path, http_client=gspread.HTTPClient)
    except (OSError, ValueError) as exc:
        raise PermanentFetchError(f"cannot read the Google service account file: {exc}") from exc
    export_url = f"{gspread.urls.DRIVE_FILES_API_V3_URL}/{sheet_id}/export"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            response = client.http_client.session.get(
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
            if response.status_code in RETRY_STATUSES and attempt < MAX_ATTEMPTS:
                time.sleep(backoff_s * 2 ** (attempt - 1))
                continue
            if response.status_code in RETRY_STATUSES:
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
    raise AssertionError("unreachable")


def _body_chunks(raw, size: int = 256 * 1024):
    """The decoded body as it arrives. Not `iter_content`: it blocks until a whole chunk is in,
    so a slow-drip body would reach the deadline check only once per chunk (minutes, hours)."""
    while chunk := raw.read1(size, decode_content=True):
        yield chunk
