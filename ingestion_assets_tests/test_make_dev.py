"""`make dev` as a user meets it: it says where the UI is once it is ready, prints nothing a user
cannot act on, and Ctrl-C (SIGINT to its process group, as a terminal sends it) or SIGTERM ends
every process it started, with no error printed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from .product import Product, _descendants, _zombie

pytestmark = pytest.mark.timeout(420)

NOISE = ("will not be used", "BetaWarning", "PreviewWarning", "skipped", "Traceback")
ERRORS = ("Traceback", "Segmentation fault", "Error", "error")


def test_make_dev_says_where_the_ui_is_and_ctrl_c_stops_everything_cleanly(
    tmp_path: Path,
) -> None:
    product = Product(tmp_path)
    try:
        product.start()
        printed = product.printed()
        assert f"UI ready at {product.ui_url}" in printed
        assert not [word for word in NOISE if word in printed], printed
        # The UI serves the code location: the supplier overview is one of its assets.
        nodes = product.graphql("{ assetNodes { assetKey { path } } }")["assetNodes"]
        assert ["supplier_overview"] in [n["assetKey"]["path"] for n in nodes]
        # Started from DAGSTER_HOME, dagster dev finds no stray dagster.yaml to warn about.
        assert "will not be used" not in product.log_tail("dagster", 400)
    finally:
        product.stop()
    printed = product.printed()
    assert product.returncode == 0, printed
    assert product.leftovers == [], product.leftovers
    after_ready = printed.split("UI ready at", 1)[1]
    assert not [word for word in ERRORS if word in after_ready], printed
    assert printed.rstrip().endswith("stopped"), printed


def test_sigterm_stops_every_process_make_dev_started(tmp_path: Path) -> None:
    product = Product(tmp_path)
    try:
        product.start()
        assert product.proc is not None
        started = _session_members(product.proc.pid)
        assert len(started) >= 4, started  # the supervisor, the web source, ml-analyze, dagster
        os.kill(product.proc.pid, signal.SIGTERM)  # to the supervisor alone, as `kill PID` does
        with contextlib.suppress(subprocess.TimeoutExpired):
            product.proc.wait(timeout=60)
        assert product.proc.returncode == 0, product.printed()
        alive = [pid for pid in started if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
        assert alive == [], alive
    finally:
        product.stop()
    assert product.leftovers == [], product.leftovers


def _session_members(supervisor: int) -> list[int]:
    """The supervisor and every process below it."""
    return [supervisor, *_descendants(supervisor)]
