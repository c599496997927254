"""Where every supplier stands, read from the Dagster instance: one line per supplier.

python -m ingestion_assets status
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
)

from .ml.events import (
    ANALYZING,
    COMPLETED,
    FAILED,
    ML_OFF,
    ML_RESULT,
    RETRYING,
    SUBMITTED,
    WAITING,
    latest_ml_state,
)
from .partitions import suppliers

IN_PROGRESS = {
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
}
RAW = AssetKey("raw_download")


@dataclass
class SupplierStatus:
    key: str
    phase: str
    size: int | None = None
    md5: str | None = None
    items: int | None = None
    matched: int | None = None
    review: int | None = None
    errors: int | None = None
    attempts: int | None = None
    updated: float | None = None
    detail: str = ""
    progress: int | None = None  # percent, while ml-analyze works on the file
    file_at: float | None = None  # when the current file was downloaded
    analysed_at: float | None = None  # the last completed analysis, of whichever file
    run_id: str | None = None  # the supplier's latest run


def _value(metadata, name):
    entry = metadata.get(name)
    return entry.value if entry is not None else None


def supplier_status(instance: DagsterInstance, key: str) -> SupplierStatus:
    raw = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=RAW, asset_partitions=[key]), limit=1
    ).records
    raw = raw[0] if raw else None
    ml_phase, ml_record = latest_ml_state(instance, key)
    runs = instance.get_run_records(RunsFilter(tags={"dagster/partition": key}), limit=1)
    run = runs[0] if runs else None
    status = SupplierStatus(key, "never synced")
    if raw:
        metadata = raw.asset_materialization.metadata
        status.size, status.md5, status.updated = (
            _value(metadata, "size_bytes"),
            _value(metadata, "checksum_md5"),
            raw.timestamp,
        )
        status.file_at = raw.timestamp
    if run:
        status.run_id = run.dagster_run.run_id
    if ml_record:
        event = (
            ml_record.asset_materialization
            if ml_phase == COMPLETED
            else ml_record.asset_observation
        )
        metadata = event.metadata
        status.updated = max(status.updated or 0, ml_record.timestamp)
        status.attempts = _value(metadata, "attempt")
        if ml_phase == ANALYZING:
            status.progress = _value(metadata, "progress_percentage")
        if ml_phase == COMPLETED:
            status.analysed_at = ml_record.timestamp
            status.items = _value(metadata, "items_total")
            status.matched = _value(metadata, "items_matched")
            status.review = _value(metadata, "items_review")
            status.errors = _value(metadata, "error_count")
        status.detail = event.description or ""
    if ml_phase not in (COMPLETED, None):
        last = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=ML_RESULT, asset_partitions=[key]), limit=1
        ).records
        status.analysed_at = last[0].timestamp if last else None

    # The latest run counts if it started after the latest event, or produced it itself (a run
    # whose hand-off or submission failed has materialized raw_download just before).
    latest = max((r for r in (raw, ml_record) if r), key=lambda r: r.timestamp, default=None)
    run_is_newest = run and (
        run.create_timestamp.timestamp() > (status.updated or 0)
        or (latest is not None and latest.run_id == run.dagster_run.run_id)
    )
    if run and run.dagster_run.status in IN_PROGRESS and run_is_newest:
        status.phase = "downloading"
        status.detail = _download_progress(instance, key, run.dagster_run.run_id) or (
            f"run {run.dagster_run.run_id[:8]} {run.dagster_run.status.value.lower()}"
        )
    elif run and run.dagster_run.status == DagsterRunStatus.FAILURE and run_is_newest:
        status.phase, status.detail = "failed", _failure_reason(instance, run.dagster_run.run_id)
        status.updated = run.update_timestamp.timestamp()
    elif ml_phase in (SUBMITTED, ANALYZING, RETRYING):
        status.phase = "analyzing"
    elif ml_phase == COMPLETED:
        status.phase = "completed with warnings" if status.errors else "complete"
    elif ml_phase == FAILED:
        status.phase = "failed"
    elif ml_phase == ML_OFF:
        status.phase = "ML off"
    elif ml_phase == WAITING:
        status.phase = "waiting for ml-analyze"
    elif raw:
        status.phase = "downloaded"
    return status


def _download_progress(instance: DagsterInstance, key: str, run_id: str) -> str | None:
    """ "Downloading: 12.0 MB of 50.0 MB", when this run has reported bytes so far."""
    latest = instance.fetch_observations(
        AssetRecordsFilter(asset_key=RAW, asset_partitions=[key]), limit=1
    ).records
    if latest and latest[0].run_id == run_id:
        observation = latest[0].asset_observation
        return observation.description if observation else None
    return None


WORKING = ("downloading", "analyzing", "waiting for ml-analyze")


def busy(instance: DagsterInstance, key: str) -> bool:
    """Is something of this supplier under way: a run, an analysis, a submission waiting?"""
    return supplier_status(instance, key).phase in WORKING


def _failure_reason(instance: DagsterInstance, run_id: str) -> str:
    for record in instance.get_records_for_run(
        run_id, of_type=DagsterEventType.STEP_FAILURE
    ).records:
        data = record.event_log_entry.dagster_event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            return data.user_failure_data.description
        return data.error.message.strip() if data.error else "step failed"
    return "run failed"


def all_statuses(instance: DagsterInstance) -> list[SupplierStatus]:
    return [
        supplier_status(instance, key)
        for key in sorted(instance.get_dynamic_partitions(suppliers.name))
    ]


def render(statuses: list[SupplierStatus]) -> str:
    def cell(value) -> str:
        return "-" if value is None else str(value)

    header = [
        "supplier",
        "phase",
        "size",
        "md5",
        "items",
        "matched",
        "review",
        "errors",
        "attempts",
        "updated",
        "detail",
    ]
    rows = [
        [
            s.key,
            s.phase,
            cell(s.size),
            s.md5[:8] if s.md5 else "-",
            cell(s.items),
            cell(s.matched),
            cell(s.review),
            cell(s.errors),
            cell(s.attempts),
            dt.datetime.fromtimestamp(s.updated, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            if s.updated
            else "-",
            s.detail[:80],
        ]
        for s in statuses
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines) if rows else "no suppliers yet: run the master_sync job"
