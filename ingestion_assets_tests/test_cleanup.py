"""Clean-up of the shared folder and of the staging folder, with file ages set by os.utime."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from ingestion_assets.handoff.atomic import TEMP_PREFIX
from ingestion_assets.handoff.cleanup import (
    STALE_TEMP_SECONDS,
    clean_shared_folder,
    clean_staging_folder,
)
from ingestion_assets.handoff.sidecar import SIDECAR_SUFFIX
from ingestion_assets.staging import PART_PREFIX

from .conftest import needs

NOW = 1_750_000_000.0
HOUR = 3600


def put(folder: Path, name: str, size: int, age_s: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"z" * size)
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


def put_pair(folder: Path, name: str, size: int, age_s: float, sidecar_size: int = 300):
    return put(folder, name, size, age_s), put(folder, name + SIDECAR_SUFFIX, sidecar_size, age_s)


def names(folder: Path) -> set[str]:
    return set(os.listdir(folder))


def test_expired_files_go_with_their_sidecars_fresh_ones_stay(tmp_path):
    old, old_side = put_pair(tmp_path, "s1_1000_old.csv", 1000, 25 * HOUR, 311)
    older, older_side = put_pair(tmp_path, "s2_1000_older.xlsx", 5000, 100 * HOUR, 307)
    fresh, fresh_side = put_pair(tmp_path, "s1_2000_fresh.csv", 700, 23 * HOUR)

    report = clean_shared_folder(tmp_path, ttl_hours=24, now=NOW)

    assert names(tmp_path) == {fresh.name, fresh_side.name}
    assert sorted(report.removed) == sorted([old.name, old_side.name, older.name, older_side.name])
    assert report.bytes_freed == 1000 + 311 + 5000 + 307
    assert report.errors == [] and report.kept_in_use == []


def test_the_ttl_is_a_setting(tmp_path):
    put_pair(tmp_path, "s1_1_a.csv", 10, 2 * HOUR)

    assert clean_shared_folder(tmp_path, ttl_hours=3, now=NOW).removed == []
    assert len(clean_shared_folder(tmp_path, ttl_hours=1, now=NOW).removed) == 2
    assert names(tmp_path) == set()


def test_files_in_use_are_kept_even_when_expired(tmp_path):
    busy, busy_side = put_pair(tmp_path, "s1_1_busy.csv", 100, 48 * HOUR)
    idle, _ = put_pair(tmp_path, "s1_2_idle.csv", 100, 48 * HOUR)
    asked: list[str] = []

    def in_use(path: Path) -> bool:
        asked.append(path.name)
        return path.name == busy.name

    report = clean_shared_folder(tmp_path, ttl_hours=24, in_use=in_use, now=NOW)

    assert names(tmp_path) == {busy.name, busy_side.name}
    assert report.kept_in_use == [busy.name]
    assert idle.name in report.removed
    assert not any(name.endswith(SIDECAR_SUFFIX) for name in asked)  # asked about data files


def test_stale_temp_files_go_fresh_ones_stay(tmp_path):
    stale_tmp = put(tmp_path, TEMP_PREFIX + "abc", 4096, STALE_TEMP_SECONDS + 60)
    stale_part = put(tmp_path, PART_PREFIX + "def", 8192, 2 * HOUR)
    fresh_tmp = put(tmp_path, TEMP_PREFIX + "ghi", 10, 30 * 60)  # a hand-off under way
    fresh_part = put(tmp_path, PART_PREFIX + "jkl", 10, 59 * 60)

    report = clean_shared_folder(tmp_path, ttl_hours=24, now=NOW)

    assert names(tmp_path) == {fresh_tmp.name, fresh_part.name}
    assert sorted(report.removed) == sorted([stale_tmp.name, stale_part.name])
    assert report.bytes_freed == 4096 + 8192


def test_temp_files_go_after_an_hour_even_with_a_long_ttl(tmp_path):
    put(tmp_path, TEMP_PREFIX + "x", 1, 2 * HOUR)
    assert clean_shared_folder(tmp_path, ttl_hours=1000, now=NOW).removed == [TEMP_PREFIX + "x"]


def test_orphan_sidecars_go(tmp_path):
    orphan = put(tmp_path, "s1_1_gone.csv" + SIDECAR_SUFFIX, 250, 30 * HOUR)
    kept, kept_side = put_pair(tmp_path, "s1_2_kept.csv", 10, 1 * HOUR)

    report = clean_shared_folder(tmp_path, ttl_hours=24, now=NOW)

    assert report.removed == [orphan.name]
    assert report.bytes_freed == 250
    assert names(tmp_path) == {kept.name, kept_side.name}


def test_an_old_sidecar_of_a_fresh_file_stays(tmp_path):
    data = put(tmp_path, "s1_1_a.csv", 10, 1 * HOUR)
    side = put(tmp_path, "s1_1_a.csv" + SIDECAR_SUFFIX, 10, 48 * HOUR)

    assert clean_shared_folder(tmp_path, ttl_hours=24, now=NOW).removed == []
    assert names(tmp_path) == {data.name, side.name}


def test_folders_are_left_alone_and_a_missing_root_is_fine(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    os.utime(sub, (NOW - 99 * HOUR, NOW - 99 * HOUR))

    assert clean_shared_folder(tmp_path, ttl_hours=1, now=NOW).removed == []
    assert sub.is_dir()
    report = clean_shared_folder(tmp_path / "missing", ttl_hours=1, now=NOW)
    assert report.removed == [] and report.bytes_freed == 0


def test_the_default_clock_is_now(tmp_path):
    old = put(tmp_path, "s1_1_a.csv", 10, 0)
    os.utime(old, (time.time() - 48 * HOUR,) * 2)
    fresh = tmp_path / "s1_2_b.csv"
    fresh.write_bytes(b"x")

    report = clean_shared_folder(tmp_path, ttl_hours=24)

    assert report.removed == [old.name]
    assert names(tmp_path) == {fresh.name}


def test_bytes_freed_adds_up_exactly(tmp_path):
    sizes = [0, 1, 4095, 4096, 123_457]
    for i, size in enumerate(sizes):
        put_pair(tmp_path, f"s{i}_1_f.csv", size, 30 * HOUR, sidecar_size=100 + i)
    put(tmp_path, PART_PREFIX + "p", 777, 3 * HOUR)

    report = clean_shared_folder(tmp_path, ttl_hours=24, now=NOW)

    assert report.bytes_freed == sum(sizes) + sum(100 + i for i in range(len(sizes))) + 777
    assert len(report.removed) == 2 * len(sizes) + 1
    assert names(tmp_path) == set()


# --- staging ----------------------------------------------------------------------------------


def test_staging_keeps_each_suppliers_newest_copy_even_expired(tmp_path):
    a = tmp_path / "supplier-a"
    a_newest = put(a, "aaa.xlsx", 100, 50 * HOUR)
    a_old = put(a, "bbb.xlsx", 200, 60 * HOUR)
    a_older = put(a, "ccc.csv", 300, 70 * HOUR)
    b = tmp_path / "supplier-b"
    b_only = put(b, "ddd.csv", 400, 500 * HOUR)
    c = tmp_path / "supplier-c"
    c_new = put(c, "eee.csv", 10, 1 * HOUR)
    c_recent = put(c, "fff.csv", 10, 2 * HOUR)  # not the newest, but not expired either

    report = clean_staging_folder(tmp_path, ttl_hours=24, now=NOW)

    assert names(a) == {a_newest.name}
    assert names(b) == {b_only.name}
    assert names(c) == {c_new.name, c_recent.name}
    assert sorted(report.removed) == sorted([a_old.name, a_older.name])
    assert report.bytes_freed == 500


def test_staging_temp_files_are_never_the_newest_copy(tmp_path):
    a = tmp_path / "supplier-a"
    part = put(a, PART_PREFIX + "x", 50, 2 * HOUR)  # newer than the real file, but abandoned
    real = put(a, "aaa.csv", 100, 30 * HOUR)
    fresh_part = put(a, PART_PREFIX + "y", 50, 60)  # a download under way

    report = clean_staging_folder(tmp_path, ttl_hours=24, now=NOW)

    assert names(a) == {real.name, fresh_part.name}
    assert report.removed == [part.name]
    assert report.bytes_freed == 50


def test_staging_ignores_loose_files_and_a_missing_folder(tmp_path):
    loose = put(tmp_path, "loose.csv", 1, 100 * HOUR)
    assert clean_staging_folder(tmp_path, ttl_hours=1, now=NOW).removed == []
    assert loose.exists()
    assert clean_staging_folder(tmp_path / "missing", ttl_hours=1, now=NOW).removed == []


def test_files_that_cannot_be_removed_are_reported_not_counted(tmp_path):
    """A real read-only filesystem (a tmpfs remounted read-only): nothing removed, each failure
    reported, no bytes counted as freed."""
    folder = tmp_path / "mnt"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        needs("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)]).returncode:
        needs("mount is not permitted here")
    try:
        put_pair(folder, "s1_1_old.csv", 100, 48 * HOUR)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)

        report = clean_shared_folder(folder, ttl_hours=24, now=NOW)

        assert report.removed == []
        assert report.bytes_freed == 0
        assert set(report.errors) == {
            "s1_1_old.csv: Read-only file system",
            "s1_1_old.csv.meta.json: Read-only file system",
        }
        assert names(folder) == {"s1_1_old.csv", "s1_1_old.csv" + SIDECAR_SUFFIX}
    finally:
        subprocess.run(["umount", str(folder)], check=False)
