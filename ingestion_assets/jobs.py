"""Jobs: the master sync, one supplier's sync (a partition of the supplier assets)."""

from dagster import AssetSelection, define_asset_job

from .partitions import suppliers

master_sync_job = define_asset_job(
    "master_sync",
    selection=AssetSelection.assets("supplier_registry", "catalogue_suppliers"),
    description="Read the master sheet and keep the catalogue's suppliers in step; the "
    "partitions sensor then syncs every active supplier.",
)

supplier_sync_job = define_asset_job(
    "supplier_sync",
    # The analysis check is reported by the ml status sensor when the job ends, not by the run.
    selection=AssetSelection.assets("raw_download", "shared_file", "ml_analysis_result")
    - AssetSelection.checks_for_assets("ml_analysis_result"),
    partitions_def=suppliers,
    description="Fetch one supplier's file, hand it off to the shared volume, submit it to ml-analyze.",
)
