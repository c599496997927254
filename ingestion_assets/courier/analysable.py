"""What ml-analyze is given: the original file, or a workbook derived from it that the deployed
service can read (it may parse only some types, and read only a workbook's active sheet).
Plain code: the plan, and the derivation into a private staging path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..handoff.derive import csv_to_xlsx, single_sheet_xlsx

CSV_AS_XLSX = "csv converted to xlsx"


def sheet_alone(sheet_name: str) -> str:
    return f"sheet '{sheet_name}' alone, as the active sheet"


@dataclass(frozen=True)
class AnalysisPlan:
    derivation: str | None = None  # how the file ml-analyze gets is made; None: the original
    refused: str = ""  # why nothing can be submitted
    priority_sheet: str | None = None  # sent in the request (services that read it)


def plan_analysis(
    file_type: str, sheet_name: str | None, parses: frozenset[str], active_sheet_only: bool
) -> AnalysisPlan:
    if file_type not in parses:
        if file_type == "csv" and "excel" in parses:
            return AnalysisPlan(derivation=CSV_AS_XLSX)
        return AnalysisPlan(
            refused=f"the deployed ml-analyze parses {', '.join(sorted(parses)) or 'nothing'} "
            f"(ML_FILE_TYPES), and a {file_type.upper()} file cannot be converted to any of them"
        )
    if file_type == "excel" and sheet_name:
        if active_sheet_only:
            return AnalysisPlan(derivation=sheet_alone(sheet_name))
        return AnalysisPlan(priority_sheet=sheet_name)
    return AnalysisPlan()


def derive(plan: AnalysisPlan, source: Path, target: Path, sheet_name: str | None) -> int:
    """Write the derived workbook to `target`; the number of rows written. Raises
    DerivationError with words for the user."""
    if plan.derivation == CSV_AS_XLSX:
        return csv_to_xlsx(source, target)
    if sheet_name and plan.derivation == sheet_alone(sheet_name):
        return single_sheet_xlsx(source, target, sheet_name)
    raise ValueError(f"nothing to derive for {plan}")
