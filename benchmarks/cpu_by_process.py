"""Where figure 2's CPU goes: the floor's runs and the courier's first sync under the real
daemon, with the CPU of every process they start read from /proc, summed by kind (daemon,
code server, run workers, their log-capture helpers, PostgreSQL backends). A diagnostic
beside figure 2 (Linux only): it says which process a difference lives in.

    .venv/bin/python benchmarks/cpu_by_process.py [--runs 40]

A process's CPU is read every 0.1 s while it lives; the last reading counts, so a process
that ends loses at most its last 0.1 s (the log-capture helpers, which live as long as their
run, are the ones undercounted). The courier's figures include its master sync's run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import compile_as_installed  # noqa: E402
from benchmarks.daemon import Daemon  # noqa: E402
from benchmarks.orchestration import runs_of, span, suppliers_env  # noqa: E402
from ingestion_assets_tests import loopback  # noqa: E402
from ingestion_assets_tests.postgres import PostgresServer  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
KINDS = [  # (what the command line holds, the kind), first match wins
    ("dagster-daemon", "daemon"),
    ("code-server start", "code server"),  # the proxy; its `api grpc` child serves
    ("api grpc", "code server"),
    ("spawn_main", "run worker"),
    ("watch_orphans", "log capture"),
    ("tail -F", "log capture"),
    ("postgres:", "PostgreSQL backend"),
]


def kind_of(cmdline: str) -> str:
    return next((kind for needle, kind in KINDS if needle in cmdline), "other")


class CpuSampler:
    """The CPU of every process in `pgid`'s group and every PostgreSQL backend, by pid."""

    def __init__(self, pgid: int):
        self.pgid = pgid
        self.seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    self._read(int(entry.name))

    def _read(self, pid: int) -> None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            return  # gone meanwhile
        group, cpu = int(stat[2]), (int(stat[11]) + int(stat[12])) / TICKS  # pgrp, utime + stime
        if group == self.pgid or "postgres:" in cmdline:
            kind = self.seen[pid][0] if pid in self.seen else kind_of(cmdline)  # a zombie's is ""
            self.seen[pid] = (kind, cpu)

    def totals(self) -> dict[str, tuple[int, float]]:
        self._stop.set()
        self._thread.join()
        count: dict[str, int] = defaultdict(int)
        cpu: dict[str, float] = defaultdict(float)
        for kind, seconds in self.seen.values():
            count[kind] += 1
            cpu[kind] += seconds
        return {kind: (count[kind], cpu[kind]) for kind in cpu}


def phase(postgres, root: Path, name: str, module: str, env: dict, job: str, n: int):
    daemon = Daemon(postgres, f"cpu_{name}", root / name, module, REPO, env)
    sampler = CpuSampler(daemon.pgid)
    try:
        with daemon.instance() as instance:
            wall = span(runs_of(instance, job, n, 900))
    finally:
        totals = sampler.totals()
        daemon.stop()
    return wall, totals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    n = parser.parse_args().runs
    compile_as_installed()
    root = Path(tempfile.mkdtemp(prefix="courier-cpu-"))
    postgres = PostgresServer()
    server = loopback.LoopbackServer()
    try:
        floor = phase(
            postgres,
            root,
            "floor",
            "benchmarks.empty_location",
            {"BENCH_RUNS": str(n)},
            "empty_job",
            n,
        )
        env = suppliers_env(server, root, n)
        courier = phase(
            postgres, root, "courier", "ingestion_assets.definitions", env, "supplier_sync", n
        )
    finally:
        server.close()
        postgres.stop()
    (floor_wall, floor_cpu), (courier_wall, courier_cpu) = floor, courier
    print(f"{n} runs: floor {floor_wall:.1f} s, courier {courier_wall:.1f} s wall")
    print(f"{'CPU per run (ms)':28s} {'floor':>8s} {'courier':>8s} {'difference':>11s}")
    kinds = sorted(set(floor_cpu) | set(courier_cpu), key=lambda k: -courier_cpu.get(k, (0, 0))[1])
    for kind in [*kinds, "total"]:
        if kind == "total":
            a = sum(cpu for _, cpu in floor_cpu.values())
            b = sum(cpu for _, cpu in courier_cpu.values())
        else:
            a, b = floor_cpu.get(kind, (0, 0.0))[1], courier_cpu.get(kind, (0, 0.0))[1]
        print(f"{kind:28s} {a / n * 1000:8.0f} {b / n * 1000:8.0f} {(b - a) / n * 1000:+11.0f}")
    for name, wall, cpu in (
        ("floor", floor_wall, floor_cpu),
        ("courier", courier_wall, courier_cpu),
    ):
        busy = sum(seconds for _, seconds in cpu.values()) / wall
        print(
            f"{name}: {busy:.2f} cores busy on average over the runs' span (the daemon's start-up included)"
        )


if __name__ == "__main__":
    main()
