"""The supplier overview: every supplier's phase and why, in one table the UI shows."""

from __future__ import annotations

import json
import time

from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    build_sensor_context,
)

from ingestion_assets.overview.screen import markdown, phase_counts, rows
from ingestion_assets.overview.sensor import (
    BURST_INTERVAL_S,
    BURST_SUPPLIERS,
    evaluate,
    supplier_overview_sensor,
)
from ingestion_assets.partitions import suppliers
from ingestion_assets.resources import MasterSheetResource
from ingestion_assets.status import Phase, SupplierStatus

from . import loopback
from .dagster_helpers import courier_resources, master_sheet_csv, sync_registry, sync_supplier

NOW = 1_800_000_000.0
STALE_AFTER_S = 2 * 8 * 3600.0  # two sync intervals, at the default interval of 8 h
HOUR = 3600.0
LONG_REASON = (
    "Supplier 'Gone' (gone), source http://example.com/p.csv: the server answered HTTP 404 "
    "Not Found (no file at this address) | check the URL in the master sheet\nsecond line "
    + "x"
    * 300
)


def test_each_phase_reads_at_a_glance_with_its_reason_in_full() -> None:
    statuses = [
        SupplierStatus(
            "done",
            Phase.COMPLETE,
            size=2048,
            items=12,
            matched=10,
            review=2,
            errors=0,
            attempts=1,
            updated=NOW - HOUR,
            analysed_at=NOW - HOUR,
            file_at=NOW - HOUR,
            run_id="abcdef0123456789",
        ),
        SupplierStatus(
            "busy", Phase.ANALYZING, progress=40, analysed_at=NOW - 2 * HOUR, updated=NOW - 60
        ),
        SupplierStatus("first", Phase.ANALYZING, progress=5, updated=NOW - 60),
        SupplierStatus("gone", Phase.FAILED, detail=LONG_REASON, updated=NOW - 60),
        SupplierStatus(
            "paused", Phase.COMPLETE, updated=NOW - 100 * HOUR, analysed_at=NOW - 100 * HOUR
        ),
    ]
    table = rows(statuses, {"done": "Done Ltd"}, {"paused", "never-seen"}, NOW, 16 * HOUR)
    phases = {row.status.key: row.phase for row in table}
    assert phases == {
        "busy": "analyzing a new file: 40 %",  # not "materialized": a new file is in analysis
        "done": "complete",
        "first": "analyzing: 5 %",
        "gone": "failed",
        "never-seen": "inactive",
        "paused": "inactive",
    }
    assert [row.status.key for row in table if row.stale] == []  # inactive: never stale

    text = markdown(table)
    lines = text.splitlines()
    assert lines[0].startswith("| supplier | phase | file | items | matched / review |")
    [done] = [line for line in lines if "`done`" in line]
    assert "[Done Ltd](/assets/ml_analysis_result?view=partitions&partition=done)" in done
    assert "[abcdef01](/runs/abcdef0123456789)" in done
    assert "| 12 | 10 / 2 |" in done and "2.0 KB" in done
    [gone] = [line for line in lines if "`gone`" in line]
    # The whole reason, one table row: the pipe escaped, the line break kept as <br>.
    assert "HTTP 404 Not Found (no file at this address) \\| check the URL" in gone
    assert "<br>second line " + "x" * 300 in gone
    assert len(lines) == 2 + len(table)
    assert phase_counts(table) == {
        "analyzing": 2,
        "complete": 1,
        "failed": 1,
        "inactive": 2,
        "not fresh": 0,
    }


def test_a_supplier_whose_last_analysis_is_older_than_two_sync_intervals_is_flagged() -> None:
    old = SupplierStatus(
        "old",
        Phase.FAILED,
        detail="ml-analyze reported the job failed",
        analysed_at=NOW - 20 * HOUR,
        updated=NOW - HOUR,
    )
    never = SupplierStatus("never", Phase.FAILED, detail="HTTP 404", updated=NOW - 17 * HOUR)
    recent = SupplierStatus("recent", Phase.COMPLETE, analysed_at=NOW - 15 * HOUR)
    table = rows([old, never, recent], {}, set(), NOW, 16 * HOUR)
    stale = {row.status.key: row.stale for row in table}
    assert stale["recent"] is None
    assert (
        stale["old"].startswith("not fresh: last analysis ") and "(older than 16 h)" in stale["old"]
    )
    assert stale["never"] == "not fresh: never analysed (older than 16 h)"
    assert "⚠ not fresh" in markdown(table)
    # No schedule (SYNC_INTERVAL_HOURS=0): nothing is expected to be fresh.
    unscheduled = rows([old, never, recent], {}, set(), NOW, None)
    assert all(row.stale is None for row in unscheduled)


def tick(instance, cursor=None):
    result = supplier_overview_sensor(
        build_sensor_context(
            instance=instance, cursor=cursor, resources={"master_sheet": MasterSheetResource()}
        )
    )
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def test_the_sensor_reports_the_table_when_something_changed_and_only_then(
    instance, server, tmp_path
):
    csv = loopback.file_body(b"name;price\nA;1\n", "text/csv")
    master = master_sheet_csv(
        [
            ["Alfa", server.route("/a.csv", csv), "csv", "yes", "yes"],
            ["Paused", server.route("/p.csv", csv), "csv", "no", "yes"],
        ]
    )
    resources = courier_resources(tmp_path, server.route("/m.csv", loopback.file_body(master)))
    sync_registry(instance, resources)
    instance.add_dynamic_partitions(suppliers.name, ["alfa"])

    first = tick(instance)
    [overview, fresh] = first.asset_events
    assert isinstance(overview, AssetMaterialization)
    assert overview.asset_key == AssetKey("supplier_overview")
    table = overview.metadata["suppliers, with links"].value
    assert "[Alfa](" in table and "**never synced**" in table
    assert "[Paused](" in table and "**inactive**" in table
    assert overview.metadata["phase: inactive"].value == 1
    assert isinstance(fresh, AssetCheckEvaluation) and fresh.passed  # it ran, and passed

    # Its own report changed the event log, not the table: nothing new.
    again = tick(instance, first.cursor)
    assert again.asset_events == []
    assert again.skip_reason.skip_message == "the overview is current"  # re-read, same table
    quiet = tick(instance, again.cursor)
    assert quiet.skip_reason.skip_message == "nothing changed"

    report_alfa_at_40_percent(instance)
    changed = tick(instance, quiet.cursor)
    [overview] = changed.asset_events
    assert "**analyzing: 40 %**" in overview.metadata["suppliers, with links"].value


def report_alfa_at_40_percent(instance) -> None:
    """What the ml status sensor reports while alfa's analysis is 40 % done."""
    instance.report_runless_asset_event(
        AssetObservation(
            "ml_analysis_result",
            partition="alfa",
            description="Analyzing: 40% (4/10 items)",
            metadata={"phase": "analyzing", "progress_percentage": 40, "attempt": 1},
        )
    )


def test_freshness_is_looked_at_again_with_time_alone(instance, server, tmp_path):
    csv = loopback.file_body(b"name;price\nA;1\n", "text/csv")
    master = master_sheet_csv([["Alfa", server.route("/a.csv", csv), "csv", "yes", "yes"]])
    resources = courier_resources(tmp_path, server.route("/m.csv", loopback.file_body(master)))
    sync_registry(instance, resources)
    instance.add_dynamic_partitions(suppliers.name, ["alfa"])
    instance.report_runless_asset_event(
        AssetMaterialization(
            "raw_download", partition="alfa", metadata={"size_bytes": 15, "checksum_md5": "0" * 32}
        )
    )
    first = tick(instance)
    # The same event log, two sync intervals later: the supplier is now flagged.
    later = evaluate(instance, first.cursor, time.time() + STALE_AFTER_S + 60, STALE_AFTER_S)
    [overview, fresh] = later.asset_events
    assert not fresh.passed and fresh.description.startswith("alfa: not fresh: never analysed")
    assert overview.metadata["phase: not fresh"].value == 1


def test_a_tick_rereads_only_what_changed_and_shows_what_a_full_read_shows(
    instance, server, tmp_path
):
    csv = loopback.file_body(b"name;price\nA;1\n", "text/csv")
    master = master_sheet_csv(
        [
            ["Alfa", server.route("/a.csv", csv), "csv", "yes", "yes"],
            ["Beta", server.route("/b.csv", loopback.status(404)), "csv", "yes", "yes"],
            ["Gamma", server.route("/g.csv", csv), "csv", "yes", "no"],
        ]
    )
    resources = courier_resources(tmp_path, server.route("/m.csv", loopback.file_body(master)))
    sync_registry(instance, resources)
    instance.add_dynamic_partitions(suppliers.name, ["alfa", "beta", "gamma"])
    first = tick(instance)
    assert len(json.loads(first.cursor)["statuses"]) == 3

    # A run that fails (beta), a run that succeeds (gamma), an observation (alfa).
    assert not sync_supplier(instance, resources, "beta", raise_on_error=False).success
    assert sync_supplier(instance, resources, "gamma").success
    report_alfa_at_40_percent(instance)
    incremental = tick(instance, first.cursor)
    [overview] = [e for e in incremental.asset_events if isinstance(e, AssetMaterialization)]
    table = overview.metadata["suppliers, with links"].value
    assert "**analyzing: 40 %**" in table
    assert "**failed**" in table and "HTTP 404" in table
    assert "**downloaded**" in table  # gamma: fetched and handed off, no ML step run

    full = evaluate(instance, None, time.time(), STALE_AFTER_S)
    [from_scratch] = [e for e in full.asset_events if isinstance(e, AssetMaterialization)]
    assert from_scratch.metadata["suppliers, with links"].value == table


def test_during_a_sync_of_many_the_overview_looks_less_often_and_misses_nothing(
    instance, server, tmp_path
):
    keys = [f"s{i:02d}" for i in range(BURST_SUPPLIERS + 2)]
    csv = loopback.file_body(b"name;price\nA;1\n", "text/csv")
    master = master_sheet_csv(
        [[key, server.route(f"/{key}.csv", csv), "csv", "yes", "yes"] for key in keys]
    )
    resources = courier_resources(tmp_path, server.route("/m.csv", loopback.file_body(master)))
    sync_registry(instance, resources)
    instance.add_dynamic_partitions(suppliers.name, keys)
    now = time.time()
    first = evaluate(instance, None, now, STALE_AFTER_S)

    def analysing(key: str, percent: int) -> None:
        instance.report_runless_asset_event(
            AssetObservation(
                "ml_analysis_result",
                partition=key,
                metadata={"phase": "analyzing", "progress_percentage": percent, "attempt": 1},
            )
        )

    # A few suppliers change between two looks: the next look comes a poll interval later.
    analysing(keys[0], 10)
    few = evaluate(instance, first.cursor, now + 4, STALE_AFTER_S)
    assert "**analyzing: 10 %**" in few.asset_events[0].metadata["suppliers, with links"].value
    # More than BURST_SUPPLIERS change: a sync is under way, the next look waits.
    for key in keys:
        analysing(key, 20)
    many = evaluate(instance, few.cursor, now + 8, STALE_AFTER_S)
    assert json.loads(many.cursor)["reread"] == len(keys)
    analysing(keys[0], 30)
    held = evaluate(instance, many.cursor, now + 12, STALE_AFTER_S)
    assert held.asset_events == [] and "a sync is under way" in held.skip_reason.skip_message
    later = evaluate(instance, held.cursor, now + 8 + BURST_INTERVAL_S, STALE_AFTER_S)
    table = later.asset_events[0].metadata["suppliers, with links"].value
    assert "**analyzing: 30 %**" in table and table.count("**analyzing: 20 %**") == len(keys) - 1
    # Quiet again: one change is seen at the next poll interval.
    analysing(keys[1], 40)
    quiet = evaluate(instance, later.cursor, now + 12 + BURST_INTERVAL_S, STALE_AFTER_S)
    assert "**analyzing: 40 %**" in quiet.asset_events[0].metadata["suppliers, with links"].value
