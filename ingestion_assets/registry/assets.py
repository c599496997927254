"""supplier_registry: the master sheet, read and validated, bad rows listed one by one."""

import hashlib

from dagster import (
    AssetExecutionContext,
    DataVersion,
    MetadataValue,
    Output,
    RetryPolicy,
    asset,
)

from ..failures import step_failure
from ..fetching.errors import FetchError
from ..fetching.redact import redact_url
from ..markdown import md_table
from ..resources import FetchResource, MasterSheetResource
from .master_sheet import load_master_sheet
from .models import Registry
from .tables import MasterSheetError

MASTER_SHEET_RETRY = RetryPolicy(max_retries=3, delay=2)


@asset(group_name="master_sheet", kinds={"python"}, retry_policy=MASTER_SHEET_RETRY)
def supplier_registry(
    context: AssetExecutionContext, master_sheet: MasterSheetResource, fetch: FetchResource
) -> Output[Registry]:
    """The suppliers listed in the master sheet. Rows that cannot be used are listed in
    the `problems` metadata with their row number and reason."""
    source = redact_url(master_sheet.url)
    try:
        registry, fetched = load_master_sheet(
            master_sheet.url,
            master_sheet.worksheet,
            fetch.fetcher(),
            fetch.staging_dir("_master_sheet"),
        )
    except FetchError as exc:
        # A sheet that may heal is retried by this step (MASTER_SHEET_RETRY), then the next sync.
        raise step_failure(
            context, exc, f"Master sheet {source}: {exc}", retried_elsewhere=True
        ) from exc
    except MasterSheetError as exc:
        raise step_failure(context, exc, f"Master sheet {source}: {exc}") from exc

    for problem in registry.problems:
        context.log.warning(
            f"Master sheet row {problem.row} ({problem.supplier or 'no name'}): {problem.reason}"
        )
    version = hashlib.md5(registry.model_dump_json().encode(), usedforsecurity=False).hexdigest()
    return Output(
        registry,
        data_version=DataVersion(version),
        metadata={
            "source": source,
            "source_md5": fetched.md5,
            "suppliers": len(registry.suppliers),
            "active_suppliers": len(registry.active),
            "inactive_suppliers": len(registry.suppliers) - len(registry.active),
            "rows_refused": len(registry.problems),
            "problems": MetadataValue.md(
                md_table(
                    ["row", "supplier", "reason"],
                    [[p.row, p.supplier, p.reason] for p in registry.problems],
                )
                if registry.problems
                else "No problems: every row is a valid supplier."
            ),
            "supplier_table": MetadataValue.md(
                md_table(
                    ["key", "name", "format", "active", "ML", "source"],
                    [
                        [
                            s.key,
                            s.name,
                            s.format,
                            s.active,
                            s.use_ml_processing,
                            redact_url(s.source_url),
                        ]
                        for s in registry.suppliers
                    ],
                )
            ),
            # Read by the partitions sensor: which partitions exist, which ones to sync.
            "supplier_keys": MetadataValue.json([s.key for s in registry.suppliers]),
            "active_supplier_keys": MetadataValue.json([s.key for s in registry.active]),
            "supplier_names": MetadataValue.json({s.key: s.name for s in registry.suppliers}),
        },
    )
