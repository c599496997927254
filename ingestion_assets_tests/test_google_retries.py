"""The private export's retries (urllib3's Retry on gspread's session): how many requests the
Drive API sees, and how long the courier waits between them, Retry-After included. gspread's
real service-account code runs against the loopback server, as in test_google_sheets.py."""

from __future__ import annotations

import time
import types
from collections.abc import Iterator

import pytest
from urllib3.util import retry as urllib3_retry

from ingestion_assets.fetching.errors import PermanentFetchError, TransientFetchError
from ingestion_assets.fetching.google_sheets import (
    MAX_ATTEMPTS,
    MAX_WAIT_S,
    XLSX_MIME,
    export_private_sheet,
    export_retry,
)
from ingestion_assets.fetching.streaming import FetchLimits

from .conftest import SHEET_ID
from .loopback import Handler, cut_short, file_body, send

SHEET_URL = f"https://docs.google.com/spreadsheets/d/{SHEET_ID}/edit#gid=0"
EXPORT_PATH = f"/drive/v3/files/{SHEET_ID}/export"
LIMITS = FetchLimits(max_bytes=5 * 1024 * 1024, connect_timeout=2, read_timeout=2, deadline=30)
BODY = b"PK\x03\x04" + b"\0" * 512  # only the bytes matter here, not the workbook


@pytest.fixture
def credentials(google) -> str:
    """The service-account file of conftest's `google`: its token endpoint and Drive API are
    the loopback server."""
    return str(google.path)


def answers(*first: tuple[int, dict[str, str]], then: Handler, arrivals: list[float]) -> Handler:
    """Answer the statuses (and headers) of `first` in turn, then hand over to `then`;
    note when each request arrived."""
    pending = list(first)

    def handler(req) -> None:
        arrivals.append(time.monotonic())
        if pending:
            code, headers = pending.pop(0)
            send(req, code, b"try again later", "text/plain", headers)
        else:
            then(req)

    return handler


@pytest.fixture
def sleeps(monkeypatch) -> Iterator[list[float]]:
    """urllib3's waits between attempts, recorded instead of slept."""
    waited: list[float] = []
    fake_time = types.SimpleNamespace(sleep=waited.append, time=time.time)
    monkeypatch.setattr(urllib3_retry, "time", fake_time)
    yield waited


def test_a_retry_after_of_one_second_is_honoured(server, credentials, staging):
    arrivals: list[float] = []
    server.route(
        EXPORT_PATH,
        answers((429, {"Retry-After": "1"}), then=file_body(BODY, XLSX_MIME), arrivals=arrivals),
    )

    streamed = export_private_sheet(SHEET_URL, credentials, staging, LIMITS, backoff_s=0.01)

    assert streamed.temp_path.read_bytes() == BODY
    assert server.hits[EXPORT_PATH] == 2
    assert arrivals[1] - arrivals[0] >= 0.9  # the server's 1 s, not the 0.01 s backoff


def test_a_retry_after_as_an_http_date_is_honoured(server, credentials, staging, sleeps):
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    server.route(
        EXPORT_PATH,
        answers((503, {"Retry-After": when}), then=file_body(BODY, XLSX_MIME), arrivals=[]),
    )

    export_private_sheet(SHEET_URL, credentials, staging, LIMITS, backoff_s=0.01)

    assert server.hits[EXPORT_PATH] == 2
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 30


def test_a_hostile_retry_after_is_capped(server, credentials, staging, sleeps):
    server.route(
        EXPORT_PATH,
        answers(
            (429, {"Retry-After": "86400"}),
            (429, {"Retry-After": "999999999"}),
            then=file_body(BODY, XLSX_MIME),
            arrivals=[],
        ),
    )

    export_private_sheet(SHEET_URL, credentials, staging, LIMITS, backoff_s=0.01)

    assert server.hits[EXPORT_PATH] == 3
    assert sleeps == [MAX_WAIT_S, MAX_WAIT_S]


def test_the_retry_after_cap_holds_for_dates_too():
    far = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 7 * 86400))
    retry = export_retry(1.0)
    assert retry.parse_retry_after("3600") == MAX_WAIT_S
    assert retry.parse_retry_after(far) == MAX_WAIT_S
    assert retry.parse_retry_after("2") == 2


def test_without_retry_after_the_waits_grow_with_jitter(server, credentials, staging, sleeps):
    server.route(
        EXPORT_PATH,
        answers(*[(503, {})] * (MAX_ATTEMPTS - 1), then=file_body(BODY, XLSX_MIME), arrivals=[]),
    )

    export_private_sheet(SHEET_URL, credentials, staging, LIMITS, backoff_s=1.0)

    assert server.hits[EXPORT_PATH] == MAX_ATTEMPTS
    # urllib3: the second attempt at once, then backoff_s·2, backoff_s·4, each plus up to
    # backoff_s of jitter (a wait of 0 is not slept, so it is not recorded)
    assert len(sleeps) == MAX_ATTEMPTS - 2
    assert 2.0 <= sleeps[0] <= 3.0
    assert 4.0 <= sleeps[1] <= 5.0


def test_the_backoff_really_waits(server, credentials, staging):
    arrivals: list[float] = []
    server.route(
        EXPORT_PATH,
        answers((502, {}), (502, {}), then=file_body(BODY, XLSX_MIME), arrivals=arrivals),
    )

    export_private_sheet(SHEET_URL, credentials, staging, LIMITS, backoff_s=0.2)

    assert server.hits[EXPORT_PATH] == 3
    assert arrivals[2] - arrivals[1] >= 0.35  # 2 × 0.2 s, at least


def test_backoff_zero_waits_for_nothing_not_even_retry_after(server, credentials, staging, sleeps):
    server.route(
        EXPORT_PATH,
        answers(
            (429, {"Retry-After": "30"}), (500, {}), then=file_body(BODY, XLSX_MIME), arrivals=[]
        ),
    )

    export_private_sheet(SHEET_URL, credentials, staging, LIMITS, backoff_s=0)

    assert server.hits[EXPORT_PATH] == 3
    assert sleeps == []


def test_the_last_answer_is_reported_after_the_last_attempt(server, credentials, staging, sleeps):
    server.route(
        EXPORT_PATH,
        answers(
            *[(503, {"Retry-After": "1"})] * (MAX_ATTEMPTS - 1),
            (429, {"Retry-After": "1"}),
            then=file_body(BODY, XLSX_MIME),
            arrivals=[],
        ),
    )

    with pytest.raises(TransientFetchError) as caught:
        export_private_sheet(SHEET_URL, credentials, staging, LIMITS, backoff_s=0.01)

    assert str(caught.value) == f"Google Drive answered HTTP 429 {MAX_ATTEMPTS} times in a row"
    assert server.hits[EXPORT_PATH] == MAX_ATTEMPTS
    assert sleeps == [1] * (MAX_ATTEMPTS - 1)  # no wait after the last answer


def test_a_413_with_retry_after_is_not_retried(server, credentials, staging, sleeps):
    server.route(
        EXPORT_PATH,
        answers((413, {"Retry-After": "1"}), then=file_body(BODY, XLSX_MIME), arrivals=[]),
    )

    with pytest.raises(PermanentFetchError, match="HTTP 413"):
        export_private_sheet(SHEET_URL, credentials, staging, LIMITS, backoff_s=0.01)

    assert server.hits[EXPORT_PATH] == 1
    assert sleeps == []


def test_a_body_cut_short_is_not_retried_here(server, credentials, staging):
    """The fetch as a whole is retried as a transient failure; the export is not re-sent."""
    server.route(EXPORT_PATH, cut_short(BODY, claimed=50_000))

    with pytest.raises(TransientFetchError, match="broke off"):
        export_private_sheet(SHEET_URL, credentials, staging, LIMITS, backoff_s=0.01)

    assert server.hits[EXPORT_PATH] == 1
