"""The inbox sensor: a complete file in INBOX_DIR/<key>/ adds the partition if new and runs
the supplier with that file as its one-off source. The file stays in place until that run has
fetched it (the run moves it to .processed/): a tick that fails loses nothing, the next one
asks for the same run again. Cursor: what each file looked like, and which were requested."""

import json
import time
from pathlib import Path

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, sensor

from ..jobs import supplier_sync_job
from ..partitions import SUPPLIERS, suppliers
from ..resources import FetchResource
from .scanner import format_for, ready, run_key, scan

MAX_RUNS_PER_TICK = 50


@sensor(
    job=supplier_sync_job, minimum_interval_seconds=5, default_status=DefaultSensorStatus.RUNNING
)
def inbox_sensor(context: SensorEvaluationContext, fetch: FetchResource) -> SensorResult:
    """Files dropped into INBOX_DIR/<supplier key>/: each runs once, then lies in .processed/."""
    if not fetch.inbox_dir:
        return SensorResult(skip_reason="INBOX_DIR is not set")
    inbox = Path(fetch.inbox_dir)
    files, refused = scan(inbox)
    for name in refused:
        context.log.warning(
            f"inbox folder '{name}' is not a supplier key (lower-case slug); ignored"
        )
    cursor = json.loads(context.cursor) if context.cursor else {}
    seen_before, requested = cursor.get("seen", {}), cursor.get("requested", {})
    waiting = [f for f in files if requested.get(str(f.path)) != f.signature]
    to_run = ready(waiting, seen_before, time.time())[:MAX_RUNS_PER_TICK]
    known = set(context.instance.get_dynamic_partitions(SUPPLIERS))
    new_keys = sorted({f.key for f in to_run} - known)
    runs = []
    for file in to_run:
        context.log.info(f"inbox: {file.key}/{file.path.name}: requesting a run")
        runs.append(
            RunRequest(
                partition_key=file.key,
                run_key=run_key(file),
                run_config={
                    "ops": {
                        "raw_download": {
                            "config": {
                                "source_url": str(file.path),
                                "format": format_for(file.path),
                            }
                        }
                    }
                },
                tags={"courier/trigger": "inbox", "courier/inbox_file": file.path.name},
            )
        )
    present = {str(f.path): f.signature for f in files}
    requested = {path: sig for path, sig in requested.items() if present.get(path) == sig} | {
        str(f.path): f.signature for f in to_run
    }
    return SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[suppliers.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps({"seen": present, "requested": requested}),
    )
