"""One sink for every source: stream chunks to a temp file, hashing and counting on the way.

The cap is enforced while the bytes arrive, so an oversized or endless body never lands
whole on disk; the deadline stops slow-drip bodies that never trip a read timeout.
The MD5 is taken from the bytes read back from the file as they land, in a thread beside
the download: the checksum describes what is on disk, and costs no wall time of its own.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..staging import PART_PREFIX
from .errors import PermanentFetchError, TransientFetchError

ProgressCallback = Callable[[int, "int | None"], None]
CHUNK_SIZE = 1024 * 1024
PROGRESS_EVERY_S = 2.0


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    deadline: float = 600.0


@dataclass(frozen=True)
class StreamedBytes:
    temp_path: Path
    size: int
    md5: str
    mtime_ns: int  # when the hashed bytes were last written: later changes show up here


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class ProgressReporter:
    """Calls `report(bytes_so_far, total)` every `every_s` seconds while a download lasts, and
    once more at its end. A file that arrives within `every_s` gets no line: each line is an
    event in the instance, and the materialization that follows says all of it."""

    def __init__(self, report: ProgressCallback | None, every_s: float | None = None):
        self._report = report
        self._every = PROGRESS_EVERY_S if every_s is None else every_s
        self._last = time.monotonic()
        self._last_done: int | None = None  # None: no line given yet

    def update(self, done: int, total: int | None, final: bool = False) -> None:
        now = time.monotonic()
        if final:
            due = self._last_done is not None and done != self._last_done
        else:
            due = now - self._last >= self._every
        if self._report and due:
            self._last, self._last_done = now, done
            self._report(done, total)


class ReadBackHasher:
    """MD5 of a file's bytes as they are written, read back (`pread`) by a worker thread.

    hashlib and pread release the GIL, so the hashing runs on a second core while the
    caller receives and writes the next chunk.
    """

    def __init__(self, fd: int):
        self._fd = fd
        self._digest = hashlib.md5(usedforsecurity=False)
        self._pending: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="read-back-md5", daemon=True)
        self._thread.start()

    def written(self, offset: int, length: int) -> None:
        self._pending.put((offset, length))

    def _run(self) -> None:
        while (span := self._pending.get()) is not None:
            if self._error is not None:
                continue  # drain: the caller learns of the error when it asks for the digest
            offset, length = span
            try:
                while length:
                    data = os.pread(self._fd, min(length, CHUNK_SIZE), offset)
                    if not data:
                        raise OSError(f"read back {offset} bytes, expected {offset + length}")
                    self._digest.update(data)
                    offset, length = offset + len(data), length - len(data)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = exc

    def close(self) -> None:
        """Stop the thread; always called before the file descriptor is closed."""
        if self._thread.is_alive():
            self._pending.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        if self._error is not None:
            raise OSError(f"cannot read back the written bytes: {self._error}") from self._error
        return self._digest.hexdigest()


def stream_to_temp(
    chunks: Iterable[bytes],
    dest_dir: Path,
    limits: FetchLimits,
    *,
    expected_size: int | None = None,
    started: float | None = None,
    progress: ProgressCallback | None = None,
) -> StreamedBytes:
    """Write `chunks` to a hidden temp file in `dest_dir`; on any error the temp file is gone."""
    started = time.monotonic() if started is None else started
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=PART_PREFIX, dir=dest_dir)
    temp_path = Path(name)
    size = 0
    reporter = ProgressReporter(progress)
    try:
        # Unbuffered: each chunk is in the file (page cache) before the hasher reads it back.
        with os.fdopen(fd, "wb", buffering=0) as out:
            hasher = ReadBackHasher(out.fileno())
            try:
                for chunk in chunks:
                    if size + len(chunk) > limits.max_bytes:
                        raise PermanentFetchError(
                            f"file too large: more than {human_size(limits.max_bytes)} "
                            f"(MAX_FILE_SIZE_MB), stopped after {human_size(size + len(chunk))}"
                        )
                    if time.monotonic() - started > limits.deadline:
                        raise TransientFetchError(
                            f"download took longer than {limits.deadline:.0f} s "
                            f"({human_size(size)} received)"
                        )
                    _write_all(out, chunk)
                    hasher.written(size, len(chunk))
                    size += len(chunk)
                    reporter.update(size, expected_size)
                if expected_size is not None and size != expected_size:
                    raise TransientFetchError(
                        f"body cut short: received {size} of {expected_size} bytes"
                    )
                if size == 0:
                    raise PermanentFetchError("the file is empty (0 bytes)")
                # Durable before anything links or copies it onward; the disk flushes while
                # the hasher finishes reading back the last chunks.
                os.fsync(out.fileno())
                md5 = hasher.hexdigest()
                mtime_ns = os.fstat(out.fileno()).st_mtime_ns
            finally:
                hasher.close()
        reporter.update(size, expected_size, final=True)
        return StreamedBytes(temp_path, size, md5, mtime_ns)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def _write_all(out: io.FileIO, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        view = view[out.write(view) :]
