"""Options that make the reference behave like one production generation or another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_analyze_reference.__main__ as cli
import openpyxl
import pytest
from ml_analyze_reference.profiles import Behaviour, resolve_behaviour

PRICES = "Наименование;Артикул;Цена\nДюбель распорный 6x40;D-640;1 234,56\n"
LEGACY_FIELDS = {
    "job_id",
    "status",
    "progress_percentage",
    "items_processed",
    "items_total",
    "errors",
    "created_at",
    "started_at",
    "completed_at",
}


def csv_file(path: Path, text: str = PRICES) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def cover_page_workbook(path: Path) -> Path:
    """Old prices first, a cover page active in the middle, this year's prices last."""
    workbook = openpyxl.Workbook()
    old = workbook.active
    old.title = "Прайс 2024"
    old.append(["Наименование", "Цена"])
    old.append(["Молоток слесарный 800 г", 450])
    cover = workbook.create_sheet("Обложка")
    cover.append(["ООО «ИнструментСнаб»"])
    cover.append(["Прайс-лист на 2025 год, цены с НДС"])
    current = workbook.create_sheet("Прайс")
    current.append(["Наименование", "Артикул", "Цена"])
    current.append(["Дрель ударная Bosch GSB 13 RE", "06011A2000", 4590])
    current.append(["Рулетка 5 м Stanley", "0-30-697", 1250.5])
    current.append(["Круг лепестковый 115 мм P60", "KL-115-60", 185])
    workbook.active = workbook.worksheets.index(cover)
    workbook.save(path)
    return path


def test_a_file_type_not_listed_is_accepted_then_fails(start_server: Any, tmp_path: Path) -> None:
    api = start_server(tmp_path / "jobs.sqlite3", file_types=["excel"]).api
    job = api.wait(api.submit(csv_file(tmp_path / "p.csv"), "csv"))  # 202 all the same
    assert job["status"] == "failed"
    assert job["errors"] == ["Unsupported file type: csv"]


@pytest.mark.parametrize(
    ("priority_sheet", "items"),
    [
        (None, 1),  # the first sheet, as before
        ("ПРАЙС", 3),  # the named sheet, case-insensitive
        ("Архив", 1),  # no such sheet: the first
    ],
)
def test_the_default_mode_honours_priority_sheet(
    api: Any, tmp_path: Path, priority_sheet: str | None, items: int
) -> None:
    path = cover_page_workbook(tmp_path / "book.xlsx")
    job = api.wait(api.submit(path, "excel", priority_sheet=priority_sheet))
    assert job["status"] == "completed" and job["items_total"] == items


def test_active_sheet_only_reads_the_active_sheet(start_server: Any, tmp_path: Path) -> None:
    api = start_server(tmp_path / "jobs.sqlite3", active_sheet_only=True).api
    path = cover_page_workbook(tmp_path / "book.xlsx")
    job = api.wait(api.submit(path, "excel", priority_sheet="Прайс"))  # ignored
    # The cover page: production completes with 0 items, no error.
    assert (job["status"], job["items_total"], job["errors"]) == ("completed", 0, [])


def test_terse_errors_hide_the_cause(start_server: Any, tmp_path: Path) -> None:
    api = start_server(tmp_path / "jobs.sqlite3", terse_errors=True).api
    failed = api.wait(api.submit(csv_file(tmp_path / "x.csv", "Дата;Сумма\n01.03;100\n"), "csv"))
    assert failed["errors"] == ["File parsing failed"]
    partial = api.wait(
        api.submit(csv_file(tmp_path / "p.csv", PRICES + "Шуруп;S-1;звоните\n"), "csv")
    )
    assert partial["errors"] == ["Row 3: price 'звоните' is not a number"]  # not a failure


def test_legacy_status_has_no_phase_nor_counts(start_server: Any, tmp_path: Path) -> None:
    api = start_server(tmp_path / "jobs.sqlite3", legacy_status=True).api
    job = api.wait(api.submit(csv_file(tmp_path / "p.csv"), "csv"))
    assert set(job) == LEGACY_FIELDS
    assert job["status"] == "completed" and job["items_total"] == 1


def test_the_production_profile_and_an_option_over_it(start_server: Any, tmp_path: Path) -> None:
    production = start_server(tmp_path / "a.sqlite3", profile="production").api
    job = production.wait(production.submit(csv_file(tmp_path / "p.csv"), "csv"))
    assert (job["status"], job["errors"], "phase" in job) == (
        "failed",
        ["File parsing failed"],
        False,
    )

    explicit = start_server(tmp_path / "b.sqlite3", profile="production", terse_errors=False).api
    job = explicit.wait(explicit.submit(csv_file(tmp_path / "p.csv"), "csv"))
    assert job["errors"] == ["Unsupported file type: csv"]


def test_file_path_is_accepted_and_wins_over_file_url(
    api: Any, supplier_id: str, tmp_path: Path
) -> None:
    path = csv_file(tmp_path / "p.csv")
    both = api.submit(tmp_path / "elsewhere.csv", "csv", file_path=str(path))
    assert api.wait(both)["items_total"] == 1

    body = {"supplier_id": supplier_id, "file_type": "csv"}
    alone = api.http.post("/analyze/file", json={**body, "file_path": str(path)})
    assert alone.status_code == 202
    wins = api.http.post(
        "/analyze/file", json={**body, "file_path": "/nowhere.csv", "file_url": str(path)}
    )
    assert (wins.status_code, wins.json()) == (400, {"detail": "File not found: /nowhere.csv"})
    neither = api.http.post("/analyze/file", json=body)
    assert [entry["loc"] for entry in neither.json()["detail"]] == [["body", "file_url"]]


def test_options_resolve_over_their_profile() -> None:
    assert resolve_behaviour() == Behaviour()
    production = resolve_behaviour("production")
    assert production.file_types == {"excel", "pdf"} and production.active_sheet_only
    assert resolve_behaviour("production", file_types=["csv"], legacy_status=False) == Behaviour(
        frozenset({"csv"}),
        active_sheet_only=True,
        terse_errors=True,
        legacy_status=False,
        upsert_items=False,
    )
    for bad in (["docx"], []):
        with pytest.raises(ValueError, match="file_types"):
            resolve_behaviour(file_types=bad)
    with pytest.raises(ValueError, match="Unknown profile"):
        resolve_behaviour("staging")


def test_command_line_flags_reach_create_app(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli, "create_app", lambda *args, **kwargs: seen.update(kwargs))
    monkeypatch.setattr(cli.uvicorn, "run", lambda *args, **kwargs: None)
    cli.main(
        ["--catalogue-db", "sqlite:///c.sqlite3", "--profile", "production"]
        + ["--file-types", "excel,csv", "--no-terse-errors", "--active-sheet-only"]
    )
    assert seen == {
        "catalogue_db_url": "sqlite:///c.sqlite3",
        "profile": "production",
        "file_types": ["excel", "csv"],
        "active_sheet_only": True,
        "terse_errors": False,
        "legacy_status": None,  # the profile's
        "upsert_items": None,
    }
    with pytest.raises(SystemExit):
        cli.main(["--file-types", "excel,docx"])
