"""Concurrency pools: steps that share an outside resource queue for it across all runs.

The limits are set explicitly in the instance (`python -m ingestion_assets set-pool-limits`,
run by the deployment before the daemon starts). A pool left to dagster.yaml's
`default_limit` is initialized lazily by the first step that claims it, and on PostgreSQL
two runs doing that at once abort each other's transaction (seen with dagster 1.13.27).
"""

from __future__ import annotations

import os

from dagster import DagsterInstance

ML_ANALYZE = "ml_analyze"  # submissions to ml-analyze
DOWNLOADS = "supplier_downloads"  # suppliers' sources being fetched

DEFAULT_LIMITS = {ML_ANALYZE: ("ML_ANALYZE_POOL_LIMIT", 2), DOWNLOADS: ("DOWNLOAD_POOL_LIMIT", 8)}


def limits_from_env() -> dict[str, int]:
    return {
        pool: int(os.environ.get(var, default)) for pool, (var, default) in DEFAULT_LIMITS.items()
    }


def set_pool_limits(instance: DagsterInstance) -> dict[str, int]:
    limits = limits_from_env()
    for pool, limit in limits.items():
        instance.event_log_storage.set_concurrency_slots(pool, limit)
    return limits
