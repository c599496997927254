from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from ingestion_assets.fetching.fetcher import SourceFetcher
from ingestion_assets.fetching.streaming import FetchLimits
from ingestion_assets.fetching.url_guard import UrlGuard

from .loopback import LoopbackServer


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture
def free_port() -> int:
    """A port nothing listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def limits() -> FetchLimits:
    return FetchLimits(max_bytes=5 * 1024 * 1024, connect_timeout=2, read_timeout=2, deadline=10)


@pytest.fixture
def fetcher(limits, tmp_path) -> SourceFetcher:
    """The loopback server's address is allowed; everything else private is not."""
    sources = tmp_path / "sources"
    sources.mkdir()
    return SourceFetcher(
        limits=limits, guard=UrlGuard(("127.0.0.1",)), local_sources_root=str(sources)
    )


@pytest.fixture
def staging(tmp_path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path


def needs(reason: str):
    """A test that needs something this machine lacks: skipped loudly on a developer's
    machine, a failure in CI (CI=true), where everything it needs must be present."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run this test, but {reason}")
    pytest.skip(reason)


# -- the catalogue database (a real PostgreSQL with exactly the tables of catalogue-schema.md) ----

# The reference stack's catalogue (deployment/catalogue): its tables, after the lines that
# create and open its database.
CATALOGUE_SQL = Path(__file__).parents[1] / "deployment" / "catalogue" / "001_catalogue.sql"


def catalogue_schema() -> str:
    return CATALOGUE_SQL.read_text("utf-8").split("\\connect catalogue", 1)[1]


@pytest.fixture(scope="session")
def catalogue_server():
    """One throw-away PostgreSQL server for every catalogue test of the session."""
    from .postgres import PostgresServer, server_bin

    if server_bin() is None:
        needs("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    server = PostgresServer(db="postgres_unused")
    yield server
    server.stop()


@pytest.fixture
def catalogue_url(catalogue_server) -> str:
    """A fresh catalogue database for one test, with exactly the tables of catalogue-schema.md."""
    import uuid

    import psycopg2

    name = f"catalogue_{uuid.uuid4().hex[:12]}"
    catalogue_server.create_database(name)
    url = f"postgresql://{catalogue_server.user}@127.0.0.1:{catalogue_server.port}/{name}"
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(catalogue_schema())
    conn.close()
    return url
