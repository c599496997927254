"""The courier on a real Dagster instance: master sheet → partitions → raw_download → shared_file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time

import openpyxl
import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetRecordsFilter,
    Definitions,
    SensorResult,
    SkipReason,
    asset,
    build_sensor_context,
    materialize,
)

from ingestion_assets.courier.source_retries import source_retry_sensor
from ingestion_assets.definitions import defs
from ingestion_assets.failures import names_the_supplier
from ingestion_assets.maintenance import shared_file_cleanup
from ingestion_assets.partitions import suppliers
from ingestion_assets.registry.sensors import initial_master_sync_sensor, supplier_partitions_sensor
from ingestion_assets.resources import SharedVolumeResource

from . import loopback
from .dagster_helpers import (
    courier_resources,
    failure_message,
    master_sheet_csv,
    sync_registry,
    sync_supplier,
    visible_files,
)


def xlsx_bytes() -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Артикул", "Наименование", "Цена"])
    ws.append(["A-1", "Дрель", "4 990,00 ₽"])
    ws.merge_cells("D1:E1")
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


XLSX = xlsx_bytes()  # once: openpyxl stamps the time into every new workbook
CP1251_CSV = "Код;Товар;Цена\nB-1;Молоток слесарный;450,00\n".encode("cp1251")


@pytest.fixture
def sheet(server, tmp_path):
    """A master sheet on loopback with two good suppliers, an inactive one and a bad row."""
    alfa = server.route("/files/alfa.xlsx", loopback.file_body(XLSX))
    beta = server.route("/files/beta.csv", loopback.file_body(CP1251_CSV, "text/csv"))
    master = master_sheet_csv(
        [
            ["Альфа Инструмент", alfa, "excel", "yes", "yes"],
            ["Beta Hardware", beta, "csv", "yes", "yes"],
            ["Gamma Paused", beta, "csv", "no", "yes"],
            ["Broken", "ftp://example.com/x.csv", "csv", "yes", "yes"],
        ]
    )
    url = server.route("/master.csv", loopback.file_body(master, "text/csv"))
    return courier_resources(tmp_path, url)


def test_definitions_load():
    Definitions.validate_loadable(defs)
    assert {a.key.to_user_string() for a in defs.resolve_all_asset_specs()} >= {
        "supplier_registry",
        "raw_download",
        "shared_file",
    }


def test_registry_reports_bad_rows_row_by_row(instance, sheet):
    result = sync_registry(instance, sheet)
    metadata = result.asset_materializations_for_node("supplier_registry")[0].metadata
    assert metadata["suppliers"].value == 3
    assert metadata["active_suppliers"].value == 2
    assert metadata["rows_refused"].value == 1
    assert "| 5 | Broken |" in metadata["problems"].value
    assert "ftp" in metadata["problems"].value
    assert metadata["active_supplier_keys"].value == ["alfa-instrument", "beta-hardware"]


def test_sensor_adds_partitions_and_requests_one_run_per_active_supplier(instance, sheet):
    sync_registry(instance, sheet)
    context = build_sensor_context(instance=instance)
    result = supplier_partitions_sensor(context)
    assert isinstance(result, SensorResult)
    [add] = result.dynamic_partitions_requests
    # An inactive supplier gets no partition: it must not count as missing.
    assert add.partition_keys == ["alfa-instrument", "beta-hardware"]
    assert [r.partition_key for r in result.run_requests] == ["alfa-instrument", "beta-hardware"]
    assert len({r.run_key for r in result.run_requests}) == 2

    # The same registry is not synced twice; a new registry gets new run keys.
    again = supplier_partitions_sensor(
        build_sensor_context(instance=instance, cursor=result.cursor)
    )
    assert isinstance(again, SkipReason)
    instance.add_dynamic_partitions(suppliers.name, add.partition_keys)
    sync_registry(instance, sheet)
    second = supplier_partitions_sensor(
        build_sensor_context(instance=instance, cursor=result.cursor)
    )
    assert second.dynamic_partitions_requests == []  # all known already
    assert {r.run_key for r in second.run_requests}.isdisjoint(
        {r.run_key for r in result.run_requests}
    )


def test_a_supplier_marked_inactive_loses_its_partition_once_idle_and_gets_it_back(instance, sheet):
    """Marked inactive: its partition goes (not "missing" in the UI), its history stays."""
    instance.add_dynamic_partitions(suppliers.name, ["alfa-instrument", "gamma-paused"])
    instance.report_runless_asset_event(
        AssetMaterialization("raw_download", partition="gamma-paused", metadata={"size_bytes": 7})
    )
    sync_registry(instance, sheet)  # gamma-paused is inactive in this sheet
    result = supplier_partitions_sensor(build_sensor_context(instance=instance))
    requests = {type(r).__name__: r.partition_keys for r in result.dynamic_partitions_requests}
    assert requests == {
        "AddDynamicPartitionsRequest": ["beta-hardware"],
        "DeleteDynamicPartitionsRequest": ["gamma-paused"],
    }
    assert "gamma-paused" not in [r.partition_key for r in result.run_requests]
    instance.delete_dynamic_partition(suppliers.name, "gamma-paused")
    # Its history is still there for the day it comes back.
    assert instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("raw_download"), asset_partitions=["gamma-paused"]),
        limit=1,
    ).records


def test_an_inactive_supplier_with_a_run_under_way_keeps_its_partition(instance, sheet):
    instance.add_dynamic_partitions(suppliers.name, ["gamma-paused"])
    instance.report_runless_asset_event(
        AssetObservation(
            "ml_analysis_result",
            partition="gamma-paused",
            metadata={"phase": "analyzing", "progress_percentage": 40},
        )
    )
    sync_registry(instance, sheet)
    result = supplier_partitions_sensor(build_sensor_context(instance=instance))
    assert [type(r).__name__ for r in result.dynamic_partitions_requests] == [
        "AddDynamicPartitionsRequest"
    ]


def test_initial_sync_sensor_fires_once_on_a_fresh_instance(instance, sheet):
    first = initial_master_sync_sensor(build_sensor_context(instance=instance))
    assert first.run_key == "initial-master-sync"
    sync_registry(instance, sheet)
    assert isinstance(
        initial_master_sync_sensor(build_sensor_context(instance=instance)), SkipReason
    )


def test_supplier_files_reach_the_shared_folder_byte_for_byte(instance, sheet, tmp_path):
    sync_registry(instance, sheet)
    for key, source in (("alfa-instrument", XLSX), ("beta-hardware", CP1251_CSV)):
        result = sync_supplier(instance, sheet, key)
        raw_meta = result.asset_materializations_for_node("raw_download")[0].metadata
        md5 = hashlib.md5(source).hexdigest()
        assert raw_meta["checksum_md5"].value == md5
        assert raw_meta["size_bytes"].value == len(source)
        assert raw_meta["source_url"].value.startswith("http://127.0.0.1:")
        shared_meta = result.asset_materializations_for_node("shared_file")[0].metadata
        path = shared_meta["shared_path"].value
        with open(path, "rb") as handle:
            assert handle.read() == source
        with open(path + ".meta.json", encoding="utf-8") as handle:
            sidecar = json.load(handle)
        assert sidecar["checksum_md5"] == md5
        assert sidecar["file_size_bytes"] == len(source)
        assert sidecar["job_id"] == result.run_id
        assert sidecar["file_type"] == ("excel" if key == "alfa-instrument" else "csv")
        assert os.path.basename(path).startswith(sidecar["supplier_id"] + "_")
        checks = result.get_asset_check_evaluations()
        assert [c.passed for c in checks] == [True]
        for node in ("raw_download", "shared_file"):
            [event] = result.asset_materializations_for_node(node)
            assert event.tags["dagster/data_version"] == md5  # DataVersion = the checksum


def test_same_content_is_reused_not_copied_again(instance, sheet, tmp_path):
    sync_registry(instance, sheet)
    first = sync_supplier(instance, sheet, "beta-hardware")
    second = sync_supplier(instance, sheet, "beta-hardware")
    meta = second.asset_materializations_for_node("shared_file")[0].metadata
    assert meta["reused_existing_file"].value is True
    assert (
        meta["shared_path"].value
        == first.asset_materializations_for_node("shared_file")[0].metadata["shared_path"].value
    )
    assert len(visible_files(tmp_path / "shared")) == 2  # one file, one sidecar


@pytest.mark.parametrize(
    ("handler", "cause"),
    [
        (loopback.status(404), "HTTP 404"),
        (loopback.status(403), "HTTP 403"),
        (loopback.html_page(), "HTML page instead of a spreadsheet"),
        (loopback.file_body(b""), "empty"),
        (loopback.redirect("http://169.254.169.254/latest/meta-data/"), "SSRF"),
        (loopback.file_body(b"x" * (2 * 1024 * 1024)), "too large"),
    ],
)
def test_bad_sources_fail_that_supplier_at_once_with_a_clear_message(
    instance, server, tmp_path, handler, cause
):
    url = server.route("/bad.csv", handler)
    good = server.route("/good.csv", loopback.file_body(CP1251_CSV, "text/csv"))
    master = server.route(
        "/master.csv",
        loopback.file_body(
            master_sheet_csv(
                [["Bad Supplier", url, "csv", "yes", "yes"], ["Good", good, "csv", "yes", "yes"]]
            )
        ),
    )
    resources = courier_resources(tmp_path, master, max_file_size_mb=1)
    sync_registry(instance, resources)

    failed = sync_supplier(instance, resources, "bad-supplier", raise_on_error=False)
    assert not failed.success
    message = failure_message(failed)
    assert "Bad Supplier" in message and "/bad.csv" in message and cause in message
    assert server.hits["/bad.csv"] == 1  # a permanent cause: no retry
    assert (
        instance.get_run_by_id(failed.run_id).tags["dagster/retry_on_asset_or_op_failure"]
        == "false"
    )
    assert visible_files(tmp_path / "shared") == []
    assert visible_files(tmp_path / "downloads" / "bad-supplier") == []

    # The other supplier is not affected.
    assert sync_supplier(instance, resources, "good").success


def retry_tick(instance, cursor=None, *, due_now=False):
    """One tick of the source retry sensor; `due_now` makes every pending attempt due."""
    if due_now and cursor:
        state = json.loads(cursor)
        for entry in state["due"].values():
            entry["at"] = 0
        cursor = json.dumps(state)
    return source_retry_sensor(build_sensor_context(instance=instance, cursor=cursor))


def test_a_source_that_stays_down_is_fetched_four_times_minutes_apart(instance, server, tmp_path):
    """One retry layer: the source retry sensor, 5, 10 and 20 minutes after each failure; no
    step retry, no run retry; a fifth fetch waits for the next sync."""
    url = server.route("/flaky.csv", loopback.status(503))
    master = server.route(
        "/master.csv", loopback.file_body(master_sheet_csv([["Flaky", url, "csv", "", ""]]))
    )
    resources = courier_resources(tmp_path, master)
    sync_registry(instance, resources)
    cursor, tags = None, None
    for attempt, delay_min in ((1, 5), (2, 10), (3, 20), (4, None)):
        started = time.time()
        result = sync_supplier(instance, resources, "flaky", raise_on_error=False, tags=tags)
        finished = time.time()
        assert not result.success
        assert server.hits["/flaky.csv"] == attempt  # one fetch per run
        message = failure_message(result)
        assert "HTTP 503" in message and "Flaky" in message
        run_tags = instance.get_run_by_id(result.run_id).tags
        assert run_tags["dagster/retry_on_asset_or_op_failure"] == "false"
        waiting = retry_tick(instance, cursor)
        assert waiting.run_requests == []  # not due yet
        cursor = waiting.cursor
        if delay_min is None:
            assert "no attempt left in this sync" in message
            assert json.loads(cursor)["due"] == {}
            break
        assert f"attempt {attempt + 1} at" in message
        [entry] = json.loads(cursor)["due"].values()
        # Due `delay_min` minutes after the failure, which happened during the run.
        assert started + delay_min * 60 <= entry["at"] <= finished + delay_min * 60
        [request] = retry_tick(instance, cursor, due_now=True).run_requests
        assert request.partition_key == "flaky"
        assert request.tags["courier/fetch_attempt"] == str(attempt + 1)
        tags, cursor = request.tags, retry_tick(instance, cursor, due_now=True).cursor
    assert server.hits["/flaky.csv"] == 4


def test_a_retry_succeeds_when_the_server_recovers(instance, server, tmp_path):
    url = server.route("/recovers.csv", loopback.fail_then(1, 500, loopback.file_body(CP1251_CSV)))
    master = server.route(
        "/master.csv", loopback.file_body(master_sheet_csv([["Recovers", url, "csv", "", ""]]))
    )
    resources = courier_resources(tmp_path, master)
    sync_registry(instance, resources)
    assert not sync_supplier(instance, resources, "recovers", raise_on_error=False).success
    pending = retry_tick(instance)
    [request] = retry_tick(instance, pending.cursor, due_now=True).run_requests
    assert sync_supplier(instance, resources, "recovers", tags=request.tags).success
    assert server.hits["/recovers.csv"] == 2
    # Fetched since: a retry still pending for it would be dropped.
    assert retry_tick(instance, pending.cursor, due_now=True).run_requests == []


def test_unwritable_shared_folder_fails_clearly(instance, server, tmp_path):
    url = server.route("/ok.csv", loopback.file_body(CP1251_CSV))
    master = server.route(
        "/master.csv", loopback.file_body(master_sheet_csv([["Ok", url, "csv", "", ""]]))
    )
    resources = courier_resources(tmp_path, master)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the shared folder should be")
    resources["shared_volume"] = SharedVolumeResource(uploads_dir=str(blocker / "uploads"))
    sync_registry(instance, resources)
    result = sync_supplier(instance, resources, "ok", raise_on_error=False)
    message = failure_message(result)
    assert "cannot write to the shared folder" in message and "'Ok'" in message


def test_supplier_removed_from_the_sheet_keeps_its_partition_and_is_not_synced(
    instance, server, tmp_path
):
    url = server.route("/a.csv", loopback.file_body(CP1251_CSV))
    rows = [["Stays", url, "csv", "", ""], ["Leaves", url, "csv", "", ""]]
    server.route("/master.csv", loopback.file_body(master_sheet_csv(rows)))
    resources = courier_resources(tmp_path, server.url("/master.csv"))
    sync_registry(instance, resources)
    first = supplier_partitions_sensor(build_sensor_context(instance=instance))
    instance.add_dynamic_partitions(
        suppliers.name, first.dynamic_partitions_requests[0].partition_keys
    )

    server.route("/master.csv", loopback.file_body(master_sheet_csv(rows[:1])))
    sync_registry(instance, resources)
    second = supplier_partitions_sensor(
        build_sensor_context(instance=instance, cursor=first.cursor)
    )
    assert [r.partition_key for r in second.run_requests] == ["stays"]
    assert "leaves" in instance.get_dynamic_partitions(suppliers.name)
    result = sync_supplier(instance, resources, "leaves", raise_on_error=False)
    assert "not in the master sheet" in failure_message(result)


def test_cleanup_job_reports_what_it_removed(instance, sheet, tmp_path):
    sync_registry(instance, sheet)
    sync_supplier(instance, sheet, "beta-hardware")
    shared = tmp_path / "shared"
    for path in shared.iterdir():
        os.utime(path, (1, 1))  # long expired
    result = shared_file_cleanup.execute_in_process(instance=instance, resources=sheet)
    assert result.success
    [materialization] = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = materialization.step_output_data.metadata
    assert metadata["shared_files_removed"].value == 2
    assert metadata["bytes_freed"].value > len(CP1251_CSV)
    assert visible_files(shared) == []
    # The staged copy stays: it is the supplier's newest, what a retry hands off again.
    assert len(visible_files(tmp_path / "downloads" / "beta-hardware")) == 1


def test_an_error_nobody_foresaw_still_names_the_supplier_first(instance, sheet):
    """The safety net on every supplier step: the cause in the user's words, supplier first,
    not Dagster's "Error occurred while executing op" and a stack trace."""

    @asset(partitions_def=suppliers)
    @names_the_supplier
    def broken_step(context) -> None:
        raise KeyError("price_column")

    @asset(partitions_def=suppliers)
    @names_the_supplier
    def broken_generator(context):
        yield AssetObservation("broken_generator", partition=context.partition_key)
        raise OSError("disk on fire")

    sync_registry(instance, sheet)  # the names come from the last master sheet read
    instance.add_dynamic_partitions(suppliers.name, ["alfa-instrument"])
    for step, cause in ((broken_step, "KeyError: 'price_column'"), (broken_generator, "OSError")):
        result = materialize(
            [step], instance=instance, partition_key="alfa-instrument", raise_on_error=False
        )
        assert not result.success
        message = failure_message(result)
        assert message.startswith(
            f"Supplier 'Альфа Инструмент' (alfa-instrument): {step.op.name} failed unexpectedly: "
        )
        assert cause in message


def test_a_source_retry_cursor_of_the_previous_version_still_retries(instance):
    """Cursors written before the due entries named their partition: the next tick reads
    them and asks for the run all the same."""
    old = {"after": 0, "due": {"flaky": {"at": 0, "attempt": 2, "storage_id": 7, "one_off": None}}}
    result = retry_tick(instance, json.dumps(old))
    [run] = result.run_requests
    assert run.partition_key == "flaky" and run.run_key == "source-retry-7"
    assert run.tags["courier/fetch_attempt"] == "2"
