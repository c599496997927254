"""Settings reach the code location through its resources: the schedule's interval too."""

import os
import subprocess
import sys

import pytest

from ingestion_assets.overview.sensor import stale_after_s
from ingestion_assets.resources import MasterSheetResource


def loaded(expression: str, sync_interval_hours: str | None) -> str:
    """`expression` over the code location's `defs`, loaded in a fresh interpreter with
    SYNC_INTERVAL_HOURS set to the value given (unset for None)."""
    env = {k: v for k, v in os.environ.items() if k != "SYNC_INTERVAL_HOURS"}
    if sync_interval_hours is not None:
        env["SYNC_INTERVAL_HOURS"] = sync_interval_hours
    program = f"from ingestion_assets.definitions import defs\nprint({expression})"
    return subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize(("hours", "cron"), [(None, "0 */8 * * *"), ("6", "0 */6 * * *")])
def test_the_master_sync_runs_every_sync_interval_hours(hours: str | None, cron: str) -> None:
    shown = loaded("defs.resolve_schedule_def('master_sync_schedule').cron_schedule", hours)
    assert shown == cron


def test_sync_interval_hours_0_means_no_schedule() -> None:
    shown = loaded("sorted(s.name for s in defs.schedules)", "0")
    assert shown == "['shared_file_cleanup_schedule']"


def test_an_analysis_is_stale_after_two_sync_intervals() -> None:
    assert stale_after_s(MasterSheetResource()) == 16 * 3600
    assert stale_after_s(MasterSheetResource(sync_interval_hours=6)) == 12 * 3600
    assert stale_after_s(MasterSheetResource(sync_interval_hours=0)) is None  # no schedule
