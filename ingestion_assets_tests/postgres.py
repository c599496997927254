"""A throw-away PostgreSQL server for tests: initdb into a temp dir, started on a free port,
listening on 127.0.0.1 only, removed at the end. As root, it runs as the `postgres` user
(initdb refuses root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def server_bin() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    found = candidates[0] if candidates else shutil.which("pg_ctl")
    return Path(found).parent if found else None


class PostgresServer:
    """`user` is the superuser; with a `password`, clients must give it (scram-sha-256),
    as with the official image; without, trust on loopback."""

    def __init__(self, user: str = "postgres", password: str | None = None, db: str = "dagster"):
        self.user, self.password = user, password
        bindir = server_bin()
        if bindir is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="courier-pg-"))
        self.data = self.root / "data"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        auth = ["-A", "trust"]
        if password is not None:
            (self.root / "password").write_text(password)
            if self._as_postgres:
                shutil.chown(self.root / "password", "postgres", "postgres")
            auth = ["--auth=scram-sha-256", f"--pwfile={self.root / 'password'}"]
        self._run("initdb", "-D", str(self.data), *auth, "-U", user, "--no-sync", "-E", "UTF8")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )
        self.create_database(db)

    def _run(self, tool: str, *args: str) -> str:
        command = [str(self.bindir / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        env = {**os.environ, "PGPASSWORD": self.password or ""}
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=self.root, env=env, timeout=120
        )
        if done.returncode:
            raise RuntimeError(f"{tool} failed: {done.stderr or done.stdout}")
        return done.stdout

    def create_database(self, name: str) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                self._run(
                    "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name
                )
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def env(self, db: str = "dagster") -> dict[str, str]:
        """The DAGSTER_POSTGRES_* variables the shipped dagster.yaml reads."""
        return {
            "DAGSTER_POSTGRES_HOST": "127.0.0.1",
            "DAGSTER_POSTGRES_PORT": str(self.port),
            "DAGSTER_POSTGRES_DB": db,
            "DAGSTER_POSTGRES_USER": self.user,
            "DAGSTER_POSTGRES_PASSWORD": self.password or "unused-trust-auth",
        }

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
