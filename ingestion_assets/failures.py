"""One way to fail a step: the user's words first, and run retries only where they can help.

Dagster's run retries (dagster.yaml) re-run a failed run from the failed step. A cause that
will not heal (a 404, a file too large, a refused row) must not spend them, nor one that
another layer retries already (a source that is down: the source retry sensor; ml-analyze
down: the submission waits). The run is tagged so the daemon does not retry it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import AssetExecutionContext, Failure

NO_RUN_RETRY = {"dagster/retry_on_asset_or_op_failure": "false"}


def no_run_retry(context: AssetExecutionContext) -> None:
    context.instance.add_run_tags(context.run_id, NO_RUN_RETRY)


def failure(
    context: AssetExecutionContext,
    message: str,
    *,
    retryable: bool,
    retried_elsewhere: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> Failure:
    """The Failure to raise. `retryable`: the step's own retry policy may try again;
    run retries stay on only for a cause that may heal and that nothing else retries."""
    if not retryable or retried_elsewhere:
        no_run_retry(context)
    return Failure(message, allow_retries=retryable, metadata=dict(metadata or {}))
