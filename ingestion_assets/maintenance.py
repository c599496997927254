"""The clean-up job and the schedules."""

from pathlib import Path
from typing import Any

from dagster import (
    DefaultScheduleStatus,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    ScheduleDefinition,
    job,
    op,
)

from .handoff.cleanup import clean_shared_folder, clean_staging_folder
from .jobs import master_sync_job
from .ml.events import in_flight_paths
from .partitions import SUPPLIERS
from .resources import FetchResource, SharedVolumeResource


@op(out=Out(Any))  # as before typing: `-> Output[None]` alone would make it a Nothing output
def remove_expired_files(
    context: OpExecutionContext, shared_volume: SharedVolumeResource, fetch: FetchResource
) -> Output[None]:
    """Remove shared files older than FILE_CLEANUP_TTL_HOURS with their sidecars, stale temp
    files, and old staged downloads (each supplier's newest copy stays). Files whose analysis
    is still outstanding stay, whatever their age."""
    ttl = shared_volume.cleanup_ttl_hours
    in_flight = in_flight_paths(
        context.instance, list(context.instance.get_dynamic_partitions(SUPPLIERS))
    )
    shared = clean_shared_folder(
        shared_volume.volume().root, ttl, in_use=lambda path: str(path) in in_flight
    )
    staged = clean_staging_folder(Path(fetch.downloads_dir), ttl)
    for name in shared.removed + staged.removed:
        context.log.info(f"removed {name}")
    for error in shared.errors + staged.errors:
        context.log.warning(f"could not remove {error}")
    return Output(
        None,
        metadata={
            "shared_files_removed": len(shared.removed),
            "staged_files_removed": len(staged.removed),
            "bytes_freed": shared.bytes_freed + staged.bytes_freed,
            "kept_in_use": len(shared.kept_in_use),
            "errors": len(shared.errors) + len(staged.errors),
            "removed": MetadataValue.json(shared.removed + staged.removed),
        },
    )


@job(description="Remove expired files from the shared volume and the staging folder.")
def shared_file_cleanup() -> None:
    remove_expired_files()


cleanup_schedule = ScheduleDefinition(
    job=shared_file_cleanup,
    cron_schedule="0 */6 * * *",
    default_status=DefaultScheduleStatus.RUNNING,
)


def master_sync_schedule(every_hours: int) -> ScheduleDefinition:
    """The master sync every `every_hours` (the master sheet resource's sync_interval_hours)."""
    return ScheduleDefinition(
        name="master_sync_schedule",
        job=master_sync_job,
        cron_schedule=f"0 */{every_hours} * * *",
        default_status=DefaultScheduleStatus.RUNNING,
    )
