"""The public HTTP and WebSocket API (documented in docs/api.md)."""

import asyncio
import logging
from typing import Any

from aiohttp import WSMsgType, web

from relay import apikeys, clients, gallery, intake, orders, seeds, waiting
from relay.cluster.blobs import file_response
from relay.config import Config
from relay.disk import kept_files
from relay.errors import BadRequest, NotFound
from relay.events import FINAL_TYPES
from relay.jobs import JobService
from relay.model import JobRecord, JobState, result_name
from relay.views import event_json, node_list, public_job

log = logging.getLogger(__name__)

SERVICE = web.AppKey("service", JobService)
CONFIG = web.AppKey("config", Config)
SOCKETS = web.AppKey("sockets", set[web.WebSocketResponse])

METHOD_NOTES = {
    "gatys": "Quality: optimises the picture for a number of epochs (minutes).",
    "fast": "Fast: one pass through a trained network (seconds); built-in styles.",
    "arbitrary": "Arbitrary: any style image in one pass (seconds).",
}
ENDPOINTS = [
    "GET    /api/styles                  styles, methods available now, limits",
    "POST   /api/jobs                    create a job (multipart or JSON); also /transform",
    "POST   /api/jobs?wait=SECONDS       the same, answered with the ended job (up to 60 s)",
    "GET    /api/jobs/{id}               a job's state",
    "GET    /api/jobs/{id}/events        WebSocket of the job's events",
    "GET    /api/jobs/{id}/result        the result PNG",
    "GET    /api/jobs/{id}/preview       the latest preview JPEG",
    "GET    /api/jobs/{id}/content       the photo as sent to the node",
    "GET    /api/jobs/{id}/style/{n}     style image n as sent to the node",
    "DELETE /api/jobs/{id}               cancel a job; once ended, delete it and its images",
    "GET    /api/live                    WebSocket of a live session (the camera painted live)",
    "GET    /api/nodes                   connected nodes",
    "GET    /healthz                     liveness, and whether the disk is full",
    "GET    /openapi.json                this API as OpenAPI 3.1",
]
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
"""On every image response: a browser must never read node-made bytes as HTML or script."""


def client_key(request: web.Request, config: Config) -> str:
    """Who is asking: the API key's client (`key:NAME`, see `relay.apikeys`) when one came,
    else the peer or the client a trusted proxy names (see `relay.clients`)."""
    key = apikeys.key_of(request)
    if key is not None:
        return key.client
    forwarded = request.headers.get("X-Forwarded-For")
    return clients.client_key(request.remote, forwarded, config.trusted_proxy)


def _service(request: web.Request) -> JobService:
    return request.app[SERVICE]


# ---- styles ------------------------------------------------------------------------------


def styles_view(service: JobService) -> dict[str, Any]:
    """Gallery paintings, fast styles of connected nodes, methods and limits."""
    config, infos = service.config, service.hub.all_infos()
    styles: list[dict[str, Any]] = [
        {
            "id": p.id,
            "kind": "painting",
            "name": p.title,
            "artist": p.artist,
            "year": p.year,
            "methods": list(gallery.METHODS),
            "thumbnail_url": f"/api/styles/{p.id}/thumbnail",
            "image_url": f"/api/styles/{p.id}/image",
        }
        for p in gallery.PAINTINGS
    ]
    for name, style in sorted(service.hub.fast_styles().items()):
        styles.append(
            {
                "id": f"fast:{name}",
                "kind": "fast",
                "name": style.title,
                "methods": ["fast"],
                "thumbnail_url": f"/api/styles/fast:{name}/thumbnail" if style.thumbnail else None,
            }
        )
    methods = []
    for method, note in METHOD_NOTES.items():
        able = [i for i in infos if method in i.methods]
        node_cap = max((i.max_epochs for i in able), default=config.max_epochs)
        methods.append(
            {
                "id": method,
                "description": note,
                "available": bool(able),
                "nodes": len(able),
                "max_epochs": min(config.max_epochs, node_cap) if method == "gatys" else 1,
            }
        )
    limits = {
        "max_epochs": config.max_epochs,
        "default_epochs": min(orders.DEFAULT_EPOCHS, config.max_epochs),
        "max_pixels": config.max_pixels,
        "max_upload_bytes": config.max_upload_bytes,
        "max_size": config.max_size,
        "default_size": config.default_size,
        "max_styles": orders.MAX_STYLES,
        "formats": ["png", "jpeg", "webp", "heic"],
        "result_ttl_s": config.result_ttl,
        "email": config.mail_enabled,
    }
    return {"styles": styles, "methods": methods, "limits": limits}


async def get_styles(request: web.Request) -> web.Response:
    """GET /api/styles."""
    return web.json_response(styles_view(_service(request)))


async def get_help(request: web.Request) -> web.Response:
    """GET /help: the classic overview, the styles view plus a list of endpoints."""
    return web.json_response({"endpoints": ENDPOINTS, **styles_view(_service(request))})


async def get_style_image(request: web.Request) -> web.StreamResponse:
    """GET /api/styles/{id}/thumbnail and /image."""
    style_id, kind = request.match_info["style"], request.match_info["kind"]
    painting = gallery.find(style_id)
    if painting is not None:
        path = painting.thumbnail_path if kind == "thumbnail" else painting.image_path
        return web.FileResponse(path, headers={"Cache-Control": "public, max-age=86400", **NOSNIFF})
    style = _service(request).hub.fast_styles().get(style_id.removeprefix("fast:"))
    if style_id.startswith("fast:") and kind == "thumbnail" and style and style.thumbnail:
        return web.Response(body=style.thumbnail, content_type="image/jpeg", headers=NOSNIFF)
    raise NotFound(f"No picture for style {style_id!r}.")


# ---- jobs --------------------------------------------------------------------------------


async def post_job(request: web.Request) -> web.StreamResponse:
    """POST /api/jobs (and /transform): create a job from multipart or JSON; with
    `?wait=SECONDS`, answer with the ended job if it ends in time (`relay.waiting`)."""
    service = _service(request)
    config = service.config
    wait = waiting.wait_seconds(request.query.get("wait"))
    client = client_key(request, config)
    key = apikeys.key_of(request)
    quota = key.quota if key is not None else None
    service.check_admission(client, quota=quota)
    service.check_rate(client, quota)
    total_cap = request.app[CONFIG].max_upload_bytes * (orders.MAX_STYLES + 1) * 4 // 3
    if (request.content_length or 0) > total_cap + 1024 * 1024:
        raise orders.too_large_body(config.max_upload_bytes)
    # The bare media type; aiohttp's full Content-Type parser is slow for this hot path.
    media = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    receipt = intake.receipt(request)
    # Received and decoded under one of the client's few upload slots (429 beyond).
    with request.app[intake.INTAKE].upload(client):
        if media == "multipart/form-data":
            raw = await orders.read_multipart(request, config.max_upload_bytes, receipt)
        elif media == "application/json":
            raw = await orders.read_json(receipt, config.max_upload_bytes, service.decoder)
        else:
            raise BadRequest("Send the job as multipart/form-data or application/json.")
        if request.path == "/transform":
            seeds.take_model(raw, service.hub.known_fast)
        checked = orders.check(raw, config, service.hub.known_fast)
        paintings = request.app[orders.PAINTINGS]
        order = await orders.prepared(raw, checked, config, service.decoder, paintings)
        job = await service.submit(client, order, quota)
    location = {"Location": f"/api/jobs/{job.id}"}
    if wait:
        ended = await waiting.until_ended(request, service, job.id, wait)
        if ended is not None:
            return await waiting.answer(request, service, ended, location)
        job = await service.find(job.id)
    sharing = await service.showcase.state(job.id)
    return web.json_response(public_job(service, job, sharing), status=202, headers=location)


async def _job(request: web.Request) -> JobRecord:
    return await _service(request).find(request.match_info["id"])


async def get_job(request: web.Request) -> web.Response:
    """GET /api/jobs/{id}."""
    service, job = _service(request), await _job(request)
    return web.json_response(public_job(service, job, await service.showcase.state(job.id)))


async def delete_job(request: web.Request) -> web.Response:
    """DELETE /api/jobs/{id}: cancel a queued or running job (200, its view); delete an
    ended one with its images at once (204)."""
    service, job = _service(request), await _job(request)
    if not job.state.final:
        ended = await service.cancel_now(job.id)
        sharing = await service.showcase.state(job.id)
        return web.json_response(public_job(service, ended, sharing))
    await service.delete_now(job.id)
    return web.Response(status=204)


async def get_result(request: web.Request) -> web.StreamResponse:
    """GET /api/jobs/{id}/result: the PNG, as a download."""
    job = await _job(request)
    if job.state is not JobState.DONE or job.result_file is None:
        raise NotFound(f"The job has no result ({job.state}).")
    headers = {
        "Content-Type": "image/png",
        "Content-Disposition": f'attachment; filename="{result_name(job.id, job.filename)}"',
        "Cache-Control": "private, max-age=86400, immutable",
        **NOSNIFF,
    }
    return await file_response(_service(request).blobs, job.result_file, headers)


async def get_partial(request: web.Request) -> web.StreamResponse:
    """GET /api/jobs/{id}/partial: the painting so far of a job that ended without a
    result (its latest checkpoint, `relay.checkpoints`), as a PNG download."""
    job = await _job(request)
    sha = job.partial_file
    if sha is None or sha not in kept_files(job):
        raise NotFound(f"The job has no painting so far to show ({job.state}).")
    name = result_name(job.id, job.filename).replace("-stylized.png", "-partial.png")
    headers = {
        "Content-Type": "image/png",
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "private, no-cache",
        **NOSNIFF,
    }
    return await file_response(_service(request).blobs, sha, headers)


async def get_preview(request: web.Request) -> web.StreamResponse:
    """GET /api/jobs/{id}/preview: the latest preview JPEG."""
    service, job = _service(request), await _job(request)
    headers = {"Cache-Control": "no-store", **NOSNIFF}
    preview = await service.preview_of(job)
    if preview is not None:
        return web.Response(body=preview, content_type="image/jpeg", headers=headers)
    if job.preview_file is not None:
        headers["Content-Type"] = "image/jpeg"
        return await file_response(service.blobs, job.preview_file, headers)
    raise NotFound("No preview yet.")


async def get_input(request: web.Request) -> web.StreamResponse:
    """GET /api/jobs/{id}/content and /style/{n}: the images as sent to the node."""
    service, job = _service(request), await _job(request)
    if "n" in request.match_info:
        text = request.match_info["n"]
        # A job has a handful of styles; a longer number is no index (nor worth converting).
        index = int(text) if len(text) <= 3 else -1
        if not 0 <= index < len(job.style_files):
            raise NotFound(f"The job has no style image {text[:20]}.")
        sha = job.style_files[index]
    else:
        sha = job.content_file
    if sha not in kept_files(job):
        raise NotFound(f"The job's images were deleted when it ended ({job.state}).")
    headers = {"Content-Type": "image/png", "Cache-Control": "private, max-age=86400", **NOSNIFF}
    return await file_response(service.blobs, sha, headers)


async def job_events(request: web.Request) -> web.StreamResponse:
    """GET /api/jobs/{id}/events: a WebSocket of JSON events, the current state first."""
    service = _service(request)
    job = await _job(request)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    sub = service.bus.subscribe(job.id)
    # Subscribed before reading the state: an event in between arrives twice, never not.
    first = await service.find(job.id)
    sharing = await service.showcase.state(job.id)
    await ws.send_json({"type": "state", "job": public_job(service, first, sharing)})

    async def forward() -> None:
        # Judged by the state just sent: a job that ended while it was being sent has its
        # final event waiting in `sub`, and the client must get it before the close.
        if first.state.final:
            await ws.close()
            return
        while True:
            event = await sub.get()
            # An ending carries the job's record: its view tells its place in the gallery.
            sharing = await service.showcase.state(job.id) if "job" in event else {}
            await ws.send_json(event_json(service, event, sharing))
            if event["type"] in FINAL_TYPES:
                await ws.close()
                return

    sender = asyncio.get_running_loop().create_task(forward())
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and msg.data == "ping":
                await ws.send_str("pong")
    finally:
        request.app[SOCKETS].discard(ws)
        sub.close()
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return ws


# ---- nodes, health, page -----------------------------------------------------------------


async def get_nodes(request: web.Request) -> web.Response:
    """GET /api/nodes: connected nodes, no secrets."""
    return web.json_response({"nodes": node_list(_service(request))})


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the relay is up (200 even when degraded: it still serves results);
    whether its disk takes writes; a few counts."""
    service = _service(request)
    scheduler = service.scheduler
    disk = service.disk.state()
    body = {
        "status": "ok" if disk == "ok" else "degraded",
        "disk": disk,
        "nodes": len(scheduler.nodes()),
        "queued": scheduler.queued,
        "running": scheduler.running,
    }
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    """Register every API route (the page's static files are added by `relay.app`)."""
    r = app.router
    r.add_get("/api/styles", get_styles)
    r.add_get("/api/styles/{style}/{kind:thumbnail|image}", get_style_image)
    r.add_get("/help", get_help)
    r.add_post("/api/jobs", post_job)
    r.add_post("/transform", post_job)
    r.add_get("/api/jobs/{id}", get_job)
    r.add_delete("/api/jobs/{id}", delete_job)
    r.add_get("/api/jobs/{id}/events", job_events)
    r.add_get("/api/jobs/{id}/result", get_result)
    r.add_get("/api/jobs/{id}/preview", get_preview)
    r.add_get("/api/jobs/{id}/partial", get_partial)
    r.add_get("/api/jobs/{id}/content", get_input)
    r.add_get("/api/jobs/{id}/style/{n:\\d+}", get_input)
    r.add_get("/api/nodes", get_nodes)
    r.add_get("/healthz", healthz)
