"""A small, strict-on-the-wire, liberal-on-answers client for ml-analyze's HTTP contract.

Retries: 3, after 1 s, 2 s, 4 s (capped at 30 s), on 500/502/503/504 and connection
errors. Any other 4xx fails at once with the service's own message.

On urllib3 (half the CPU per request of httpx): submissions, health checks and single status
reads. The status sensor's many polls a tick go through ml/polling.py, which shares this
module's reading of answers (`read_status`, `refusal`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3

from ..tls import tls_context
from .models import Health, JobStatus, Submission

RETRY_STATUSES = {500, 502, 503, 504}


class MLAnalyzeError(Exception):
    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable


class MLAnalyzeUnavailable(MLAnalyzeError):
    """Connection refused, timeouts, or 5xx after every retry."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message, status_code=status_code, retryable=True)


class JobNotFound(MLAnalyzeError):
    """404 on a status: the job expired or was lost in a service restart."""


@dataclass(frozen=True)
class Answer:
    """One HTTP answer of ml-analyze, read whole (its bodies are small)."""

    method: str
    path: str
    status_code: int
    reason: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def error_message(response: Answer) -> str:
    """The service's own words, from either error shape: {"detail": ...} or {"error", "message"}."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):
            return "; ".join(
                f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg', item)}"
                if isinstance(item, dict)
                else str(item)
                for item in detail
            )
        if "message" in body:
            return f"{body.get('error', 'Error')}: {body['message']}"
    return str(body)[:500]


Model = TypeVar("Model", Health, JobStatus, Submission)


def _parse(model: type[Model], response: Answer) -> Model:
    """A 2xx body as `model`; one that is not JSON or not the contract's shape is an
    MLAnalyzeError (pydantic's ValidationError is a ValueError), so that callers such as
    the status poller catch it like any other answer instead of crashing."""
    try:
        return model.model_validate(response.json())
    except ValueError as exc:
        raise MLAnalyzeError(
            f"ml-analyze answered {response.method} {response.path} with "
            f"HTTP {response.status_code} but an unreadable body: {exc} ({response.text[:200]!r})",
            status_code=response.status_code,
        ) from exc


def refusal(response: Answer) -> MLAnalyzeError | None:
    """What an answer of HTTP 400 or more means, in the service's words: a busy or broken
    service (500/502/503/504) is MLAnalyzeUnavailable, worth trying again; any other refusal
    fails at once. None for an answer below 400."""
    code, where = response.status_code, f"{response.method} {response.path}"
    if code < 400:
        return None
    if code in RETRY_STATUSES:
        return MLAnalyzeUnavailable(
            f"ml-analyze answered HTTP {code} to {where}: {error_message(response)}",
            status_code=code,
        )
    return MLAnalyzeError(
        f"ml-analyze refused {where}: HTTP {code}: {error_message(response)}", status_code=code
    )


def read_status(job_id: str, response: Answer) -> JobStatus:
    """A status answer as the job's status; raises JobNotFound on 404, else as `refusal`.
    Shared by the client and the status sensor's poller (ml/polling.py)."""
    if response.status_code == 404:
        raise JobNotFound(
            f"ml-analyze does not know job {job_id}: {error_message(response)}", status_code=404
        )
    failure = refusal(response)
    if failure is not None:
        raise failure
    return _parse(JobStatus, response)


class MLAnalyzeClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        max_connections: int = 16,
    ):
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._http: urllib3.PoolManager | None = urllib3.PoolManager(
            num_pools=1,
            maxsize=max_connections,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,  # the loop below retries, with the service's words in its errors
            ssl_context=tls_context(),
        )

    def close(self) -> None:
        if self._http is not None:
            self._http.clear()
            self._http = None

    def __enter__(self) -> MLAnalyzeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def health(self) -> Health:
        return _parse(Health, self._request("GET", "/health"))

    def submit(
        self,
        file_path: str,
        supplier_id: str,
        file_type: str,
        metadata: dict | None = None,
        priority_sheet: str | None = None,
    ) -> Submission:
        """Both generations of the service: `file_url` (the contract), `file_path` (a later
        branch prefers it), `priority_sheet` (the sheet to read; older services ignore it)."""
        body: dict[str, object] = {
            "file_url": file_path,
            "file_path": file_path,
            "supplier_id": supplier_id,
            "file_type": file_type,
        }
        if priority_sheet:
            body["priority_sheet"] = priority_sheet
        if metadata:
            body["metadata"] = metadata
        return _parse(Submission, self._request("POST", "/analyze/file", json=body))

    def status(self, job_id: str, *, retry: bool = True) -> JobStatus:
        """Raises JobNotFound on 404. `retry=False` makes one attempt (the sensor's polling)."""
        response = self._request("GET", f"/analyze/status/{job_id}", retry=retry, not_found_ok=True)
        return read_status(job_id, response)

    def _request(
        self, method: str, path: str, *, retry: bool = True, not_found_ok=False, **kwargs
    ) -> Answer:
        if self._http is None:
            raise RuntimeError("the ml-analyze client is closed")
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(1, attempts + 1):
            try:
                raw = self._http.request(
                    method, self.base_url + path, redirect=False, preload_content=True, **kwargs
                )
                response = Answer(method, path, raw.status, raw.reason or "", raw.data)
            except urllib3.exceptions.HTTPError as exc:  # refused, reset, timed out
                failure = MLAnalyzeUnavailable(
                    f"ml-analyze at {self.base_url} is unreachable: {exc!r}"
                )
            else:
                refused = refusal(response)
                if refused is None or (not_found_ok and response.status_code == 404):
                    return response
                if not isinstance(refused, MLAnalyzeUnavailable):
                    raise refused
                failure = refused
            if attempt < attempts:
                self._sleep(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))
        raise failure
