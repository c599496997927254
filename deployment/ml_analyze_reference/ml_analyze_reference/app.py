"""HTTP routes of the reference ml-analyze server."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__
from .catalogue_db import CatalogueDb, describe
from .matching import Catalogue
from .profiles import TERSE_ERROR, resolve_behaviour
from .store import Store
from .validation import parse_analyze_request
from .worker import Job, JobRunner

log = logging.getLogger(__name__)

# The status body carries the contract's fields only, not the job's file path.
STATUS_FIELDS = (
    "job_id",
    "status",
    "phase",
    "progress_percentage",
    "items_processed",
    "items_total",
    "errors",
    "created_at",
    "started_at",
    "completed_at",
    "successful_extractions",
    "failed_extractions",
    "duplicates_removed",
    "items_matched",
    "items_review",
    "items_unmatched",
)
# Fields the older production generation's status does not have (legacy_status).
NEWER_FIELDS = frozenset(
    {
        "phase",
        "successful_extractions",
        "failed_extractions",
        "duplicates_removed",
        "items_matched",
        "items_review",
        "items_unmatched",
    }
)
LEGACY_STATUS_FIELDS = tuple(name for name in STATUS_FIELDS if name not in NEWER_FIELDS)


def create_app(
    db_path: str | Path,
    catalogue_path: str | Path | None = None,
    max_concurrent_jobs: int = 2,
    row_delay_ms: int = 0,
    *,
    catalogue_db_url: str | None = None,
    profile: str = "reference",
    file_types: Iterable[str] | None = None,
    active_sheet_only: bool | None = None,
    terse_errors: bool | None = None,
    legacy_status: bool | None = None,
    upsert_items: bool | None = None,
) -> Starlette:
    """The app; the databases are opened, and stale jobs failed, when it starts serving.

    `catalogue_db_url`: items go to that catalogue's `supplier_items` (see catalogue_db)
    instead of `db_path`'s own table. `profile` ("reference" or "production") and the options
    after it choose behaviours of one service generation or another (see profiles); an option
    left None takes the profile's value.
    """
    # A bad catalogue, URL or option fails at once, not at start-up.
    catalogue = Catalogue.from_csv(catalogue_path)
    behaviour = resolve_behaviour(
        profile, file_types, active_sheet_only, terse_errors, legacy_status, upsert_items
    )
    status_fields = LEGACY_STATUS_FIELDS if behaviour.legacy_status else STATUS_FIELDS
    catalogue_db = CatalogueDb(catalogue_db_url) if catalogue_db_url else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if catalogue_db is not None:
            await run_in_threadpool(catalogue_db.create_missing_tables)
        store = Store(db_path)
        interrupted = store.fail_interrupted()
        if interrupted:
            log.warning("marked %d job(s) left by the previous run as failed", interrupted)
        runner = JobRunner(
            store, catalogue, max_concurrent_jobs, row_delay_ms, behaviour, catalogue_db
        )
        app.state.store, app.state.runner = store, runner
        try:
            yield
        finally:
            await run_in_threadpool(runner.shutdown)
            store.close()
            if catalogue_db is not None:
                catalogue_db.close()

    async def health(request: Request) -> JSONResponse:
        try:
            request.app.state.store.ping()
            database = {"status": "ok"}
        except sqlite3.Error as exc:
            database = {"status": "error", "message": str(exc)}
        checks: dict[str, dict[str, Any]] = {
            "database": database,
            "catalogue": {"status": "ok", "products": len(catalogue.names)},
            "workers": {"status": "ok", "max_concurrent_jobs": max_concurrent_jobs},
        }
        if catalogue_db is not None:
            try:
                await run_in_threadpool(catalogue_db.ping)
                checks["catalogue_db"] = {"status": "ok"}
            except SQLAlchemyError as exc:
                checks["catalogue_db"] = {"status": "error", "message": describe(exc)}
        healthy = all(check["status"] == "ok" for check in checks.values())
        return JSONResponse(
            {
                "status": "healthy" if healthy else "unhealthy",
                "version": __version__,
                "service": "ml-analyze",
                "checks": checks,
            }
        )

    async def analyze_file(request: Request) -> JSONResponse:
        analyze, errors = parse_analyze_request(await request.body())
        if analyze is None:
            return JSONResponse({"detail": errors}, status_code=422)
        if not Path(analyze.file_url).is_file():
            return JSONResponse({"detail": f"File not found: {analyze.file_url}"}, status_code=400)
        store: Store = request.app.state.store
        job_id = store.create_job(analyze.supplier_id, analyze.file_url, analyze.file_type)
        request.app.state.runner.submit(
            Job(
                job_id,
                analyze.supplier_id,
                analyze.file_url,
                analyze.file_type,
                analyze.priority_sheet,
            )
        )
        return JSONResponse(
            {"job_id": job_id, "status": "pending", "message": "File analysis job queued"},
            status_code=202,
        )

    async def job_status(request: Request) -> JSONResponse:
        job = request.app.state.store.get_job(request.path_params["job_id"])
        if job is None:
            return JSONResponse({"detail": "Job not found"}, status_code=404)
        body = {name: job[name] for name in status_fields}
        if behaviour.terse_errors and job["status"] == "failed":
            body["errors"] = [TERSE_ERROR]  # the cause is in the log (and parsing_logs)
        return JSONResponse(body)

    async def forget_job(request: Request) -> Response:
        if not request.app.state.store.delete_job(request.path_params["job_id"]):
            return JSONResponse({"detail": "Job not found"}, status_code=404)
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/analyze/file", analyze_file, methods=["POST"]),
            Route("/analyze/status/{job_id}", job_status, methods=["GET"]),
            Route("/analyze/status/{job_id}", forget_job, methods=["DELETE"]),
        ],
        exception_handlers={HTTPException: _http_error, 500: _server_error},
        lifespan=lifespan,
    )


# FastAPI answers its own 404/405 and crashes with {"detail": ...}; so does the reference.
async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)  # registered for HTTPException only
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "Internal Server Error"}, status_code=500)
