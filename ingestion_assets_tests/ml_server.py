"""The reference ml-analyze served over real HTTP (uvicorn in a thread), for any test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from ml_analyze_reference import create_app
from sqlalchemy import create_engine, text

SUPPLIER_ID = "3f2b8c1e-7d4a-4e6b-9a51-0c2d7e8f9a10"
FINISHED = ("completed", "failed")


class Api:
    """An HTTP client of one server with the calls the tests repeat."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def submit(self, path: Path, file_type: str, **extra: Any) -> str:
        """POST /analyze/file and return the job id, asserting the 202 shape."""
        body = {"file_url": str(path), "supplier_id": SUPPLIER_ID, "file_type": file_type, **extra}
        response = self.http.post("/analyze/file", json=body)
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["status"] == "pending" and answer["message"]
        return answer["job_id"]

    def status(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/analyze/status/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait(
        self, job_id: str, done: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 10
    ) -> dict[str, Any]:
        """Poll until `done(status)` holds (by default: the job finished); return that status."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.status(job_id)
            if done(job) if done else job["status"] in FINISHED:
                return job
            assert time.monotonic() < deadline, f"job never reached the expected state: {job}"
            time.sleep(0.02)


class RunningServer:
    """One uvicorn server on 127.0.0.1, on a port the OS chose."""

    def __init__(self, db_path: Path, port: int = 0, **options: Any) -> None:
        """`port`: 0 for any free port; a former server's port to restart "the same" service."""
        self.db_path = db_path
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(
            uvicorn.Config(create_app(db_path, **options), log_level="warning")
        )
        # Server.run installs no signal handlers outside the main thread.
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("reference ml-analyze did not start")
            time.sleep(0.01)
        self.api = Api(self.url)

    def stop(self) -> None:
        self.api.http.close()
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._socket.close()


class CatalogueSql:
    """Plain SQL on a catalogue database (PostgreSQL or SQLite), as a test sees it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = create_engine(url)

    def rows(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        """Run one statement in its own transaction; its rows, if it returns any."""
        with self._engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [dict(row._mapping) for row in result] if result.returns_rows else []

    def add_supplier(self, supplier_id: str = SUPPLIER_ID, name: str = "ООО Тест") -> str:
        self.rows(
            "INSERT INTO suppliers (id, name, source_type) VALUES (:id, :name, 'excel')",
            id=supplier_id,
            name=name,
        )
        return supplier_id

    def count(self, table: str) -> int:
        return int(self.rows(f"SELECT count(*) AS n FROM {table}")[0]["n"])

    def close(self) -> None:
        self._engine.dispose()
