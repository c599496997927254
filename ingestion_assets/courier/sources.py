"""Which source a supplier's run fetches: the master sheet's row, or a one-off override
(a file handed in through the inbox, or a source typed into the launchpad)."""

from __future__ import annotations

from ..registry.identity import derived_supplier_id
from ..registry.models import Registry, Supplier
from ..registry.validation import RowError, parse_format, validate_source


class UnknownSupplier(LookupError):
    pass


def resolve_supplier(
    registry: Registry,
    key: str,
    source_url: str = "",
    fmt: str = "",
    use_ml_processing: bool | None = None,
    name: str = "",
) -> Supplier:
    """The master sheet's supplier, with the override's fields in place of its own.

    A supplier that is not in the sheet needs an override source; it gets the name given
    (or its key) and the same deterministic id the sheet would have given it.
    Raises UnknownSupplier, or ValueError for an invalid override.
    """
    supplier = registry.get(key)
    if not source_url:
        if supplier is None:
            raise UnknownSupplier(
                f"Supplier '{key}' is not in the master sheet any more (or its row was refused): "
                "nothing to fetch. Check the supplier_registry asset's problems, or give a source "
                "in the run config."
            )
        return (
            supplier
            if use_ml_processing is None
            else supplier.model_copy(update={"use_ml_processing": use_ml_processing})
        )
    try:
        fmt = parse_format(fmt, source_url)
        validate_source(source_url, fmt)
    except RowError as exc:
        raise ValueError(f"Supplier '{key}': the run config's source is refused: {exc}") from exc
    base = supplier or Supplier(
        key=key,
        supplier_id=derived_supplier_id(key),
        name=name or key,
        source_url=source_url,
        format=fmt,
    )
    update: dict[str, str | bool] = {"source_url": source_url, "format": fmt}
    if use_ml_processing is not None:
        update["use_ml_processing"] = use_ml_processing
    if name:
        update["name"] = name
    return base.model_copy(update=update)
