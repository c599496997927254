"""Following ml-analyze jobs: what to do with each answer. Plain code, no Dagster.

The status sensor keeps a `TrackerState` in its cursor, polls the jobs concurrently within
a time budget, and turns each `Outcome` into Dagster events and run requests.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime

from .client import JobNotFound, MLAnalyzeClient, MLAnalyzeError, MLAnalyzeUnavailable
from .models import JobStatus


@dataclass
class TrackedJob:
    """One outstanding analysis, as recorded when it was submitted."""

    job_id: str
    partition: str
    attempt: int
    checksum_md5: str
    shared_path: str
    staged_path: str
    submitted_at: float
    last_progress: int | None = None
    last_polled: float = 0.0


@dataclass
class TrackerState:
    """The status sensor's cursor: where it is in the event log, and the jobs it follows."""

    after_storage_id: int = 0
    jobs: dict[str, TrackedJob] = field(default_factory=dict)
    backoff_until: float = 0.0
    unreachable_ticks: int = 0
    failed_checks: list[str] = field(default_factory=list)  # partitions whose check last failed

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | None) -> TrackerState:
        if not raw:
            return cls()
        data = json.loads(raw)
        data["jobs"] = {k: TrackedJob(**v) for k, v in data.get("jobs", {}).items()}
        return cls(**data)


# What to do about one job after a poll.
PROGRESS, COMPLETED, RESUBMIT, GIVE_UP, WAIT = (
    "progress",
    "completed",
    "resubmit",
    "give_up",
    "wait",
)


@dataclass(frozen=True)
class Outcome:
    kind: str
    job: TrackedJob
    status: JobStatus | None = None
    reason: str = ""
    errors: tuple[str, ...] = ()


def decide(
    job: TrackedJob,
    answer: JobStatus | MLAnalyzeError,
    now: float,
    stall_after_s: float,
    max_attempts: int,
) -> Outcome:
    """Turn one poll answer into an outcome. Unreachable-service answers are never final."""
    if isinstance(answer, MLAnalyzeUnavailable):
        return Outcome(WAIT, job, reason=str(answer))
    if isinstance(answer, JobNotFound):
        return _failed(
            job,
            None,
            "ml-analyze lost the job (404: expired or lost in a restart)",
            (),
            max_attempts,
        )
    if isinstance(answer, MLAnalyzeError):
        return _failed(job, None, str(answer), (), max_attempts)
    if answer.finished_ok:
        return Outcome(COMPLETED, job, answer)
    if answer.status == "failed":
        return _failed(
            job, answer, "ml-analyze reported the job failed", tuple(answer.errors), max_attempts
        )
    if now - job.submitted_at > stall_after_s:
        minutes = stall_after_s / 60
        reason = (
            f"stalled: still '{answer.status}' after {minutes:.0f} min (ML_JOB_TIMEOUT_MINUTES)"
        )
        return _failed(job, answer, reason, tuple(answer.errors), max_attempts)
    if answer.progress_percentage != job.last_progress:
        return Outcome(PROGRESS, job, answer)
    return Outcome(WAIT, job, answer)


def _failed(job, status, reason, errors, max_attempts) -> Outcome:
    kind = RESUBMIT if job.attempt < max_attempts else GIVE_UP
    return Outcome(kind, job, status, reason, errors)


def poll_jobs(
    client: MLAnalyzeClient,
    jobs: list[TrackedJob],
    *,
    budget_s: float,
    workers: int = 16,
) -> dict[str, JobStatus | MLAnalyzeError]:
    """Poll `jobs` concurrently, one attempt each, within `budget_s`.

    Stops early when ml-analyze is unreachable: the rest keep their place for the next tick.
    """
    deadline = time.monotonic() + budget_s
    service_down = threading.Event()
    answers: dict[str, JobStatus | MLAnalyzeError] = {}

    def poll(job: TrackedJob) -> None:
        if service_down.is_set() or time.monotonic() > deadline:
            return
        try:
            answers[job.job_id] = client.status(job.job_id, retry=False)
        except MLAnalyzeUnavailable as exc:
            service_down.set()
            answers[job.job_id] = exc
        except MLAnalyzeError as exc:
            answers[job.job_id] = exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(poll, jobs))
    return answers


def summary_metadata(job: TrackedJob, status: JobStatus) -> dict:
    """The materialization's summary: counts ml-analyze gave, never invented ones."""
    metadata = {
        "outcome": (
            "completed with warnings"
            if status.errors or status.status == "completed_with_errors"
            else "completed"
        ),
        "ml_job_id": job.job_id,
        "attempt": job.attempt,
        "items_total": status.items_total,
        "items_processed": status.items_processed,
        "error_count": len(status.errors),
        "first_errors": "\n".join(status.errors[:10]) or "none",
        "checksum_md5": job.checksum_md5,
        "shared_path": job.shared_path,
    }
    for name in (
        "items_matched",
        "items_review",
        "items_unmatched",
        "successful_extractions",
        "failed_extractions",
        "duplicates_removed",
    ):
        value = getattr(status, name)
        if value is not None:
            metadata[name] = value
    if status.completed_at:
        metadata["ml_completed_at"] = status.completed_at
    metadata.update(_durations(status))
    return metadata


def _durations(status: JobStatus) -> dict:
    def parse(value: str | None):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
        except ValueError:
            return None

    created, started, completed = (
        parse(status.created_at),
        parse(status.started_at),
        parse(status.completed_at),
    )
    out = {}
    if created and started:
        out["queued_s"] = round((started - created).total_seconds(), 3)
    if started and completed:
        out["analysis_s"] = round((completed - started).total_seconds(), 3)
    return out
