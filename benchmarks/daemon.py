"""Run the real Dagster daemon on a fresh PostgreSQL database with the shipped dagster.yaml."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def shipped_instance(postgres, db: str, home: Path, env: dict) -> dict:
    """A DAGSTER_HOME with the shipped dagster.yaml on a new database `db`, its pools set as
    a deployment sets them; the environment that reaches it (with `env` on top)."""
    postgres.create_database(db)
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    full = {**os.environ, **postgres.env(db), "DAGSTER_HOME": str(home), **env}
    subprocess.run(
        [sys.executable, "-m", "ingestion_assets", "set-pool-limits"],
        env=full,
        check=True,
        capture_output=True,
    )
    return full


class Daemon:
    """`dagster-daemon run` and a code server, started as the deployment starts them
    (deployment/docker-compose.yaml): the code location served by `dagster code-server start`,
    the daemon reaching it over gRPC (as deployment/workspace.yaml), on database `db` of
    `postgres`. A daemon given the module instead (`python_module`) manages a code server of
    its own and starts a new one every minute (Dagster's RELOAD_WORKSPACE_INTERVAL), loading
    the whole code location again each time: a cost the deployment never pays, and a larger
    one the larger the code location. Both run in one process group, `pgid`."""

    def __init__(
        self, postgres, db: str, workdir: Path, module: str, working_directory: Path, env: dict
    ):
        self.home = workdir / "home"
        self.env = shipped_instance(postgres, db, self.home, env)
        self.log = open(workdir / "daemon.log", "wb")  # noqa: SIM115 - closed in stop()
        port = free_port()
        self.code_server = subprocess.Popen(
            [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(port)]
            + ["-m", module, "-d", str(working_directory), "--log-level", "warning"],
            env=self.env,
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            process_group=0,  # a group of its own, which the daemon joins below
        )
        self.pgid = self.code_server.pid
        self.workspace = workspace = workdir / "workspace.yaml"
        workspace.write_text(
            f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {port}\n"
            f"      location_name: {module}\n"
        )
        try:
            _wait_until_serving(port, self.code_server)
            self.process = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
                env=self.env,
                cwd=workdir,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                process_group=self.pgid,
            )
        except BaseException:
            os.killpg(self.pgid, signal.SIGKILL)
            self.log.close()
            raise
        self.started = time.time()

    def instance(self):
        """The same instance, seen from this process (the config reads DAGSTER_POSTGRES_*)."""
        from dagster import DagsterInstance

        os.environ.update({k: v for k, v in self.env.items() if k.startswith("DAGSTER_POSTGRES_")})
        return DagsterInstance.from_config(str(self.home))

    def launch(self, job: str) -> None:
        """`dagster job launch`, as a user launches a job from the UI: queued, run by the daemon."""
        subprocess.run(
            [str(BIN / "dagster"), "job", "launch", "-w", str(self.workspace), "-j", job],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def stop(self) -> None:
        try:
            os.killpg(self.pgid, signal.SIGTERM)
            for process in (self.process, self.code_server):
                process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
        self.log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until the code server answers with its code location loaded (the daemon would otherwise
    see the location fail to load, and try again only a minute later)."""
    from dagster._grpc.client import DagsterGrpcClient

    client = DagsterGrpcClient(port=port, host="127.0.0.1")

    def serving() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the code server exited ({process.returncode}): see daemon.log")
        try:
            client.list_repositories()
        except Exception:  # not listening yet, or still loading the code location
            return False
        return True

    wait_for(serving, timeout, "the code server to load the code location", poll=0.2)


def wait_for(predicate, timeout: float, what: str, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
    return result
