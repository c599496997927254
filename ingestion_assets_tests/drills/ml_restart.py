"""Drill 2, ml-analyze killed mid-analysis: SIGKILL while jobs are pending and processing, down
for a few seconds, restarted on the same port and database (it marks the jobs it lost as failed).

Every affected job must be resubmitted by the ml status sensor and complete; no supplier may be
analysed twice for the same file once its analysis completed, not even by a second sync of the
same files.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import time
import uuid
from collections import Counter

from dagster import AssetKey, RunsFilter

from ingestion_assets.registry.identity import SUPPLIER_NAMESPACE

from .. import loopback
from .harness import (
    Courier,
    DrillFailed,
    MLService,
    Result,
    ml_materializations,
    statuses,
    summary,
    unsettled_runs,
    wait_for,
    with_instance_change,
)
from .sources import master_sheet, price_list, serve_suppliers

SUPPLIERS = 6
ROWS = 24  # rows per price list; with ROW_DELAY_MS a job takes about 7 s, one at a time
ROW_DELAY_MS = 300
MAX_JOBS = 1  # ml-analyze's --max-concurrent-jobs: later submissions wait as pending
DOWN_S = 6


def new_result() -> Result:
    return Result(
        drill="2 ml-analyze killed",
        done=(
            f"{SUPPLIERS} suppliers synced by the daemon; ml-analyze (reference, separate process, "
            f"{MAX_JOBS} job at a time, {ROW_DELAY_MS} ms/row) SIGKILLed while jobs were "
            "pending/processing, "
            f"down {DOWN_S} s, restarted on the same port and database; then a second sync of the "
            "same files"
        ),
        expected=(
            "every interrupted job resubmitted and completed; exactly one completed analysis per "
            "supplier; the second sync submits nothing"
        ),
    )


def interrupted_jobs(ml: MLService) -> list[dict]:
    with contextlib.closing(sqlite3.connect(ml.db, timeout=10)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT j.* FROM jobs j JOIN problems p ON p.job_id = j.job_id "
            "WHERE p.message LIKE 'Interrupted by a service restart%'"
        )
        return [dict(r) for r in rows]


def run(ctx, result: Result) -> None:
    server = loopback.LoopbackServer()
    try:
        _run(ctx, result, server)
    finally:
        server.close()


def _run(ctx, result: Result, server) -> None:
    keys, rows = serve_suppliers(
        server, "Restart", SUPPLIERS, lambda i: loopback.file_body(price_list(i, ROWS), "text/csv")
    )
    by_supplier_id = {str(uuid.uuid5(SUPPLIER_NAMESPACE, k)): k for k in keys}
    master = server.route("/master.csv", loopback.file_body(master_sheet(rows), "text/csv"))

    ml = MLService(
        ctx.procs, ctx.root / "ml.sqlite3", row_delay_ms=ROW_DELAY_MS, max_jobs=MAX_JOBS
    ).start()
    courier = Courier(ctx.procs, ctx.root, master_sheet_url=master, ml_url=ml.url)
    courier.set_pool_limits()
    started = time.monotonic()
    courier.start_daemon()
    with courier.instance() as instance:
        since = {}

        def mid_analysis():
            """A job processing, one already recorded complete, and at least one pending (or,
            if the submissions come slower than the analyses, 30 s of the first two)."""
            jobs = Counter(j["status"] for j in ml.jobs())
            if not (jobs["processing"] and ml_materializations(instance)):
                return False
            since.setdefault("t", time.monotonic())
            return (jobs["pending"] >= 1 or time.monotonic() - since["t"] > 30) and jobs

        at_kill = wait_for(
            mid_analysis, min(150, ctx.remaining(150)), "analyses to be under way", poll=0.5
        )
        done_at_kill = len(ml_materializations(instance))
        ml.kill()
        killed_at = time.monotonic()
        time.sleep(DOWN_S)
        ml.start()

        def settled():
            if not courier.daemon_alive():
                raise DrillFailed("the daemon died during the drill")
            return set(keys) <= set(ml_materializations(instance)) and not unsettled_runs(instance)

        wait_for(
            settled, min(300, ctx.remaining(90)), "every supplier's analysis to complete", poll=2
        )
        recovered = time.monotonic() - killed_at
        lost = interrupted_jobs(ml)
        jobs_first = ml.jobs()
        runs = instance.get_runs(RunsFilter(job_name="supplier_sync"))
        resubmissions = [r for r in runs if r.tags.get("courier/trigger") == "ml_resubmit"]
        replaced = {r.tags.get("courier/ml_replaces_job") for r in resubmissions}
        run_retries = [r for r in runs if "dagster/retry_number" in r.tags]

        # A second sync of the very same files: the analyses completed, nothing is submitted.
        courier.launch("master_sync")
        wait_for(
            lambda: (
                len(instance.fetch_materializations(AssetKey("supplier_registry"), limit=5).records)
                >= 2
            ),
            min(60, ctx.remaining(60)),
            "the second master sync",
            poll=2,
        )
        wait_for(
            lambda: (
                len(instance.get_runs(RunsFilter(job_name="supplier_sync")))
                >= len(runs) + SUPPLIERS
                and not unsettled_runs(instance)
            ),
            ctx.remaining(15),
            "the second sync's supplier runs",
            poll=2,
        )
        time.sleep(5)  # two more ticks of the ml status sensor
        second_runs = len(instance.get_runs(RunsFilter(job_name="supplier_sync"))) - len(runs)
        per_partition_after = ml_materializations(instance)
        states = statuses(instance)
    jobs_after = ml.jobs()

    problems = result.problems
    lost_keys = {by_supplier_id.get(j["supplier_id"]) for j in lost}
    if not lost:
        problems.append("no job was interrupted: the kill came too late or too early")
    missing = {j["job_id"] for j in lost} - replaced
    if missing:
        problems.append(f"interrupted jobs never resubmitted: {sorted(missing)}")
    completed = Counter(
        by_supplier_id.get(j["supplier_id"])
        for j in jobs_first
        if j["status"] in ("completed", "completed_with_errors")
    )
    for key in keys:
        if per_partition_after[key] != 1:
            problems.append(f"{key}: {per_partition_after[key]} completed analyses recorded")
        if completed[key] != 1:
            problems.append(f"{key}: ml-analyze completed {completed[key]} jobs for it")
        if not states[key].phase.startswith("complete"):
            problems.append(f"{key}: ends {states[key].phase} ({states[key].detail[:120]})")
    if len(jobs_after) != len(jobs_first):
        problems.append(
            f"the second sync submitted {len(jobs_after) - len(jobs_first)} new jobs for files "
            "already analysed"
        )

    result.figures = {
        "suppliers": SUPPLIERS,
        "at the kill": f"{summary(at_kill)} jobs in ml-analyze; {done_at_kill} analyses already "
        "recorded as complete",
        "jobs interrupted (marked failed by the restart)": f"{len(lost)}, of suppliers "
        f"{', '.join(sorted(k or '?' for k in lost_keys))}",
        "resubmission runs (ml status sensor)": f"{len(resubmissions)}; every interrupted job "
        f"replaced: {not missing}",
        "run retries (submissions that failed while ml-analyze was down)": len(run_retries),
        "ml-analyze jobs in all": f"{len(jobs_first)} before the second sync ({summary(Counter(j['status'] for j in jobs_first))}), "
        f"{len(jobs_after)} after it",
        "completed analyses per supplier": f"{sum(1 for k in keys if per_partition_after[k] == 1)} "
        f"of {SUPPLIERS} suppliers have exactly one ml_analysis_result materialization",
        "second sync": f"{second_runs} supplier runs, {len(jobs_after) - len(jobs_first)} new jobs",
        "time": f"{recovered:.0f} s from the kill to every analysis complete; "
        f"{time.monotonic() - started:.0f} s in all",
    }
    result.scaled = with_instance_change("ML_POLL_INTERVAL_SECONDS=2 (default 5)")
    result.observed = (
        f"{len(lost)} jobs interrupted, {len(lost) - len(missing)} resubmitted and completed; "
        f"{sum(1 for k in keys if per_partition_after[k] == 1)}/{SUPPLIERS} suppliers analysed "
        f"exactly once; second sync: {second_runs} runs, {len(jobs_after) - len(jobs_first)} new "
        f"jobs; recovered in {recovered:.0f} s"
    )
    result.passed = not problems


if __name__ == "__main__":
    sys.exit("run through python -m ingestion_assets_tests.drills ml-restart")
