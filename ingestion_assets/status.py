"""Where every supplier stands, read from the Dagster instance: one line per supplier.

python -m ingestion_assets status
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    EventLogRecord,
    RunRecord,
    RunsFilter,
)

from .event_metadata import number, text, whole
from .ml.events import (
    ML_RESULT,
    OUTSTANDING,
    MLPhase,
    MLState,
    has_phase,
    latest_ml_state,
    ml_state,
)
from .partitions import SUPPLIERS

IN_PROGRESS = {
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
}
RAW = AssetKey("raw_download")


class Phase(StrEnum):
    """Where a supplier stands, as `make status` and the overview show it."""

    NEVER_SYNCED = "never synced"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"  # handed off; no ML step has run since
    WAITING = "waiting for ml-analyze"
    ANALYZING = "analyzing"
    COMPLETE = "complete"
    COMPLETE_WITH_WARNINGS = "completed with warnings"
    ML_OFF = "ML off"
    FAILED = "failed"


WORKING = frozenset({Phase.DOWNLOADING, Phase.ANALYZING, Phase.WAITING})


@dataclass
class SupplierStatus:
    key: str
    phase: Phase
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupplierStatus:
        """Back from JSON (the overview's cursor)."""
        return cls(**{**data, "phase": Phase(data["phase"])})


PARTITION_TAG = "dagster/partition"
# The newest runs of the suppliers asked about are read in one query of this many runs per
# supplier; a supplier whose newest run falls outside it (others ran many times since) asks alone.
RUNS_PER_SUPPLIER = 3


@dataclass(frozen=True)
class _Records:
    """The newest records a supplier's status is read from."""

    download: EventLogRecord | None  # raw_download's materialization
    progress: EventLogRecord | None  # raw_download's observation (bytes so far, unchanged, …)
    analysed: EventLogRecord | None  # ml_analysis_result's materialization
    ml: MLState
    run: RunRecord | None


def supplier_status(instance: DagsterInstance, key: str) -> SupplierStatus:
    return supplier_statuses(instance, [key])[0]


def supplier_statuses(instance: DagsterInstance, keys: Sequence[str]) -> list[SupplierStatus]:
    """The statuses of these suppliers, in this order. A handful of queries however many they
    are: the overview re-reads hundreds while a sync runs, and every one a few minutes later."""
    if not keys:
        return []
    wanted = set(keys)
    downloads = _latest(instance, RAW, DagsterEventType.ASSET_MATERIALIZATION, wanted)
    progress = _latest(instance, RAW, DagsterEventType.ASSET_OBSERVATION, wanted)
    analysed = _latest(instance, ML_RESULT, DagsterEventType.ASSET_MATERIALIZATION, wanted)
    observed = _latest(instance, ML_RESULT, DagsterEventType.ASSET_OBSERVATION, wanted)
    runs = _latest_runs(instance, wanted)
    statuses = []
    for key in keys:
        seen = observed.get(key)
        if seen is not None and not has_phase(seen):
            ml = latest_ml_state(instance, key)  # a phase written by a newer version: look back
        else:
            ml = ml_state(analysed.get(key), [seen] if seen else [])
        records = _Records(
            downloads.get(key), progress.get(key), analysed.get(key), ml, runs.get(key)
        )
        statuses.append(_status(instance, key, records))
    return statuses


def _latest(
    instance: DagsterInstance, asset: AssetKey, event_type: DagsterEventType, keys: set[str]
) -> dict[str, EventLogRecord]:
    """Each partition's newest event of this type: two queries for all of them."""
    ids = instance.event_log_storage.get_latest_storage_id_by_partition(asset, event_type, keys)
    if not ids:
        return {}
    fetch = (
        instance.fetch_materializations
        if event_type == DagsterEventType.ASSET_MATERIALIZATION
        else instance.fetch_observations
    )
    records = fetch(
        AssetRecordsFilter(asset_key=asset, storage_ids=list(ids.values())), limit=len(ids)
    ).records
    return {r.partition_key: r for r in records if r.partition_key}


def _latest_runs(instance: DagsterInstance, keys: set[str]) -> dict[str, RunRecord]:
    window = RUNS_PER_SUPPLIER * len(keys)
    records = instance.get_run_records(RunsFilter(tags={PARTITION_TAG: sorted(keys)}), limit=window)
    latest: dict[str, RunRecord] = {}
    for record in records:  # newest first
        latest.setdefault(record.dagster_run.tags.get(PARTITION_TAG, ""), record)
    if len(records) == window:  # the window may have left some suppliers' newest run out
        for key in keys - latest.keys():
            runs = instance.get_run_records(RunsFilter(tags={PARTITION_TAG: key}), limit=1)
            if runs:
                latest[key] = runs[0]
    return latest


def _status(instance: DagsterInstance, key: str, records: _Records) -> SupplierStatus:
    download, ml, run = records.download, records.ml, records.run
    ml_phase, ml_record = ml
    status = SupplierStatus(key, Phase.NEVER_SYNCED)
    if download is not None and download.asset_materialization is not None:
        metadata = download.asset_materialization.metadata
        status.size, status.md5 = whole(metadata, "size_bytes"), text(metadata, "checksum_md5")
        status.updated = status.file_at = download.timestamp
    if run:
        status.run_id = run.dagster_run.run_id
    if ml_record is not None:
        metadata = ml.metadata
        status.updated = max(status.updated or 0, ml_record.timestamp)
        status.attempts = whole(metadata, "attempt")
        if ml_phase == MLPhase.ANALYZING:
            progress = number(metadata, "progress_percentage")
            status.progress = round(progress) if progress is not None else None
        status.detail = ml.description
    if records.analysed is not None:
        status.analysed_at = records.analysed.timestamp
    if ml_phase == MLPhase.COMPLETED:
        metadata = ml.metadata
        status.items = whole(metadata, "items_total")
        status.matched = whole(metadata, "items_matched")
        status.review = whole(metadata, "items_review")
        status.errors = whole(metadata, "error_count")

    # The latest run counts if it started after the latest event, or produced it itself (a run
    # whose hand-off or submission failed has materialized raw_download just before).
    latest = max((r for r in (download, ml_record) if r), key=lambda r: r.timestamp, default=None)
    run_is_newest = run is not None and (
        run.create_timestamp.timestamp() > (status.updated or 0)
        or (latest is not None and latest.run_id == run.dagster_run.run_id)
    )
    if run and run.dagster_run.status in IN_PROGRESS and run_is_newest:
        status.phase = Phase.DOWNLOADING
        status.detail = _download_progress(records.progress, run.dagster_run.run_id) or (
            f"run {run.dagster_run.run_id[:8]} {run.dagster_run.status.value.lower()}"
        )
    elif run and run.dagster_run.status == DagsterRunStatus.FAILURE and run_is_newest:
        status.phase, status.detail = (
            Phase.FAILED,
            _failure_reason(instance, run.dagster_run.run_id),
        )
        status.updated = run.update_timestamp.timestamp()
    elif ml_phase in OUTSTANDING:
        status.phase = Phase.ANALYZING
    elif ml_phase == MLPhase.COMPLETED:
        status.phase = Phase.COMPLETE_WITH_WARNINGS if status.errors else Phase.COMPLETE
    elif ml_phase == MLPhase.FAILED:
        status.phase = Phase.FAILED
    elif ml_phase == MLPhase.ML_OFF:
        status.phase = Phase.ML_OFF
    elif ml_phase == MLPhase.WAITING:
        status.phase = Phase.WAITING
    elif download:
        status.phase = Phase.DOWNLOADED
    return status


def _download_progress(observation: EventLogRecord | None, run_id: str) -> str | None:
    """ "Downloading: 12.0 MB of 50.0 MB", when this run has reported bytes so far."""
    if observation is not None and observation.run_id == run_id:
        return observation.asset_observation.description if observation.asset_observation else None
    return None


def busy(instance: DagsterInstance, key: str) -> bool:
    """Is something of this supplier under way: a run, an analysis, a submission waiting?"""
    return supplier_status(instance, key).phase in WORKING


def _failure_reason(instance: DagsterInstance, run_id: str) -> str:
    for record in instance.get_records_for_run(
        run_id, of_type=DagsterEventType.STEP_FAILURE
    ).records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            return data.user_failure_data.description
        return data.error.message.strip() if data.error else "step failed"
    return "run failed"


def all_statuses(instance: DagsterInstance) -> list[SupplierStatus]:
    return supplier_statuses(instance, sorted(instance.get_dynamic_partitions(SUPPLIERS)))


def render(statuses: list[SupplierStatus]) -> str:
    def cell(value: object) -> str:
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
            dt.datetime.fromtimestamp(s.updated, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
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
