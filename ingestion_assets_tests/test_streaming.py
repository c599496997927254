"""The one sink every source streams into: bytes kept as received, the MD5 read back from the
file as it lands (a worker thread), and nothing left behind when a download goes wrong."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from ingestion_assets.fetching.errors import PermanentFetchError, TransientFetchError
from ingestion_assets.fetching.streaming import PART_PREFIX, FetchLimits, stream_to_temp

LIMITS = FetchLimits(max_bytes=8 * 1024 * 1024)


def hasher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "read-back-md5"]


def test_the_md5_is_of_the_bytes_on_disk_and_the_mtime_is_recorded(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    sizes = [1, 65536, 1024 * 1024 + 3, 7]  # uneven chunks, as sockets deliver them
    chunks, offset = [], 0
    while offset < len(data):
        size = sizes[len(chunks) % len(sizes)]
        chunks.append(data[offset : offset + size])
        offset += size

    streamed = stream_to_temp(iter(chunks), tmp_path, LIMITS, expected_size=len(data))

    assert streamed.temp_path.read_bytes() == data
    assert streamed.md5 == hashlib.md5(data).hexdigest()
    assert streamed.size == len(data)
    assert streamed.mtime_ns == streamed.temp_path.stat().st_mtime_ns
    assert hasher_threads() == []


def broken_body():
    yield b"x" * 100_000
    raise TransientFetchError("connection reset")


@pytest.mark.parametrize(
    ("chunks", "error", "words"),
    [
        (broken_body(), TransientFetchError, "connection reset"),
        (iter([b"x" * (5 * 1024 * 1024)] * 2), PermanentFetchError, "file too large"),
        (iter([b""]), PermanentFetchError, "empty"),
    ],
    ids=["cut-off", "over-the-cap", "empty"],
)
def test_a_failed_stream_leaves_no_file_and_no_thread(tmp_path, chunks, error, words):
    with pytest.raises(error, match=words):
        stream_to_temp(chunks, tmp_path, LIMITS)

    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(PART_PREFIX)] == []
    assert hasher_threads() == []


def test_a_body_shorter_than_announced_is_refused(tmp_path):
    with pytest.raises(TransientFetchError, match="cut short: received 10 of 20"):
        stream_to_temp(iter([b"0123456789"]), tmp_path, LIMITS, expected_size=20)
    assert list(tmp_path.iterdir()) == []
