"""Drill 8, ml-analyze down for 10 minutes in the middle of a sync of 20 suppliers.

The daemon syncs 20 suppliers; once a few jobs are in ml-analyze and others are still to be
submitted, ml-analyze is SIGKILLed and kept down for ten minutes, then restarted on the same
port and database (it marks the jobs it lost as failed). Nobody clicks anything.

While it is down, the submissions that find it unreachable must wait (the partition says so)
without holding a run open, failing a run or spending a run retry. When it is back, the status
sensor must submit every waiting file and resubmit every interrupted job, once: every supplier
completes, no file is downloaded twice, no supplier has two live jobs.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import Counter

from dagster import DagsterRunStatus, RunsFilter

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
from .ml_restart import interrupted_jobs
from .sources import counted, master_sheet, price_list, serve_suppliers

SUPPLIERS = 20
ROWS = 20  # rows per price list; at ROW_DELAY_MS a job takes about 3 s
ROW_DELAY_MS = 150
MAX_JOBS = 2  # ml-analyze's --max-concurrent-jobs
DOWN_S = int(os.environ.get("DRILL_ML_OUTAGE_S", "600"))  # the ten minutes
WAIT_LIMIT_MIN = 15  # ML_WAIT_LIMIT_MINUTES: short (shipped: a day), longer than the outage
SAMPLE_S = 5


def _span(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def new_result() -> Result:
    return Result(
        drill=f"8 ml-analyze down {_span(DOWN_S)}",
        done=(
            f"{SUPPLIERS} suppliers synced by the daemon; ml-analyze (reference, separate process, "
            f"{MAX_JOBS} jobs at a time, {ROW_DELAY_MS} ms/row) SIGKILLed once jobs were under way "
            f"and suppliers still to be submitted, down {_span(DOWN_S)}, restarted on the same "
            f"port and database; ML_WAIT_LIMIT_MINUTES={WAIT_LIMIT_MIN}; no click"
        ),
        expected=(
            "submissions wait (shown as waiting, no run held, none failed, no run retry); once "
            "it is back every supplier completes, 0 re-downloads, 0 duplicate jobs"
        ),
    )


def run(ctx, result: Result) -> None:
    server = loopback.LoopbackServer()
    try:
        _run(ctx, result, server)
    finally:
        server.close()


def _run(ctx, result: Result, server) -> None:
    requests: Counter = Counter()
    names: dict[int, str] = {}

    def handler_for(i: int) -> loopback.Handler:
        names[i] = f"outage-supplier-{i:02d}"
        return counted(price_list(i, ROWS), requests, names[i])

    keys, rows = serve_suppliers(server, "Outage", SUPPLIERS, handler_for)
    by_supplier_id = {str(uuid.uuid5(SUPPLIER_NAMESPACE, k)): k for k in keys}
    master = server.route("/master.csv", loopback.file_body(master_sheet(rows), "text/csv"))

    ml = MLService(
        ctx.procs, ctx.root / "ml.sqlite3", row_delay_ms=ROW_DELAY_MS, max_jobs=MAX_JOBS
    ).start()
    courier = Courier(
        ctx.procs,
        ctx.root,
        master_sheet_url=master,
        ml_url=ml.url,
        extra_env={"ML_WAIT_LIMIT_MINUTES": str(WAIT_LIMIT_MIN)},
    )
    courier.set_pool_limits()
    started = time.monotonic()
    courier.start_daemon()
    with courier.instance() as instance:

        def under_way():
            """Jobs in ml-analyze, one of them processing, and suppliers still to submit."""
            jobs = ml.jobs()
            busy = any(j["status"] == "processing" for j in jobs)
            return busy and 3 <= len(jobs) < SUPPLIERS - 4 and jobs

        at_kill = wait_for(under_way, min(240, ctx.remaining(900)), "jobs under way", poll=0.5)
        done_at_kill = sum(ml_materializations(instance).values())
        ml.kill()
        killed_at = time.monotonic()

        # Ten minutes down: what the partitions show, and whether any run is failed or held.
        most_waiting, shown_waiting, failed_during = 0, set(), 0
        while time.monotonic() - killed_at < DOWN_S:
            if not courier.daemon_alive():
                raise DrillFailed("the daemon died during the outage")
            phases = statuses(instance)
            waiting = {k for k, s in phases.items() if s.phase == "waiting for ml-analyze"}
            shown_waiting |= waiting
            most_waiting = max(most_waiting, len(waiting))
            failed_during = len(instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE])))
            time.sleep(SAMPLE_S)
        held_at_return = len(unsettled_runs(instance, retry_wait_s=0))
        phases_at_return = Counter(s.phase for s in statuses(instance).values())
        ml.start()
        back_at = time.monotonic()

        def settled():
            if not courier.daemon_alive():
                raise DrillFailed("the daemon died after the outage")
            return set(keys) <= set(ml_materializations(instance)) and not unsettled_runs(instance)

        wait_for(
            settled, min(400, ctx.remaining(20)), "every supplier's analysis to complete", poll=2
        )
        recovered = time.monotonic() - back_at
        time.sleep(6)  # a few more sensor ticks: nothing more may be submitted
        per_partition = ml_materializations(instance)
        states = statuses(instance)
        runs = instance.get_runs(RunsFilter(job_name="supplier_sync"))
    jobs = ml.jobs()
    lost = {j["job_id"] for j in interrupted_jobs(ml)}

    triggers = Counter(r.tags.get("courier/trigger", "?") for r in runs)
    run_retries = [r for r in runs if "dagster/retry_number" in r.tags]
    failed_runs = [r for r in runs if r.status == DagsterRunStatus.FAILURE]
    live_jobs = Counter(
        by_supplier_id.get(j["supplier_id"]) for j in jobs if j["job_id"] not in lost
    )
    completed = Counter(
        by_supplier_id.get(j["supplier_id"])
        for j in jobs
        if j["status"] in ("completed", "completed_with_errors")
    )

    problems = result.problems
    if not shown_waiting:
        problems.append("no partition was shown waiting for ml-analyze during the outage")
    if held_at_return:
        problems.append(
            f"{held_at_return} runs still open or about to retry after {_span(DOWN_S)} down"
        )
    if failed_runs or failed_during:
        problems.append(
            f"{len(failed_runs)} supplier runs failed ({failed_during} during the outage)"
        )
    if run_retries:
        problems.append(f"{len(run_retries)} run retries spent")
    for key in keys:
        if per_partition[key] != 1:
            problems.append(f"{key}: {per_partition[key]} completed analyses recorded")
        if completed[key] != 1 or live_jobs[key] != 1:
            problems.append(
                f"{key}: {completed[key]} completed jobs, {live_jobs[key]} jobs not lost in the "
                "restart (1 and 1 expected)"
            )
        if requests[key] != 1:
            problems.append(f"{key}: its source was fetched {requests[key]} times")
        if not states[key].phase.startswith("complete"):
            problems.append(f"{key}: ends {states[key].phase} ({states[key].detail[:120]})")

    complete = sum(1 for k in keys if states[k].phase.startswith("complete"))
    result.figures = {
        "suppliers": SUPPLIERS,
        "at the kill": f"{summary(Counter(j['status'] for j in at_kill))} jobs in ml-analyze, "
        f"{done_at_kill} analyses recorded complete, "
        f"{SUPPLIERS - len(at_kill)} suppliers not yet submitted; "
        f"{killed_at - started:.0f} s after the daemon started",
        f"during the {_span(DOWN_S)} down": f"{len(shown_waiting)} suppliers shown 'waiting for "
        f"ml-analyze' (at most {most_waiting} at once); failed runs {failed_during}; at the "
        f"return: {held_at_return} runs open, phases {summary(phases_at_return)}",
        "jobs lost in the restart (marked failed by ml-analyze)": len(lost),
        "after the return": f"every supplier complete {recovered:.0f} s after ml-analyze was back",
        "supplier_sync runs by trigger": summary(triggers),
        "run retries": len(run_retries),
        "ml-analyze jobs": f"{len(jobs)} ({summary(Counter(j['status'] for j in jobs))}); "
        f"live jobs per supplier: max {max(live_jobs.values(), default=0)}",
        "source requests": f"{sum(requests.values())} for {SUPPLIERS} suppliers "
        f"(max {max(requests.values(), default=0)} per supplier)",
        "time": f"{time.monotonic() - started:.0f} s in all",
    }
    result.scaled = with_instance_change(
        f"ML_WAIT_LIMIT_MINUTES={WAIT_LIMIT_MIN} (default 1440), ML_POLL_INTERVAL_SECONDS=2 "
        "(default 5)"
    )
    result.observed = (
        f"{len(shown_waiting)} suppliers waited, 0 clicks; {complete}/{SUPPLIERS} complete "
        f"{recovered:.0f} s after the return; re-downloads "
        f"{sum(requests.values()) - SUPPLIERS}; duplicate jobs "
        f"{sum(max(0, n - 1) for n in live_jobs.values())}; failed runs {len(failed_runs)}, "
        f"run retries {len(run_retries)}"
    )
    result.passed = not problems


if __name__ == "__main__":
    sys.exit("run through python -m ingestion_assets_tests.drills ml-outage")
