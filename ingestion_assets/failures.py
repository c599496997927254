"""One way to fail a step: the user's words first, and run retries only where they can help.

Dagster's run retries (dagster.yaml) re-run a failed run from the failed step. A cause that
will not heal (a 404, a file too large, a refused row) must not spend them, nor one that
another layer retries already (a source that is down: the source retry sensor; ml-analyze
down: the submission waits). The run is tagged so the daemon does not retry it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from dagster import AssetExecutionContext, AssetKey, Failure

from .errors import CourierError

Step = TypeVar("Step", bound=Callable[..., Any])

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


def step_failure(
    context: AssetExecutionContext,
    error: CourierError,
    message: str | None = None,
    *,
    retried_elsewhere: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> Failure:
    """The Failure for a cause the courier named: `message` (the error's own words by
    default); the step's retry policy may try again if the cause may heal, and run retries
    stay on only when it may heal and no other layer retries it (`retried_elsewhere`)."""
    return failure(
        context,
        message or str(error),
        retryable=error.retryable,
        retried_elsewhere=retried_elsewhere,
        metadata=metadata,
    )


def names_the_supplier(step: Step) -> Step:
    """A supplier step's safety net: an error nobody foresaw still fails the step with the
    supplier named first ("Supplier 'X' (key): raw_download failed unexpectedly: …"), not with
    Dagster's "Error occurred while executing op" and a stack trace. Run retries stay on: an
    unknown cause may heal."""

    def fail(context: AssetExecutionContext, exc: Exception) -> Failure:
        return failure(
            context,
            f"{supplier_label(context)}: {context.op_def.name} failed unexpectedly: "
            f"{type(exc).__name__}: {exc}",
            retryable=True,
        )

    if inspect.isgeneratorfunction(step):

        @functools.wraps(step)
        def generator_step(
            context: AssetExecutionContext, *args: Any, **kwargs: Any
        ) -> Iterator[Any]:
            try:
                yield from step(context, *args, **kwargs)
            except Failure:
                raise
            except Exception as exc:
                raise fail(context, exc) from exc

        return generator_step  # type: ignore[return-value]

    @functools.wraps(step)
    def plain_step(context: AssetExecutionContext, *args: Any, **kwargs: Any) -> Any:
        try:
            return step(context, *args, **kwargs)
        except Failure:
            raise
        except Exception as exc:
            raise fail(context, exc) from exc

    return plain_step  # type: ignore[return-value]


def supplier_label(context: AssetExecutionContext) -> str:
    """ "Supplier 'Name' (key)", the name from the last master sheet read when it has it."""
    key = context.partition_key
    try:
        records = context.instance.fetch_materializations(AssetKey("supplier_registry"), limit=1)
        latest = records.records[0].asset_materialization if records.records else None
        names = latest.metadata.get("supplier_names") if latest else None
        name = str(names.value.get(key, key)) if names is not None else key
    except Exception:  # the label must never hide the error it reports
        name = key
    return f"Supplier '{name}' ({key})"
