"""The whole product, started by the very command `make dev` runs (`python -m
ingestion_assets.demo.run`: the demo data, the static server of the demo's URL source, the
reference ml-analyze and `dagster dev`), on free loopback ports under one temporary root laid out
like the repository (`<root>/.dagster_home`, `<root>/.data/...`).

Its environment is the Makefile's own `DEV_ENV`, read from the Makefile with `$(CURDIR)` pointing
at the root and the ports replaced, so a variable added there reaches these tests too. `stop()`
stops it as Ctrl-C does (SIGINT to its process group) and records how it ended; whatever is left
afterwards is killed, and listed in `leftovers`.

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
        startup_timeout: float = 180,
    ) -> None:
        self.root = Path(root).resolve()
        self.logs = self.root / ".data" / "logs"
        self.output = self.root / "make-dev.out"  # what `make dev` prints in the terminal
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
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.leftovers: list[str] = []  # processes still alive after the stop (killed then)
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
        self.root.mkdir(parents=True, exist_ok=True)
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [BIN / "python", "-m", "ingestion_assets.demo.run", "--root", self.root]
                + ["--ui-port", str(self.ui_port), "--ml-port", str(self.ml_port)]
                + ["--http-port", str(self.http_port), "--row-delay-ms", str(self.row_delay_ms)]
                + ["--startup-timeout", str(self.startup_timeout)],
                cwd=self.root,  # not the repository: relative defaults and a .env stay out
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, as a terminal's foreground job
            )
        deadline = time.monotonic() + self.startup_timeout + 30
        while "UI ready at" not in self.printed():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"make dev did not start:\n{self.printed()}")
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        """Ctrl-C: SIGINT to the process group; then whatever is left of it is killed and
        listed in `leftovers`."""
        if self.proc is None:
            return
        every = _descendants(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=60)
        self.returncode = self.proc.poll()
        every |= _descendants(self.proc.pid)
        for pid, started in every.items():
            stat = _proc_stat(pid)
            # Still the same process (not a reused pid), and running (a zombie has ended).
            if stat and stat[1] == started and not _zombie(pid):
                self.leftovers.append(_cmdline(pid))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.returncode is None:
            self.leftovers.append("make dev itself")
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
        self._http.close()

    # -- helpers for tests -----------------------------------------------------------------

    def printed(self) -> str:
        """What `make dev` has printed so far."""
        return self.output.read_text(errors="replace") if self.output.exists() else ""

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
        for path in [*self.logs.glob("*.log"), self.output]:
            if path.exists():
                shutil.copy(path, dest / path.name)


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return str(pid)


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
