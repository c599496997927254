"""The job pool: at most N files analysed at once, the rest wait as `pending`."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .catalogue_db import CatalogueDb, CatalogueWriteError
from .matching import MATCHED, REVIEW, UNMATCHED, Catalogue, MatchedItem
from .parsing import (
    HEADER_SEARCH_ROWS,
    PriceError,
    RawItem,
    TableReadError,
    extract_items,
    find_header,
    parse_price,
    read_table,
)
from .profiles import Behaviour
from .store import Store, now_iso

log = logging.getLogger(__name__)

PDF_NOT_SUPPORTED = "PDF is not supported by the reference server"
NO_HEADER = f"No header row with a name and a price column in the first {HEADER_SEARCH_ROWS} rows"
# Progress is written at most this often: a row-by-row commit would make
# large files slow, and pollers ask every few seconds anyway.
SAVE_INTERVAL_SECONDS = 0.2


@dataclass
class _Tally:
    total: int
    processed: int = 0
    successful: int = 0
    failed: int = 0
    duplicates: int = 0
    by_status: Counter[str] = field(default_factory=Counter)

    def fields(self) -> dict[str, Any]:
        percentage = 100 * self.processed // self.total if self.total else 0
        return {
            "items_total": self.total,
            "items_processed": self.processed,
            "progress_percentage": percentage,
            "successful_extractions": self.successful,
            "failed_extractions": self.failed,
            "duplicates_removed": self.duplicates,
            "items_matched": self.by_status[MATCHED],
            "items_review": self.by_status[REVIEW],
            "items_unmatched": self.by_status[UNMATCHED],
        }


@dataclass(frozen=True)
class Job:
    job_id: str
    supplier_id: str
    file_url: str
    file_type: str
    priority_sheet: str | None = None


class _Stopped(Exception):
    """The server is shutting down; the job is left as it is, to be failed at next start."""


class JobRunner:
    def __init__(
        self,
        store: Store,
        catalogue: Catalogue,
        max_concurrent_jobs: int,
        row_delay_ms: int = 0,
        behaviour: Behaviour | None = None,
        catalogue_db: CatalogueDb | None = None,
    ) -> None:
        """Items go to `catalogue_db` when there is one, else to the store's own table."""
        self._store = store
        self._catalogue = catalogue
        self._row_delay = row_delay_ms / 1000
        self._behaviour = behaviour or Behaviour()
        self._catalogue_db = catalogue_db
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=max_concurrent_jobs, thread_name_prefix="ml-analyze-job"
        )

    def submit(self, job: Job) -> None:
        self._pool.submit(self._run, job)

    def shutdown(self) -> None:
        """Stop taking jobs, let running ones stop at the next row, wait for them."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job) -> None:
        try:
            self._analyse(job)
        except _Stopped:
            log.info("job %s stopped by shutdown", job.job_id)
        except Exception as exc:  # a bug must fail the job, not leave it processing
            log.exception("job %s crashed", job.job_id)
            self._fail(job, f"Internal error: {exc}", "internal")

    def _check_stop(self, delay: float = 0.0) -> None:
        if self._stop.wait(delay) if delay else self._stop.is_set():
            raise _Stopped

    def _fail(self, job: Job, message: str, error_type: str = "parsing") -> None:
        """`error_type`: parsing_logs' kind of failure (parsing, validation, database, internal)."""
        log.info("job %s failed: %s", job.job_id, message)
        if self._catalogue_db is not None:  # logged before a poller can see `failed`
            self._catalogue_db.log_failure(job.job_id, job.supplier_id, error_type, message)
        self._store.save(
            job.job_id, {"status": "failed", "completed_at": now_iso()}, problems=[(None, message)]
        )

    def _analyse(self, job: Job) -> None:
        self._check_stop()
        self._store.save(
            job.job_id, {"status": "processing", "phase": "parsing", "started_at": now_iso()}
        )
        if job.file_type not in self._behaviour.file_types:
            self._fail(job, f"Unsupported file type: {job.file_type}", "validation")
            return
        if job.file_type == "pdf":
            self._fail(job, PDF_NOT_SUPPORTED)
            return
        active_sheet = self._behaviour.active_sheet_only
        try:
            rows = read_table(job.file_url, job.file_type, job.priority_sheet, active_sheet)
        except TableReadError as exc:
            self._fail(job, str(exc))
            return
        except OSError as exc:  # e.g. removed from the shared volume after the submit
            self._fail(job, f"Could not read the file: {exc}")
            return
        header = find_header(rows)
        # In production's way of reading workbooks, a sheet without a header (a cover page)
        # yields no items: the job completes with 0.
        if header is None and not (active_sheet and job.file_type == "excel"):
            self._fail(job, NO_HEADER)
            return
        raw_items = list(extract_items(rows, header)) if header else []
        tally = _Tally(total=len(raw_items))
        self._store.save(job.job_id, {"phase": "matching", **tally.fields()})

        items: list[MatchedItem] = []
        saved = 0  # items[:saved] are in the store
        problems: list[tuple[int | None, str]] = []  # not yet saved
        seen: set[tuple[str, str | None, float]] = set()
        last_save = time.monotonic()
        for raw in raw_items:
            self._check_stop(self._row_delay)
            problem = self._process_row(raw, tally, seen, items)
            if problem:
                problems.append((raw.row_number, problem))
            tally.processed += 1
            if time.monotonic() - last_save >= SAVE_INTERVAL_SECONDS:
                self._save(job, tally.fields(), items[saved:], problems)
                saved, problems, last_save = len(items), [], time.monotonic()

        if self._catalogue_db is not None:
            try:
                self._catalogue_db.insert_items(
                    job.supplier_id, items, upsert=self._behaviour.upsert_items
                )
            except CatalogueWriteError as exc:
                self._save(job, tally.fields(), [], problems)
                self._fail(job, str(exc), "database")
                return

        done = {
            **tally.fields(),
            "status": "completed",
            "phase": "done",
            "progress_percentage": 100,
            "completed_at": now_iso(),
        }
        self._save(job, done, items[saved:], problems)
        log.info("job %s completed: %s", job.job_id, tally.fields())

    def _save(
        self,
        job: Job,
        fields: dict[str, Any],
        items: Sequence[MatchedItem],
        problems: list[tuple[int | None, str]],
    ) -> None:
        """Job fields and problems to the store; items too, when there is no catalogue."""
        rows = [] if self._catalogue_db is not None else [_store_row(job, item) for item in items]
        self._store.save(job.job_id, fields, rows, problems)

    def _process_row(
        self,
        raw: RawItem,
        tally: _Tally,
        seen: set[tuple[str, str | None, float]],
        items: list[MatchedItem],
    ) -> str | None:
        """Clean, deduplicate and match one row; return its problem, if any."""
        try:
            price = parse_price(raw.price)
        except PriceError as exc:
            tally.failed += 1
            return f"Row {raw.row_number}: {exc}"
        if price is None:
            tally.failed += 1
            return f"Row {raw.row_number}: price is missing"
        key = (raw.name.casefold(), raw.sku, price)
        if key in seen:
            tally.duplicates += 1
            return None
        seen.add(key)
        match = self._catalogue.match(raw.name)
        tally.successful += 1
        tally.by_status[match.status] += 1
        items.append(MatchedItem(raw, price, match))
        return None


def _store_row(job: Job, item: MatchedItem) -> tuple[Any, ...]:
    """The item as a row of the store's `items` table (ITEM_COLUMNS)."""
    raw, match = item.raw, item.match
    return (
        job.supplier_id,
        job.job_id,
        raw.row_number,
        raw.name,
        raw.sku,
        item.price,
        raw.category,
        raw.brand,
        raw.unit,
        match.status,
        match.product,
        match.score,
    )
