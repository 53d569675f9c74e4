"""Stylerelay's Python client: `stylerelay.client` (asyncio and sync) and the `stylerelay`
command. Needs only aiohttp; Pillow only to send PIL images."""

from stylerelay.client import AsyncClient, Client
from stylerelay.errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    JobCancelled,
    JobFailed,
    NotFound,
    RelayUnavailable,
    TooManyRequests,
    Unauthorized,
    Unreachable,
)

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "JobCancelled",
    "JobFailed",
    "NotFound",
    "RelayUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "Unreachable",
]
