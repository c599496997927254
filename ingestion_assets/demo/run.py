"""python -m ingestion_assets.demo.run: the product on its embedded default (`make dev`).

Starts, each in a session of its own with its output in a log file: a static server for the
demo's URL source, the reference ml-analyze (writing into the SQLite catalogue) and `dagster
dev` (webserver and daemon). Prints where the UI is once the code location has loaded, then
only errors. Ctrl-C or SIGTERM stops every process it started, and whatever they started.

The settings come from the environment (the Makefile's DEV_ENV): DAGSTER_HOME,
MASTER_SHEET_URL, ML_ANALYZE_URL, CATALOGUE_DATABASE_URL, ...
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO

import urllib3

from .files import write_demo

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STOP_GRACE_S = 20  # dagster dev's own shutdown of its webserver, daemon and code server
LOCATION_STATUS = """
query { workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""
# Lines of dagster dev's log a user should see at once (the rest stays in the log file): its
# own errors. A run's events (`- dagster - ERROR - <job> - <run id> - ...`) are in the UI, where
# the supplier and the cause are named.
SHOWN_LEVELS = (" - ERROR - ", " - CRITICAL - ")
RUN_EVENT = re.compile(r" - [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12} - ")


class Stop(Exception):
    """Ctrl-C or SIGTERM: stop everything."""


class StartFailed(Exception):
    """A process exited or never became ready; the message says which and shows its log."""


class Stack:
    """The processes of `make dev`, each the leader of its own session."""

    def __init__(self, root: Path, logs: Path, env: dict[str, str]) -> None:
        self.root, self.logs, self.env = root, logs, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def run(self, name: str, argv: list[str], cwd: Path) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            done = subprocess.run(argv, cwd=cwd, env=self.env, stdout=log, stderr=log, check=False)
        if done.returncode:
            raise StartFailed(f"{name} failed (exit {done.returncode}):\n{self.tail(name)}")

    def spawn(self, name: str, argv: list[str], cwd: Path) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                argv,
                cwd=cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches this supervisor only; it stops them in order
            )

    def exited(self) -> str | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return f"{name} exited (code {proc.returncode}):\n{self.tail(name)}"
        return None

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """dagster dev gets SIGINT (it shuts its webserver, daemon and code server down itself);
        the others SIGTERM. After the grace period, SIGKILL to every session and to any
        descendant that left its session (a run worker, say)."""
        strays = {pid for proc in self.procs.values() for pid in descendants(proc.pid)}
        for name, proc in self.procs.items():
            sig = signal.SIGINT if name == "dagster" else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for pid in strays:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.procs.clear()


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def location_status(http: urllib3.PoolManager, ui_url: str) -> str:
    """LOADED once the code location has loaded; a load error raises StartFailed."""
    try:
        response = http.request(
            "POST", f"{ui_url}/graphql", json={"query": LOCATION_STATUS}, timeout=5
        )
        entries = response.json()["data"]["workspaceOrError"]["locationEntries"]
    except (urllib3.exceptions.HTTPError, ValueError, KeyError, TypeError):
        return "no answer"
    statuses = []
    for entry in entries:
        loaded = entry["locationOrLoadError"]
        if loaded and loaded["__typename"] == "PythonError":
            raise StartFailed(f"code location {entry['name']} failed to load: {loaded['message']}")
        statuses.append(entry["loadStatus"] if loaded else "LOADING")
    return "LOADED" if statuses and all(s == "LOADED" for s in statuses) else "loading"


def wait_until_ready(stack: Stack, urls: dict[str, str], ui_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(urls)
    with urllib3.PoolManager(retries=False) as http:
        while True:
            if problem := stack.exited():
                raise StartFailed(problem)
            for name, url in list(pending.items()):
                with contextlib.suppress(urllib3.exceptions.HTTPError):
                    if http.request("GET", url, timeout=2).status < 500:
                        del pending[name]
            if not pending and location_status(http, ui_url) == "LOADED":
                return
            if time.monotonic() > deadline:
                waiting = ", ".join(sorted(pending)) or "the code location to load"
                raise StartFailed(f"not ready after {timeout:.0f} s, waiting for {waiting}")
            time.sleep(0.5)


def new_lines(log: IO[str]) -> Iterator[str]:
    while line := log.readline():
        yield line.rstrip("\n")


def start(stack: Stack, args: argparse.Namespace) -> str:
    home = Path(stack.env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "deployment" / "dev" / "dagster.yaml", home / "dagster.yaml")
    if inbox := stack.env.get("INBOX_DIR"):
        Path(inbox).mkdir(parents=True, exist_ok=True)
    demo = stack.root / ".data" / "demo"
    write_demo(demo, args.http_port)
    say(f"demo suppliers: {demo / 'master_sheet.csv'}")
    # The SQLite storage exists before the webserver and the daemon race to create it.
    stack.run("migrate", [str(BIN / "dagster"), "instance", "migrate"], home)
    stack.spawn(
        "demo-web",
        [sys.executable, "-m", "http.server", str(args.http_port), "--bind", "127.0.0.1"]
        + ["--directory", str(demo / "web")],
        stack.root,
    )
    ml_argv = [sys.executable, "-m", "ml_analyze_reference", "--host", "127.0.0.1"]
    ml_argv += [
        "--port",
        str(args.ml_port),
        "--db",
        str(stack.root / ".data/ml-analyze-reference.sqlite3"),
    ]
    ml_argv += ["--row-delay-ms", str(args.row_delay_ms), "--log-level", "warning"]
    if catalogue := stack.env.get("CATALOGUE_DATABASE_URL"):
        ml_argv += ["--catalogue-db", catalogue]
    stack.spawn("ml-analyze", ml_argv, stack.root)
    # Started in DAGSTER_HOME: from the repository, dagster dev would warn that the deployment's
    # dagster.yaml there "will not be used".
    ui_url = f"http://127.0.0.1:{args.ui_port}"
    stack.spawn(
        "dagster",
        [str(BIN / "dagster"), "dev", "--host", "127.0.0.1", "--port", str(args.ui_port)]
        + ["--workspace", str(REPO / "workspace.yaml")],
        home,
    )
    say("starting the Dagster UI, the reference ml-analyze and the demo's web source ...")
    urls = {
        "the demo's web source": f"http://127.0.0.1:{args.http_port}/",
        "ml-analyze": f"http://127.0.0.1:{args.ml_port}/health",
        "the Dagster UI": f"{ui_url}/server_info",
    }
    wait_until_ready(stack, urls, ui_url, args.startup_timeout)
    return ui_url


def say(text: str) -> None:
    print(f"[make dev] {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="where .data/ lives")
    parser.add_argument("--ui-port", type=int, default=3000)
    parser.add_argument("--ml-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8010)
    parser.add_argument("--row-delay-ms", type=int, default=200, help="ml-analyze's pace")
    parser.add_argument("--startup-timeout", type=float, default=180)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    logs = root / ".data" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(root, logs, dict(os.environ))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        ui_url = start(stack, args)
        say(f"UI ready at {ui_url}  (Ctrl-C stops everything; logs in {logs})")
        with (logs / "dagster.log").open(errors="replace") as log:
            log.seek(0, os.SEEK_END)
            while not (problem := stack.exited()):
                for line in new_lines(log):
                    if any(level in line for level in SHOWN_LEVELS) and not RUN_EVENT.search(line):
                        print(line, flush=True)
                time.sleep(1)
        say(problem)
        code = 1
    except StartFailed as exc:
        say(f"could not start: {exc}")
        code = 1
    except Stop:
        say("stopping ...")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    say("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
