"""catalogue_suppliers: the catalogue's `suppliers` table, kept in step with the master sheet by
the master sync. ml-analyze stores items against these rows: a supplier without one fails."""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..failures import step_failure
from ..markdown import md_table
from ..registry.models import Registry
from ..resources import CatalogueResource
from .store import CatalogueError

CATALOGUE_SUPPLIERS = AssetKey("catalogue_suppliers")
SUPPLIER_IDS = "supplier_ids"  # metadata: partition key → the catalogue row's id


@asset(group_name="master_sheet", kinds={"postgres"})
def catalogue_suppliers(
    context: AssetExecutionContext, supplier_registry: Registry, catalogue: CatalogueResource
) -> MaterializeResult[None]:
    """The catalogue's suppliers, one row per master-sheet supplier. Created when missing (with
    the supplier's id), updated when the sheet changed, deactivated when it left the sheet;
    rows created by others keep their id, which becomes the supplier's id."""
    with catalogue.session() as store:
        if store is None:
            return MaterializeResult(
                metadata={"catalogue": "not configured (CATALOGUE_DATABASE_URL is unset)"}
            )
        try:
            report = store.sync(supplier_registry.suppliers)
        except CatalogueError as exc:
            # Supplier runs still start: known suppliers keep the ids of the last sync.
            raise step_failure(
                context, exc, f"Catalogue: the suppliers table was not synced: {exc}"
            ) from exc
    for refused in report.failures:
        context.log.warning(
            f"Catalogue: supplier '{refused.supplier}' could not be written: {refused.reason}"
        )
    return MaterializeResult(
        metadata={
            "catalogue": store.shown_url,
            **report.counts,
            "rows_refused": len(report.failures),
            "refused": MetadataValue.md(
                md_table(
                    ["supplier", "database's reason"],
                    [[f.supplier, f.reason] for f in report.failures],
                )
                if report.failures
                else "Every supplier was written."
            ),
            SUPPLIER_IDS: MetadataValue.json(report.supplier_ids),
        }
    )


def synced_supplier_ids(instance: DagsterInstance) -> dict[str, str]:
    """The ids of the last successful sync (empty before the first one)."""
    records = instance.fetch_materializations(CATALOGUE_SUPPLIERS, limit=1).records
    if not records:
        return {}
    materialization = records[0].asset_materialization
    entry = materialization.metadata.get(SUPPLIER_IDS) if materialization else None
    value = entry.value if entry is not None else None
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
