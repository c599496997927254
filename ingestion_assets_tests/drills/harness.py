"""What every drill shares: the processes it starts (each in its own session, killed by process
group whatever happens), the real daemon on a PostgreSQL instance, the reference ml-analyze as
a separate process, waiting within a deadline, and the checks of the outcome.

A drill runs in its own Python process (see __main__.py). Every process group it starts and
every filesystem it mounts is written to files the parent process reads, so that a drill
killed at its hard timeout is still cleaned up after.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PGIDS_FILE = "DRILL_PGIDS_FILE"  # env: where a drill records the process groups it started
MOUNTS_FILE = "DRILL_MOUNTS_FILE"  # env: where a drill records the filesystems it mounted
POSTGRES_ENV = "DRILL_POSTGRES_ENV"  # env: JSON of the DAGSTER_POSTGRES_* vars of its database


class DrillFailed(AssertionError):
    """An expectation of the drill does not hold (or did not within its time)."""


@dataclass
class Result:
    """One row of the table, with the figures behind it."""

    drill: str
    done: str
    expected: str
    observed: str = ""
    passed: bool = False
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)
    scaled: str = ""  # what differs from the numbers or the shipped settings, and why
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, default=str)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, poll: float = 1.0):
    """predicate() until it returns something true, else DrillFailed after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise DrillFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def _record(env_name: str, line: str) -> None:
    target = os.environ.get(env_name)
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(line + "\n")


class Processes:
    """Processes started by a drill, each the leader of its own process group."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.started: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, argv: list[str], env: dict, cwd: Path) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        _record(PGIDS_FILE, str(proc.pid))
        self.started[name] = proc
        return proc

    @staticmethod
    def signal_group(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def kill(self, name: str) -> None:
        """SIGKILL the whole group (the process and whatever it started), reap the leader."""
        proc = self.started.pop(name, None)
        if proc is None:
            return
        self.signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def stop(self, name: str, grace: float = 10) -> None:
        proc = self.started.get(name)
        if proc is None:
            return
        self.signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        self.kill(name)  # the group's other members, even when the leader exited

    def stop_all(self) -> None:
        for name in list(self.started):
            self.stop(name, grace=5)


def kill_recorded_groups(pgids_file: Path) -> None:
    """The parent's last resort after a drill was killed: SIGKILL every group it recorded."""
    if not pgids_file.exists():
        return
    for line in pgids_file.read_text().split():
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            os.killpg(int(line), signal.SIGKILL)


def unmount_recorded(mounts_file: Path) -> None:
    if not mounts_file.exists():
        return
    for line in mounts_file.read_text().splitlines():
        if line.strip() and os.path.ismount(line.strip()):
            subprocess.run(["umount", "-l", line.strip()], check=False, capture_output=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A size-limited filesystem at `path` (root only), unmounted at the end whatever happens."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    _record(MOUNTS_FILE, str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


class MLService:
    """The reference ml-analyze as its own process, so that it can be SIGKILLed and restarted
    on the same port and database."""

    def __init__(
        self,
        procs: Processes,
        db: Path,
        *,
        row_delay_ms: int = 0,
        max_jobs: int = 2,
        options: tuple[str, ...] = (),
    ):
        self.procs, self.db, self.options = procs, db, options
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.row_delay_ms, self.max_jobs = row_delay_ms, max_jobs
        self.starts = 0

    def start(self, timeout: float = 60) -> MLService:
        self.starts += 1
        argv = [sys.executable, "-m", "ml_analyze_reference", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--db", str(self.db), "--log-level", "warning"]
        argv += ["--row-delay-ms", str(self.row_delay_ms)]
        argv += ["--max-concurrent-jobs", str(self.max_jobs), *self.options]
        proc = self.procs.spawn("ml-analyze", argv, dict(os.environ), self.db.parent)

        def healthy():
            if proc.poll() is not None:
                raise DrillFailed(f"ml-analyze exited at start (code {proc.returncode})")
            try:
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout, "ml-analyze to answer /health", poll=0.3)
        return self

    def kill(self) -> None:
        self.procs.kill("ml-analyze")

    def jobs(self) -> list[dict]:
        """Every job in ml-analyze's own database (read directly: the service may be down)."""
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute("SELECT * FROM jobs")]

    def messages(self, job_id: str) -> list[str]:
        """What ml-analyze recorded against a job (its errors), read from its database."""
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as db:
            query = "SELECT message FROM problems WHERE job_id = ? ORDER BY id"
            return [row[0] for row in db.execute(query, (job_id,))]


# Shipped, the run queue used to launch runs one at a time, each launch waiting until the run's
# process had started (about 6 s here): supplier runs never overlapped. The drills launch from
# 4 threads; if the shipped dagster.yaml already does (run_queue.dequeue_use_threads), nothing
# is changed and INSTANCE_CHANGE is empty.
DEQUEUE_WORKERS = 4


def shipped_config() -> dict:
    return yaml.safe_load((REPO / "dagster.yaml").read_text())


def _launches_in_parallel(config: dict) -> bool:
    queue = config.get("run_queue") or config.get("run_coordinator", {}).get("config") or {}
    return bool(queue.get("dequeue_use_threads"))


INSTANCE_CHANGE = (
    ""
    if _launches_in_parallel(shipped_config())
    else f"run_queue dequeue_use_threads with {DEQUEUE_WORKERS} workers in the drill's copy of "
    "dagster.yaml (shipped: one launch at a time, about 6 s each)"
)


def drill_dagster_yaml(home: Path, run_monitoring: dict | None = None) -> Path:
    """The shipped dagster.yaml in `home`, with parallel run launches (if it lacks them) and,
    if given, other run_monitoring values."""
    home.mkdir(parents=True, exist_ok=True)
    config = shipped_config()
    config["run_monitoring"].update(run_monitoring or {})
    if not _launches_in_parallel(config):
        config["run_queue"] = {
            **config.get("run_queue", {}),
            "dequeue_use_threads": True,
            "dequeue_num_workers": DEQUEUE_WORKERS,
        }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home


def with_instance_change(text: str) -> str:
    """A drill's `scaled` note, with the instance change appended when there is one."""
    return "; ".join(part for part in (text, INSTANCE_CHANGE) if part)


class Courier:
    """The product as deployed: the daemon (with its code server and run workers) on the shipped
    PostgreSQL dagster.yaml, configured by environment variables like the deployment."""

    def __init__(
        self,
        procs: Processes,
        root: Path,
        *,
        master_sheet_url: str,
        ml_url: str,
        extra_env: dict | None = None,
        run_monitoring: dict | None = None,
    ):
        self.procs, self.root = procs, root
        self.home = drill_dagster_yaml(root / "dagster_home", run_monitoring)
        self.shared = root / "shared"
        self.downloads = root / "downloads"
        self.workspace = root / "workspace.yaml"
        self.workspace.write_text(
            "load_from:\n  - python_module:\n      module_name: ingestion_assets.definitions\n"
            f"      working_directory: {REPO}\n      location_name: ingestion_assets\n"
        )
        self.env = {
            **os.environ,
            **json.loads(os.environ[POSTGRES_ENV]),
            "DAGSTER_HOME": str(self.home),
            "MASTER_SHEET_URL": master_sheet_url,
            "SSRF_ALLOWED_HOSTS": "127.0.0.1",
            "DOWNLOADS_DIR": str(self.downloads),
            "SHARED_UPLOADS_DIR": str(self.shared),
            "ML_ANALYZE_URL": ml_url,
            "ML_POLL_INTERVAL_SECONDS": "2",
            # No master sync schedule: a drill that crosses 00:00, 08:00 or 16:00 UTC would
            # otherwise sync every supplier a second time (seen in ml-outage at 08:00).
            "SYNC_INTERVAL_HOURS": "0",
            **(extra_env or {}),
        }
        self.env.pop("INBOX_DIR", None)
        self.daemon_starts = 0

    def instance(self):
        """A DagsterInstance on the same storage (the drill's own process reads it)."""
        from dagster import DagsterInstance

        for name in ("DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PORT", "DAGSTER_POSTGRES_DB"):
            os.environ[name] = self.env[name]
        os.environ["DAGSTER_POSTGRES_USER"] = self.env["DAGSTER_POSTGRES_USER"]
        os.environ["DAGSTER_POSTGRES_PASSWORD"] = self.env["DAGSTER_POSTGRES_PASSWORD"]
        return DagsterInstance.from_config(str(self.home))

    def set_pool_limits(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "ingestion_assets", "set-pool-limits"],
            env=self.env,
            cwd=self.root,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start_daemon(self) -> subprocess.Popen:
        self.daemon_starts += 1
        argv = [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)]
        return self.procs.spawn("daemon", argv, self.env, self.root)

    def kill_daemon(self) -> None:
        self.procs.kill("daemon")

    def launch(self, job: str) -> None:
        """`dagster job launch`, as a user launches a job from the UI: queued, run by the daemon."""
        subprocess.run(
            [str(BIN / "dagster"), "job", "launch", "-w", str(self.workspace), "-j", job],
            env=self.env,
            cwd=self.root,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def daemon_alive(self) -> bool:
        proc = self.procs.started.get("daemon")
        return proc is not None and proc.poll() is None


# --- checks ---------------------------------------------------------------------------------


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def audit_shared_folder(root: Path) -> dict:
    """Every file on the volume: has it its sidecar, does the sidecar's checksum match the bytes
    (recomputed here), is anything left half-written?"""
    from ingestion_assets.fetching.streaming import PART_PREFIX
    from ingestion_assets.handoff.atomic import TEMP_PREFIX
    from ingestion_assets.handoff.sidecar import SIDECAR_SUFFIX

    report = Counter(files=0, sidecars=0)
    problems: list[str] = []
    names = sorted(p.name for p in root.iterdir() if p.is_file()) if root.is_dir() else []
    for name in names:
        path = root / name
        if name.startswith((TEMP_PREFIX, PART_PREFIX)):
            report["temp_files"] += 1
            problems.append(f"temp file left: {name}")
        elif name.endswith(SIDECAR_SUFFIX):
            report["sidecars"] += 1
            if not path.with_name(name[: -len(SIDECAR_SUFFIX)]).is_file():
                report["sidecars_without_file"] += 1
                problems.append(f"sidecar without its file: {name}")
        else:
            report["files"] += 1
            sidecar = path.with_name(name + SIDECAR_SUFFIX)
            if not sidecar.is_file():
                report["files_without_sidecar"] += 1
                problems.append(f"file without sidecar: {name}")
                continue
            meta = json.loads(sidecar.read_text("utf-8"))
            if (
                meta.get("checksum_md5") != md5_of(path)
                or meta.get("file_size_bytes") != path.stat().st_size
            ):
                report["checksum_mismatches"] += 1
                problems.append(f"sidecar checksum/size does not match: {name}")
    return {"counts": dict(report), "problems": problems}


def ml_materializations(instance) -> Counter:
    """ml_analysis_result materializations per partition (a completed analysis each)."""
    from dagster import AssetKey, AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("ml_analysis_result")), limit=10_000
    ).records
    return Counter(r.partition_key for r in records)


def runs_by_status(instance, job_name: str | None = None) -> Counter:
    from dagster import RunsFilter

    runs = instance.get_runs(RunsFilter(job_name=job_name) if job_name else None)
    return Counter(r.status.value for r in runs)


def unsettled_runs(instance, retry_wait_s: float = 60) -> list:
    """Runs still queued or going, and failed runs the daemon is about to retry (for at most
    `retry_wait_s` after they failed: a retry the daemon cannot create never comes)."""
    from dagster import DagsterRunStatus, RunsFilter

    going = instance.get_runs(
        RunsFilter(
            statuses=[
                DagsterRunStatus.QUEUED,
                DagsterRunStatus.NOT_STARTED,
                DagsterRunStatus.STARTING,
                DagsterRunStatus.STARTED,
                DagsterRunStatus.CANCELING,
            ]
        )
    )
    failed = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
    retried = {
        r.tags.get("dagster/parent_run_id")
        for r in instance.get_runs(RunsFilter(tags={"dagster/retry_number": ["1", "2", "3"]}))
    }
    pending_retry = [
        r.dagster_run
        for r in failed
        if r.dagster_run.tags.get("dagster/will_retry", "") != "false"
        and r.dagster_run.run_id not in retried
        and time.time() - r.update_timestamp.timestamp() < retry_wait_s
    ]
    return list(going) + pending_retry


def statuses(instance) -> dict:
    from ingestion_assets.status import all_statuses

    return {s.key: s for s in all_statuses(instance)}


def summary(counter: Counter | dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"
