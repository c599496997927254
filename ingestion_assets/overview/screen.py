"""The supplier overview as the UI shows it: one row per supplier, its phase and why.

Plain code: statuses in, a Markdown table and counts out. The overview sensor writes them as
the metadata of the `supplier_overview` asset, which the Dagster UI renders as one table.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from dagster import MetadataValue, TableColumn, TableMetadataValue, TableRecord, TableSchema

from ..status import Phase, SupplierStatus

INACTIVE = "inactive"


@dataclass(frozen=True)
class Row:
    status: SupplierStatus
    name: str
    phase: str  # as shown: "analyzing a new file: 40 %", "inactive", …
    reason: str
    stale: str | None  # why the supplier counts as not fresh, or None


def rows(
    statuses: Iterable[SupplierStatus],
    names: Mapping[str, str],
    inactive: set[str],
    now: float,
    stale_after_s: float | None,
) -> list[Row]:
    """Every supplier: those with a partition, and those the sheet marks inactive."""
    by_key = {s.key: s for s in statuses}
    for key in inactive - by_key.keys():
        by_key[key] = SupplierStatus(key, Phase.NEVER_SYNCED)
    return [
        _row(by_key[key], names.get(key, key), key in inactive, now, stale_after_s)
        for key in sorted(by_key)
    ]


def _row(
    status: SupplierStatus, name: str, inactive: bool, now: float, stale_after_s: float | None
) -> Row:
    phase: str = status.phase
    reason = status.detail
    if inactive:
        phase = INACTIVE
        reason = "marked inactive in the master sheet: not synced"
    elif phase == Phase.ANALYZING:
        phase = "analyzing a new file" if status.analysed_at else "analyzing"
        if status.progress is not None:
            phase += f": {status.progress} %"
    elif phase in (Phase.COMPLETE, Phase.ML_OFF, Phase.NEVER_SYNCED):
        reason = ""  # nothing to explain
    return Row(status, name, phase, reason, _stale(status, phase, now, stale_after_s))


def _stale(
    status: SupplierStatus, phase: str, now: float, stale_after_s: float | None
) -> str | None:
    """Not fresh: the last successful analysis (or, never analysed, the last change) is older
    than `stale_after_s`. Inactive and ML-off suppliers are never analysed: never stale."""
    if stale_after_s is None or phase in (INACTIVE, Phase.ML_OFF, Phase.NEVER_SYNCED):
        return None
    since = status.analysed_at or status.updated
    if since is None or now - since <= stale_after_s:
        return None
    last = f"last analysis {_when(status.analysed_at)}" if status.analysed_at else "never analysed"
    return f"not fresh: {last} (older than {stale_after_s / 3600:.0f} h)"


def phase_counts(table: list[Row]) -> dict[str, int]:
    counts = Counter(_phase_group(row.phase) for row in table)
    counts["not fresh"] = sum(1 for row in table if row.stale)
    return dict(sorted(counts.items()))


def _phase_group(phase: str) -> str:
    return phase.split(":")[0].replace("analyzing a new file", "analyzing")


def markdown(table: list[Row], ui_base: str = "") -> str:
    """The table, with links to each supplier's partition and latest run."""
    if not table:
        return "No suppliers yet: run the `master_sync` job."
    header = [
        "supplier",
        "phase",
        "file",
        "items",
        "matched / review",
        "errors",
        "attempts",
        "last change (UTC)",
        "run",
        "reason",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        s = row.status
        partition = f"{ui_base}/assets/ml_analysis_result?view=partitions&partition={quote(s.key)}"
        cells = [
            f"[{_cell(row.name)}]({partition}) `{s.key}`",
            f"**{row.phase}**" + (f" ⚠ {row.stale}" if row.stale else ""),
            _file(s),
            _number(s.items),
            f"{_number(s.matched)} / {_number(s.review)}",
            _number(s.errors),
            _number(s.attempts),
            _when(s.updated),
            f"[{s.run_id[:8]}]({ui_base}/runs/{s.run_id})" if s.run_id else "-",
            _cell(row.reason) or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLUMNS = (
    "supplier",
    "phase",
    "reason",
    "items",
    "matched",
    "review",
    "errors",
    "attempts",
    "file",
    "last change (UTC)",
    "run",
)


def table_value(table: list[Row]) -> TableMetadataValue:
    """The same rows as a Dagster table, which the UI shows in place (the Markdown one, with
    its links, opens in a dialog)."""
    records = [
        TableRecord(
            {
                "supplier": f"{row.name} ({row.status.key})",
                "phase": row.phase + (f" ⚠ {row.stale}" if row.stale else ""),
                "reason": row.reason or "-",
                "items": _number(row.status.items),
                "matched": _number(row.status.matched),
                "review": _number(row.status.review),
                "errors": _number(row.status.errors),
                "attempts": _number(row.status.attempts),
                "file": _file(row.status),
                "last change (UTC)": _when(row.status.updated),
                "run": row.status.run_id[:8] if row.status.run_id else "-",
            }
        )
        for row in table
    ]
    schema = TableSchema(columns=[TableColumn(name, "string") for name in COLUMNS])
    return MetadataValue.table(records, schema)


def _cell(text: str) -> str:
    """Markdown-table safe, in full: pipes escaped, line breaks as <br>."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _file(status: SupplierStatus) -> str:
    if status.size is None:
        return "-"
    return f"{_size(status.size)}, {_when(status.file_at)}"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M")
