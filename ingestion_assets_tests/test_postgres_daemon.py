"""The real pipeline on the shipped PostgreSQL instance config, and under the real daemon:
sensors, queued runs, run retries from failure, the ml status sensor."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
    asset,
    materialize,
)
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.utils import make_new_run_id
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from sqlalchemy import event
from sqlalchemy.engine import Engine

from ingestion_assets import pools
from ingestion_assets.ml.events import latest_ml_state
from ingestion_assets.pool_wait import CLAIM_EVERY_S
from ingestion_assets.pools import set_pool_limits

from . import loopback
from .dagster_helpers import courier_resources, master_sheet_csv, sync_registry, sync_supplier
from .ml_server import RunningServer
from .test_ml_pipeline import FULL, PRICE_LIST, until

REPO = Path(__file__).resolve().parents[1]
ML_RESULT = AssetKey("ml_analysis_result")
CSV = "Код;Товар;Цена\nB-1;Молоток слесарный;450,00\n".encode("cp1251")


@pytest.fixture
def pg_home(postgres_server, tmp_path, monkeypatch, request):
    """A DAGSTER_HOME with the shipped dagster.yaml, on a fresh database of the test server."""
    test = request.node.name.lower()
    digest = hashlib.md5(test.encode(), usedforsecurity=False).hexdigest()[:8]
    db = "t_" + re.sub(r"\W", "_", test[:40]) + "_" + digest  # parametrized ids differ at the end
    postgres_server.create_database(db)
    for name, value in postgres_server.env(db).items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


def backend_pid(storage) -> int:
    with storage._engine.connect() as conn:
        return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()


def test_the_instance_keeps_a_connection_instead_of_opening_one_per_query(pg_home):
    """dagster-postgres alone opens a new connection (a forked server backend) per query."""
    with DagsterInstance.from_config(str(pg_home)) as instance:
        for storage in (
            instance.run_storage,
            instance.event_log_storage,
            instance.schedule_storage,
        ):
            first = backend_pid(storage)
            instance.get_runs()  # queries in between take the connection and give it back
            assert backend_pid(storage) == first, type(storage).__name__
        # Two at once (the daemon's threads): the second is opened on demand, nobody waits.
        engine = instance.event_log_storage._engine
        with engine.connect() as one, engine.connect() as two:
            pids = {c.exec_driver_sql("SELECT pg_backend_pid()").scalar() for c in (one, two)}
        assert len(pids) == 2


def test_instances_of_one_process_share_its_connection(pg_home):
    """The code server builds an instance per sensor tick: it must not connect each time."""
    with DagsterInstance.from_config(str(pg_home)) as first:
        pid = backend_pid(first.event_log_storage)
    with DagsterInstance.from_config(str(pg_home)) as second:
        assert backend_pid(second.event_log_storage) == pid
        assert backend_pid(second.run_storage) == pid


def drop_pooled_connection(pg_home, monkeypatch, ping_after: float):
    """An instance whose pooled connection the server has just ended, and its backend pid."""
    from ingestion_assets import instance_storage

    instance = DagsterInstance.from_config(str(pg_home))
    storage = instance.event_log_storage
    dropped = backend_pid(storage)
    admin = psycopg2.connect(storage.postgres_url)
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", (dropped,))
    finally:
        admin.close()
    monkeypatch.setattr(instance_storage, "PING_AFTER_IDLE_S", ping_after)
    time.sleep(0.05)
    return instance, dropped


def test_a_connection_the_server_dropped_while_idle_is_replaced(pg_home, monkeypatch):
    instance, dropped = drop_pooled_connection(pg_home, monkeypatch, ping_after=0.0)
    with instance:
        assert instance.get_runs() == []  # no error: the ping found it gone, a new one answered
        assert backend_pid(instance.event_log_storage) != dropped


def test_a_connection_used_a_moment_ago_is_not_pinged(pg_home, monkeypatch):
    """The price of not pinging before every query: a connection dropped within the idle
    window fails one query; the pool then replaces it."""
    from sqlalchemy.exc import OperationalError

    instance, dropped = drop_pooled_connection(pg_home, monkeypatch, ping_after=3600.0)
    with instance:
        with pytest.raises(OperationalError, match="server closed the connection"):
            instance.get_runs()
        assert instance.get_runs() == []
        assert backend_pid(instance.event_log_storage) != dropped


@contextmanager
def catalogue_queries():
    """The statements any engine of this process sends to PostgreSQL's catalogue meanwhile."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "pg_catalog" in statement or "information_schema" in statement:
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def test_the_schema_is_looked_up_once_per_process_and_a_missing_part_again(pg_home):
    """dagster-postgres inspects tables and columns before many queries, and whenever a
    storage is built (the code server builds an instance per sensor tick)."""
    with DagsterInstance.from_config(str(pg_home)) as instance:
        storage = instance.event_log_storage
        with catalogue_queries() as first:
            assert storage.has_asset_key_index_cols()
            assert instance.run_storage.has_run_stats_index_cols()
            assert storage.has_table("event_logs")
        assert first, "the first look asks the server"
    with catalogue_queries() as again, DagsterInstance.from_config(str(pg_home)) as instance:
        assert instance.event_log_storage.has_asset_key_index_cols()
        assert instance.run_storage.has_run_stats_index_cols()
        assert instance.event_log_storage.has_table("event_logs")
        instance.get_runs()
    assert again == [], "a second instance in the same process looks nothing up"
    for _ in range(2):
        with catalogue_queries() as missing:
            assert not storage.has_asset_key_col("added_by_a_later_migration")
        assert missing, "a part not found is looked for again"


def sensor_bookkeeping(instance: DagsterInstance) -> None:
    """What the daemon reads and writes around every sensor tick, and a run's index checks."""
    storage = instance.schedule_storage
    assert storage is not None
    assert storage.supports_batch_queries  # the instigators table and its selector index
    instance.all_instigator_state()
    instance.get_instigator_state("origin", "selector")
    storage.get_batch_ticks(["selector"], limit=1)
    instance.get_ticks("origin", "selector", limit=1)
    assert storage.has_secondary_index_table()
    assert instance.event_log_storage.has_secondary_index("asset_key_table")
    assert instance.run_storage.has_built_index("run_partitions")


def test_a_sensor_tick_does_not_ask_the_catalogue_once_the_process_has_seen_the_tables(pg_home):
    """Dagster's schedule storage asked for the table names at each read and write of a
    sensor's state and tick: a fifth of the daemon's CPU with six sensors ticking."""
    with catalogue_queries() as first, DagsterInstance.from_config(str(pg_home)) as instance:
        sensor_bookkeeping(instance)
        assert first, "the first look asks the server"
        with catalogue_queries() as again:
            sensor_bookkeeping(instance)
        assert again == [], "the same instance asks nothing twice"
    with catalogue_queries() as later, DagsterInstance.from_config(str(pg_home)) as instance:
        sensor_bookkeeping(instance)
    assert later == [], "nor does the next instance of the process (one per sensor tick)"


def test_a_step_waiting_for_a_pool_slot_sleeps_instead_of_spinning(pg_home):
    """Both ml_analyze slots are held by other runs for a few seconds: the run whose step waits
    for one must cost next to no CPU meanwhile (Dagster's own loop spins: pool_wait.py)."""
    hold_s = 4.0

    @asset(pool=pools.ML_ANALYZE)
    def submission() -> None:
        return None

    @asset
    def warm_up() -> None:
        return None

    with DagsterInstance.from_config(str(pg_home)) as instance:
        assert set_pool_limits(instance)[pools.ML_ANALYZE] == 2
        storage = instance.event_log_storage
        held = [("other-run", "a"), ("other-run", "b")]
        for run_id, step in held:
            assert storage.claim_concurrency_slot(pools.ML_ANALYZE, run_id, step).is_claimed
        assert materialize([warm_up], instance=instance).success  # first-run costs out of the way

        def free() -> None:
            for run_id, step in held:
                storage.free_concurrency_slot_for_step(run_id, step)

        timer = threading.Timer(hold_s, free)
        cpu, wall = time.thread_time(), time.monotonic()
        timer.start()
        result = materialize([submission], instance=instance)
        cpu, wall = time.thread_time() - cpu, time.monotonic() - wall
        timer.join()
        assert result.success
        blocked = [
            e
            for e in result.all_events
            if "blocked by limit for pool ml_analyze" in (e.message or "")
        ]
        assert blocked and wall >= hold_s, "the step waited for a slot"
        # Spinning costs about a core for the whole wait; asleep, only a few claims cost CPU.
        assert cpu < 1.0, f"{cpu:.2f} s of CPU in {wall:.1f} s of waiting for a pool slot"


def test_a_step_that_has_waited_long_still_asks_for_its_slot_every_second(pg_home):
    """Dagster spaces a waiting step's claims further apart each time, up to 15 s; a freed slot
    is assigned to the step that waited longest and idles until that step asks again. After a
    long wait the step still asks within a second, and takes the slot when it does."""
    with DagsterInstance.from_config(str(pg_home)) as instance:
        set_pool_limits(instance)
        storage = instance.event_log_storage
        held = [("other-run", "a"), ("other-run", "b")]
        for run_id, step in held:
            assert storage.claim_concurrency_slot(pools.ML_ANALYZE, run_id, step).is_claimed
        run = DagsterRun(job_name="supplier_sync", run_id=make_new_run_id())
        with InstanceConcurrencyContext(instance, run) as waiting:
            assert not waiting.claim(pools.ML_ANALYZE, "ml_analysis_result")
            # Thirty refused claims: where Dagster's back-off reaches 15 s (≈2.5 min of waiting).
            waiting._pending_claim_counts["ml_analysis_result"] = 30
            time.sleep(waiting.interval_to_next_pending_claim_check() + 0.05)  # due: it asks
            assert not waiting.claim(pools.ML_ANALYZE, "ml_analysis_result"), "still held"
            assert waiting.interval_to_next_pending_claim_check() <= CLAIM_EVERY_S
            for run_id, step in held:
                storage.free_concurrency_slot_for_step(run_id, step)
            time.sleep(waiting.interval_to_next_pending_claim_check() + 0.05)
            assert waiting.claim(pools.ML_ANALYZE, "ml_analysis_result"), "the freed slot"
            waiting.free_step("ml_analysis_result")


def test_the_pipeline_runs_on_the_postgres_instance(pg_home, server, tmp_path, ml_service):
    with DagsterInstance.from_config(str(pg_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        url = server.route("/alfa.xlsx", loopback.file_body(PRICE_LIST))
        master = server.route(
            "/master.csv",
            loopback.file_body(master_sheet_csv([["Alfa", url, "excel", "", ""]])),
        )
        resources = courier_resources(tmp_path, master, ml_url=ml_service.url)
        sync_registry(instance, resources)
        assert sync_supplier(instance, resources, "alfa", selection=FULL).success
        until(
            instance,
            resources["ml_analyze"],
            None,
            lambda r: r.asset_events and not r.run_requests,
        )
        [record] = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=ML_RESULT), limit=5
        ).records
        assert record.partition_key == "alfa"
        assert record.asset_materialization.metadata["items_total"].value == 3


def _wait_for(predicate, timeout: float, what: str, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
    return result


def test_daemon_syncs_on_start_and_waiting_submissions_go_once_ml_analyze_is_back(
    pg_home, server, tmp_path, free_port
):
    """ml-analyze is down when the first sync runs: the runs end with the submissions waiting
    (no run held, no run retry spent); ml-analyze comes back; the status sensor asks for the
    submissions, which finish without downloading again and with no click."""
    sources = {
        "alfa": server.route("/alfa.xlsx", loopback.file_body(PRICE_LIST)),
        "beta": server.route("/beta.csv", loopback.file_body(CSV)),
    }
    master = server.route(
        "/master.csv",
        loopback.file_body(
            master_sheet_csv(
                [
                    ["Alfa", sources["alfa"], "excel", "", ""],
                    ["Beta", sources["beta"], "csv", "", ""],
                ]
            )
        ),
    )
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - python_module:\n      module_name: ingestion_assets.definitions\n"
        f"      working_directory: {REPO}\n      location_name: ingestion_assets\n"
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(pg_home),
        "MASTER_SHEET_URL": master,
        "SSRF_ALLOWED_HOSTS": "127.0.0.1",
        "DOWNLOADS_DIR": str(tmp_path / "downloads"),
        "SHARED_UPLOADS_DIR": str(tmp_path / "shared"),
        "ML_ANALYZE_URL": f"http://127.0.0.1:{free_port}",
        "ML_POLL_INTERVAL_SECONDS": "2",
    }
    # As the deployment does before starting the daemon:
    subprocess.run(
        [sys.executable, "-m", "ingestion_assets", "set-pool-limits"], env=env, check=True
    )
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
        env=env,
        cwd=tmp_path,
        start_new_session=True,
        stdout=open(tmp_path / "daemon.log", "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    service = None
    try:
        with DagsterInstance.from_config(str(pg_home)) as instance:

            def waiting_suppliers():
                return {
                    key
                    for key in ("alfa", "beta")
                    if latest_ml_state(instance, key)[0] == "waiting"
                }

            _wait_for(
                lambda: waiting_suppliers() == {"alfa", "beta"},
                180,
                "both suppliers to wait for the missing ml-analyze",
            )
            [waiting] = [latest_ml_state(instance, "alfa")[1]]
            assert "Waiting for ml-analyze" in waiting.asset_observation.description
            assert not instance.get_runs(
                RunsFilter(job_name="supplier_sync", statuses=[DagsterRunStatus.FAILURE])
            )
            service = RunningServer(tmp_path / "ml.sqlite3", port=free_port)

            def analysed():
                records = instance.fetch_materializations(
                    AssetRecordsFilter(asset_key=ML_RESULT), limit=10
                ).records
                return {r.partition_key for r in records} == {"alfa", "beta"}

            _wait_for(analysed, 240, "both suppliers' analyses to complete")
            woken = instance.get_runs(
                RunsFilter(job_name="supplier_sync", tags={"courier/trigger": "ml_ready"})
            )
            assert sorted(r.tags["dagster/partition"] for r in woken) == ["alfa", "beta"]
            assert all(r.status == DagsterRunStatus.SUCCESS for r in woken)
            assert not instance.get_runs(RunsFilter(tags={"dagster/retry_number": "1"}))
            assert (
                server.hits["/alfa.xlsx"] == 1 and server.hits["/beta.csv"] == 1
            )  # nothing downloaded again
            assert server.hits["/master.csv"] == 1  # synced once at start, by itself
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        if service:
            service.stop()
