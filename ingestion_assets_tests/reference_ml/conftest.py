"""Fixtures serving the reference ml-analyze over real HTTP (uvicorn in a thread).

Test modules reach these helpers only through fixtures: this directory is
not a package, so `import conftest` would depend on pytest's import mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ingestion_assets_tests.ml_server import SUPPLIER_ID, Api, CatalogueSql, RunningServer


@pytest.fixture
def start_server() -> Iterator[Callable[..., RunningServer]]:
    """start_server(db_path, **create_app options) -> RunningServer; all stopped at teardown."""
    servers: list[RunningServer] = []

    def start(db_path: Path, **options: Any) -> RunningServer:
        servers.append(RunningServer(db_path, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A full-speed server for tests that only submit and read jobs."""
    server = RunningServer(tmp_path_factory.mktemp("refml-db") / "jobs.sqlite3")
    yield server
    server.stop()


@pytest.fixture
def api(shared_server: RunningServer) -> Api:
    return shared_server.api


@pytest.fixture
def supplier_id() -> str:
    return SUPPLIER_ID


@pytest.fixture
def catalogue(catalogue_url: str) -> Iterator[CatalogueSql]:
    """A fresh PostgreSQL catalogue (deployment/catalogue/001_catalogue.sql), for plain SQL."""
    database = CatalogueSql(catalogue_url)
    yield database
    database.close()


@pytest.fixture
def sqlite_catalogue(tmp_path: Path) -> Iterator[CatalogueSql]:
    """An embedded SQLite catalogue URL, as `make dev` uses; no file until a server opens it."""
    database = CatalogueSql(f"sqlite:///{tmp_path / 'catalogue.sqlite3'}")
    yield database
    database.close()
