"""MLAnalyzeClient over real HTTP: the reference ml-analyze, and loopback servers that misbehave.

Backoff is asserted through a recording `sleep`, so no test waits for it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from ingestion_assets.ml.client import (
    JobNotFound,
    MLAnalyzeClient,
    MLAnalyzeError,
    MLAnalyzeUnavailable,
)
from ingestion_assets.ml.models import JobStatus

from .loopback import LoopbackServer, fail_then, send, status
from .ml_server import SUPPLIER_ID, RunningServer

SUBMIT = "/analyze/file"
JOB_ID = "8c5f0e3a-1b2d-4c6e-9f70-a1b2c3d4e5f6"
STATUS = f"/analyze/status/{JOB_ID}"


# --- helpers -----------------------------------------------------------------


class Delays(list):
    """A `sleep` that records instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(url: str, **options: Any) -> tuple[MLAnalyzeClient, Delays]:
    delays = Delays()
    options.setdefault("timeout", 5)
    options.setdefault("jitter", 0)  # exact delays; test_retry_waits_carry_jitter checks it
    return MLAnalyzeClient(url, sleep=delays, **options), delays


def read_body(req: BaseHTTPRequestHandler) -> bytes:
    """Consume the request body: an unread body would poison the kept-alive connection."""
    length = int(req.headers.get("Content-Length") or 0)
    return req.rfile.read(length) if length else b""


def answer_json(code: int, body: Any):
    """Answer JSON without reading the request (for handlers that read it themselves)."""
    payload = json.dumps(body).encode()
    return lambda req: send(req, code, payload, "application/json")


def reply_json(code: int, body: Any):
    return draining(answer_json(code, body))


def draining(handler):
    """Wrap a loopback handler so POST bodies are read before it answers."""

    def wrapped(req: BaseHTTPRequestHandler) -> None:
        read_body(req)
        handler(req)

    return wrapped


def job_body(job_id: str = JOB_ID, **fields: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": "processing",
        "progress_percentage": 40,
        "items_processed": 4,
        "items_total": 10,
        "errors": [],
        "created_at": "2025-03-01T10:00:00+00:00",
        "started_at": "2025-03-01T10:00:01+00:00",
        "completed_at": None,
        **fields,
    }


ACCEPTED = {"job_id": JOB_ID, "status": "pending", "message": "queued"}


def write_xlsx(path: Path, rows: list[list[Any]]) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


# A price list as suppliers send it: a banner, a blank line, the header on row 3.
PRICE_LIST_ROWS: list[list[Any]] = [
    ["ООО «Тест-Снаб» — прайс-лист на 01.03.2025"],
    [],
    ["Наименование", "Артикул", "Цена, руб."],
    ["Дрель ударная Bosch GSB 13 RE", "06011A2000", "4 590,00 ₽"],
    ["Перфоратор Bosch GBH 2-26 DRE", "0611253708", 12990],
    ["Молоток слесарный 500 г Зубр", "20050-500", "по запросу"],  # row 6: no usable price
    ["Кофемашина Delonghi Magnifica", "ECAM22", "32 000"],
]


# --- the reference server ----------------------------------------------------


@pytest.fixture
def ref_client(module_ml_service: RunningServer) -> Iterator[tuple[MLAnalyzeClient, Delays]]:
    client, delays = make_client(module_ml_service.url)
    yield client, delays
    client.close()


def wait_finished(client: MLAnalyzeClient, job_id: str, timeout: float = 10) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        job = client.status(job_id)
        if not job.running:
            return job
        assert time.monotonic() < deadline, f"job never finished: {job}"
        time.sleep(0.02)


def test_health_of_the_reference_server_is_ready(ref_client) -> None:
    client, delays = ref_client
    health = client.health()
    assert health.status == "healthy" and health.ready
    assert health.version
    assert delays == []


def test_an_xlsx_price_list_is_analysed_to_completion(ref_client, tmp_path: Path) -> None:
    client, delays = ref_client
    path = write_xlsx(tmp_path / "prices.xlsx", PRICE_LIST_ROWS)

    submission = client.submit(str(path), SUPPLIER_ID, "excel")
    assert submission.status == "pending" and submission.job_id and submission.message

    done = wait_finished(client, submission.job_id)
    assert done.job_id == submission.job_id
    assert done.status == "completed" and done.finished_ok and not done.running
    assert (done.items_total, done.items_processed, done.progress_percentage) == (4, 4, 100)
    assert (done.successful_extractions, done.failed_extractions) == (3, 1)
    # The reference server gives match counts: they are parsed, and they add up.
    assert done.items_matched is not None and done.items_matched >= 2
    assert done.items_review is not None and done.items_unmatched is not None
    assert done.items_matched + done.items_review + done.items_unmatched == 3
    # Partial success: the row without a price is reported, the job still completed.
    assert len(done.errors) == 1 and "Row 6" in done.errors[0]
    assert done.created_at and done.started_at and done.completed_at
    assert delays == []


def test_a_csv_price_list_is_analysed_to_completion(ref_client, tmp_path: Path) -> None:
    client, _ = ref_client
    path = tmp_path / "prices.csv"
    path.write_text(
        "name,sku,price\n"
        "Перфоратор Bosch GBH 2-26 DRE,P-1,12990\n"
        "Угловая шлифмашина Makita GA9020,G-1,$89.50\n",
        encoding="utf-8",
    )
    done = wait_finished(client, client.submit(str(path), SUPPLIER_ID, "csv").job_id)
    assert (done.status, done.items_total, done.items_processed, done.errors) == (
        "completed",
        2,
        2,
        [],
    )
    assert done.items_matched is not None


def test_an_unknown_job_is_job_not_found(ref_client) -> None:
    client, delays = ref_client
    with pytest.raises(JobNotFound) as raised:
        client.status("00000000-0000-4000-8000-000000000000")
    assert raised.value.status_code == 404
    assert "Job not found" in str(raised.value)
    assert delays == []


def test_a_pdf_fails_with_the_servers_message(ref_client, tmp_path: Path) -> None:
    client, _ = ref_client
    path = tmp_path / "prices.pdf"
    path.write_bytes(b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n")
    done = wait_finished(client, client.submit(str(path), SUPPLIER_ID, "pdf").job_id)
    assert done.status == "failed" and not done.finished_ok
    assert any("PDF is not supported" in error for error in done.errors)


def test_a_missing_file_is_refused_at_once_with_the_services_message(
    ref_client, tmp_path: Path
) -> None:
    client, delays = ref_client
    missing = tmp_path / "gone.xlsx"
    with pytest.raises(MLAnalyzeError) as raised:
        client.submit(str(missing), SUPPLIER_ID, "excel")
    assert type(raised.value) is MLAnalyzeError and not raised.value.retryable
    assert raised.value.status_code == 400
    assert f"File not found: {missing}" in str(raised.value)
    assert delays == []  # never retried


def test_a_bad_supplier_id_is_a_422_with_the_detail_rendered(ref_client, tmp_path: Path) -> None:
    client, delays = ref_client
    path = write_xlsx(tmp_path / "prices.xlsx", PRICE_LIST_ROWS)
    with pytest.raises(MLAnalyzeError) as raised:
        client.submit(str(path), "not-a-uuid", "excel")
    assert raised.value.status_code == 422
    message = str(raised.value)
    assert "body.supplier_id: Input should be a valid UUID" in message
    assert "[{" not in message  # rendered, not a dumped list
    assert delays == []


# --- retries and faults, against a loopback server ---------------------------


def test_a_503_then_success_is_retried_once(server: LoopbackServer) -> None:
    server.route(STATUS, fail_then(1, 503, reply_json(200, job_body())))
    client, delays = make_client(server.url(""))
    job = client.status(JOB_ID)
    assert job.job_id == JOB_ID and job.items_total == 10
    assert server.hits[STATUS] == 2
    assert delays == [1]


def test_a_submit_retried_after_a_503_sends_the_same_body(server: LoopbackServer) -> None:
    bodies: list[bytes] = []

    def record(then):
        def handler(req):
            bodies.append(read_body(req))
            then(req)

        return handler

    server.route(SUBMIT, record(fail_then(1, 503, answer_json(202, ACCEPTED))))
    client, delays = make_client(server.url(""))
    assert client.submit("/shared/uploads/a.xlsx", SUPPLIER_ID, "excel").job_id == JOB_ID
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert delays == [1]


def test_503_forever_is_unavailable_after_four_requests(server: LoopbackServer) -> None:
    server.route(STATUS, status(503, b"temporarily unavailable"))
    client, delays = make_client(server.url(""))
    with pytest.raises(MLAnalyzeUnavailable) as raised:
        client.status(JOB_ID)
    assert server.hits[STATUS] == 4
    assert delays == [1, 2, 4]
    assert raised.value.status_code == 503 and raised.value.retryable
    assert "temporarily unavailable" in str(raised.value)


def test_a_failing_submit_is_retried_the_same_way(server: LoopbackServer) -> None:
    server.route(SUBMIT, draining(status(503)))
    client, delays = make_client(server.url(""))
    with pytest.raises(MLAnalyzeUnavailable):
        client.submit("/shared/uploads/a.xlsx", SUPPLIER_ID, "excel")
    assert server.hits[SUBMIT] == 4
    assert delays == [1, 2, 4]


def test_backoff_is_capped_at_max_backoff(server: LoopbackServer) -> None:
    server.route("/health", status(503))
    client, delays = make_client(server.url(""), backoff=10, max_backoff=30)
    with pytest.raises(MLAnalyzeUnavailable):
        client.health()
    assert delays == [10, 20, 30]

    client, delays = make_client(server.url(""), retries=6, backoff=1, max_backoff=30)
    with pytest.raises(MLAnalyzeUnavailable):
        client.health()
    assert delays == [1, 2, 4, 8, 16, 30]


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_server_errors_are_retried(server: LoopbackServer, code: int) -> None:
    server.route("/health", fail_then(2, code, reply_json(200, {"status": "healthy"})))
    client, delays = make_client(server.url(""))
    assert client.health().ready
    assert server.hits["/health"] == 3
    assert delays == [1, 2]


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (
            {"error": "ValidationError", "message": "file_type must be excel, csv or pdf"},
            "ValidationError: file_type must be excel, csv or pdf",
        ),
        (
            {"detail": "File not found: /shared/uploads/a.xlsx"},
            "File not found: /shared/uploads/a.xlsx",
        ),
    ],
    ids=["error-message", "detail"],
)
def test_a_400_fails_at_once_with_the_services_message(
    server: LoopbackServer, body: dict[str, Any], shown: str
) -> None:
    server.route(SUBMIT, reply_json(400, body))
    client, delays = make_client(server.url(""))
    with pytest.raises(MLAnalyzeError) as raised:
        client.submit("/shared/uploads/a.xlsx", SUPPLIER_ID, "excel")
    assert type(raised.value) is MLAnalyzeError and raised.value.status_code == 400
    assert shown in str(raised.value)
    assert server.hits[SUBMIT] == 1
    assert delays == []


def test_a_422_detail_list_is_rendered(server: LoopbackServer) -> None:
    detail = [
        {
            "type": "uuid_parsing",
            "loc": ["body", "supplier_id"],
            "msg": "Input should be a valid UUID",
        },
        {"type": "missing", "loc": ["body", "file_type"], "msg": "Field required"},
    ]
    server.route(SUBMIT, reply_json(422, {"detail": detail}))
    client, delays = make_client(server.url(""))
    with pytest.raises(MLAnalyzeError) as raised:
        client.submit("/shared/uploads/a.xlsx", "nope", "excel")
    assert raised.value.status_code == 422
    assert "body.supplier_id: Input should be a valid UUID; body.file_type: Field required" in str(
        raised.value
    )
    assert server.hits[SUBMIT] == 1 and delays == []


@pytest.mark.parametrize("code", [401, 403, 404, 409, 429])
def test_other_4xx_fail_at_once(server: LoopbackServer, code: int) -> None:
    server.route(SUBMIT, reply_json(code, {"detail": f"nope {code}"}))
    client, delays = make_client(server.url(""))
    with pytest.raises(MLAnalyzeError) as raised:
        client.submit("/shared/uploads/a.xlsx", SUPPLIER_ID, "excel")
    assert type(raised.value) is MLAnalyzeError  # a 404 on submit is no JobNotFound
    assert raised.value.status_code == code and f"nope {code}" in str(raised.value)
    assert server.hits[SUBMIT] == 1 and delays == []


def test_a_plain_text_error_body_is_shown(server: LoopbackServer) -> None:
    server.route(STATUS, status(400, b"bad request from the proxy"))
    client, _ = make_client(server.url(""))
    with pytest.raises(MLAnalyzeError, match="bad request from the proxy"):
        client.status(JOB_ID)


def test_an_answer_slower_than_the_timeout_is_unavailable_after_retries(
    server: LoopbackServer,
) -> None:
    """The answer comes only once the test is over: each of the four attempts ends by its
    0.1 s timeout, and the waits between them go to the injected sleep, not the clock."""
    release = threading.Event()

    def slow(req):
        release.wait(10)
        send(req, 200, json.dumps(job_body()).encode(), "application/json")

    server.route(STATUS, slow)
    client, delays = make_client(server.url(""), timeout=0.1, jitter=0)
    try:
        with pytest.raises(MLAnalyzeUnavailable) as raised:
            client.status(JOB_ID)
    finally:
        release.set()
    assert server.hits[STATUS] == 4
    assert delays == [1, 2, 4]  # every backoff went to the fake sleep
    assert "Timeout" in str(raised.value)


def test_a_refused_connection_is_unavailable(free_port: int) -> None:
    client, delays = make_client(f"http://127.0.0.1:{free_port}")
    with pytest.raises(MLAnalyzeUnavailable) as raised:
        client.health()
    assert raised.value.status_code is None and raised.value.retryable
    assert f"127.0.0.1:{free_port}" in str(raised.value)
    assert delays == [1, 2, 4]


def test_status_without_retry_makes_one_attempt(server: LoopbackServer) -> None:
    server.route(STATUS, status(503))
    client, delays = make_client(server.url(""))
    with pytest.raises(MLAnalyzeUnavailable):
        client.status(JOB_ID, retry=False)
    assert server.hits[STATUS] == 1
    assert delays == []


def test_status_without_retry_on_a_refused_connection(free_port: int) -> None:
    client, delays = make_client(f"http://127.0.0.1:{free_port}")
    with pytest.raises(MLAnalyzeUnavailable):
        client.status(JOB_ID, retry=False)
    assert delays == []


def test_a_404_on_status_is_job_not_found_without_retry(server: LoopbackServer) -> None:
    server.route(STATUS, reply_json(404, {"detail": "Job not found"}))
    client, delays = make_client(server.url(""))
    with pytest.raises(JobNotFound) as raised:
        client.status(JOB_ID)
    assert raised.value.status_code == 404
    assert JOB_ID in str(raised.value) and "Job not found" in str(raised.value)
    assert server.hits[STATUS] == 1 and delays == []


def test_a_status_with_unknown_fields_and_without_optional_ones_parses(
    server: LoopbackServer,
) -> None:
    body = {
        "job_id": JOB_ID,
        "status": "processing",
        "progress_percentage": 25,
        "items_processed": 5,
        "items_total": 20,
        "errors": [],
        "created_at": "2025-03-01T10:00:00Z",
        "started_at": None,
        "completed_at": None,
        "worker": "gpu-3",
        "llm": {"model": "llama3", "tokens": 1234},
    }
    server.route(STATUS, reply_json(200, body))
    client, _ = make_client(server.url(""))
    job = client.status(JOB_ID)
    assert (job.status, job.progress_percentage, job.items_processed, job.items_total) == (
        "processing",
        25,
        5,
        20,
    )
    assert job.running and not job.finished_ok
    for optional in (
        "phase",
        "successful_extractions",
        "failed_extractions",
        "duplicates_removed",
        "items_matched",
        "items_review",
        "items_unmatched",
    ):
        assert getattr(job, optional) is None, optional
    assert not hasattr(job, "worker")


def test_a_minimal_status_parses_with_defaults(server: LoopbackServer) -> None:
    server.route(STATUS, reply_json(200, {"job_id": JOB_ID, "status": "pending"}))
    client, _ = make_client(server.url(""))
    job = client.status(JOB_ID)
    assert (job.progress_percentage, job.items_total, job.errors, job.created_at) == (
        0,
        0,
        [],
        None,
    )


def test_optional_fields_are_used_when_present(server: LoopbackServer) -> None:
    server.route(
        STATUS,
        reply_json(
            200,
            job_body(
                status="completed_with_errors",
                phase="done",
                successful_extractions=8,
                failed_extractions=2,
                duplicates_removed=1,
                items_matched=5,
                items_review=2,
                errors=["Row 7: price is missing", "Row 9: price is missing"],
            ),
        ),
    )
    client, _ = make_client(server.url(""))
    job = client.status(JOB_ID)
    assert job.finished_ok and not job.running
    assert (job.phase, job.successful_extractions, job.failed_extractions) == ("done", 8, 2)
    assert (job.duplicates_removed, job.items_matched, job.items_review) == (1, 5, 2)
    assert job.items_unmatched is None
    assert len(job.errors) == 2


@pytest.mark.parametrize("answer", ["degraded", "unhealthy", None])
def test_a_health_other_than_healthy_is_not_ready(server: LoopbackServer, answer) -> None:
    body = {"version": "1.4.0", "service": "ml-analyze", "checks": {"ollama": {"status": "down"}}}
    if answer:
        body["status"] = answer
    server.route("/health", reply_json(200, body))
    client, delays = make_client(server.url(""))
    health = client.health()
    assert not health.ready
    assert health.status == (answer or "unknown")
    assert delays == []


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Service Temporarily Down for Maintenance</body></html>",
        json.dumps({"job_id": JOB_ID, "status": "processing", "errors": None}).encode(),
        json.dumps({"message": "ok"}).encode(),
    ],
    ids=["html", "null-errors", "no-job-id"],
)
def test_an_unreadable_2xx_answer_is_an_ml_analyze_error(server: LoopbackServer, body) -> None:
    """Not a bare ValueError: the poller must be able to keep it as one job's answer."""
    server.route(STATUS, lambda req: send(req, 200, body, "text/html"))
    client, delays = make_client(server.url(""))
    with pytest.raises(MLAnalyzeError) as raised:
        client.status(JOB_ID, retry=False)
    assert raised.value.status_code == 200
    assert delays == []


def test_submit_sends_exactly_the_contracts_fields(server: LoopbackServer) -> None:
    requests: list[dict[str, Any]] = []

    def capture(req: BaseHTTPRequestHandler) -> None:
        raw = req.rfile.read(int(req.headers["Content-Length"]))
        requests.append(
            {
                "method": req.command,
                "path": req.path,
                "content_type": req.headers["Content-Type"],
                "body": json.loads(raw),
            }
        )
        send(
            req,
            202,
            json.dumps({"job_id": JOB_ID, "status": "pending"}).encode(),
            "application/json",
        )

    server.route(SUBMIT, capture)
    client, _ = make_client(server.url("/"))  # a trailing slash on the base URL is harmless

    submission = client.submit("/shared/uploads/acme.xlsx", SUPPLIER_ID, "excel")
    assert (submission.job_id, submission.status, submission.message) == (JOB_ID, "pending", None)
    client.submit(
        "/shared/uploads/acme.csv",
        SUPPLIER_ID,
        "csv",
        metadata={"partition": "acme", "attempt": 2},
        priority_sheet="Прайс",
    )

    plain, with_metadata = requests
    assert plain["method"] == "POST" and plain["path"] == SUBMIT
    assert plain["content_type"] == "application/json"
    # Both generations: `file_url` (the contract) and `file_path` (a later branch prefers it).
    assert plain["body"] == {
        "file_url": "/shared/uploads/acme.xlsx",
        "file_path": "/shared/uploads/acme.xlsx",
        "supplier_id": SUPPLIER_ID,
        "file_type": "excel",
    }
    assert with_metadata["body"] == {
        "file_url": "/shared/uploads/acme.csv",
        "file_path": "/shared/uploads/acme.csv",
        "supplier_id": SUPPLIER_ID,
        "file_type": "csv",
        "priority_sheet": "Прайс",
        "metadata": {"partition": "acme", "attempt": 2},
    }
    assert not plain["body"]["file_url"].startswith("file://")


def test_the_client_is_a_context_manager(server: LoopbackServer) -> None:
    server.route("/health", reply_json(200, {"status": "healthy"}))
    with MLAnalyzeClient(server.url("")) as client:
        assert client.health().ready
    with pytest.raises(RuntimeError):  # httpx refuses requests on a closed client
        client.health()


def test_retry_waits_carry_jitter(server: LoopbackServer) -> None:
    """Many runs retrying a busy service do not come back in step: each wait is the exponential
    base plus up to `jitter` seconds, still capped."""
    server.route("/health", status(503))
    client, delays = make_client(server.url(""), retries=5, jitter=1.0, max_backoff=6)
    with pytest.raises(MLAnalyzeUnavailable):
        client.health()
    bases = [1, 2, 4, 6, 6]
    assert len(delays) == len(bases)
    assert all(base <= d <= min(base + 1.0, 6) for d, base in zip(delays, bases, strict=True))
    assert len({round(d - base, 6) for d, base in zip(delays, bases, strict=True)}) > 1


def test_a_retry_after_from_the_service_is_honoured_and_capped(server: LoopbackServer) -> None:
    def busy(seconds: str):
        return lambda req: send(
            req, 503, b'{"detail": "busy"}', "application/json", {"Retry-After": seconds}
        )

    server.route("/health", busy("7"))
    client, delays = make_client(server.url(""), retries=1)
    with pytest.raises(MLAnalyzeUnavailable) as raised:
        client.health()
    assert delays == [7] and raised.value.retry_after == 7
    server.route("/health", busy("3600"))
    client, delays = make_client(server.url(""), retries=2, max_backoff=30)
    with pytest.raises(MLAnalyzeUnavailable):
        client.health()
    assert delays == [30, 30]  # a service cannot park a run for an hour
