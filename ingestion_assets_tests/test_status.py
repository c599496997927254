"""`python -m ingestion_assets status`: one line per supplier, from the instance."""

from __future__ import annotations

import subprocess
import sys
import time

from ingestion_assets.status import all_statuses, render

from . import loopback
from .dagster_helpers import courier_resources, master_sheet_csv, sync_registry, sync_supplier
from .test_ml_pipeline import FULL, PRICE_LIST, until

CSV = "name;price\nДрель;4990\n".encode()


def test_status_shows_each_suppliers_phase(instance, server, tmp_path, ml_service):
    rows = [
        [
            "Done",
            server.route("/done.xlsx", loopback.file_body(PRICE_LIST)),
            "excel",
            "yes",
            "yes",
        ],
        ["No Ml", server.route("/noml.csv", loopback.file_body(CSV)), "csv", "yes", "no"],
        ["Gone", server.route("/gone.csv", loopback.status(404)), "csv", "yes", "yes"],
        ["Waiting", server.url("/waiting.csv"), "csv", "yes", "yes"],
    ]
    server.route("/master.csv", loopback.file_body(master_sheet_csv(rows)))
    resources = courier_resources(tmp_path, server.url("/master.csv"), ml_url=ml_service.url)
    sync_registry(instance, resources)
    for key in ("done", "no-ml", "gone"):
        sync_supplier(instance, resources, key, selection=FULL, raise_on_error=False)
    instance.add_dynamic_partitions("suppliers", ["waiting"])
    until(instance, resources["ml_analyze"], None, lambda r: r.asset_events and not r.run_requests)

    by_key = {s.key: s for s in all_statuses(instance)}
    assert by_key["done"].phase == "completed with warnings"
    assert (
        by_key["done"].items,
        by_key["done"].matched,
        by_key["done"].review,
        by_key["done"].errors,
    ) == (3, 1, 1, 1)
    assert by_key["done"].attempts == 1 and by_key["done"].size == len(PRICE_LIST)
    assert by_key["no-ml"].phase == "ML off"
    assert by_key["gone"].phase == "failed" and "HTTP 404" in by_key["gone"].detail
    assert by_key["waiting"].phase == "never synced"
    table = render(list(by_key.values()))
    assert table.splitlines()[0].split()[:3] == ["supplier", "phase", "size"]
    assert len(table.splitlines()) == 5


def test_status_command_reads_the_instance_at_dagster_home(instance):
    instance.add_dynamic_partitions("suppliers", ["acme"])
    env = {"DAGSTER_HOME": instance.root_directory, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "ingestion_assets", "status"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "acme" in out and "never synced" in out


def test_a_run_in_progress_shows_as_downloading(instance, server, tmp_path):
    from dagster import DagsterRunStatus
    from dagster._core.test_utils import create_run_for_test

    instance.add_dynamic_partitions("suppliers", ["slow"])
    create_run_for_test(
        instance,
        job_name="supplier_sync",
        tags={"dagster/partition": "slow"},
        status=DagsterRunStatus.STARTED,
    )
    [status] = all_statuses(instance)
    assert status.phase == "downloading"


def test_a_hand_off_that_failed_after_the_download_shows_as_failed(instance, server, tmp_path):
    """The run materialized raw_download, then shared_file failed (the shared folder cannot be
    written): the supplier is failed, with the cause, not 'downloaded'."""
    from ingestion_assets.resources import SharedVolumeResource

    url = server.route("/alfa.csv", loopback.file_body(CSV))
    server.route(
        "/master.csv", loopback.file_body(master_sheet_csv([["Alfa", url, "csv", "", ""]]))
    )
    resources = courier_resources(tmp_path, server.url("/master.csv"))
    (tmp_path / "not-a-folder").write_text("a file where the shared folder should be")
    resources["shared_volume"] = SharedVolumeResource(
        uploads_dir=str(tmp_path / "not-a-folder" / "uploads")
    )
    sync_registry(instance, resources)
    assert not sync_supplier(instance, resources, "alfa", raise_on_error=False).success

    [status] = all_statuses(instance)
    assert status.phase == "failed"
    assert "cannot write to the shared folder" in status.detail


def test_a_run_failed_after_its_last_step_does_not_hide_the_analysis_completed_since(
    instance, server, tmp_path
):
    """The daemon was killed after the run's last step: run monitoring fails the run, and the ml
    status sensor then materializes the analysis. The analysis is the newer news: complete."""
    from dagster import AssetMaterialization

    url = server.route("/alfa.csv", loopback.file_body(CSV))
    server.route(
        "/master.csv", loopback.file_body(master_sheet_csv([["Alfa", url, "csv", "", ""]]))
    )
    resources = courier_resources(tmp_path, server.url("/master.csv"))
    sync_registry(instance, resources)
    run_id = sync_supplier(instance, resources, "alfa").run_id
    instance.report_run_failed(instance.get_run_by_id(run_id))  # what run monitoring does
    instance.report_runless_asset_event(
        AssetMaterialization("ml_analysis_result", partition="alfa", metadata={"error_count": 0})
    )

    [status] = all_statuses(instance)
    assert status.phase == "complete"


def test_a_slow_download_shows_its_bytes_so_far(instance, server, tmp_path):
    """A file that takes seconds to arrive: the supplier shows as downloading, with the bytes
    so far, while its run is still under way."""
    import threading

    from ingestion_assets.fetching.streaming import human_size

    from .drills.sources import slow_body

    body = CSV * 4000  # about 100 KB, in 8 pieces a second apart
    rows = [["Slow", server.route("/slow.csv", slow_body(body, 8, 1.0)), "csv", "yes", "no"]]
    server.route("/master.csv", loopback.file_body(master_sheet_csv(rows)))
    resources = courier_resources(tmp_path, server.url("/master.csv"))
    sync_registry(instance, resources)
    instance.add_dynamic_partitions("suppliers", ["slow"])
    run = threading.Thread(
        target=sync_supplier, args=(instance, resources, "slow"), kwargs={"selection": FULL}
    )
    run.start()
    seen = []
    try:
        while run.is_alive():
            [status] = all_statuses(instance)
            if status.phase == "downloading":
                seen.append(status.detail)
            time.sleep(0.2)
    finally:
        run.join()
    total = human_size(len(body))
    in_bytes = [d for d in seen if d.startswith("Downloading: ") and d.endswith(f" of {total}")]
    assert in_bytes, f"never showed the bytes so far; seen: {seen[:5]}"
    assert all_statuses(instance)[0].phase == "ML off"


def test_a_supplier_whose_last_run_is_older_than_many_runs_of_others_still_shows_it(instance):
    """Statuses are read for many suppliers at once, the newest runs in one query: a supplier
    that last ran before others ran many times is still shown with its own run."""
    from dagster import DagsterRunStatus
    from dagster._core.test_utils import create_run_for_test

    from ingestion_assets.status import RUNS_PER_SUPPLIER

    instance.add_dynamic_partitions("suppliers", ["quiet", "busy"])
    quiet = create_run_for_test(
        instance,
        job_name="supplier_sync",
        tags={"dagster/partition": "quiet"},
        status=DagsterRunStatus.STARTED,
    )
    for _ in range(2 * RUNS_PER_SUPPLIER + 1):
        create_run_for_test(
            instance,
            job_name="supplier_sync",
            tags={"dagster/partition": "busy"},
            status=DagsterRunStatus.SUCCESS,
        )
    by_key = {s.key: s for s in all_statuses(instance)}
    assert by_key["quiet"].run_id == quiet.run_id
    assert by_key["quiet"].phase == "downloading"
    assert by_key["busy"].run_id != quiet.run_id


def test_an_analysis_phase_this_version_does_not_know_is_looked_past(instance):
    """A newer version wrote a phase this one cannot read: the status is the last phase it
    knows, not 'never synced'."""
    from dagster import AssetObservation

    instance.add_dynamic_partitions("suppliers", ["alfa", "beta"])
    for partition in ("alfa", "beta"):
        instance.report_runless_asset_event(
            AssetObservation(
                "ml_analysis_result",
                partition=partition,
                metadata={"phase": "ml_off"},
                description="ML processing off",
            )
        )
    instance.report_runless_asset_event(
        AssetObservation("ml_analysis_result", partition="alfa", metadata={"phase": "later"})
    )
    assert [s.phase for s in all_statuses(instance)] == ["ML off", "ML off"]
