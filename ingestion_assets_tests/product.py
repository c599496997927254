"""The whole product, started as `make dev` starts it, for end-to-end tests: the demo data, the
static server of the demo's URL source, the reference ml-analyze and `dagster dev` (webserver +
daemon), on free loopback ports under one temporary root laid out like the repository
(`<root>/.dagster_home`, `<root>/.data/...`).

The environment of `dagster dev` is the Makefile's own `DEV_ENV`, read from the Makefile with
`$(CURDIR)` pointing at the root and the ports replaced, so a variable added there reaches these
tests too. Each process runs in its own session (process group); `stop()` ends the groups,
and whatever they spawned, whatever happened.

    with Product(tmp_path) as product:
        product.ui_url       # http://127.0.0.1:<port>, the Dagster UI, code location loaded
        product.graphql(query, variables)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

LOCATION_STATUS = """
query { workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dev_env(makefile: Path, root: Path, ml_port: int, demo_http_port: int) -> dict[str, str]:
    """The Makefile's `DEV_ENV := A=x \\ B=y ...`, with $(CURDIR), $(ML_PORT) and
    $(DEMO_HTTP_PORT) replaced."""
    match = re.search(r"^DEV_ENV\s*:?=((?:.*\\\n)*.*)$", makefile.read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"no DEV_ENV in {makefile}: the product cannot be started like make dev")
    text = match.group(1).replace("\\\n", " ")
    for name, value in (
        ("CURDIR", str(root)),
        ("ML_PORT", str(ml_port)),
        ("DEMO_HTTP_PORT", str(demo_http_port)),
    ):
        text = text.replace(f"$({name})", value)
    if "$(" in text:
        raise RuntimeError(f"DEV_ENV uses a make variable this helper does not know: {text}")
    env = dict(item.split("=", 1) for item in text.split())
    if "DAGSTER_HOME" not in env:
        raise RuntimeError(f"DEV_ENV sets no DAGSTER_HOME: {text}")
    return env


class Product:
    """`make dev` under `root`, on free ports. `extra_env` adds or overrides settings (for instance
    USE_ML_PROCESSING=false); `row_delay_ms` slows the reference ml-analyze per row."""

    def __init__(
        self,
        root: Path,
        *,
        row_delay_ms: int = 20,
        extra_env: dict[str, str] | None = None,
        startup_timeout: float = 120,
    ) -> None:
        self.root = Path(root).resolve()
        self.data = self.root / ".data"
        self.demo = self.data / "demo"
        self.logs = self.root / "logs"
        self.row_delay_ms = row_delay_ms
        self.startup_timeout = startup_timeout
        self.ui_port, self.ml_port, self.http_port = free_port(), free_port(), free_port()
        self.ui_url = f"http://127.0.0.1:{self.ui_port}"
        self.ml_url = f"http://127.0.0.1:{self.ml_port}"
        self.env = {
            **os.environ,
            **dev_env(REPO / "Makefile", self.root, self.ml_port, self.http_port),
            **(extra_env or {}),
        }
        self.dagster_home = Path(self.env["DAGSTER_HOME"])
        self._procs: dict[str, subprocess.Popen] = {}
        self._http = httpx.Client(timeout=10)

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Product:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Product:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        if self.env.get("INBOX_DIR"):  # as make dev: the inbox exists from the start
            Path(self.env["INBOX_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(
            REPO / "deployment" / "dev" / "dagster.yaml", self.dagster_home / "dagster.yaml"
        )
        # As make dev: the SQLite storage exists before the webserver and daemon race for it.
        self._run([BIN / "dagster", "instance", "migrate"], "migrate")
        self._run(
            [
                BIN / "python",
                "-m",
                "ingestion_assets.demo",
                self.demo,
                "--http-port",
                self.http_port,
            ],
            "demo",
        )
        self._spawn(
            "http",
            [BIN / "python", "-m", "http.server", self.http_port, "--bind", "127.0.0.1"]
            + ["--directory", self.demo / "web"],
        )
        self._spawn(
            "ml-analyze",
            [BIN / "python", "-m", "ml_analyze_reference", "--host", "127.0.0.1"]
            + ["--port", self.ml_port, "--db", self.data / "ml-analyze-reference.sqlite3"]
            + ["--row-delay-ms", self.row_delay_ms]
            + (
                ["--catalogue-db", self.env["CATALOGUE_DATABASE_URL"]]
                if self.env.get("CATALOGUE_DATABASE_URL")
                else []
            ),
        )
        self._spawn(
            "dagster",
            [BIN / "dagster", "dev", "--host", "127.0.0.1", "--port", self.ui_port]
            + ["--workspace", REPO / "workspace.yaml"],
        )
        self._wait_until_ready()
        return self

    def stop(self) -> None:
        """SIGTERM to every process group (dagster dev stops its webserver, daemon, code server
        and runs), then SIGKILL to whatever is left, spawned processes that left the group included."""
        procs = list(self._procs.items())
        strays = {pid: t for _, proc in procs for pid, t in _descendants(proc.pid).items()}
        for _, proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _, proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for pid, started in strays.items():
            stat = _proc_stat(pid)
            if stat and stat[1] == started:  # still the same process, not a reused pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._procs.clear()
        self._http.close()

    # -- helpers for tests -----------------------------------------------------------------

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = self._http.post(
            f"{self.ui_url}/graphql", json={"query": query, "variables": variables or {}}
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def log_tail(self, name: str = "dagster", lines: int = 60) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def copy_logs(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for path in self.logs.glob("*.log"):
            shutil.copy(path, dest / path.name)

    # -- internals --------------------------------------------------------------------------

    def _run(self, cmd: list, name: str) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            done = subprocess.run(
                [str(c) for c in cmd],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=120,
            )
        if done.returncode:
            raise RuntimeError(f"{name} failed ({done.returncode}):\n{self.log_tail(name)}")

    def _spawn(self, name: str, cmd: list) -> None:
        # cwd is the root, not the repository: relative defaults and a developer's .env stay out.
        with (self.logs / f"{name}.log").open("wb") as log:
            self._procs[name] = subprocess.Popen(
                [str(c) for c in cmd],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_until_ready(self) -> None:
        """The static server and ml-analyze answer; the UI answers and has loaded the code location."""
        deadline = time.monotonic() + self.startup_timeout
        pending = {
            "http": f"http://127.0.0.1:{self.http_port}/",
            "ml-analyze": f"{self.ml_url}/health",
            "dagster": f"{self.ui_url}/server_info",
        }
        status = "not asked yet"
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}"
                    )
            for name, url in list(pending.items()):
                with contextlib.suppress(httpx.HTTPError):
                    if self._http.get(url, timeout=2).status_code < 500:
                        del pending[name]
            if not pending:
                status = self._location_status()
                if status == "LOADED":
                    return
            if time.monotonic() > deadline:
                waiting = sorted(pending) or f"the code location ({status})"
                raise RuntimeError(
                    f"the product did not start in {self.startup_timeout:.0f} s, waiting for "
                    f"{waiting}:\n{self.log_tail('dagster')}"
                )
            time.sleep(0.5)

    def _location_status(self) -> str:
        try:
            entries = self.graphql(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
        except (httpx.HTTPError, RuntimeError, KeyError, TypeError) as exc:
            return f"no answer ({exc})"
        statuses = []
        for entry in entries:
            loaded = entry["locationOrLoadError"]
            if loaded and loaded["__typename"] == "PythonError":
                raise RuntimeError(
                    f"code location {entry['name']} failed to load: {loaded['message']}"
                )
            statuses.append(entry["loadStatus"] if loaded else "LOADING")
        return "LOADED" if statuses and all(s == "LOADED" for s in statuses) else str(statuses)


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _descendants(pid: int) -> dict[int, int]:
    """Every live process below `pid`, with its start time (to tell it from a reused pid)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))):
            children.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    found: dict[int, int] = {}
    todo = [pid]
    while todo:
        for child, started in children.get(todo.pop(), []):
            if child not in found:
                found[child] = started
                todo.append(child)
    return found
