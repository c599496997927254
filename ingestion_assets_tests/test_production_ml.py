"""The courier against ml-analyze as production behaves (the reference server's production
profile: excel and pdf only, active sheet only, terse errors, old statuses) and a real
PostgreSQL catalogue with exactly the tables of catalogue-schema.md. No manual step anywhere."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from pathlib import Path

import openpyxl
import pytest
from dagster import SensorResult, build_sensor_context, materialize

from ingestion_assets.catalogue.assets import catalogue_suppliers
from ingestion_assets.ml.events import latest_ml_state
from ingestion_assets.ml.sensors import ml_status_sensor
from ingestion_assets.ml.tracking import TrackerState
from ingestion_assets.registry.assets import supplier_registry
from ingestion_assets.resources import MLAnalyzeResource

from . import loopback
from .dagster_helpers import ALL_ASSETS, courier_resources, sync_supplier
from .ml_server import CatalogueSql, RunningServer

FULL = ALL_ASSETS


def workbook(*sheets: tuple[str, list[list[object]]], active: int = 0) -> bytes:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets:
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.active = active
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


PRICES = [
    ["Артикул", "Наименование", "Цена"],
    ["D-750", "Дрель ударная 750 Вт", "4 990,00 ₽"],
    ["M-1", "Молоток слесарный 500 г", "450"],
    ["S-12", "Набор отвёрток 12 шт", "1 200"],
]
EXCEL = workbook(("Прайс", PRICES))
COVER_AND_PRICES = workbook(
    ("Обложка", [["ООО «Гамма» — прайс-лист"], ["Тел. +7 495 000-00-00"]]),
    ("Прайс", PRICES),
    active=0,  # the cover page is the active sheet: production reads only that one
)
CSV_BODY = "sku;name;price\nB-1;Болт М8;12,50\nB-2;Гайка М8;3,20\n".encode("cp1251")


def master(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, ["name", "source_url", "format", "sheet_name", "supplier_id"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


@pytest.fixture
def catalogue_sql(catalogue_url):
    """Plain SQL on the test's catalogue database (not the courier's Catalogue)."""
    sql = CatalogueSql(catalogue_url)
    yield sql
    sql.close()


@pytest.fixture
def production_ml(tmp_path, catalogue_url):
    service = RunningServer(
        tmp_path / "ml.sqlite3", profile="production", catalogue_db_url=catalogue_url
    )
    yield service
    service.stop()


def production_resources(tmp_path, master_url, ml_url, catalogue_url) -> dict:
    resources = courier_resources(tmp_path, master_url, ml_url=ml_url, catalogue_url=catalogue_url)
    resources["ml_analyze"] = MLAnalyzeResource(
        url=ml_url, file_types="excel,pdf", reads_active_sheet_only=True, retry_delay_seconds=0
    )
    return resources


def tick(instance, resources, cursor) -> SensorResult:
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"ml_analyze": resources["ml_analyze"], "catalogue": resources["catalogue"]},
    )
    result = ml_status_sensor(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def follow(instance, resources, cursor=None, timeout=30.0) -> str:
    """Tick the status sensor until nothing is outstanding; the cursor."""
    deadline = time.monotonic() + timeout
    while True:
        result = tick(instance, resources, cursor)
        cursor = result.cursor
        state = TrackerState.from_json(cursor)
        assert not result.run_requests, "nothing here should be resubmitted"
        if not state.jobs and not state.resubmits:
            return cursor
        assert time.monotonic() < deadline, f"jobs still outstanding: {state.jobs}"
        time.sleep(0.2)


def master_sync(instance, resources):
    return materialize(
        [supplier_registry, catalogue_suppliers], instance=instance, resources=resources
    )


def summary(instance, key: str) -> dict:
    phase, record = latest_ml_state(instance, key)
    assert phase == "completed", (phase, record and record.asset_observation.description)
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def sidecars(shared: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(shared.glob("*.meta.json"))]


def test_a_first_deployment_analyses_every_supplier_with_no_manual_step(
    instance, server, tmp_path, production_ml, catalogue_sql, catalogue_url
):
    """An empty catalogue; an Excel supplier, a CSV supplier (the service has no CSV parser) and
    a workbook whose active sheet is a cover page (the service reads only the active sheet)."""
    old_id = str(uuid.uuid4())  # a supplier the catalogue had before the courier
    catalogue_sql.rows(
        "INSERT INTO suppliers (id, name, source_type, metadata) VALUES (:id, 'АЛЬФА', 'excel', "
        "'{\"use_ml_processing\": true}')",
        id=old_id,
    )
    sheet = master(
        [
            {"name": "Альфа", "source_url": server.route("/a.xlsx", loopback.file_body(EXCEL))},
            {"name": "Бета", "source_url": server.route("/b.csv", loopback.file_body(CSV_BODY))},
            {
                "name": "Гамма",
                "source_url": server.route("/g.xlsx", loopback.file_body(COVER_AND_PRICES)),
                "sheet_name": "прайс",
            },
        ]
    )
    resources = production_resources(
        tmp_path,
        server.route("/master.csv", loopback.file_body(sheet)),
        production_ml.url,
        catalogue_url,
    )
    result = master_sync(instance, resources)
    assert result.success
    [sync] = result.asset_materializations_for_node("catalogue_suppliers")
    assert (sync.metadata["created"].value, sync.metadata["updated"].value) == (2, 1)
    ids = sync.metadata["supplier_ids"].value
    assert ids["alfa"] == old_id  # the catalogue's id is the supplier's id from now on

    for key in ("alfa", "beta", "gamma"):
        assert sync_supplier(instance, resources, key, selection=FULL).success
    follow(instance, resources)

    for key, items in (("alfa", 3), ("beta", 2), ("gamma", 3)):
        metadata = summary(instance, key)
        assert metadata["items_total"] == items, key
        assert metadata["catalogue_items"] == items
        assert metadata["match_counts_from"] == "catalogue (supplier_items)"
        assert (
            metadata["items_matched"] + metadata["items_review"] + metadata["items_unmatched"]
            == items
        )
        stored = catalogue_sql.rows(
            "SELECT count(*) AS n FROM supplier_items WHERE supplier_id = :id", id=ids[key]
        )
        assert stored[0]["n"] == items
    # Every sidecar carries the catalogue's id; the derived files say what they came from.
    cards = sidecars(tmp_path / "shared")
    assert {c["supplier_id"] for c in cards if c["supplier_name"] == "Альфа"} == {old_id}
    derived = [c for c in cards if c.get("derivation")]
    assert sorted(c["derivation"] for c in derived) == [
        "csv converted to xlsx",
        "sheet 'прайс' alone, as the active sheet",
    ]
    originals = {c["checksum_md5"]: c for c in cards if not c.get("derivation")}
    assert all(c["derived_from_md5"] in originals for c in derived)
    assert any(c["file_type"] == "csv" for c in originals.values())  # the CSV handed off as is
    # The admin's key stayed in the pre-existing row's metadata.
    [row] = catalogue_sql.rows("SELECT metadata FROM suppliers WHERE id = :id", id=old_id)
    meta = row["metadata"] if isinstance(row["metadata"], dict) else json.loads(row["metadata"])
    assert meta["use_ml_processing"] is True and meta["courier_key"] == "alfa"


def test_the_services_own_words_appear_when_a_job_fails_and_it_is_not_resubmitted(
    instance, server, tmp_path, production_ml, catalogue_url
):
    """The same file analysed again fails on unique_supplier_sku; the status says only
    "File parsing failed": the catalogue's parsing_logs row says why."""
    sheet = master(
        [{"name": "Альфа", "source_url": server.route("/a.xlsx", loopback.file_body(EXCEL))}]
    )
    resources = production_resources(
        tmp_path,
        server.route("/master.csv", loopback.file_body(sheet)),
        production_ml.url,
        catalogue_url,
    )
    assert master_sync(instance, resources).success
    assert sync_supplier(instance, resources, "alfa", selection=FULL).success
    cursor = follow(instance, resources)
    assert summary(instance, "alfa")["items_total"] == 3

    run = materialize(
        FULL,
        selection=[a for a in FULL if a.key.path[-1] == "ml_analysis_result"],
        partition_key="alfa",
        instance=instance,
        resources=resources,
        run_config={"ops": {"ml_analysis_result": {"config": {"force": True}}}},
    )
    assert run.success
    follow(instance, resources, cursor)
    phase, record = latest_ml_state(instance, "alfa")
    assert phase == "failed"
    description = record.asset_observation.description
    assert "File parsing failed" in description
    assert "unique_supplier_sku" in description  # from parsing_logs
    assert "will not heal" in description and "already holds these SKUs" in description


def test_a_supplier_the_catalogue_lacks_gets_its_row_before_submission(
    instance, server, tmp_path, production_ml, catalogue_sql, catalogue_url
):
    """A run started before any master sync of the catalogue (an inbox hand-in, say)."""
    sheet = master(
        [{"name": "Дельта", "source_url": server.route("/d.xlsx", loopback.file_body(EXCEL))}]
    )
    resources = production_resources(
        tmp_path,
        server.route("/master.csv", loopback.file_body(sheet)),
        production_ml.url,
        catalogue_url,
    )
    assert materialize([supplier_registry], instance=instance, resources=resources).success
    assert catalogue_sql.count("suppliers") == 0
    assert sync_supplier(instance, resources, "delta", selection=FULL).success
    follow(instance, resources)
    assert summary(instance, "delta")["catalogue_items"] == 3
    assert catalogue_sql.count("suppliers") == 1


def test_a_pdf_is_refused_up_front_when_the_service_cannot_parse_it(
    instance, server, tmp_path, production_ml, catalogue_url
):
    sheet = master(
        [
            {
                "name": "Эпсилон",
                "source_url": server.route("/e.pdf", loopback.file_body(b"%PDF-1.4\n%%EOF\n")),
                "format": "url",
            }
        ]
    )
    resources = production_resources(
        tmp_path,
        server.route("/master.csv", loopback.file_body(sheet)),
        production_ml.url,
        catalogue_url,
    )
    resources["ml_analyze"] = MLAnalyzeResource(url=production_ml.url, file_types="excel")
    assert master_sync(instance, resources).success
    run = sync_supplier(instance, resources, "epsilon", selection=FULL, raise_on_error=False)
    assert not run.success
    phase, record = latest_ml_state(instance, "epsilon")
    assert phase == "failed"
    assert "parses excel (ML_FILE_TYPES)" in record.asset_observation.description
    assert TrackerState.from_json(tick(instance, resources, None).cursor).jobs == {}


def test_an_unreachable_catalogue_fails_the_sync_clearly_and_known_suppliers_still_run(
    instance, server, tmp_path, production_ml, catalogue_url, free_port
):
    sheet = master(
        [{"name": "Альфа", "source_url": server.route("/a.xlsx", loopback.file_body(EXCEL))}]
    )
    master_url = server.route("/master.csv", loopback.file_body(sheet))
    resources = production_resources(tmp_path, master_url, production_ml.url, catalogue_url)
    assert master_sync(instance, resources).success

    down = f"postgresql://courier:s3cret@127.0.0.1:{free_port}/catalogue"
    broken = production_resources(tmp_path, master_url, production_ml.url, down)
    result = materialize(
        [supplier_registry, catalogue_suppliers],
        instance=instance,
        resources=broken,
        raise_on_error=False,
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("Catalogue: the suppliers table was not synced")
    assert f"127.0.0.1:{free_port}" in message and "s3cret" not in message
    # The supplier known from the last sync is still fetched, handed off and submitted under
    # its id (ml-analyze reaches the catalogue here: the analysis completes).
    run = sync_supplier(instance, broken, "alfa", selection=FULL)
    assert run.success
    assert latest_ml_state(instance, "alfa")[0] == "submitted"
    follow(instance, resources)
    assert summary(instance, "alfa")["catalogue_items"] == 3


def test_rows_stored_twice_after_a_service_restart_are_a_warning_not_a_plain_success(
    instance, server, tmp_path, catalogue_url
):
    """Production's fallback SKUs change per process: the same file analysed again after a
    restart stores every row twice. The courier compares the catalogue with the analysis."""
    no_skus = workbook(("Прайс", [row[1:] for row in PRICES]))
    sheet = master(
        [{"name": "Альфа", "source_url": server.route("/a.xlsx", loopback.file_body(no_skus))}]
    )
    first = RunningServer(
        tmp_path / "ml.sqlite3", profile="production", catalogue_db_url=catalogue_url
    )
    resources = production_resources(
        tmp_path, server.route("/master.csv", loopback.file_body(sheet)), first.url, catalogue_url
    )
    try:
        assert master_sync(instance, resources).success
        assert sync_supplier(instance, resources, "alfa", selection=FULL).success
        cursor = follow(instance, resources)
        assert summary(instance, "alfa")["outcome"] == "completed"
    finally:
        port = first.port
        first.stop()
    again = RunningServer(
        tmp_path / "ml.sqlite3", port=port, profile="production", catalogue_db_url=catalogue_url
    )
    try:
        run = materialize(
            FULL,
            selection=[a for a in FULL if a.key.path[-1] == "ml_analysis_result"],
            partition_key="alfa",
            instance=instance,
            resources=resources,
            run_config={"ops": {"ml_analysis_result": {"config": {"force": True}}}},
        )
        assert run.success
        follow(instance, resources, cursor)
        metadata = summary(instance, "alfa")
        assert metadata["items_total"] == 3 and metadata["catalogue_items"] == 6
        assert metadata["outcome"] == "completed with warnings"
        assert "the catalogue holds 6 items for this supplier" in metadata["warnings"]
    finally:
        again.stop()


def test_zero_items_is_a_warning_the_ui_shows(
    instance, server, tmp_path, production_ml, catalogue_url
):
    """Misconfigured (the service reads only the active sheet, the courier was told it reads
    priority_sheet): the cover page yields 0 items, and that is not shown as a success."""
    sheet = master(
        [
            {
                "name": "Гамма",
                "source_url": server.route("/g.xlsx", loopback.file_body(COVER_AND_PRICES)),
                "sheet_name": "Прайс",
            }
        ]
    )
    resources = production_resources(
        tmp_path,
        server.route("/master.csv", loopback.file_body(sheet)),
        production_ml.url,
        catalogue_url,
    )
    resources["ml_analyze"] = MLAnalyzeResource(url=production_ml.url, file_types="excel,pdf")
    assert master_sync(instance, resources).success
    assert sync_supplier(instance, resources, "gamma", selection=FULL).success
    follow(instance, resources)
    metadata = summary(instance, "gamma")
    assert metadata["items_total"] == 0
    assert metadata["outcome"] == "completed with warnings"
    assert metadata["warnings"].startswith("0 items extracted")
    _, record = latest_ml_state(instance, "gamma")
    assert "0 items extracted" in record.asset_materialization.description
