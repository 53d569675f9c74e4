"""Errors of the relay, drawn as a tree.

    RelayError                 base: every error the relay reports to a person
    ├── ConfigError            a flag or STYLERELAY_* variable is missing or malformed
    ├── TokenError             a node token cannot be added, found or revoked
    ├── StoreError             a new job could not be written to the database (disk full)
    └── ApiError               an HTTP request is refused; carries the status code
        ├── BadRequest         400: unknown style or method, bad parameter, unusable image
        ├── Unauthorized       401: an unknown, revoked or malformed API key
        ├── Forbidden          403: a page of another site may not do this (Origin)
        ├── NotFound           404: no such job (or its result has expired)
        ├── RequestTimeout     408: the request body did not arrive in time
        ├── Conflict           409: the job is not in a state that allows this
        ├── TooLarge           413: an upload is over the byte cap
        ├── UnsupportedMedia   415: a compressed (Content-Encoding) request body
        ├── TooManyRequests    429: rate limit or too many open jobs from one client
        ├── QueueFull          503: the queue is at capacity; carries Retry-After
        ├── Busy               503: the relay holds all the unfinished uploads it can
        └── InsufficientStorage 507: the relay's disk is full or at its cap

Each carries a message a person can read; the API answers it as JSON `{"error": "..."}`.
"""


class RelayError(Exception):
    """Base of every error the relay reports."""


class ConfigError(RelayError):
    """A flag or environment variable is missing or malformed."""


class TokenError(RelayError):
    """A node token cannot be added, found or revoked."""


class StoreError(RelayError):
    """A new job could not be written to the database (a full disk, say)."""


class ApiError(RelayError):
    """An HTTP request is refused; `status` is the response code."""

    status = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ApiError):
    """400: the request names something unknown or carries an unusable value."""

    status = 400


class Unauthorized(ApiError):
    """401: the request's API key is unknown, revoked or malformed."""

    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, {"WWW-Authenticate": 'Bearer realm="stylerelay"'})


class Forbidden(ApiError):
    """403: the request comes from a page of a site this relay does not trust."""

    status = 403


class RequestTimeout(ApiError):
    """408: the request body did not arrive within the time allowed."""

    status = 408


class UnsupportedMedia(ApiError):
    """415: the request body is in an encoding the relay does not read."""

    status = 415


class NotFound(ApiError):
    """404: no such job, or its result has expired."""

    status = 404


class Conflict(ApiError):
    """409: the job is not in a state that allows the request."""

    status = 409


class TooLarge(ApiError):
    """413: an upload is over the byte cap."""

    status = 413


class TooManyRequests(ApiError):
    """429: too many requests, or too many open jobs, from one client."""

    status = 429


class QueueFull(ApiError):
    """503: the queue is full; the client should retry after `retry_after` seconds."""

    status = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class InsufficientStorage(ApiError):
    """507: the relay cannot store anything more now (its disk is full or at its cap)."""

    status = 507


class Busy(ApiError):
    """503: the relay is holding all the unfinished uploads it can; retry after a while."""

    status = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"Retry-After": str(retry_after)})
        self.retry_after = retry_after
