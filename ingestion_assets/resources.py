"""Typed resources, fed from environment variables (see .env.example for each one)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from dagster import ConfigurableResource, EnvVar
from dagster._config.field_utils import IntEnvVar  # what EnvVar.int returns; not exported

from .catalogue.store import Catalogue
from .fetching.fetcher import SourceFetcher, is_local_path
from .fetching.streaming import FetchLimits
from .fetching.url_guard import UrlGuard
from .handoff.shared_volume import SharedVolume
from .inbox.scanner import in_inbox
from .ml.client import MLAnalyzeClient
from .staging import staging_dir

DEV_DATA = Path(".data")


class MasterSheetResource(ConfigurableResource["MasterSheetResource"]):
    """Where the list of suppliers lives: a Google Sheet URL, an export URL, a CSV/XLSX path or URL."""

    url: str = str(DEV_DATA / "demo" / "master_sheet.csv")
    worksheet: str = "Suppliers"
    # The master sync's schedule; analyses older than two intervals are stale. 0: no schedule
    # (syncs are started by hand or from outside), and nothing is flagged stale.
    sync_interval_hours: int = 8


class FetchResource(ConfigurableResource["FetchResource"]):
    """How suppliers' files are fetched, and the guards around it."""

    max_file_size_mb: int = 50
    connect_timeout_seconds: int = 10
    read_timeout_seconds: int = 30
    download_deadline_seconds: int = 600
    ssrf_allowed_hosts: str = ""  # comma-separated hosts, addresses or CIDRs; empty = none
    local_sources_root: str = ""  # local source files are only read under this folder
    google_credentials_path: str = ""  # service-account JSON, for private Google Sheets
    downloads_dir: str = str(DEV_DATA / "downloads")  # staging: the courier's own copies
    inbox_dir: str = ""  # files handed in by hand: <inbox>/<supplier key>/<file>; empty: no inbox
    # A source that is down: fetched at most this many times in one sync, the next attempt
    # this long after the failure, doubling (5, 10, 20 min by default).
    max_fetches: int = 4
    source_retry_delay_seconds: int = 300

    def fetcher(self) -> SourceFetcher:
        return SourceFetcher(
            limits=FetchLimits(
                max_bytes=self.max_file_size_mb * 1024 * 1024,
                connect_timeout=self.connect_timeout_seconds,
                read_timeout=self.read_timeout_seconds,
                deadline=self.download_deadline_seconds,
            ),
            guard=UrlGuard.from_csv(self.ssrf_allowed_hosts),
            local_sources_root=self.local_sources_root or None,
            google_credentials_path=self.google_credentials_path or None,
        )

    def is_inbox_file(self, source: str) -> bool:
        return (
            bool(self.inbox_dir)
            and is_local_path(source)
            and in_inbox(source, Path(self.inbox_dir))
        )

    def fetcher_for(self, source: str) -> SourceFetcher:
        """Files handed in through the inbox are read from the inbox; other local paths only
        from LOCAL_SOURCES_ROOT."""
        fetcher = self.fetcher()
        if self.is_inbox_file(source):
            return dataclasses.replace(fetcher, local_sources_root=self.inbox_dir)
        return fetcher

    def staging_dir(self, supplier_key: str) -> Path:
        return staging_dir(self.downloads_dir, supplier_key)


class SharedVolumeResource(ConfigurableResource["SharedVolumeResource"]):
    """The folder shared with ml-analyze, as the courier mounts it and as ml-analyze does."""

    uploads_dir: str = str(DEV_DATA / "shared" / "uploads")
    ml_uploads_dir: str = ""  # empty: ml-analyze mounts it at the same path
    cleanup_ttl_hours: int = 24

    def volume(self) -> SharedVolume:
        return SharedVolume(Path(self.uploads_dir).resolve())

    def path_for_ml(self, path: Path) -> str:
        """The same file as ml-analyze sees it."""
        if not self.ml_uploads_dir:
            return str(path)
        return str(Path(self.ml_uploads_dir) / path.relative_to(self.volume().root))


class MLAnalyzeResource(ConfigurableResource["MLAnalyzeResource"]):
    """ml-analyze: where it is, and how the courier follows its jobs."""

    url: str = "http://127.0.0.1:8001"
    use_ml_processing: bool = True  # the global switch: False wins over the per-supplier column
    timeout_seconds: int = 30
    poll_interval_seconds: int = 5
    job_timeout_minutes: int = 30
    max_retries: int = 3  # attempts per file, the first one included
    retry_delay_seconds: int = 60  # before a new attempt of a failed job; doubles each attempt
    wait_limit_minutes: int = 24 * 60  # how long a submission waits for ml-analyze to be ready
    submit_when_degraded: bool = False  # "degraded" counts as not ready unless this is set
    # What the deployed service parses; others are converted (CSV → XLSX) or refused up front.
    # The production service: excel,pdf. The reference server: all three.
    file_types: str = "excel,csv,pdf"
    # The production service reads only a workbook's active sheet: the courier then hands it a
    # workbook of the master sheet's `sheet_name` alone. Newer services read `priority_sheet`.
    reads_active_sheet_only: bool = False

    def client(self, *, retries: int = 3, timeout: float | None = None) -> MLAnalyzeClient:
        return MLAnalyzeClient(
            self.url,
            retries=retries,
            timeout=self.timeout_seconds if timeout is None else timeout,
        )

    def parses(self) -> frozenset[str]:
        return frozenset(t.strip().lower() for t in self.file_types.split(",") if t.strip())


class CatalogueResource(ConfigurableResource["CatalogueResource"]):
    """The catalogue database ml-analyze writes into (PostgreSQL; SQLite for `make dev`).
    Empty: no catalogue: suppliers are not synced into it and match counts are not read."""

    database_url: str = ""

    @contextlib.contextmanager
    def session(self) -> Iterator[Catalogue | None]:
        """The catalogue (None when not configured), its connections closed afterwards."""
        if not self.database_url:
            yield None
            return
        with Catalogue(self.database_url) as store:
            yield store


def _env(name: str, *, as_int: bool = False) -> EnvVar | IntEnvVar | None:
    """EnvVar when the variable is set (the UI shows where a value came from), else None: the
    resource's default."""
    if name not in os.environ:
        return None
    return EnvVar.int(name) if as_int else EnvVar(name)


def _env_bool(name: str) -> bool | None:
    """Booleans are parsed here: Dagster's config types do not coerce 'false' from a string."""
    if name not in os.environ:
        return None
    return os.environ[name].strip().lower() not in ("false", "0", "no", "off", "")


Resource = TypeVar("Resource", bound=ConfigurableResource[Any])


def _configured(resource_cls: type[Resource], **fields: object) -> Resource:
    return resource_cls(**{k: v for k, v in fields.items() if v is not None})


class CourierResources(TypedDict):
    master_sheet: MasterSheetResource
    fetch: FetchResource
    shared_volume: SharedVolumeResource
    ml_analyze: MLAnalyzeResource
    catalogue: CatalogueResource


def resources_from_env() -> CourierResources:
    return {
        "master_sheet": _configured(
            MasterSheetResource,
            url=_env("MASTER_SHEET_URL"),
            worksheet=_env("MASTER_SHEET_WORKSHEET"),
            sync_interval_hours=_env("SYNC_INTERVAL_HOURS", as_int=True),
        ),
        "fetch": _configured(
            FetchResource,
            max_file_size_mb=_env("MAX_FILE_SIZE_MB", as_int=True),
            connect_timeout_seconds=_env("CONNECT_TIMEOUT_SECONDS", as_int=True),
            read_timeout_seconds=_env("READ_TIMEOUT_SECONDS", as_int=True),
            download_deadline_seconds=_env("DOWNLOAD_DEADLINE_SECONDS", as_int=True),
            ssrf_allowed_hosts=_env("SSRF_ALLOWED_HOSTS"),
            local_sources_root=_env("LOCAL_SOURCES_ROOT"),
            google_credentials_path=_env("GOOGLE_CREDENTIALS_PATH"),
            downloads_dir=_env("DOWNLOADS_DIR"),
            inbox_dir=_env("INBOX_DIR"),
            max_fetches=_env("SOURCE_MAX_FETCHES", as_int=True),
            source_retry_delay_seconds=_env("SOURCE_RETRY_DELAY_SECONDS", as_int=True),
        ),
        "shared_volume": _configured(
            SharedVolumeResource,
            uploads_dir=_env("SHARED_UPLOADS_DIR"),
            ml_uploads_dir=_env("ML_SHARED_UPLOADS_DIR"),
            cleanup_ttl_hours=_env("FILE_CLEANUP_TTL_HOURS", as_int=True),
        ),
        "ml_analyze": _configured(
            MLAnalyzeResource,
            url=_env("ML_ANALYZE_URL"),
            use_ml_processing=_env_bool("USE_ML_PROCESSING"),
            poll_interval_seconds=_env("ML_POLL_INTERVAL_SECONDS", as_int=True),
            job_timeout_minutes=_env("ML_JOB_TIMEOUT_MINUTES", as_int=True),
            max_retries=_env("ML_MAX_RETRIES", as_int=True),
            retry_delay_seconds=_env("ML_RETRY_DELAY_SECONDS", as_int=True),
            wait_limit_minutes=_env("ML_WAIT_LIMIT_MINUTES", as_int=True),
            submit_when_degraded=_env_bool("ML_SUBMIT_WHEN_DEGRADED"),
            file_types=_env("ML_FILE_TYPES"),
            reads_active_sheet_only=_env_bool("ML_READS_ACTIVE_SHEET_ONLY"),
        ),
        "catalogue": _configured(CatalogueResource, database_url=_env("CATALOGUE_DATABASE_URL")),
    }


def configured(value: int) -> int:
    """A resource's int setting at definition time (a schedule's cron): the environment's
    value for a field fed by EnvVar.int, else the value itself."""
    if not isinstance(value, IntEnvVar):
        return value
    found = value.get_value()
    if found is None:
        raise ValueError(f"{value.name} is not set")
    return found
