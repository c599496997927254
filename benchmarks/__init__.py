"""Performance scripts: `make bench` runs them all (see docs/benchmarks.md)."""

import compileall
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def compile_as_installed() -> None:
    """Write the bytecode of the code under measurement, as `pip install` does in the image.

    The venv installs the package editable, and with PYTHONDONTWRITEBYTECODE=1 (the image's
    setting, and this host's) Python never writes it: every run worker compiled the whole
    package again, ≈48 ms of CPU that a deployed run does not spend.
    """
    for folder in ("ingestion_assets", "benchmarks"):
        compileall.compile_dir(REPO / folder, quiet=1)
