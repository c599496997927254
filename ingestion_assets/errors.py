"""The one error model: every cause the courier can meet is a `CourierError` that says whether
trying again later may help. `failures.step_failure` turns one into the step's Failure."""


class CourierError(Exception):
    """A cause the courier can name. `retryable`: trying again later may help (a 5xx, a
    timeout, a full disk); False for a cause that will not heal by itself (a 404, a file too
    large, a refused submission)."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None):
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable
