from ..errors import CourierError


class FetchError(CourierError):
    """A file could not be fetched. The message says why, in words a data team can act on.

    `retryable` is True when trying again later may help (a 5xx, a timeout, a dropped
    connection); False when it cannot (a 404, a file too large, a forbidden address).
    """


class PermanentFetchError(FetchError):
    def __init__(self, message: str):
        super().__init__(message, retryable=False)


class TransientFetchError(FetchError):
    def __init__(self, message: str):
        super().__init__(message, retryable=True)
