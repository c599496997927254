"""Drill 9, an analysis that fails for a cause that will not heal, across three syncs.

ml-analyze is deployed parsing Excel only (the reference server with `--file-types excel`)
while the courier is told it parses Excel and PDF (ML_FILE_TYPES=excel,pdf: a setting out of
step with the service, as on a first deployment). A PDF supplier's job fails with the
service's "Unsupported file type: pdf". The daemon syncs at its start; two more master syncs
are launched as a user would (`dagster job launch -j master_sync`), each after the one before
has settled.

The PDF supplier must be submitted once, its failure shown as one that will not heal, and not
submitted again by the second and third syncs (same file): no job, no run retry. Two controls
(an XLSX and a CSV, which the courier derives into an XLSX) are analysed once each, and not
again for unchanged files.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections import Counter

from dagster import AssetKey, DagsterRunStatus, RunsFilter

from ingestion_assets.registry.identity import SUPPLIER_NAMESPACE, supplier_key

from .. import loopback
from ..test_completeness import PDF_BYTES, xlsx_bytes
from .harness import (
    Courier,
    MLService,
    Result,
    ml_materializations,
    statuses,
    summary,
    unsettled_runs,
    wait_for,
    with_instance_change,
)
from .sources import counted, master_sheet, price_list

SYNCS = 3
PDF_SUPPLIER = "Pdf Only Supplier"
CONTROLS = {"Xlsx Control": ("excel", xlsx_bytes()), "Csv Control": ("csv", price_list(3, 12))}


def new_result() -> Result:
    return Result(
        drill="9 a cause that will not heal",
        done=(
            "ml-analyze parses Excel only (--file-types excel), the courier is told Excel and PDF "
            "(ML_FILE_TYPES=excel,pdf); a PDF supplier and two controls (XLSX, CSV) synced "
            f"{SYNCS} times by the daemon (its start, then `dagster job launch -j master_sync` "
            "twice)"
        ),
        expected=(
            "the PDF supplier submitted once, failed with the service's words and 'will not "
            "heal', not submitted by the later syncs, no run retry; each control analysed once"
        ),
    )


def run(ctx, result: Result) -> None:
    server = loopback.LoopbackServer()
    try:
        _run(ctx, result, server)
    finally:
        server.close()


def _run(ctx, result: Result, server) -> None:
    requests: Counter = Counter()
    pdf_key = supplier_key(PDF_SUPPLIER)
    rows = [
        [
            PDF_SUPPLIER,
            server.route(
                "/src/prices.pdf", counted(PDF_BYTES, requests, pdf_key, "application/pdf")
            ),
            "url",
            "",
            "",
        ]
    ]
    for name, (fmt, body) in CONTROLS.items():
        rows.append(
            [
                name,
                server.route(
                    f"/src/{supplier_key(name)}.{'xlsx' if fmt == 'excel' else 'csv'}",
                    counted(body, requests, supplier_key(name), "application/octet-stream"),
                ),
                fmt,
                "",
                "",
            ]
        )
    keys = [supplier_key(r[0]) for r in rows]
    control_keys = [k for k in keys if k != pdf_key]
    by_supplier_id = {str(uuid.uuid5(SUPPLIER_NAMESPACE, k)): k for k in keys}
    master = server.route("/master.csv", loopback.file_body(master_sheet(rows), "text/csv"))

    ml = MLService(ctx.procs, ctx.root / "ml.sqlite3", options=("--file-types", "excel")).start()
    courier = Courier(
        ctx.procs,
        ctx.root,
        master_sheet_url=master,
        ml_url=ml.url,
        extra_env={"ML_FILE_TYPES": "excel,pdf"},
    )
    courier.set_pool_limits()
    started = time.monotonic()
    courier.start_daemon()
    per_sync: list[dict] = []
    with courier.instance() as instance:

        def syncs_done() -> int:
            return len(
                instance.fetch_materializations(AssetKey("supplier_registry"), limit=10).records
            )

        for sync in range(1, SYNCS + 1):
            if sync > 1:
                courier.launch("master_sync")

            def settled(sync: int = sync) -> bool:
                if syncs_done() < sync or unsettled_runs(instance):
                    return False
                supplier_runs = instance.get_runs(RunsFilter(job_name="supplier_sync"))
                if len(supplier_runs) < sync * len(keys):
                    return False
                states = statuses(instance)
                return all(
                    k in states
                    and (states[k].phase == "failed" or states[k].phase.startswith("complete"))
                    for k in keys
                )

            wait_for(settled, min(240, ctx.remaining(30)), f"sync {sync} to settle", poll=2)
            time.sleep(6)  # three more ticks of the ml status sensor: a late submission shows
            jobs = ml.jobs()
            per_sync.append(
                {
                    "jobs": Counter(by_supplier_id.get(j["supplier_id"], "?") for j in jobs),
                    "states": statuses(instance),
                    "requests": Counter(requests),
                }
            )
        runs = instance.get_runs(RunsFilter(job_name="supplier_sync"))
        analysed = ml_materializations(instance)
    jobs = ml.jobs()

    problems = result.problems
    pdf_jobs = [j for j in jobs if by_supplier_id.get(j["supplier_id"]) == pdf_key]
    final = per_sync[-1]["states"][pdf_key]
    run_retries = [r for r in runs if "dagster/retry_number" in r.tags]
    failed_runs = [r for r in runs if r.status == DagsterRunStatus.FAILURE]
    if len(pdf_jobs) != 1:
        problems.append(f"{pdf_key}: {len(pdf_jobs)} ml-analyze jobs, not 1")
    said = " ".join(ml.messages(pdf_jobs[0]["job_id"])) if pdf_jobs else ""
    if pdf_jobs and (pdf_jobs[0]["status"] != "failed" or "Unsupported file type" not in said):
        problems.append(f"{pdf_key}: its job is {pdf_jobs[0]['status']} ({said or 'no words'})")
    for n, seen in enumerate(per_sync, start=1):
        if seen["jobs"][pdf_key] != 1:
            problems.append(f"after sync {n}: {seen['jobs'][pdf_key]} jobs for {pdf_key}")
        if seen["states"][pdf_key].phase != "failed":
            problems.append(f"after sync {n}: {pdf_key} shows {seen['states'][pdf_key].phase!r}")
    if "will not heal" not in final.detail or "Unsupported file type" not in final.detail:
        problems.append(f"{pdf_key}: the failure shown is not the service's words: {final.detail}")
    for key in control_keys:
        if per_sync[-1]["jobs"][key] != 1 or analysed[key] != 1:
            problems.append(
                f"{key}: {per_sync[-1]['jobs'][key]} jobs, {analysed[key]} analyses (1 and 1)"
            )
        if not per_sync[-1]["states"][key].phase.startswith("complete"):
            problems.append(f"{key}: ends {per_sync[-1]['states'][key].phase}")
    if run_retries:
        problems.append(f"{len(run_retries)} run retries")
    if failed_runs:
        problems.append(f"{len(failed_runs)} supplier runs failed")

    result.figures = {
        f"ml-analyze jobs after sync {n}": summary(seen["jobs"])
        for n, seen in enumerate(per_sync, start=1)
    }
    result.figures |= {
        f"source requests after sync {SYNCS}": summary(per_sync[-1]["requests"]),
        "what the PDF supplier shows": f"{final.phase}: «{final.detail[:240]}»",
        "supplier_sync runs": f"{len(runs)} ({summary(Counter(r.status.value for r in runs))})",
        "run retries": len(run_retries),
        "time": f"{time.monotonic() - started:.0f} s in all",
    }
    result.scaled = with_instance_change("ML_POLL_INTERVAL_SECONDS=2 (default 5)")
    result.observed = (
        f"the PDF supplier: {len(pdf_jobs)} job in {SYNCS} syncs, shown {final.phase} "
        f"({'will not heal' if 'will not heal' in final.detail else 'cause not classified'}); "
        f"controls {sum(analysed[k] == 1 for k in control_keys)}/{len(control_keys)} analysed "
        f"once; run retries {len(run_retries)}, failed runs {len(failed_runs)}"
    )
    result.passed = not problems


if __name__ == "__main__":
    sys.exit("run through python -m ingestion_assets_tests.drills will-not-heal")
