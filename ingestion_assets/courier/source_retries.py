"""A source that is down is fetched again minutes later, not seconds: at most
FetchResource.max_fetches times in one sync, SOURCE_RETRY_DELAY_SECONDS apart (doubling).

raw_download records a `source_down` observation (with `retry_at` while attempts remain) and
fails its run with run retries off; the source retry sensor asks for the next attempt when it
is due, unless the supplier was fetched since. No run waits meanwhile. Cursor: the last
observation read and the attempts due."""

from __future__ import annotations

import json
import time
from typing import Any

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from ..jobs import supplier_sync_job

RAW = AssetKey("raw_download")
SOURCE_DOWN = "source_down"
FETCH_ATTEMPT_TAG = "courier/fetch_attempt"
MAX_EVENTS_PER_TICK = 1000


def source_down_observation(
    partition: str,
    reason: str,
    attempt: int,
    retry_at: float | None,
    one_off: dict[str, Any] | None,
) -> AssetObservation:
    when = (
        f"attempt {attempt + 1} at {time.strftime('%H:%M:%S UTC', time.gmtime(retry_at))}"
        if retry_at
        else "no attempt left in this sync"
    )
    return AssetObservation(
        asset_key=RAW,
        partition=partition,
        description=f"Source down (attempt {attempt}): {reason}; {when}",
        metadata={
            "phase": SOURCE_DOWN,
            "reason": reason,
            "fetch_attempt": attempt,
            **({"retry_at": retry_at} if retry_at else {}),
            **({"one_off_source": json.dumps(one_off)} if one_off else {}),
        },
    )


@sensor(
    job=supplier_sync_job, minimum_interval_seconds=10, default_status=DefaultSensorStatus.RUNNING
)
def source_retry_sensor(context: SensorEvaluationContext) -> SensorResult:
    """Fetches again, when due, the suppliers whose source was down."""
    cursor = json.loads(context.cursor) if context.cursor else {}
    after, due = int(cursor.get("after", 0)), dict(cursor.get("due", {}))
    records = context.instance.fetch_observations(
        AssetRecordsFilter(asset_key=RAW, after_storage_id=after or None),
        limit=MAX_EVENTS_PER_TICK,
        ascending=True,
    ).records
    for record in records:
        after = record.storage_id
        observation = record.asset_observation
        if observation is None or observation.partition is None:
            continue
        meta: dict[str, Any] = {k: v.value for k, v in observation.metadata.items()}
        if meta.get("phase") == SOURCE_DOWN and "retry_at" in meta:
            due[observation.partition] = {
                "at": float(meta["retry_at"]),
                "attempt": int(meta["fetch_attempt"]) + 1,
                "storage_id": record.storage_id,
                "one_off": meta.get("one_off_source"),
            }
    runs: list[RunRequest] = []
    now = time.time()
    for partition, entry in list(due.items()):
        if entry["at"] > now:
            continue
        del due[partition]
        latest = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=RAW, asset_partitions=[partition]), limit=1
        ).records
        if latest and latest[0].storage_id > entry["storage_id"]:
            continue  # fetched since (a later sync, a click): nothing to retry
        one_off = json.loads(entry["one_off"]) if entry["one_off"] else None
        runs.append(
            RunRequest(
                partition_key=partition,
                run_key=f"source-retry-{entry['storage_id']}",
                run_config={"ops": {"raw_download": {"config": one_off}}} if one_off else {},
                tags={FETCH_ATTEMPT_TAG: str(entry["attempt"]), "courier/trigger": "source_retry"},
            )
        )
    return SensorResult(
        run_requests=runs,
        skip_reason=None if runs else f"{len(due)} source retries pending",
        cursor=json.dumps({"after": after, "due": due}),
    )
