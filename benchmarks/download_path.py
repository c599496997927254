"""The download path: the courier's fetch + hand-off (outside Dagster) against its physical
floor, `curl -o` + `md5sum` + `cp`, on the same file from the same loopback server.

    .venv/bin/python benchmarks/download_path.py [--size-mb 50] [--repeat 5] [--shared-dir D]

By default the hand-off's folder is on the staging folder's filesystem (the hand-off is a
hard link); `--shared-dir /dev/shm` puts it, and the floor's `cp` target, on another one.

Also the peak memory (max RSS) of the courier's fetch for a small and a large file, each
against a process that only imports the same modules: streaming keeps the growth flat.
Goals (issue 5): wall time ≤ 1.2× the floor; memory growth ≤ 32 MB whatever the size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ONE_FETCH = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from ingestion_assets.fetching.fetcher import SourceFetcher
from ingestion_assets.fetching.streaming import FetchLimits
from ingestion_assets.fetching.url_guard import UrlGuard
from ingestion_assets.handoff.shared_volume import SharedVolume
from ingestion_assets.handoff.sidecar import FileMetadata
url, work, shared = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if url != "imports-only":
    started = time.perf_counter()
    fetcher = SourceFetcher(FetchLimits(max_bytes=2**40), UrlGuard(("127.0.0.1",)))
    fetched = fetcher.fetch(url, "url", work / "staging")
    meta = FileMetadata(original_filename="big.pdf", source_url=url, source_type="url", supplier_id="s",
        supplier_name="s", file_type="pdf", mime_type="application/pdf", file_size_bytes=fetched.size,
        checksum_md5=fetched.md5, downloaded_at="", downloaded_by="bench", job_id="bench")
    SharedVolume(shared).hand_off(fetched.path, meta, ".pdf", fetched.mtime_ns)
    seconds = time.perf_counter() - started
else:
    seconds = 0.0
print(json.dumps({{"seconds": seconds, "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_file(path: Path, size_mb: int) -> None:
    # A PDF header so the courier's sniffing accepts it as a document; the rest is random.
    with path.open("wb") as out:
        out.write(b"%PDF-1.4\n")
        for _ in range(size_mb):
            out.write(os.urandom(1024 * 1024))
        out.write(b"\n%%EOF\n")  # a whole PDF ends so; the courier checks it


def courier_once(url: str, work: Path, shared: Path | None = None) -> dict:
    """One fetch + hand-off in a fresh process; `shared` (default: beside the staging folder,
    one filesystem) is where the hand-off writes."""
    shared = shared or work / "shared"
    for folder in (work, shared):
        shutil.rmtree(folder, ignore_errors=True)
    work.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-c", ONE_FETCH.format(repo=str(REPO)), url, str(work), str(shared)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def floor_once(url: str, work: Path, shared: Path | None = None) -> float:
    shared = shared or work / "shared"
    for folder in (work, shared):
        shutil.rmtree(folder, ignore_errors=True)
    shared.mkdir(parents=True)
    work.mkdir(parents=True, exist_ok=True)
    target = work / "big.pdf"
    started = time.perf_counter()
    subprocess.run(["curl", "-s", "--compressed", "-o", str(target), url], check=True)
    subprocess.run(["md5sum", str(target)], check=True, capture_output=True)
    subprocess.run(["cp", str(target), str(shared / "big.pdf")], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--small-mb", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--shared-dir",
        type=Path,
        help="hand off into a new folder under this one (on another filesystem: the "
        "copy-and-verify path of the hand-off)",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="courier-bench-"))
    shared_dir = Path(tempfile.mkdtemp(dir=args.shared_dir)) if args.shared_dir else None
    port = free_port()
    (root / "www").mkdir()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(root / "www"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        write_file(root / "www" / "big.pdf", args.size_mb)
        write_file(root / "www" / "small.pdf", args.small_mb)
        big, small = (f"http://127.0.0.1:{port}/{name}" for name in ("big.pdf", "small.pdf"))
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        courier_once(big, root / "warm")  # page cache and server warm-up
        floor, courier = [], []
        for _ in range(args.repeat):  # interleaved: both see the same machine
            floor.append(floor_once(big, root / "floor", shared_dir))
            courier.append(courier_once(big, root / "courier", shared_dir)["seconds"])
        imports_rss = courier_once("imports-only", root / "imports")["max_rss_kb"] / 1024
        small_rss = courier_once(small, root / "small")["max_rss_kb"] / 1024
        big_rss = courier_once(big, root / "big")["max_rss_kb"] / 1024
    finally:
        os.killpg(server.pid, 15)
        shutil.rmtree(root, ignore_errors=True)
        if shared_dir:
            shutil.rmtree(shared_dir, ignore_errors=True)

    f, c = statistics.median(floor), statistics.median(courier)
    print(
        f"file                                   {args.size_mb} MB, loopback HTTP, median of {args.repeat}"
    )
    print(f"floor: curl -o + md5sum + cp           {f:6.3f} s   {args.size_mb / f:7.1f} MB/s")
    print(f"courier: fetch + MD5 + hand-off        {c:6.3f} s   {args.size_mb / c:7.1f} MB/s")
    if shared_dir:
        print(f"  (hand-off across filesystems, into {args.shared_dir}: copy + fsync + verify)")
    print(
        f"ratio courier / floor                  {c / f:6.2f}   goal ≤ 1.2: {'met' if c / f <= 1.2 else 'MISSED'}"
    )
    print(f"max RSS, imports only                  {imports_rss:6.1f} MB")
    print(
        f"max RSS growth, {args.small_mb:3d} MB file             {small_rss - imports_rss:6.1f} MB"
    )
    growth = big_rss - imports_rss
    print(
        f"max RSS growth, {args.size_mb:3d} MB file             {growth:6.1f} MB   goal ≤ 32 MB: {'met' if growth <= 32 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
