"""One ml status-sensor tick with N outstanding jobs, against the reference ml-analyze over HTTP.

    .venv/bin/python benchmarks/ml_sensor_tick.py [--jobs 1000]

Baselines, measured in the same run: the same N status requests made one after another by
the product's own client (MLAnalyzeClient.status, as the tick makes them), and by a plain
httpx client (what a naive sensor would do). Goals: a tick ≤ 5 s (issue 5), and at most 0.5×
the same requests one after another (issue 15).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from dagster import build_sensor_context, instance_for_test

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingestion_assets.ml.client import MLAnalyzeClient  # noqa: E402
from ingestion_assets.ml.events import submission_observation  # noqa: E402
from ingestion_assets.ml.sensors import ml_status_sensor  # noqa: E402
from ingestion_assets.ml.tracking import TrackedJob, TrackerState  # noqa: E402
from ingestion_assets.resources import CatalogueResource, MLAnalyzeResource  # noqa: E402


class ReferenceProcess:
    def __init__(self, tmp_path: Path):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ml_analyze_reference",
                "--port",
                str(port),
                "--db",
                str(tmp_path / "ml.sqlite3"),
                "--max-concurrent-jobs",
                "1",
                "--row-delay-ms",
                "60000",
                "--log-level",
                "warning",
            ],
            start_new_session=True,
        )
        for _ in range(100):
            try:
                httpx.get(self.url + "/health", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the reference ml-analyze did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, instance_for_test() as instance:
        tmp_path = Path(tmp)
        price_list = tmp_path / "prices.csv"
        price_list.write_text("name;price\nДрель ударная;4990\n", encoding="utf-8")
        # Its own process, one worker, slow rows: the jobs stay outstanding while polled.
        service = ReferenceProcess(tmp_path)
        try:
            with httpx.Client(base_url=service.url) as http:
                job_ids = [
                    http.post(
                        "/analyze/file",
                        json={
                            "file_url": str(price_list),
                            "supplier_id": str(uuid.uuid4()),
                            "file_type": "csv",
                        },
                    ).json()["job_id"]
                    for _ in range(args.jobs)
                ]
                for index, job_id in enumerate(job_ids):
                    job = TrackedJob(
                        job_id,
                        f"supplier-{index:04d}",
                        1,
                        "0" * 32,
                        str(price_list),
                        "",
                        time.time(),
                    )
                    instance.report_runless_asset_event(submission_observation(job, "csv"))

                plain_httpx = []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    for job_id in job_ids:
                        http.get(f"/analyze/status/{job_id}").raise_for_status()
                    plain_httpx.append(time.perf_counter() - started)

            baseline = []
            with MLAnalyzeClient(service.url, retries=0, max_connections=1) as client:
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    for job_id in job_ids:
                        client.status(job_id, retry=False)
                    baseline.append(time.perf_counter() - started)

            ml = MLAnalyzeResource(url=service.url)
            cursor, ticks = None, []
            for _ in range(args.repeat + 1):
                context = build_sensor_context(
                    instance=instance,
                    cursor=cursor,
                    resources={"ml_analyze": ml, "catalogue": CatalogueResource()},
                )
                started = time.perf_counter()
                result = ml_status_sensor(context)
                ticks.append(time.perf_counter() - started)
                cursor = result.cursor
            state = TrackerState.from_json(cursor)
            polled = sum(1 for job in state.jobs.values() if job.last_polled)
        finally:
            service.stop()

    first, steady = ticks[0], statistics.median(ticks[1:])
    base = statistics.median(baseline)
    naive = statistics.median(plain_httpx)
    print(f"outstanding jobs                 {args.jobs}")
    print(f"jobs polled in the last tick     {polled}")
    print(f"first tick (reads event log)     {first:6.2f} s")
    print(
        f"steady tick (median of {args.repeat})        {steady:6.2f} s   goal ≤ 5 s: {'met' if steady <= 5 else 'MISSED'}"
    )
    print(f"baseline: the same GETs one after another, the product's client  {base:6.2f} s")
    print(f"baseline: the same GETs one after another, plain httpx          {naive:6.2f} s")
    ratio = steady / base
    print(
        f"ratio tick / one after another   {ratio:6.2f}   goal ≤ 0.5: {'met' if ratio <= 0.5 else 'MISSED'}"
    )
    print(f"ratio tick / plain httpx         {steady / naive:6.2f}")


if __name__ == "__main__":
    main()
