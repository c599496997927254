"""ml_analysis_result: submit the shared file to ml-analyze and record the job. It does not wait;
the status sensor reports the outcome as this asset's materialization."""

import time

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    Config,
    Failure,
    asset,
    asset_check,
)

from .. import pools
from ..courier.assets import SharedFile, describe
from ..handoff.atomic import file_md5
from ..partitions import suppliers
from ..resources import MLAnalyzeResource
from .client import JobNotFound, MLAnalyzeError
from .events import (
    ATTEMPT_TAG,
    FAILED,
    ML_OFF,
    REPLACES_TAG,
    latest_ml_state,
    latest_submission,
    phase_observation,
    submission_observation,
)
from .tracking import TrackedJob


class AnalysisConfig(Config):
    force: bool = False  # analyse again even if this very file was analysed before


@asset(
    partitions_def=suppliers,
    group_name="suppliers",
    kinds={"python"},
    pool=pools.ML_ANALYZE,
    output_required=False,
)
def ml_analysis_result(
    context: AssetExecutionContext,
    config: AnalysisConfig,
    shared_file: SharedFile,
    ml_analyze: MLAnalyzeResource,
):
    """The analysis of the supplier's file by ml-analyze: items extracted, matched, sent to
    review, errors. Materialized by the ml status sensor when the job ends."""
    supplier, handed = shared_file.supplier, shared_file.handed_off
    key = context.partition_key
    who = describe(supplier, handed.metadata.source_url)
    if not (ml_analyze.use_ml_processing and supplier.use_ml_processing):
        switch = (
            "USE_ML_PROCESSING=false"
            if not ml_analyze.use_ml_processing
            else "use_ml_processing=no"
        )
        context.log.info(
            f"{who}: ML processing is off ({switch}); the file stays on the shared volume"
        )
        yield phase_observation(
            key, ML_OFF, f"ML processing off ({switch})", shared_path=str(handed.path)
        )
        return

    md5 = handed.metadata.checksum_md5
    if not handed.path.is_file() or file_md5(handed.path) != md5:
        raise Failure(
            f"{who}: {handed.path} no longer matches its sidecar checksum {md5}",
            allow_retries=False,
        )

    with ml_analyze.client() as client:
        previous = latest_submission(context.instance, key)
        replaced = context.run.tags.get(REPLACES_TAG)
        if (
            previous
            and previous.checksum_md5 == md5
            and previous.job_id != replaced
            and not config.force
        ):
            state = _job_state(client, previous.job_id)
            if state in ("pending", "processing"):
                context.log.info(
                    f"{who}: job {previous.job_id} for this file is still {state}; not submitting twice"
                )
                return
            if state in ("completed", "completed_with_errors"):
                context.log.info(
                    f"{who}: this file was analysed by job {previous.job_id}; run with force=true to redo"
                )
                return
        try:
            health = client.health()
            if ml_analyze.require_healthy and not health.ready:
                raise Failure(
                    f"{who}: ml-analyze is not ready (health: {health.status})", allow_retries=True
                )
            submission = client.submit(
                shared_file.ml_path,
                supplier.supplier_id,
                handed.metadata.file_type,
                metadata={
                    "supplier_name": supplier.name,
                    "checksum_md5": md5,
                    "dagster_run_id": context.run_id,
                },
            )
        except MLAnalyzeError as exc:
            raise Failure(
                f"{who}: cannot submit to ml-analyze: {exc}", allow_retries=exc.retryable
            ) from exc

    job = TrackedJob(
        job_id=submission.job_id,
        partition=key,
        attempt=int(context.run.tags.get(ATTEMPT_TAG, "1")),
        checksum_md5=md5,
        shared_path=str(handed.path),
        staged_path=str(shared_file.staged_path),
        submitted_at=time.time(),
    )
    context.log.info(f"{who}: submitted to ml-analyze as job {job.job_id} (attempt {job.attempt})")
    yield submission_observation(job, handed.metadata.file_type, supplier.supplier_id)


def _job_state(client, job_id: str) -> str | None:
    try:
        return client.status(job_id).status
    except JobNotFound:
        return None


@asset_check(asset=ml_analysis_result, name="analysis_succeeded")
def analysis_succeeded(context: AssetCheckExecutionContext) -> AssetCheckResult:
    """Passes when no supplier's latest analysis failed for good; lists those that did, with
    ml-analyze's messages. The ml status sensor reports it as analyses fail and recover;
    running it by hand re-reads the event log."""
    failed = {}
    for key in context.instance.get_dynamic_partitions(suppliers.name):
        phase, record = latest_ml_state(context.instance, key)
        if phase == FAILED:
            failed[key] = record.asset_observation.description or ""
    return AssetCheckResult(
        passed=not failed,
        description="; ".join(f"{key}: {why}" for key, why in failed.items())
        or "no analysis failed",
        metadata={"failed_suppliers": ", ".join(failed) or "none"},
    )
