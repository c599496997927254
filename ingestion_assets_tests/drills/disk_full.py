"""Drill 4, disk full: the shared folder is a 256 KB tmpfs, nearly filled by an earlier sync's
files, now expired. One supplier's file does not fit at all; another's fits to the byte, but its
sidecar does not.

Through the daemon, like the other drills: each supplier must fail clearly ("No space left on
device") run after run (the run retries re-execute from the failed hand-off: the file is not
downloaded again), leaving no partial file and no file without its sidecar; the clean-up job,
launched as a user would, must remove the expired files only; the next master sync must then
succeed and reach ml-analyze.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from pathlib import Path

from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

from ingestion_assets.handoff.sidecar import SIDECAR_SUFFIX, FileMetadata

from .. import loopback
from .harness import (
    Courier,
    DrillFailed,
    MLService,
    Result,
    audit_shared_folder,
    ml_materializations,
    runs_by_status,
    statuses,
    summary,
    tmpfs,
    unsettled_runs,
    wait_for,
)
from .sources import master_sheet, price_list, slow_body

PAGE = 4096
SIZE = "256k"
FREE_PAGES = 4  # what the expired files leave free
OLD_S = 30 * 3600  # the expired files' age (FILE_CLEANUP_TTL_HOURS is 24)


def new_result() -> Result:
    return Result(
        drill="4 disk full",
        done=(
            f"shared folder on a {SIZE} tmpfs, {FREE_PAGES * 4} KB left free by an earlier sync's "
            "files (expired, 30 h old); the daemon syncs supplier A (a 64 KB file, cannot fit) and "
            "supplier B (fits to the byte, its sidecar cannot) and retries the failed runs; then "
            "the clean-up job and the master sync, each launched with `dagster job launch`"
        ),
        expected=(
            "A and B fail with 'No space left on device', retries too, without downloading again; "
            "no temp file, no file without sidecar; the clean-up removes the expired files only; "
            "the next sync succeeds and is analysed"
        ),
    )


def cause(detail: str) -> str:
    """The failure without its 'Supplier … , source …:' prefix."""
    return detail[detail.find("cannot write") :] if "cannot write" in detail else detail[-140:]


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def seed_expired(folder: Path, count: int = 3, size: int = 48 * 1024) -> list[str]:
    """An earlier sync's files with their sidecars, 30 h old, then a filler leaving FREE_PAGES."""
    names = []
    old = time.time() - OLD_S

    def put(name: str, data: bytes) -> None:
        path = folder / name
        path.write_bytes(data)
        os.utime(path, (old, old))
        names.append(name)

    for i in range(count + 1):
        supplier_id = str(uuid.uuid4())
        name = f"{supplier_id}_{int(old * 1000) + i}_old-prices-{i}.csv"
        # the sidecar first (one page), then the data: the last file takes all but FREE_PAGES
        data_size = size if i < count else free_bytes(folder) - PAGE - FREE_PAGES * PAGE
        data = b"x" * data_size
        put(name + SIDECAR_SUFFIX, sidecar_for(supplier_id, name, data))
        put(name, data)
    return names


def sidecar_for(supplier_id: str, name: str, data: bytes) -> bytes:
    return (
        FileMetadata(
            original_filename=name,
            source_url="http://127.0.0.1/old.csv",
            source_type="csv",
            supplier_id=supplier_id,
            supplier_name="An earlier supplier",
            file_type="csv",
            mime_type="text/csv",
            file_size_bytes=len(data),
            checksum_md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            downloaded_at="2026-01-01T00:00:00+00:00",
            downloaded_by="supplier-courier",
            job_id="an-earlier-run",
        )
        .model_dump_json(indent=2)
        .encode()
    )


def failures_by_supplier(instance) -> dict[str, list[str]]:
    """Every failed step's message, oldest first, per supplier partition."""
    found: dict[str, list[str]] = {}
    runs = instance.get_runs(RunsFilter(job_name="supplier_sync"))
    for run in sorted(runs, key=lambda r: int(r.tags.get("dagster/retry_number", "0"))):
        for record in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE):
            data = record.dagster_event.step_failure_data
            text = (data.user_failure_data.description if data.user_failure_data else None) or (
                data.error.message if data.error else ""
            )
            found.setdefault(run.tags.get("dagster/partition"), []).append(text)
    return found


def cleanup_report(instance) -> dict:
    [run] = instance.get_runs(RunsFilter(job_name="shared_file_cleanup"), limit=1)
    [output] = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_OUTPUT)
    metadata = output.dagster_event.step_output_data.metadata
    return {"status": run.status, **{k: v.value for k, v in metadata.items()}}


def run(ctx, result: Result) -> None:
    server = loopback.LoopbackServer()
    try:
        with tmpfs(ctx.root / "shared", SIZE) as shared:
            _run(ctx, result, server, shared)
    finally:
        server.close()


def _run(ctx, result: Result, server, shared: Path) -> None:
    body_a = price_list(1, 4, pad=64 * 1024 - len(price_list(1, 4)) - 1)
    base_b = price_list(2, 4)
    body_b = price_list(2, 4, pad=FREE_PAGES * PAGE - len(base_b) - 1)
    assert len(body_a) == 64 * 1024 and len(body_b) == FREE_PAGES * PAGE
    # B first, alone: its file takes the last free pages and its sidecar finds none. A's body
    # takes 4 s to arrive; 64 KB never fits.
    routes = {"supplier-a": "/a.csv", "supplier-b": "/b.csv"}
    rows = [
        [
            "Supplier A",
            server.route(routes["supplier-a"], slow_body(body_a, 4, 1.0)),
            "csv",
            "",
            "",
        ],
        [
            "Supplier B",
            server.route(routes["supplier-b"], loopback.file_body(body_b, "text/csv")),
            "csv",
            "",
            "",
        ],
    ]
    master = server.route("/master.csv", loopback.file_body(master_sheet(rows), "text/csv"))
    seeds = seed_expired(shared)
    free_before = free_bytes(shared)
    keys = sorted(routes)
    problems = result.problems

    ml = MLService(ctx.procs, ctx.root / "ml.sqlite3").start()
    courier = Courier(ctx.procs, ctx.root, master_sheet_url=master, ml_url=ml.url)
    assert courier.shared == shared
    courier.set_pool_limits()
    started = time.monotonic()
    courier.start_daemon()
    with courier.instance() as instance:
        # 1. The first sync (the daemon's, at start) on the full volume: every run fails, and the
        #    run retries too, until the daemon gives up.
        def first_sync_settled():
            if not courier.daemon_alive():
                raise DrillFailed("the daemon died during the drill")
            failed = failures_by_supplier(instance)
            return failed if set(failed) == set(keys) and not unsettled_runs(instance) else None

        failed = wait_for(first_sync_settled, ctx.remaining(120), "the first sync to give up")
        full_s = time.monotonic() - started
        first_runs = runs_by_status(instance, "supplier_sync")
        hits_first = {key: server.hits[route] for key, route in routes.items()}
        audit_full = audit_shared_folder(shared)
        left = sorted(set(os.listdir(shared)) - set(seeds))
        states = statuses(instance)
        for key in keys:
            if states[key].phase != "failed":
                problems.append(f"{key}: ends {states[key].phase!r} on a full disk, not failed")
            not_full = [m for m in failed[key] if "No space left on device" not in m]
            if not_full:
                problems.append(
                    f"{key}: a failure does not name the full disk: {not_full[0][:200]}"
                )
            if hits_first[key] != 1:
                problems.append(
                    f"{key}: downloaded {hits_first[key]} times, not once, by its retries"
                )
        if "taken back" not in failed["supplier-b"][0]:
            problems.append(
                f"B's first failure is not its sidecar's: {failed['supplier-b'][0][:200]}"
            )
        if left:
            problems.append(f"left on the full volume by the failed syncs: {left}")
        problems += audit_full["problems"]

        # 2. The clean-up job, launched by hand, removes the expired files.
        courier.launch("shared_file_cleanup")
        wait_for(
            lambda: (
                runs_by_status(instance, "shared_file_cleanup").get("SUCCESS")
                or runs_by_status(instance, "shared_file_cleanup").get("FAILURE")
            ),
            ctx.remaining(60),
            "the clean-up run",
            poll=1,
        )
        cleanup = cleanup_report(instance)
        removed = set(cleanup.get("removed", []))
        if cleanup["status"] != DagsterRunStatus.SUCCESS or removed != set(seeds):
            problems.append(
                f"the clean-up ({cleanup['status'].value}) removed {sorted(removed)}, expected the "
                f"{len(seeds)} expired files"
            )
        free_after_cleanup = free_bytes(shared)

        # 3. The next master sync, launched by hand: both suppliers reach ml-analyze.
        courier.launch("master_sync")
        wait_for(
            lambda: (
                len(instance.get_runs(RunsFilter(job_name="supplier_sync")))
                >= sum(first_runs.values()) + len(keys)
                and not unsettled_runs(instance)
            ),
            ctx.remaining(60),
            "the second sync's supplier runs",
            poll=2,
        )
        with contextlib.suppress(DrillFailed):  # a missing analysis is reported below
            wait_for(
                lambda: set(ml_materializations(instance)) >= set(keys),
                min(60, ctx.remaining(20)),
                "the second sync's analyses",
                poll=2,
            )
        analysed = ml_materializations(instance)
        final = statuses(instance)
        all_runs = runs_by_status(instance, "supplier_sync")
        for key in keys:
            if analysed[key] != 1:
                problems.append(f"{key}: {final[key].phase} after the clean-up, not analysed once")
    audit = audit_shared_folder(shared)
    problems += audit["problems"]
    if audit["counts"].get("files") != 2:
        problems.append(f"{audit['counts'].get('files')} files on the volume after the second sync")

    second_runs = {
        status: n - first_runs.get(status, 0)
        for status, n in all_runs.items()
        if n - first_runs.get(status, 0)
    }
    result.figures = {
        "volume": f"tmpfs {SIZE}; {len(seeds) // 2} expired files with sidecars "
        f"({(256 * 1024 - free_before) // 1024} KB); {free_before // 1024} KB free",
        "first sync (daemon, at start)": f"supplier_sync runs {summary(first_runs)} "
        f"(1 + run retries each); gave up after {full_s:.0f} s",
        "supplier A (64 KB)": f"{len(failed['supplier-a'])} failures, all naming the full disk: "
        f"«…{cause(failed['supplier-a'][0])}»",
        "supplier B (16 KB, fits; its sidecar does not)": f"{len(failed['supplier-b'])} failures; "
        f"the first: «…{cause(failed['supplier-b'][0])}»",
        "downloads across the retries": summary(hits_first),
        "left on the volume by the failures": f"{len(left)} files "
        f"(temp files {audit_full['counts'].get('temp_files', 0)}, files without sidecar "
        f"{audit_full['counts'].get('files_without_sidecar', 0)})",
        "clean-up (dagster job launch)": f"removed {len(removed)} of {len(seeds)} expired files, "
        f"freed {cleanup.get('bytes_freed', 0) // 1024} KB ({free_after_cleanup // 1024} KB free after)",
        "second sync (dagster job launch -j master_sync)": f"supplier_sync runs {summary(second_runs)}; "
        f"phases {summary({k: final[k].phase for k in keys})}; volume: {summary(audit['counts'])}",
    }
    full = sum(all("No space left on device" in m for m in failed[k]) for k in keys)
    result.observed = (
        f"{full}/2 failed run after run with 'No space left on device' ({sum(first_runs.values())} "
        f"runs, each source downloaded once; B's file taken back when its sidecar did not fit); "
        f"{len(left)} partial or sidecar-less files left; clean-up removed "
        f"{len(removed)}/{len(seeds)} expired files; next sync: {sum(analysed[k] == 1 for k in keys)}/2 analysed"
    )
    result.passed = not problems
