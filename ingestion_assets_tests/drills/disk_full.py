"""Drill 4, disk full: the shared folder is a 256 KB tmpfs, nearly filled by an earlier sync's
files, now expired. One supplier's file does not fit at all; another's fits to the byte, but its
sidecar does not.

Each must fail clearly ("No space left on device") and leave no partial file and no file without
its sidecar; the clean-up job must remove the expired files; the next sync must succeed.
Runs in process on the PostgreSQL instance (materialize / execute_in_process, no daemon).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from pathlib import Path

from dagster import materialize

from ingestion_assets.courier.assets import raw_download, shared_file
from ingestion_assets.handoff import shared_volume
from ingestion_assets.handoff.sidecar import SIDECAR_SUFFIX, FileMetadata
from ingestion_assets.maintenance import shared_file_cleanup
from ingestion_assets.ml.assets import ml_analysis_result
from ingestion_assets.ml.events import latest_submission
from ingestion_assets.partitions import suppliers
from ingestion_assets.registry.assets import supplier_registry
from ingestion_assets.resources import (
    FetchResource,
    MasterSheetResource,
    MLAnalyzeResource,
    SharedVolumeResource,
)

from .. import loopback
from ..ml_server import RunningServer
from .harness import Courier, Result, audit_shared_folder, statuses, summary, tmpfs
from .sources import master_sheet, price_list

PAGE = 4096
SIZE = "256k"
FREE_PAGES = 4  # what the expired files leave free
OLD_S = 30 * 3600  # the expired files' age (FILE_CLEANUP_TTL_HOURS is 24)
ALL = [supplier_registry, raw_download, shared_file, ml_analysis_result]
FULL = [raw_download, shared_file, ml_analysis_result]


def new_result() -> Result:
    return Result(
        drill="4 disk full",
        done=(
            f"shared folder on a {SIZE} tmpfs, {FREE_PAGES * 4} KB left free by an earlier sync's "
            "files (expired, 30 h old); supplier A's 64 KB file cannot fit, supplier B's fits to the "
            "byte but its sidecar cannot; then the clean-up job, then the same sync again"
        ),
        expected=(
            "A and B fail with 'No space left on device'; no temp file, no file without sidecar; "
            "the clean-up removes the expired files only; the next sync succeeds and is analysed"
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


@contextlib.contextmanager
def watch_sidecar_writes():
    """Record the sidecar writes that fail (hand_off writes the data with atomic_copy, the
    sidecar with atomic_write): shows that B's data went in and was taken back."""
    original, failures = shared_volume.atomic_write, []

    def watched(target, chunks, expected_md5=None):
        try:
            return original(target, chunks, expected_md5)
        except OSError as exc:
            failures.append(f"{target.name}: {exc.strerror}")
            raise

    shared_volume.atomic_write = watched
    try:
        yield failures
    finally:
        shared_volume.atomic_write = original


def run(ctx, result: Result) -> None:
    server = loopback.LoopbackServer()
    ml = RunningServer(ctx.root / "ml.sqlite3")
    try:
        with tmpfs(ctx.root / "shared", SIZE) as shared:
            _run(ctx, result, server, ml, shared)
    finally:
        ml.stop()
        server.close()


def _run(ctx, result: Result, server, ml, shared: Path) -> None:
    body_a = price_list(1, 4, pad=64 * 1024 - len(price_list(1, 4)) - 1)
    base_b = price_list(2, 4)
    body_b = price_list(2, 4, pad=FREE_PAGES * PAGE - len(base_b) - 1)
    assert len(body_a) == 64 * 1024 and len(body_b) == FREE_PAGES * PAGE
    rows = [
        [
            "Supplier A",
            server.route("/a.csv", loopback.file_body(body_a, "text/csv")),
            "csv",
            "",
            "",
        ],
        [
            "Supplier B",
            server.route("/b.csv", loopback.file_body(body_b, "text/csv")),
            "csv",
            "",
            "",
        ],
    ]
    master = server.route("/master.csv", loopback.file_body(master_sheet(rows), "text/csv"))
    seeds = seed_expired(shared)
    free_before = free_bytes(shared)

    courier = Courier(ctx.procs, ctx.root, master_sheet_url=master, ml_url=ml.url)
    fetch = FetchResource(
        ssrf_allowed_hosts="127.0.0.1",
        downloads_dir=str(ctx.root / "downloads"),
        connect_timeout_seconds=2,
        read_timeout_seconds=2,
        download_deadline_seconds=20,
    )
    volume = SharedVolumeResource(uploads_dir=str(shared), cleanup_ttl_hours=24)
    resources = {
        "master_sheet": MasterSheetResource(url=master),
        "fetch": fetch,
        "shared_volume": volume,
        "ml_analyze": MLAnalyzeResource(url=ml.url),
    }
    keys = ["supplier-a", "supplier-b"]
    problems = result.problems
    with courier.instance() as instance:
        assert materialize([supplier_registry], instance=instance, resources=resources).success
        instance.add_dynamic_partitions(suppliers.name, keys)

        def sync(key: str):
            return materialize(
                ALL,
                selection=FULL,
                partition_key=key,
                instance=instance,
                resources=resources,
                raise_on_error=False,
            )

        with watch_sidecar_writes() as sidecar_failures:
            first = {key: sync(key) for key in keys}
        if len(sidecar_failures) != 1:
            problems.append(
                f"expected B's data to fit and its sidecar to fail; sidecar failures: {sidecar_failures}"
            )
        states = statuses(instance)
        audit_full = audit_shared_folder(shared)
        left = sorted(set(os.listdir(shared)) - set(seeds))
        for key in keys:
            if first[key].success:
                problems.append(f"{key}: the sync succeeded on a full disk")
            elif "No space left on device" not in states[key].detail:
                problems.append(
                    f"{key}: ends {states[key].phase!r}, not a failure naming the full disk: {states[key].detail[:200]}"
                )
        if left:
            problems.append(f"left on the full volume by the failed syncs: {left}")
        problems += audit_full["problems"]

        cleanup = shared_file_cleanup.execute_in_process(
            instance=instance, resources={"shared_volume": volume, "fetch": fetch}
        )
        [output] = [e for e in cleanup.all_events if e.is_successful_output]
        meta = {k: v.value for k, v in output.step_output_data.metadata.items()}
        removed = set(meta["removed"])
        if not cleanup.success or removed != set(seeds):
            problems.append(
                f"the clean-up removed {sorted(removed)}, expected the {len(seeds)} expired files"
            )
        free_after_cleanup = free_bytes(shared)

        second = {key: sync(key) for key in keys}
        for key in keys:
            if not second[key].success:
                problems.append(f"{key}: the sync after the clean-up failed")
        jobs = {key: latest_submission(instance, key) for key in keys}
        for key, job in jobs.items():
            if job is None:
                problems.append(f"{key}: not submitted to ml-analyze after the clean-up")
            else:
                status = ml.api.wait(job.job_id, timeout=60)
                if status["status"] != "completed":
                    problems.append(
                        f"{key}: ml-analyze ended {status['status']}: {status['errors'][:2]}"
                    )
        final = statuses(instance)
    audit = audit_shared_folder(shared)
    problems += audit["problems"]
    if audit["counts"].get("files") != 2:
        problems.append(f"{audit['counts'].get('files')} files on the volume after the second sync")

    messages = {k: states[k].detail for k in keys}
    result.figures = {
        "volume": f"tmpfs {SIZE}; {len(seeds) // 2} expired files with sidecars "
        f"({(256 * 1024 - free_before) // 1024} KB); {free_before // 1024} KB free",
        "supplier A (64 KB)": f"failed: «…{cause(messages['supplier-a'])}»",
        "supplier B (16 KB, fits; its sidecar does not)": f"failed: «…{cause(messages['supplier-b'])}»",
        "B's data written, then its sidecar refused, then the data taken back": (
            f"{len(sidecar_failures)} sidecar write failed ({'; '.join(sidecar_failures)[:160]})"
        ),
        "left on the volume by the failures": f"{len(left)} files "
        f"(temp files {audit_full['counts'].get('temp_files', 0)}, files without sidecar "
        f"{audit_full['counts'].get('files_without_sidecar', 0)})",
        "clean-up": f"removed {len(removed)} of {len(seeds)} expired files, freed "
        f"{meta['bytes_freed'] // 1024} KB ({free_after_cleanup // 1024} KB free after)",
        "second sync": f"{sum(r.success for r in second.values())}/2 succeeded; phases "
        f"{summary({k: final[k].phase for k in keys})}; volume: {summary(audit['counts'])}",
    }
    result.scaled = (
        "in process (materialize on the PostgreSQL instance, no daemon, so no run retries: the "
        "README counts a full disk as retryable)"
    )
    full = sum("No space left on device" in m for m in messages.values())
    result.observed = (
        f"{full}/2 failed with 'No space left on device' (B after its data was in: taken back); "
        f"{len(left)} partial or sidecar-less files left; clean-up removed {len(removed)}/{len(seeds)} "
        f"expired files; second sync {sum(r.success for r in second.values())}/2 succeeded and analysed"
    )
    result.passed = not problems
