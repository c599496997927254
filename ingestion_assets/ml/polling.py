"""Many ml-analyze job statuses at once, for the status sensor's tick.

One event loop over a few keep-alive connections, on aiohttp (its HTTP parser is C): a status
request costs the tick about half the CPU of one made by the blocking client. Threads over
the blocking client did half as well: every request's Python-side work holds the GIL, so
2 to 8 threads took 0.27-0.35 s for 1,000 polls where this takes 0.14-0.2 s
(docs/benchmarks.md, figure 3).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..tls import tls_context
from .client import Answer, MLAnalyzeError, MLAnalyzeUnavailable, read_status
from .models import JobStatus

if TYPE_CHECKING:
    import aiohttp

# Requests in flight at once: more only queue at a single-process service.
POLL_CONNECTIONS = 8

Polled = JobStatus | MLAnalyzeError


def poll_statuses(
    base_url: str,
    job_ids: Sequence[str],
    *,
    budget_s: float,
    timeout_s: float,
    connections: int = POLL_CONNECTIONS,
) -> dict[str, Polled]:
    """One attempt per job, in the order given, started within `budget_s`: each job's status,
    or the error that answered for it (MLAnalyzeUnavailable, JobNotFound, MLAnalyzeError).

    Jobs not reached in time are left out: they keep their place for the next tick. The first
    answer saying the service is unreachable or overloaded stops the polling: no point in
    asking a service that is down once per job.
    """
    if not job_ids:
        return {}
    return asyncio.run(_poll(base_url.rstrip("/"), job_ids, budget_s, timeout_s, connections))


async def _poll(
    base_url: str, job_ids: Sequence[str], budget_s: float, timeout_s: float, connections: int
) -> dict[str, Polled]:
    # Imported here, not with the module: every run worker loads the code location, and only
    # the sensor polls (aiohttp is a tenth of a second of each worker's start-up).
    import aiohttp

    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    answers: dict[str, Polled] = {}
    queue = iter(job_ids)
    service_down = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=connections, ssl=tls_context())
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            # One event loop: taking the next job needs no lock.
            while loop.time() <= deadline and not service_down.is_set():
                job_id = next(queue, None)
                if job_id is None:
                    return
                answer = answers[job_id] = await _status(session, base_url, job_id)
                if isinstance(answer, MLAnalyzeUnavailable):
                    service_down.set()

        await asyncio.gather(*(worker() for _ in range(min(connections, len(job_ids)))))
    return answers


async def _status(session: aiohttp.ClientSession, base_url: str, job_id: str) -> Polled:
    import aiohttp  # loaded already by _poll

    path = f"/analyze/status/{job_id}"
    try:
        async with session.get(base_url + path, allow_redirects=False) as response:
            answer = Answer(
                "GET", path, response.status, response.reason or "", await response.read()
            )
    except (TimeoutError, aiohttp.ClientError) as exc:  # refused, reset, timed out
        return MLAnalyzeUnavailable(f"ml-analyze at {base_url} is unreachable: {exc!r}")
    try:
        return read_status(job_id, answer)
    except MLAnalyzeError as exc:
        return exc
