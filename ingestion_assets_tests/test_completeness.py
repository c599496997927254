"""A file that arrived whole as far as HTTP could tell, but is not whole, is refused before it
leaves staging: real workbooks, documents and gzip streams built here, cut short, and served
by the loopback server with `Connection: close` and no Content-Length."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import struct
import zipfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import openpyxl  # type: ignore[import-untyped]
import pytest
import xlrd  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion_assets.fetching.completeness import check_complete
from ingestion_assets.fetching.content_check import PDF, XLS, XLSX, FileKind
from ingestion_assets.fetching.errors import FetchError, PermanentFetchError, TransientFetchError
from ingestion_assets.fetching.fetcher import SourceFetcher

from .loopback import LoopbackServer, without_length

Rows = list[list[object]]
HEADER: list[object] = ["Артикул", "Наименование", "Цена"]
ROWS: Rows = [HEADER] + [[f"A-{n}", f"Кабель ВВГнг 3×{n}", n * 1.5] for n in range(1, 301)]


# --- real files, built here ------------------------------------------------------------------


def xlsx_bytes(rows: Rows = ROWS) -> bytes:
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes], stored: bool = False) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


DOCX = zip_bytes(
    {
        "[Content_Types].xml": b'<?xml version="1.0"?><Types/>',
        "_rels/.rels": b'<?xml version="1.0"?><Relationships/>',
        "word/document.xml": b'<?xml version="1.0"?><w:document/>',
    }
)
PLAIN_ZIP = zip_bytes({"prices/readme.txt": b"see the attached price list", "a.csv": b"a;b\n"})


def biff8(rows: Rows) -> bytes:
    """An Excel 97 workbook stream (BIFF8) with one sheet: what xlrd reads inside an .xls."""

    def record(kind: int, data: bytes = b"") -> bytes:
        return struct.pack("<HH", kind, len(data)) + data

    def bof(substream: int) -> bytes:
        return record(0x0809, struct.pack("<HHHHII", 0x0600, substream, 0, 0, 0, 0))

    xf = record(0x00E0, struct.pack("<HHHBBBBIiH", 0, 0, 0x0001, 0x20, 0, 0, 0, 0, 0, 0x20C0))

    def globals_stream(sheet_offset: int) -> bytes:
        boundsheet = record(0x0085, struct.pack("<IBBBB", sheet_offset, 0, 0, 6, 0) + b"Sheet1")
        return bof(0x0005) + xf + boundsheet + record(0x000A)

    cells = b""
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, str):
                label = struct.pack("<HHHHB", r, c, 0, len(value), 1) + value.encode("utf-16-le")
                cells += record(0x0204, label)
            else:
                assert isinstance(value, int | float)
                cells += record(0x0203, struct.pack("<HHHd", r, c, 0, float(value)))
    return globals_stream(len(globals_stream(0))) + bof(0x0010) + cells + record(0x000A)


END, FREE, FAT_SECTOR, DIFAT_SECTOR, NONE = (
    0xFFFFFFFE,
    0xFFFFFFFF,
    0xFFFFFFFD,
    0xFFFFFFFC,
    0xFFFFFFFF,
)


def compound_file(streams: dict[str, bytes]) -> bytes:
    """A version 3 OLE2 compound file (512-byte sectors) holding `streams` in its root, as
    Excel 97 writes an .xls: streams under 4096 bytes in the mini stream, the rest in sectors
    of their own. Layout: FAT, directory, mini FAT, mini stream, then each large stream."""
    sector, mini = 512, 64
    small = {n: d for n, d in streams.items() if len(d) < 4096}
    mini_stream = b""
    mini_fat: list[int] = []
    mini_start: dict[str, int] = {}
    for name, data in small.items():
        count = -(-len(data) // mini)
        mini_start[name] = len(mini_fat) if count else END
        mini_fat += [len(mini_fat) + i + 1 for i in range(count - 1)] + [END] * (count > 0)
        mini_stream += data.ljust(count * mini, b"\0")

    def sectors(size: int) -> int:
        return -(-size // sector)

    names = list(streams)
    regions = [  # (what, number of sectors), in file order after the FAT
        ("dir", sectors((1 + len(names)) * 128)),
        ("minifat", sectors(len(mini_fat) * 4)),
        ("ministream", sectors(len(mini_stream))),
    ] + [(n, sectors(len(streams[n]))) for n in names if n not in small]
    n_fat, n_difat = 1, 0  # the header lists 109 FAT sectors, each DIFAT sector 127 more
    while n_fat * 128 < n_fat + n_difat + sum(count for _, count in regions):
        n_fat += 1
        n_difat = max(0, -(-(n_fat - 109) // 127))
    fat, start = [FAT_SECTOR] * n_fat + [DIFAT_SECTOR] * n_difat, {}
    for what, count in regions:
        start[what] = len(fat) if count else END
        fat += [len(fat) + i + 1 for i in range(count - 1)] + [END] * (count > 0)
    fat += [FREE] * (n_fat * 128 - len(fat))

    def entry(name: str, kind: int, child: int, right: int, first: int, size: int) -> bytes:
        encoded = (name + "\0").encode("utf-16-le")
        return (
            encoded.ljust(64, b"\0")
            + struct.pack("<HBBIII", len(encoded), kind, 1, NONE, right, child)
            + bytes(16 + 4 + 16)  # class id, state bits, times
            + struct.pack("<IQ", first, size)
        )

    directory = entry(
        "Root Entry", 5, 1 if names else NONE, NONE, start["ministream"], len(mini_stream)
    )
    for i, name in enumerate(names):
        right = i + 2 if i + 1 < len(names) else NONE
        first = mini_start[name] if name in small else start[name]
        directory += entry(name, 2, NONE, right, first, len(streams[name]))
    header = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        + bytes(16)
        + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
        + bytes(6)
        + struct.pack("<IIII", 0, n_fat, start["dir"], 0)
        + struct.pack("<IIII", 4096, start["minifat"], sectors(len(mini_fat) * 4), END)
        + struct.pack("<I", n_difat)
        + struct.pack("<109I", *(list(range(n_fat)) + [FREE] * 109)[:109])
    )
    if n_difat:  # the first DIFAT sector's id, in place of END above
        header = header[:68] + struct.pack("<I", n_fat) + header[72:]
    difat = b""
    for k in range(n_difat):
        ids = list(range(109 + 127 * k, min(109 + 127 * (k + 1), n_fat)))
        after = n_fat + k + 1 if k + 1 < n_difat else END
        difat += struct.pack("<128I", *(ids + [FREE] * (127 - len(ids)) + [after]))
    own = {
        "dir": directory,
        "minifat": struct.pack(f"<{len(mini_fat)}I", *mini_fat),
        "ministream": mini_stream,
    }
    body = struct.pack(f"<{len(fat)}I", *fat) + difat
    for what, count in regions:
        body += (own[what] if what in own else streams[what]).ljust(count * sector, b"\0")
    return header + body


XLS_BYTES = compound_file({"Workbook": biff8(ROWS), "\x05SummaryInformation": bytes(200)})
SMALL_XLS = compound_file({"Workbook": biff8(ROWS[:3])})  # under 4096: in the mini stream
# 10 MB: its FAT needs more sectors than the header lists, the rest are in DIFAT sectors.
LARGE_XLS = compound_file({"Workbook": biff8(ROWS) + bytes(10 * 1024 * 1024)})
DOC = compound_file({"WordDocument": bytes(5000), "1Table": bytes(4200)})

PDF_BYTES = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
    + b"% padding\n" * 300
    + b"trailer << /Root 1 0 R >>\nstartxref\n0\n%%EOF"
)


def check(tmp_path: Path, data: bytes, kind: FileKind) -> None:
    path = tmp_path / "staged"
    path.write_bytes(data)
    check_complete(path, kind)


def xlrd_rows(data: bytes) -> list[list[object]]:
    sheet = xlrd.open_workbook(file_contents=data).sheet_by_index(0)
    return [sheet.row_values(r) for r in range(sheet.nrows)]


# --- XLSX --------------------------------------------------------------------------------------


def test_a_whole_xlsx_is_accepted(tmp_path: Path) -> None:
    check(tmp_path, xlsx_bytes(), XLSX)


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda n: 5 * 1024, id="5 KB, the issue's"),
        pytest.param(lambda n: n // 2, id="half"),
        pytest.param(lambda n: n - 22, id="before the end record"),
        pytest.param(lambda n: n - 1, id="one byte short"),
        pytest.param(lambda n: 40, id="inside the first member"),
    ],
)
def test_an_xlsx_cut_short_is_incomplete(tmp_path: Path, cut: Callable[[int], int]) -> None:
    body = xlsx_bytes()
    with pytest.raises(TransientFetchError) as caught:
        check(tmp_path, body[: cut(len(body))], XLSX)
    assert (
        str(caught.value) == "the XLSX is incomplete: its central directory is missing (cut short?)"
    )
    assert caught.value.retryable


def test_an_xlsx_cut_right_after_a_zip_stored_inside_it_is_incomplete(tmp_path: Path) -> None:
    """An embedded workbook, stored: a prefix ending with it ends with a valid ZIP."""
    inner = xlsx_bytes(ROWS[:2])
    buffer = io.BytesIO(xlsx_bytes())
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("xl/embeddings/Microsoft_Excel_Worksheet.xlsx", inner)
    body = buffer.getvalue()
    prefix = body[: body.index(inner) + len(inner)]
    zipfile.ZipFile(io.BytesIO(prefix)).close()  # zipfile alone would take it for a workbook

    with pytest.raises(TransientFetchError, match="its central directory does not match"):
        check(tmp_path, prefix, XLSX)


PROPERTY_XLSX = xlsx_bytes()


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_no_strict_prefix_of_an_xlsx_is_accepted(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    body = PROPERTY_XLSX
    length = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="length")
    with pytest.raises(FetchError, match="is incomplete|not an Excel workbook"):
        check(tmp_path_factory.mktemp("prefix"), body[:length], XLSX)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (DOCX, "received a ZIP that is not an Excel workbook (a Word document?)"),
        (
            PLAIN_ZIP,
            "received a ZIP archive, not an Excel workbook "
            "(it has no [Content_Types].xml or xl/workbook.xml)",
        ),
        (
            zip_bytes({"xl/workbook.xml": b'<?xml version="1.0"?><workbook/>'}),
            "received a ZIP archive, not an Excel workbook (it has no [Content_Types].xml)",
        ),
    ],
    ids=["docx", "plain zip", "no content types"],
)
def test_a_zip_that_is_not_a_workbook_is_permanent(tmp_path: Path, body: bytes, words: str) -> None:
    with pytest.raises(PermanentFetchError) as caught:
        check(tmp_path, body, XLSX)
    assert str(caught.value) == words
    assert not caught.value.retryable


# --- XLS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [XLS_BYTES, SMALL_XLS, LARGE_XLS],
    ids=["workbook in sectors", "in the mini stream", "10 MB, DIFAT"],
)
def test_a_whole_xls_is_accepted_and_is_a_real_workbook(tmp_path: Path, body: bytes) -> None:
    check(tmp_path, body, XLS)
    assert xlrd_rows(body)[0] == ["Артикул", "Наименование", "Цена"]


@pytest.mark.parametrize(
    "body",
    [XLS_BYTES, SMALL_XLS, LARGE_XLS],
    ids=["workbook in sectors", "in the mini stream", "10 MB, DIFAT"],
)
@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.2, 0.5, 0.9])
def test_an_xls_cut_short_is_incomplete(tmp_path: Path, body: bytes, fraction: float) -> None:
    cut = max(int(len(body) * fraction), 100)
    with pytest.raises(TransientFetchError, match=r"^the XLS is incomplete: .*"):
        check(tmp_path, body[:cut], XLS)


def test_an_xls_one_byte_of_its_workbook_short_is_incomplete(tmp_path: Path) -> None:
    stream = biff8(ROWS)
    end = XLS_BYTES.index(stream) + len(stream)  # then zeros to the end of the last sector
    with pytest.raises(TransientFetchError) as caught:
        check(tmp_path, XLS_BYTES[: end - 1], XLS)
    assert str(caught.value) == (
        "the XLS is incomplete: its workbook stream runs past the end of the file (cut short?)"
    )
    check(tmp_path, XLS_BYTES[:end], XLS)  # only the last sector's padding is missing


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_prefix_of_an_xls_is_refused_unless_a_reader_gets_every_cell(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """The last sector may be short (readers accept it): a prefix that only loses padding
    there may pass, but then xlrd reads every cell."""
    body = XLS_BYTES
    length = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="length")
    try:
        check(tmp_path_factory.mktemp("prefix"), body[:length], XLS)
    except TransientFetchError as exc:
        assert "is incomplete" in str(exc)
    else:
        assert xlrd_rows(body[:length]) == xlrd_rows(body)


def fragmented(body: bytes) -> bytes:
    """The same .xls with its workbook's first two sectors swapped on disk (and in its
    chain): a stream whose sectors are not consecutive, as after edits in place."""
    (first_dir,) = struct.unpack_from("<I", body, 48)
    directory = (first_dir + 1) * 512
    at = next(
        directory + i * 128
        for i in range(4)
        if body[directory + i * 128 :].startswith("Workbook".encode("utf-16-le"))
    )
    (w0,) = struct.unpack_from("<I", body, at + 116)
    w1 = w0 + 1
    (w2,) = struct.unpack_from("<I", body, 512 + w1 * 4)  # one FAT sector, right after the header
    out = bytearray(body)
    out[(w0 + 1) * 512 : (w0 + 2) * 512] = body[(w1 + 1) * 512 : (w1 + 2) * 512]
    out[(w1 + 1) * 512 : (w1 + 2) * 512] = body[(w0 + 1) * 512 : (w0 + 2) * 512]
    struct.pack_into("<I", out, at + 116, w1)
    struct.pack_into("<II", out, 512 + w0 * 4, w2, w0)
    return bytes(out)


def test_a_workbook_stream_in_scattered_sectors_is_followed_through_its_chain(
    tmp_path: Path,
) -> None:
    body = fragmented(XLS_BYTES)
    assert body != XLS_BYTES and xlrd_rows(body) == xlrd_rows(XLS_BYTES)
    check(tmp_path, body, XLS)
    stream = biff8(ROWS)
    end = XLS_BYTES.index(stream[-512:]) + 512
    with pytest.raises(TransientFetchError, match="workbook stream runs past the end"):
        check(tmp_path, body[: end - 1], XLS)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_damaged_bytes_are_refused_in_words_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Bytes changed in the header, FAT and directory (OLE2) or the central directory (ZIP):
    accepted or refused with a FetchError, never an IndexError or a MemoryError."""
    name = data.draw(st.sampled_from(["xls", "xlsx"]), label="file")
    body, kind = (XLS_BYTES, XLS) if name == "xls" else (PROPERTY_XLSX, XLSX)
    region = range(0, 2048) if name == "xls" else range(len(body) - 1500, len(body))
    out = bytearray(body)
    for _ in range(data.draw(st.integers(1, 8))):
        out[data.draw(st.sampled_from(region))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(FetchError):  # refused in words is fine; anything else fails
        check(tmp_path_factory.mktemp("damaged"), bytes(out), kind)


def test_an_ole2_file_without_a_workbook_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentFetchError) as caught:
        check(tmp_path, DOC, XLS)
    assert str(caught.value) == (
        "received an OLE2 file that is not an Excel workbook (a Word document?)"
    )
    with pytest.raises(PermanentFetchError, match=r"not an Excel workbook \(no Workbook stream\)"):
        check(tmp_path, compound_file({"Contents": bytes(5000)}), XLS)


def test_a_password_protected_office_file_is_permanent(tmp_path: Path) -> None:
    encrypted = compound_file({"EncryptionInfo": bytes(300), "EncryptedPackage": bytes(9000)})
    with pytest.raises(PermanentFetchError, match="password-protected"):
        check(tmp_path, encrypted, XLS)


# --- PDF ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tail", [b"", b"\n", b"\r\n  \t\n", b"\n" + b"\0" * 500])
def test_a_pdf_ending_with_eof_is_accepted(tmp_path: Path, tail: bytes) -> None:
    check(tmp_path, PDF_BYTES + tail, PDF)


@pytest.mark.parametrize(
    "body",
    [PDF_BYTES[: len(PDF_BYTES) // 2], PDF_BYTES[:-1], PDF_BYTES + b"\n" + b"x" * 1100],
    ids=["half", "one byte short", "%%EOF further than 1024 bytes from the end"],
)
def test_a_pdf_without_eof_at_its_end_is_incomplete(tmp_path: Path, body: bytes) -> None:
    with pytest.raises(TransientFetchError) as caught:
        check(tmp_path, body, PDF)
    assert str(caught.value) == "the PDF is incomplete: it does not end with %%EOF (cut short?)"


# --- through the fetcher, from a server that closes the connection to end the body -------------


def gzip_without_length(packed: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    """A gzip-encoded body with no Content-Length: it ends when the connection closes."""

    def handler(req: BaseHTTPRequestHandler) -> None:
        req.close_connection = True
        req.send_response(200)
        req.send_header("Content-Type", "text/csv")
        req.send_header("Content-Encoding", "gzip")
        req.send_header("Connection", "close")
        req.end_headers()
        req.wfile.write(packed)

    return handler


CSV = "".join(f"A-{n};Кабель ВВГнг 3x{n};{n * 1.5}\r\n" for n in range(20_000)).encode("cp1251")


@pytest.mark.parametrize(
    ("body", "fmt", "words"),
    [
        (
            xlsx_bytes()[: 5 * 1024],
            "excel",
            "the XLSX is incomplete: its central directory is missing",
        ),
        (XLS_BYTES[: len(XLS_BYTES) // 2], "excel", "the XLS is incomplete"),
        (PDF_BYTES[:-10], "url", "the PDF is incomplete"),
    ],
    ids=["xlsx", "xls", "pdf"],
)
def test_a_document_cut_short_on_a_closed_connection_is_transient_and_leaves_nothing(
    server: LoopbackServer,
    fetcher: SourceFetcher,
    staging: Path,
    body: bytes,
    fmt: str,
    words: str,
) -> None:
    url = server.route("/prices", without_length(body))

    with pytest.raises(TransientFetchError, match=words) as caught:
        fetcher.fetch(url, fmt, staging)
    assert caught.value.retryable
    assert os.listdir(staging) == []


@pytest.mark.parametrize(
    ("body", "words"),
    [(DOCX, "a Word document?"), (PLAIN_ZIP, "a ZIP archive"), (DOC, "a Word document?")],
    ids=["docx", "plain zip", "doc"],
)
def test_a_document_that_is_not_a_workbook_is_permanent_and_leaves_nothing(
    server: LoopbackServer, fetcher: SourceFetcher, staging: Path, body: bytes, words: str
) -> None:
    url = server.route("/prices.xlsx", without_length(body))

    with pytest.raises(PermanentFetchError, match="not an Excel workbook") as caught:
        fetcher.fetch(url, "url", staging)
    assert words in str(caught.value)
    assert os.listdir(staging) == []


@pytest.mark.parametrize(
    ("body", "kind"),
    [(xlsx_bytes(), XLSX), (XLS_BYTES, XLS), (PDF_BYTES, PDF)],
    ids=["xlsx", "xls", "pdf"],
)
def test_a_whole_document_on_a_closed_connection_is_kept(
    server: LoopbackServer, fetcher: SourceFetcher, staging: Path, body: bytes, kind: FileKind
) -> None:
    url = server.route("/prices", without_length(body))

    fetched = fetcher.fetch(url, "url", staging)

    assert fetched.kind is kind
    assert fetched.path.read_bytes() == body
    assert os.listdir(staging) == [fetched.path.name]


def test_a_gzip_stream_cut_half_way_is_transient_and_leaves_nothing(
    server: LoopbackServer, fetcher: SourceFetcher, staging: Path
) -> None:
    packed = gzip.compress(CSV)
    url = server.route("/prices.csv", gzip_without_length(packed[: len(packed) // 2]))

    with pytest.raises(TransientFetchError) as caught:
        fetcher.fetch(url, "csv", staging)
    assert str(caught.value) == (
        "the gzip-encoded body is incomplete: it ends before the gzip trailer (cut short?)"
    )
    assert os.listdir(staging) == []


def test_a_gzip_stream_missing_only_its_trailer_is_transient(
    server: LoopbackServer, fetcher: SourceFetcher, staging: Path
) -> None:
    """Every byte of the CSV inflates, but the CRC and length never came."""
    packed = gzip.compress(CSV)
    url = server.route("/prices.csv", gzip_without_length(packed[:-8]))

    with pytest.raises(TransientFetchError, match="before the gzip trailer"):
        fetcher.fetch(url, "csv", staging)
    assert os.listdir(staging) == []


def test_a_whole_gzip_stream_on_a_closed_connection_is_kept(
    server: LoopbackServer, fetcher: SourceFetcher, staging: Path
) -> None:
    url = server.route("/prices.csv", gzip_without_length(gzip.compress(CSV)))

    fetched = fetcher.fetch(url, "csv", staging)

    assert fetched.path.read_bytes() == CSV
    assert os.listdir(staging) == [fetched.path.name]


def test_an_empty_gzip_body_is_an_empty_file_not_a_cut_one(
    server: LoopbackServer, fetcher: SourceFetcher, staging: Path
) -> None:
    url = server.route("/prices.csv", gzip_without_length(b""))

    with pytest.raises(PermanentFetchError, match=r"empty \(0 bytes\)"):
        fetcher.fetch(url, "csv", staging)
    assert os.listdir(staging) == []
