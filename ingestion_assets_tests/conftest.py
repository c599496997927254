from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from urllib.parse import parse_qs

import gspread
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dagster import instance_for_test
from hypothesis import settings

from ingestion_assets.fetching import streaming
from ingestion_assets.fetching.fetcher import SourceFetcher
from ingestion_assets.fetching.streaming import FetchLimits
from ingestion_assets.fetching.url_guard import UrlGuard

from .loopback import LoopbackServer, send

# Property tests (test_properties.py, test_completeness.py): the same examples on every
# machine (derandomized, no example database), no per-example deadline (a loaded CI machine
# is slow, not wrong), 200 examples unless a test asks for more.
settings.register_profile(
    "courier", derandomize=True, database=None, deadline=None, max_examples=200
)
settings.load_profile("courier")


@pytest.fixture
def instance():
    """A throw-away Dagster instance in a temp dir, which is DAGSTER_HOME while the test runs
    (`instance.root_directory`: a subprocess given that DAGSTER_HOME reads the same instance)."""
    with instance_for_test() as inst:
        yield inst


@pytest.fixture
def ml_service(tmp_path):
    """The reference ml-analyze over real HTTP, fresh for one test (its own SQLite job store)."""
    from .ml_server import RunningServer

    service = RunningServer(tmp_path / "ml.sqlite3")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def module_ml_service(tmp_path_factory):
    """The reference ml-analyze shared by the tests of one module (jobs of earlier tests stay in
    its store), with four jobs at a time: as many as a test follows at once."""
    from .ml_server import RunningServer

    service = RunningServer(
        tmp_path_factory.mktemp("ml-service-db") / "jobs.sqlite3", max_concurrent_jobs=4
    )
    yield service
    service.stop()


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
def progress_every_chunk(monkeypatch):
    """Progress reported at every chunk: a test's download lasts less than the interval."""
    monkeypatch.setattr(streaming, "PROGRESS_EVERY_S", 0.0)


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


def bytes_received(message: str) -> float:
    """The bytes a deadline error says had arrived: `... (20.0 KB received)`."""
    match = re.search(r"\(([\d.]+) (B|KB|MB|GB) received\)", message)
    assert match, message
    return float(match[1]) * 1024 ** ("B", "KB", "MB", "GB").index(match[2])


# -- the catalogue database (a real PostgreSQL with exactly the tables of catalogue-schema.md) ----

# The reference stack's catalogue (deployment/catalogue): its tables, after the lines that
# create and open its database.
CATALOGUE_SQL = Path(__file__).parents[1] / "deployment" / "catalogue" / "001_catalogue.sql"


def catalogue_schema() -> str:
    return CATALOGUE_SQL.read_text("utf-8").split("\\connect catalogue", 1)[1]


@pytest.fixture(scope="session")
def postgres_server():
    """One throw-away PostgreSQL server (trust auth on loopback, superuser `postgres`) for the
    whole session; each test creates its own database on it."""
    from .postgres import PostgresServer, server_bin

    if server_bin() is None:
        needs("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    server = PostgresServer(db="postgres_unused")
    yield server
    server.stop()


@pytest.fixture
def catalogue_url(postgres_server) -> str:
    """A fresh catalogue database for one test, with exactly the tables of catalogue-schema.md."""
    import uuid

    import psycopg2

    name = f"catalogue_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(name)
    url = f"postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/{name}"
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(catalogue_schema())
    conn.close()
    return url


# --- Google: gspread's real service-account code against the loopback server ----------------

SHEET_ID = "1aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789abcdEF_"  # 44 characters, like Google's


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def google(server, tmp_path, rsa_key, monkeypatch):
    """A service-account file whose token endpoint and Drive API are the loopback server."""
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    token_uri = server.url("/token")
    credentials = tmp_path / "service-account.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "courier-tests",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "courier@courier-tests.iam.gserviceaccount.com",
                "client_id": "1234567890",
                "token_uri": token_uri,
            }
        )
    )
    token_requests: list[dict] = []

    def token(req):
        body = req.rfile.read(int(req.headers.get("Content-Length", 0))).decode()
        token_requests.append(parse_qs(body))
        send(
            req,
            200,
            json.dumps({"access_token": "t", "expires_in": 3600, "token_type": "Bearer"}).encode(),
            "application/json",
        )

    server.route("/token", token)
    monkeypatch.setattr(gspread.urls, "DRIVE_FILES_API_V3_URL", server.url("/drive/v3/files"))

    class Google:
        path = str(credentials)
        export_path = f"/drive/v3/files/{SHEET_ID}/export"
        sheet_url = f"https://docs.google.com/spreadsheets/d/{SHEET_ID}/edit#gid=0"
        tokens = token_requests
        public_key = rsa_key.public_key()

    return Google
