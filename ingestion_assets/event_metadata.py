"""Reading values back from event-log metadata, typed: a missing entry or one of another type
is None, never an exception (the event log holds what older versions wrote, too)."""

from collections.abc import Mapping
from typing import Any

from dagster import MetadataValue

Metadata = Mapping[str, MetadataValue]


def raw(metadata: Metadata, name: str) -> Any:
    """The entry's plain value (a JSON entry's object, a table's rows …), or None."""
    entry = metadata.get(name)
    return entry.value if entry is not None else None


def text(metadata: Metadata, name: str) -> str | None:
    value = raw(metadata, name)
    return value if isinstance(value, str) else None


def whole(metadata: Metadata, name: str) -> int | None:
    value = raw(metadata, name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def number(metadata: Metadata, name: str) -> float | None:
    value = raw(metadata, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def flag(metadata: Metadata, name: str) -> bool:
    return raw(metadata, name) is True
