"""Following ml-analyze jobs (tracking.py): decisions, the cursor, the summary, concurrent polling."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ingestion_assets.ml.client import (
    JobNotFound,
    MLAnalyzeClient,
    MLAnalyzeError,
    MLAnalyzeUnavailable,
)
from ingestion_assets.ml.models import JobStatus
from ingestion_assets.ml.polling import poll_statuses
from ingestion_assets.ml.tracking import (
    Next,
    TrackedJob,
    TrackerState,
    decide,
    summary_metadata,
)

from .loopback import LoopbackServer, send, status
from .ml_server import SUPPLIER_ID, RunningServer

SUBMITTED_AT = 1_700_000_000.0
STALL_S = 30 * 60
MAX_ATTEMPTS = 3


def tracked(job_id: str = "job-1", **fields: Any) -> TrackedJob:
    values: dict[str, Any] = {
        "job_id": job_id,
        "partition": "acme-tools",
        "attempt": 1,
        "checksum_md5": "0cc175b9c0f1b6a831c399e269772661",
        "shared_path": "/shared/uploads/acme-tools.xlsx",
        "staged_path": "/data/staging/acme-tools.xlsx",
        "submitted_at": SUBMITTED_AT,
        **fields,
    }
    return TrackedJob(**values)


def job_status(state: str = "processing", **fields: Any) -> JobStatus:
    return JobStatus(job_id="job-1", status=state, **fields)


def run(job: TrackedJob, answer, after_s: float = 60, log_messages: tuple[str, ...] = ()):
    return decide(job, answer, SUBMITTED_AT + after_s, STALL_S, MAX_ATTEMPTS, log_messages)


def seen(job: TrackedJob, answer: JobStatus, at_s: float = 0) -> TrackedJob:
    """The job as the sensor left it after a poll that gave `answer` at `at_s`."""
    job.moved(answer, SUBMITTED_AT + at_s)
    return job


# --- decide --------------------------------------------------------------------


@pytest.mark.parametrize("state", ["completed", "completed_with_errors"])
def test_a_finished_job_is_completed(state: str) -> None:
    answer = job_status(state, progress_percentage=100, items_total=4, errors=["Row 6: bad"])
    outcome = run(tracked(), answer)
    assert outcome.kind == Next.COMPLETED and outcome.status is answer and outcome.reason == ""


def test_completion_wins_over_the_stall_timeout() -> None:
    outcome = run(tracked(attempt=MAX_ATTEMPTS), job_status("completed"), after_s=STALL_S * 10)
    assert outcome.kind == Next.COMPLETED


def test_a_failed_job_is_resubmitted_while_attempts_remain() -> None:
    answer = job_status("failed", errors=["File parsing failed"])
    for attempt in range(1, MAX_ATTEMPTS):
        outcome = run(tracked(attempt=attempt), answer, log_messages=("[llm] Ollama timed out",))
        assert outcome.kind == Next.RESUBMIT, attempt
        assert outcome.errors == ("File parsing failed", "[llm] Ollama timed out")
        assert "failed" in outcome.reason and outcome.status is answer


@pytest.mark.parametrize(
    ("errors", "logs", "cause"),
    [
        (["Unsupported file type: csv"], (), "cannot parse this type"),
        (["PDF is not supported by the reference server"], (), "cannot parse this type"),
        (["File not found: /shared/uploads/x.xlsx"], (), "cannot see the handed-off file"),
        (
            ["File parsing failed"],
            (
                '[database] insert or update on table "supplier_items" violates foreign key '
                'constraint "supplier_items_supplier_id_fkey"',
            ),
            "no row in the catalogue",
        ),
        (
            ["File parsing failed"],
            ('[database] duplicate key value violates unique constraint "unique_supplier_sku"',),
            "already holds these SKUs",
        ),
    ],
)
def test_a_cause_that_will_not_heal_is_not_resubmitted(errors, logs, cause) -> None:
    """Classified from the status's errors or the catalogue's log rows, at the first attempt."""
    outcome = run(tracked(attempt=1), job_status("failed", errors=errors), log_messages=logs)
    assert outcome.kind == Next.GIVE_UP
    assert "will not heal" in outcome.reason and cause in outcome.reason
    assert outcome.errors == (*errors, *logs)


def test_a_failed_job_is_given_up_at_the_last_attempt() -> None:
    answer = job_status("failed", errors=["Could not read the file", "Row 3: no price"])
    for attempt in (MAX_ATTEMPTS, MAX_ATTEMPTS + 1):
        outcome = run(tracked(attempt=attempt), answer)
        assert outcome.kind == Next.GIVE_UP
        assert outcome.errors == ("Could not read the file", "Row 3: no price")


@pytest.mark.parametrize(
    ("attempt", "kind"), [(1, Next.RESUBMIT), (2, Next.RESUBMIT), (3, Next.GIVE_UP)]
)
def test_a_lost_job_is_resubmitted_or_given_up(attempt: int, kind: str) -> None:
    lost = JobNotFound("ml-analyze does not know job job-1: Job not found", status_code=404)
    outcome = run(tracked(attempt=attempt), lost)
    assert outcome.kind == kind
    assert "lost" in outcome.reason and "404" in outcome.reason
    assert outcome.status is None and outcome.errors == ()


def test_another_refusal_on_status_is_a_failure_with_its_message() -> None:
    refused = MLAnalyzeError("ml-analyze refused GET ...: HTTP 400: bad job id", status_code=400)
    assert run(tracked(), refused).kind == Next.RESUBMIT
    outcome = run(tracked(attempt=MAX_ATTEMPTS), refused)
    assert outcome.kind == Next.GIVE_UP and "bad job id" in outcome.reason


@pytest.mark.parametrize("attempt", [1, MAX_ATTEMPTS])
@pytest.mark.parametrize("after_s", [60, STALL_S * 5])
def test_an_unreachable_service_only_means_wait(attempt: int, after_s: float) -> None:
    """Never final: not at the last attempt, not even long past the stall timeout."""
    down = MLAnalyzeUnavailable("ml-analyze at http://ml-analyze:8001 is unreachable")
    outcome = run(tracked(attempt=attempt, last_progress=40), down, after_s=after_s)
    assert outcome.kind == Next.WAIT and "unreachable" in outcome.reason


@pytest.mark.parametrize("state", ["processing", "pending"])
@pytest.mark.parametrize("attempt", [1, MAX_ATTEMPTS])
def test_a_job_with_no_progress_past_the_timeout_is_stalled_and_not_resubmitted(
    state: str, attempt: int
) -> None:
    """It may still be running (a restarted service leaves jobs 'processing' forever): a second
    job would store every row twice, so it is reported, never resubmitted."""
    answer = job_status(state, progress_percentage=40)
    job = seen(tracked(attempt=attempt), answer, at_s=600)
    outcome = run(job, answer, after_s=600 + STALL_S + 1)
    assert outcome.kind == Next.GIVE_UP
    assert "no progress for 30 min" in outcome.reason and state in outcome.reason
    assert "not resubmitted" in outcome.reason and "force=true" in outcome.reason


def test_a_job_is_not_stalled_up_to_the_timeout_since_its_last_progress() -> None:
    answer = job_status("processing", progress_percentage=40)
    job = seen(tracked(), answer, at_s=STALL_S)  # long after submission, but it moved then
    assert run(job, answer, after_s=STALL_S * 2).kind == Next.WAIT
    assert run(job, answer, after_s=STALL_S * 2 + 1).kind == Next.GIVE_UP


def test_a_slow_job_that_keeps_moving_is_never_stalled() -> None:
    job = tracked()
    for step in range(1, 10):
        answer = job_status("processing", progress_percentage=step * 10, items_processed=step)
        assert run(job, answer, after_s=step * (STALL_S - 1)).kind == Next.PROGRESS


def test_changed_progress_is_reported() -> None:
    first = run(tracked(), job_status("pending", progress_percentage=0))
    assert first.kind == Next.PROGRESS  # nothing reported yet
    later = run(tracked(last_progress=40), job_status(progress_percentage=55, items_processed=55))
    assert later.kind == Next.PROGRESS and later.status.items_processed == 55


def test_unchanged_progress_is_a_wait() -> None:
    answer = job_status(progress_percentage=40)
    outcome = run(seen(tracked(), answer), answer)
    assert outcome.kind == Next.WAIT and outcome.status is answer


# --- the cursor ----------------------------------------------------------------


def test_tracker_state_round_trips_through_json() -> None:
    state = TrackerState(
        after_storage_id=4711,
        jobs={
            "job-1": tracked("job-1"),
            "job-2": tracked(
                "job-2", partition="beta", attempt=3, last_progress=55, last_polled=SUBMITTED_AT + 5
            ),
        },
        backoff_until=SUBMITTED_AT + 20,
        unreachable_ticks=2,
    )
    raw = state.to_json()
    json.loads(raw)  # a plain JSON cursor
    again = TrackerState.from_json(raw)
    assert again == state
    assert isinstance(again.jobs["job-2"], TrackedJob)
    assert again.jobs["job-2"].last_progress == 55
    assert TrackerState.from_json(again.to_json()).to_json() == raw


@pytest.mark.parametrize("raw", [None, ""])
def test_no_cursor_is_an_empty_state(raw) -> None:
    state = TrackerState.from_json(raw)
    assert state == TrackerState()
    assert (state.after_storage_id, state.jobs, state.backoff_until, state.unreachable_ticks) == (
        0,
        {},
        0.0,
        0,
    )


# --- the summary ---------------------------------------------------------------


def test_summary_shows_the_match_counts_the_service_gave() -> None:
    status = job_status(
        "completed",
        items_total=120,
        items_processed=120,
        items_matched=80,
        items_review=25,
        items_unmatched=10,
        successful_extractions=115,
        failed_extractions=5,
        duplicates_removed=3,
    )
    metadata = summary_metadata(tracked(attempt=2), status)
    assert metadata["outcome"] == "completed"
    assert (metadata["items_total"], metadata["items_processed"]) == (120, 120)
    assert (metadata["items_matched"], metadata["items_review"], metadata["items_unmatched"]) == (
        80,
        25,
        10,
    )
    assert (metadata["successful_extractions"], metadata["failed_extractions"]) == (115, 5)
    assert metadata["duplicates_removed"] == 3
    assert (metadata["ml_job_id"], metadata["attempt"]) == ("job-1", 2)
    assert metadata["checksum_md5"] == tracked().checksum_md5
    assert metadata["shared_path"] == "/shared/uploads/acme-tools.xlsx"
    assert (metadata["error_count"], metadata["first_errors"]) == (0, "none")


def test_summary_never_invents_absent_counts() -> None:
    metadata = summary_metadata(
        tracked(), job_status("completed", items_total=7, items_processed=7)
    )
    for absent in (
        "items_matched",
        "items_review",
        "items_unmatched",
        "successful_extractions",
        "failed_extractions",
        "duplicates_removed",
    ):
        assert absent not in metadata, absent


def test_a_zero_count_is_shown_not_dropped() -> None:
    metadata = summary_metadata(tracked(), job_status("completed", items_matched=0, items_review=0))
    assert (metadata["items_matched"], metadata["items_review"]) == (0, 0)


def test_errors_on_a_completed_job_mean_completed_with_warnings() -> None:
    errors = [f"Row {n}: price is missing" for n in range(1, 16)]
    metadata = summary_metadata(tracked(), job_status("completed", items_total=30, errors=errors))
    assert metadata["outcome"] == "completed with warnings"
    assert metadata["error_count"] == 15
    assert metadata["first_errors"].splitlines() == errors[:10]


def test_completed_with_errors_is_a_warning_even_without_an_error_list() -> None:
    metadata = summary_metadata(tracked(), job_status("completed_with_errors", errors=[]))
    assert metadata["outcome"] == "completed with warnings"


@pytest.mark.parametrize(
    ("created", "started", "completed"),
    [
        ("2025-03-01T10:00:00Z", "2025-03-01T10:00:02.500Z", "2025-03-01T10:01:02.500Z"),
        (
            "2025-03-01T10:00:00+00:00",
            "2025-03-01T10:00:02.500000+00:00",
            "2025-03-01T10:01:02.500000+00:00",
        ),
        (
            "2025-03-01T13:00:00+03:00",
            "2025-03-01T10:00:02.500+00:00",
            "2025-03-01T11:01:02.500+01:00",
        ),
        ("2025-03-01T10:00:00", "2025-03-01T10:00:02.500", "2025-03-01T10:01:02.500"),
    ],
    ids=["z", "offset", "mixed-offsets", "naive"],
)
def test_durations_come_from_the_iso_timestamps(created, started, completed) -> None:
    status = job_status("completed", created_at=created, started_at=started, completed_at=completed)
    metadata = summary_metadata(tracked(), status)
    assert (metadata["queued_s"], metadata["analysis_s"]) == (2.5, 60.0)


def test_durations_are_left_out_when_timestamps_are_missing_or_unreadable() -> None:
    never_started = job_status("completed", created_at="2025-03-01T10:00:00Z")
    metadata = summary_metadata(tracked(), never_started)
    assert "queued_s" not in metadata and "analysis_s" not in metadata

    garbled = job_status(
        "completed",
        created_at="yesterday",
        started_at="2025-03-01T10:00:02Z",
        completed_at="2025-03-01T10:00:12Z",
    )
    metadata = summary_metadata(tracked(), garbled)
    assert "queued_s" not in metadata and metadata["analysis_s"] == 10.0


# --- poll_statuses -----------------------------------------------------------------


def status_route(job_id: str, delay: float = 0.0):
    body = json.dumps(
        {
            "job_id": job_id,
            "status": "processing",
            "progress_percentage": 50,
            "items_processed": 5,
            "items_total": 10,
            "errors": [],
            "created_at": "2025-03-01T10:00:00Z",
        }
    ).encode()

    def handler(req) -> None:
        if delay:
            time.sleep(delay)
        send(req, 200, body, "application/json")

    return handler


def many_jobs(server: LoopbackServer, count: int, delay: float = 0.0) -> list[TrackedJob]:
    jobs = [tracked(str(uuid.uuid4())) for _ in range(count)]
    for job in jobs:
        server.route(f"/analyze/status/{job.job_id}", status_route(job.job_id, delay))
    return jobs


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"the test's client must not back off {seconds} s")


def poll(url: str, jobs: list[TrackedJob], budget_s: float = 10, **options: Any):
    return poll_statuses(
        url, [job.job_id for job in jobs], budget_s=budget_s, timeout_s=5, **options
    )


def test_poll_statuses_answers_every_job_within_the_budget(server: LoopbackServer) -> None:
    jobs = many_jobs(server, 200)
    lost = tracked("lost-job")  # no route: the loopback answers 404
    answers = poll(server.url(""), [*jobs, lost])
    assert set(answers) == {job.job_id for job in jobs} | {"lost-job"}
    for job in jobs:
        answer = answers[job.job_id]
        assert isinstance(answer, JobStatus) and answer.job_id == job.job_id
        assert answer.progress_percentage == 50
        assert server.hits[f"/analyze/status/{job.job_id}"] == 1
    assert isinstance(answers["lost-job"], JobNotFound)


def test_poll_statuses_keeps_one_bad_answer_to_its_job(server: LoopbackServer) -> None:
    jobs = many_jobs(server, 20)
    odd = tracked("odd-job")
    server.route("/analyze/status/odd-job", lambda req: send(req, 200, b"<html/>", "text/html"))
    refused = tracked("refused-job")
    server.route(
        "/analyze/status/refused-job",
        lambda req: send(req, 400, b'{"detail":"bad id"}', "application/json"),
    )
    answers = poll(server.url(""), [odd, *jobs, refused])
    assert len(answers) == 22
    assert type(answers["odd-job"]) is MLAnalyzeError
    assert type(answers["refused-job"]) is MLAnalyzeError
    assert "bad id" in str(answers["refused-job"])
    assert all(isinstance(answers[job.job_id], JobStatus) for job in jobs)


def test_poll_statuses_stops_early_when_the_service_is_refused(free_port: int) -> None:
    jobs = [tracked(f"job-{n}") for n in range(300)]
    answers = poll(f"http://127.0.0.1:{free_port}", jobs, connections=8)
    assert 1 <= len(answers) <= 8  # at most one attempt per connection, not one per job
    assert all(isinstance(answer, MLAnalyzeUnavailable) for answer in answers.values())


def test_poll_statuses_stops_early_when_the_service_answers_503(server: LoopbackServer) -> None:
    jobs = [tracked(f"job-{n}") for n in range(300)]
    for job in jobs:
        server.route(f"/analyze/status/{job.job_id}", status(503, b"overloaded"))
    answers = poll(server.url(""), jobs, connections=8)
    requests = sum(server.hits.values())
    assert 1 <= requests <= 8
    assert len(answers) == requests
    assert all(isinstance(answer, MLAnalyzeUnavailable) for answer in answers.values())


def test_poll_statuses_respects_a_tiny_budget(server: LoopbackServer) -> None:
    jobs = many_jobs(server, 200, delay=0.3)
    answers = poll(server.url(""), jobs, budget_s=0.05, connections=8)
    # Only the requests started before the deadline, one per connection, are answered.
    assert 1 <= len(answers) <= 8
    assert sum(server.hits.values()) == len(answers)
    answered = set(answers)
    assert answered == {job.job_id for job in jobs[: len(answers)]}  # in the order given


# --- poll_statuses against the reference ml-analyze -----------------------------------


def test_poll_statuses_follows_many_real_jobs_to_completion(
    module_ml_service: RunningServer, tmp_path: Path
) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(
        "Наименование;Артикул;Цена\n"
        "Перфоратор Bosch GBH 2-26 DRE;P-1;12 990,00\n"
        "Дрель ударная Bosch GSB 13 RE;D-1;4590\n"
        "Стремянка алюминиевая;S-1;\n",
        encoding="utf-8",
    )
    with MLAnalyzeClient(module_ml_service.url, timeout=10, sleep=no_sleep) as client:
        jobs = [
            tracked(client.submit(str(path), SUPPLIER_ID, "csv").job_id, submitted_at=time.time())
            for _ in range(60)
        ]
        jobs.append(tracked(str(uuid.uuid4()), submitted_at=time.time()))  # never submitted

        outstanding = {job.job_id: job for job in jobs}
        final: dict[str, Any] = {}
        deadline = time.monotonic() + 15
        while outstanding:
            assert time.monotonic() < deadline, f"{len(outstanding)} jobs never finished"
            answers = poll(module_ml_service.url, list(outstanding.values()), budget_s=5)
            assert set(answers) == set(outstanding)  # every job answered, every tick
            for job_id, answer in answers.items():
                job = outstanding[job_id]
                outcome = decide(job, answer, time.time(), STALL_S, MAX_ATTEMPTS)
                if outcome.kind in (Next.COMPLETED, Next.RESUBMIT, Next.GIVE_UP):
                    final[job_id] = outcome
                    del outstanding[job_id]
                elif outcome.kind == Next.PROGRESS:
                    outstanding[job_id] = replace(job, last_progress=answer.progress_percentage)
            time.sleep(0.05)

    never_submitted = final.pop(jobs[-1].job_id)
    assert never_submitted.kind == Next.RESUBMIT and "lost" in never_submitted.reason
    assert len(final) == 60
    for outcome in final.values():
        assert outcome.kind == Next.COMPLETED
        metadata = summary_metadata(outcome.job, outcome.status)
        assert metadata["outcome"] == "completed with warnings"  # the row without a price
        assert (metadata["items_total"], metadata["items_processed"]) == (3, 3)
        assert metadata["error_count"] == 1
        assert (
            metadata["items_matched"] + metadata["items_review"] + metadata["items_unmatched"] == 2
        )
        assert metadata["analysis_s"] >= 0 and metadata["queued_s"] >= 0
