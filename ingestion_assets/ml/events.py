"""The ML hand-off's record in Dagster's event log: submissions and progress as observations of
ml_analysis_result, completions as its materializations. Written and read here, once: the
phases are an enum, a submission is a `TrackedJob`, the latest state an `MLState`."""

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, NamedTuple

from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetRecordsFilter,
    DagsterInstance,
    EventLogRecord,
    MetadataValue,
)

from ..event_metadata import number, text, whole
from .tracking import TrackedJob

ML_RESULT = AssetKey("ml_analysis_result")
PHASE = "phase"
ATTEMPT_TAG = "courier/ml_attempt"
REPLACES_TAG = "courier/ml_replaces_job"


class MLPhase(StrEnum):
    """Where a supplier's analysis stands. All but COMPLETED are observations' `phase`."""

    SUBMITTED = "submitted"
    ANALYZING = "analyzing"
    RETRYING = "retrying"
    FAILED = "failed"
    ML_OFF = "ml_off"
    WAITING = "waiting"  # for ml-analyze to be reachable and ready; the status sensor submits then
    COMPLETED = "completed"  # the materialization itself, not an observation


OUTSTANDING = frozenset({MLPhase.SUBMITTED, MLPhase.ANALYZING, MLPhase.RETRYING})


class MLState(NamedTuple):
    """A partition's latest analysis state: its phase and the event-log record that says so
    (both None before its first submission)."""

    phase: MLPhase | None
    record: EventLogRecord | None

    @property
    def event(self) -> AssetMaterialization | AssetObservation | None:
        if self.record is None:
            return None
        if self.phase == MLPhase.COMPLETED:
            return self.record.asset_materialization
        return self.record.asset_observation

    @property
    def metadata(self) -> Mapping[str, MetadataValue]:
        event = self.event
        return event.metadata if event is not None else {}

    @property
    def description(self) -> str:
        event = self.event
        return (event.description or "") if event is not None else ""


def _phase(observation: AssetObservation | None) -> MLPhase | None:
    value = text(observation.metadata, PHASE) if observation is not None else None
    try:
        return MLPhase(value) if value is not None else None
    except ValueError:  # a phase this version does not know: not a state it can act on
        return None


def submission_observation(
    job: TrackedJob, file_type: str, **extra: str | int | float
) -> AssetObservation:
    return AssetObservation(
        asset_key=ML_RESULT,
        partition=job.partition,
        description=f"Analyzing: ml-analyze job {job.job_id}, attempt {job.attempt}",
        metadata={
            PHASE: MLPhase.SUBMITTED.value,
            "ml_job_id": job.job_id,
            "attempt": job.attempt,
            "checksum_md5": job.checksum_md5,
            "shared_path": job.shared_path,
            "staged_path": job.staged_path,
            "submitted_at": job.submitted_at,
            "file_type": file_type,
            "supplier_id": job.supplier_id,
            **({"file_rows": job.data_rows} if job.data_rows is not None else {}),
            **extra,
        },
    )


def job_from_observation(observation: AssetObservation | None) -> TrackedJob | None:
    """The submission an observation records; None for any other observation."""
    if observation is None or _phase(observation) != MLPhase.SUBMITTED:
        return None
    metadata = observation.metadata
    return TrackedJob(
        job_id=text(metadata, "ml_job_id") or "",
        partition=observation.partition or "",
        attempt=whole(metadata, "attempt") or 1,
        checksum_md5=text(metadata, "checksum_md5") or "",
        shared_path=text(metadata, "shared_path") or "",
        staged_path=text(metadata, "staged_path") or "",
        submitted_at=number(metadata, "submitted_at") or 0.0,
        supplier_id=text(metadata, "supplier_id") or "",
        data_rows=whole(metadata, "file_rows"),
    )


def waiting_from_observation(record: EventLogRecord) -> TrackedJob | None:
    """A submission waiting for ml-analyze: `job_id` names the waiting observation,
    `submitted_at` is when the wait began (ML_WAIT_LIMIT_MINUTES counts from it)."""
    observation = record.asset_observation
    if observation is None or _phase(observation) != MLPhase.WAITING:
        return None
    metadata = observation.metadata
    return TrackedJob(
        job_id=f"wait-{record.storage_id}",
        partition=observation.partition or "",
        attempt=whole(metadata, "attempt") or 1,
        checksum_md5=text(metadata, "checksum_md5") or "",
        shared_path=text(metadata, "shared_path") or "",
        staged_path=text(metadata, "staged_path") or "",
        submitted_at=number(metadata, "waiting_since") or 0.0,
    )


def phase_observation(
    partition: str, phase: MLPhase, description: str, **metadata: Any
) -> AssetObservation:
    return AssetObservation(
        asset_key=ML_RESULT,
        partition=partition,
        description=description,
        metadata={PHASE: phase.value, **metadata},
    )


def latest_submission(
    instance: DagsterInstance, partition: str, scan: int = 50
) -> TrackedJob | None:
    """The partition's most recent submission, from the event log."""
    records = instance.fetch_observations(
        AssetRecordsFilter(asset_key=ML_RESULT, asset_partitions=[partition]), limit=scan
    ).records
    for record in records:
        job = job_from_observation(record.asset_observation)
        if job is not None:
            return job
    return None


def latest_ml_state(instance: DagsterInstance, partition: str) -> MLState:
    """The partition's analysis state: the newer of its last phase observation and its last
    materialization."""
    partition_filter = AssetRecordsFilter(asset_key=ML_RESULT, asset_partitions=[partition])
    materialized = instance.fetch_materializations(partition_filter, limit=1).records
    observed = instance.fetch_observations(partition_filter, limit=1).records
    if observed and not has_phase(observed[0]):
        # A phase this version does not know (written by a newer one): look further back.
        observed = instance.fetch_observations(partition_filter, limit=20).records
    return ml_state(materialized[0] if materialized else None, observed)


def has_phase(observation: EventLogRecord) -> bool:
    return _phase(observation.asset_observation) is not None


def ml_state(materialized: EventLogRecord | None, observed: Sequence[EventLogRecord]) -> MLState:
    """The newer of the last materialization and the first of `observed` (newest first) that
    has a phase this version knows."""
    phased = next(
        ((phase, r) for r in observed if (phase := _phase(r.asset_observation)) is not None),
        None,
    )
    if phased and (materialized is None or phased[1].storage_id > materialized.storage_id):
        return MLState(*phased)
    if materialized is not None:
        return MLState(MLPhase.COMPLETED, materialized)
    return MLState(None, None)


def analysis_in_flight(instance: DagsterInstance, partition: str) -> bool:
    return latest_ml_state(instance, partition).phase in (*OUTSTANDING, MLPhase.WAITING)


def in_flight_paths(instance: DagsterInstance, partitions: list[str]) -> set[str]:
    """Shared files whose analysis is still outstanding (or waiting to be submitted): the
    clean-up must not touch them."""
    paths = set()
    for partition in partitions:
        state = latest_ml_state(instance, partition)
        if state.phase == MLPhase.WAITING:
            path = text(state.metadata, "shared_path")
            if path:
                paths.add(path)
        elif state.phase in OUTSTANDING:
            job = latest_submission(instance, partition)
            if job is not None:
                paths.add(job.shared_path)
    return paths
