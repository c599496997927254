"""Following ml-analyze jobs: what to do with each answer. Plain code, no Dagster.

The status sensor keeps a `TrackerState` in its cursor, polls the jobs concurrently within
a time budget (ml/polling.py), and turns each `Outcome` into Dagster events and run requests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from ..catalogue.store import ItemCounts
from .client import JobNotFound, MLAnalyzeError, MLAnalyzeUnavailable
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
    supplier_id: str = ""
    data_rows: int | None = None  # non-empty rows of what was submitted: a yardstick for items
    # When the job last moved (status, percentage or items): a stall is no progress for N min.
    progress_mark: str = ""
    last_change_at: float = 0.0
    resubmit_at: float = 0.0  # a failed attempt waits until then before the next one
    run_id: str = ""  # the run that submitted it: the UI links the outcome back to it

    def moved(self, status: JobStatus, now: float) -> bool:
        """Record the job's position; True when it changed since the last poll."""
        mark = f"{status.status}:{status.progress_percentage}:{status.items_processed}"
        if mark == self.progress_mark:
            return False
        self.progress_mark, self.last_change_at = mark, now
        return True

    def still_since(self) -> float:
        return self.last_change_at or self.submitted_at


@dataclass
class TrackerState:
    """The status sensor's cursor: where it is in the event log, and the jobs it follows."""

    after_storage_id: int = 0
    ticked_at: float = 0.0  # the last tick that polled: the next waits a poll interval
    jobs: dict[str, TrackedJob] = field(default_factory=dict)
    backoff_until: float = 0.0
    unreachable_ticks: int = 0
    failed_checks: list[str] = field(default_factory=list)  # partitions whose check last failed
    check_evaluated: bool = False  # analysis_succeeded reported at least once
    resubmits: dict[str, TrackedJob] = field(default_factory=dict)  # failed, waiting to retry
    # Submissions waiting for ml-analyze to be ready, by partition: `job_id` names the waiting
    # observation, `submitted_at` is when the wait began (ML_WAIT_LIMIT_MINUTES counts from it).
    waiting: dict[str, TrackedJob] = field(default_factory=dict)

    def to_json(self) -> str:
        # Shallow by hand: dataclasses.asdict deep-copies every field of every job (a tenth of
        # a tick over 1,000 jobs).
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("jobs", "resubmits", "waiting"):
            data[name] = {key: vars(job) for key, job in data[name].items()}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | None) -> TrackerState:
        if not raw:
            return cls()
        data = json.loads(raw)
        for name in ("jobs", "resubmits", "waiting"):
            data[name] = {k: TrackedJob(**v) for k, v in data.get(name, {}).items()}
        return cls(**data)


class Next(StrEnum):
    """What to do about one job after a poll."""

    PROGRESS = "progress"  # report how far it is
    COMPLETED = "completed"  # materialize the result
    RESUBMIT = "resubmit"  # a failed attempt: submit again after a wait
    GIVE_UP = "give_up"  # failed for good: fail the check
    WAIT = "wait"  # nothing new, or the service cannot say now: poll again next tick


@dataclass(frozen=True)
class Outcome:
    kind: Next
    job: TrackedJob
    status: JobStatus | None = None
    reason: str = ""
    errors: tuple[str, ...] = ()
    # Submitting the same file again would not help (a cause that will not heal, a job that
    # may still be running): the next sync does not resubmit it either.
    final_for_file: bool = False


# Causes that no resubmission heals, as ml-analyze (or its database) words them.
PERMANENT_CAUSES = (
    ("unsupported file type", "ml-analyze cannot parse this type of file"),
    ("is not supported", "ml-analyze cannot parse this type of file"),
    ("file not found", "ml-analyze cannot see the handed-off file (check ML_SHARED_UPLOADS_DIR)"),
    ("foreign key", "the supplier has no row in the catalogue's suppliers table"),
    ("unique constraint", "the catalogue already holds these SKUs for this supplier"),
    ("duplicate key", "the catalogue already holds these SKUs for this supplier"),
    ("check constraint", "the catalogue refuses a value of the file"),
)


def permanent_cause(messages: tuple[str, ...]) -> str | None:
    """Why a failure will not heal, if one of its messages says so."""
    text = "\n".join(messages).lower()
    return next((why for needle, why in PERMANENT_CAUSES if needle in text), None)


def decide(
    job: TrackedJob,
    answer: JobStatus | MLAnalyzeError,
    now: float,
    stall_after_s: float,
    max_attempts: int,
    log_messages: tuple[str, ...] = (),
) -> Outcome:
    """Turn one poll answer into an outcome. Unreachable-service answers are never final.
    `log_messages`: the catalogue's log rows of this job, shown and classified with its errors."""
    if isinstance(answer, MLAnalyzeUnavailable):
        return Outcome(Next.WAIT, job, reason=str(answer))
    if isinstance(answer, JobNotFound):
        return _failed(
            job,
            None,
            "ml-analyze lost the job (404: expired or lost in a restart)",
            log_messages,
            max_attempts,
        )
    if isinstance(answer, MLAnalyzeError):
        return _failed(job, None, str(answer), log_messages, max_attempts)
    if answer.finished_ok:
        return Outcome(Next.COMPLETED, job, answer)
    if answer.status == "failed":
        return _failed(
            job,
            answer,
            "ml-analyze reported the job failed",
            (*answer.errors, *log_messages),
            max_attempts,
        )
    if job.moved(answer, now):
        return Outcome(Next.PROGRESS, job, answer)
    if now - job.still_since() > stall_after_s:
        # Still pending/processing: it may yet be working (a restart leaves jobs 'processing'
        # forever). A second job would store every row twice: never two live jobs.
        reason = (
            f"stalled: no progress for {stall_after_s / 60:.0f} min (ML_JOB_TIMEOUT_MINUTES), "
            f"still '{answer.status}' at {answer.progress_percentage}%; not resubmitted while "
            "ml-analyze may still be working on it. Check ml-analyze, then re-run the partition "
            "with force=true"
        )
        return Outcome(Next.GIVE_UP, job, answer, reason, tuple(answer.errors), final_for_file=True)
    return Outcome(Next.WAIT, job, answer)


def _failed(
    job: TrackedJob,
    status: JobStatus | None,
    reason: str,
    errors: tuple[str, ...],
    max_attempts: int,
) -> Outcome:
    cause = permanent_cause((reason, *errors))
    if cause is not None:
        reason = f"{reason}; will not heal ({cause}): not resubmitted"
        return Outcome(Next.GIVE_UP, job, status, reason, errors, final_for_file=True)
    kind = Next.RESUBMIT if job.attempt < max_attempts else Next.GIVE_UP
    return Outcome(kind, job, status, reason, errors)


# A file with at least this many rows that yields under half as many items is suspicious.
FEW_ITEMS_MIN_ROWS = 20


def items_reported(status: JobStatus) -> int:
    """Items the analysis says it stored: its extractions when it gives them, else its total."""
    return (
        status.successful_extractions
        if status.successful_extractions is not None
        else status.items_total
    )


def completion_warnings(job: TrackedJob, status: JobStatus, counts: ItemCounts | None) -> list[str]:
    """What makes a completed analysis not a plain success."""
    items = items_reported(status)
    warnings = []
    if items == 0:
        warnings.append(
            "0 items extracted: the analysed sheet held no price list (a cover page? "
            "the wrong sheet_name?)"
        )
    elif (
        job.data_rows is not None
        and job.data_rows >= FEW_ITEMS_MIN_ROWS
        and items < job.data_rows / 2
    ):
        warnings.append(
            f"only {items} items from a file of {job.data_rows} non-empty rows: "
            "part of the price list was not read"
        )
    if counts is not None and counts.total > items:
        warnings.append(
            f"the catalogue holds {counts.total} items for this supplier, the analysis reported "
            f"{items}: duplicates, or items of earlier files"
        )
    if status.status == "completed_with_errors" or status.errors:
        warnings.append(f"ml-analyze reported {len(status.errors)} problem(s) with rows")
    return warnings


def summary_metadata(
    job: TrackedJob, status: JobStatus, counts: ItemCounts | None = None
) -> dict[str, Any]:
    """The materialization's summary: counts ml-analyze gave, match counts from the catalogue
    when there is one, never invented ones; warnings in words."""
    warnings = completion_warnings(job, status, counts)
    metadata: dict[str, Any] = {
        "outcome": "completed with warnings" if warnings else "completed",
        "warnings": "\n".join(warnings) or "none",
        "ml_job_id": job.job_id,
        "attempt": job.attempt,
        "items_total": status.items_total,
        "items_processed": status.items_processed,
        "error_count": len(status.errors),
        "first_errors": "\n".join(status.errors[:10]) or "none",
        "checksum_md5": job.checksum_md5,
        "shared_path": job.shared_path,
    }
    if job.data_rows is not None:
        metadata["file_rows"] = job.data_rows
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
    if counts is not None:
        metadata.update(
            items_matched=counts.matched,
            items_review=counts.review,
            items_unmatched=counts.unmatched,
            catalogue_items=counts.total,
            match_counts_from="catalogue (supplier_items)",
        )
    elif "items_matched" in metadata:
        metadata["match_counts_from"] = "ml-analyze"
    if status.completed_at:
        metadata["ml_completed_at"] = status.completed_at
    metadata.update(_durations(status))
    return metadata


def _durations(status: JobStatus) -> dict[str, float]:
    def parse(value: str | None) -> datetime | None:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
        except ValueError:
            return None

    created, started, completed = (
        parse(status.created_at),
        parse(status.started_at),
        parse(status.completed_at),
    )
    out: dict[str, float] = {}
    if created and started:
        out["queued_s"] = round((started - created).total_seconds(), 3)
    if started and completed:
        out["analysis_s"] = round((completed - started).total_seconds(), 3)
    return out
