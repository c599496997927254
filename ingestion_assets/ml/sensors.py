"""The ml status sensor: follows every outstanding ml-analyze job, reports progress, completion,
resubmissions and final failures. State: the cursor (see ml/tracking.py), rebuilt from the event log."""

import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetRecordsFilter,
    DagsterInstance,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from ..catalogue.store import Catalogue, CatalogueError, ItemCounts
from ..jobs import supplier_sync_job
from ..resources import CatalogueResource, MLAnalyzeResource
from .client import MLAnalyzeError, MLAnalyzeUnavailable
from .events import (
    ATTEMPT_TAG,
    ML_RESULT,
    REPLACES_TAG,
    MLPhase,
    job_from_observation,
    phase_observation,
    waiting_from_observation,
)
from .models import Health, JobStatus
from .polling import poll_statuses
from .tracking import (
    Next,
    Outcome,
    TrackedJob,
    TrackerState,
    decide,
    summary_metadata,
)

Read = TypeVar("Read")
# The sensor daemon wakes sensors every 5 s: a poll interval up to that polls on every wake-up;
# a longer one skips wake-ups (with a second of slack, so that one that comes a hair early polls).
DAEMON_BEAT_S = 5
TICK_SLACK_S = 1.0
TICK_BUDGET_S = 20.0  # far inside Dagster's 60 s limit; what is not polled waits for the next tick
MAX_NEW_EVENTS_PER_TICK = 2000
POLL_TIMEOUT_S = 5.0
MAX_BACKOFF_S = 300.0
MAX_WAKE_PER_TICK = 50  # waiting submissions released at once when ml-analyze is back


def ingest_submissions(instance: DagsterInstance, state: TrackerState) -> None:
    """Add jobs submitted since the cursor. On a fresh cursor, skip jobs already resolved."""
    fresh_cursor = state.after_storage_id == 0
    records = instance.fetch_observations(
        AssetRecordsFilter(asset_key=ML_RESULT, after_storage_id=state.after_storage_id or None),
        limit=MAX_NEW_EVENTS_PER_TICK,
        ascending=True,
    ).records
    for record in records:
        state.after_storage_id = record.storage_id
        waiting = waiting_from_observation(record)
        if waiting is not None:
            state.waiting[waiting.partition] = waiting
            continue
        job = job_from_observation(record.asset_observation)
        if job is not None:
            state.waiting.pop(job.partition, None)  # submitted after all
        if job is None or (
            fresh_cursor and _resolved_later(instance, job.partition, record.storage_id)
        ):
            continue
        job.run_id = record.run_id or ""
        state.jobs[job.job_id] = job


SensorEvent = AssetMaterialization | AssetObservation | AssetCheckEvaluation


def wake_waiting(
    state: TrackerState, ml_analyze: MLAnalyzeResource, now: float
) -> tuple[list[RunRequest], list[SensorEvent]]:
    """Submissions waiting for ml-analyze: past their limit they fail; when the service is
    ready, a run submits each (at most MAX_WAKE_PER_TICK a tick). One health check a tick."""
    runs: list[RunRequest] = []
    events: list[SensorEvent] = []
    limit_s = ml_analyze.wait_limit_minutes * 60
    for partition, entry in list(state.waiting.items()):
        if now - entry.submitted_at > limit_s:
            del state.waiting[partition]
            hours = (now - entry.submitted_at) / 3600
            outcome = Outcome(
                Next.GIVE_UP,
                entry,
                reason=f"ml-analyze was not ready for {hours:.1f} h (ML_WAIT_LIMIT_MINUTES); "
                "not submitted. Materialize the partition again once it is back",
            )
            state.failed_checks = sorted({*state.failed_checks, partition})
            events += [
                *_events_for(outcome, ml_analyze.max_retries),
                _check_evaluation(state, outcome),
            ]
    if not state.waiting:
        return runs, events
    health = _health(ml_analyze)
    if health is not None and health.accepts_work(ml_analyze.submit_when_degraded):
        for partition, entry in sorted(state.waiting.items(), key=lambda kv: kv[1].submitted_at)[
            :MAX_WAKE_PER_TICK
        ]:
            del state.waiting[partition]
            runs.append(_submission_run(entry, f"ml-ready-{entry.job_id}", "ml_ready"))
    return runs, events


def _health(ml_analyze: MLAnalyzeResource) -> Health | None:
    """One GET /health, no retries: None when ml-analyze does not answer."""
    try:
        with ml_analyze.client(retries=0, timeout=POLL_TIMEOUT_S) as client:
            return client.health()
    except MLAnalyzeError:
        return None


def _resolved_later(instance: DagsterInstance, partition: str, storage_id: int) -> bool:
    latest = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=ML_RESULT, asset_partitions=[partition]), limit=1
    ).records
    return bool(latest) and latest[0].storage_id > storage_id


def _submitted_by(job: TrackedJob) -> dict[str, MetadataValue]:
    return {"submitted_by_run": MetadataValue.dagster_run(job.run_id)} if job.run_id else {}


def _said(errors: tuple[str, ...], limit: int = 10) -> str:
    return "\n".join(errors[:limit]) or "none"


def _events_for(
    outcome: Outcome, max_attempts: int, counts: ItemCounts | None = None, retry_in_s: float = 0
) -> Iterator[AssetMaterialization | AssetObservation]:
    job, status = outcome.job, outcome.status
    common: dict[str, str | int] = {"ml_job_id": job.job_id, "attempt": job.attempt}
    if outcome.kind == Next.PROGRESS and status is not None:
        job.last_progress = status.progress_percentage
        yield phase_observation(
            job.partition,
            MLPhase.ANALYZING,
            f"Analyzing: {status.progress_percentage}% ({status.items_processed}/{status.items_total} items)",
            progress_percentage=status.progress_percentage,
            items_processed=status.items_processed,
            items_total=status.items_total,
            ml_status=status.status,
            **({"ml_phase": status.phase} if status.phase else {}),
            **common,
        )
    elif outcome.kind == Next.COMPLETED and status is not None:
        metadata = summary_metadata(job, status, counts)
        warnings = "" if metadata["warnings"] == "none" else f" ({metadata['warnings']})"
        yield AssetMaterialization(
            asset_key=ML_RESULT,
            partition=job.partition,
            description=f"Analysis {metadata['outcome']}: {status.items_total} items{warnings}",
            # Reported by the sensor, not a run: name the run that submitted it, as a link.
            metadata={**_submitted_by(job), **metadata},
        )
    elif outcome.kind == Next.RESUBMIT:
        yield phase_observation(
            job.partition,
            MLPhase.RETRYING,
            f"Attempt {job.attempt} of {max_attempts} failed ({outcome.reason}); "
            f"resubmitting in {retry_in_s:.0f} s. ml-analyze said: {_said(outcome.errors, 3)}",
            reason=outcome.reason,
            errors=_said(outcome.errors, 100),
            retry_at=time.time() + retry_in_s,
            **common,
        )
    elif outcome.kind == Next.GIVE_UP:
        errors = _said(outcome.errors, 100)
        yield phase_observation(
            job.partition,
            MLPhase.FAILED,
            f"Analysis failed (attempt {job.attempt}): {outcome.reason}. "
            f"ml-analyze said: {_said(outcome.errors, 5)}",
            reason=outcome.reason,
            errors=errors,
            final_for_file=outcome.final_for_file,
            checksum_md5=job.checksum_md5,
            **common,
        )


def _resubmission(job: TrackedJob) -> RunRequest:
    return _submission_run(
        job,
        f"ml-resubmit-{job.job_id}",
        "ml_resubmit",
        {ATTEMPT_TAG: str(job.attempt + 1), REPLACES_TAG: job.job_id},
    )


def _submission_run(
    job: TrackedJob, run_key: str, trigger: str, tags: dict[str, str] | None = None
) -> RunRequest:
    """A run that submits the partition's file again: it reuses the shared file; if the staged
    copy is gone too, it downloads again."""
    assets = ["shared_file", "ml_analysis_result"]
    if not os.path.exists(job.staged_path):
        assets.insert(0, "raw_download")
    return RunRequest(
        run_key=run_key,
        partition_key=job.partition,
        asset_selection=[AssetKey(a) for a in assets],
        tags={ATTEMPT_TAG: str(job.attempt), "courier/trigger": trigger, **(tags or {})},
    )


def _check_evaluation(state: TrackerState, outcome: Outcome) -> AssetCheckEvaluation:
    """analysis_succeeded: no supplier's latest analysis failed for good. Reported unpartitioned:
    dagster 1.13.27 stores runless evaluations of a partitioned check under a unique key, so
    a second one for the same partition breaks the tick (and check-only runs cannot be
    partitioned). The partition is named in the description and metadata."""
    job = outcome.job
    failed = ", ".join(state.failed_checks) or "none"
    if outcome.kind == Next.GIVE_UP:
        errors = "\n".join(outcome.errors[:10]) or "none"
        description = f"{job.partition}: {outcome.reason}; ml-analyze said: {errors}"
        metadata = {
            "supplier": job.partition,
            "reason": outcome.reason,
            "ml_analyze_errors": errors,
        }
    else:
        description = f"{job.partition}: its analysis completed (job {job.job_id})"
        metadata = {"supplier": job.partition}
    return AssetCheckEvaluation(
        asset_key=ML_RESULT,
        check_name="analysis_succeeded",
        passed=not state.failed_checks,
        description=description,
        metadata={
            **metadata,
            "failed_suppliers": failed,
            "ml_job_id": job.job_id,
            "attempt": job.attempt,
        },
    )


class _CatalogueReads:
    """The catalogue as the sensor reads it: one failure and it is left alone for the tick
    (a completion is reported without match counts rather than held back)."""

    def __init__(self, store: Catalogue | None, log: logging.Logger) -> None:
        self.store, self.log = store, log

    def _read(self, what: Callable[[Catalogue], Read], default: Read) -> Read:
        if self.store is None:
            return default
        try:
            return what(self.store)
        except CatalogueError as exc:
            self.log.warning(f"{exc}; the rest of this tick goes without the catalogue")
            self.store = None
            return default

    def counts(self, job: TrackedJob) -> ItemCounts | None:
        if not job.supplier_id:
            return None
        return self._read(lambda store: store.item_counts(job.supplier_id), None)

    def log_messages(self, job: TrackedJob) -> tuple[str, ...]:
        if not job.supplier_id:
            return ()
        since = datetime.fromtimestamp(job.submitted_at, UTC) - timedelta(minutes=1)
        return tuple(
            self._read(lambda store: store.log_messages(job.supplier_id, job.job_id, since), [])
        )


def _failed_answer(answer: JobStatus | MLAnalyzeError) -> bool:
    return (
        isinstance(answer, MLAnalyzeError)
        and not isinstance(answer, MLAnalyzeUnavailable)
        or (isinstance(answer, JobStatus) and answer.status == "failed")
    )


def evaluate(
    context: SensorEvaluationContext,
    ml_analyze: MLAnalyzeResource,
    store: Catalogue | None = None,
) -> SensorResult:
    state = TrackerState.from_json(context.cursor)
    now = time.time()
    poll_every = ml_analyze.poll_interval_seconds
    if poll_every > DAEMON_BEAT_S and now - state.ticked_at < poll_every - TICK_SLACK_S:
        wait = poll_every - (now - state.ticked_at)
        return SensorResult(skip_reason=f"next poll in {wait:.0f} s", cursor=context.cursor)
    state.ticked_at = now
    ingest_submissions(context.instance, state)
    # Failed attempts whose wait is over: their resubmission runs now.
    runs, events = wake_waiting(state, ml_analyze, now)
    for job_id, job in list(state.resubmits.items()):
        if job.resubmit_at <= now:
            runs.append(_resubmission(job))
            del state.resubmits[job_id]
    if state.jobs and now < state.backoff_until and _health(ml_analyze) is not None:
        # Back: poll now. One GET a tick while it is down; the backoff spares the job polls.
        state.backoff_until = 0.0
    if not state.jobs or now < state.backoff_until:
        idle = (
            "no outstanding ml-analyze jobs"
            if not state.jobs
            else f"ml-analyze unreachable; next poll in {state.backoff_until - now:.0f} s"
        )
        return SensorResult(
            skip_reason=None if runs or events else idle,
            run_requests=runs,
            asset_events=events,
            cursor=state.to_json(),
        )

    jobs = sorted(state.jobs.values(), key=lambda j: j.last_polled)
    answers = poll_statuses(
        ml_analyze.url,
        [job.job_id for job in jobs],
        budget_s=TICK_BUDGET_S,
        timeout_s=POLL_TIMEOUT_S,
    )

    catalogue = _CatalogueReads(store, context.log)
    unreachable = False
    for job in jobs:
        if job.job_id not in answers:
            continue
        answer = answers[job.job_id]
        unreachable |= isinstance(answer, MLAnalyzeUnavailable)
        job.last_polled = now
        logs = catalogue.log_messages(job) if _failed_answer(answer) else ()
        outcome = decide(
            job, answer, now, ml_analyze.job_timeout_minutes * 60, ml_analyze.max_retries, logs
        )
        counts = catalogue.counts(job) if outcome.kind == Next.COMPLETED else None
        retry_in = ml_analyze.retry_delay_seconds * 2 ** (job.attempt - 1)
        events.extend(_events_for(outcome, ml_analyze.max_retries, counts, retry_in))
        if outcome.kind in (Next.COMPLETED, Next.RESUBMIT, Next.GIVE_UP):
            del state.jobs[job.job_id]
        if outcome.kind == Next.RESUBMIT:
            # Back off between attempts: a cause that heals (a busy service) gets time to.
            job.resubmit_at = now + retry_in
            state.resubmits[job.job_id] = job
        # The check changes when a supplier fails for good, and when a failed one recovers;
        # the first analysis to end evaluates it (until then it shows "not evaluated").
        if outcome.kind == Next.GIVE_UP:
            state.failed_checks = sorted({*state.failed_checks, job.partition})
            events.append(_check_evaluation(state, outcome))
            state.check_evaluated = True
        elif outcome.kind == Next.COMPLETED and (
            job.partition in state.failed_checks or not state.check_evaluated
        ):
            state.failed_checks = [p for p in state.failed_checks if p != job.partition]
            events.append(_check_evaluation(state, outcome))
            state.check_evaluated = True

    if unreachable:
        # Keep every job; back off 2×, 4×, … the poll interval, up to 5 minutes.
        state.unreachable_ticks += 1
        state.backoff_until = now + min(
            ml_analyze.poll_interval_seconds * 2**state.unreachable_ticks, MAX_BACKOFF_S
        )
        context.log.warning(f"ml-analyze unreachable; {len(state.jobs)} jobs kept, backing off")
    else:
        state.unreachable_ticks, state.backoff_until = 0, 0.0
    return SensorResult(asset_events=events, run_requests=runs, cursor=state.to_json())


@sensor(
    job=supplier_sync_job,
    # Every wake-up of the sensor daemon (5 s); the tick itself keeps ml_analyze's
    # poll_interval_seconds (ML_POLL_INTERVAL_SECONDS).
    minimum_interval_seconds=1,
    default_status=DefaultSensorStatus.RUNNING,
)
def ml_status_sensor(
    context: SensorEvaluationContext, ml_analyze: MLAnalyzeResource, catalogue: CatalogueResource
) -> SensorResult:
    """Polls ml-analyze for every outstanding job; reports progress, completion (as the
    ml_analysis_result materialization, match counts from the catalogue), resubmissions and
    final failures (as a failed check, with ml-analyze's words and its catalogue log rows)."""
    with catalogue.session() as store:
        return evaluate(context, ml_analyze, store)
