"""One sink for every source: stream chunks to a temp file, hashing and counting on the way.

The cap is enforced while the bytes arrive, so an oversized or endless body never lands
whole on disk; the deadline stops slow-drip bodies that never trip a read timeout.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import PermanentFetchError, TransientFetchError

ProgressCallback = Callable[[int, "int | None"], None]
CHUNK_SIZE = 1024 * 1024
PART_PREFIX = ".part-"


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


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class ProgressReporter:
    """Calls `report(bytes_so_far, total)` at most every `every_s` seconds, and at the end."""

    def __init__(self, report: ProgressCallback | None, every_s: float = 2.0):
        self._report = report
        self._every = every_s
        self._last = 0.0
        self._last_done = -1

    def update(self, done: int, total: int | None, final: bool = False) -> None:
        now = time.monotonic()
        due = now - self._last >= self._every or (final and done != self._last_done)
        if self._report and due:
            self._last, self._last_done = now, done
            self._report(done, total)


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
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    reporter = ProgressReporter(progress)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > limits.max_bytes:
                    raise PermanentFetchError(
                        f"file too large: more than {human_size(limits.max_bytes)} "
                        f"(MAX_FILE_SIZE_MB), stopped after {human_size(size)}"
                    )
                if time.monotonic() - started > limits.deadline:
                    raise TransientFetchError(
                        f"download took longer than {limits.deadline:.0f} s "
                        f"({human_size(size)} received)"
                    )
                digest.update(chunk)
                out.write(chunk)
                reporter.update(size, expected_size)
        if expected_size is not None and size != expected_size:
            raise TransientFetchError(f"body cut short: received {size} of {expected_size} bytes")
        if size == 0:
            raise PermanentFetchError("the file is empty (0 bytes)")
        reporter.update(size, expected_size, final=True)
        return StreamedBytes(temp_path, size, digest.hexdigest())
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
