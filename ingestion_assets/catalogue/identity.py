"""The supplier's id is its catalogue row's id: looked up (the row created if missing) before
the file is handed off, so the sidecar and the submission carry the id ml-analyze stores
items against."""

from __future__ import annotations

from collections.abc import Callable

from ..registry.models import Supplier
from .store import Catalogue, CatalogueError


def with_catalogue_id(
    supplier: Supplier, store: Catalogue | None, known_ids: Callable[[], dict[str, str]]
) -> tuple[Supplier, str | None]:
    """(the supplier with its catalogue id, a warning or None). An unreachable catalogue falls
    back to the id of the last master sync for a supplier it knew; for one it never knew, the
    CatalogueError is raised (nothing may be submitted under an id with no row)."""
    if store is None:
        return supplier, None
    try:
        row_id = store.ensure(supplier)
    except CatalogueError as exc:
        known = known_ids().get(supplier.key)
        if known is None or not exc.retryable:
            raise
        return supplier.model_copy(update={"supplier_id": known}), (
            f"{exc}; using the id of the last master sync, {known}"
        )
    return supplier.model_copy(update={"supplier_id": row_id}), None
