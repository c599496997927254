"""A source that is down is fetched again minutes later, not seconds: at most
FetchResource.max_fetches times in one sync, SOURCE_RETRY_DELAY_SECONDS apart (doubling).

raw_download records a `source_down` observation (with `retry_at` while attempts remain) and
fails its run with run retries off; the source retry sensor asks for the next attempt when it
is due, unless the supplier was fetched since. No run waits meanwhile. Cursor: the last
observation read and the attempts due."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    DefaultSensorStatus,
    EventLogRecord,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from ..event_metadata import number, text, whole
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


@dataclass(frozen=True)
class DueRetry:
    """A source_down observation with an attempt left: the next fetch, and when."""

    partition: str
    at: float
    attempt: int  # the attempt to make
    storage_id: int  # of the observation: a raw_download materialized after it supersedes it
    one_off: str | None  # the run's one-off source (JSON), if it had one

    @classmethod
    def from_record(cls, record: EventLogRecord) -> DueRetry | None:
        observation = record.asset_observation
        if observation is None or observation.partition is None:
            return None
        meta = observation.metadata
        retry_at, attempt = number(meta, "retry_at"), whole(meta, "fetch_attempt")
        if text(meta, "phase") != SOURCE_DOWN or retry_at is None or attempt is None:
            return None
        return cls(
            observation.partition,
            retry_at,
            attempt + 1,
            record.storage_id,
            text(meta, "one_off_source"),
        )


@sensor(
    job=supplier_sync_job, minimum_interval_seconds=10, default_status=DefaultSensorStatus.RUNNING
)
def source_retry_sensor(context: SensorEvaluationContext) -> SensorResult:
    """Fetches again, when due, the suppliers whose source was down."""
    cursor = json.loads(context.cursor) if context.cursor else {}
    after = int(cursor.get("after", 0))
    # (cursors written before DueRetry held the same fields but the partition)
    due = {
        key: DueRetry(**{**entry, "partition": key}) for key, entry in cursor.get("due", {}).items()
    }
    records = context.instance.fetch_observations(
        AssetRecordsFilter(asset_key=RAW, after_storage_id=after or None),
        limit=MAX_EVENTS_PER_TICK,
        ascending=True,
    ).records
    for record in records:
        after = record.storage_id
        retry = DueRetry.from_record(record)
        if retry is not None:
            due[retry.partition] = retry
    runs: list[RunRequest] = []
    now = time.time()
    for partition, retry in list(due.items()):
        if retry.at > now:
            continue
        del due[partition]
        latest = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=RAW, asset_partitions=[partition]), limit=1
        ).records
        if latest and latest[0].storage_id > retry.storage_id:
            continue  # fetched since (a later sync, a click): nothing to retry
        one_off = json.loads(retry.one_off) if retry.one_off else None
        runs.append(
            RunRequest(
                partition_key=partition,
                run_key=f"source-retry-{retry.storage_id}",
                run_config={"ops": {"raw_download": {"config": one_off}}} if one_off else {},
                tags={FETCH_ATTEMPT_TAG: str(retry.attempt), "courier/trigger": "source_retry"},
            )
        )
    return SensorResult(
        run_requests=runs,
        skip_reason=None if runs else f"{len(due)} source retries pending",
        cursor=json.dumps(
            {"after": after, "due": {key: asdict(retry) for key, retry in due.items()}}
        ),
    )
