"""The code location: assets, jobs, sensors, schedules and resources, assembled."""

from dagster import Definitions, in_process_executor

from .catalogue.assets import catalogue_suppliers
from .courier.assets import raw_download, shared_file
from .courier.source_retries import source_retry_sensor
from .inbox.sensors import inbox_sensor
from .jobs import master_sync_job, supplier_sync_job
from .maintenance import cleanup_schedule, master_sync_schedule, shared_file_cleanup
from .ml.assets import analysis_succeeded, ml_analysis_result
from .ml.sensors import ml_status_sensor
from .overview.sensor import analyses_fresh, supplier_overview, supplier_overview_sensor
from .registry.assets import supplier_registry
from .registry.sensors import initial_master_sync_sensor, supplier_partitions_sensor
from .resources import configured, resources_from_env

resources = resources_from_env()
sync_hours = configured(resources["master_sheet"].sync_interval_hours)
master_sync_schedules = [master_sync_schedule(sync_hours)] if sync_hours > 0 else []

defs = Definitions(
    assets=[
        supplier_registry,
        catalogue_suppliers,
        raw_download,
        shared_file,
        ml_analysis_result,
        supplier_overview,
    ],
    asset_checks=[analysis_succeeded, analyses_fresh],
    jobs=[master_sync_job, supplier_sync_job, shared_file_cleanup],
    sensors=[
        supplier_partitions_sensor,
        source_retry_sensor,
        initial_master_sync_sensor,
        ml_status_sensor,
        inbox_sensor,
        supplier_overview_sensor,
    ],
    schedules=[cleanup_schedule, *master_sync_schedules],
    resources=resources,
    # Every job is a chain of light I/O steps: one process per run, not one per step
    # (a third of the start-up cost; step retries and re-execution from failure work the same).
    executor=in_process_executor,
)
