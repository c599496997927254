"""HTTP(S) downloads against a real server on 127.0.0.1: bytes kept exactly, failures explained,
nothing partial left behind."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import threading
import zipfile
from pathlib import Path

import openpyxl
import pytest

from ingestion_assets.fetching import streaming
from ingestion_assets.fetching.errors import (
    FetchError,
    PermanentFetchError,
    TransientFetchError,
)
from ingestion_assets.fetching.fetcher import SourceFetcher
from ingestion_assets.fetching.http_source import MAX_REDIRECTS, download_http
from ingestion_assets.fetching.streaming import FetchLimits
from ingestion_assets.fetching.url_guard import UrlGuard
from ingestion_assets.handoff.shared_volume import SharedVolume
from ingestion_assets.handoff.sidecar import FileMetadata

from .conftest import bytes_received, needs
from .loopback import (
    Drip,
    LoopbackServer,
    cut_short,
    endless,
    fail_then,
    file_body,
    gzipped,
    html_page,
    redirect,
    stall,
    status,
    without_length,
)

LOOPBACK_ONLY = UrlGuard(("127.0.0.1",))

CP1251_CSV = (
    "Артикул;Наименование;Цена, руб.;Остаток\r\n"
    "А-001;Болт М8х40 оцинкованный;12,50;1000\r\n"
    "Б-002;Гайка «Усиленная» М8;3,20;5 000\r\n"
    "В-003;Шайба плоская — ГОСТ 11371;0,75;0"
).encode("cp1251")


def xlsx_bytes(rows=None, sheets=("Прайс",)) -> bytes:
    workbook = openpyxl.Workbook()
    workbook.active.title = sheets[0]
    for name in sheets[1:]:
        workbook.create_sheet(name)
    sheet = workbook[sheets[0]]
    for row in rows or [
        ["Артикул", "Наименование", "Цена", "Дата"],
        ["A-1", "Кабель ВВГнг 3×2,5", 84.9, "2024-05-01"],
        ["A-2", "Автомат 16А", 415, "2024-05-02"],
    ]:
        sheet.append(row)
    sheet.merge_cells("A5:C5")
    sheet["A5"] = "Итого позиций: 2"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def entries(directory: Path) -> list[str]:
    """Every name in the folder, hidden temp files included."""
    return sorted(os.listdir(directory)) if directory.exists() else []


def hand_off(path: Path, tmp_path: Path, *, md5_hex: str, name: str, extension: str, kind="csv"):
    """Hand the staged file over to a shared folder, as the shared_file asset does."""
    volume = SharedVolume(tmp_path / "shared")
    metadata = FileMetadata(
        original_filename=name,
        source_url="http://127.0.0.1/redacted",
        source_type="http",
        supplier_id="0b6a1c8e-5a59-5d0e-9d43-4d3c3f0b2a10",
        supplier_name="Тест",
        file_type=kind,
        mime_type="application/octet-stream",
        file_size_bytes=path.stat().st_size,
        checksum_md5=md5_hex,
        downloaded_at="2024-05-01T00:00:00Z",
        downloaded_by="tests",
        job_id="run-1",
    )
    return volume.hand_off(path, metadata, extension)


def loopback_fetcher(**limits) -> SourceFetcher:
    base = {"max_bytes": 5 * 1024 * 1024, "connect_timeout": 2, "read_timeout": 2, "deadline": 10}
    return SourceFetcher(limits=FetchLimits(**{**base, **limits}), guard=LOOPBACK_ONLY)


# --- byte for byte ---------------------------------------------------------------------------


def test_cp1251_csv_is_kept_byte_for_byte(server, fetcher, staging, tmp_path):
    url = server.route("/prices.csv", file_body(CP1251_CSV, "text/csv; charset=windows-1251"))

    fetched = fetcher.fetch(url, "csv", staging)

    assert fetched.path.read_bytes() == CP1251_CSV
    assert fetched.md5 == md5(CP1251_CSV)
    assert fetched.size == len(CP1251_CSV)
    assert fetched.path == staging / f"{md5(CP1251_CSV)}.csv"
    assert fetched.kind.file_type == "csv"
    assert fetched.source_type == "http"
    assert fetched.content_type == "text/csv; charset=windows-1251"
    assert fetched.original_filename == "prices.csv"
    assert entries(staging) == [fetched.path.name]

    handed = hand_off(
        fetched.path,
        tmp_path,
        md5_hex=fetched.md5,
        name=fetched.original_filename,
        extension=".csv",
    )
    assert handed.path.read_bytes() == CP1251_CSV
    assert md5(handed.path.read_bytes()) == fetched.md5


def test_xlsx_is_kept_byte_for_byte(server, fetcher, staging, tmp_path):
    body = xlsx_bytes()
    url = server.route(
        "/download",
        file_body(
            body,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            {"Content-Disposition": 'attachment; filename="price 2024.xlsx"'},
        ),
    )

    fetched = fetcher.fetch(url, "excel", staging)

    assert fetched.path.read_bytes() == body
    assert fetched.md5 == md5(body)
    assert fetched.kind.extension == ".xlsx"
    assert fetched.original_filename == "price 2024.xlsx"
    workbook = openpyxl.load_workbook(fetched.path)
    assert workbook["Прайс"]["B2"].value == "Кабель ВВГнг 3×2,5"
    assert workbook["Прайс"]["C2"].value == 84.9
    assert "A5:C5" in {str(r) for r in workbook["Прайс"].merged_cells.ranges}

    handed = hand_off(
        fetched.path,
        tmp_path,
        md5_hex=fetched.md5,
        name=fetched.original_filename,
        extension=".xlsx",
        kind="excel",
    )
    assert handed.path.read_bytes() == body
    assert handed.path.name.endswith("_price_2024.xlsx")


def test_40_mb_random_binary_is_kept_byte_for_byte(server, staging, tmp_path, progress_every_chunk):
    body = os.urandom(40 * 1024 * 1024)
    url = server.route("/big/archive.bin", file_body(body))
    calls = []
    limits = FetchLimits(max_bytes=50 * 1024 * 1024, connect_timeout=2, read_timeout=5, deadline=30)

    download = download_http(url, staging, limits, LOOPBACK_ONLY, lambda *a: calls.append(a))

    streamed = download.streamed
    assert streamed.size == len(body)
    assert streamed.md5 == md5(body)
    assert streamed.temp_path.read_bytes() == body
    assert download.filename == "archive.bin"
    assert calls[-1] == (len(body), len(body))

    handed = hand_off(
        streamed.temp_path, tmp_path, md5_hex=streamed.md5, name="archive.bin", extension=".bin"
    )
    kept = handed.path.read_bytes()
    assert len(kept) == len(body)
    assert kept == body
    assert hashlib.md5(kept).hexdigest() == streamed.md5 == handed.metadata.checksum_md5


def test_gzip_content_encoding_keeps_the_decoded_body(server, fetcher, staging):
    body = ("sku,name,price\n" + "".join(f"{i},item {i},{i}.50\n" for i in range(5000))).encode()
    url = server.route("/prices.csv", gzipped(body))

    fetched = fetcher.fetch(url, "csv", staging)

    assert fetched.path.read_bytes() == body  # what `curl --compressed -o` saves
    assert fetched.md5 == md5(body)
    assert fetched.size == len(body)


def test_a_gzip_bomb_is_stopped_by_the_cap_on_decoded_bytes(server, staging):
    packed_size = len(gzip.compress(b"0" * (20 * 1024 * 1024)))
    assert packed_size < 100 * 1024  # small on the wire...
    url = server.route("/bomb.csv", gzipped(b"0" * (20 * 1024 * 1024)))

    with pytest.raises(PermanentFetchError, match="file too large") as caught:
        loopback_fetcher(max_bytes=1024 * 1024).fetch(url, "csv", staging)  # ...big unpacked

    assert "1.0 MB" in str(caught.value)
    assert entries(staging) == []


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ("attachment; filename*=UTF-8''%D0%9F%D1%80%D0%B0%D0%B9%D1%81.xlsx", "Прайс.xlsx"),
        (
            "attachment; filename=\"fallback.xlsx\"; filename*=UTF-8''%D0%9F%D1%80%D0%B0%D0%B9%D1%81%202024.xlsx",
            "Прайс 2024.xlsx",
        ),
        ('attachment; filename="Price list (May).xlsx"', "Price list (May).xlsx"),
        ("attachment; filename=plain.xlsx", "plain.xlsx"),
        ("inline", "export"),  # no name in the header: the URL's last segment
    ],
)
def test_filename_from_content_disposition(server, fetcher, staging, disposition, expected):
    url = server.route(
        "/export",
        file_body(xlsx_bytes(), "application/octet-stream", {"Content-Disposition": disposition}),
    )

    assert fetcher.fetch(url, "excel", staging).original_filename == expected


def test_filename_from_the_url_path(server, fetcher, staging):
    path = "/files/%D0%BF%D1%80%D0%B0%D0%B9%D1%81-%D0%BC%D0%B0%D0%B9.csv"
    url = server.route(path, file_body(CP1251_CSV, "text/csv"))

    fetched = fetcher.fetch(url + "?token=abc", "csv", staging)

    assert fetched.original_filename == "прайс-май.csv"


def test_no_name_anywhere_falls_back_to_a_generic_one(server, fetcher, staging):
    server.route("/", file_body(xlsx_bytes()))

    fetched = fetcher.fetch(server.url("/"), "url", staging)

    assert fetched.original_filename == "price-list.xlsx"


def download_with_progress(server, staging, served):
    """A loopback download of `served` (a route handler), and the progress calls it made."""
    calls: list[tuple[int, int | None]] = []
    download = download_http(
        server.route("/data.bin", served),
        staging,
        FetchLimits(max_bytes=10 * 1024 * 1024),
        LOOPBACK_ONLY,
        lambda *a: calls.append(a),
    )
    return download, calls


def test_progress_is_reported_with_bytes_so_far_and_total(server, staging, progress_every_chunk):
    body = os.urandom(3 * 1024 * 1024)

    _, calls = download_with_progress(server, staging, file_body(body))

    assert calls, "the progress callback was never called"
    assert calls[-1] == (len(body), len(body))
    done = [c[0] for c in calls]
    assert done == sorted(done)
    assert all(total == len(body) for _, total in calls)


def test_progress_without_content_length_has_no_total(server, staging, progress_every_chunk):
    body = os.urandom(300 * 1024)

    download, calls = download_with_progress(server, staging, without_length(body))

    assert download.streamed.temp_path.read_bytes() == body
    assert calls[-1] == (len(body), None)


def test_a_download_within_the_progress_interval_reports_no_progress(server, staging, monkeypatch):
    """Each line is an event in the instance; the materialization that follows says it all."""
    monkeypatch.setattr(streaming, "PROGRESS_EVERY_S", 3600.0)
    body = os.urandom(3 * 1024 * 1024)

    download, calls = download_with_progress(server, staging, file_body(body))

    assert download.streamed.size == len(body)
    assert calls == []


# --- failures: the right class, a message with the cause, nothing left behind ----------------


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (404, ["HTTP 404", "no file at this address"]),
        (403, ["HTTP 403", "access denied"]),
        (401, ["HTTP 401", "needs a login"]),
        (410, ["HTTP 410", "removed"]),
    ],
)
def test_client_errors_are_permanent(server, fetcher, staging, code, words):
    url = server.route("/prices.csv", status(code))

    with pytest.raises(PermanentFetchError) as caught:
        fetcher.fetch(url, "csv", staging)

    assert caught.value.retryable is False
    for word in words:
        assert word in str(caught.value)
    assert server.hits["/prices.csv"] == 1  # no retry here
    assert entries(staging) == []


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (500, ["HTTP 500", "Internal Server Error"]),
        (503, ["HTTP 503", "Service Unavailable"]),
        (502, ["HTTP 502"]),
        (429, ["HTTP 429"]),
    ],
)
def test_server_errors_are_transient(server, fetcher, staging, code, words):
    url = server.route("/prices.csv", status(code))

    with pytest.raises(TransientFetchError) as caught:
        fetcher.fetch(url, "csv", staging)

    assert caught.value.retryable is True
    for word in words:
        assert word in str(caught.value)
    assert entries(staging) == []


def test_a_transient_failure_then_success(server, fetcher, staging):
    """The retry belongs to the caller: the second call, after a 503, gets the file."""
    url = server.route("/prices.csv", fail_then(1, 503, file_body(CP1251_CSV, "text/csv")))

    with pytest.raises(TransientFetchError):
        fetcher.fetch(url, "csv", staging)
    assert entries(staging) == []
    assert fetcher.fetch(url, "csv", staging).path.read_bytes() == CP1251_CSV


def test_connection_refused_is_transient(free_port, fetcher, staging):
    with pytest.raises(TransientFetchError, match="cannot connect") as caught:
        fetcher.fetch(f"http://127.0.0.1:{free_port}/prices.csv", "csv", staging)

    assert caught.value.retryable is True
    assert entries(staging) == []


def test_read_timeout_is_transient(server, staging):
    """The server says nothing for 5 s: the read timeout ends the fetch before it answers."""
    answered = threading.Event()

    def silent_then_late(req):
        stall(5)(req)
        answered.set()

    url = server.route("/slow.csv", silent_then_late)

    with pytest.raises(TransientFetchError, match="timed out") as caught:
        loopback_fetcher(read_timeout=0.5).fetch(url, "csv", staging)

    assert "ReadTimeout" in str(caught.value)
    assert not answered.is_set()  # given up while the server was still silent
    assert server.hits["/slow.csv"] == 1  # and not asked again within the fetch
    assert entries(staging) == []


def test_too_large_by_content_length_is_refused_before_the_body(server, staging):
    """The server announces 100 MB and then sends nothing: only a refusal from the header
    ends this with a PermanentFetchError (reading the body would end in a read timeout, a
    TransientFetchError)."""
    release = threading.Event()

    def huge_then_silent(req):
        req.send_response(200)
        req.send_header("Content-Type", "text/csv")
        req.send_header("Content-Length", str(100 * 1024 * 1024))
        req.end_headers()
        req.wfile.flush()
        release.wait(10)

    url = server.route("/huge.csv", huge_then_silent)
    try:
        with pytest.raises(PermanentFetchError) as caught:
            loopback_fetcher(read_timeout=5).fetch(url, "csv", staging)
    finally:
        release.set()

    message = str(caught.value)
    assert "file too large" in message
    assert "Content-Length is 100.0 MB" in message
    assert "limit is 5.0 MB" in message
    assert "MAX_FILE_SIZE_MB" in message
    assert "timed out" not in message and caught.value.retryable is False
    assert server.hits["/huge.csv"] == 1
    assert entries(staging) == []


def test_too_large_with_content_length_and_a_real_body(server, fetcher, staging):
    url = server.route("/big.csv", file_body(b"a,b\n" * (2 * 1024 * 1024), "text/csv"))  # 8 MB

    with pytest.raises(PermanentFetchError, match="Content-Length is 8.0 MB"):
        fetcher.fetch(url, "csv", staging)

    assert entries(staging) == []


ONE_READ_MB = streaming.CHUNK_SIZE / 2**20  # the most one network read returns


def stopped_after_mb(message: str) -> float:
    found = re.search(r"stopped after (\d+\.\d) MB", message)
    assert found, message
    return float(found.group(1))


def test_too_large_without_content_length_is_stopped_while_streaming(server, fetcher, staging):
    url = server.route("/big.csv", without_length(b"a,b\n" * (2 * 1024 * 1024)))  # 8 MB

    with pytest.raises(PermanentFetchError) as caught:
        fetcher.fetch(url, "csv", staging)

    message = str(caught.value)
    assert "file too large: more than 5.0 MB" in message
    assert 5.0 < stopped_after_mb(message) <= 5.0 + ONE_READ_MB
    assert "Content-Length" not in message
    assert entries(staging) == []


def test_an_endless_body_is_stopped_by_the_cap(server, fetcher, staging):
    """Stopped by the cap within one network read past it, not by the 10 s deadline."""
    url = server.route("/endless.csv", endless())

    with pytest.raises(PermanentFetchError, match="file too large: more than 5.0 MB") as caught:
        fetcher.fetch(url, "csv", staging)

    # read no further than one read past the cap
    assert 5.0 < stopped_after_mb(str(caught.value)) <= 5.0 + ONE_READ_MB
    assert server.hits["/endless.csv"] == 1
    assert entries(staging) == []


def test_a_slow_drip_body_is_stopped_by_the_deadline(server, staging):
    """1 KB every 50 ms never trips the read timeout; the overall deadline must stop it. The
    body does end (after 10 s): without the deadline the fetch would succeed."""
    drip = Drip(b"x" * 1024, delay=0.05, count=200)
    url = server.route("/drip.csv", drip)

    with pytest.raises(TransientFetchError, match="download took longer than 1 s") as caught:
        loopback_fetcher(deadline=1, read_timeout=2).fetch(url, "csv", staging)

    assert caught.value.retryable is True
    assert bytes_received(str(caught.value)) < drip.size  # stopped part way through
    assert server.hits["/drip.csv"] == 1
    assert entries(staging) == []


def test_a_body_cut_short_is_transient(server, fetcher, staging):
    url = server.route("/cut.csv", cut_short(b"sku,price\n1,2\n", claimed=10_000))

    with pytest.raises(TransientFetchError) as caught:
        fetcher.fetch(url, "csv", staging)

    message = str(caught.value)
    assert (
        "before the body was complete: Connection broken: IncompleteRead(14 bytes read" in message
    )
    assert "('" not in message  # urllib3's sentence, not the repr of its arguments
    assert entries(staging) == []


@pytest.mark.parametrize("fmt", ["excel", "google_sheets", "csv", "url"])
def test_an_html_login_page_instead_of_a_spreadsheet(server, fetcher, staging, fmt):
    path = "/spreadsheets/d/1aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789abcdEF/export"
    server.route(path, html_page())
    url = server.url(path if fmt != "google_sheets" else path.replace("/export", "/edit"))

    with pytest.raises(PermanentFetchError) as caught:
        fetcher.fetch(url, fmt, staging)

    assert "HTML page instead of a spreadsheet" in str(caught.value)
    assert "shared publicly" in str(caught.value)
    assert entries(staging) == []


def test_an_html_page_with_a_bom_and_blank_lines_is_still_html(server, fetcher, staging):
    url = server.route(
        "/p.csv", html_page(b"\xef\xbb\xbf\r\n\r\n  <HTML><body>Log in</body></HTML>")
    )

    with pytest.raises(PermanentFetchError, match="HTML page"):
        fetcher.fetch(url, "csv", staging)
    assert entries(staging) == []


def test_an_empty_file_is_refused(server, fetcher, staging):
    url = server.route("/empty.csv", file_body(b"", "text/csv"))

    with pytest.raises(PermanentFetchError, match=r"empty \(0 bytes\)"):
        fetcher.fetch(url, "csv", staging)

    assert entries(staging) == []


def test_an_empty_file_without_content_length_is_refused(server, fetcher, staging):
    url = server.route("/empty.csv", without_length(b""))

    with pytest.raises(PermanentFetchError, match=r"empty \(0 bytes\)"):
        fetcher.fetch(url, "csv", staging)

    assert entries(staging) == []


@pytest.mark.parametrize(
    ("fmt", "body", "words"),
    [
        (
            "excel",
            b"sku,price\n1,2\n",
            "expected an Excel workbook for format 'excel', received CSV",
        ),
        ("csv", b"%PDF-1.7\n...", "expected a CSV file, received PDF"),
        ("url", b"\x00\x01\x02binary", "binary file that is not XLSX, XLS, PDF or CSV"),
    ],
)
def test_content_not_matching_the_format_is_refused(server, fetcher, staging, fmt, body, words):
    url = server.route("/file", file_body(body))

    with pytest.raises(PermanentFetchError) as caught:
        fetcher.fetch(url, fmt, staging)

    assert words in str(caught.value)
    assert entries(staging) == []


# --- redirects: followed by hand, every hop guarded ------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_to_an_allowed_path_is_followed(server, fetcher, staging, code):
    server.route("/files/new-prices.csv", file_body(CP1251_CSV, "text/csv"))
    url = server.route("/old", redirect("/files/new-prices.csv", code))

    fetched = fetcher.fetch(url, "csv", staging)

    assert fetched.path.read_bytes() == CP1251_CSV
    assert fetched.original_filename == "new-prices.csv"  # named after the final URL
    assert server.hits["/old"] == 1
    assert server.hits["/files/new-prices.csv"] == 1


def test_a_redirect_to_cloud_metadata_is_refused(server, fetcher, staging):
    url = server.route("/prices.csv", redirect("http://169.254.169.254/latest/meta-data/iam/"))

    with pytest.raises(PermanentFetchError) as caught:
        fetcher.fetch(url, "csv", staging)

    assert "169.254.169.254" in str(caught.value)
    assert "SSRF" in str(caught.value)
    assert entries(staging) == []


def test_a_redirect_to_ipv6_loopback_is_refused(server, fetcher, staging):
    url = server.route("/prices.csv", redirect(f"http://[::1]:{server.port}/secret"))

    with pytest.raises(PermanentFetchError, match="'::1' resolves to ::1"):
        fetcher.fetch(url, "csv", staging)

    assert server.hits["/secret"] == 0
    assert entries(staging) == []


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:99999/prices.csv",
        "http://xn--/prices.csv",
        "http://" + "a" * 64 + "/x",
        "http://127.0.0.1:abc/prices.csv",  # no port: refused by the guard, not the client
    ],
)
def test_a_redirect_to_an_invalid_url_is_refused_not_a_crash(server, fetcher, staging, location):
    """A port out of range or not a number, a host IDNA cannot encode: a permanent, worded
    refusal, not a transient error retried 3 times and then 3 runs more."""
    url = server.route("/prices.csv", redirect(location))

    with pytest.raises(PermanentFetchError, match="invalid (URL|host name)"):
        fetcher.fetch(url, "csv", staging)
    assert entries(staging) == []


def test_a_file_name_in_an_unknown_charset_does_not_fail_the_download(server, fetcher, staging):
    disposition = "attachment; filename*=x-no-such-charset''%D0%9F%D1%80%D0%B0%D0%B9%D1%81.csv"
    url = server.route(
        "/export", file_body(CP1251_CSV, "text/csv", {"Content-Disposition": disposition})
    )

    fetched = fetcher.fetch(url, "csv", staging)

    assert fetched.original_filename == "Прайс.csv"  # read as UTF-8
    assert entries(staging) == [fetched.path.name]


def test_a_redirect_to_a_file_url_is_refused(server, fetcher, staging):
    url = server.route("/prices.csv", redirect("file:///etc/passwd"))

    with pytest.raises(PermanentFetchError, match="'file://'"):
        fetcher.fetch(url, "csv", staging)
    assert entries(staging) == []


def test_the_guard_is_checked_on_every_hop_not_only_the_first(server, staging):
    """Hop 1 and 2 are allowed; hop 3 points at a private address the guard must refuse."""
    server.route("/a", redirect("/b"))
    server.route("/b", redirect("http://10.0.0.1/internal.csv"))
    fetcher = loopback_fetcher()

    with pytest.raises(PermanentFetchError, match="10.0.0.1"):
        fetcher.fetch(server.url("/a"), "csv", staging)

    assert server.hits["/a"] == 1 and server.hits["/b"] == 1
    assert entries(staging) == []


def test_a_redirect_loop_is_refused(server, fetcher, staging):
    server.route("/a", redirect("/b"))
    server.route("/b", redirect("/a"))

    with pytest.raises(PermanentFetchError, match="redirect loop") as caught:
        fetcher.fetch(server.url("/a"), "csv", staging)

    assert server.url("/a") in str(caught.value)
    assert entries(staging) == []


def test_too_many_redirects_are_refused(server, fetcher, staging):
    for i in range(MAX_REDIRECTS + 1):
        server.route(f"/r{i}", redirect(f"/r{i + 1}"))
    server.route(f"/r{MAX_REDIRECTS + 1}", file_body(CP1251_CSV, "text/csv"))

    with pytest.raises(
        PermanentFetchError, match=f"too many redirects \\(more than {MAX_REDIRECTS}\\)"
    ):
        fetcher.fetch(server.url("/r0"), "csv", staging)

    assert server.hits[f"/r{MAX_REDIRECTS + 1}"] == 0
    assert entries(staging) == []


def test_exactly_the_maximum_number_of_redirects_still_works(server, fetcher, staging):
    for i in range(MAX_REDIRECTS):
        server.route(f"/r{i}", redirect(f"/r{i + 1}"))
    server.route(f"/r{MAX_REDIRECTS}", file_body(CP1251_CSV, "text/csv"))

    assert fetcher.fetch(server.url("/r0"), "csv", staging).path.read_bytes() == CP1251_CSV


def test_the_first_url_is_guarded_too(staging):
    with pytest.raises(PermanentFetchError, match="169.254.169.254"):
        SourceFetcher(limits=FetchLimits(max_bytes=1024), guard=UrlGuard()).fetch(
            "http://169.254.169.254/latest/meta-data/", "url", staging
        )
    assert entries(staging) == []


def test_loopback_is_refused_without_the_allow_list(server, staging):
    url = server.route("/prices.csv", file_body(CP1251_CSV, "text/csv"))

    with pytest.raises(PermanentFetchError, match="SSRF"):
        SourceFetcher(limits=FetchLimits(max_bytes=1024 * 1024), guard=UrlGuard()).fetch(
            url, "csv", staging
        )

    assert server.hits["/prices.csv"] == 0  # refused before any request


def test_every_fetch_error_says_something(server, fetcher, staging):
    """A sanity net over the failure routes: a FetchError, with a non-empty message."""
    routes = {
        "/404": status(404),
        "/503": status(503),
        "/html": html_page(),
        "/empty": file_body(b""),
        "/cut": cut_short(b"x", 10),
        "/loop": redirect("/loop"),
    }
    for path, handler in routes.items():
        server.route(path, handler)
        with pytest.raises(FetchError) as caught:
            fetcher.fetch(server.url(path), "csv", staging)
        assert len(str(caught.value)) > 10, path
    assert entries(staging) == []


def test_a_large_xlsx_like_binary_goes_through_the_whole_fetcher(server, staging):
    """A 12 MB workbook whose bulk is random (incompressible) bytes: sniffed as XLSX, kept exact."""
    buffer = io.BytesIO(xlsx_bytes())
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("xl/media/image1.bin", os.urandom(12 * 1024 * 1024))
    body = buffer.getvalue()
    url = server.route("/big.xlsx", file_body(body))

    fetched = loopback_fetcher(max_bytes=20 * 1024 * 1024).fetch(url, "excel", staging)

    assert fetched.path.read_bytes() == body
    assert fetched.md5 == md5(body)


def test_a_gzip_bomb_is_stopped_within_a_piece_of_the_cap(server, staging):
    """A client's decoder inflates a network read whole (64 KB of zeros → 64 MB); the courier inflates
    in 1 MB pieces, so the cap stops the bomb within a piece of the limit."""
    url = server.route("/bomb.csv", gzipped(b"0" * (64 * 1024 * 1024)))

    with pytest.raises(PermanentFetchError, match=r"stopped after 2\.0 MB"):
        loopback_fetcher(max_bytes=1024 * 1024).fetch(url, "csv", staging)
    assert entries(staging) == []


def test_a_large_gzip_body_inflates_whole_in_pieces(server, fetcher, staging):
    body = ("sku;name;price\n" + "".join(f"{i};item {i};{i}.50\n" for i in range(150_000))).encode()
    assert len(body) > 3 * 1024 * 1024  # several pieces
    url = server.route("/prices.csv", gzipped(body))

    fetched = fetcher.fetch(url, "csv", staging)

    assert fetched.path.read_bytes() == body
    assert fetched.md5 == md5(body)


def test_a_body_that_is_not_gzip_is_a_worded_failure(server, fetcher, staging):
    url = server.route(
        "/prices.csv", file_body(b"sku;price\n" * 100, "text/csv", {"Content-Encoding": "gzip"})
    )

    with pytest.raises(PermanentFetchError, match="not valid gzip"):
        fetcher.fetch(url, "csv", staging)
    assert entries(staging) == []


def test_every_client_shares_one_verifying_tls_context():
    """Built once per process (≈20 ms of CPU to build one), and still strict."""
    import ssl

    from ingestion_assets.tls import tls_context

    context = tls_context()
    assert tls_context() is context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA bundle is loaded


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no CA signed."""
    if shutil.which("openssl") is None:
        needs("the openssl command, to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(self_signed):
    srv = LoopbackServer(tls=self_signed)
    yield srv
    srv.close()


def test_an_https_source_is_verified(tls_server, fetcher, staging):
    url = tls_server.route("/prices.csv", file_body(b"sku;price\n1;2\n", "text/csv"))

    with pytest.raises(TransientFetchError, match="certificate verify failed"):
        fetcher.fetch(url, "csv", staging)
    assert entries(staging) == []


def test_a_redirect_to_https_is_verified(server, tls_server, fetcher, staging):
    target = tls_server.route("/prices.csv", file_body(b"sku;price\n1;2\n", "text/csv"))
    url = server.route("/moved.csv", redirect(target))

    with pytest.raises(TransientFetchError, match="certificate verify failed"):
        fetcher.fetch(url, "csv", staging)
    assert server.hits["/moved.csv"] == 1
    assert entries(staging) == []


def test_a_plain_http_download_does_not_load_the_ca_bundle(server, fetcher, staging):
    """≈15 ms of CPU a supplier run on plain HTTP (a local mirror, a test) need not pay."""
    from ingestion_assets.tls import tls_context

    tls_context.cache_clear()
    url = server.route("/prices.csv", file_body(b"sku;price\n1;2\n", "text/csv"))

    assert fetcher.fetch(url, "csv", staging).size == len(b"sku;price\n1;2\n")
    assert tls_context.cache_info().currsize == 0
