"""make bench: every benchmark, each printing its figures against a floor measured in the
same run. Takes about 14 minutes on a 2-core machine."""

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OTHER_FS = "/dev/shm"  # a tmpfs: another filesystem than the repository's, on Linux
BENCHMARKS = [
    ("1. download path (50 MB, loopback)", ["download_path.py"]),
    (
        "1b. download path, the hand-off into another filesystem (as in compose and Helm)",
        ["download_path.py", "--shared-dir", OTHER_FS],
    ),
    (
        "2+4. orchestration overhead and status latency (real daemon, PostgreSQL)",
        ["orchestration.py"],
    ),
    ("2c. CPU of one run in its own process (supplier run against empty run)", ["run_cost.py"]),
    ("3. polling at scale (1,000 outstanding jobs)", ["ml_sensor_tick.py", "--jobs", "1000"]),
]


def _other_filesystem(path: Path) -> bool:
    return path.is_dir() and path.stat().st_dev != HERE.stat().st_dev


def main() -> None:
    started = time.monotonic()
    for title, command in BENCHMARKS:
        if OTHER_FS in command and not _other_filesystem(Path(OTHER_FS)):
            print(f"\n== {title}: skipped, {OTHER_FS} is not another filesystem here")
            continue
        print(f"\n== {title}", flush=True)
        done = subprocess.run(
            [sys.executable, str(HERE / command[0]), *command[1:]], capture_output=True, text=True
        )
        print("\n".join(line for line in done.stdout.splitlines() if line.strip()))
        if done.returncode:
            print(done.stderr[-3000:])
            sys.exit(done.returncode)
    print(f"\nall benchmarks: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
