"""The hand-off onto the shared volume: name, bytes, sidecar, reuse, and failing cleanly when the
folder cannot take the file (a read-only or a full filesystem, for real)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ingestion_assets.handoff.atomic import TEMP_PREFIX
from ingestion_assets.handoff.naming import MAX_NAME_BYTES
from ingestion_assets.handoff.shared_volume import HandOffError, SharedVolume, sidecar_path
from ingestion_assets.handoff.sidecar import SIDECAR_SUFFIX, FileMetadata

from .conftest import needs

SUPPLIER_ID = "0b6a1c8e-5a59-5d0e-9d43-4d3c3f0b2a10"
OTHER_SUPPLIER_ID = "6f1d2c3b-aaaa-5bbb-8ccc-123456789abc"
BODY = "Артикул;Цена\r\nА-1;10,5\r\n".encode("cp1251")


def metadata_for(
    data: bytes, supplier_id=SUPPLIER_ID, name="Прайс май.csv", **overrides
) -> FileMetadata:
    fields = {
        "original_filename": name,
        "source_url": "https://REDACTED@example.com/prices.csv?token=REDACTED",
        "source_type": "http",
        "supplier_id": supplier_id,
        "supplier_name": "ООО «Ромашка»",
        "file_type": "csv",
        "mime_type": "text/csv",
        "file_size_bytes": len(data),
        "checksum_md5": hashlib.md5(data).hexdigest(),
        "downloaded_at": "2024-05-01T10:00:00+00:00",
        "downloaded_by": "courier@host",
        "job_id": "3f2a9c1e-run",
    }
    fields.update(overrides)
    return FileMetadata(**fields)


def stage(tmp_path: Path, data: bytes, name="staged.csv") -> Path:
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    path = staging / name
    path.write_bytes(data)
    return path


def entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


# --- real read-only and full filesystems -----------------------------------------------------


def _mount_tmpfs(path: Path, options: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    return result.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, check=False)


def _writable(path: Path) -> bool:
    probe = path / ".probe"
    try:
        probe.write_bytes(b"x")
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nothing can be written to, even as root: a read-only tmpfs when mount is
    permitted, else an immutable folder (chattr +i), else (not root) mode 0o555."""
    path = tmp_path / "read-only"
    path.mkdir()
    undo = None
    if _mount_tmpfs(path, "ro,size=1m"):
        undo = lambda: _umount(path)  # noqa: E731
    elif os.geteuid() == 0 and shutil.which("chattr"):
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
            undo = lambda: subprocess.run(["chattr", "-i", str(path)], check=False)  # noqa: E731
    else:
        path.chmod(0o555)
        undo = lambda: path.chmod(0o755)  # noqa: E731
    try:
        if _writable(path):
            needs("cannot make a folder unwritable here (no mount, chattr or non-root)")
        yield path
    finally:
        if undo:
            undo()


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KB filesystem (tmpfs), for a real ENOSPC."""
    path = tmp_path / "tiny"
    path.mkdir()
    if not _mount_tmpfs(path, "size=64k"):
        needs("mounting a tmpfs needs root and CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        _umount(path)


# --- the hand-off ----------------------------------------------------------------------------


def test_hand_off_writes_the_file_and_its_sidecar(tmp_path):
    shared = tmp_path / "shared"
    staged = stage(tmp_path, BODY)
    metadata = metadata_for(BODY, name="../Прайс май.csv")
    before = time.time_ns() // 1_000_000

    handed = SharedVolume(shared).hand_off(staged, metadata, ".csv")

    after = time.time_ns() // 1_000_000
    match = re.fullmatch(rf"{SUPPLIER_ID}_(\d{{13}})_Прайс_май\.csv", handed.path.name)
    assert match, handed.path.name
    assert before <= int(match.group(1)) <= after
    assert handed.path.parent == shared
    assert handed.reused is False
    assert handed.path.read_bytes() == BODY
    assert hashlib.md5(handed.path.read_bytes()).hexdigest() == metadata.checksum_md5
    assert handed.sidecar_path == shared / (handed.path.name + SIDECAR_SUFFIX)
    assert entries(shared) == sorted([handed.path.name, handed.sidecar_path.name])
    assert staged.read_bytes() == BODY  # the staged copy stays for retries

    sidecar = json.loads(handed.sidecar_path.read_text("utf-8"))
    assert set(sidecar) == {
        "original_filename",
        "source_url",
        "source_type",
        "supplier_id",
        "supplier_name",
        "file_type",
        "mime_type",
        "file_size_bytes",
        "checksum_md5",
        "downloaded_at",
        "downloaded_by",
        "job_id",
    }
    assert sidecar == metadata.model_dump(exclude_none=True)  # an original has no derivation keys
    assert sidecar["file_size_bytes"] == len(BODY)
    assert sidecar["supplier_name"] == "ООО «Ромашка»"
    assert (handed.path.stat().st_mode & 0o777) == 0o644
    assert (handed.sidecar_path.stat().st_mode & 0o777) == 0o644


def test_the_shared_folder_is_created_when_missing(tmp_path):
    shared = tmp_path / "a" / "b" / "shared"
    handed = SharedVolume(shared).hand_off(stage(tmp_path, BODY), metadata_for(BODY), ".csv")
    assert handed.path.read_bytes() == BODY


def test_a_large_binary_is_handed_off_byte_for_byte(tmp_path):
    data = os.urandom(8 * 1024 * 1024 + 123)
    handed = SharedVolume(tmp_path / "shared").hand_off(
        stage(tmp_path, data, "big.bin"), metadata_for(data, name="big.xlsx"), ".xlsx"
    )
    assert handed.path.read_bytes() == data


def test_a_300_character_name_fits_the_filesystem(tmp_path):
    name = "Прайс-лист " * 30 + ".xlsx"
    handed = SharedVolume(tmp_path / "shared").hand_off(
        stage(tmp_path, BODY), metadata_for(BODY, name=name), ".xlsx"
    )
    suffix = handed.path.name.split("_", 2)[2]
    assert len(suffix.encode("utf-8")) <= MAX_NAME_BYTES
    assert handed.path.name.endswith(".xlsx")
    assert handed.sidecar_path.is_file()
    assert json.loads(handed.sidecar_path.read_text("utf-8"))["original_filename"] == name


def test_identical_content_is_reused_not_copied_again(tmp_path):
    shared = tmp_path / "shared"
    volume = SharedVolume(shared)
    first = volume.hand_off(stage(tmp_path, BODY), metadata_for(BODY, job_id="run-1"), ".csv")
    listing = entries(shared)

    second = volume.hand_off(
        stage(tmp_path, BODY, "again.csv"), metadata_for(BODY, job_id="run-2"), ".csv"
    )

    assert second.reused is True
    assert second.path == first.path
    assert second.sidecar_path == first.sidecar_path
    assert second.metadata.job_id == "run-1"  # the sidecar on disk describes the kept file
    assert entries(shared) == listing


def test_the_same_content_for_another_supplier_is_not_reused(tmp_path):
    volume = SharedVolume(tmp_path / "shared")
    first = volume.hand_off(stage(tmp_path, BODY), metadata_for(BODY), ".csv")
    other = volume.hand_off(
        stage(tmp_path, BODY), metadata_for(BODY, supplier_id=OTHER_SUPPLIER_ID), ".csv"
    )

    assert other.reused is False
    assert other.path.name.startswith(OTHER_SUPPLIER_ID + "_")
    assert other.path != first.path
    assert len(entries(tmp_path / "shared")) == 4


def test_new_content_for_the_same_supplier_is_a_new_file(tmp_path):
    volume = SharedVolume(tmp_path / "shared")
    first = volume.hand_off(stage(tmp_path, BODY), metadata_for(BODY), ".csv")
    time.sleep(0.002)
    changed = BODY + "Б-2;3,2\r\n".encode("cp1251")
    second = volume.hand_off(stage(tmp_path, changed, "v2.csv"), metadata_for(changed), ".csv")

    assert second.reused is False
    assert second.path != first.path
    assert first.path.read_bytes() == BODY
    assert second.path.read_bytes() == changed


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: p.write_bytes(
            bytes([p.read_bytes()[0] ^ 0xFF]) + p.read_bytes()[1:]
        ),  # same size
        lambda p: p.write_bytes(p.read_bytes()[:-3]),  # truncated
        lambda p: p.unlink(),  # gone, sidecar left
    ],
    ids=["same-size-different-bytes", "truncated", "deleted"],
)
def test_a_tampered_existing_file_is_not_reused(tmp_path, tamper):
    shared = tmp_path / "shared"
    volume = SharedVolume(shared)
    first = volume.hand_off(stage(tmp_path, BODY), metadata_for(BODY), ".csv")
    tamper(first.path)
    time.sleep(0.002)  # a new epoch_ms, so the new name differs from the tampered one

    second = volume.hand_off(stage(tmp_path, BODY, "again.csv"), metadata_for(BODY), ".csv")

    assert second.reused is False
    assert second.path != first.path
    assert second.path.read_bytes() == BODY
    assert (
        json.loads(second.sidecar_path.read_text("utf-8"))["checksum_md5"]
        == hashlib.md5(BODY).hexdigest()
    )


def test_an_unreadable_sidecar_is_ignored_when_looking_for_reuse(tmp_path):
    shared = tmp_path / "shared"
    volume = SharedVolume(shared)
    first = volume.hand_off(stage(tmp_path, BODY), metadata_for(BODY), ".csv")
    first.sidecar_path.write_text("{broken", "utf-8")

    assert volume.find(SUPPLIER_ID, hashlib.md5(BODY).hexdigest()) is None


def test_the_checksum_is_verified_after_the_write(tmp_path):
    """The staged file changed after it was fetched: the hand-off must not publish it."""
    shared = tmp_path / "shared"
    staged = stage(tmp_path, BODY)
    metadata = metadata_for(BODY)
    staged.write_bytes(BODY.replace(b"10", b"99"))

    with pytest.raises(HandOffError) as caught:
        SharedVolume(shared).hand_off(staged, metadata, ".csv")

    assert "checksum mismatch" in str(caught.value)
    assert str(shared) in str(caught.value)
    assert entries(shared) == []


def test_on_one_filesystem_the_hand_off_is_a_link_of_the_untouched_staged_copy(tmp_path):
    shared = tmp_path / "shared"
    staged = stage(tmp_path, BODY)

    handed = SharedVolume(shared).hand_off(
        staged, metadata_for(BODY), ".csv", staged.stat().st_mtime_ns
    )

    assert handed.path.stat().st_ino == staged.stat().st_ino  # no byte copied
    assert handed.path.read_bytes() == BODY
    assert handed.path.stat().st_mode & 0o777 == 0o644  # ml-analyze's user can read it
    assert entries(shared) == sorted([handed.path.name, handed.sidecar_path.name])


def test_a_staged_copy_rewritten_after_its_download_is_refused_even_as_a_link(tmp_path):
    """Same size, new bytes, new mtime: the recorded mtime no longer vouches for the MD5."""
    shared = tmp_path / "shared"
    staged = stage(tmp_path, BODY)
    hashed_mtime_ns = staged.stat().st_mtime_ns
    os.utime(staged, ns=(hashed_mtime_ns, hashed_mtime_ns - 10**9))  # make the change visible
    staged.write_bytes(BODY.replace(b"10", b"99"))
    assert staged.stat().st_mtime_ns != hashed_mtime_ns

    with pytest.raises(HandOffError) as caught:
        SharedVolume(shared).hand_off(staged, metadata_for(BODY), ".csv", hashed_mtime_ns)

    assert "checksum mismatch" in str(caught.value)
    assert entries(shared) == []


def test_across_filesystems_the_file_is_copied_and_verified(tmp_path, tiny_fs):
    staged = stage(tmp_path, BODY)
    assert staged.stat().st_dev != tiny_fs.stat().st_dev

    handed = SharedVolume(tiny_fs).hand_off(
        staged, metadata_for(BODY), ".csv", staged.stat().st_mtime_ns
    )

    assert handed.path.stat().st_dev == tiny_fs.stat().st_dev  # a copy, on the other filesystem
    assert hashlib.md5(handed.path.read_bytes()).hexdigest() == hashlib.md5(BODY).hexdigest()


def test_across_filesystems_a_staged_copy_rewritten_after_download_is_refused(tmp_path, tiny_fs):
    """The copy is compared with the staged file only while that file is untouched since it
    was hashed; rewritten, the copy's own MD5 decides, and it does not match."""
    staged = stage(tmp_path, BODY)
    hashed_mtime_ns = staged.stat().st_mtime_ns
    os.utime(staged, ns=(hashed_mtime_ns, hashed_mtime_ns - 10**9))
    staged.write_bytes(BODY.replace(b"10", b"99"))

    with pytest.raises(HandOffError, match="checksum mismatch") as caught:
        SharedVolume(tiny_fs).hand_off(staged, metadata_for(BODY), ".csv", hashed_mtime_ns)

    assert caught.value.retryable is False
    assert entries(tiny_fs) == []


def test_a_read_only_shared_folder_fails_cleanly(tmp_path, read_only_dir):
    with pytest.raises(HandOffError) as caught:
        SharedVolume(read_only_dir).hand_off(stage(tmp_path, BODY), metadata_for(BODY), ".csv")

    message = str(caught.value)
    assert f"cannot write to the shared folder {read_only_dir}" in message
    assert re.search(r"Read-only file system|Operation not permitted|Permission denied", message)
    assert caught.value.retryable is False
    assert entries(read_only_dir) == []


def test_a_shared_folder_that_cannot_be_created_fails_cleanly(tmp_path, read_only_dir):
    shared = read_only_dir / "uploads"

    with pytest.raises(
        HandOffError, match=f"cannot write to the shared folder {re.escape(str(shared))}"
    ):
        SharedVolume(shared).hand_off(stage(tmp_path, BODY), metadata_for(BODY), ".csv")
    assert entries(read_only_dir) == []


def test_a_full_filesystem_fails_cleanly_and_retryably(tmp_path, tiny_fs):
    data = os.urandom(200 * 1024)  # 200 KB onto 64 KB

    with pytest.raises(HandOffError) as caught:
        SharedVolume(tiny_fs).hand_off(stage(tmp_path, data), metadata_for(data), ".csv")

    assert "No space left on device" in str(caught.value)
    assert str(tiny_fs) in str(caught.value)
    assert caught.value.retryable is True
    assert "taken back" not in str(caught.value)  # the file itself never went in
    assert [n for n in entries(tiny_fs) if n.startswith(TEMP_PREFIX)] == []
    assert entries(tiny_fs) == []
    assert shutil.disk_usage(tiny_fs).used == 0  # the partial temp file's blocks are freed


def test_no_data_file_is_left_without_its_sidecar(tmp_path, tiny_fs):
    """The data file fits exactly; the sidecar no longer does: neither must stay."""
    filler = tiny_fs / "other-supplier-file.csv"
    filler.write_bytes(b"x" * (60 * 1024))  # 15 of the 16 pages
    data = b"y" * 4096  # the last page

    with pytest.raises(HandOffError) as caught:
        SharedVolume(tiny_fs).hand_off(stage(tmp_path, data), metadata_for(data), ".csv")

    assert caught.value.retryable is True
    assert "its sidecar did not: the file was taken back" in str(caught.value)
    assert entries(tiny_fs) == [filler.name]


def test_sidecar_path_is_the_file_name_plus_suffix(tmp_path):
    assert sidecar_path(tmp_path / "a.csv") == tmp_path / "a.csv.meta.json"
