"""Resources and runs for Dagster-level tests: real instance (instance_for_test), real assets."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from dagster import DagsterInstance, materialize

from ingestion_assets.courier.assets import raw_download, shared_file
from ingestion_assets.ml.assets import ml_analysis_result
from ingestion_assets.partitions import suppliers
from ingestion_assets.registry.assets import supplier_registry
from ingestion_assets.resources import (
    CatalogueResource,
    FetchResource,
    MasterSheetResource,
    MLAnalyzeResource,
    SharedVolumeResource,
)

ALL_ASSETS = [supplier_registry, raw_download, shared_file, ml_analysis_result]
COURIER = [raw_download, shared_file]


def master_sheet_csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(
        [["name", "source_url", "format", "active", "use_ml_processing"], *rows]
    )
    return out.getvalue().encode("utf-8")


def courier_resources(
    tmp_path: Path,
    master_url: str,
    ml_url: str = "http://127.0.0.1:9",
    catalogue_url: str = "",
    **fetch_settings,
) -> dict:
    settings = {
        "ssrf_allowed_hosts": "127.0.0.1",
        "local_sources_root": str(tmp_path / "sources"),
        "downloads_dir": str(tmp_path / "downloads"),
        "connect_timeout_seconds": 2,
        "read_timeout_seconds": 2,
        "download_deadline_seconds": 20,
        **fetch_settings,
    }
    (tmp_path / "sources").mkdir(exist_ok=True)
    return {
        "master_sheet": MasterSheetResource(url=master_url),
        "fetch": FetchResource(**settings),
        "shared_volume": SharedVolumeResource(uploads_dir=str(tmp_path / "shared")),
        # Failed attempts are resubmitted at once here (the deployment waits a minute, doubling).
        "ml_analyze": MLAnalyzeResource(url=ml_url, retry_delay_seconds=0),
        "catalogue": CatalogueResource(database_url=catalogue_url),
    }


def sync_registry(instance: DagsterInstance, resources: dict):
    result = materialize([supplier_registry], instance=instance, resources=resources)
    assert result.success
    return result


def sync_supplier(
    instance: DagsterInstance,
    resources: dict,
    key: str,
    raise_on_error=True,
    selection=COURIER,
    tags=None,
):
    """One supplier's run, as the partitions sensor requests it (by default without the ML step)."""
    if key not in instance.get_dynamic_partitions(suppliers.name):
        instance.add_dynamic_partitions(suppliers.name, [key])
    return materialize(
        ALL_ASSETS,
        selection=selection,
        partition_key=key,
        instance=instance,
        resources=resources,
        raise_on_error=raise_on_error,
        tags=tags,
    )


def failure_message(result) -> str:
    failures = result.get_step_failure_events()
    assert failures, "expected a failed step"
    data = failures[0].step_failure_data
    return (
        data.user_failure_data.description if data.user_failure_data else None
    ) or data.error.message


def visible_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
