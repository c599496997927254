"""ml_analysis_result: submit the shared file to ml-analyze and record the job. It does not wait;
the status sensor reports the outcome as this asset's materialization."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    AssetObservation,
    Config,
    asset,
    asset_check,
)

from .. import pools
from ..catalogue.assets import synced_supplier_ids
from ..catalogue.identity import with_catalogue_id
from ..catalogue.store import CatalogueError
from ..courier.stages import SharedFile, describe
from ..event_metadata import flag, number, text
from ..failures import failure, names_the_supplier, step_failure
from ..handoff.atomic import file_md5
from ..partitions import SUPPLIERS, suppliers
from ..registry.models import Supplier
from ..resources import CatalogueResource, MLAnalyzeResource
from .client import JobNotFound, MLAnalyzeClient, MLAnalyzeError, MLAnalyzeUnavailable
from .events import (
    ATTEMPT_TAG,
    REPLACES_TAG,
    MLPhase,
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
@names_the_supplier
def ml_analysis_result(
    context: AssetExecutionContext,
    config: AnalysisConfig,
    shared_file: SharedFile,
    ml_analyze: MLAnalyzeResource,
    catalogue: CatalogueResource,
) -> Iterator[AssetObservation]:
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
            key, MLPhase.ML_OFF, f"ML processing off ({switch})", shared_path=str(handed.path)
        )
        return

    if shared_file.refused:
        # The service cannot parse this file and no form it parses can be made: say so once,
        # never submit it to fail again and again.
        yield phase_observation(
            key, MLPhase.FAILED, f"{who}: {shared_file.refused}", reason=shared_file.refused
        )
        raise failure(context, f"{who}: not submitted: {shared_file.refused}", retryable=False)

    target = shared_file.to_analyse
    md5 = target.metadata.checksum_md5
    if not target.path.is_file() or file_md5(target.path) != md5:
        raise failure(
            context,
            f"{who}: {target.path} no longer matches its sidecar checksum {md5}",
            retryable=False,
        )
    settled = _failed_for_good(context, md5)
    if settled and not config.force:
        # Submitting it again would fail the same way (or run twice): wait for a new file.
        context.log.warning(
            f"{who}: not submitted again: this file's analysis failed for good ({settled}). "
            "Send a new file, or fix the cause and run with force=true."
        )
        return
    supplier_id = _catalogue_row(context, catalogue, supplier, who)

    try:
        with ml_analyze.client() as client:
            previous = latest_submission(context.instance, key)
            replaced = context.run.tags.get(REPLACES_TAG)
            if previous and previous.job_id != replaced and not config.force:
                state = _job_state(client, previous.job_id)
                if state in ("pending", "processing"):
                    # Never two live jobs for one supplier: a second one stores rows twice.
                    same = previous.checksum_md5 == md5
                    message = (
                        f"{who}: job {previous.job_id} for "
                        f"{'this file' if same else 'its previous file'} is still {state}; "
                        "not submitting a second one"
                    )
                    if same:
                        context.log.info(message)
                        return
                    raise failure(
                        context,
                        message + " (the next sync or run retry submits this file)",
                        retryable=True,
                    )
                if state in ("completed", "completed_with_errors") and previous.checksum_md5 == md5:
                    context.log.info(
                        f"{who}: this file was analysed by job {previous.job_id}; "
                        "run with force=true to redo"
                    )
                    return
            health = client.health()
            if not health.accepts_work(ml_analyze.submit_when_degraded):
                raise MLAnalyzeUnavailable(f"ml-analyze is not ready (health: {health.status})")
            submission = client.submit(
                shared_file.ml_path,
                supplier_id,
                target.metadata.file_type,
                metadata={
                    "supplier_name": supplier.name,
                    "checksum_md5": md5,
                    "original_checksum_md5": handed.metadata.checksum_md5,
                    "dagster_run_id": context.run_id,
                },
                priority_sheet=shared_file.priority_sheet,
            )
    except MLAnalyzeUnavailable as exc:
        # An outage heals: wait for it, holding no run and spending no run retry.
        yield _waiting(context, ml_analyze, shared_file, who, str(exc))
        return
    except MLAnalyzeError as exc:
        raise step_failure(
            context, exc, f"{who}: ml-analyze refused the submission: {exc}"
        ) from exc

    job = TrackedJob(
        job_id=submission.job_id,
        partition=key,
        attempt=int(context.run.tags.get(ATTEMPT_TAG, "1")),
        checksum_md5=md5,
        shared_path=str(target.path),
        staged_path=str(shared_file.staged_path),
        submitted_at=time.time(),
        supplier_id=supplier_id,
        data_rows=shared_file.data_rows,
    )
    context.log.info(f"{who}: submitted to ml-analyze as job {job.job_id} (attempt {job.attempt})")
    yield submission_observation(
        job,
        target.metadata.file_type,
        analysed_file=target.path.name,
        **({"derived_by": shared_file.derivation} if shared_file.derivation else {}),
        **({"priority_sheet": shared_file.priority_sheet} if shared_file.priority_sheet else {}),
    )


def _waiting(
    context: AssetExecutionContext,
    ml_analyze: MLAnalyzeResource,
    shared_file: SharedFile,
    who: str,
    reason: str,
) -> AssetObservation:
    """The submission waits for ml-analyze: the status sensor asks for it again when the
    service is ready. The wait began with the first attempt for this file; past the limit it
    fails, clearly."""
    key, target = context.partition_key, shared_file.to_analyse
    md5 = target.metadata.checksum_md5
    now = time.time()
    state = latest_ml_state(context.instance, key)
    since = now
    if state.phase == MLPhase.WAITING and text(state.metadata, "checksum_md5") == md5:
        since = number(state.metadata, "waiting_since") or now
    limit_s = ml_analyze.wait_limit_minutes * 60
    if now - since > limit_s:
        hours = (now - since) / 3600
        raise failure(
            context,
            f"{who}: not submitted: ml-analyze has not been ready for {hours:.1f} h "
            f"(ML_WAIT_LIMIT_MINUTES={ml_analyze.wait_limit_minutes}); last: {reason}. "
            "Materialize the partition again once it is back.",
            retryable=False,
        )
    until = datetime.fromtimestamp(since + limit_s, UTC).strftime("%Y-%m-%d %H:%M UTC")
    context.log.warning(
        f"{who}: waiting for ml-analyze ({reason}); submitted as soon as it is ready, "
        f"until {until}. No run is held meanwhile."
    )
    return phase_observation(
        key,
        MLPhase.WAITING,
        f"Waiting for ml-analyze: {reason}. Submitted as soon as it is ready (until {until}).",
        reason=reason,
        waiting_since=since,
        wait_until=since + limit_s,
        checksum_md5=md5,
        shared_path=str(target.path),
        staged_path=str(shared_file.staged_path),
        attempt=int(context.run.tags.get(ATTEMPT_TAG, "1")),
    )


def _failed_for_good(context: AssetExecutionContext, md5: str) -> str | None:
    """The reason, when this very file's last analysis failed in a way a new submission of it
    would not mend (a cause that will not heal, a stalled job that may still run)."""
    state = latest_ml_state(context.instance, context.partition_key)
    if state.phase != MLPhase.FAILED:
        return None
    if not flag(state.metadata, "final_for_file") or text(state.metadata, "checksum_md5") != md5:
        return None
    return text(state.metadata, "reason") or "failed for good"


def _catalogue_row(
    context: AssetExecutionContext, catalogue: CatalogueResource, supplier: Supplier, who: str
) -> str:
    """ml-analyze stores items against the catalogue's supplier row: make sure it exists. An
    unreachable catalogue: a supplier the last master sync knew goes on under that sync's id
    (as raw_download does; a job that then fails is resubmitted by the status sensor)."""
    try:
        with catalogue.session() as store:
            found, warning = with_catalogue_id(
                supplier, store, lambda: synced_supplier_ids(context.instance)
            )
            row_id = found.supplier_id
    except CatalogueError as exc:
        raise step_failure(
            context,
            exc,
            f"{who}: cannot make sure the catalogue has the supplier's row, nothing submitted: {exc}",
        ) from exc
    if warning:
        context.log.warning(f"{who}: {warning}")
    if row_id != supplier.supplier_id:
        context.log.warning(
            f"{who}: the catalogue's row for this supplier is now {row_id} (the file was handed "
            f"off under {supplier.supplier_id}); submitting under the catalogue's id"
        )
    return row_id


def _job_state(client: MLAnalyzeClient, job_id: str) -> str | None:
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
    for key in context.instance.get_dynamic_partitions(SUPPLIERS):
        state = latest_ml_state(context.instance, key)
        if state.phase == MLPhase.FAILED:
            failed[key] = state.description
    return AssetCheckResult(
        passed=not failed,
        description="; ".join(f"{key}: {why}" for key, why in failed.items())
        or "no analysis failed",
        metadata={"failed_suppliers": ", ".join(failed) or "none"},
    )
