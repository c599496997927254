"""A step waiting for a pool slot sleeps until its next claim, instead of spinning.

Dagster's in-process executor sleeps between claims for as long as
`InstanceConcurrencyContext.interval_to_next_pending_claim_check` says, and that returns
`min(0, ...)`: never more than zero. So a run whose step waits for a pool slot (ml_analyze
has 2) loops without sleeping and burns a whole core until the slot frees: 6.4 s of CPU in
6.4 s of waiting, measured with dagster 1.13.27; 1.13.29 has the same code (upstream tried
a fix in dagster-io/dagster#20367, closed unmerged). With ten runs at once on two cores, the
waiting runs take the CPU from the runs holding the slots.

`apply()` replaces the method with the interval Dagster meant: the time until the earliest
pending claim is due, never negative. The claims themselves are untouched: a step asks for
its slot exactly when it did before, now asleep in between.
"""

import time

from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext


def interval_to_next_pending_claim_check(self: InstanceConcurrencyContext) -> float:
    if not self._pending_claims:
        return 0.0
    now = time.time()
    due = min(self._pending_timeouts.values(), default=now)
    return max(0.0, due - now)


def apply() -> None:
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = (  # type: ignore[method-assign]
        interval_to_next_pending_claim_check
    )
