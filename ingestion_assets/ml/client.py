"""A small, strict-on-the-wire, liberal-on-answers client for ml-analyze's HTTP contract.

Retries (tenacity): 3, after about 1 s, 2 s, 4 s (exponential, capped at 30 s, up to a second
of jitter so that many runs do not retry in step), on 500/502/503/504 and connection errors;
a `Retry-After` the service sends is honoured (capped too). Any other 4xx fails at once with
the service's own message.

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

import tenacity
import urllib3

from ..errors import CourierError
from ..tls import tls_context_for
from .models import Health, JobStatus, Submission

RETRY_STATUSES = {500, 502, 503, 504}


class MLAnalyzeError(CourierError):
    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = False):
        super().__init__(message, retryable=retryable)
        self.status_code = status_code


class MLAnalyzeUnavailable(MLAnalyzeError):
    """Connection refused, timeouts, or 5xx after every retry. `retry_after`: the seconds the
    service asked to wait (its `Retry-After` header), when it said."""

    def __init__(
        self, message: str, status_code: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message, status_code=status_code, retryable=True)
        self.retry_after = retry_after


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
    retry_after: float | None = None  # seconds, from a Retry-After header in seconds

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
            retry_after=response.retry_after,
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


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header given in seconds; None for none, or for an HTTP date (ml-analyze
    sends seconds; a date is left to the exponential wait)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class MLAnalyzeClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        jitter: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        max_connections: int = 16,
    ):
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.jitter = jitter
        self._sleep = sleep
        self._http: urllib3.PoolManager | None = urllib3.PoolManager(
            num_pools=1,
            maxsize=max_connections,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,  # tenacity retries (below), with the service's words in its errors
            ssl_context=tls_context_for(self.base_url),
        )

    def close(self) -> None:
        if self._http is not None:
            self._http.clear()
            self._http = None

    def __enter__(self) -> MLAnalyzeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> Health:
        return _parse(Health, self._request("GET", "/health"))

    def submit(
        self,
        file_path: str,
        supplier_id: str,
        file_type: str,
        metadata: dict[str, str] | None = None,
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
        return _parse(Submission, self._request("POST", "/analyze/file", body=body))

    def status(self, job_id: str, *, retry: bool = True) -> JobStatus:
        """Raises JobNotFound on 404. `retry=False` makes one attempt (the sensor's polling)."""
        response = self._request("GET", f"/analyze/status/{job_id}", retry=retry, not_found_ok=True)
        return read_status(job_id, response)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Exponential with jitter; what the service asked for (Retry-After) when it asked for
        longer. Both capped at max_backoff."""
        exponential = tenacity.wait_exponential_jitter(
            initial=self.backoff, max=self.max_backoff, jitter=self.jitter
        )(state)
        failure = state.outcome.exception() if state.outcome is not None else None
        asked = failure.retry_after if isinstance(failure, MLAnalyzeUnavailable) else None
        return min(max(exponential, asked or 0.0), self.max_backoff)

    def _request(
        self,
        method: str,
        path: str,
        *,
        retry: bool = True,
        not_found_ok: bool = False,
        body: object = None,
    ) -> Answer:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(1 + (self.retries if retry else 0)),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(MLAnalyzeUnavailable),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self._attempt, method, path, not_found_ok, body)

    def _attempt(self, method: str, path: str, not_found_ok: bool, body: object) -> Answer:
        """One request: the answer, or the error it means (MLAnalyzeUnavailable: worth again)."""
        if self._http is None:
            raise RuntimeError("the ml-analyze client is closed")
        try:
            raw = self._http.request(
                method,
                self.base_url + path,
                json=body,  # a JSON body when given (a submission)
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.HTTPError as exc:  # refused, reset, timed out
            raise MLAnalyzeUnavailable(
                f"ml-analyze at {self.base_url} is unreachable: {exc!r}"
            ) from exc
        response = Answer(
            method,
            path,
            raw.status,
            raw.reason or "",
            raw.data,
            retry_after_seconds(raw.headers.get("Retry-After")),
        )
        refused = refusal(response)
        if refused is None or (not_found_ok and response.status_code == 404):
            return response
        raise refused
