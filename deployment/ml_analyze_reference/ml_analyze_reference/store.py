"""SQLite storage of jobs, their row-level problems and the extracted items.

One connection shared by the request handlers and the worker threads,
serialised by a lock: simpler than a connection per thread and fast enough
for a reference server. WAL lets an outside reader (sqlite3 CLI) look in
while jobs run.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

INTERRUPTED = "Interrupted by a service restart"
# A file with thousands of bad rows would otherwise send thousands of strings per poll.
MAX_ERRORS_IN_STATUS = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    supplier_id TEXT NOT NULL,
    file_url TEXT NOT NULL,
    file_type TEXT NOT NULL,
    status TEXT NOT NULL,
    phase TEXT,
    progress_percentage INTEGER NOT NULL DEFAULT 0,
    items_processed INTEGER NOT NULL DEFAULT 0,
    items_total INTEGER NOT NULL DEFAULT 0,
    successful_extractions INTEGER NOT NULL DEFAULT 0,
    failed_extractions INTEGER NOT NULL DEFAULT 0,
    duplicates_removed INTEGER NOT NULL DEFAULT 0,
    items_matched INTEGER NOT NULL DEFAULT 0,
    items_review INTEGER NOT NULL DEFAULT 0,
    items_unmatched INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT
);
CREATE TABLE IF NOT EXISTS problems (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    row_number INTEGER,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS problems_by_job ON problems (job_id, id);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    supplier_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    row_number INTEGER NOT NULL,
    name TEXT NOT NULL,
    sku TEXT,
    price REAL NOT NULL,
    category TEXT,
    brand TEXT,
    unit TEXT,
    match_status TEXT NOT NULL,
    matched_product TEXT,
    score REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_by_supplier ON items (supplier_id);
CREATE INDEX IF NOT EXISTS items_by_job ON items (job_id);
"""

# Columns a worker may set; also keeps column names out of reach of input.
_JOB_FIELDS = frozenset(
    {
        "status",
        "phase",
        "progress_percentage",
        "items_processed",
        "items_total",
        "successful_extractions",
        "failed_extractions",
        "duplicates_removed",
        "items_matched",
        "items_review",
        "items_unmatched",
        "started_at",
        "completed_at",
    }
)
ITEM_COLUMNS = (
    "supplier_id",
    "job_id",
    "row_number",
    "name",
    "sku",
    "price",
    "category",
    "brand",
    "unit",
    "match_status",
    "matched_product",
    "score",
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class Store:
    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def ping(self) -> None:
        with self._lock:
            self._conn.execute("SELECT 1").fetchone()

    def create_job(self, supplier_id: str, file_url: str, file_type: str) -> str:
        job_id = str(uuid.uuid4())
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO jobs (job_id, supplier_id, file_url, file_type, status, phase, created_at)"
                " VALUES (?, ?, ?, ?, 'pending', 'queued', ?)",
                (job_id, supplier_id, file_url, file_type, now_iso()),
            )
        return job_id

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            # Job-level problems (no row) first, so the cap never hides why a job failed.
            messages = [
                r[0]
                for r in self._conn.execute(
                    "SELECT message FROM problems WHERE job_id = ?"
                    " ORDER BY row_number IS NOT NULL, id LIMIT ?",
                    (job_id, MAX_ERRORS_IN_STATUS + 1),
                )
            ]
            total = len(messages)
            if total > MAX_ERRORS_IN_STATUS:
                (total,) = self._conn.execute(
                    "SELECT COUNT(*) FROM problems WHERE job_id = ?", (job_id,)
                ).fetchone()
        job = dict(row)
        job["errors"] = messages[:MAX_ERRORS_IN_STATUS]
        if total > MAX_ERRORS_IN_STATUS:
            job["errors"].append(f"... and {total - MAX_ERRORS_IN_STATUS} more problems")
        return job

    def delete_job(self, job_id: str) -> bool:
        """Forget the job record and its problems; the items stay with their supplier."""
        with self._lock, self._conn:
            deleted = self._conn.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,)).rowcount
            self._conn.execute("DELETE FROM problems WHERE job_id = ?", (job_id,))
        return deleted > 0

    def save(
        self,
        job_id: str,
        fields: dict[str, Any],
        items: Iterable[tuple[Any, ...]] = (),
        problems: Iterable[tuple[int | None, str]] = (),
    ) -> None:
        """Update job fields and add items and problems in one transaction."""
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"Not job fields: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._lock, self._conn:
            if fields:
                self._conn.execute(
                    f"UPDATE jobs SET {assignments} WHERE job_id = ?", (*fields.values(), job_id)
                )
            self._conn.executemany(
                f"INSERT INTO items ({', '.join(ITEM_COLUMNS)})"
                f" VALUES ({', '.join('?' for _ in ITEM_COLUMNS)})",
                items,
            )
            # A job deleted while it runs keeps running; its problems have nowhere to go.
            self._conn.executemany(
                "INSERT INTO problems (job_id, row_number, message)"
                " SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM jobs WHERE job_id = ?)",
                ((job_id, row_number, message, job_id) for row_number, message in problems),
            )

    def fail_interrupted(self) -> int:
        """Mark jobs a previous run left pending or processing as failed; return how many."""
        with self._lock, self._conn:
            stale = [
                r[0]
                for r in self._conn.execute(
                    "SELECT job_id FROM jobs WHERE status IN ('pending', 'processing')"
                )
            ]
            self._conn.executemany(
                "UPDATE jobs SET status = 'failed', completed_at = ? WHERE job_id = ?",
                ((now_iso(), job_id) for job_id in stale),
            )
            self._conn.executemany(
                "INSERT INTO problems (job_id, row_number, message) VALUES (?, NULL, ?)",
                ((job_id, INTERRUPTED) for job_id in stale),
            )
        return len(stale)
