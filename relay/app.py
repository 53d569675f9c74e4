"""The relay's web application: `init(config) -> web.Application`.

Background work runs in `cleanup_ctx`: the job service (database open, recovery, close), a
ticker for lease timeouts, a sweeper for expired results, and the node listener on the
node port.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import WSCloseCode, web

import web as web_package
from relay import (
    api,
    apidoc,
    apikeys,
    crosssite,
    intake,
    live_api,
    openapi,
    peerlog,
    showcase_api,
    status,
)
from relay.config import Config
from relay.errors import (
    ApiError,
    InsufficientStorage,
    NotFound,
    QueueFull,
    TooLarge,
    TooManyRequests,
)
from relay.jobs import JobService
from relay.nodelink import NodeListener
from relay.orders import PAINTINGS, Paintings, too_large_body
from relay.reports import NodeReports
from relay.tls import server_context
from relay.tokens import TokenCheck, TokenStore

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WEB_DIR = Path(web_package.__file__).parent
# Seconds between database checkpoints: keeps the write-ahead log to a few MB at full load.
CHECKPOINT_INTERVAL = 5.0


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


_JOB_PATHS = frozenset({"/api/jobs", "/transform"})


def _count_rejection(request: web.Request, exc: Exception) -> None:
    """Count a refused job request by reason, for /metrics."""
    if request.method != "POST" or request.path not in _JOB_PATHS:
        return
    service = request.app.get(api.SERVICE)
    if service is None:
        return
    match exc:
        case TooLarge() | web.HTTPRequestEntityTooLarge():
            reason = "too_large"
        case TooManyRequests():
            reason = "rate_limited"
        case QueueFull():
            reason = "queue_full"
        case InsufficientStorage():
            reason = "disk_full"
        case _:
            reason = "bad_request"
    service.metrics.upload_rejected(reason)


async def _api_methods(request: web.Request) -> set[str]:
    """The methods the API routes take on this path (none for a page path)."""
    page = request.app[PAGE]
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not page:
            allowed |= (await resource.resolve(request))[1]
    return allowed


async def _allowed(request: web.Request) -> set[str]:
    """The methods this path takes. The page's catch-all GET matches every path, but it
    does not serve API paths, so only API routes count where one matches."""
    return await _api_methods(request) or {"GET", "HEAD"}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error as JSON `{"error": "..."}` a person can read; never a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        _count_rejection(request, exc)
        return _error(exc.status, exc.message, exc.headers)
    except web.HTTPRequestEntityTooLarge as exc:
        _count_rejection(request, exc)
        exc413 = too_large_body(request.app[api.CONFIG].max_upload_bytes)
        return _error(exc413.status, exc413.message)
    except web.HTTPMethodNotAllowed:
        allowed = ", ".join(sorted(await _allowed(request)))
        message = f"{request.method} is not allowed on {request.path}; use {allowed}."
        return _error(405, message, {"Allow": allowed})
    except web.HTTPNotFound:
        return _error(404, f"Nothing here: {request.path}. The API is described at /help.")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        # The client hung up mid-request: nobody hears this answer, and it is not the
        # relay's error to log with a traceback.
        return _error(400, "The connection was lost before the request was complete.")
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error(500, "Something went wrong on the relay; the error was logged.")


WEB = web.AppKey("web_dir", Path)
PAGE = web.AppKey("page", web.AbstractResource)
NODE_LISTENER = web.AppKey("node_listener", NodeListener)
_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".webmanifest": "application/json"}


async def _page(request: web.Request) -> web.StreamResponse:
    """The page's static files from the web dir; `index.html` at `/`.

    Hidden files, `__pycache__` and Python sources (the dir is also a package) stay private.
    """
    root: Path = request.app[WEB].resolve()
    rel = request.match_info.get("path", "") or "index.html"
    if rel == "index":  # the seeds' address of the page
        rel = "index.html"
    target = (root / rel).resolve()
    hidden = any(p.startswith((".", "__")) for p in Path(rel).parts) or target.suffix == ".py"
    if not hidden and target.is_relative_to(root) and target.is_file():
        content_type = _TYPES.get(target.suffix)
        headers = {"Content-Type": content_type} if content_type else None
        return web.FileResponse(target, headers=headers)
    if rel == "index.html":
        return web.Response(
            text="Stylerelay relay is running. The API is described at /help.\n",
            content_type="text/plain",
        )
    if methods := await _api_methods(request):  # e.g. GET /api/jobs: a POST-only path
        raise web.HTTPMethodNotAllowed(request.method, methods)
    raise NotFound(f"Nothing here: {request.path}. The API is described at /help.")


def init(
    config: Config,
    clock: Callable[[], float] = time.time,
    timer: Callable[[], float] = time.monotonic,
) -> web.Application:
    """Build the relay's web app. `clock` (wall time) and `timer` (monotonic, for leases,
    heartbeats and rate limits), both in seconds, are injectable for tests."""
    # Each image may be base64 in JSON (4/3 larger), the photo plus up to four styles.
    body_cap = config.max_upload_bytes * 5 * 4 // 3 + 1024 * 1024
    peerlog.install()
    middlewares = [intake.guard, json_errors, apikeys.identify, crosssite.same_origin]
    app = web.Application(middlewares=middlewares, client_max_size=body_cap)
    app.on_response_prepare.append(crosssite.add_headers)
    app[api.CONFIG] = config
    app[apikeys.KEYS] = apikeys.KeyStore(config.data_dir)
    app[intake.INTAKE] = intake.Intake(config)
    app[api.SOCKETS] = set[web.WebSocketResponse]()
    app[PAINTINGS] = Paintings()
    app[WEB] = config.web_dir or WEB_DIR
    api.add_routes(app)
    status.add_routes(app)
    showcase_api.add_routes(app)
    live_api.add_routes(app)
    apidoc.add_routes(app)
    openapi.add_routes(app)
    page = app.router.add_get("/{path:.*}", _page).resource
    assert page is not None
    app[PAGE] = page
    # Loaded now, so a bad certificate stops the relay before it serves anything.
    tls = None
    if config.node_tls_cert is not None and config.node_tls_key is not None:
        tls = server_context(config.node_tls_cert, config.node_tls_key)

    async def service_ctx(app: web.Application) -> AsyncIterator[None]:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        async with contextlib.AsyncExitStack() as stack:
            tokens: TokenCheck
            if config.cluster:
                from relay.cluster.boot import cluster_service  # noqa: PLC0415 (its extra)
                from relay.cluster.credentials import shared_credentials  # noqa: PLC0415

                cluster = await stack.enter_async_context(cluster_service(config, clock, timer))
                shared = await stack.enter_async_context(
                    shared_credentials(cluster.pool, cluster.listener, config.data_dir)
                )
                service: JobService = cluster
                tokens, app[apikeys.KEYS] = shared.tokens, shared.keys
            else:
                service = JobService(config, clock, timer)
                tokens = TokenStore(config.data_dir)
            async for _ in _serve(app, service, tokens):
                yield

    async def _serve(
        app: web.Application, service: JobService, tokens: TokenCheck
    ) -> AsyncIterator[None]:
        service.recover()
        app[api.SERVICE] = service
        reports = NodeReports(service)
        listener = NodeListener(
            config,
            tokens,
            reports,
            ssl_context=tls,
            metrics=service.metrics,
            timer=timer,
        )
        await listener.start()
        app[NODE_LISTENER] = listener
        tasks = [
            asyncio.create_task(_every(config.tick_interval, service.tick, "tick")),
            asyncio.create_task(_every(config.tick_interval, reports.check_silence, "liveness")),
            asyncio.create_task(_every(config.sweep_interval, service.sweep, "sweep")),
            asyncio.create_task(_every(CHECKPOINT_INTERVAL, service.checkpoint, "checkpoint")),
        ]
        if service.mailer is not None:
            tasks.append(asyncio.create_task(service.mailer.run(), name="mailer"))
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await listener.close()
        await service.stop_offering()
        service.close()

    async def close_sockets(app: web.Application) -> None:
        sockets = app[api.SOCKETS]
        for ws in list(sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"relay shutting down")

    app.cleanup_ctx.append(service_ctx)
    app.on_shutdown.append(close_sockets)
    return app


async def _every(interval: float, work: Callable[[], object], name: str) -> None:
    """Run `work` (sync or async) every `interval` seconds; log and go on if it fails."""
    while True:
        await asyncio.sleep(interval)
        try:
            result = work()
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("periodic %s failed", name)


__all__ = ["init"]
