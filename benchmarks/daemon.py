"""Run the real Dagster daemon on a fresh PostgreSQL database with the shipped dagster.yaml."""

from __future__ import annotations

import os
import shutil
import signal
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
    """`dagster-daemon run` for one workspace, on database `db` of `postgres`."""

    def __init__(
        self, postgres, db: str, workdir: Path, module: str, working_directory: Path, env: dict
    ):
        self.home = workdir / "home"
        self.env = shipped_instance(postgres, db, self.home, env)
        self.workspace = workspace = workdir / "workspace.yaml"
        workspace.write_text(
            f"load_from:\n  - python_module:\n      module_name: {module}\n"
            f"      working_directory: {working_directory}\n"
        )
        self.log = open(workdir / "daemon.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
            env=self.env,
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def wait_for(predicate, timeout: float, what: str, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
    return result
