"""The ML hand-off's record in Dagster's event log: submissions and progress as observations of
ml_analysis_result, completions as its materializations. Keys are defined here, once."""

from dagster import AssetKey, AssetObservation, AssetRecordsFilter, DagsterInstance

from .tracking import TrackedJob

ML_RESULT = AssetKey("ml_analysis_result")
PHASE = "phase"
SUBMITTED, ANALYZING, RETRYING, FAILED, ML_OFF, WAITING = (
    "submitted",
    "analyzing",
    "retrying",
    "failed",
    "ml_off",
    "waiting",  # for ml-analyze to be reachable and ready; the status sensor submits then
)
COMPLETED = "completed"  # the materialization itself, not an observation
ATTEMPT_TAG = "courier/ml_attempt"
REPLACES_TAG = "courier/ml_replaces_job"


def submission_observation(
    job: TrackedJob, file_type: str, **extra: str | int | float
) -> AssetObservation:
    return AssetObservation(
        asset_key=ML_RESULT,
        partition=job.partition,
        description=f"Analyzing: ml-analyze job {job.job_id}, attempt {job.attempt}",
        metadata={
            PHASE: SUBMITTED,
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


def job_from_observation(observation: AssetObservation) -> TrackedJob | None:
    metadata = observation.metadata
    if metadata.get(PHASE) is None or metadata[PHASE].value != SUBMITTED:
        return None
    return TrackedJob(
        job_id=metadata["ml_job_id"].value,
        partition=observation.partition,
        attempt=metadata["attempt"].value,
        checksum_md5=metadata["checksum_md5"].value,
        shared_path=metadata["shared_path"].value,
        staged_path=metadata["staged_path"].value,
        submitted_at=metadata["submitted_at"].value,
        supplier_id=metadata["supplier_id"].value if "supplier_id" in metadata else "",
        data_rows=metadata["file_rows"].value if "file_rows" in metadata else None,
    )


def phase_observation(partition: str, phase: str, description: str, **metadata) -> AssetObservation:
    return AssetObservation(
        asset_key=ML_RESULT,
        partition=partition,
        description=description,
        metadata={PHASE: phase, **metadata},
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


def latest_ml_state(instance: DagsterInstance, partition: str) -> tuple[str | None, object | None]:
    """(phase, record) of the partition's analysis: the newest of its last phase observation and
    its last materialization. Phases: submitted, analyzing, retrying, failed, ml_off, completed."""
    partition_filter = AssetRecordsFilter(asset_key=ML_RESULT, asset_partitions=[partition])
    materialized = instance.fetch_materializations(partition_filter, limit=1).records
    observed = next(
        (
            r
            for r in instance.fetch_observations(partition_filter, limit=20).records
            if PHASE in r.asset_observation.metadata
        ),
        None,
    )
    if observed and (not materialized or observed.storage_id > materialized[0].storage_id):
        return observed.asset_observation.metadata[PHASE].value, observed
    if materialized:
        return COMPLETED, materialized[0]
    return None, None


def analysis_in_flight(instance: DagsterInstance, partition: str) -> bool:
    return latest_ml_state(instance, partition)[0] in (SUBMITTED, ANALYZING, RETRYING, WAITING)


def in_flight_paths(instance: DagsterInstance, partitions: list[str]) -> set[str]:
    """Shared files whose analysis is still outstanding (or waiting to be submitted): the
    clean-up must not touch them."""
    paths = set()
    for partition in partitions:
        phase, record = latest_ml_state(instance, partition)
        if phase == WAITING:
            paths.add(record.asset_observation.metadata["shared_path"].value)
        elif phase in (SUBMITTED, ANALYZING, RETRYING):
            job = latest_submission(instance, partition)
            if job is not None:
                paths.add(job.shared_path)
    return paths
