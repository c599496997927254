"""Which catalogue row each master-sheet supplier is, and what should change. Plain code.

A sheet supplier is the row with its id, else the row the courier already keyed to it, else a
row with the same name ignoring case that no other supplier claimed (the oldest first). The
row keeps its id: from then on it is the supplier's id. `metadata` is merged, never replaced.
Rows the courier never managed are never touched; no row is ever deleted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from ..fetching.redact import redact_url
from ..registry.models import Supplier

MANAGED_BY = "supplier-courier"
CATALOGUE_SOURCE_TYPES = ("google_sheets", "csv", "excel")


@dataclass(frozen=True)
class CatalogueRow:
    id: str
    name: str
    source_type: str
    metadata: Mapping[str, Any]
    created_at: dt.datetime | None = None

    @property
    def courier_key(self) -> str | None:
        key = self.metadata.get("courier_key")
        return key if isinstance(key, str) else None

    @property
    def managed(self) -> bool:
        return self.metadata.get("managed_by") == MANAGED_BY

    @property
    def active(self) -> bool:
        return self.metadata.get("is_active") is not False  # absent = active


class Action(StrEnum):
    CREATE = "created"
    UPDATE = "updated"
    DEACTIVATE = "deactivated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Change:
    action: Action
    row_id: str
    name: str
    source_type: str
    metadata: dict[str, Any]
    supplier_key: str | None  # None: a managed row that left the sheet


@dataclass
class SyncPlan:
    changes: list[Change] = field(default_factory=list)

    @property
    def supplier_ids(self) -> dict[str, str]:
        return {c.supplier_key: c.row_id for c in self.changes if c.supplier_key}


def catalogue_source_type(supplier: Supplier) -> str:
    """The table's CHECK allows google_sheets, csv and excel. A `url` source is stored as what
    its address names (.csv → csv, else excel); PDF as csv, as the original sync did. The sheet's
    own format stays in metadata.source_format."""
    if supplier.format in CATALOGUE_SOURCE_TYPES:
        return supplier.format
    path = urlsplit(supplier.source_url).path.lower()
    return "csv" if path.endswith((".csv", ".pdf")) else "excel"


def courier_metadata(supplier: Supplier) -> dict[str, Any]:
    """The keys the courier owns in a row's metadata; other programs' keys are left alone."""
    return {
        "managed_by": MANAGED_BY,
        "courier_key": supplier.key,
        "source_url": redact_url(supplier.source_url),
        "source_format": supplier.format,
        "sheet_name": supplier.sheet_name,
        "notes": supplier.notes,
        "is_active": supplier.active,
    }


def find_row(
    supplier: Supplier, rows: Iterable[CatalogueRow], claimed: set[str]
) -> CatalogueRow | None:
    """The row that is this supplier: same id, else keyed to it, else same name (unclaimed)."""
    candidates = [r for r in rows if r.id not in claimed]
    tests: tuple[Callable[[CatalogueRow], bool], ...] = (
        lambda r: r.id == supplier.supplier_id,
        lambda r: r.courier_key == supplier.key,
        lambda r: (
            r.name.casefold() == supplier.name.casefold() and r.courier_key in (None, supplier.key)
        ),
    )
    for matches in tests:
        found = [r for r in candidates if matches(r)]
        if found:
            epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
            return min(found, key=lambda r: _aware(r.created_at) or epoch)
    return None


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def plan_sync(sheet: Iterable[Supplier], rows: Iterable[CatalogueRow]) -> SyncPlan:
    rows = list(rows)
    plan, claimed = SyncPlan(), set[str]()
    for supplier in sheet:
        row = find_row(supplier, rows, claimed)
        wanted = courier_metadata(supplier)
        source_type = catalogue_source_type(supplier)
        if row is None:
            plan.changes.append(
                Change(
                    Action.CREATE,
                    supplier.supplier_id,
                    supplier.name,
                    source_type,
                    wanted,
                    supplier.key,
                )
            )
            continue
        claimed.add(row.id)
        merged = {**row.metadata, **wanted}
        if (row.name, row.source_type, dict(row.metadata)) == (supplier.name, source_type, merged):
            action = Action.UNCHANGED
        elif row.active and not supplier.active:
            action = Action.DEACTIVATE
        else:
            action = Action.UPDATE
        plan.changes.append(
            Change(action, row.id, supplier.name, source_type, merged, supplier.key)
        )
    for row in rows:
        if row.id not in claimed and row.managed and row.active:
            merged = {**row.metadata, "is_active": False}
            plan.changes.append(
                Change(Action.DEACTIVATE, row.id, row.name, row.source_type, merged, None)
            )
    return plan
