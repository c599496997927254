"""The inbox sensor: a complete file in INBOX_DIR/<key>/ adds the partition if new and runs
the supplier with that file as its one-off source. Cursor: what each file looked like."""

import json
import time
from pathlib import Path

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, sensor

from ..jobs import supplier_sync_job
from ..partitions import suppliers
from ..resources import FetchResource
from .scanner import claim, format_for, ready, scan

MAX_RUNS_PER_TICK = 50


@sensor(
    job=supplier_sync_job, minimum_interval_seconds=5, default_status=DefaultSensorStatus.RUNNING
)
def inbox_sensor(context: SensorEvaluationContext, fetch: FetchResource):
    """Files dropped into INBOX_DIR/<supplier key>/: each runs once, then lies in .processed/."""
    if not fetch.inbox_dir:
        return SensorResult(skip_reason="INBOX_DIR is not set")
    inbox = Path(fetch.inbox_dir)
    files, refused = scan(inbox)
    for name in refused:
        context.log.warning(
            f"inbox folder '{name}' is not a supplier key (lower-case slug); ignored"
        )
    seen_before = json.loads(context.cursor) if context.cursor else {}
    to_run = ready(files, seen_before, time.time())[:MAX_RUNS_PER_TICK]
    known = set(context.instance.get_dynamic_partitions(suppliers.name))
    new_keys = sorted({f.key for f in to_run} - known)
    runs = []
    for file in to_run:
        claimed = claim(file, inbox)
        context.log.info(f"inbox: {file.key}/{file.path.name} → {claimed}")
        runs.append(
            RunRequest(
                partition_key=file.key,
                run_key=f"inbox-{file.key}-{claimed.name}",
                run_config={
                    "ops": {
                        "raw_download": {
                            "config": {"source_url": str(claimed), "format": format_for(claimed)}
                        }
                    }
                },
                tags={"courier/trigger": "inbox", "courier/inbox_file": file.path.name},
            )
        )
    claimed_paths = {str(f.path) for f in to_run}
    cursor = {str(f.path): f.signature for f in files if str(f.path) not in claimed_paths}
    return SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[suppliers.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(cursor),
    )
