"""Orchestration overhead and status latency, through the real daemon and run launcher on the
shipped PostgreSQL instance config.

    .venv/bin/python benchmarks/orchestration.py [--suppliers 100] [--latency-suppliers 20]

1. floor: BENCH_RUNS runs of an empty partitioned asset (benchmarks/empty_location.py), once
   before the courier and once after it: the ratio is against their mean, so that a host
   whose load drifts during the benchmark moves both sides of it alike;
2. courier: a master sync of N suppliers with 100 KB files (ML processing off, so the figure
   is the courier's own: fetch, hand-off, the ML step deciding to stop); then a re-sync of the
   same N suppliers, unchanged, from sources that honour validators (ETag: 304, no body);
3. status latency: M suppliers with ML on against the reference ml-analyze (own process);
   for each, ml-analyze's completed_at → the ml_analysis_result materialization.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterRunStatus,
    RunsFilter,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import compile_as_installed  # noqa: E402
from benchmarks.daemon import Daemon, free_port, wait_for  # noqa: E402
from ingestion_assets_tests import loopback  # noqa: E402
from ingestion_assets_tests.dagster_helpers import master_sheet_csv  # noqa: E402
from ingestion_assets_tests.postgres import PostgresServer  # noqa: E402

DONE = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def price_list(rows: int) -> bytes:
    lines = ["Артикул;Наименование;Цена"] + [
        f"A-{i};Дрель ударная модель {i};{1000 + i},50" for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def runs_of(instance, job: str, expected: int, timeout: float):
    def finished():
        records = instance.get_run_records(RunsFilter(job_name=job))
        done = [r for r in records if r.dagster_run.status in DONE]
        return done if len(done) >= expected else None

    return wait_for(finished, timeout, f"{expected} {job} runs", poll=1.0)


def span(records, since: float | None = None) -> float:
    start = since if since is not None else min(r.create_timestamp.timestamp() for r in records)
    return max(r.end_time for r in records) - start


def pool_waits(instance, run_ids: set[str]) -> dict[str, int]:
    """Per pool, how many steps of these runs waited for a slot (Dagster's engine event)."""
    waited: dict[str, set[tuple[str, str]]] = {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
            message = entry.dagster_event.message or ""
            if message.startswith("Step blocked by limit for pool "):
                pool = message.rsplit(" ", 1)[1]
                waited.setdefault(pool, set()).add((run_id, entry.step_key or ""))
    return {pool: len(steps) for pool, steps in sorted(waited.items())}


def floor_phase(postgres, root: Path, n: int, name: str) -> float:
    daemon = Daemon(
        postgres,
        f"bench_{name}",
        root / name,
        "benchmarks.empty_location",
        REPO,
        {"BENCH_RUNS": str(n)},
    )
    try:
        with daemon.instance() as instance:
            records = runs_of(instance, "empty_job", n, 900)
            assert all(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in records)
            return span(records)
    finally:
        daemon.stop()


def courier_env(root: Path, master: str, ml_url: str, use_ml: bool) -> dict:
    return {
        "MASTER_SHEET_URL": master,
        "SSRF_ALLOWED_HOSTS": "127.0.0.1",
        "DOWNLOADS_DIR": str(root / "downloads"),
        "SHARED_UPLOADS_DIR": str(root / "shared"),
        "ML_ANALYZE_URL": ml_url,
        "USE_ML_PROCESSING": "true" if use_ml else "false",
    }


def suppliers_env(server, root: Path, n: int) -> dict:
    """The courier's environment for a master sheet of n suppliers with 100 KB files on the
    loopback server, ML off (figure 2's setting, as run_cost.py and cpu_by_process.py use it)."""
    body = price_list(2600)
    rows = [
        [f"Supplier {i:03d}", server.route(f"/s{i}.csv", loopback.file_body(body)), "csv", "", ""]
        for i in range(n)
    ]
    master = server.route("/master.csv", loopback.file_body(master_sheet_csv(rows)))
    return courier_env(root, master, "http://127.0.0.1:9", use_ml=False)


def courier_phase(postgres, server, root: Path, n: int) -> dict:
    """A first sync of n suppliers, then a re-sync of the same, unchanged: run spans, and the
    body bytes the sources sent for each."""
    body = price_list(2600)  # ≈ 100 KB
    sources = [loopback.ConditionalFile(body, etag=f'"s{i}-v1"') for i in range(n)]
    rows = [
        [f"Supplier {i:03d}", server.route(f"/s{i}.csv", source), "csv", "", ""]
        for i, source in enumerate(sources)
    ]
    master = server.route("/master-courier.csv", loopback.file_body(master_sheet_csv(rows)))
    env = courier_env(root, master, "http://127.0.0.1:9", use_ml=False)
    daemon = Daemon(
        postgres, "bench_courier", root / "courier", "ingestion_assets.definitions", REPO, env
    )
    try:
        with daemon.instance() as instance:
            first = runs_of(instance, "supplier_sync", n, 900)
            failed = [r for r in first if r.dagster_run.status != DagsterRunStatus.SUCCESS]
            assert not failed, f"{len(failed)} supplier runs failed"
            [sync] = instance.get_run_records(RunsFilter(job_name="master_sync"))
            first_bytes = sum(s.bytes_sent for s in sources)
            daemon.launch("master_sync")
            records = runs_of(instance, "supplier_sync", 2 * n, 900)
            first_ids = {r.dagster_run.run_id for r in first}
            again = [r for r in records if r.dagster_run.run_id not in first_ids]
            failed = [r for r in again if r.dagster_run.status != DagsterRunStatus.SUCCESS]
            assert not failed, f"{len(failed)} re-sync runs failed"
            return {
                "runs": span(first),
                "whole": span(first, sync.create_timestamp.timestamp()),
                "first_bytes": first_bytes,
                "resync": span(again),
                "resync_bytes": sum(s.bytes_sent for s in sources) - first_bytes,
                "not_modified": sum(1 for s in sources if len(s.asked) == 2 and s.asked[1]),
                "pool_waits": pool_waits(instance, first_ids),
            }
    finally:
        daemon.stop()


def latency_phase(postgres, server, root: Path, m: int) -> list[float]:
    ml_port = free_port()
    ml = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ml_analyze_reference",
            "--port",
            str(ml_port),
            "--db",
            str(root / "ml.sqlite3"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    body = price_list(50)
    rows = [
        [f"Latency {i:02d}", server.route(f"/l{i}.csv", loopback.file_body(body)), "csv", "", ""]
        for i in range(m)
    ]
    master = server.route("/master-latency.csv", loopback.file_body(master_sheet_csv(rows)))
    env = courier_env(root, master, f"http://127.0.0.1:{ml_port}", use_ml=True)
    daemon = Daemon(
        postgres, "bench_latency", root / "latency", "ingestion_assets.definitions", REPO, env
    )
    try:
        with daemon.instance() as instance:
            key = AssetKey("ml_analysis_result")

            def all_materialized():
                records = instance.fetch_materializations(
                    AssetRecordsFilter(asset_key=key), limit=m + 10
                ).records
                return records if len({r.partition_key for r in records}) >= m else None

            records = wait_for(all_materialized, 600, f"{m} analyses")
            latencies = []
            for record in records:
                completed = record.asset_materialization.metadata["ml_completed_at"].value
                finished = dt.datetime.fromisoformat(completed.replace("Z", "+00:00")).timestamp()
                latencies.append(record.timestamp - finished)
            return latencies
    finally:
        daemon.stop()
        os.killpg(ml.pid, 15)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--suppliers", type=int, default=100)
    parser.add_argument("--latency-suppliers", type=int, default=20)
    args = parser.parse_args()
    compile_as_installed()
    root = Path(tempfile.mkdtemp(prefix="courier-orch-"))
    postgres = PostgresServer()
    server = loopback.LoopbackServer()
    try:
        started = time.monotonic()
        floor_before = floor_phase(postgres, root, args.suppliers, "floor_before")
        courier = courier_phase(postgres, server, root, args.suppliers)
        floor_after = floor_phase(postgres, root, args.suppliers, "floor_after")
        latencies = latency_phase(postgres, server, root, args.latency_suppliers)
        total = time.monotonic() - started
    finally:
        server.close()
        postgres.stop()
    n = args.suppliers
    floor = (floor_before + floor_after) / 2
    runs, whole = courier["runs"], courier["whole"]
    poll = int(os.environ.get("ML_POLL_INTERVAL_SECONDS", "5"))
    print(
        f"floor: {n} runs of an empty partitioned asset          {floor:7.1f} s   {n / floor * 60:6.1f} runs/min"
        f"   (mean of {floor_before:.1f} s before the courier and {floor_after:.1f} s after it)"
    )
    print(
        f"courier: {n} supplier runs (100 KB files, ML off)      {runs:7.1f} s   {n / runs * 60:6.1f} suppliers/min"
    )
    ratio = runs / floor
    print(
        f"ratio courier / floor                                 {ratio:7.2f}   goal ≤ 1.2: {'met' if ratio <= 1.2 else 'MISSED'}"
    )
    waits = ", ".join(f"{pool} {count}" for pool, count in courier["pool_waits"].items())
    print(f"courier: steps that waited for a pool slot            {waits or 'none'}")
    print(
        f"courier: whole sync, master sheet read included       {whole:7.1f} s   {n / whole * 60:6.1f} suppliers/min"
    )
    resync = courier["resync"]
    print(
        f"re-sync: {n} unchanged suppliers (ETag, 304)          {resync:7.1f} s   "
        f"{resync / floor:.2f}× the floor, {resync / runs:.2f}× the first sync"
    )
    print(
        f"body bytes sent by the sources: first sync {courier['first_bytes'] / 1e6:.1f} MB, "
        f"re-sync {courier['resync_bytes']} B ({courier['not_modified']}/{n} asked with "
        "If-None-Match)"
    )
    worst, median = max(latencies), statistics.median(latencies)
    print(
        f"status latency, {len(latencies)} analyses: median / max          {median:5.1f} / {worst:4.1f} s   "
        f"goal ≤ {poll} + 2 s: {'met' if worst <= poll + 2 else 'MISSED'}"
    )
    print(f"benchmark wall time                                   {total:7.1f} s")


if __name__ == "__main__":
    main()
