"""Drill 5, hostile master sheets and sources, generated with hypothesis (fixed seed, bounded).

Part 1, plain code: generated master sheets (CSV in three encodings and delimiters, and XLSX)
through `read_csv_rows` / `read_workbook_rows` and `build_registry`; generated and hand-made
sources through `SourceFetcher` (private and metadata addresses, redirect chains and loops,
endless, slow-drip, gzip-bomb, stalled, cut-short, mislabelled bodies, random statuses and
headers); generated file names through `sanitize_filename`. Every input must be refused or
handled with a clear message, within a bounded time, never with another exception.

Part 2, the real daemon on a hostile master sheet (a local file) whose sources are served on
127.0.0.2, the only address in SSRF_ALLOWED_HOSTS.

All traffic stays on loopback: a tripwire in this process refuses (and counts) any connection
to an address outside 127.0.0.0/8 and ::1, and any name lookup other than an address literal
or `localhost`; a canary server on 127.0.0.1 counts every request that reaches it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import ipaddress
import json
import re
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from ingestion_assets.fetching.errors import FetchError
from ingestion_assets.fetching.fetcher import SourceFetcher
from ingestion_assets.fetching.streaming import FetchLimits
from ingestion_assets.fetching.url_guard import UrlGuard
from ingestion_assets.handoff.naming import MAX_NAME_BYTES, sanitize_filename
from ingestion_assets.markdown import md_table
from ingestion_assets.registry.tables import MasterSheetError, read_csv_rows, read_workbook_rows
from ingestion_assets.registry.validation import MAX_NAME_LENGTH, build_registry, validate_source

from .. import loopback
from .harness import (
    Courier,
    DrillFailed,
    MLService,
    Result,
    statuses,
    summary,
    unsettled_runs,
    wait_for,
    with_instance_change,
)
from .sources import price_list, slow_body

SEED = 20_261_128
SHEETS, WORKBOOKS, SOURCES, NAMES = 150, 25, 120, 300  # examples per generated family
SHEET_BUDGET_S = 5.0  # the most one master sheet may take to read and validate
FETCH_SLACK_S = 3.0  # beyond the download deadline
LIMITS = FetchLimits(max_bytes=1024 * 1024, connect_timeout=2, read_timeout=2, deadline=4)
SOURCE_HOST = "127.0.0.2"  # the hostile server; the only address the guard allows
KEY = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

FORMULAS = [
    '=HYPERLINK("http://169.254.169.254/latest/meta-data/","prices")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    '=IMPORTXML("http://10.0.0.1/","//a")',
    '=DDE("cmd";"/C calc";"__DdeLink_60_870516294")',
    "\t=1+1",
    "=1+1",
]
PRIVATE_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://10.0.0.1/prices.csv",
    "http://192.168.1.1/prices.csv",
    "http://172.16.0.1/prices.xlsx",
    "http://100.64.0.1/prices.csv",
    "http://[::1]/prices.csv",
    "http://localhost/prices.csv",
    "http://127.0.0.1:22/",
    "http://0.0.0.0/",
    "http://0x7f000001/",
    "http://2130706433/",
    "http://127.1/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
    "http://user:secret@10.0.0.1/prices.csv?token=abc",
]
ODD_URLS = [
    "file:///etc/passwd",
    "ftp://example.com/prices.csv",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "javascript:alert(1)",
    "//evil.example/prices.csv",
    "../../etc/passwd",
    "/etc/shadow",
    "http://exa mple.com/x.csv",
    "http://example.com:99999/x.csv",
    "http://[::1",
    "http://",
    "https://docs.google.com/spreadsheets/d/short/edit",
    "http://example.com/" + "a" * 3000,
    "http://ex\x00ample.com/x.csv",
]


# --- the tripwire ---------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def _is_literal(host) -> bool:
    """An address literal, in any form inet_aton takes (127.1, 0x7f000001): no DNS lookup."""
    if not isinstance(host, str):
        return host is None
    with contextlib.suppress(OSError):
        socket.inet_pton(socket.AF_INET6, host.split("%")[0])
        return True
    try:
        socket.inet_aton(host)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def tripwire():
    """Refuse, and record, any connection off loopback and any DNS lookup, in this process."""
    escapes: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(address) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not _is_loopback(host):
            escapes.append(f"connect {host}")
            raise ConnectionRefusedError(f"drill tripwire: {host} is not loopback")

    def connect(self, address):
        check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and not _is_literal(name):
            name.encode("idna")  # what getaddrinfo does first: UnicodeError, before any lookup
        if not (_is_literal(name) or str(name).lower().rstrip(".") == "localhost"):
            escapes.append(f"lookup {name!r}")
            raise socket.gaierror(socket.EAI_NONAME, "drill tripwire: no DNS lookups")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.getaddrinfo = getaddrinfo
    try:
        yield escapes
    finally:
        socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex
        socket.getaddrinfo = real_getaddrinfo


# --- generated master sheets ----------------------------------------------------------------

plain_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
names = st.sampled_from(
    [
        "ООО «Альфа»",
        "ooo alfa",
        "OOO  Alfa",
        "Альфа",
        "株式会社テスト",
        "שלום",
        "😀 Tools",
        "  ",
        "-",
        "ø",
    ]
)
huge = st.builds(
    lambda ch, n: ch * n,
    st.sampled_from(["A", "Я", "😀", "=", ",", '"', "\n"]),
    st.integers(200, 200_000),
)
cell = st.one_of(
    plain_text,
    names,
    st.sampled_from(FORMULAS),
    st.sampled_from(PRIVATE_URLS + ODD_URLS),
    st.just("http://127.0.0.2:8000/prices.csv"),
    huge,
    st.sampled_from(["", "yes", "no", "maybe", "csv", "excel", "google_sheets", "pdf", "нет"]),
    st.uuids().map(str),
)
HEADERS = [
    ["name", "source_url", "format", "active", "use_ml_processing"],
    ["Поставщик", "Ссылка", "Формат", "Активен", "ml", "notes", "id"],
    ["company", "link", "type", "enabled"],
    ["supplier", "url"],
]
header = st.one_of(st.sampled_from(HEADERS), st.sampled_from(HEADERS), st.lists(cell, max_size=6))
plausible_row = st.lists(
    st.one_of(cell, names, st.sampled_from(FORMULAS)), min_size=0, max_size=2
).flatmap(
    lambda extra: st.tuples(
        st.one_of(names, st.sampled_from(FORMULAS), plain_text, huge),
        st.one_of(
            st.sampled_from(PRIVATE_URLS + ODD_URLS),
            st.builds(lambda p: f"https://prices.example/{p}.csv", plain_text),
        ),
        st.sampled_from(["", "csv", "excel", "url", "google_sheets", "pdf", "=1+1"]),
        st.sampled_from(["", "yes", "no", "нет", "x", "maybe"]),
    ).map(lambda row: [*row, *extra])
)
sheet = st.tuples(
    header, st.lists(st.one_of(plausible_row, st.lists(cell, max_size=8)), max_size=25)
)


def as_csv(rows: list[list[str]], delimiter: str, encoding: str) -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows(rows)
    return out.getvalue().encode(encoding, errors="replace")


def as_xlsx(rows: list[list[str]], path: Path) -> Path:
    import openpyxl
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    workbook = openpyxl.Workbook()
    for row in rows:  # what Excel itself can hold: no control characters, 32,767 per cell
        workbook.active.append([ILLEGAL_CHARACTERS_RE.sub("", c)[:32_767] for c in row])
    workbook.save(path)
    return path


def check_registry(rows: list[list[str]], outcome: Counter, violations: list[str]) -> None:
    """Read and validate one sheet; record its outcome and any broken promise."""
    started = time.monotonic()
    try:
        registry = build_registry(rows)
    except MasterSheetError as exc:
        outcome["sheet refused (clear message)"] += 1
        if not str(exc):
            violations.append("a refused sheet without a message")
        return
    except Exception as exc:  # the registry asset would fail on the whole sheet, unclearly
        violations.append(f"build_registry: {type(exc).__name__}: {exc}")
        return
    finally:
        if time.monotonic() - started > SHEET_BUDGET_S:
            violations.append(f"a sheet took {time.monotonic() - started:.1f} s")
    outcome["sheet read"] += 1
    outcome["rows accepted"] += len(registry.suppliers)
    outcome["rows refused with a reason"] += len(registry.problems)
    keys = [s.key for s in registry.suppliers]
    ids = [s.supplier_id for s in registry.suppliers]
    if len(set(keys)) != len(keys) or len(set(ids)) != len(ids):
        violations.append(f"duplicate keys or ids accepted: {keys}")
    for supplier in registry.suppliers:
        if not KEY.match(supplier.key) or len(supplier.key) > 60:
            violations.append(f"unsafe partition key {supplier.key!r}")
        if len(supplier.name) > MAX_NAME_LENGTH or not supplier.name.strip():
            violations.append(f"bad name accepted: {supplier.name[:40]!r}")
        try:
            validate_source(supplier.source_url, supplier.format)
        except ValueError as exc:
            violations.append(f"an invalid source accepted: {supplier.source_url[:60]!r} ({exc})")
        if supplier.name[:1] in "=+-@\t":
            outcome["formula-like names kept as plain text"] += 1
    for problem in registry.problems:
        if not problem.reason:
            violations.append(f"row {problem.row} refused without a reason")
        outcome[f"refused: {problem.reason.split(':')[0].split(' (')[0][:50]}"] += 1
    registry.model_dump_json()  # what the IO manager and the metadata need
    md_table(
        ["row", "supplier", "reason"], [[p.row, p.supplier, p.reason] for p in registry.problems]
    )


def master_sheets(tmp: Path, figures: dict, violations: list[str]) -> None:
    outcome: Counter = Counter()
    tried = Counter()

    @seed(SEED)
    @settings(
        max_examples=SHEETS,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        sheet, st.sampled_from([",", ";", "\t"]), st.sampled_from(["utf-8", "utf-8-sig", "cp1251"])
    )
    def csv_sheets(sheet_rows, delimiter, encoding):
        tried["csv"] += 1
        head, body = sheet_rows
        data = as_csv([head, *body], delimiter, encoding)
        started = time.monotonic()
        try:
            rows = read_csv_rows(data)
        except MasterSheetError:
            outcome["sheet refused (clear message)"] += 1
            return
        except Exception as exc:  # what the registry asset would turn into an unclear failure
            violations.append(f"CSV master sheet ({len(data)} bytes): {type(exc).__name__}: {exc}")
            return
        finally:
            if time.monotonic() - started > SHEET_BUDGET_S:
                violations.append(f"reading a CSV took {time.monotonic() - started:.1f} s")
        check_registry(rows, outcome, violations)

    @seed(SEED)
    @settings(
        max_examples=WORKBOOKS,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(sheet)
    def xlsx_sheets(sheet_rows):
        tried["xlsx"] += 1
        head, body = sheet_rows
        path = as_xlsx([head, *body], tmp / f"master-{tried['xlsx']}.xlsx")
        try:
            rows = read_workbook_rows(path, "Suppliers")
        except MasterSheetError:
            outcome["sheet refused (clear message)"] += 1
            return
        except Exception as exc:
            violations.append(f"XLSX master sheet: {type(exc).__name__}: {exc}")
            return
        check_registry(rows, outcome, violations)

    csv_sheets()
    xlsx_sheets()
    figures["master sheets tried"] = (
        f"{sum(tried.values())} ({tried['csv']} CSV in UTF-8/BOM/cp1251 with , ; tab, "
        f"{tried['xlsx']} XLSX); cells: random unicode, formulas, private and odd URLs, cells of "
        "200 to 200,000 characters, duplicate names"
    )
    figures["master sheet outcomes"] = summary(outcome)


# --- sources --------------------------------------------------------------------------------


def slow_drip() -> loopback.Handler:
    return loopback.endless(b"x;", 0.3)


def gzip_bomb(decoded_mb: int = 64) -> loopback.Handler:
    """A small gzip body that decodes to `decoded_mb` MB: the cap counts decoded bytes."""
    return loopback.gzipped(b"0" * (decoded_mb * 1024 * 1024))


def huge_length() -> loopback.Handler:
    def handler(req):
        req.close_connection = True
        req.send_response(200)
        req.send_header("Content-Type", "text/csv")
        req.send_header("Content-Length", str(10 * 1024**3))
        req.end_headers()
        req.wfile.write(b"a;b\n")

    return handler


def with_disposition(body: bytes, disposition: str) -> loopback.Handler:
    return loopback.file_body(body, "text/csv", {"Content-Disposition": disposition})


def fixed_sources(hostile, canary) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(label, url, format, any of these in the message) for the hand-made cases."""
    c = canary.port
    route = hostile.route
    route("/loop-a", loopback.redirect(hostile.url("/loop-b")))
    route("/loop-b", loopback.redirect(hostile.url("/loop-a")))
    for i in range(8):
        route(f"/chain-{i}", loopback.redirect(hostile.url(f"/chain-{i + 1}"), 307))
    body = price_list(7)
    cases = [
        *[(f"private address {u}", u, "url", ("refused: host",)) for u in PRIVATE_URLS[:16]],
        ("loopback by name", f"http://localhost:{c}/x.csv", "csv", ("refused: host",)),
        ("loopback, the canary", f"http://127.0.0.1:{c}/x.csv", "csv", ("refused: host",)),
        ("IPv6 loopback", f"http://[::1]:{c}/x.csv", "csv", ("refused: host",)),
        ("decimal loopback", f"http://2130706433:{c}/x.csv", "csv", ("refused: host",)),
        ("credentials in URL", "http://user:pw@169.254.169.254/", "url", ("refused: host",)),
        (
            "redirect to metadata",
            route("/to-metadata", loopback.redirect("http://169.254.169.254/latest/meta-data/")),
            "url",
            ("refused: host '169.254.169.254'",),
        ),
        (
            "redirect to the canary",
            route("/to-canary", loopback.redirect(f"http://127.0.0.1:{c}/steal")),
            "url",
            ("refused: host '127.0.0.1'",),
        ),
        (
            "redirect to localhost",
            route("/to-localhost", loopback.redirect(f"http://localhost:{c}/")),
            "url",
            ("refused: host 'localhost'",),
        ),
        (
            "redirect to [::1]",
            route("/to-v6", loopback.redirect(f"http://[::1]:{c}/")),
            "url",
            ("refused: host '::1'",),
        ),
        (
            "redirect to file://",
            route("/to-file", loopback.redirect("file:///etc/passwd")),
            "url",
            ("unsupported URL scheme",),
        ),
        (
            "redirect to gopher://",
            route("/to-gopher", loopback.redirect("gopher://127.0.0.1:6379/_x")),
            "url",
            ("unsupported URL scheme",),
        ),
        ("redirect loop", hostile.url("/loop-a"), "url", ("redirect loop",)),
        ("redirect chain of 8", hostile.url("/chain-0"), "url", ("too many redirects",)),
        ("endless body", route("/endless", loopback.endless()), "csv", ("file too large",)),
        (
            "gzip bomb (64 MB of zeros, 64 KB sent)",
            route("/bomb", gzip_bomb()),
            "csv",
            ("file too large",),
        ),
        (
            "Content-Length of 10 GB",
            route("/huge", huge_length()),
            "csv",
            ("file too large: Content-Length",),
        ),
        ("slow-drip body", route("/drip", slow_drip()), "csv", ("download took longer than",)),
        ("stalled server", route("/stall", loopback.stall(8)), "csv", ("timed out",)),
        (
            "body cut short",
            route("/cut", loopback.cut_short(body[:10], len(body))),
            "csv",
            ("cut short", "before the body was complete"),
        ),
        (
            "login page instead of a file",
            route("/login", loopback.html_page()),
            "excel",
            ("HTML page",),
        ),
        ("empty body", route("/empty", loopback.file_body(b"")), "csv", ("empty",)),
        (
            "binary junk",
            route("/junk", loopback.file_body(b"\x00\x01\x02junk" * 100)),
            "url",
            ("binary file",),
        ),
        (
            "CSV where a workbook is expected",
            route("/csv-as-xlsx.xlsx", loopback.file_body(body)),
            "excel",
            ("expected an Excel workbook",),
        ),
        ("404", route("/gone", loopback.status(404)), "csv", ("HTTP 404",)),
        ("429", route("/busy", loopback.status(429)), "csv", ("HTTP 429",)),
        ("file:// source", "file:///etc/passwd", "url", ("unsupported URL scheme",)),
        ("local path outside the root", "/etc/passwd", "csv", ("outside LOCAL_SOURCES_ROOT",)),
        ("local path with ../", "../../../../etc/passwd", "csv", ("outside LOCAL_SOURCES_ROOT",)),
        (
            "Google Sheet link on the metadata host",
            "http://169.254.169.254/spreadsheets/d/abcdefghijkl/edit",
            "google_sheets",
            ("refused: host",),
        ),
        (
            "redirect to port 99999",
            route("/to-bad-port", loopback.redirect("http://127.0.0.2:99999/x.csv")),
            "url",
            ("invalid URL",),
        ),
        (
            "redirect to an IDNA-invalid host",
            route("/to-idna", loopback.redirect("http://xn--/x.csv")),
            "url",
            ("invalid URL", "invalid host name"),
        ),
        (
            "host label of 64 characters",
            "http://" + "a" * 64 + ".example/x.csv",
            "csv",
            ("invalid host name",),
        ),
        (
            "file name with path and %00",
            route(
                "/named", with_disposition(body, 'attachment; filename="../../etc/passwd%00.csv"')
            ),
            "csv",
            FETCHED,
        ),
        (
            "file name, RFC 5987, path and newline",
            route(
                "/named2",
                with_disposition(
                    body,
                    "attachment; filename*=UTF-8''..%2F..%2F%D0%BF%D1%80%D0%B0%D0%B9%D1%81%0A.csv",
                ),
            ),
            "csv",
            FETCHED,
        ),
        (
            "file name in an unknown charset",
            route("/named3", with_disposition(body, "attachment; filename*=x-bogus''%41%42.csv")),
            "csv",
            FETCHED,
        ),
        (
            "Windows path as file name",
            route(
                "/named4",
                with_disposition(
                    body, 'attachment; filename="..\\..\\Windows\\system32\\evil.csv"'
                ),
            ),
            "csv",
            FETCHED,
        ),
    ]
    return cases


FETCHED = ("<fetched>",)  # the expectation of a source that must be fetched


def fetch_once(fetcher, url, fmt, staging, outcome, violations, expect=None, label=""):
    started = time.monotonic()
    try:
        fetched = fetcher.fetch(url, fmt, staging)
    except FetchError as exc:
        message = str(exc)
        outcome["refused or failed with a message"] += 1
        if not message:
            violations.append(f"{label or url[:60]}: a failure without a message")
        if expect and not any(e in message for e in expect):  # FETCHED never matches
            violations.append(f"{label}: «{message[:160]}», expected one of {expect}")
        result = message
    except Exception as exc:  # noqa: BLE001 - anything else would crash the step unclearly
        violations.append(f"{label or url[:80]!r}: {type(exc).__name__}: {exc}")
        result = f"{type(exc).__name__}"
    else:
        outcome["fetched"] += 1
        name = sanitize_filename(fetched.original_filename, fetched.kind.extension)
        if (
            "/" in name
            or "\x00" in name
            or name.startswith(".")
            or len(name.encode()) > MAX_NAME_BYTES
        ):
            violations.append(f"{label}: unsafe file name {name!r}")
        if expect and expect != FETCHED:
            violations.append(f"{label}: fetched, expected a refusal {expect}")
        result = f"fetched as {name}"
        fetched.path.unlink(missing_ok=True)
    elapsed = time.monotonic() - started
    if elapsed > LIMITS.deadline + FETCH_SLACK_S:
        violations.append(f"{label or url[:60]}: took {elapsed:.1f} s")
    return result, elapsed


REDIRECT_TARGETS = PRIVATE_URLS + [
    "file:///etc/passwd",
    "ftp://x/y",
    "/relative.csv",
    "//127.0.0.1/x",
]
behaviour = st.one_of(
    st.tuples(st.just("status"), st.integers(100, 599), st.binary(max_size=200)),
    st.tuples(
        st.just("redirect"),
        st.sampled_from([301, 302, 303, 307, 308]),
        st.sampled_from(REDIRECT_TARGETS),
    ),
    st.tuples(
        st.just("body"),
        st.sampled_from(["text/csv", "text/html", "application/pdf", ""]),
        st.binary(max_size=3000),
    ),
    st.tuples(st.just("length-lies"), st.integers(0, 10_000), st.binary(min_size=1, max_size=500)),
    st.tuples(st.just("disposition"), st.text(max_size=300), st.just(b"")),
    st.tuples(st.just("slow"), st.integers(1, 6), st.floats(0.05, 0.3)),
)
url_strategy = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
    st.sampled_from(["http", "https", "HTTP", "ftp", "file", "gopher", ""]),
    st.sampled_from(
        [
            "169.254.169.254",
            "10.0.0.1",
            "[::1]",
            "localhost",
            "127.0.0.1",
            "0",
            "[::]",
            "127.0.0.2",
            "[::ffff:10.0.0.1]",
            "0177.0.0.1",
            "user@10.0.0.1",
            "[fe80::1%25eth0]",
            "2130706433",
        ]
    ),
    st.sampled_from(["", ":1", ":80", ":65535", ":0", ":99999", ":x"]),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
)


def behaviour_handler(kind, a, b) -> loopback.Handler:
    if kind == "status":
        return lambda req: loopback.send(req, a, b or b"x", "text/plain")
    if kind == "redirect":
        return loopback.redirect(b, a)
    if kind == "body":
        return lambda req: loopback.send(req, 200, b, a or "application/octet-stream")
    if kind == "length-lies":
        return loopback.cut_short(b, a)
    if kind == "disposition":
        header = "attachment; filename=" + json.dumps(a, ensure_ascii=False)
        return lambda req: _send_latin1(req, price_list(3), header)
    return slow_body(price_list(5), pieces=a, delay=b)  # "slow": finite, within the deadline


def _send_latin1(req, body, disposition):
    req.send_response(200)
    req.send_header("Content-Type", "text/csv")
    req.send_header("Content-Length", str(len(body)))
    with contextlib.suppress(UnicodeEncodeError):  # http.server encodes headers as latin-1
        req.send_header("Content-Disposition", disposition)
    req.end_headers()
    req.wfile.write(body)


def sources(tmp: Path, figures: dict, violations: list[str], hostile, canary) -> int:
    root = tmp / "local-root"
    root.mkdir()
    (root / "escape.csv").symlink_to("/etc/passwd")
    fetcher = SourceFetcher(LIMITS, UrlGuard((SOURCE_HOST,)), local_sources_root=str(root))
    staging = tmp / "staging"
    outcome: Counter = Counter()
    slowest = [0.0, ""]
    messages = {}
    cases = fixed_sources(hostile, canary)
    cases.append(
        (
            "symlink out of the root",
            str(root / "escape.csv"),
            "csv",
            ("outside LOCAL_SOURCES_ROOT",),
        )
    )
    for label, url, fmt, expect in cases:
        message, elapsed = fetch_once(
            fetcher, url, fmt, staging, outcome, violations, expect, label
        )
        messages[label] = message
        if elapsed > slowest[0]:
            slowest[:] = [elapsed, label]
    counter = {"n": 0}

    @seed(SEED)
    @settings(
        max_examples=SOURCES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.one_of(url_strategy.map(lambda u: ("url", u)), behaviour.map(lambda b: ("server", b))),
        st.sampled_from(["url", "csv", "excel", "google_sheets"]),
    )
    def generated(case, fmt):
        counter["n"] += 1
        if case[0] == "url":
            url = case[1]
        else:
            url = hostile.route(f"/gen/{counter['n']}", behaviour_handler(*case[1]))
        outcome[f"generated {case[0] if case[0] == 'url' else case[1][0]}"] += 1
        _, elapsed = fetch_once(
            fetcher, url, fmt, staging, outcome, violations, label=f"generated {case!r:.120}"
        )
        if elapsed > slowest[0]:
            slowest[:] = [elapsed, f"generated {case!r:.80}"]

    generated()
    leftovers = [p.name for p in staging.rglob("*") if p.is_file()] if staging.exists() else []
    if leftovers:
        violations.append(f"temp files left in staging: {leftovers[:5]}")
    figures["sources tried"] = (
        f"{len(cases)} hand-made + {counter['n']} generated = {len(cases) + counter['n']}; "
        f"limits: 1 MB, read timeout 2 s, deadline 4 s"
    )
    figures["source outcomes"] = summary(outcome)
    figures["slowest source"] = f"{slowest[0]:.1f} s ({slowest[1][:80]})"
    figures["sample messages"] = "; ".join(
        f"{k}: «{messages[k][-110:]}»"
        for k in (
            "redirect to metadata",
            "redirect loop",
            "gzip bomb (64 MB of zeros, 64 KB sent)",
            "slow-drip body",
            "redirect to port 99999",
            "file name with path and %00",
        )
    )
    return len(cases)


def file_names(figures: dict, violations: list[str]) -> None:
    tried = {"n": 0}

    @seed(SEED)
    @settings(max_examples=NAMES, deadline=None, database=None, phases=[Phase.generate])
    @given(st.text(max_size=400), st.sampled_from([".csv", ".xlsx", ".xls", ".pdf"]))
    def names_are_safe(raw, ext):
        tried["n"] += 1
        name = sanitize_filename(raw, ext)
        if (
            any(ch in name for ch in "/\\\x00")
            or any(ord(ch) < 32 for ch in name)
            or name.startswith(".")
            or not name.endswith(ext)
            or len(name.encode()) > MAX_NAME_BYTES
        ):
            violations.append(f"unsafe file name {name!r} from {raw[:40]!r}")

    names_are_safe()
    figures["file names tried"] = f"{tried['n']} generated (sanitize_filename)"


# --- through the daemon ---------------------------------------------------------------------


def daemon_pass(ctx, figures: dict, violations: list[str], hostile, canary) -> int:
    c = canary.port
    ok = price_list(11)
    route = hostile.route
    rows = [  # name, source, format, and what the supplier must end as
        (
            "Healthy Supplier",
            route("/d/ok.csv", loopback.file_body(ok, "text/csv")),
            "csv",
            "complete",
        ),
        (
            "+cmd|' /C calc'!A0",
            route("/d/ok2.csv", loopback.file_body(price_list(12), "text/csv")),
            "csv",
            "complete",
        ),
        (
            '=HYPERLINK("http://169.254.169.254/latest/meta-data/","prices")',
            "http://169.254.169.254/latest/meta-data/",
            "url",
            "refused: host",
        ),
        ("@SUM(1+1)*cmd|' /C calc'!A0", "http://10.0.0.1/prices.csv", "csv", "refused: host"),
        ("ООО «Альфа»", f"http://[::1]:{c}/x.csv", "csv", "refused: host"),
        ("ooo alfa", hostile.url("/d/ok.csv"), "csv", "duplicate supplier"),
        ("株式会社テスト 😀", f"http://localhost:{c}/x.csv", "csv", "refused: host"),
        ("Canary Supplier", f"http://127.0.0.1:{c}/x.csv", "csv", "refused: host"),
        ("Redirect Loop", hostile.url("/loop-a"), "url", "redirect loop"),
        (
            "Redirect To Metadata",
            route("/d/to-metadata", loopback.redirect("http://169.254.169.254/latest/meta-data/")),
            "url",
            "refused: host",
        ),
        ("Endless Body", route("/d/endless", loopback.endless()), "csv", "file too large"),
        ("Gzip Bomb", route("/d/bomb", gzip_bomb()), "csv", "file too large"),
        ("Local File", "/etc/passwd", "csv", "LOCAL_SOURCES_ROOT is not set"),
        ("A" * 100_000, hostile.url("/d/ok.csv"), "csv", "longer than"),
        ("File Scheme", "file:///etc/passwd", "", "unsupported scheme"),
        ("Formula URL", '=HYPERLINK("http://10.0.0.1/")', "", "unsupported scheme"),
        ("Control Char", "http://127.0.0.2/\x01x.csv", "csv", "control characters"),
    ]
    master = ctx.root / "master" / "master.csv"
    master.parent.mkdir()
    out = io.StringIO()
    csv.writer(out).writerows([["name", "source_url", "format"], *[r[:3] for r in rows]])
    master.write_text(out.getvalue(), encoding="utf-8")
    ml = MLService(ctx.procs, ctx.root / "ml.sqlite3").start()
    courier = Courier(
        ctx.procs,
        ctx.root / "daemon",
        master_sheet_url=str(master),
        ml_url=ml.url,
        extra_env={
            "SSRF_ALLOWED_HOSTS": SOURCE_HOST,
            "MAX_FILE_SIZE_MB": "1",
            # Every hostile body of this pass is cut by the size cap or refused before it is
            # read; the timeouts only need to spare the healthy suppliers on a loaded machine
            # (at 2 s / 4 s they timed out once beside two other drills and `make drills`).
            "READ_TIMEOUT_SECONDS": "10",
            "CONNECT_TIMEOUT_SECONDS": "10",
            "DOWNLOAD_DEADLINE_SECONDS": "30",
        },
    )
    courier.set_pool_limits()
    started = time.monotonic()
    courier.start_daemon()
    with courier.instance() as instance:
        from dagster import AssetKey, RunsFilter

        registry = wait_for(
            lambda: instance.fetch_materializations(AssetKey("supplier_registry"), limit=1).records,
            120,
            "the master sheet to be read",
            poll=2,
        )[0].asset_materialization.metadata
        accepted = registry["supplier_keys"].value

        def settled():
            if not courier.daemon_alive():
                raise DrillFailed("the daemon died on the hostile master sheet")
            runs = instance.get_runs(RunsFilter(job_name="supplier_sync"))
            done = {r.tags.get("dagster/partition") for r in runs if r.is_finished}
            return set(accepted) <= done and not unsettled_runs(instance)

        wait_for(settled, ctx.remaining(40), "every hostile supplier to finish", 2)
        states = statuses(instance)
        runs = instance.get_runs(RunsFilter(job_name="supplier_sync"))
    problems_md = registry["problems"].value
    ends = Counter()
    for name, _, _, expected in rows:
        from ingestion_assets.registry.identity import supplier_key

        key = supplier_key(" ".join(name.split()))
        if expected in (
            "duplicate supplier",
            "longer than",
            "unsupported scheme",
            "control characters",
        ):
            if expected not in problems_md:
                violations.append(f"row {name[:30]!r}: not refused with «{expected}»")
            ends["row refused"] += 1
            continue
        state = states.get(key)
        if state is None:
            violations.append(f"{name[:40]!r}: no partition {key}")
            continue
        if expected == "complete":
            good = state.phase.startswith("complete")
        else:
            good = state.phase == "failed" and expected in state.detail
        ends[state.phase] += 1
        if not good:
            violations.append(f"{name[:40]!r}: ends {state.phase}: {state.detail[:160]}")
    formula = next(
        (
            json.loads(p.read_text())["supplier_name"]
            for p in courier.shared.glob("*.meta.json")
            if "cmd" in json.loads(p.read_text())["supplier_name"]
        ),
        None,
    )
    if formula != "+cmd|' /C calc'!A0":
        violations.append(f"the formula-like supplier name reached the sidecar as {formula!r}")
    figures["through the daemon"] = (
        f"{len(rows)} rows (local master sheet, SSRF_ALLOWED_HOSTS={SOURCE_HOST}): "
        f"{registry['rows_refused'].value} refused in the sheet, {len(accepted)} suppliers -> "
        f"{summary(ends)}; {len(runs)} runs; daemon alive: {courier.daemon_alive()}; "
        f"formula name kept verbatim in the sidecar: {formula == chr(43) + 'cmd|' + chr(39) + ' /C calc' + chr(39) + '!A0'}; "
        f"{time.monotonic() - started:.0f} s"
    )
    return len(rows)


def new_result() -> Result:
    return Result(
        drill="5 hostile input",
        done=(
            "hypothesis (seed 20261128): generated CSV/XLSX master sheets, sources and file names "
            "through the plain code, plus hand-made attacks (metadata and private addresses, "
            "redirect loops and chains, endless, slow-drip, gzip-bomb, stalled bodies); then a "
            "hostile master sheet through the daemon; tripwire on any non-loopback connection"
        ),
        expected=(
            "every input refused or handled with a clear message, each within its bound; no other "
            "exception; nothing reaches a private address or the canary; the daemon stays up"
        ),
    )


def run(ctx, result: Result) -> None:
    hostile = loopback.LoopbackServer(host=SOURCE_HOST)
    canary = loopback.LoopbackServer()
    violations = result.problems
    figures = result.figures
    tmp = Path(tempfile.mkdtemp(dir=ctx.root))
    started = time.monotonic()
    try:
        with tripwire() as escapes:
            master_sheets(tmp, figures, violations)
            hand_made = sources(tmp, figures, violations, hostile, canary)
            file_names(figures, violations)
        plain_s = time.monotonic() - started
        rows = daemon_pass(ctx, figures, violations, hostile, canary)
    finally:
        hostile.close()
        canary.close()
    if escapes:
        violations.append(f"tripwire: {len(escapes)} attempts off loopback: {escapes[:5]}")
    if sum(canary.hits.values()):
        violations.append(f"the canary on 127.0.0.1 was reached {sum(canary.hits.values())} times")
    figures["tripwire and canary"] = (
        f"{len(escapes)} connections or lookups off loopback; canary hits {sum(canary.hits.values())}"
    )
    figures["time"] = (
        f"plain code {plain_s:.0f} s, through the daemon {time.monotonic() - started - plain_s:.0f} s"
    )
    tried = SHEETS + WORKBOOKS + SOURCES + NAMES
    result.scaled = with_instance_change(
        f"hypothesis examples: {SHEETS} CSV + {WORKBOOKS} XLSX sheets, {SOURCES} sources, "
        f"{NAMES} file names (bounded for time); the daemon pass: MAX_FILE_SIZE_MB=1, "
        "timeouts 10 s, DOWNLOAD_DEADLINE_SECONDS=30"
    )
    result.observed = (
        f"{tried} generated inputs, {hand_made} hand-made sources and "
        f"{rows} hostile rows through the daemon: {len(violations)} broken promises; "
        f"{len(escapes)} escapes off loopback, canary hits {sum(canary.hits.values())}"
    )
    result.passed = not violations
