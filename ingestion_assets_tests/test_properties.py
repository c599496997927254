"""Property-based tests of the fetch and naming code, in `make test` (the drills' hostile
inputs, drills/hostile.py, reused where they fit). Each property is an invariant the code
promises for every input, not a restatement of how it computes its answer.

Deterministic: the suite's hypothesis profile (conftest.py) derandomizes, keeps no example
database and sets no per-example deadline, so a loaded CI machine neither flakes nor finds
a different example than a developer's machine.
"""

from __future__ import annotations

import gzip
import ipaddress
import re
import socket
import string
import unicodedata
import uuid
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from unittest import mock
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from ingestion_assets.fetching.content_check import CSV, PDF, XLS, XLSX, sniff
from ingestion_assets.fetching.decoding import gunzip_pieces
from ingestion_assets.fetching.errors import FetchError, PermanentFetchError, TransientFetchError
from ingestion_assets.fetching.http_source import filename_from_response
from ingestion_assets.fetching.redact import REDACTED, redact_url
from ingestion_assets.fetching.url_guard import UrlGuard
from ingestion_assets.fetching.validators import MAX_VALIDATOR_LENGTH, Validators
from ingestion_assets.handoff.naming import MAX_NAME_BYTES, display_safe, sanitize_filename
from ingestion_assets.registry.identity import supplier_key
from ingestion_assets.registry.validation import (
    MAX_NAME_LENGTH,
    RowError,
    build_registry,
    validate_source,
)

from .drills.hostile import FORMULAS, ODD_URLS, PRIVATE_URLS
from .drills.hostile import names as hostile_names

EXTENSIONS = (".csv", ".xlsx", ".xls", ".pdf")
KEY = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")  # a Dagster partition key that reads as a slug
FILE_TYPES = {CSV: "csv", XLSX: "excel", XLS: "excel", PDF: "pdf"}

# Any text, surrogates aside (they cannot come out of a decoded sheet, header or URL).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
# Text that leans towards what breaks names and URLs: separators, dots, controls, bidi marks.
nasty = st.text(
    st.one_of(
        st.sampled_from(list("/\\.:%@?#[]\x00\t\n\r \u202e\u200b\ufeff..~$*|<>\"'")),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=120,
)
# Long names: past the byte limit in one-, two-, three- and four-byte characters.
long_text = st.builds(
    lambda ch, n, tail: ch * n + tail,
    st.sampled_from(["A", "Я", "株", "😀", "a/", "..", "_ "]),
    st.integers(1, 400),
    nasty,
)
hostile_text = st.one_of(
    text,
    nasty,
    long_text,
    hostile_names,
    st.sampled_from(FORMULAS + PRIVATE_URLS + ODD_URLS),
    st.builds(lambda a, b: a + ".." + "/" + b, nasty, nasty),
)


def _splits(url: str) -> bool:
    try:
        urlsplit(url).port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return True


# --- naming: any name a supplier or a server gives -> a safe name on the shared volume --------


@given(raw=st.one_of(st.none(), hostile_text), extension=st.sampled_from(EXTENSIONS))
def test_any_file_name_becomes_one_safe_name_inside_the_shared_folder(raw, extension):
    name = sanitize_filename(raw, extension)

    assert name == sanitize_filename(raw, extension)  # deterministic
    assert name.endswith(extension) and len(name) > len(extension)  # a stem and the real type
    assert not any(sep in name for sep in ("/", "\\", "\x00"))
    assert not name.startswith(".") and ".." not in PurePosixPath(name).parts
    assert all(unicodedata.category(ch)[0] != "C" for ch in name), repr(name)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    # What the shared volume makes of it, `{supplier_id}_{epoch_ms}_{name}` and its sidecar:
    # one entry directly in the folder, within the 255 bytes a file name may have.
    root = Path("/shared/uploads")
    entry = f"{uuid.uuid4()}_{1_767_225_600_000}_{name}"
    assert (root / entry).parent == root and (root / entry).name == entry
    assert len((entry + ".meta.json").encode("utf-8")) < 255


@example(raw="\u1100\u200b\u1161.csv", extension=".csv")
@given(raw=hostile_text, extension=st.sampled_from(EXTENSIONS))
def test_a_sanitized_name_is_a_fixed_point(raw, extension):
    """Handing an already handed-off name through again changes nothing (a re-sync, an
    inbox file named like a shared one): no second extension, no further trimming. Control
    and format characters included: removing one may join what NFC composes (U+1100 U+200B
    U+1161 is the syllable U+AC00 once the zero-width space is gone)."""
    name = sanitize_filename(raw, extension)
    assert sanitize_filename(name, extension) == name


@given(
    stem=st.text(
        st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Nd"), max_codepoint=0x2FFFF),
        min_size=1,
        max_size=30,
    ),
    extension=st.sampled_from(EXTENSIONS),
    shout=st.booleans(),
)
def test_a_plain_name_is_kept_with_its_extension_once(stem, extension, shout):
    """Letters and digits of any script survive as they are; the extension, in any case,
    is not doubled."""
    stem = unicodedata.normalize("NFC", stem)
    assume(re.fullmatch(r"\w+", stem))  # NFC may bring in a combining mark (U+0958 -> ka + nukta)
    assume(len((stem + extension).encode("utf-8")) <= MAX_NAME_BYTES)
    given_name = stem + (extension.upper() if shout else extension)
    assert sanitize_filename(given_name, extension) == stem + extension
    assert sanitize_filename(stem, extension) == stem + extension


@given(raw=hostile_text)
def test_display_safe_text_shows_no_control_or_format_characters(raw):
    shown = display_safe(raw)
    assert all(unicodedata.category(ch)[0] != "C" for ch in shown), repr(shown)


@given(
    disposition=st.one_of(
        st.none(),
        text,
        st.builds(
            lambda charset, name: f"attachment; filename*={charset}''{quote(name)}",
            st.sampled_from(["UTF-8", "utf-8", "", "windows-1251", "koi8-r", "no-such-charset"]),
            hostile_text,
        ),
        st.builds(lambda name: f'attachment; filename="{name}"', nasty),
    ),
    # The URL of a response: one httpx fetched, so one urlsplit reads.
    url=st.one_of(
        st.builds(lambda path: "https://prices.example/" + quote(path), hostile_text),
        st.sampled_from([u for u in PRIVATE_URLS + ODD_URLS if _splits(u)]),
    ),
    extension=st.sampled_from(EXTENSIONS),
)
def test_any_server_suggested_name_ends_as_a_safe_file_name(disposition, url, extension):
    """Content-Disposition and the URL's last segment are the server's words: read without
    an exception, and whatever they say, the file lands under a safe name."""
    suggested = filename_from_response(disposition, url)
    assert suggested is None or isinstance(suggested, str)
    name = sanitize_filename(suggested, extension)
    assert name.endswith(extension) and "/" not in name and "\\" not in name
    assert not name.startswith(".") and len(name.encode("utf-8")) <= MAX_NAME_BYTES


# --- the master sheet: supplier names -> partition keys and ids -------------------------------


@given(name=hostile_text)
def test_any_supplier_name_gives_a_stable_slug_key(name):
    key = supplier_key(name)
    assert key == supplier_key(name)
    assert KEY.match(key), key
    assert len(key) <= 60


@given(
    rows=st.lists(
        st.tuples(
            st.one_of(hostile_names, hostile_text, st.sampled_from(FORMULAS)),
            st.sampled_from(["https://prices.example/list.csv", "https://prices.example/p.xlsx"]),
        ),
        max_size=12,
    )
)
def test_every_row_is_a_supplier_or_a_reason_and_identities_do_not_depend_on_row_order(rows):
    sheet = [["name", "source_url"], *[list(row) for row in rows]]
    registry = build_registry(sheet)

    filled = [row for row in rows if row[0].strip() or row[1].strip()]
    assert len(registry.suppliers) + len(registry.problems) == len(filled)
    assert all(problem.reason for problem in registry.problems)
    keys = [s.key for s in registry.suppliers]
    ids = [s.supplier_id for s in registry.suppliers]
    assert len(set(keys)) == len(keys) and len(set(ids)) == len(ids)
    for supplier in registry.suppliers:
        assert KEY.match(supplier.key) and supplier.key == supplier_key(supplier.name)
        assert str(uuid.UUID(supplier.supplier_id)) == supplier.supplier_id
        assert supplier.name.strip() and len(supplier.name) <= MAX_NAME_LENGTH

    # The same supplier keeps its key and id in a sheet sorted differently.
    reversed_sheet = build_registry([sheet[0], *reversed(sheet[1:])])
    again = {s.key: s.supplier_id for s in reversed_sheet.suppliers}
    for supplier in registry.suppliers:
        if supplier.key in again:
            assert again[supplier.key] == supplier.supplier_id


@given(
    url=st.one_of(hostile_text, st.sampled_from(PRIVATE_URLS + ODD_URLS)),
    fmt=st.sampled_from(["csv", "excel", "url", "google_sheets"]),
)
def test_a_source_is_accepted_or_refused_with_a_reason(url, fmt):
    """A sheet cell is either a usable source or a row problem in words, never a crash."""
    try:
        validate_source(url, fmt)
    except ValueError as exc:  # RowError, or urlsplit's own
        assert str(exc)
        return
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in url)
    parts = urlsplit(url)
    if len(parts.scheme) > 1:  # a URL, not a local path: http(s) with a host
        assert parts.scheme.lower() in ("http", "https") and parts.hostname


def test_a_row_error_is_a_value_error():
    """What the property above relies on to tell a row problem from a crash."""
    assert issubclass(RowError, ValueError)


# --- the SSRF guard: any URL, any resolution ------------------------------------------------

PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001::200e"]
INTERNAL = [
    "127.0.0.1",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "::1",
    "fe80::1",
    "fd00:ec2::254",
    "::ffff:169.254.169.254",
    "::",
]
addresses = st.lists(
    st.one_of(st.sampled_from(PUBLIC + INTERNAL), st.ip_addresses().map(str)),
    min_size=1,
    max_size=4,
)
# A DNS label that is a name, never an address literal (`127.1`, `0x7f000001` are addresses).
label = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(string.ascii_lowercase),
    st.text(string.ascii_lowercase + string.digits + "-", max_size=11),
).map(lambda s: s.rstrip("-"))
host_names = st.builds(lambda parts: ".".join(parts), st.lists(label, min_size=1, max_size=3))


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@contextmanager
def resolving_to(answer: list[str]):
    """Name lookups answer `answer`; address literals resolve as the system resolves them
    (numeric only, no DNS); nothing leaves the machine. Records the names looked up."""
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        try:  # also raises UnicodeError on a name IDNA cannot encode, as the real lookup does
            return real(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass
        looked_up.append(host)
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port, 0, 0) if ":" in a else (a, port),
            )
            for a in answer
        ]

    with mock.patch.object(socket, "getaddrinfo", getaddrinfo):
        yield looked_up


@given(
    url=st.one_of(
        hostile_text,
        st.sampled_from(PRIVATE_URLS + ODD_URLS),
        st.builds(
            lambda scheme, host, rest: f"{scheme}://{host}{rest}",
            st.sampled_from(["http", "https", "HTTP", "ftp", "file", ""]),
            st.one_of(host_names, nasty),
            nasty,
        ),
    ),
    answer=addresses,
)
def test_any_url_is_allowed_or_refused_with_a_fetch_error(url, answer):
    """Never another exception: the fetch turns a FetchError into a failure in words."""
    with resolving_to(answer):
        try:
            UrlGuard().check(url)
        except FetchError as exc:
            assert type(exc) in (PermanentFetchError, TransientFetchError)
            assert str(exc)
            return
    parts = urlsplit(url)
    assert parts.scheme.lower() in ("http", "https") and parts.hostname


@given(
    scheme=st.sampled_from(["http", "https", "HTTPS"]),
    host=host_names,
    port=st.sampled_from(["", ":80", ":8443"]),
    path=nasty.map(quote),
    answer=addresses,
)
def test_a_host_is_allowed_only_if_every_address_it_resolves_to_is_public(
    scheme, host, port, path, answer
):
    url = f"{scheme}://{host}{port}/{path}"
    with resolving_to(answer) as looked_up:
        try:
            UrlGuard().check(url)
            allowed = True
        except PermanentFetchError as exc:
            allowed = False
            message = str(exc)
    assert looked_up == [host]
    if allowed:
        assert all(_is_public(a) for a in answer), answer
    else:
        assert message.startswith(f"refused: host '{host}' resolves to ")
        assert "SSRF_ALLOWED_HOSTS" in message
    if all(a in PUBLIC for a in answer):
        assert allowed
    if any(a in INTERNAL for a in answer):
        assert not allowed


@given(host=host_names, answer=addresses, other=host_names, spelled=st.sampled_from(["", "."]))
def test_an_allowed_name_opens_that_name_only(host, answer, other, spelled):
    """SSRF_ALLOWED_HOSTS=<name>: that name (any case, with or without its final dot) is
    fetched without a look-up; any other name is judged by its addresses as before."""
    assume(other != host)
    guard = UrlGuard((host.upper() + spelled,))
    with resolving_to(answer) as looked_up:
        guard.check(f"https://{host}/prices.csv")
        guard.check(f"https://{host}./prices.csv")
        assert looked_up == []
        if any(a in INTERNAL for a in answer):
            with pytest.raises(PermanentFetchError, match="refused: host"):
                guard.check(f"https://{other}/prices.csv")


@given(url=st.sampled_from(PRIVATE_URLS), answer=addresses)
def test_private_address_literals_are_refused_whatever_names_resolve_to(url, answer):
    """The drills' private and metadata addresses, as literals: no look-up can change that.
    (`localhost` is a name: here it resolves as the test says, and is refused when internal.)"""
    host = urlsplit(url).hostname
    with resolving_to(answer) as looked_up:
        if host == "localhost" and not any(a in INTERNAL for a in answer):
            return
        with pytest.raises(PermanentFetchError, match="refused: host"):
            UrlGuard().check(url)
    assert looked_up in ([], ["localhost"])


# --- bodies: gzip, sniffing, validators, redaction --------------------------------------------


@st.composite
def split(draw, data: bytes) -> list[bytes]:
    """`data` cut into network reads of any sizes."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@given(
    body=st.one_of(
        st.binary(max_size=4000), st.builds(lambda n: b"0" * n, st.integers(0, 300_000))
    ),
    piece=st.integers(1, 70_000),
    data=st.data(),
)
def test_gzip_inflates_to_the_body_in_bounded_pieces(body, piece, data):
    packed = gzip.compress(body)
    pieces = list(gunzip_pieces(data.draw(split(packed)), piece=piece))
    assert b"".join(pieces) == body
    assert all(0 < len(p) <= piece for p in pieces)


@given(body=st.binary(max_size=4000), data=st.data())
def test_gzip_cut_short_is_transient_and_junk_after_the_end_is_ignored(body, data):
    packed = gzip.compress(body)
    cut = data.draw(st.integers(1, len(packed) - 1))
    with pytest.raises(TransientFetchError, match="incomplete"):
        list(gunzip_pieces(data.draw(split(packed[:cut]))))
    junk = data.draw(st.binary(max_size=100))
    assert b"".join(gunzip_pieces(data.draw(split(packed + junk)))) == body


@given(raw=st.lists(st.binary(max_size=600), max_size=5))
def test_any_body_labelled_gzip_inflates_or_fails_in_words(raw):
    """Not gzip, or gzip gone wrong: a FetchError in words, never a zlib.error. No bytes at
    all: nothing, without an error (the empty file is refused later, as any empty file)."""
    if not any(raw):
        assert list(gunzip_pieces(raw)) == []
        return
    try:
        b"".join(gunzip_pieces(raw))
    except FetchError as exc:
        assert str(exc)


@given(
    head=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda magic, rest: magic + rest,
            st.sampled_from(
                [b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"%PDF-", b"<!DOCTYPE html>"]
            ),
            st.binary(max_size=200),
        ),
        text.map(lambda t: t.encode("utf-8")),
        st.builds(
            lambda before, page: (before + page).encode("utf-8"),
            st.sampled_from(["", "\ufeff", "  \r\n", "name;price\n"]),
            st.sampled_from(["<HTML><body>Sign in</body>", "<html lang=ru>", "<!doctype html>"]),
        ),
    ),
    expected=st.sampled_from(["csv", "excel", "google_sheets", "url"]),
)
def test_the_kind_comes_from_the_bytes_and_matches_what_the_sheet_expects(
    head, expected, tmp_path_factory
):
    path = tmp_path_factory.getbasetemp() / "sniffed"
    path.write_bytes(head)
    magic = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"%PDF-")
    html = not head.startswith(magic) and b"<html" in head[:1000].lower()
    try:
        kind = sniff(path, expected)
    except PermanentFetchError as exc:
        assert str(exc)
        return
    assert not html  # a login or error page is never taken for a price list
    assert head  # an empty file is never a price list
    assert b"\x00" not in head[:4096] or kind is not CSV  # binary is never taken for CSV
    if expected in ("excel", "google_sheets"):
        assert FILE_TYPES[kind] == "excel"
    if expected == "csv":
        assert kind is CSV
    if head.startswith(b"PK\x03\x04"):
        assert kind is XLSX
    if head.startswith(b"%PDF-"):
        assert kind is PDF


@given(etag=st.one_of(st.none(), text), last_modified=st.one_of(st.none(), text))
def test_only_validators_fit_to_send_back_are_kept(etag, last_modified):
    """A server's ETag / Last-Modified is sent back in a header: printable ASCII, bounded."""
    headers = {k: v for k, v in (("etag", etag), ("last-modified", last_modified)) if v is not None}
    sent = Validators.of(headers).request_headers()
    assert set(sent) <= {"If-None-Match", "If-Modified-Since"}
    for value in sent.values():
        assert value == value.strip() and 0 < len(value) <= MAX_VALIDATOR_LENGTH
        assert all(" " <= ch <= "~" for ch in value)
    if "If-None-Match" in sent:
        assert sent["If-None-Match"] == etag.strip()


secret = st.text(string.ascii_letters + string.digits, min_size=12, max_size=24).map(
    lambda s: "S3cr3t" + s
)


@given(
    password=secret,
    token=secret,
    user=label,
    host=host_names,
    path=nasty.map(quote),
    param=st.sampled_from(["token", "api_key", "Signature", "access_token", "PASSWORD", "code"]),
)
def test_redaction_leaves_no_credential_in_a_url(password, token, user, host, path, param):
    url = f"https://{user}:{password}@{host}/{path}?{param}={token}&page=2"
    shown = redact_url(url)
    assert password not in shown and token not in shown
    assert REDACTED in shown and host in shown and "page=2" in shown


@given(url=st.one_of(hostile_text, st.sampled_from(PRIVATE_URLS + ODD_URLS)))
def test_redaction_reads_any_source_without_an_exception(url):
    """What the metadata shows of any sheet cell: a string, and a credential-free one when
    the cell held user info."""
    shown = redact_url(url)
    assert isinstance(shown, str)
    try:
        parts = urlsplit(url)
    except ValueError:
        assert shown == REDACTED
        return
    if parts.scheme and parts.netloc:
        assert urlsplit(shown).password is None
        assert urlsplit(shown).username in (None, REDACTED)
