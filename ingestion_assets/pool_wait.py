"""A step waiting for a pool slot asks for it once a second, asleep in between.

Dagster's in-process executor sleeps between claims for as long as
`InstanceConcurrencyContext.interval_to_next_pending_claim_check` says, and that returns
`min(0, ...)`: never more than zero. So a run whose step waits for a pool slot (ml_analyze
has 2) loops without sleeping and burns a whole core until the slot frees: 6.4 s of CPU in
6.4 s of waiting, measured with dagster 1.13.27; 1.13.29 has the same code (upstream tried
a fix in dagster-io/dagster#20367, closed unmerged). With ten runs at once on two cores, the
waiting runs take the CPU from the runs holding the slots.

Asleep, the claims' own back-off would show: Dagster spaces a step's claims 1 s, 1.1 s, 1.21 s
… apart, up to 15 s. A freed slot is assigned at once to the step that has waited longest,
and sits unused until that step's next claim; a run cancelled meanwhile ends only when the
sleep does. So the claims stay one second apart (`CLAIM_EVERY_S`): a few queries a second
for each waiting step, a freed slot taken within a second.

`apply()` replaces the method with the interval to the earliest pending claim, never
negative, and caps Dagster's claim interval at `CLAIM_EVERY_S`.
"""

import time

from dagster._core.execution.plan import instance_concurrency_context as claims
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

CLAIM_EVERY_S = 1.0
_dagster_claim_interval = claims._calculate_timeout_interval


def interval_to_next_pending_claim_check(self: InstanceConcurrencyContext) -> float:
    if not self._pending_claims:
        return 0.0
    now = time.time()
    due = min(self._pending_timeouts.values(), default=now)
    return max(0.0, due - now)


def claim_interval(sleep_interval: float | None, pending_claim_count: int) -> float:
    return min(CLAIM_EVERY_S, _dagster_claim_interval(sleep_interval, pending_claim_count))


def apply() -> None:
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = (  # type: ignore[method-assign]
        interval_to_next_pending_claim_check
    )
    claims._calculate_timeout_interval = claim_interval
