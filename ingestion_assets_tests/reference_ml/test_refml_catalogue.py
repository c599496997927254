"""Items written into the catalogue database as the production service writes them.

Real HTTP to the reference server, a real PostgreSQL catalogue (`catalogue`: exactly
deployment/catalogue/001_catalogue.sql) or the embedded SQLite one (`sqlite_catalogue`).
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

OTHER_SUPPLIER = "0d7a2f5e-8c1b-4f3a-9e6d-5b4c3a2f1e0d"  # has no row in `suppliers`

# Matched, review and unmatched against the built-in product catalogue.
WITH_SKUS = (
    "Наименование;Артикул;Бренд;Цена\n"
    "Дрель ударная Bosch GSB 13 RE (600 Вт);06011A2000;Bosch;4 590,00 ₽\n"
    "Круг лепестковый 115 мм P60;KL-115-60;;185 р.\n"
    "Кофемашина Delonghi Magnifica;ECAM22;De'Longhi;32 000,00\n"
)
WITHOUT_SKUS = (
    "Наименование;Цена\n"
    "Саморез по дереву 3.5x25;1,50\n"
    "Саморез по дереву 3.5x35;1,70\n"
    "Дюбель распорный 6x40;0,90\n"
)


def price_list(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def items(catalogue: Any) -> list[dict[str, Any]]:
    return catalogue.rows(
        "SELECT supplier_id, supplier_sku, name, current_price, match_status, match_score,"
        " characteristics FROM supplier_items ORDER BY name, supplier_sku"
    )


def test_items_land_in_supplier_items_with_their_match_status(
    start_server: Any, catalogue: Any, supplier_id: str, tmp_path: Path
) -> None:
    catalogue.add_supplier()
    server = start_server(tmp_path / "jobs.sqlite3", catalogue_db_url=catalogue.url)
    job = server.api.wait(server.api.submit(price_list(tmp_path / "p.csv", WITH_SKUS), "csv"))

    assert job["status"] == "completed" and job["errors"] == []
    assert (job["items_matched"], job["items_review"], job["items_unmatched"]) == (1, 1, 1)
    stored = {item["supplier_sku"]: item for item in items(catalogue)}
    assert {sku: (item["match_status"], item["current_price"]) for sku, item in stored.items()} == {
        "06011A2000": ("auto_matched", Decimal("4590.00")),
        "KL-115-60": ("potential_match", Decimal("185.00")),
        "ECAM22": ("unmatched", Decimal("32000.00")),
    }
    drill = stored["06011A2000"]
    assert str(drill["supplier_id"]) == supplier_id
    assert drill["name"] == "Дрель ударная Bosch GSB 13 RE (600 Вт)"
    assert Decimal(90) <= drill["match_score"] <= Decimal(100)
    assert drill["characteristics"] == {"brand": "Bosch"}
    with sqlite3.connect(server.db_path) as local:  # the catalogue instead of the own table
        assert local.execute("SELECT count(*) FROM items").fetchone() == (0,)


def test_a_supplier_without_a_row_fails_the_job_and_stores_nothing(
    start_server: Any, catalogue: Any, tmp_path: Path
) -> None:
    catalogue.add_supplier()  # another supplier's row: the job's own is missing
    api = start_server(tmp_path / "jobs.sqlite3", catalogue_db_url=catalogue.url).api
    path = price_list(tmp_path / "p.csv", WITH_SKUS)
    job = api.wait(api.submit(path, "csv", supplier_id=OTHER_SUPPLIER))

    assert job["status"] == "failed"
    assert job["errors"][0].startswith("ForeignKeyViolation: ")
    assert "supplier_items_supplier_id_fkey" in job["errors"][0]
    # Its log row fails on the same kind of key: nothing about the failure is stored.
    assert catalogue.count("supplier_items") == 0
    assert catalogue.count("parsing_logs") == 0


def test_the_same_file_again_fails_on_unique_supplier_sku(
    start_server: Any, catalogue: Any, supplier_id: str, tmp_path: Path
) -> None:
    catalogue.add_supplier()
    api = start_server(
        tmp_path / "jobs.sqlite3", catalogue_db_url=catalogue.url, upsert_items=False
    ).api
    path = price_list(tmp_path / "p.csv", WITH_SKUS)
    assert api.wait(api.submit(path, "csv"))["status"] == "completed"

    again = api.wait(api.submit(path, "csv"))
    assert again["status"] == "failed"
    assert (
        'duplicate key value violates unique constraint "unique_supplier_sku"'
        in (again["errors"][0])
    )
    assert catalogue.count("supplier_items") == 3  # the whole second insert was refused
    [logged] = catalogue.rows("SELECT * FROM parsing_logs")
    assert (logged["task_id"], str(logged["supplier_id"]), logged["error_type"]) == (
        again["job_id"],
        supplier_id,
        "database",
    )
    assert logged["error_message"] == again["errors"][0]
    assert logged["created_at"] is not None


def test_after_a_restart_a_file_without_skus_is_stored_twice(
    start_server: Any, catalogue: Any, tmp_path: Path
) -> None:
    catalogue.add_supplier()
    db = tmp_path / "jobs.sqlite3"
    path = price_list(tmp_path / "screws.csv", WITHOUT_SKUS)
    before = start_server(db, catalogue_db_url=catalogue.url, upsert_items=False)
    assert before.api.wait(before.api.submit(path, "csv"))["status"] == "completed"
    # While the service lives its fallback SKUs are stable: the same file is refused.
    again = before.api.wait(before.api.submit(path, "csv"))
    assert "unique_supplier_sku" in again["errors"][0]
    before.stop()

    after = start_server(db, catalogue_db_url=catalogue.url, upsert_items=False).api
    assert after.wait(after.submit(path, "csv"))["status"] == "completed"

    stored = items(catalogue)
    assert len(stored) == 6 and len({item["supplier_sku"] for item in stored}) == 6
    assert sorted(item["name"] for item in stored) == sorted(
        2 * ["Саморез по дереву 3.5x25", "Саморез по дереву 3.5x35", "Дюбель распорный 6x40"]
    )


def test_a_failed_parse_is_logged_with_its_real_cause(
    start_server: Any, catalogue: Any, tmp_path: Path
) -> None:
    catalogue.add_supplier()
    api = start_server(
        tmp_path / "jobs.sqlite3", catalogue_db_url=catalogue.url, terse_errors=True
    ).api
    path = price_list(tmp_path / "ledger.csv", "Дата;Сумма\n01.03;100\n")
    job = api.wait(api.submit(path, "csv"))

    assert job["status"] == "failed" and job["errors"] == ["File parsing failed"]
    [logged] = catalogue.rows("SELECT task_id, error_type, error_message FROM parsing_logs")
    assert logged["task_id"] == job["job_id"] and logged["error_type"] == "parsing"
    assert logged["error_message"].startswith("No header row with a name and a price column")


def test_a_sqlite_catalogue_gets_its_tables_and_enforces_its_keys(
    start_server: Any, sqlite_catalogue: Any, tmp_path: Path
) -> None:
    api = start_server(
        tmp_path / "jobs.sqlite3", catalogue_db_url=sqlite_catalogue.url, upsert_items=False
    ).api
    tables = sqlite_catalogue.rows("SELECT name FROM sqlite_master WHERE type = 'table'")
    assert {"suppliers", "supplier_items", "parsing_logs"} <= {row["name"] for row in tables}
    assert api.http.get("/health").json()["checks"]["catalogue_db"] == {"status": "ok"}
    path = price_list(tmp_path / "p.csv", WITH_SKUS)

    orphan = api.wait(api.submit(path, "csv"))  # no supplier row yet
    assert orphan["status"] == "failed"
    assert "supplier_items_supplier_id_fkey" in orphan["errors"][0]
    assert sqlite_catalogue.count("supplier_items") == sqlite_catalogue.count("parsing_logs") == 0

    sqlite_catalogue.add_supplier()
    assert api.wait(api.submit(path, "csv"))["status"] == "completed"
    statuses = sqlite_catalogue.rows(
        "SELECT supplier_sku, match_status, current_price FROM supplier_items"
    )
    assert {(r["supplier_sku"], r["match_status"], r["current_price"]) for r in statuses} == {
        ("06011A2000", "auto_matched", 4590),
        ("KL-115-60", "potential_match", 185),
        ("ECAM22", "unmatched", 32000),
    }

    again = api.wait(api.submit(path, "csv"))
    assert "unique_supplier_sku" in again["errors"][0]
    [logged] = sqlite_catalogue.rows("SELECT task_id, error_type FROM parsing_logs")
    assert logged == {"task_id": again["job_id"], "error_type": "database"}


def test_a_sqlite_catalogue_refuses_a_match_status_outside_the_enum(
    start_server: Any, sqlite_catalogue: Any, supplier_id: str, tmp_path: Path
) -> None:
    start_server(tmp_path / "jobs.sqlite3", catalogue_db_url=sqlite_catalogue.url)
    sqlite_catalogue.add_supplier()
    with pytest.raises(IntegrityError, match="CHECK constraint failed"):
        sqlite_catalogue.rows(
            "INSERT INTO supplier_items (id, supplier_id, supplier_sku, name, current_price,"
            " match_status) VALUES ('i1', :supplier, 'S', 'N', 1, 'matched')",
            supplier=supplier_id,
        )


def test_by_default_the_same_file_again_updates_its_items_in_place(
    start_server: Any, catalogue: Any, tmp_path: Path
) -> None:
    """The reference's newer behaviour (not production's): a file can be analysed again."""
    catalogue.add_supplier()
    api = start_server(tmp_path / "jobs.sqlite3", catalogue_db_url=catalogue.url).api
    path = price_list(tmp_path / "p.csv", WITH_SKUS)
    assert api.wait(api.submit(path, "csv"))["status"] == "completed"
    ids = "SELECT supplier_sku, id FROM supplier_items"
    before = {row["supplier_sku"]: row["id"] for row in catalogue.rows(ids)}
    assert len(before) == 3
    assert api.wait(api.submit(path, "csv"))["status"] == "completed"
    after = {row["supplier_sku"]: row["id"] for row in catalogue.rows(ids)}
    assert after == before  # the same rows, updated, none added
