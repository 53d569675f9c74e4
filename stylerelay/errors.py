"""Errors of the client, drawn as a tree.

ClientError                base: everything the client raises on purpose
├── Unreachable            the relay could not be reached (connection refused, DNS, ...)
├── ApiError               the relay refused a request: `status` and its `message`
│   ├── BadRequest         400: unknown style, bad parameter, unusable image
│   ├── Unauthorized       401: the API key is unknown or revoked
│   ├── NotFound           404: no such job, or no result (yet, or any more)
│   ├── Conflict           409: the job is not in a state that allows this
│   ├── TooManyRequests    429: a limit; `retry_after` seconds when the relay says
│   └── RelayUnavailable   503: the queue or the relay is full; `retry_after` likewise
└── JobEnded               the job ended without a result; `job` is its final view
    ├── JobFailed          it failed (`job["error"]` says why)
    └── JobCancelled       it was cancelled
"""

from typing import Any


class ClientError(Exception):
    """Base of every error the client raises on purpose."""


class Unreachable(ClientError):
    """The relay could not be reached."""


class ApiError(ClientError):
    """The relay refused a request: `status`, and `message` from its `{"error": ...}`."""

    status = 0

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.message = message
        self.retry_after = retry_after
        """Seconds to wait before trying again, from the Retry-After header (429, 503)."""


class BadRequest(ApiError):
    """400: the relay does not accept the request as sent."""


class Unauthorized(ApiError):
    """401: the API key is unknown or revoked."""


class NotFound(ApiError):
    """404: no such job, or the thing asked for is not (or no longer) there."""


class Conflict(ApiError):
    """409: the job is not in a state that allows this."""


class TooManyRequests(ApiError):
    """429: a limit of this client (open jobs, jobs a minute or a day, uploads)."""


class RelayUnavailable(ApiError):
    """503: the relay's queue (or upload room) is full for now."""


BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    429: TooManyRequests,
    503: RelayUnavailable,
}


def api_error(status: int, message: str, retry_after: float | None = None) -> ApiError:
    """The error for a refused request, of the class its status names."""
    return BY_STATUS.get(status, ApiError)(status, message, retry_after)


class JobEnded(ClientError):
    """The job ended without a result."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__(f"Job {job.get('id')} {job.get('state')}: {job.get('error') or ''}")
        self.job = job


class JobFailed(JobEnded):
    """The job failed; `job["error"]` says why."""


class JobCancelled(JobEnded):
    """The job was cancelled."""
