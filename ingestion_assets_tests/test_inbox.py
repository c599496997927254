"""Hand-in of a file through the inbox, and one-off sources from run config."""

from __future__ import annotations

import os
import time

from dagster import SensorResult, build_sensor_context, materialize

from ingestion_assets.courier.assets import raw_download, shared_file
from ingestion_assets.inbox.scanner import PROCESSED, ready, scan
from ingestion_assets.inbox.sensors import inbox_sensor
from ingestion_assets.ml.assets import ml_analysis_result
from ingestion_assets.ml.events import latest_ml_state
from ingestion_assets.registry.assets import supplier_registry
from ingestion_assets.resources import FetchResource

from . import loopback
from .dagster_helpers import courier_resources, failure_message, master_sheet_csv, sync_registry

CSV = "Код;Товар;Цена\nB-1;Молоток;450,00\n".encode("cp1251")


def age(path, seconds=10):
    old = time.time() - seconds
    os.utime(path, (old, old))


def tick(instance, fetch: FetchResource, cursor=None) -> SensorResult:
    return inbox_sensor(
        build_sensor_context(instance=instance, cursor=cursor, resources={"fetch": fetch})
    )


def test_scan_skips_partial_names_and_refuses_folders_that_are_not_keys(tmp_path):
    (tmp_path / "acme").mkdir()
    (tmp_path / "Not A Key").mkdir()
    for name in ("prices.csv", "prices.csv.part", ".hidden.csv", "~$lock.xlsx", "big.crdownload"):
        (tmp_path / "acme" / name).write_bytes(b"x")
    files, refused = scan(tmp_path)
    assert [f.path.name for f in files] == ["prices.csv"]
    assert refused == ["Not A Key"]


def test_a_file_still_being_written_is_not_picked_up(tmp_path):
    folder = tmp_path / "acme"
    folder.mkdir()
    path = folder / "prices.csv"
    path.write_bytes(b"half")
    age(path)
    first, _ = scan(tmp_path)
    assert ready(first, {}) == []  # never seen before
    with path.open("ab") as handle:  # the writer goes on
        handle.write(b" and the rest")
    age(path, 9)
    second, _ = scan(tmp_path)
    assert ready(second, {str(f.path): f.signature for f in first}) == []
    third, _ = scan(tmp_path)
    assert [f.path for f in ready(third, {str(f.path): f.signature for f in second})] == [path]


def test_a_dropped_file_runs_its_supplier_once_and_the_run_moves_it_aside(
    instance, server, tmp_path
):
    master = server.route("/master.csv", loopback.file_body(master_sheet_csv([])))
    resources = courier_resources(tmp_path, master, inbox_dir=str(tmp_path / "inbox"))
    fetch = resources["fetch"]
    dropped = tmp_path / "inbox" / "new-supplier" / "Прайс октябрь.csv"
    dropped.parent.mkdir(parents=True)
    dropped.write_bytes(CSV)
    age(dropped)

    first = tick(instance, fetch)
    assert first.run_requests == []  # seen once: maybe still being written
    second = tick(instance, fetch, first.cursor)
    [request] = second.run_requests
    assert request.partition_key == "new-supplier"
    assert second.dynamic_partitions_requests[0].partition_keys == ["new-supplier"]
    assert dropped.exists()  # it stays until a run has taken it
    assert tick(instance, fetch, second.cursor).run_requests == []  # requested once
    # A tick that failed after asking (its cursor never stored) loses nothing: the next one
    # asks for the very same run, which Dagster's run_key de-duplicates.
    [again] = tick(instance, fetch, first.cursor).run_requests
    assert again.run_key == request.run_key

    sync_registry(instance, resources)
    instance.add_dynamic_partitions("suppliers", ["new-supplier"])
    result = materialize(
        [supplier_registry, raw_download, shared_file, ml_analysis_result],
        selection=[raw_download, shared_file],
        partition_key="new-supplier",
        instance=instance,
        resources=resources,
        run_config=request.run_config,
    )
    assert result.success
    path = result.asset_materializations_for_node("shared_file")[0].metadata["shared_path"].value
    with open(path, "rb") as handle:
        assert handle.read() == CSV
    assert path.endswith(".csv") and "Прайс_октябрь" in path
    # The run took the file: moved aside, not requested again.
    assert not dropped.exists()
    [claimed] = (tmp_path / "inbox" / PROCESSED / "new-supplier").iterdir()
    assert claimed.read_bytes() == CSV
    assert tick(instance, fetch, second.cursor).run_requests == []


def test_a_run_that_fails_before_taking_the_file_leaves_it_in_the_inbox(instance, server, tmp_path):
    master = server.route("/master.csv", loopback.file_body(master_sheet_csv([])))
    resources = courier_resources(tmp_path, master, inbox_dir=str(tmp_path / "inbox"))
    dropped = tmp_path / "inbox" / "empty-one" / "prices.csv"
    dropped.parent.mkdir(parents=True)
    dropped.write_bytes(b"")  # an empty file fails the fetch
    sync_registry(instance, resources)
    instance.add_dynamic_partitions("suppliers", ["empty-one"])
    result = materialize(
        [supplier_registry, raw_download, shared_file, ml_analysis_result],
        selection=[raw_download],
        partition_key="empty-one",
        instance=instance,
        resources=resources,
        run_config={"ops": {"raw_download": {"config": {"source_url": str(dropped)}}}},
        raise_on_error=False,
    )
    assert not result.success and "empty" in failure_message(result)
    assert dropped.exists()


def test_a_one_off_source_from_run_config_overrides_the_master_sheet(instance, server, tmp_path):
    listed = server.route("/listed.csv", loopback.file_body(CSV))
    other = server.route("/one-off.csv", loopback.file_body(CSV + b"B-2;X;1\n"))
    master = server.route(
        "/master.csv", loopback.file_body(master_sheet_csv([["Acme", listed, "csv", "", ""]]))
    )
    resources = courier_resources(tmp_path, master)
    sync_registry(instance, resources)
    instance.add_dynamic_partitions("suppliers", ["acme"])
    config = {
        "ops": {"raw_download": {"config": {"source_url": other, "use_ml_processing": False}}}
    }
    result = materialize(
        [supplier_registry, raw_download, shared_file, ml_analysis_result],
        selection=[raw_download, shared_file, ml_analysis_result],
        partition_key="acme",
        instance=instance,
        resources=resources,
        run_config=config,
    )
    assert result.success
    assert server.hits["/one-off.csv"] == 1 and server.hits["/listed.csv"] == 0
    assert latest_ml_state(instance, "acme")[0] == "ml_off"


def test_a_one_off_local_path_outside_the_allowed_folders_is_refused(instance, server, tmp_path):
    master = server.route("/master.csv", loopback.file_body(master_sheet_csv([])))
    resources = courier_resources(tmp_path, master)
    sync_registry(instance, resources)
    instance.add_dynamic_partitions("suppliers", ["acme"])
    config = {"ops": {"raw_download": {"config": {"source_url": "/etc/passwd", "format": "csv"}}}}
    result = materialize(
        [supplier_registry, raw_download, shared_file, ml_analysis_result],
        selection=[raw_download],
        partition_key="acme",
        instance=instance,
        resources=resources,
        run_config=config,
        raise_on_error=False,
    )
    assert "outside LOCAL_SOURCES_ROOT" in failure_message(result)
