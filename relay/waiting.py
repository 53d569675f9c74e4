"""`POST /api/jobs?wait=SECONDS`: hold the answer until the job ends, at most a minute.

The wait listens on the job's event bus (`relay.events`), the same stream its WebSocket
gets, so nothing polls the job. aiohttp does not cancel a handler whose client hung up,
so the wait also looks at the connection once a second: a client that leaves stops the
wait (and frees its subscription) within a second. The job itself goes on, as one
submitted without `wait` does.
"""

import asyncio
import contextlib
import math

from aiohttp import web

from relay.cluster.blobs import file_response
from relay.errors import BadRequest
from relay.events import FINAL_TYPES
from relay.jobs import JobService
from relay.model import JobRecord, JobState, result_name
from relay.views import public_job

MAX_WAIT = 60.0
"""The longest a request may wait for its job, in seconds."""
ALIVE_CHECK = 1.0
"""Seconds between looks at whether the waiting client is still connected."""
NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def wait_seconds(text: str | None) -> float:
    """The `wait` query value in seconds (0 for none); BadRequest unless 0 to 60."""
    if text is None:
        return 0.0
    number = math.nan
    if len(text) <= 20:
        with contextlib.suppress(ValueError):
            number = float(text)
    if not 0 <= number <= MAX_WAIT:
        raise BadRequest(f"`wait` must be a number of seconds from 0 to {MAX_WAIT:.0f}.")
    return number


def _connected(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def until_ended(
    request: web.Request, service: JobService, job_id: str, wait: float
) -> JobRecord | None:
    """The job once ended, if it ends within `wait` seconds and the client stays; else None."""
    sub = service.bus.subscribe(job_id)
    try:
        # Subscribed before reading the state: an end in between is seen either way.
        job = await service.find(job_id)
        if job.state.final:
            return job
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0 and _connected(request):
            try:
                event = await asyncio.wait_for(sub.get(), min(left, ALIVE_CHECK))
            except TimeoutError:
                continue
            if event["type"] in FINAL_TYPES:
                return await service.find(job_id)
        return None
    finally:
        sub.close()


def wants_png(request: web.Request) -> bool:
    """Whether the request's Accept header names `image/png`."""
    accept = request.headers.get("Accept", "")
    return "image/png" in (part.split(";", 1)[0].strip().lower() for part in accept.split(","))


async def answer(
    request: web.Request, service: JobService, job: JobRecord, headers: dict[str, str]
) -> web.StreamResponse:
    """200 with an ended job: its PNG if asked for and it is done, else its view."""
    if wants_png(request) and job.state is JobState.DONE and job.result_file is not None:
        disposition = f'inline; filename="{result_name(job.id, job.filename)}"'
        png_headers = {
            **headers,
            "Content-Type": "image/png",
            "Content-Disposition": disposition,
            "Cache-Control": "private, max-age=86400, immutable",
            **NOSNIFF,
        }
        return await file_response(service.blobs, job.result_file, png_headers)
    sharing = await service.showcase.state(job.id)
    return web.json_response(public_job(service, job, sharing), headers=headers)
