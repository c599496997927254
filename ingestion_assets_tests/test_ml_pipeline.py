"""The ML hand-off on a real Dagster instance against the reference ml-analyze over HTTP."""

from __future__ import annotations

import io
import json
import os
import time

import openpyxl
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    Definitions,
    ReexecutionOptions,
    SensorResult,
    build_sensor_context,
    execute_job,
    materialize,
    reconstructable,
)

from ingestion_assets.courier.assets import raw_download, shared_file
from ingestion_assets.maintenance import shared_file_cleanup
from ingestion_assets.ml.assets import analysis_succeeded, ml_analysis_result
from ingestion_assets.ml.events import ML_RESULT, latest_ml_state, submission_observation
from ingestion_assets.ml.sensors import ml_status_sensor
from ingestion_assets.ml.tracking import TrackedJob, TrackerState
from ingestion_assets.registry.assets import supplier_registry
from ingestion_assets.registry.sensors import supplier_partitions_sensor
from ingestion_assets.resources import CatalogueResource, MLAnalyzeResource
from ingestion_assets.status import supplier_status

from . import loopback
from .dagster_helpers import (
    courier_resources,
    failure_message,
    master_sheet_csv,
    sync_registry,
    sync_supplier,
)
from .ml_server import RunningServer

FULL = [raw_download, shared_file, ml_analysis_result]
ML_ONLY = [shared_file, ml_analysis_result]


def price_list() -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["ООО Альфа, прайс-лист"])
    ws.append([])
    ws.append(["Артикул", "Наименование", "Цена"])
    ws.append(["A-1", "Дрель ударная 750 Вт", "4 990,00 ₽"])
    ws.append(["A-2", "Шуруповёрт аккумуляторный 18 В", "7 450 ₽"])
    ws.append(["A-3", "Совершенно неизвестный товар", "по запросу"])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


PRICE_LIST = price_list()
PRICE_LIST_CSV = "name;sku;price\nДрель ударная 750 Вт;D-1;4990\nМолоток;M-1;450\n".encode()


def tick(
    instance, ml: MLAnalyzeResource, cursor: str | None, catalogue_url: str = ""
) -> SensorResult:
    """One status-sensor tick; its events are stored as the daemon stores them."""
    resources = {"ml_analyze": ml, "catalogue": CatalogueResource(database_url=catalogue_url)}
    result = ml_status_sensor(
        build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    )
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def until(instance, ml, cursor, done, timeout=20.0):
    """Tick until `done(result)`; return (result, cursor)."""
    deadline = time.monotonic() + timeout
    while True:
        result = tick(instance, ml, cursor)
        cursor = result.cursor
        if done(result):
            return result, cursor
        assert time.monotonic() < deadline, "the sensor never reached the expected state"
        time.sleep(0.2)


def settled(result: SensorResult) -> bool:
    """Nothing left to follow: no job outstanding, no resubmission waiting."""
    state = TrackerState.from_json(result.cursor)
    return not state.jobs and not state.resubmits


def kinds(result: SensorResult) -> list[str]:
    return [type(e).__name__ for e in result.asset_events]


def setup_supplier(
    server, tmp_path, ml_url, body=PRICE_LIST, name="Alfa", path="/alfa.xlsx", fmt="excel", ml="yes"
):
    url = server.route(path, loopback.file_body(body))
    master = server.route(
        "/master.csv", loopback.file_body(master_sheet_csv([[name, url, fmt, "yes", ml]]))
    )
    return courier_resources(tmp_path, master, ml_url=ml_url)


def test_a_supplier_goes_from_master_sheet_to_a_completed_analysis(
    instance, server, tmp_path, ml_service
):
    resources = setup_supplier(server, tmp_path, ml_service.url)
    ml = resources["ml_analyze"]
    sync_registry(instance, resources)
    [request] = supplier_partitions_sensor(build_sensor_context(instance=instance)).run_requests
    run = sync_supplier(instance, resources, request.partition_key, selection=FULL)
    assert run.success
    assert latest_ml_state(instance, "alfa")[0] == "submitted"
    assert (
        run.asset_materializations_for_node("ml_analysis_result") == []
    )  # submitting is not waiting

    result, _ = until(instance, ml, None, lambda r: "AssetMaterialization" in kinds(r))
    [materialization] = [
        e for e in result.asset_events if type(e).__name__ == "AssetMaterialization"
    ]
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["items_total"] == 3
    assert metadata["items_processed"] == 3
    # Two rows extracted (the third has no usable price): one auto-matched, one sent to review.
    assert metadata["successful_extractions"] == 2 and metadata["failed_extractions"] == 1
    assert (metadata["items_matched"], metadata["items_review"], metadata["items_unmatched"]) == (
        1,
        1,
        0,
    )
    assert metadata["error_count"] == 1 and "по запросу" in metadata["first_errors"]
    assert metadata["outcome"] == "completed with warnings"
    assert metadata["attempt"] == 1
    # Reported by the sensor, the outcome links back to the run that submitted it.
    assert metadata["submitted_by_run"] == run.run_id
    assert list(materialization.metadata)[0] == "submitted_by_run"
    assert result.run_requests == []  # a first success needs no check run
    # The first analysis to end evaluates the check: it never shows passed before it ran.
    [check] = [e for e in result.asset_events if type(e).__name__ == "AssetCheckEvaluation"]
    assert check.passed and check.check_name == "analysis_succeeded"
    assert latest_ml_state(instance, "alfa")[0] == "completed"


def test_progress_is_reported_while_the_service_works(instance, server, tmp_path):
    service = RunningServer(tmp_path / "slow.sqlite3", row_delay_ms=1000)
    try:
        resources = setup_supplier(server, tmp_path, service.url)
        sync_registry(instance, resources)
        assert sync_supplier(instance, resources, "alfa", selection=FULL).success
        result, cursor = until(
            instance,
            resources["ml_analyze"],
            None,
            lambda r: any(
                getattr(e, "metadata", {}).get("phase")
                and e.metadata["phase"].value == "analyzing"
                and 0 < e.metadata["progress_percentage"].value < 100
                for e in r.asset_events
            ),
        )
        assert latest_ml_state(instance, "alfa")[0] == "analyzing"
        # A second run while the job is still going (or after it ended) does not submit the
        # same file twice.
        assert sync_supplier(instance, resources, "alfa", selection=FULL).success
        observations = instance.fetch_observations(
            AssetRecordsFilter(asset_key=ML_RESULT, asset_partitions=["alfa"]), limit=100
        ).records
        submissions = [
            r for r in observations if r.asset_observation.metadata["phase"].value == "submitted"
        ]
        assert len(submissions) == 1
    finally:
        service.stop()


def test_ml_off_stops_after_shared_file_visibly(instance, server, tmp_path, ml_service):
    resources = setup_supplier(server, tmp_path, ml_service.url, ml="no")
    sync_registry(instance, resources)
    assert sync_supplier(instance, resources, "alfa", selection=FULL).success
    phase, record = latest_ml_state(instance, "alfa")
    assert phase == "ml_off" and "use_ml_processing=no" in record.asset_observation.description

    # The global switch wins over a supplier that wants ML.
    resources = setup_supplier(server, tmp_path, ml_service.url, name="Beta", path="/beta.xlsx")
    resources["ml_analyze"] = MLAnalyzeResource(url=ml_service.url, use_ml_processing=False)
    sync_registry(instance, resources)
    assert sync_supplier(instance, resources, "beta", selection=FULL).success
    assert latest_ml_state(instance, "beta")[0] == "ml_off"


NO_HEADER = b"foo;bar\n1;2\n"  # the reference fails it: no name and price columns


def test_a_cause_that_will_not_heal_is_reported_at_once_never_resubmitted(
    instance, server, tmp_path, ml_service
):
    """The reference server cannot parse PDFs: one attempt, then a failed check with its words."""
    resources = setup_supplier(
        server,
        tmp_path,
        ml_service.url,
        body=b"%PDF-1.4 a price list\n%%EOF\n",
        path="/p.pdf",
        fmt="url",
    )
    ml = resources["ml_analyze"]
    sync_registry(instance, resources)
    assert sync_supplier(instance, resources, "alfa", selection=FULL).success
    result, cursor = until(instance, ml, None, lambda r: "AssetCheckEvaluation" in kinds(r))
    assert result.run_requests == []
    [check] = [e for e in result.asset_events if type(e).__name__ == "AssetCheckEvaluation"]
    assert not check.passed and check.description.startswith("alfa: ")
    assert "will not heal" in check.description
    assert "PDF is not supported by the reference server" in check.description
    phase, record = latest_ml_state(instance, "alfa")
    assert phase == "failed" and record.asset_observation.metadata["attempt"].value == 1
    assert "PDF is not supported" in record.asset_observation.description
    assert tick(instance, ml, cursor).run_requests == []

    # Two more syncs of the same file: not submitted again (it would fail the same way).
    def submissions() -> int:
        observations = instance.fetch_observations(
            AssetRecordsFilter(asset_key=ML_RESULT, asset_partitions=["alfa"]), limit=100
        ).records
        return sum(r.asset_observation.metadata["phase"].value == "submitted" for r in observations)

    for _ in range(2):
        assert sync_supplier(instance, resources, "alfa", selection=FULL).success
    assert submissions() == 1 and latest_ml_state(instance, "alfa")[0] == "failed"
    # force=true (the cause fixed) submits it again.
    forced = materialize(
        [supplier_registry, *FULL],
        selection=[ml_analysis_result],
        partition_key="alfa",
        instance=instance,
        resources=resources,
        run_config={"ops": {"ml_analysis_result": {"config": {"force": True}}}},
    )
    assert forced.success and submissions() == 2


def test_failed_jobs_are_resubmitted_then_reported_on_the_check(
    instance, server, tmp_path, ml_service
):
    """A failure that may heal: 3 attempts, then a failed check with the service's message."""
    resources = setup_supplier(
        server, tmp_path, ml_service.url, body=NO_HEADER, path="/p.csv", fmt="csv"
    )
    ml = resources["ml_analyze"]
    sync_registry(instance, resources)
    assert sync_supplier(instance, resources, "alfa", selection=FULL).success
    cursor = None
    for attempt in (1, 2):
        result, cursor = until(instance, ml, cursor, lambda r: r.run_requests)
        [request] = result.run_requests
        assert request.tags["courier/ml_attempt"] == str(attempt + 1)
        assert request.asset_selection == [AssetKey("shared_file"), AssetKey("ml_analysis_result")]
        assert sync_supplier(
            instance, resources, "alfa", selection=ML_ONLY, tags=request.tags
        ).success
    result, cursor = until(instance, ml, cursor, lambda r: "AssetCheckEvaluation" in kinds(r))
    [check] = [e for e in result.asset_events if type(e).__name__ == "AssetCheckEvaluation"]
    assert not check.passed
    assert check.description.startswith("alfa: ")
    assert "No header row" in check.description
    assert check.metadata["failed_suppliers"].value == "alfa"
    assert latest_ml_state(instance, "alfa")[0] == "failed"
    assert server.hits["/p.csv"] == 1  # every attempt reused the file
    assert TrackerState.from_json(cursor).jobs == {}
    [by_hand] = run_check(instance, resources).get_asset_check_evaluations()
    assert not by_hand.passed and "alfa" in by_hand.description

    # The supplier sends a spreadsheet: it completes, and the check recovers. Then it fails
    # and recovers again: each evaluation is stored (no unique-key clash in the storage).
    for body in (PRICE_LIST_CSV, NO_HEADER, PRICE_LIST_CSV):
        server.route("/p.csv", loopback.file_body(body))
        assert sync_supplier(instance, resources, "alfa", selection=FULL).success
        for _ in range(3):  # a failing file takes three attempts
            result, cursor = until(
                instance,
                ml,
                cursor,
                lambda r: r.run_requests or r.asset_events and settled(r),
            )
            for request in result.run_requests:
                assert sync_supplier(
                    instance, resources, "alfa", selection=ML_ONLY, tags=request.tags
                ).success
            if not result.run_requests:
                break
        [check] = [e for e in result.asset_events if type(e).__name__ == "AssetCheckEvaluation"]
        assert check.passed == (body == PRICE_LIST_CSV)
    [by_hand] = run_check(instance, resources).get_asset_check_evaluations()
    assert by_hand.passed


def test_resubmissions_wait_the_retry_delay(instance, server, tmp_path, ml_service):
    resources = setup_supplier(
        server, tmp_path, ml_service.url, body=NO_HEADER, path="/p.csv", fmt="csv"
    )
    ml = MLAnalyzeResource(url=ml_service.url, retry_delay_seconds=3600)
    sync_registry(instance, resources)
    assert sync_supplier(instance, resources, "alfa", selection=FULL).success
    result, cursor = until(
        instance,
        ml,
        None,
        lambda r: "AssetObservation" in kinds(r) and TrackerState.from_json(r.cursor).resubmits,
    )
    assert result.run_requests == []
    [waiting] = TrackerState.from_json(cursor).resubmits.values()
    assert 3500 < waiting.resubmit_at - time.time() <= 3600
    phase, record = latest_ml_state(instance, "alfa")
    assert phase == "retrying" and "resubmitting in 3600 s" in record.asset_observation.description
    assert tick(instance, ml, cursor).run_requests == []
    # The wait is over: the resubmission is requested once.
    state = TrackerState.from_json(cursor)
    for job in state.resubmits.values():
        job.resubmit_at = time.time() - 1
    [request] = tick(instance, ml, state.to_json()).run_requests
    assert request.tags["courier/ml_attempt"] == "2"


def run_check(instance, resources):
    """analysis_succeeded, executed by hand (it re-reads the event log)."""
    return materialize(
        [ml_analysis_result.to_source_asset(), analysis_succeeded],
        instance=instance,
        resources=resources,
        selection=AssetSelection.checks(analysis_succeeded),
    )


def test_a_job_lost_in_a_restart_is_resubmitted(instance, server, tmp_path):
    service = RunningServer(tmp_path / "a.sqlite3", row_delay_ms=1000)
    resources = setup_supplier(server, tmp_path, service.url)
    sync_registry(instance, resources)
    assert sync_supplier(instance, resources, "alfa", selection=FULL).success
    port = service.port
    service.stop()
    # The service comes back on the same address with no memory of the job.
    service = RunningServer(tmp_path / "b.sqlite3", port=port)
    try:
        result, _ = until(instance, resources["ml_analyze"], None, lambda r: r.run_requests)
        phase, record = latest_ml_state(instance, "alfa")
        assert phase == "retrying" and "lost the job" in record.asset_observation.description
    finally:
        service.stop()


def test_unreachable_service_keeps_every_job_backs_off_and_polls_once_it_is_back(
    instance, server, tmp_path
):
    service = RunningServer(tmp_path / "ml.sqlite3", row_delay_ms=200)
    resources = setup_supplier(server, tmp_path, service.url)
    ml = resources["ml_analyze"]
    sync_registry(instance, resources)
    assert sync_supplier(instance, resources, "alfa", selection=FULL).success
    port = service.port
    service.stop()

    down = tick(instance, ml, None)
    state = TrackerState.from_json(down.cursor)
    assert len(state.jobs) == 1 and state.backoff_until > time.time()
    assert (
        down.run_requests == []
        and [e for e in down.asset_events if type(e).__name__ != "AssetObservation"] == []
    )
    backing_off = tick(instance, ml, down.cursor).skip_reason.skip_message
    assert backing_off.startswith("ml-analyze unreachable; next poll in ")

    service = RunningServer(tmp_path / "ml.sqlite3", port=port, row_delay_ms=0)
    try:
        # Back within the backoff (minutes, after a long outage): the next tick's one health
        # check ends it, and the jobs are polled at once.
        assert TrackerState.from_json(down.cursor).backoff_until > time.time()
        back = tick(instance, ml, down.cursor)
        assert TrackerState.from_json(back.cursor).backoff_until == 0
        result, cursor = until(instance, ml, back.cursor, lambda r: r.run_requests)
        # The restarted reference marks the interrupted job failed: it is resubmitted, not lost.
        assert result.run_requests[0].tags["courier/ml_attempt"] == "2"
    finally:
        service.stop()


def test_clean_up_keeps_files_whose_analysis_is_outstanding(instance, server, tmp_path):
    service = RunningServer(tmp_path / "ml.sqlite3", row_delay_ms=2000)
    try:
        resources = setup_supplier(server, tmp_path, service.url)
        sync_registry(instance, resources)
        assert sync_supplier(instance, resources, "alfa", selection=FULL).success
        shared = tmp_path / "shared"
        for path in shared.iterdir():
            os.utime(path, (1, 1))
        result = shared_file_cleanup.execute_in_process(instance=instance, resources=resources)
        [output] = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
        assert output.step_output_data.metadata["kept_in_use"].value == 1
        assert len(list(shared.iterdir())) == 2
    finally:
        service.stop()


def supplier_sync_from_env():
    """The real supplier_sync job with resources from the environment, for re-execution."""

    from ingestion_assets.jobs import supplier_sync_job
    from ingestion_assets.resources import resources_from_env

    defs = Definitions(
        assets=[supplier_registry, raw_download, shared_file, ml_analysis_result],
        jobs=[supplier_sync_job],
        resources=resources_from_env(),
    )
    return defs.resolve_job_def("supplier_sync")


def test_a_failed_hand_off_re_executed_from_failure_reuses_the_download(
    instance, server, tmp_path, free_port, monkeypatch
):
    """The manual retry ("Re-execute from failure"): the shared folder was unusable; once it is
    mended, the re-execution hands off and submits the file downloaded the first time."""
    resources = setup_supplier(server, tmp_path, f"http://127.0.0.1:{free_port}")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the shared folder should be")
    for name, value in {
        "MASTER_SHEET_URL": server.url("/master.csv"),
        "SSRF_ALLOWED_HOSTS": "127.0.0.1",
        "DOWNLOADS_DIR": str(tmp_path / "downloads"),
        "SHARED_UPLOADS_DIR": str(blocked / "uploads"),
        "ML_ANALYZE_URL": f"http://127.0.0.1:{free_port}",
    }.items():
        monkeypatch.setenv(name, value)
    sync_registry(instance, resources)
    instance.add_dynamic_partitions("suppliers", ["alfa"])
    job = reconstructable(supplier_sync_from_env)
    in_process = {"execution": {"config": {"in_process": {}}}}
    partition = {"dagster/partition": "alfa"}
    with execute_job(job, instance=instance, run_config=in_process, tags=partition) as failed:
        assert not failed.success
        assert "cannot write to the shared folder" in failure_message(failed)
        assert "Alfa" in failure_message(failed)

    monkeypatch.setenv("SHARED_UPLOADS_DIR", str(tmp_path / "shared"))
    service = RunningServer(tmp_path / "ml.sqlite3", port=free_port)
    try:
        options = ReexecutionOptions.from_failure(failed.run_id, instance)
        # The daemon's run retry copies the parent's tags; execute_job needs them given.
        with execute_job(
            job,
            instance=instance,
            run_config=in_process,
            reexecution_options=options,
            tags=partition,
        ) as retried:
            assert retried.success
        assert server.hits["/alfa.xlsx"] == 1  # not downloaded again
        assert latest_ml_state(instance, "alfa")[0] == "submitted"
        _, cursor = until(
            instance, resources["ml_analyze"], None, lambda r: "AssetMaterialization" in kinds(r)
        )
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=ML_RESULT), limit=5
        ).records
        assert len(records) == 1 and records[0].partition_key == "alfa"
        assert json.loads(cursor)["jobs"] == {}
    finally:
        service.stop()


def test_the_sensor_follows_hundreds_of_jobs_to_the_end_once_each(instance, tmp_path, ml_service):
    """300 outstanding jobs: every one polled, each partition materialized exactly once."""

    price_list = tmp_path / "prices.csv"
    price_list.write_text("name;price\nДрель ударная 750 Вт;4990\nМолоток;450\n", encoding="utf-8")
    for index in range(300):
        job_id = ml_service.api.submit(price_list, "csv")
        job = TrackedJob(job_id, f"s{index:03d}", 1, "0" * 32, str(price_list), "", time.time())
        instance.report_runless_asset_event(submission_observation(job, "csv"))

    ml = MLAnalyzeResource(url=ml_service.url)
    first = tick(instance, ml, None)
    assert (
        len(TrackerState.from_json(first.cursor).jobs)
        + sum(type(e).__name__ == "AssetMaterialization" for e in first.asset_events)
        == 300
    )
    _, cursor = until(
        instance, ml, first.cursor, lambda r: not TrackerState.from_json(r.cursor).jobs, timeout=60
    )
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=ML_RESULT), limit=1000
    ).records
    assert sorted(r.partition_key for r in records) == [f"s{i:03d}" for i in range(300)]
    assert all(r.asset_materialization.metadata["items_total"].value == 2 for r in records)
    final = tick(instance, ml, cursor)  # nothing left to follow: no runs, no events
    assert final.run_requests == [] and final.asset_events == []
    assert final.skip_reason.skip_message == "no outstanding ml-analyze jobs"


def test_a_poll_interval_longer_than_the_daemons_beat_is_kept_by_the_tick(
    instance, tmp_path, ml_service
):
    """ML_POLL_INTERVAL_SECONDS=30: the daemon still wakes the sensor every 5 s; the ticks in
    between poll nothing and change nothing, the first one 30 s on polls again."""
    price_list = tmp_path / "p.csv"
    price_list.write_text("name;price\nМолоток;450\n", encoding="utf-8")
    job_id = ml_service.api.submit(price_list, "csv")
    job = TrackedJob(job_id, "alfa", 1, "0" * 32, str(price_list), "", time.time())
    instance.report_runless_asset_event(submission_observation(job, "csv"))
    ml = MLAnalyzeResource(url=ml_service.url, poll_interval_seconds=30)

    first = tick(instance, ml, None)
    assert len(TrackerState.from_json(first.cursor).jobs) + len(first.asset_events) >= 1
    between = tick(instance, ml, first.cursor)
    assert between.skip_reason.skip_message.startswith("next poll in ")
    # Nothing polled: a poll stamps each job's last_polled in the cursor.
    assert between.cursor == first.cursor and between.asset_events == []

    # The same cursor, its last poll 30 s ago: this tick polls.
    state = TrackerState.from_json(first.cursor)
    state.ticked_at -= 30
    due = tick(instance, ml, state.to_json())
    assert due.skip_reason is None or not due.skip_reason.skip_message.startswith("next poll")
    assert TrackerState.from_json(due.cursor).ticked_at > state.ticked_at + 29


def test_a_submission_waits_for_ml_analyze_and_goes_once_it_is_back(instance, server, tmp_path):
    """ml-analyze down at submission: the run ends (no run held, no run retry spent), the
    partition says it is waiting; when the service is back the sensor asks for one run, which
    submits the file already on the shared volume (nothing downloaded again)."""
    service = RunningServer(tmp_path / "ml.sqlite3")
    port = service.port
    service.stop()
    resources = setup_supplier(server, tmp_path, f"http://127.0.0.1:{port}")
    ml = resources["ml_analyze"]
    sync_registry(instance, resources)
    run = sync_supplier(instance, resources, "alfa", selection=FULL)
    assert run.success
    assert (
        instance.get_run_by_id(run.run_id).tags.get("dagster/retry_on_asset_or_op_failure") is None
    )
    phase, record = latest_ml_state(instance, "alfa")
    assert phase == "waiting"
    assert record.asset_observation.description.startswith("Waiting for ml-analyze: ")
    shown = supplier_status(instance, "alfa")
    assert shown.phase == "waiting for ml-analyze" and "Submitted as soon as" in shown.detail
    down = tick(instance, ml, None)
    assert down.run_requests == [] and "alfa" in TrackerState.from_json(down.cursor).waiting

    service = RunningServer(tmp_path / "ml.sqlite3", port=port)
    try:
        [request] = tick(instance, ml, down.cursor).run_requests
        assert request.tags["courier/trigger"] == "ml_ready"
        assert request.asset_selection == [AssetKey("shared_file"), AssetKey("ml_analysis_result")]
        assert sync_supplier(
            instance, resources, "alfa", selection=ML_ONLY, tags=request.tags
        ).success
        assert latest_ml_state(instance, "alfa")[0] == "submitted"
        result, cursor = until(
            instance, ml, down.cursor, lambda r: "AssetMaterialization" in kinds(r)
        )
        assert TrackerState.from_json(cursor).waiting == {}
        assert server.hits["/alfa.xlsx"] == 1  # never downloaded again
        submissions = [
            r
            for r in instance.fetch_observations(
                AssetRecordsFilter(asset_key=ML_RESULT, asset_partitions=["alfa"]), limit=100
            ).records
            if r.asset_observation.metadata["phase"].value == "submitted"
        ]
        assert len(submissions) == 1
    finally:
        service.stop()


def test_a_degraded_service_is_waited_for_and_the_wait_has_a_limit(
    instance, server, tmp_path, free_port
):
    degraded = server.route(
        "/health", loopback.file_body(b'{"status": "degraded"}', "application/json")
    )
    ml_url = degraded.rsplit("/health", 1)[0]
    resources = setup_supplier(server, tmp_path, ml_url)
    sync_registry(instance, resources)
    assert sync_supplier(instance, resources, "alfa", selection=FULL).success
    phase, record = latest_ml_state(instance, "alfa")
    assert phase == "waiting" and "health: degraded" in record.asset_observation.description

    # The next attempt for the same file goes on with the same wait: past the limit it fails
    # clearly, with run retries off.
    ml = MLAnalyzeResource(url=ml_url, wait_limit_minutes=0)
    run = sync_supplier(
        instance, {**resources, "ml_analyze": ml}, "alfa", selection=ML_ONLY, raise_on_error=False
    )
    assert not run.success
    assert "has not been ready for" in failure_message(run)
    assert (
        instance.get_run_by_id(run.run_id).tags["dagster/retry_on_asset_or_op_failure"] == "false"
    )

    # The sensor, too, gives up a wait past the limit, with words and a failed check.
    result = tick(instance, ml, None)
    assert result.run_requests == []
    [check] = [e for e in result.asset_events if type(e).__name__ == "AssetCheckEvaluation"]
    assert not check.passed and "was not ready" in check.description
    assert latest_ml_state(instance, "alfa")[0] == "failed"
