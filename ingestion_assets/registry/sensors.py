"""Registry → partitions and runs. Cursor: the storage id of the last registry handled."""

from collections.abc import Mapping

from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from ..jobs import master_sync_job, supplier_sync_job
from ..partitions import SUPPLIERS, suppliers
from ..status import busy

REGISTRY = AssetKey("supplier_registry")


def _keys(metadata: Mapping[str, MetadataValue], name: str) -> list[str]:
    """A JSON list of supplier keys the registry wrote; anything else is a broken registry."""
    value = metadata[name].value
    if not isinstance(value, list) or not all(isinstance(key, str) for key in value):
        raise TypeError(f"supplier_registry metadata {name!r} is not a list of supplier keys")
    return [str(key) for key in value]


@sensor(
    job=supplier_sync_job, default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=10
)
def supplier_partitions_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    """Each new supplier_registry: add new active suppliers as partitions, request one run per
    active supplier. A supplier marked inactive loses its partition once nothing of it is under
    way (so that it does not count as missing; its history stays and comes back with it);
    suppliers that left the sheet keep theirs."""
    records = context.instance.fetch_materializations(REGISTRY, limit=1).records
    if not records or records[0].storage_id <= int(context.cursor or 0):
        return SkipReason("no new supplier_registry materialization")
    record = records[0]
    materialization = record.asset_materialization
    if materialization is None:  # a materialization record always carries one
        raise TypeError(f"supplier_registry record {record.storage_id} has no materialization")
    all_keys = _keys(materialization.metadata, "supplier_keys")
    active_keys = _keys(materialization.metadata, "active_supplier_keys")
    known = set(context.instance.get_dynamic_partitions(SUPPLIERS))
    new_keys = [key for key in active_keys if key not in known]
    retired = [
        key
        for key in all_keys
        if key in known and key not in active_keys and not busy(context.instance, key)
    ]
    requests: list[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest] = []
    if new_keys:
        requests.append(suppliers.build_add_request(new_keys))
    if retired:
        requests.append(suppliers.build_delete_request(retired))
    return SensorResult(
        dynamic_partitions_requests=requests,
        run_requests=[
            RunRequest(
                partition_key=key,
                # unique per registry materialization: the next sync gets new runs
                run_key=f"registry-{record.storage_id}-{key}",
                tags={"courier/trigger": "master_sync", "courier/registry_run": record.run_id},
            )
            for key in active_keys
        ],
        cursor=str(record.storage_id),
    )


@sensor(
    job=master_sync_job, default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=30
)
def initial_master_sync_sensor(context: SensorEvaluationContext) -> RunRequest | SkipReason:
    """A fresh instance syncs the master sheet at once, without waiting for the schedule."""
    if context.instance.fetch_materializations(REGISTRY, limit=1).records:
        return SkipReason("the master sheet has been synced before")
    return RunRequest(run_key="initial-master-sync", tags={"courier/trigger": "first_start"})
