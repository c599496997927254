"""Atomic writes: a hidden temp file in the same directory, fsync, rename, fsync the directory.

Another service watching the folder sees either nothing or the whole file, never a part.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_PREFIX = ".tmp-"
CHUNK = 1024 * 1024


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def same_bytes(a: Path, b: Path) -> bool:
    with a.open("rb") as left, b.open("rb") as right:
        while True:
            chunk = left.read(CHUNK)
            if chunk != right.read(CHUNK):
                return False
            if not chunk:
                return True


@contextmanager
def _replacing(
    target: Path, verify: Callable[[Path], None] | None = None
) -> Iterator[io.BufferedWriter]:
    """Yield a hidden temp file beside `target`; on success fsync, verify, rename into place."""
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _publish(temp, target, verify)


def _publish(temp: Path, target: Path, verify: Callable[[Path], None] | None) -> None:
    """Verify `temp`, make it readable, rename it to `target` and make the rename durable;
    on any error `temp` is gone."""
    try:
        if verify is not None:
            verify(temp)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _md5_is(expected_md5: str) -> Callable[[Path], None]:
    def verify(written: Path) -> None:
        if (actual := file_md5(written)) != expected_md5:
            raise OSError(f"checksum mismatch after write: {actual} != {expected_md5}")

    return verify


def atomic_write(target: Path, chunks: Iterable[bytes], expected_md5: str | None = None) -> None:
    """Write `chunks` to `target` atomically; with `expected_md5`, verify the written bytes first."""
    with _replacing(target, _md5_is(expected_md5) if expected_md5 else None) as out:
        for chunk in chunks:
            out.write(chunk)


def atomic_copy(
    source: Path, target: Path, expected_md5: str, hashed_mtime_ns: int | None = None
) -> None:
    """Copy in the kernel (sendfile), then verify the copy before it becomes visible.

    The download hashed `source` as it was written; `hashed_mtime_ns` is its mtime then. If
    it is untouched since, the copy is verified byte for byte against it (its checksum is
    the copy's checksum, at a fifth of an MD5 pass); otherwise by the copy's own MD5.
    """

    def verify(written: Path) -> None:
        if hashed_mtime_ns is not None and os.stat(source).st_mtime_ns == hashed_mtime_ns:
            if not same_bytes(source, written):
                raise OSError(
                    "checksum mismatch after write: the copy differs from the staged file"
                )
        else:
            _md5_is(expected_md5)(written)

    with _replacing(target, verify) as out, source.open("rb") as src:
        out.flush()
        size, offset = os.fstat(src.fileno()).st_size, 0
        try:
            while offset < size:
                sent = os.sendfile(out.fileno(), src.fileno(), offset, min(size - offset, 1 << 30))
                if sent == 0:
                    break
                offset += sent
        except OSError:  # sendfile not supported between these files: copy in Python
            src.seek(offset)
            out.seek(offset)
            shutil.copyfileobj(src, out, CHUNK)


# A hard link is impossible here (another filesystem, or one without links): copy instead.
LINK_UNSUPPORTED = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def atomic_link(
    source: Path,
    target: Path,
    expected_md5: str,
    expected_size: int,
    hashed_mtime_ns: int | None = None,
) -> None:
    """Give `source` (a staged download) the name `target` with a hard link: no byte copied.

    The download hashed the bytes as they were written, and `hashed_mtime_ns` is the file's
    mtime then: if the staged file is the same size and untouched since, its checksum still
    holds; otherwise (or without it) the MD5 is verified again before the name is visible.
    Raises OSError with an errno in LINK_UNSUPPORTED when the folders cannot share an inode.
    """

    def verify(linked: Path) -> None:
        stat = os.stat(linked)
        if stat.st_size != expected_size:
            raise OSError(f"size mismatch after link: {stat.st_size} != {expected_size}")
        if stat.st_mtime_ns != hashed_mtime_ns and file_md5(linked) != expected_md5:
            raise OSError("checksum mismatch: the staged file changed after download")

    temp = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}")
    os.link(source, temp)
    _publish(temp, target, verify)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
