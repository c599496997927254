"""Behaviours that tell the production service from the reference's default (the newer contract).

Each option defaults to the reference's own behaviour; the `production` profile sets all of
them as the deployed service behaves (contract: "The production service as it behaves"), and
an option given explicitly overrides its profile.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .validation import FILE_TYPES

# What the production service's status says about a failed job, whatever the cause.
TERSE_ERROR = "File parsing failed"


@dataclass(frozen=True)
class Behaviour:
    file_types: frozenset[str] = frozenset(FILE_TYPES)  # jobs of other types fail
    active_sheet_only: bool = False  # read the workbook's active sheet, ignore priority_sheet
    terse_errors: bool = False  # a failed job's status says only TERSE_ERROR
    legacy_status: bool = False  # no phase, no extraction or match counts
    # A SKU the supplier already has is updated in place (production: the job fails on
    # unique_supplier_sku, so the same file cannot be analysed twice).
    upsert_items: bool = True


PROFILES: dict[str, Behaviour] = {
    "reference": Behaviour(),
    "production": Behaviour(
        file_types=frozenset({"excel", "pdf"}),
        active_sheet_only=True,
        terse_errors=True,
        legacy_status=True,
        upsert_items=False,
    ),
}


def resolve_behaviour(
    profile: str = "reference",
    file_types: Iterable[str] | None = None,
    active_sheet_only: bool | None = None,
    terse_errors: bool | None = None,
    legacy_status: bool | None = None,
    upsert_items: bool | None = None,
) -> Behaviour:
    """The profile's behaviour with every option that is not None put over it."""
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    base = PROFILES[profile]
    types = base.file_types if file_types is None else frozenset(file_types)
    if not types or not types <= set(FILE_TYPES):
        raise ValueError(f"file_types must be some of {', '.join(FILE_TYPES)}, not {sorted(types)}")
    return Behaviour(
        file_types=types,
        active_sheet_only=_given(active_sheet_only, base.active_sheet_only),
        terse_errors=_given(terse_errors, base.terse_errors),
        legacy_status=_given(legacy_status, base.legacy_status),
        upsert_items=_given(upsert_items, base.upsert_items),
    )


def _given(option: bool | None, default: bool) -> bool:
    return default if option is None else option
