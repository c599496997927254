"""Google Sheets: the public export link over plain HTTP, and the private path through gspread's
real service-account code (JWT signed with a real RSA key, token endpoint, Drive export) against
the loopback server."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import gspread
import openpyxl
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ingestion_assets.fetching.errors import PermanentFetchError, TransientFetchError
from ingestion_assets.fetching.fetcher import SourceFetcher
from ingestion_assets.fetching.google_sheets import (
    MAX_ATTEMPTS,
    XLSX_MIME,
    export_private_sheet,
    is_google_sheet_url,
    public_export_url,
    spreadsheet_id,
)
from ingestion_assets.fetching.streaming import FetchLimits
from ingestion_assets.fetching.url_guard import UrlGuard

from .conftest import SHEET_ID, bytes_received
from .loopback import (
    Drip,
    cut_short,
    endless,
    fail_then,
    file_body,
    gzipped,
    html_page,
    redirect,
    send,
    status,
)

assert len(SHEET_ID) == 44
LIMITS = FetchLimits(max_bytes=5 * 1024 * 1024, connect_timeout=2, read_timeout=2, deadline=10)


def workbook_bytes() -> bytes:
    """What Google's native export looks like to us: a multi-sheet workbook, merged cells,
    numbers as numbers."""
    workbook = openpyxl.Workbook()
    prices = workbook.active
    prices.title = "Цены"
    prices.append(["Артикул", "Товар", "Цена"])
    prices.append(["X-1", "Дрель", 4990])
    prices.append(["X-2", "Шуруповёрт", 7350.5])
    prices.merge_cells("A4:C4")
    prices["A4"] = "Цены с НДС"
    workbook.create_sheet("Остатки").append(["X-1", 12])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


def recording(handler, seen: list):
    """Wrap a handler: remember the request line's path and headers."""

    def wrapped(req):
        seen.append(
            {
                "path": req.path,
                "headers": {k.lower(): v for k, v in req.headers.items()},
                "method": req.command,
            }
        )
        handler(req)

    return wrapped


# --- URLs ------------------------------------------------------------------------------------


def test_sheet_id_and_export_link():
    url = f"https://docs.google.com/spreadsheets/d/{SHEET_ID}/edit#gid=0"
    assert is_google_sheet_url(url)
    assert spreadsheet_id(url) == SHEET_ID
    assert (
        public_export_url(url)
        == f"https://docs.google.com/spreadsheets/d/{SHEET_ID}/export?format=xlsx"
    )
    assert not is_google_sheet_url("https://example.com/prices.xlsx")
    assert not is_google_sheet_url(f"ftp://docs.google.com/spreadsheets/d/{SHEET_ID}/edit")
    with pytest.raises(PermanentFetchError, match="no '/spreadsheets/d/<id>'"):
        spreadsheet_id("https://docs.google.com/document/d/abc/edit")


def test_google_sheets_format_with_another_link_is_refused(fetcher, staging):
    with pytest.raises(PermanentFetchError, match="not a Google Sheets link"):
        fetcher.fetch("https://example.com/prices.xlsx", "google_sheets", staging)


# --- public sheets: the export link ----------------------------------------------------------


def test_public_sheet_is_fetched_through_its_export_link(server, fetcher, staging):
    body = workbook_bytes()
    seen: list = []
    server.route(f"/spreadsheets/d/{SHEET_ID}/export", recording(file_body(body, XLSX_MIME), seen))
    url = server.url(f"/spreadsheets/d/{SHEET_ID}/edit#gid=0")

    fetched = fetcher.fetch(url, "google_sheets", staging)

    assert [s["path"] for s in seen] == [f"/spreadsheets/d/{SHEET_ID}/export?format=xlsx"]
    assert server.hits[f"/spreadsheets/d/{SHEET_ID}/edit"] == 0
    assert fetched.source_type == "google_export"
    assert fetched.path.read_bytes() == body
    assert fetched.md5 == hashlib.md5(body).hexdigest()
    assert fetched.kind.extension == ".xlsx"
    workbook = openpyxl.load_workbook(fetched.path)
    assert workbook.sheetnames == ["Цены", "Остатки"]  # the whole spreadsheet, every sheet
    assert workbook["Цены"]["C3"].value == 7350.5
    assert entries(staging) == [fetched.path.name]


def test_private_sheet_without_credentials_gives_a_clear_html_error(server, fetcher, staging):
    """Google answers a private sheet's export link with a redirect to its login page."""
    server.route(
        f"/spreadsheets/d/{SHEET_ID}/export", redirect("/ServiceLogin?continue=https%3A%2F%2Fdocs")
    )
    server.route("/ServiceLogin", html_page())

    with pytest.raises(PermanentFetchError) as caught:
        fetcher.fetch(server.url(f"/spreadsheets/d/{SHEET_ID}/edit"), "google_sheets", staging)

    assert "HTML page instead of a spreadsheet" in str(caught.value)
    assert "credentials" in str(caught.value)
    assert server.hits["/ServiceLogin"] == 1
    assert entries(staging) == []


def test_public_export_that_is_not_a_workbook_is_refused(server, fetcher, staging):
    server.route(f"/spreadsheets/d/{SHEET_ID}/export", file_body(b"a,b\n1,2\n", "text/csv"))

    with pytest.raises(PermanentFetchError, match="expected an Excel workbook"):
        fetcher.fetch(server.url(f"/spreadsheets/d/{SHEET_ID}/edit"), "google_sheets", staging)
    assert entries(staging) == []


def test_public_export_is_ssrf_guarded(staging):
    fetcher = SourceFetcher(limits=LIMITS, guard=UrlGuard())
    with pytest.raises(PermanentFetchError, match="SSRF"):
        fetcher.fetch(f"http://10.0.0.7/spreadsheets/d/{SHEET_ID}/edit", "google_sheets", staging)


# --- private sheets: gspread with a service account ------------------------------------------


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_private_sheet_through_gspread_real_code(server, google, staging):
    body = workbook_bytes()
    seen: list = []
    server.route(google.export_path, recording(file_body(body, XLSX_MIME), seen))
    fetcher = SourceFetcher(
        limits=LIMITS, guard=UrlGuard(), google_credentials_path=google.path
    )  # no allow-list needed: the Drive API is not a sheet cell

    fetched = fetcher.fetch(google.sheet_url, "google_sheets", staging)

    assert fetched.source_type == "google_api"
    assert fetched.path.read_bytes() == body
    assert fetched.md5 == hashlib.md5(body).hexdigest()
    assert fetched.kind.extension == ".xlsx"
    assert entries(staging) == [fetched.path.name]

    # the export request: the Bearer token from the token endpoint, the XLSX mime type
    assert len(seen) == 1
    assert seen[0]["headers"]["authorization"] == "Bearer t"
    query = parse_qs(urlsplit(seen[0]["path"]).query)
    assert query["mimeType"] == [XLSX_MIME]

    # the token request: a JWT bearer grant, signed with the service account's own key
    assert len(google.tokens) == 1
    grant = google.tokens[0]
    assert grant["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    header, payload, signature = grant["assertion"][0].split(".")
    google.public_key.verify(
        _b64(signature),
        f"{header}.{payload}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    claims = json.loads(_b64(payload))
    assert claims["iss"] == "courier@courier-tests.iam.gserviceaccount.com"
    assert "https://www.googleapis.com/auth/drive" in claims["scope"].split()


def test_endless_429_is_bounded(server, google, staging):
    server.route(google.export_path, status(429, b'{"error": {"code": 429}}'))

    with pytest.raises(TransientFetchError) as caught:
        export_private_sheet(google.sheet_url, google.path, staging, LIMITS, backoff_s=0.01)

    assert server.hits[google.export_path] == MAX_ATTEMPTS
    assert f"HTTP 429 {MAX_ATTEMPTS} times in a row" in str(caught.value)
    assert caught.value.retryable is True
    assert entries(staging) == []


def test_a_few_503_then_the_export(server, google, staging):
    body = workbook_bytes()
    server.route(google.export_path, fail_then(MAX_ATTEMPTS - 1, 503, file_body(body, XLSX_MIME)))

    streamed = export_private_sheet(google.sheet_url, google.path, staging, LIMITS, backoff_s=0.01)

    assert streamed.temp_path.read_bytes() == body
    assert server.hits[google.export_path] == MAX_ATTEMPTS


@pytest.mark.parametrize("code", [404, 403, 401])
def test_not_shared_is_permanent_and_says_what_to_do(server, google, staging, code):
    server.route(google.export_path, status(code))

    with pytest.raises(PermanentFetchError) as caught:
        export_private_sheet(google.sheet_url, google.path, staging, LIMITS, backoff_s=0.01)

    assert f"HTTP {code}" in str(caught.value)
    assert "share the sheet with the service account" in str(caught.value)
    # No retry of ours; on a 401 google-auth itself refreshes the token and tries twice more.
    assert server.hits[google.export_path] == (3 if code == 401 else 1)
    assert entries(staging) == []


def test_a_rejected_service_account_is_permanent(server, google, staging):
    server.route(
        "/token",
        lambda req: (
            req.rfile.read(int(req.headers.get("Content-Length", 0))),
            send(
                req,
                400,
                b'{"error": "invalid_grant", "error_description": "Invalid JWT"}',
                "application/json",
            ),
        ),
    )
    server.route(google.export_path, file_body(workbook_bytes(), XLSX_MIME))

    with pytest.raises(PermanentFetchError, match="Google rejected the service account"):
        export_private_sheet(google.sheet_url, google.path, staging, LIMITS, backoff_s=0.01)

    assert server.hits[google.export_path] == 0
    assert entries(staging) == []


@pytest.mark.parametrize(
    "content",
    [None, "{not json", json.dumps({"type": "service_account", "project_id": "p"})],
    ids=["missing", "not-json", "fields-missing"],
)
def test_an_unreadable_service_account_file_is_permanent(tmp_path, staging, content):
    path = tmp_path / "sa.json"
    if content is not None:
        path.write_text(content)

    with pytest.raises(PermanentFetchError, match="cannot read the Google service account file"):
        export_private_sheet(
            f"https://docs.google.com/spreadsheets/d/{SHEET_ID}/edit", str(path), staging, LIMITS
        )


def test_an_export_over_the_cap_is_refused_from_its_length(server, google, staging):
    server.route(google.export_path, file_body(b"PK\x03\x04" + b"\0" * 2048, XLSX_MIME))
    small = FetchLimits(max_bytes=1024, connect_timeout=2, read_timeout=2, deadline=10)

    with pytest.raises(PermanentFetchError, match="file too large: the export is 2.0 KB"):
        export_private_sheet(google.sheet_url, google.path, staging, small, backoff_s=0.01)
    assert entries(staging) == []


def test_an_export_cut_short_is_transient(server, google, staging):
    server.route(google.export_path, cut_short(b"PK\x03\x04" + b"\0" * 100, claimed=50_000))

    with pytest.raises(TransientFetchError):
        export_private_sheet(google.sheet_url, google.path, staging, LIMITS, backoff_s=0.01)
    assert entries(staging) == []


def test_drive_api_unreachable_is_transient(server, google, staging, free_port, monkeypatch):
    monkeypatch.setattr(
        gspread.urls, "DRIVE_FILES_API_V3_URL", f"http://127.0.0.1:{free_port}/drive/v3/files"
    )

    with pytest.raises(TransientFetchError, match="cannot reach the Google Drive API"):
        export_private_sheet(google.sheet_url, google.path, staging, LIMITS, backoff_s=0.01)
    assert entries(staging) == []


def chunked(body: bytes, piece: int = 7919):
    """Transfer-Encoding: chunked, as Google's API servers send exports."""

    def handler(req):
        req.send_response(200)
        req.send_header("Content-Type", XLSX_MIME)
        req.send_header("Transfer-Encoding", "chunked")
        req.end_headers()
        for start in range(0, len(body), piece):
            part = body[start : start + piece]
            req.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        req.wfile.write(b"0\r\n\r\n")

    return handler


@pytest.mark.parametrize("serve", [file_body, chunked, gzipped], ids=["length", "chunked", "gzip"])
def test_a_large_export_is_kept_byte_for_byte(server, google, staging, serve, progress_every_chunk):
    buffer = io.BytesIO(workbook_bytes())
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("xl/media/image1.bin", os.urandom(3 * 1024 * 1024))
    body = buffer.getvalue()
    server.route(
        google.export_path, serve(body) if serve is not gzipped else gzipped(body, XLSX_MIME)
    )
    calls: list = []

    streamed = export_private_sheet(
        google.sheet_url, google.path, staging, LIMITS, lambda *a: calls.append(a), backoff_s=0.01
    )

    assert streamed.temp_path.read_bytes() == body
    assert streamed.md5 == hashlib.md5(body).hexdigest()
    assert calls[-1][0] == len(body)
    assert entries(staging) == [streamed.temp_path.name]


def test_a_slow_drip_export_is_stopped_by_the_deadline(server, google, staging):
    """1 KB every 50 ms for 10 s: only the 1 s deadline ends the export before its end."""
    drip = Drip(b"PK\x03\x04" + b"x" * 1020, delay=0.05, count=200, content_type=XLSX_MIME)
    server.route(google.export_path, drip)
    limits = FetchLimits(max_bytes=50 * 1024 * 1024, connect_timeout=2, read_timeout=2, deadline=1)

    with pytest.raises(TransientFetchError, match="download took longer than 1 s") as caught:
        export_private_sheet(google.sheet_url, google.path, staging, limits, backoff_s=0.01)

    assert bytes_received(str(caught.value)) < drip.size  # stopped part way through
    assert server.hits[google.export_path] == 1  # a deadline is not retried within the export
    assert entries(staging) == []


def test_an_endless_export_is_stopped_by_the_cap(server, google, staging):
    server.route(google.export_path, endless())

    with pytest.raises(PermanentFetchError, match="file too large: more than 5.0 MB"):
        export_private_sheet(google.sheet_url, google.path, staging, LIMITS, backoff_s=0.01)
    assert entries(staging) == []
