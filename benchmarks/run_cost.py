"""The CPU one run costs in a process of its own, as a run worker spends it: a supplier run
against an empty run, on the shipped PostgreSQL instance config. A diagnostic beside figure 2:
CPU time, not wall time, so it moves far less with the machine's neighbours.

    .venv/bin/python benchmarks/run_cost.py [--runs 10]

Each run is `execute_job` in a fresh Python process (imports, the code location, the instance,
the run's steps and events); the two kinds alternate, and the medians are printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import compile_as_installed  # noqa: E402
from benchmarks.daemon import shipped_instance  # noqa: E402
from benchmarks.orchestration import suppliers_env  # noqa: E402
from ingestion_assets_tests import loopback  # noqa: E402
from ingestion_assets_tests.postgres import PostgresServer  # noqa: E402

ONE_RUN = """
import sys
from dagster import DagsterInstance, execute_job
from dagster._core.definitions.reconstruct import ReconstructableRepository
module, job, partition = sys.argv[1:4]
repository = ReconstructableRepository.for_module(module, "defs", sys.argv[4])
result = execute_job(
    repository.get_reconstructable_job(job),
    instance=DagsterInstance.get(),
    tags={"dagster/partition": partition} if partition else None,
)
assert result.success, f"{job} {partition} failed"
"""


def run_cpu(module: str, job: str, partition: str) -> float:
    """CPU seconds (user + system) of one run in a process of its own."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, "-c", ONE_RUN, module, job, partition, str(REPO)],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    n = parser.parse_args().runs
    compile_as_installed()
    root = Path(tempfile.mkdtemp(prefix="courier-run-cost-"))
    postgres = PostgresServer()
    server = loopback.LoopbackServer()
    try:
        courier = suppliers_env(server, root, n)
        os.environ.update(
            shipped_instance(postgres, "run_cost", root / "home", {**courier, "BENCH_RUNS": str(n)})
        )
        from dagster import DagsterInstance

        from ingestion_assets.registry.identity import supplier_key

        run_cpu("ingestion_assets.definitions", "master_sync", "")  # the registry, once
        suppliers = [supplier_key(f"Supplier {i:03d}") for i in range(n)]
        with DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("suppliers", suppliers)
            instance.add_dynamic_partitions("bench", [f"p{i:03d}" for i in range(n)])
        empty, supplier_runs = [], []
        for i, key in enumerate(suppliers):
            empty.append(run_cpu("benchmarks.empty_location", "empty_job", f"p{i:03d}"))
            supplier_runs.append(run_cpu("ingestion_assets.definitions", "supplier_sync", key))
    finally:
        server.close()
        postgres.stop()
    floor, ours = statistics.median(empty), statistics.median(supplier_runs)
    print(f"CPU of one run in its own process, median of {n}:")
    print(f"  empty partitioned asset       {floor * 1000:6.0f} ms")
    print(f"  supplier run (100 KB, ML off) {ours * 1000:6.0f} ms")
    print(
        f"  ratio                         {ours / floor:6.2f}   (+{(ours - floor) * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
