"""The supplier_overview asset, kept current by a sensor, and the freshness check.

When something was written to the event log since its last look, the sensor re-reads the
status of the suppliers it concerns (their asset events and runs since then; all of them every
few minutes, for freshness) and reports a new overview only when the table changed. The
statuses it read are kept in its cursor. No run: the overview is a runless materialization of
an external asset.
"""

import dataclasses
import datetime as dt
import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    MetadataValue,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    asset_check,
    sensor,
)

from ..ml.assets import ml_analysis_result
from ..ml.events import ML_RESULT
from ..partitions import SUPPLIERS
from ..resources import MasterSheetResource
from ..status import PARTITION_TAG, RAW, SupplierStatus, all_statuses, supplier_statuses
from .screen import Row, markdown, phase_counts, rows, table_value

OVERVIEW = AssetKey("supplier_overview")
REGISTRY = AssetKey("supplier_registry")
FRESH_CHECK = "analyses_fresh"
INTERVAL_S = 4  # a look every wake-up of the sensor daemon (5 s)
REFRESH_S = 300  # freshness changes with time alone: read everyone again at least this often
MAX_TOUCHED = 500  # more runs updated than this since the last look: read everyone
RUN_SLACK_S = 5  # runs updated this long before the last look are read again (clock races)
# A sync under way: when a look re-read more than BURST_SUPPLIERS suppliers, the next waits
# BURST_INTERVAL_S instead of a poll interval. A look reads its suppliers in one batch (a fixed
# number of queries), but still builds and compares the whole table: every few seconds during a
# sync of hundreds, that took CPU from the runs themselves (docs/benchmarks.md, figure 2).
BURST_SUPPLIERS = 10
BURST_INTERVAL_S = 15

supplier_overview = AssetSpec(
    OVERVIEW,
    group_name="suppliers",
    kinds={"dagster"},
    description=(
        "Every supplier in one table: phase, progress, file, items, matched / review, errors, "
        "attempts, last change, its latest run and the reason for a failure or warning. Kept "
        "current by the supplier_overview_sensor (within seconds of a change; every 15 s "
        "while a sync changes many suppliers at once)."
    ),
)


def stale_after_s(master_sheet: MasterSheetResource) -> float | None:
    """An analysis older than two sync intervals is stale; without a schedule, none is."""
    hours = master_sheet.sync_interval_hours
    return 2 * hours * 3600 if hours > 0 else None


def overview_rows(
    instance: DagsterInstance,
    now: float,
    stale_after: float | None,
    statuses: list[SupplierStatus] | None = None,
) -> list[Row]:
    names: dict[str, str] = {}
    inactive: set[str] = set()
    latest = instance.fetch_materializations(REGISTRY, limit=1).records
    materialization = latest[0].asset_materialization if latest else None
    if materialization is not None:
        metadata = materialization.metadata
        names = dict(_json(metadata, "supplier_names", {}))
        active = set(_json(metadata, "active_supplier_keys", []))
        inactive = set(_json(metadata, "supplier_keys", [])) - active
    if statuses is None:
        statuses = all_statuses(instance)
    return rows(statuses, names, inactive, now, stale_after)


def touched_suppliers(instance: DagsterInstance, after_id: int, since: float) -> set[str] | None:
    """Suppliers with an asset event after record `after_id` or a run updated since `since`:
    the ones whose status may have changed. None when there are too many runs to say."""
    touched: set[str] = set()
    for asset in (RAW, ML_RESULT):
        for event_type in (
            DagsterEventType.ASSET_MATERIALIZATION,
            DagsterEventType.ASSET_OBSERVATION,
        ):
            touched |= instance.event_log_storage.get_latest_storage_id_by_partition(
                asset, event_type, after_cursor=after_id
            ).keys()
    updated_after = dt.datetime.fromtimestamp(since - RUN_SLACK_S, dt.UTC)
    runs = instance.get_run_records(RunsFilter(updated_after=updated_after), limit=MAX_TOUCHED)
    if len(runs) >= MAX_TOUCHED:
        return None
    touched |= {
        r.dagster_run.tags[PARTITION_TAG] for r in runs if r.dagster_run.tags.get(PARTITION_TAG)
    }
    return touched


def current_statuses(
    instance: DagsterInstance, cursor: Mapping[str, Any], now: float
) -> tuple[list[SupplierStatus], int]:
    """Every supplier's status: those the cursor holds, re-read where something happened; and
    how many were re-read because something happened (0 when everyone was read)."""
    keys = sorted(instance.get_dynamic_partitions(SUPPLIERS))
    held = {s["key"]: SupplierStatus.from_dict(s) for s in cursor.get("statuses", [])}
    touched = (
        touched_suppliers(instance, cursor["newest"], cursor["at"])
        if held and now - cursor.get("full_at", 0) < REFRESH_S
        else None
    )
    if touched is None:
        return supplier_statuses(instance, keys), 0
    reread = [key for key in keys if key in touched or key not in held]
    fresh = dict(zip(reread, supplier_statuses(instance, reread), strict=True))
    return [fresh[key] if key in fresh else held[key] for key in keys], len(reread)


def _json(metadata: Mapping[str, MetadataValue], name: str, default: Any) -> Any:
    entry = metadata.get(name)
    return entry.value if entry is not None else default


def overview_event(table: list[Row]) -> AssetMaterialization:
    counts = phase_counts(table)
    summary = ", ".join(f"{n} {phase}" for phase, n in counts.items() if n) or "no suppliers"
    return AssetMaterialization(
        asset_key=OVERVIEW,
        description=f"{len(table)} suppliers: {summary}",
        metadata={
            "suppliers": table_value(table),
            "suppliers, with links": MetadataValue.md(markdown(table)),
            **{f"phase: {phase}": n for phase, n in counts.items()},
        },
    )


def freshness_evaluation(table: list[Row]) -> AssetCheckEvaluation:
    stale = [row for row in table if row.stale]
    return AssetCheckEvaluation(
        asset_key=ml_analysis_result.key,
        check_name=FRESH_CHECK,
        passed=not stale,
        severity=AssetCheckSeverity.WARN,
        description=_stale_description(stale),
        metadata={"stale_suppliers": ", ".join(row.status.key for row in stale) or "none"},
    )


def _stale_description(stale: list[Row]) -> str:
    if not stale:
        return "every active supplier was analysed within two sync intervals"
    return "\n".join(
        f"{row.status.key}: {row.stale}"
        + (f"; {row.phase}: {row.reason}" if row.reason else f"; {row.phase}")
        for row in stale
    )


@sensor(
    minimum_interval_seconds=INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
)
def supplier_overview_sensor(
    context: SensorEvaluationContext, master_sheet: MasterSheetResource
) -> SensorResult:
    """Keeps the supplier_overview table and the analyses_fresh check current."""
    return evaluate(context.instance, context.cursor, time.time(), stale_after_s(master_sheet))


def evaluate(
    instance: DagsterInstance, cursor_text: str | None, now: float, stale_after: float | None
) -> SensorResult:
    cursor = json.loads(cursor_text) if cursor_text else {}
    newest = instance.event_log_storage.get_maximum_record_id() or 0
    if newest == cursor.get("newest") and now - cursor.get("full_at", 0) < REFRESH_S:
        return SensorResult(skip_reason="nothing changed", cursor=cursor_text)
    if cursor.get("reread", 0) > BURST_SUPPLIERS and now - cursor["at"] < BURST_INTERVAL_S:
        wait = BURST_INTERVAL_S - (now - cursor["at"])
        return SensorResult(
            skip_reason=f"a sync is under way: the next look in {wait:.0f} s", cursor=cursor_text
        )
    full = not cursor.get("statuses") or now - cursor.get("full_at", 0) >= REFRESH_S
    statuses, reread = current_statuses(instance, cursor, now)
    table = overview_rows(instance, now, stale_after, statuses)
    event = overview_event(table)
    digest = hashlib.md5(
        str(event.metadata["suppliers, with links"].value).encode(), usedforsecurity=False
    ).hexdigest()
    stale = sorted(row.status.key for row in table if row.stale)
    events: list[AssetMaterialization | AssetCheckEvaluation] = []
    if digest != cursor.get("digest"):
        events.append(event)
    if stale != cursor.get("stale"):
        events.append(freshness_evaluation(table))
    new_cursor = {
        "newest": newest,
        "at": now,
        "full_at": now if full else cursor["full_at"],
        "digest": digest,
        "stale": stale,
        "reread": reread,
        "statuses": [dataclasses.asdict(s) for s in statuses],
    }
    return SensorResult(
        asset_events=events,
        cursor=json.dumps(new_cursor),
        skip_reason=None if events else "the overview is current",
    )


@asset_check(asset=ml_analysis_result, name=FRESH_CHECK)
def analyses_fresh(
    context: AssetCheckExecutionContext, master_sheet: MasterSheetResource
) -> AssetCheckResult:
    """Warns when an active supplier's last successful analysis is older than two sync
    intervals, naming each with its phase and reason. The overview sensor reports it as that
    changes; running it by hand re-reads the event log."""
    table = overview_rows(context.instance, time.time(), stale_after_s(master_sheet))
    evaluation = freshness_evaluation(table)
    return AssetCheckResult(
        passed=evaluation.passed,
        severity=AssetCheckSeverity.WARN,
        description=evaluation.description,
        metadata=evaluation.metadata,
    )
