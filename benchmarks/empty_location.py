"""The orchestration floor: one empty partitioned asset, BENCH_RUNS runs requested at once by
a sensor, the same executor as the courier's code location. Loaded by benchmarks/orchestration.py."""

import os

from dagster import (
    DefaultSensorStatus,
    Definitions,
    DynamicPartitionsDefinition,
    RunRequest,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    in_process_executor,
    sensor,
)

bench = DynamicPartitionsDefinition(name="bench")


@asset(partitions_def=bench)
def empty() -> None:
    return None


empty_job = define_asset_job("empty_job", selection=[empty], partitions_def=bench)


@sensor(job=empty_job, default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=1)
def burst(context):
    if context.cursor:
        return SkipReason("requested already")
    keys = [f"p{i:03d}" for i in range(int(os.environ.get("BENCH_RUNS", "100")))]
    return SensorResult(
        dynamic_partitions_requests=[bench.build_add_request(keys)],
        run_requests=[RunRequest(partition_key=key, run_key=key) for key in keys],
        cursor="done",
    )


defs = Definitions(assets=[empty], jobs=[empty_job], sensors=[burst], executor=in_process_executor)
