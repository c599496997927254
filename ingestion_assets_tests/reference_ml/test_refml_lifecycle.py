"""Jobs over time: progress, the concurrency bound, a restart, the command line."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

INTERRUPTED = "Interrupted by a service restart"


def price_list(path: Path, rows: int) -> Path:
    lines = ["Наименование;Артикул;Цена"]
    lines += [f"Саморез по дереву 3.5x{20 + i} оцинкованный;SR-{i};{i},50" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_progress_is_visible_while_the_job_runs(start_server: Any, tmp_path: Path) -> None:
    api = start_server(tmp_path / "jobs.sqlite3", row_delay_ms=40).api
    job_id = api.submit(price_list(tmp_path / "screws.csv", 25), "csv")

    midway = api.wait(job_id, lambda job: 0 < job["items_processed"] < job["items_total"])
    assert midway["status"] == "processing" and midway["phase"] == "matching"
    assert midway["items_total"] == 25
    assert 0 < midway["progress_percentage"] < 100
    assert midway["started_at"] and midway["completed_at"] is None

    done = api.wait(job_id)
    assert (done["status"], done["items_processed"], done["progress_percentage"]) == (
        "completed",
        25,
        100,
    )


def test_jobs_beyond_the_bound_wait_pending(start_server: Any, tmp_path: Path) -> None:
    api = start_server(tmp_path / "jobs.sqlite3", max_concurrent_jobs=1, row_delay_ms=40).api
    slow = api.submit(price_list(tmp_path / "slow.csv", 12), "csv")
    api.wait(slow, lambda job: job["status"] == "processing")
    queued = api.submit(price_list(tmp_path / "quick.csv", 1), "csv")

    waiting = api.status(queued)
    assert (waiting["status"], waiting["phase"], waiting["started_at"]) == (
        "pending",
        "queued",
        None,
    )

    first, second = api.wait(slow), api.wait(queued)
    assert first["status"] == second["status"] == "completed"
    assert second["started_at"] >= first["completed_at"]


def test_a_restart_keeps_finished_jobs_and_fails_interrupted_ones(
    start_server: Any, tmp_path: Path
) -> None:
    db = tmp_path / "jobs.sqlite3"
    before = start_server(db, max_concurrent_jobs=1, row_delay_ms=50)
    finished = before.api.wait(before.api.submit(price_list(tmp_path / "one.csv", 1), "csv"))
    running = before.api.submit(price_list(tmp_path / "long.csv", 200), "csv")
    before.api.wait(running, lambda job: job["items_processed"] > 0)
    queued = before.api.submit(price_list(tmp_path / "next.csv", 1), "csv")

    started = time.monotonic()
    before.stop()
    assert time.monotonic() - started < 3, "a shutdown must not wait for running jobs to finish"

    after = start_server(db).api
    assert after.status(finished["job_id"]) == finished
    for job_id in (running, queued):
        job = after.status(job_id)
        assert job["status"] == "failed"
        assert job["errors"][0] == INTERRUPTED
        assert job["completed_at"]


def test_command_line_serves_health(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = tmp_path / "cli" / "jobs.sqlite3"
    command = [
        sys.executable,
        "-m",
        "ml_analyze_reference",
        "--port",
        str(port),
        "--db",
        str(db),
        "--max-concurrent-jobs",
        "1",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, (
                    process.stdout.read().decode() if process.stdout else ""
                )
                assert time.monotonic() < deadline, "the command line server never answered"
                time.sleep(0.05)
        assert response.json()["checks"]["workers"]["max_concurrent_jobs"] == 1
        assert db.is_file()
    finally:
        process.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM to exit as signalled.
        assert process.wait(timeout=10) in (0, -signal.SIGTERM)


def test_a_file_gone_before_its_turn_fails_the_job(start_server: Any, tmp_path: Path) -> None:
    api = start_server(tmp_path / "jobs.sqlite3", max_concurrent_jobs=1, row_delay_ms=20).api
    api.submit(price_list(tmp_path / "slow.csv", 10), "csv")
    gone = price_list(tmp_path / "gone.csv", 1)
    job_id = api.submit(gone, "csv")
    gone.unlink()

    job = api.wait(job_id)
    assert job["status"] == "failed"
    assert job["errors"][0].startswith("Could not read the file: ")
