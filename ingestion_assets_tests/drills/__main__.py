"""Run the fault drills and print the table: python -m ingestion_assets_tests.drills [name ...]

Every drill runs in a child process of its own, started in its own session, with a hard
timeout. The child cleans up after itself (its processes, its mounts); if it has to be
killed, this runner kills the process groups and unmounts the filesystems it recorded.
One throw-away PostgreSQL server serves every drill, a fresh database each.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from pathlib import Path

from ..postgres import PostgresServer
from . import DRILLS
from .harness import (
    MOUNTS_FILE,
    PGIDS_FILE,
    POSTGRES_ENV,
    REPO,
    DrillFailed,
    Processes,
    Result,
    kill_recorded_groups,
    unmount_recorded,
)

DOC = REPO / "docs" / "reliability.md"


def markers(block: str) -> tuple[str, str]:
    name = f"drills:{block}" if block else "drills"
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


SOFT_MARGIN_S = 30  # the child stops itself this long before the runner would kill it


class Context:
    """What a drill gets: its own folder, its process registry, its deadline."""

    def __init__(self, root: Path, procs: Processes, deadline: float):
        self.root, self.procs, self.deadline = root, procs, deadline

    def remaining(self, reserve: float = 20) -> float:
        """Seconds left for waiting, keeping `reserve` for the checks and the clean-up."""
        return max(5.0, self.deadline - time.monotonic() - reserve)


def _soft_timeout(signum, frame):
    raise DrillFailed("the drill reached its own timeout")


def _terminated(signum, frame):
    raise DrillFailed("the drill was stopped (SIGTERM from the runner)")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


CHILDREN: dict[str, subprocess.Popen] = {}  # drills running now, by name
STOP = threading.Event()  # set on Ctrl-C: no further drill starts


def run_child(name: str, root: Path, result_file: Path, timeout: float) -> int:
    module = importlib.import_module({n: m for n, m, _, _ in DRILLS}[name])
    (root / "logs").mkdir(parents=True, exist_ok=True)
    procs = Processes(root / "logs")
    soft = timeout - SOFT_MARGIN_S
    ctx = Context(root, procs, time.monotonic() + soft)
    signal.signal(signal.SIGALRM, _soft_timeout)
    signal.signal(signal.SIGTERM, _terminated)
    signal.alarm(int(soft))
    result = module.new_result()
    started = time.monotonic()
    try:
        module.run(ctx, result)
    except DrillFailed as exc:
        result.passed = False
        result.problems.insert(0, str(exc))
    except Exception as exc:  # a crash of the drill itself is a failed drill, with its traceback
        result.passed = False
        result.problems.insert(0, f"the drill crashed: {type(exc).__name__}: {exc}")
        result.problems.append(traceback.format_exc(limit=8))
    finally:
        signal.alarm(0)
        try:
            procs.stop_all()
        finally:
            result.seconds = round(time.monotonic() - started, 1)
            if result.problems and not result.observed:
                result.observed = result.problems[0][:300]
            result_file.write_text(result.to_json())
    return 0


def run_drill(name: str, module: str, timeout: float, base: Path, postgres) -> Result:
    root = base / name
    root.mkdir(parents=True)
    db = "drill_" + name.replace("-", "_")
    postgres.create_database(db)
    result_file, pgids, mounts = root / "result.json", root / "pgids", root / "mounts"
    env = {
        **os.environ,
        POSTGRES_ENV: json.dumps(postgres.env(db)),
        PGIDS_FILE: str(pgids),
        MOUNTS_FILE: str(mounts),
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, "-m", "ingestion_assets_tests.drills", "--child", name]
    argv += ["--root", str(root), "--result", str(result_file), "--timeout", str(timeout)]
    started = time.monotonic()
    with open(root / "drill.log", "wb") as log:
        child = subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        CHILDREN[name] = child
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        finally:
            CHILDREN.pop(name, None)
    kill_recorded_groups(pgids)  # whatever the child left behind, even if it died
    unmount_recorded(mounts)
    if result_file.exists():
        return Result(**json.loads(result_file.read_text()))
    mod = importlib.import_module(module)
    result = mod.new_result()
    result.seconds = round(time.monotonic() - started, 1)
    result.observed = (
        f"killed at the hard timeout ({timeout:.0f} s)"
        if child.returncode == -signal.SIGKILL
        else f"the drill process exited with code {child.returncode}; see {root / 'drill.log'}"
    )
    return result


# --- the table ------------------------------------------------------------------------------

COLUMNS = [("drill", 16), ("what was done", 40), ("expected", 36), ("observed", 46), ("", 4)]


def render_text(results: list[Result]) -> str:
    def row(cells):
        wrapped = [
            textwrap.wrap(str(c), w) or [""] for c, (_, w) in zip(cells, COLUMNS, strict=True)
        ]
        height = max(len(w) for w in wrapped)
        return "\n".join(
            " | ".join(
                (w[i] if i < len(w) else "").ljust(width)
                for w, (_, width) in zip(wrapped, COLUMNS, strict=True)
            ).rstrip()
            for i in range(height)
        )

    rule = "-+-".join("-" * w for _, w in COLUMNS)
    lines = [row([c for c, _ in COLUMNS[:-1]] + ["pass"]), rule]
    for r in results:
        done = r.done + (f" [scaled: {r.scaled}]" if r.scaled else "")
        lines += [
            row(
                [
                    f"{r.drill} ({r.seconds:.0f} s)",
                    done,
                    r.expected,
                    r.observed,
                    "PASS" if r.passed else "FAIL",
                ]
            ),
            rule,
        ]
    return "\n".join(lines)


def render_markdown(results: list[Result]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| drill | what was done | expected | observed | result |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        done = r.done + (f" *Scaled: {r.scaled}*" if r.scaled else "")
        lines.append(
            f"| {cell(r.drill)} ({r.seconds:.0f} s) | {cell(done)} | {cell(r.expected)} | "
            f"{cell(r.observed)} | {'pass' if r.passed else '**FAIL**'} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpus = os.cpu_count()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{mem_kb / 1024 / 1024:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        memory = "unknown RAM"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpus} CPUs ({model}), {memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; load average {load:.1f} at the start (shared machine)"
    )


def write_doc(
    results: list[Result], total_s: float, started_at: str, host: str, command: str, block: str
) -> None:
    """Replace the text between the block's markers in docs/reliability.md (appended if absent)."""
    begin, end = markers(block)
    figures = []
    for r in results:
        figures.append(f"**{r.drill}** ({'pass' if r.passed else 'FAIL'}, {r.seconds:.0f} s)")
        figures += [f"- {k}: {v}" for k, v in r.figures.items()]
        if r.scaled:
            figures.append(f"- scaled or changed for the drill: {r.scaled}")
        figures += [f"- problem: {p[:500]}" for p in r.problems]
        figures.append("")
    text_block = "\n".join(
        [
            begin,
            f"Last run: {started_at}, `{command}`, {total_s / 60:.1f} min in all, "
            f"{sum(r.passed for r in results)}/{len(results)} drills passed.",
            f"Machine: {host}.",
            "",
            render_markdown(results),
            "",
            "### Figures",
            "",
            *figures,
            end,
        ]
    )
    text = DOC.read_text() if DOC.exists() else "# Reliability\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + text_block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + text_block + "\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingestion_assets_tests.drills")
    parser.add_argument("names", nargs="*", help="drills to run (default: all)")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/reliability.md")
    parser.add_argument(
        "--doc-block",
        default="",
        help="write the figures into the <!-- drills:NAME:begin/end --> block of the doc "
        "(default: the main block, and only when every drill ran)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the drills' folders and logs")
    parser.add_argument(
        "--sequential", action="store_true", help="one drill at a time (default: two lanes)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child, Path(args.root), Path(args.result), args.timeout)

    known = [n for n, _, _, _ in DRILLS]
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown drill(s) {', '.join(unknown)}; known: {', '.join(known)}")
    selected = [d for d in DRILLS if not args.names or d[0] in args.names]
    host = machine()
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"fault drills: {', '.join(n for n, *_ in selected)}\nmachine: {host}", flush=True)
    base = Path(tempfile.mkdtemp(prefix="courier-drills-"))
    started = time.monotonic()
    postgres = PostgresServer()
    results: list[Result] = []
    lock = threading.Lock()

    def lane(drills, finished: threading.Event):
        try:
            run_lane(drills)
        finally:
            finished.set()

    def run_lane(drills):
        for name, module, _, timeout in drills:
            if STOP.is_set():
                return
            timeout = getattr(importlib.import_module(module), "TIMEOUT_S", timeout)
            with lock:
                print(f"- {name} started (at most {timeout:.0f} s)", flush=True)
            result = run_drill(name, module, timeout, base, postgres)
            with lock:
                results.append(result)
                print(
                    f"- {name}: {'PASS' if result.passed else 'FAIL'} in {result.seconds:.0f} s",
                    flush=True,
                )

    lanes: dict[int, list] = {}
    for drill in selected:
        lanes.setdefault(1 if args.sequential else drill[2], []).append(drill)
    # Waiting polls events instead of Thread.join: a join interrupted by Ctrl-C can leave the
    # thread marked stopped while it runs (CPython 3.11), and the drills would be killed at once.
    finished = [threading.Event() for _ in lanes]
    threads = [
        threading.Thread(target=lane, args=(d, f), daemon=True)
        for d, f in zip(lanes.values(), finished, strict=True)
    ]
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: stop the drills, let them clean up
    signal.signal(signal.SIGINT, _interrupt)  # even when started in the background
    try:
        for thread in threads:
            thread.start()
        while not all(f.is_set() for f in finished):
            time.sleep(0.5)
    except KeyboardInterrupt:  # the drills clean up after themselves on SIGTERM
        STOP.set()
        print("\ninterrupted: stopping the running drills ...", flush=True)
        for child in list(CHILDREN.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while not all(f.is_set() for f in finished) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for child in list(CHILDREN.values()):  # still there after a minute: no more waiting
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        postgres.stop()
    results.sort(key=lambda r: r.drill)
    total = time.monotonic() - started
    print()
    print(render_text(results))
    print(
        f"\n{sum(r.passed for r in results)}/{len(results)} drills passed in {total / 60:.1f} min"
    )
    ok = all(r.passed for r in results) and len(results) == len(selected)
    if args.no_doc:
        pass
    elif args.doc_block or len(selected) == len(DRILLS):
        settings = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("DRILL_")]
        command = (
            "make drills"
            if len(selected) == len(DRILLS) and not settings
            else " ".join([*settings, "python -m ingestion_assets_tests.drills", *args.names])
        )
        write_doc(results, total, started_at, host, command, args.doc_block)
        print(f"figures written to {DOC.relative_to(REPO)}")
    else:
        print("figures not written (not the whole suite): give --doc-block NAME to write them")
    if args.keep or not ok:
        print(f"drills' folders and logs: {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
