"""Drill 6, clean-up under load: the clean-up job runs while the daemon is in the middle of a
sync, with analyses queued in ml-analyze.

Beside the sync's own files the shared folder holds an earlier sync's files (30 h old), stale
and fresh temp files and an orphan sidecar; during the sync two files whose analysis completed
and two whose analysis is still queued are aged to 30 h. The clean-up must remove exactly the
expired, finished files (and stale temp files, orphan sidecars, superseded staged copies), and
keep files in analysis whatever their age, fresh files, and each supplier's newest staged copy.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections import Counter
from pathlib import Path

from dagster import AssetKey, AssetRecordsFilter, DagsterRunStatus, RunsFilter

from ingestion_assets.handoff.atomic import TEMP_PREFIX
from ingestion_assets.handoff.sidecar import SIDECAR_SUFFIX, FileMetadata
from ingestion_assets.maintenance import shared_file_cleanup
from ingestion_assets.ml.events import latest_submission
from ingestion_assets.resources import FetchResource, SharedVolumeResource

from .. import loopback
from .harness import (
    Courier,
    DrillFailed,
    MLService,
    Result,
    audit_shared_folder,
    ml_materializations,
    statuses,
    summary,
    unsettled_runs,
    wait_for,
    with_instance_change,
)
from .sources import master_sheet, price_list, serve_suppliers, slow_body

SUPPLIERS = 8
ROWS = 30
ROW_DELAY_MS = 400  # 12 s per job, one job at a time: analyses queue up behind the downloads
SLOW = 2  # the last suppliers' sources drip for ~30 s: still downloading when the clean-up runs
OLD_S = 30 * 3600
ML = AssetKey("ml_analysis_result")


def new_result() -> Result:
    return Result(
        drill="6 clean-up under load",
        done=(
            f"{SUPPLIERS} suppliers synced by the daemon ({SLOW} of them from sources that drip for "
            "30 s), ml-analyze one job at a time; mid-sync, while those still download, "
            "the clean-up job runs over: an earlier sync's 6 files (30 h old), 2 stale and 1 fresh "
            "temp file, an orphan sidecar, 2 finished and 2 still-queued files aged to 30 h, "
            "superseded and sole staged copies"
        ),
        expected=(
            "removed: exactly the expired finished files with their sidecars, stale temp files, "
            "the orphan sidecar, the superseded staged copy; kept: files in analysis, fresh files, "
            "each supplier's newest staged copy; every analysis then completes on attempt 1"
        ),
    )


def age(path: Path, seconds: float = OLD_S) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def seed(shared: Path, downloads: Path) -> dict[str, list[str]]:
    """What was there before this sync: expected to go (`remove`) or to stay (`keep`)."""
    shared.mkdir(parents=True)
    remove, keep = [], []
    for i in range(6):
        supplier_id, data = str(uuid.uuid4()), f"old price list {i}\n".encode()
        name = f"{supplier_id}_{int((time.time() - OLD_S) * 1000)}_earlier-{i}.csv"
        meta = FileMetadata(
            original_filename=f"earlier-{i}.csv",
            source_url="http://127.0.0.1/earlier.csv",
            source_type="csv",
            supplier_id=supplier_id,
            supplier_name=f"Earlier {i}",
            file_type="csv",
            mime_type="text/csv",
            file_size_bytes=len(data),
            checksum_md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            downloaded_at="2026-01-01T00:00:00+00:00",
            downloaded_by="supplier-courier",
            job_id="an-earlier-run",
        )
        (shared / name).write_bytes(data)
        (shared / (name + SIDECAR_SUFFIX)).write_text(meta.model_dump_json(indent=2))
        age(shared / name)
        age(shared / (name + SIDECAR_SUFFIX))
        remove += [name, name + SIDECAR_SUFFIX]
    for name, seconds in ((f"{TEMP_PREFIX}stale1", 2 * 3600), (f"{TEMP_PREFIX}stale2", 5 * 3600)):
        (shared / name).write_bytes(b"half a file")
        age(shared / name, seconds)
        remove.append(name)
    (shared / f"{TEMP_PREFIX}fresh").write_bytes(b"a hand-off under way")
    keep.append(f"{TEMP_PREFIX}fresh")
    orphan = f"{uuid.uuid4()}_1_gone.csv{SIDECAR_SUFFIX}"
    (shared / orphan).write_text("{}")
    age(shared / orphan)
    remove.append(orphan)
    # Staging: a superseded copy of a supplier in this sync, and the sole copy of another one.
    for folder, name in (
        ("cleanup-supplier-00", "0" * 32 + ".csv"),
        ("gone-supplier", "f" * 32 + ".csv"),
    ):
        (downloads / folder).mkdir(parents=True)
        (downloads / folder / name).write_bytes(b"old;copy\n")
        age(downloads / folder / name)
    return {
        "remove": remove,
        "keep": keep,
        "staged_remove": ["0" * 32 + ".csv"],
        "staged_keep": ["f" * 32 + ".csv"],
    }


def run(ctx, result: Result) -> None:
    server = loopback.LoopbackServer()
    try:
        _run(ctx, result, server)
    finally:
        server.close()


def _run(ctx, result: Result, server) -> None:
    def source(i: int):
        body = price_list(i, ROWS)
        if i >= SUPPLIERS - SLOW:
            return slow_body(body, pieces=10, delay=3.0)
        return loopback.file_body(body, "text/csv")

    keys, rows = serve_suppliers(server, "Cleanup", SUPPLIERS, source)
    master = server.route("/master.csv", loopback.file_body(master_sheet(rows), "text/csv"))
    ml = MLService(
        ctx.procs, ctx.root / "ml.sqlite3", row_delay_ms=ROW_DELAY_MS, max_jobs=1
    ).start()
    courier = Courier(ctx.procs, ctx.root, master_sheet_url=master, ml_url=ml.url)
    seeded = seed(courier.shared, courier.downloads)
    courier.set_pool_limits()
    started = time.monotonic()
    courier.start_daemon()
    problems = result.problems
    with courier.instance() as instance:

        def mid_sync():
            finished = ml_materializations(instance)
            jobs = sorted(ml.jobs(), key=lambda j: j["created_at"])
            pending = [j for j in jobs if j["status"] == "pending"]
            recorded = []
            for job in pending[1:]:  # the first in the queue may start any moment
                key = next(k for k in keys if job["file_url"].split("/")[-1].startswith(_id(k)))
                sub = latest_submission(instance, key)
                if sub and sub.job_id == job["job_id"]:
                    recorded.append((key, sub))
            return len(finished) >= 2 and len(recorded) >= 2 and (finished, recorded)

        finished, queued = wait_for(
            mid_sync, min(300, ctx.remaining(120)), "analyses queued mid-sync", 0.5
        )
        aged_finished = []
        for key in sorted(finished)[:2]:
            [record] = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=ML, asset_partitions=[key]), limit=1
            ).records
            path = Path(record.asset_materialization.metadata["shared_path"].value)
            age(path)
            age(path.with_name(path.name + SIDECAR_SUFFIX))
            aged_finished.append(path.name)
        aged_queued = []
        for key, sub in queued[-2:]:
            path = Path(sub.shared_path)
            age(path)
            age(path.with_name(path.name + SIDECAR_SUFFIX))
            aged_queued.append((key, path.name))
        before = set(os.listdir(courier.shared))
        # The seeded staged copy is superseded once the supplier has downloaded its new one.
        superseded = (
            len([n for n in os.listdir(courier.downloads / "cleanup-supplier-00") if n[0] != "."])
            > 1
        )
        runs_going = [
            r
            for r in instance.get_runs(RunsFilter(job_name="supplier_sync"))
            if r.status not in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE)
        ]
        jobs_waiting = Counter(j["status"] for j in ml.jobs())
        if not runs_going:
            problems.append("no supplier run was still going: the clean-up did not run mid-sync")

        cleanup = shared_file_cleanup.execute_in_process(
            instance=instance,
            resources={
                "shared_volume": SharedVolumeResource(
                    uploads_dir=str(courier.shared), cleanup_ttl_hours=24
                ),
                "fetch": FetchResource(downloads_dir=str(courier.downloads)),
            },
        )
        [output] = [e for e in cleanup.all_events if e.is_successful_output]
        meta = {k: v.value for k, v in output.step_output_data.metadata.items()}
        removed = set(meta["removed"])
        after = set(os.listdir(courier.shared))

        expected = set(seeded["remove"])
        if superseded:
            expected |= set(seeded["staged_remove"])
        expected |= {n for name in aged_finished for n in (name, name + SIDECAR_SUFFIX)}
        if removed != expected:
            problems.append(
                f"removed but should have stayed: {sorted(removed - expected)}; "
                f"should have gone but stayed: {sorted(expected - removed)}"
            )
        kept_queued = [name for _, name in aged_queued if name in after]
        if len(kept_queued) != len(aged_queued):
            problems.append(f"files in analysis removed: {set(n for _, n in aged_queued) - after}")
        fresh_gone = (before - after) - expected
        if fresh_gone:
            problems.append(f"fresh files removed: {sorted(fresh_gone)}")
        for folder, name in (("gone-supplier", seeded["staged_keep"][0]),):
            if not (courier.downloads / folder / name).exists():
                problems.append("a supplier's sole staged copy was removed")

        def settled():
            if not courier.daemon_alive():
                raise DrillFailed("the daemon died during the drill")
            return set(keys) <= set(ml_materializations(instance)) and not unsettled_runs(instance)

        wait_for(settled, ctx.remaining(20), "every analysis to complete after the clean-up", 2)
        states = statuses(instance)
        per_partition = ml_materializations(instance)
        attempts = {}
        for key in keys:
            [record] = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=ML, asset_partitions=[key]), limit=1
            ).records
            attempts[key] = record.asset_materialization.metadata["attempt"].value
    audit = audit_shared_folder(courier.shared)
    for key in keys:
        if not states[key].phase.startswith("complete") or per_partition[key] != 1:
            problems.append(f"{key}: {states[key].phase}, {per_partition[key]} analyses")
    for key, _ in aged_queued:
        if attempts[key] != 1:
            problems.append(f"{key}: its queued file was analysed only on attempt {attempts[key]}")
    failed_jobs = [j for j in ml.jobs() if j["status"] == "failed"]
    if failed_jobs:
        problems.append(f"{len(failed_jobs)} ml-analyze jobs failed (file removed under them?)")
    for name in ("files_without_sidecar", "checksum_mismatches"):
        if audit["counts"].get(name):
            problems.append(f"shared folder: {audit['counts'][name]} {name.replace('_', ' ')}")

    result.figures = {
        "suppliers": SUPPLIERS,
        "during the clean-up": f"{len(runs_going)} supplier runs not finished, ml-analyze jobs "
        f"{summary(jobs_waiting)}",
        "shared folder before the clean-up": f"{len(before)} entries",
        "removed": f"{len(removed)} (expected {len(expected)}): {len(seeded['remove'])} seeded "
        f"(6 earlier files + 6 sidecars, 2 stale temp files, 1 orphan sidecar), "
        f"{2 * len(aged_finished)} aged finished files with sidecars, {int(superseded)} superseded "
        "staged copy",
        "kept": f"{meta['kept_in_use']} expired files in analysis (kept_in_use), the fresh temp "
        f"file: {TEMP_PREFIX + 'fresh' in after}, the sole staged copy of a gone supplier",
        "afterwards": f"phases {summary(Counter(states[k].phase for k in keys))}; attempts of the "
        f"kept files' analyses: {[attempts[k] for k, _ in aged_queued]}; ml-analyze failed jobs: "
        f"{len(failed_jobs)}; volume {summary(audit['counts'])}",
        "time": f"{time.monotonic() - started:.0f} s",
    }
    result.scaled = with_instance_change("ML_POLL_INTERVAL_SECONDS=2 (default 5)")
    result.observed = (
        f"removed {len(removed & expected)}/{len(expected)} expected and "
        f"{len(removed - expected)} others; {len(kept_queued)}/{len(aged_queued)} files in analysis "
        f"kept and analysed on attempt 1; {len(fresh_gone)} fresh files removed; "
        f"{sum(1 for k in keys if states[k].phase.startswith('complete'))}/{SUPPLIERS} complete "
        f"(clean-up ran with {len(runs_going)} runs unfinished)"
    )
    result.passed = not problems


def _id(key: str) -> str:
    from ingestion_assets.registry.identity import SUPPLIER_NAMESPACE

    return str(uuid.uuid5(SUPPLIER_NAMESPACE, key))
