"""Drill 3, the daemon and its code server killed in the middle of a sync: SIGKILL to the
daemon's whole process group (daemon, code server, the run workers it spawned) while runs are
downloading and analyses are outstanding; restarted a few seconds later.

The runs whose worker died must be detected (run monitoring) and retried, or finish; the
outstanding analyses must still be followed; nothing may stay "in progress".
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterRunStatus, RunsFilter

from ingestion_assets.ml.events import latest_submission

from .. import loopback
from .harness import (
    Courier,
    DrillFailed,
    MLService,
    Result,
    audit_shared_folder,
    ml_materializations,
    shipped_config,
    statuses,
    summary,
    unsettled_runs,
    wait_for,
    with_instance_change,
)
from .sources import master_sheet, price_list, serve_suppliers, slow_body

SUPPLIERS = 6
ROWS = 24
ROW_DELAY_MS = 300  # 7 s an analysis: analyses stay outstanding while runs download
DOWN_S = 3
# Supplier i's source drips for 8 + 4·i s. Runs that start together (a quick machine starts
# all six within a second) would otherwise end their downloads together, before the first
# analysis is submitted; staggered, later ones still download while the first are analysed.
DRIP_S = 8
DRIP_STEP_S = 4
# The drill's copy of dagster.yaml: a run whose worker died is failed (then retried) after
# 40 s instead of the shipped max_runtime of an hour, and the pool slots it held are freed 10 s
# later (shipped: 60 s).
RUN_MONITORING = {
    "start_timeout_seconds": 30,
    "cancel_timeout_seconds": 15,
    "max_runtime_seconds": 40,
    "poll_interval_seconds": 3,
    "free_slots_after_run_end_seconds": 10,
}
SHIPPED_MONITORING = shipped_config()["run_monitoring"]
POOLS = ("ml_analyze", "supplier_downloads")
ACTIVE = {DagsterRunStatus.STARTING, DagsterRunStatus.STARTED}


def new_result() -> Result:
    return Result(
        drill="3 daemon killed",
        done=(
            f"{SUPPLIERS} suppliers (slow-drip sources, {DRIP_S}–{DRIP_S + DRIP_STEP_S * (SUPPLIERS - 1)} s) synced by the daemon; SIGKILL to "
            "the daemon's process group (daemon, code server, run workers) while runs were "
            "downloading, a submission held an ml_analyze pool slot and analyses were "
            f"outstanding; restarted after {DOWN_S} s"
        ),
        expected=(
            "runs whose worker died are failed by run monitoring and retried, their pool slots "
            "freed; outstanding analyses still followed; every supplier ends complete, none left "
            "in progress"
        ),
    )


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return members


def held_slots(instance) -> Counter:
    """Pool slots claimed right now, per pool."""
    return Counter(
        {
            pool: len(instance.event_log_storage.get_concurrency_info(pool).claimed_slots)
            for pool in POOLS
        }
    )


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def run(ctx, result: Result) -> None:
    server = loopback.LoopbackServer()
    try:
        _run(ctx, result, server)
    finally:
        server.close()


def _run(ctx, result: Result, server) -> None:
    keys, rows = serve_suppliers(
        server,
        "Crash",
        SUPPLIERS,
        lambda i: slow_body(price_list(i, ROWS), pieces=DRIP_S + DRIP_STEP_S * i, delay=1.0),
    )
    master = server.route("/master.csv", loopback.file_body(master_sheet(rows), "text/csv"))

    ml = MLService(ctx.procs, ctx.root / "ml.sqlite3", row_delay_ms=ROW_DELAY_MS).start()
    courier = Courier(
        ctx.procs, ctx.root, master_sheet_url=master, ml_url=ml.url, run_monitoring=RUN_MONITORING
    )
    courier.set_pool_limits()
    started = time.monotonic()
    daemon = courier.start_daemon()
    with courier.instance() as instance:
        since = {}

        def mid_sync():
            """A run downloading while an analysis is outstanding; for up to 20 s more, also a
            submission under way (a worker killed there holds one of ml_analyze's 2 slots)."""
            runs = instance.get_runs(RunsFilter(job_name="supplier_sync"))
            active = [r for r in runs if r.status in ACTIVE]
            jobs = Counter(j["status"] for j in ml.jobs())
            if not active or jobs["pending"] + jobs["processing"] < 1:
                return False
            since.setdefault("t", time.monotonic())
            slots = held_slots(instance)
            submitting = slots["ml_analyze"] >= 1
            return (submitting or time.monotonic() - since["t"] > 20) and (runs, jobs, slots)

        runs_at_kill, jobs_at_kill, slots_at_kill = wait_for(
            mid_sync,
            min(150, ctx.remaining(120)),
            "runs downloading while analyses are outstanding",
            0.2,
        )
        members = group_members(daemon.pid)
        courier.kill_daemon()
        killed_at = time.monotonic()
        time.sleep(1)
        survivors = [pid for pid in members if alive(pid)]
        interrupted = {r.run_id: r for r in runs_at_kill if r.status in ACTIVE}
        outstanding_jobs = {
            j["job_id"]: j for j in ml.jobs() if j["status"] in ("pending", "processing")
        }
        recorded = {
            job.job_id
            for key in keys
            if (job := latest_submission(instance, key)) and job.job_id in outstanding_jobs
        }
        time.sleep(DOWN_S)
        courier.start_daemon()

        def settled():
            if not courier.daemon_alive():
                raise DrillFailed("the restarted daemon died")
            return set(keys) <= set(ml_materializations(instance)) and not unsettled_runs(instance)

        wait_for(settled, ctx.remaining(60), "every supplier to complete after the restart", 2)
        recovered = time.monotonic() - killed_at
        # The slots the killed workers held are freed by run monitoring, not left for good.
        slots_left = wait_for(
            lambda: (slots := held_slots(instance)) and not any(slots.values()) and slots,
            ctx.remaining(20),
            "the pool slots of the killed runs to be freed",
            2,
        )
        freed_after = time.monotonic() - killed_at
        states = statuses(instance)
        per_partition = ml_materializations(instance)
        runs = instance.get_runs(RunsFilter(job_name="supplier_sync"))
        by_parent = {r.tags.get("dagster/parent_run_id"): r for r in runs}
        fates, reasons = Counter(), {}
        for run_id in interrupted:
            run = instance.get_run_by_id(run_id)
            failure = instance.get_records_for_run(
                run_id, of_type=DagsterEventType.RUN_FAILURE
            ).records
            message = failure[0].event_log_entry.message if failure else ""
            started_steps, finished_steps = (
                len(instance.get_records_for_run(run_id, of_type=kind).records)
                for kind in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS)
            )
            fate = (
                "failed by run monitoring and retried"
                if run_id in by_parent
                else "failed by run monitoring, nothing to retry (its steps had all finished)"
                if started_steps and started_steps == finished_steps
                else f"{run.status.value.lower()}, not retried"
            )
            fates[fate] += 1
            reasons.setdefault(fate, message[:160])
        materialized_jobs = {}
        for key in keys:
            [record] = instance.fetch_materializations(
                AssetRecordsFilter(
                    asset_key=AssetKey("ml_analysis_result"), asset_partitions=[key]
                ),
                limit=1,
            ).records
            materialized_jobs[key] = record.asset_materialization.metadata["ml_job_id"].value
    audit = audit_shared_folder(courier.shared)
    ml_jobs = ml.jobs()
    jobs_per_supplier = Counter(Counter(j["supplier_id"] for j in ml_jobs).values())

    problems = result.problems
    if survivors:
        problems.append(f"{len(survivors)} processes of the daemon's group survived SIGKILL")
    if not interrupted:
        problems.append("no run was in flight at the kill")
    unfinished = [k for k in keys if not states[k].phase.startswith("complete")]
    for key in unfinished:
        problems.append(f"{key}: ends {states[key].phase} ({states[key].detail[:160]})")
    for key in keys:
        if per_partition[key] != 1:
            problems.append(f"{key}: {per_partition[key]} completed analyses recorded")
    followed = sum(1 for j in recorded if j in materialized_jobs.values())
    if followed != len(recorded):
        problems.append(
            f"recorded analyses not followed after the restart: {sorted(recorded - set(materialized_jobs.values()))}"
        )
    for name in ("files_without_sidecar", "checksum_mismatches"):
        if audit["counts"].get(name):
            problems.append(f"shared folder: {audit['counts'][name]} {name.replace('_', ' ')}")

    retries = [r for r in runs if "dagster/retry_number" in r.tags]
    result.figures = {
        "suppliers": SUPPLIERS,
        "at the kill": f"supplier runs {summary(Counter(r.status.value for r in runs_at_kill))}; "
        f"ml-analyze jobs {summary(jobs_at_kill)}",
        "processes killed (the daemon's process group)": f"{len(members)}, {len(survivors)} survived",
        "runs in flight at the kill, and their fate": "; ".join(
            f"{n} {fate} («{reasons[fate]}»)" for fate, n in fates.items()
        ),
        "run retries": len(retries),
        "pool slots held at the kill": f"{summary(slots_at_kill)}; all freed by run monitoring "
        f"{freed_after:.0f} s after the kill (now {summary(slots_left)})",
        "analyses outstanding at the kill": f"{len(outstanding_jobs)} in ml-analyze, "
        f"{len(recorded)} of them recorded by the courier, {followed} of these followed to their "
        f"materialization after the restart; {len(outstanding_jobs) - len(recorded)} unrecorded "
        "(the run was killed between ml-analyze's 202 and writing the submission: the documented "
        "residual window; the retry submitted again)",
        "ml-analyze jobs": f"{len(ml_jobs)} (jobs per supplier: {summary(jobs_per_supplier)})",
        "final phases": summary(Counter(states[k].phase for k in keys)),
        "shared folder": summary(audit["counts"]),
        "time": f"{recovered:.0f} s from the kill to every supplier complete; "
        f"{time.monotonic() - started:.0f} s in all",
    }
    result.scaled = with_instance_change(
        "run_monitoring "
        + ", ".join(f"{k}={v}" for k, v in RUN_MONITORING.items())
        + " in the drill's copy of dagster.yaml (shipped: "
        + ", ".join(str(SHIPPED_MONITORING.get(k)) for k in RUN_MONITORING)
        + ") so that a run whose worker died is failed, its slots freed and the run retried "
        "within the drill"
    )
    result.observed = (
        f"{len(members)} processes killed; {len(interrupted)} runs in flight: "
        + ", ".join(f"{n} {fate}" for fate, n in fates.items())
        + "; "
        f"pool slots held by killed runs ({summary(slots_at_kill)}) freed; "
        f"{followed}/{len(recorded)} recorded outstanding analyses followed to completion; "
        f"{SUPPLIERS - len(unfinished)}/{SUPPLIERS} complete, analysed once each; "
        f"recovered in {recovered:.0f} s"
    )
    result.passed = not problems
