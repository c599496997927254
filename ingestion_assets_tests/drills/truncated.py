"""Drill 7, truncated bodies: every kind of body that ends early on a connection the server
closes, without a Content-Length (HTTP cannot tell the body is short: only the format can),
synced by the real daemon from the master sheet at its start.

Cut short (transient: the next fetch may bring it whole): an XLSX (its first 5 KB), a
gzip-encoded CSV whose gzip stream stops half way, a PDF without its %%EOF, an XLS (OLE2) cut
half way. Each must fail naming the cause ("incomplete … cut short?") and be fetched again by
the source retry sensor, SOURCE_RETRY_DELAY_SECONDS after the failure, doubling, until
SOURCE_MAX_FETCHES (4) fetches, and no more; never a run retry.

Whole but not a workbook (permanent): a .docx and a plain .zip served as `excel` sources. They
must fail at once, fetched once, with "not an Excel workbook".

Control: a whole XLSX and a whole gzip CSV from the same kind of source (no length,
connection close) must be handed off and analysed by the reference ml-analyze.

Nothing of the broken suppliers may reach the shared folder or ml-analyze, and no partial file
of theirs may stay in the staging folder.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import sys
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dagster import AssetRecordsFilter, RunsFilter

from ingestion_assets.courier.source_retries import RAW, SOURCE_DOWN
from ingestion_assets.fetching.streaming import PART_PREFIX
from ingestion_assets.handoff.atomic import TEMP_PREFIX
from ingestion_assets.handoff.sidecar import SIDECAR_SUFFIX, FileMetadata
from ingestion_assets.registry.identity import SUPPLIER_NAMESPACE, supplier_key

from .. import loopback
from ..test_completeness import CSV as BIG_CSV
from ..test_completeness import (
    DOCX,
    PDF_BYTES,
    PLAIN_ZIP,
    XLS_BYTES,
    gzip_without_length,
    xlsx_bytes,
)
from .harness import (
    Courier,
    DrillFailed,
    MLService,
    Result,
    audit_shared_folder,
    md5_of,
    ml_materializations,
    statuses,
    summary,
    unsettled_runs,
    wait_for,
    with_instance_change,
)
from .sources import master_sheet, price_list

MAX_FETCHES = 4  # SOURCE_MAX_FETCHES, shipped
RETRY_DELAY_S = 2  # SOURCE_RETRY_DELAY_SECONDS here; shipped 300
SHIPPED_DELAY_S = 300
GRACE_S = 15  # after settling: more than a tick of the source retry sensor (10 s), for a 5th fetch
TRANSIENT, PERMANENT, CONTROL = "cut short", "not a workbook", "control"


@dataclass
class Source:
    """One supplier of the drill: what it serves and what must come of it."""

    name: str
    label: str  # the kind, as the figures name it
    fmt: str  # the master sheet's format
    path: str
    body: bytes  # the bytes on the wire
    group: str
    gzip: bool = False
    decoded: bytes = b""  # what the courier writes of a gzip body (all it inflates)
    requests: list[float] = field(default_factory=list)  # when each request arrived

    @property
    def key(self) -> str:
        return supplier_key(self.name)

    @property
    def supplier_id(self) -> str:
        return str(uuid.uuid5(SUPPLIER_NAMESPACE, self.key))

    def handler(self) -> loopback.Handler:
        """The body without a Content-Length, ended by closing the connection; every request
        counted here, at the source."""
        serve = gzip_without_length(self.body) if self.gzip else loopback.without_length(self.body)

        def handler(req):
            self.requests.append(time.monotonic())
            serve(req)

        return handler


def inflated_prefix(packed: bytes) -> bytes:
    """All that a gzip stream cut short inflates to: what a courier could have kept of it."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    return inflater.decompress(packed) + inflater.flush()


def build_sources() -> list[Source]:
    workbook = xlsx_bytes()
    packed = gzip.compress(BIG_CSV)
    half = packed[: len(packed) // 2]
    control_csv = price_list(7, 40)
    return [
        Source(
            "Cut XLSX",
            "XLSX, first 5 KB",
            "excel",
            "/src/cut.xlsx",
            workbook[: 5 * 1024],
            TRANSIENT,
        ),
        Source(
            "Cut Gzip CSV",
            "gzip CSV, stream cut half way",
            "csv",
            "/src/cut-gzip.csv",
            half,
            TRANSIENT,
            gzip=True,
            decoded=inflated_prefix(half),
        ),
        Source(
            "Cut PDF",
            "PDF without %%EOF (half)",
            "url",
            "/src/cut.pdf",
            PDF_BYTES[: len(PDF_BYTES) // 2],
            TRANSIENT,
        ),
        Source(
            "Cut XLS",
            "XLS (OLE2), half",
            "excel",
            "/src/cut.xls",
            XLS_BYTES[: len(XLS_BYTES) // 2],
            TRANSIENT,
        ),
        Source("Docx As Excel", ".docx as excel", "excel", "/src/docx.xlsx", DOCX, PERMANENT),
        Source(
            "Zip As Excel", "plain .zip as excel", "excel", "/src/plain.xlsx", PLAIN_ZIP, PERMANENT
        ),
        Source("Whole XLSX", "whole XLSX", "excel", "/src/whole.xlsx", workbook, CONTROL),
        Source(
            "Whole Gzip CSV",
            "whole gzip CSV",
            "csv",
            "/src/whole-gzip.csv",
            gzip.compress(control_csv),
            CONTROL,
            gzip=True,
            decoded=control_csv,
        ),
    ]


def new_result() -> Result:
    return Result(
        drill="7 truncated bodies",
        done=(
            "the daemon syncs 8 suppliers whose sources send no Content-Length and close the "
            "connection: an XLSX cut at 5 KB, a gzip CSV whose stream stops half way, a PDF "
            "without %%EOF, an XLS cut half way; a .docx and a plain .zip as excel sources; a "
            "whole XLSX and a whole gzip CSV as controls"
        ),
        expected=(
            f"each cut body fails as incomplete, fetched {MAX_FETCHES} times by the source retry "
            "sensor (backoff doubling) and no more, no run retry; .docx/.zip fail at once, "
            "fetched once, 'not an Excel workbook'; 0 of the 6 handed off or sent to ml-analyze, "
            "no partial file left; both controls handed off and analysed"
        ),
    )


def cause(detail: str) -> str:
    """The failure without its "Supplier '…' (key), source <url>: " prefix."""
    return re.sub(r"^Supplier '.*?' \([^)]*\), source \S+: ", "", detail)


def source_downs(instance, key: str) -> list[tuple[int, float | None]]:
    """The supplier's `source_down` observations, oldest first: (fetch attempt, the delay
    raw_download scheduled before the next fetch, or None after the last)."""
    records = instance.fetch_observations(
        AssetRecordsFilter(asset_key=RAW, asset_partitions=[key]), limit=1000, ascending=True
    ).records
    found = []
    for record in records:
        meta = {k: v.value for k, v in record.asset_observation.metadata.items()}
        if meta.get("phase") == SOURCE_DOWN:
            retry_at = meta.get("retry_at")
            delay = float(retry_at) - record.timestamp if retry_at is not None else None
            found.append((int(meta["fetch_attempt"]), delay))
    return found


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def run(ctx, result: Result) -> None:
    server = loopback.LoopbackServer()
    try:
        _run(ctx, result, server)
    finally:
        server.close()


def _run(ctx, result: Result, server) -> None:
    sources = build_sources()
    rows = [[s.name, server.route(s.path, s.handler()), s.fmt, "", ""] for s in sources]
    master = server.route("/master.csv", loopback.file_body(master_sheet(rows), "text/csv"))
    by_key = {s.key: s for s in sources}
    by_supplier_id = {s.supplier_id: s for s in sources}
    broken = [s for s in sources if s.group != CONTROL]
    controls = [s for s in sources if s.group == CONTROL]
    # Every byte string of a broken supplier that a courier could have kept.
    forbidden = {hashlib.md5(s.body, usedforsecurity=False).hexdigest(): s.key for s in broken}
    forbidden |= {
        hashlib.md5(s.decoded, usedforsecurity=False).hexdigest(): s.key for s in broken if s.gzip
    }

    ml = MLService(ctx.procs, ctx.root / "ml.sqlite3", row_delay_ms=0).start()
    courier = Courier(
        ctx.procs,
        ctx.root,
        master_sheet_url=master,
        ml_url=ml.url,
        extra_env={"SOURCE_RETRY_DELAY_SECONDS": str(RETRY_DELAY_S)},
    )
    courier.set_pool_limits()
    problems = result.problems
    started = time.monotonic()
    courier.start_daemon()
    with courier.instance() as instance:

        def settled():
            if not courier.daemon_alive():
                raise DrillFailed("the daemon died during the drill")
            states = statuses(instance)
            if set(by_key) - set(states):
                return False
            for s in sources:
                phase = states[s.key].phase
                if not (phase == "failed" or phase.startswith("complete")):
                    return False
                if s.group == TRANSIENT and len(s.requests) < MAX_FETCHES:
                    return False
            return not unsettled_runs(instance)

        try:
            wait_for(
                settled,
                ctx.remaining(GRACE_S + 30),
                "every supplier to end (the cut ones after their last fetch)",
                poll=2,
            )
        except DrillFailed as exc:  # say where each supplier stood
            phases = {k: v.phase for k, v in statuses(instance).items()}
            hits = {s.key: len(s.requests) for s in sources}
            raise DrillFailed(
                f"{exc}; requests at the sources: {summary(hits)}; phases: {summary(phases)}"
            ) from exc
        settled_s = time.monotonic() - started
        at_settle = {s.key: len(s.requests) for s in sources}
        time.sleep(GRACE_S)  # a fifth fetch, or a late run, would show up now
        if unsettled_runs(instance):
            problems.append("runs started after every supplier had settled")
        states = statuses(instance)
        runs = instance.get_runs(RunsFilter(job_name="supplier_sync"))
        analysed = ml_materializations(instance)
        downs = {s.key: source_downs(instance, s.key) for s in sources}
    jobs = ml.jobs()

    runs_of = Counter(r.tags.get("dagster/partition") for r in runs)
    attempts_of: dict[str, list[str]] = {}
    for r in runs:
        attempts_of.setdefault(r.tags.get("dagster/partition"), []).append(
            r.tags.get("courier/fetch_attempt", "1")
        )
    run_retries = [r for r in runs if "dagster/retry_number" in r.tags]
    if run_retries:
        problems.append(
            f"{len(run_retries)} run retries (dagster/retry_number) of "
            f"{summary(Counter(r.tags.get('dagster/partition') for r in run_retries))}"
        )
    jobs_of = Counter(
        by_supplier_id[j["supplier_id"]].key if j["supplier_id"] in by_supplier_id else "?"
        for j in jobs
    )

    figures: dict = {}
    for s in sources:
        state = states[s.key]
        hits = len(s.requests)
        gaps = [round(b - a, 1) for a, b in zip(s.requests, s.requests[1:], strict=False)]
        why = cause(state.detail)
        if hits != at_settle[s.key]:
            problems.append(
                f"{s.key}: fetched again after settling ({at_settle[s.key]} → {hits} requests)"
            )
        if s.group == TRANSIENT:
            if hits != MAX_FETCHES:
                problems.append(f"{s.key}: {hits} requests at the source, not {MAX_FETCHES}")
            if runs_of[s.key] != MAX_FETCHES:
                problems.append(f"{s.key}: {runs_of[s.key]} supplier_sync runs, not {MAX_FETCHES}")
            for n, gap in enumerate(gaps):
                due = RETRY_DELAY_S * 2**n
                if gap < due:
                    problems.append(
                        f"{s.key}: fetch {n + 2} came {gap} s after fetch {n + 1}, before its "
                        f"retry delay ({due} s)"
                    )
            scheduled = [d for _, d in downs[s.key]]
            expected = [RETRY_DELAY_S * 2**n for n in range(MAX_FETCHES - 1)] + [None]
            if [a for a, _ in downs[s.key]] != list(range(1, MAX_FETCHES + 1)) or any(
                (d is None) != (e is None) or (d is not None and abs(d - e) > 1)
                for d, e in zip(scheduled, expected, strict=True)
            ):
                problems.append(
                    f"{s.key}: source-down attempts and delays {downs[s.key]}, expected attempts "
                    f"1-{MAX_FETCHES} with delays {expected}"
                )
            if state.phase != "failed":
                problems.append(f"{s.key}: ends {state.phase!r}, not failed")
            if "incomplete" not in why and "cut short" not in why:
                problems.append(f"{s.key}: the failure does not name the cut: {why[:200]}")
            if "no attempt left" not in why:
                problems.append(
                    f"{s.key}: the last failure does not say it was the last: {why[:200]}"
                )
            figures[f"{s.label} ({s.key})"] = (
                f"{hits} requests, {', '.join(f'{g:.0f}' for g in gaps) or '-'} s apart (delays "
                f"scheduled {', '.join(f'{d:.0f}' for d in scheduled if d is not None) or '-'} "
                f"s, then the sensor's tick and the run's start); runs of fetch attempts "
                f"{','.join(sorted(attempts_of.get(s.key, [])))}; {state.phase}: «{why[:100]}»"
            )
        elif s.group == PERMANENT:
            if hits != 1:
                problems.append(f"{s.key}: {hits} requests at the source, not 1")
            if downs[s.key]:
                problems.append(f"{s.key}: recorded as a source that is down: {downs[s.key]}")
            if runs_of[s.key] != 1:
                problems.append(f"{s.key}: {runs_of[s.key]} supplier_sync runs, not 1")
            if state.phase != "failed":
                problems.append(f"{s.key}: ends {state.phase!r}, not failed")
            if "not an Excel workbook" not in why:
                problems.append(
                    f"{s.key}: the failure does not say 'not an Excel workbook': {why[:200]}"
                )
            figures[f"{s.label} ({s.key})"] = f"{hits} request, {state.phase}: «{why[:100]}»"
        else:
            if not state.phase.startswith("complete"):
                problems.append(f"{s.key}: the control ends {state.phase!r} ({why[:200]})")
            if analysed[s.key] != 1:
                problems.append(f"{s.key}: {analysed[s.key]} completed analyses, not 1")
            figures[f"{s.label} ({s.key}, control)"] = (
                f"{hits} request, {state.phase}, {state.items} items; ml-analyze jobs "
                f"{jobs_of[s.key]}"
            )

    # The shared folder: the controls' files only, whole, each with its sidecar.
    audit = audit_shared_folder(courier.shared)
    problems += audit["problems"]
    shared_files = [p for p in files_under(courier.shared) if not p.name.endswith(SIDECAR_SUFFIX)]
    owners: Counter = Counter()
    for path in shared_files:
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        owner = "?"
        if sidecar.is_file():
            meta = FileMetadata.model_validate_json(sidecar.read_text("utf-8"))
            source = by_supplier_id.get(meta.supplier_id)
            owner = source.key if source else f"unknown supplier {meta.supplier_id}"
            if source and source.group != CONTROL:
                problems.append(f"handed off for {source.key}: {path.name}")
        owners[owner] += 1
        md5 = md5_of(path)
        if md5 in forbidden:
            problems.append(f"{path.name} in the shared folder is {forbidden[md5]}'s cut body")
    for s in controls:
        whole = s.decoded if s.gzip else s.body
        md5 = hashlib.md5(whole, usedforsecurity=False).hexdigest()
        if not any(md5_of(p) == md5 for p in shared_files):
            problems.append(f"{s.key}: its whole file is not in the shared folder")

    # The staging folder: nothing of the broken suppliers, no partial file of anybody.
    staged = files_under(courier.downloads)
    leftovers = [
        p
        for p in staged
        if p.name.startswith((PART_PREFIX, TEMP_PREFIX, ".derived-"))
        or p.parent.name in {s.key for s in broken}
        or md5_of(p) in forbidden
    ]
    problems += [f"left in staging: {p.relative_to(courier.downloads)}" for p in leftovers]

    # ml-analyze: nothing of the broken suppliers.
    broken_jobs = sum(jobs_of[s.key] for s in broken)
    if broken_jobs:
        problems.append(f"{broken_jobs} ml-analyze jobs for broken suppliers: {summary(jobs_of)}")

    transient = [s for s in sources if s.group == TRANSIENT]
    permanent = [s for s in sources if s.group == PERMANENT]
    figures["shared folder"] = (
        f"{len(shared_files)} files, of {summary(owners)}; {summary(audit['counts'])}"
    )
    figures["staging folder"] = (
        f"{len(staged)} files ({', '.join(sorted(p.parent.name for p in staged)) or 'none'}); "
        f"{len(leftovers)} partial or of a broken supplier"
    )
    figures["ml-analyze jobs"] = (
        f"{len(jobs)} ({summary(jobs_of)}); {broken_jobs} of broken suppliers"
    )
    figures["runs"] = (
        f"supplier_sync runs {sum(runs_of.values())} ({summary(runs_of)}); "
        f"run retries {len(run_retries)}"
    )
    figures["time"] = (
        f"{settled_s:.0f} s from the daemon's start to every supplier settled, then {GRACE_S} s "
        "more watching for a late fetch"
    )
    result.figures = figures
    result.scaled = with_instance_change(
        f"SOURCE_RETRY_DELAY_SECONDS={RETRY_DELAY_S} (shipped {SHIPPED_DELAY_S}: fetches 2-4 "
        f"come {SHIPPED_DELAY_S // 60}, {2 * SHIPPED_DELAY_S // 60} and "
        f"{4 * SHIPPED_DELAY_S // 60} min after the 1st, 2nd and 3rd failure; here "
        f"{RETRY_DELAY_S}, {2 * RETRY_DELAY_S} and {4 * RETRY_DELAY_S} s); ML_POLL_INTERVAL_SECONDS=2 (default 5)"
    )
    handed = sum(owners[s.key] for s in broken)
    result.observed = (
        f"{sum(len(s.requests) == MAX_FETCHES and states[s.key].phase == 'failed' for s in transient)}"
        f"/{len(transient)} cut bodies failed as incomplete after {MAX_FETCHES} fetches "
        f"({'/'.join(str(len(s.requests)) for s in transient)} requests), "
        f"{sum(len(s.requests) == 1 and states[s.key].phase == 'failed' for s in permanent)}"
        f"/{len(permanent)} non-workbooks failed at once (1 fetch); {handed} of the broken handed "
        f"off, {broken_jobs} sent to ml-analyze, {len(leftovers)} left in staging, "
        f"{len(run_retries)} run retries; controls "
        f"{sum(analysed[s.key] == 1 for s in controls)}/{len(controls)} handed off and analysed; "
        f"settled in {settled_s:.0f} s"
    )
    result.passed = not problems


if __name__ == "__main__":
    sys.exit("run through python -m ingestion_assets_tests.drills truncated")
