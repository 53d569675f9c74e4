"""The public gallery's HTTP side (see `relay.showcase`; documented in docs/api.md).

Gallery routes take gallery ids only, and every lookup goes through the gallery's table:
no route here reads a job, so no gallery id opens a job, its photo or an unshared result.
"""

from typing import Any

from aiohttp import web

from relay.api import NOSNIFF, SERVICE, client_key
from relay.cluster.blobs import file_response
from relay.errors import BadRequest, NotFound
from relay.orders import flag
from relay.showcase import Gallery, Item
from relay.views import public_job

LIST_CACHE = {"Cache-Control": "no-cache", **NOSNIFF}
"""A listing is checked again each time: an item hidden a moment ago must not reappear."""
IMAGE_CACHE = {"Cache-Control": "public, max-age=300, must-revalidate", **NOSNIFF}
"""Images never change under one id, but a moderated one must vanish soon from caches too:
five minutes, then a cheap revalidation (304) that a hidden item fails."""


def _showcase(request: web.Request) -> Gallery:
    return request.app[SERVICE].showcase


async def list_gallery(request: web.Request) -> web.Response:
    """GET /api/gallery?cursor=&style=&method=: shown items, newest first, 24 a page."""
    query = request.query
    for name in ("cursor", "style", "method"):
        if len(query.get(name, "")) > 100:
            raise BadRequest(f"`{name}` is too long.")
    showcase = _showcase(request)
    body = await showcase.page(query.get("cursor"), query.get("style"), query.get("method"))
    return web.json_response(body, headers=LIST_CACHE)


def _file(item: Item, kind: str) -> tuple[str, str]:
    match kind:
        case "thumbnail":
            return item.thumb_file, "image/jpeg"
        case "image":
            return item.result_file, "image/png"
    if item.style_file is None:
        raise NotFound("This item's style image is not shared.")
    return item.style_file, "image/png"


async def gallery_image(request: web.Request) -> web.StreamResponse:
    """GET /api/gallery/{item}/thumbnail, /image and /style."""
    showcase = _showcase(request)
    item = await showcase.shown(request.match_info["item"])
    sha, content_type = _file(item, request.match_info["kind"])
    headers = {"Content-Type": content_type, **IMAGE_CACHE}
    return await file_response(showcase.blobs, sha, headers)


async def report_item(request: web.Request) -> web.Response:
    """POST /api/gallery/{item}/report: a visitor flags an item for the operator."""
    showcase = _showcase(request)
    await showcase.report(request.match_info["item"], client_key(request, showcase.config))
    return web.json_response({"reported": True}, status=202, headers=NOSNIFF)


async def _share_style(request: web.Request) -> bool:
    value: Any = request.query.get("share_style")
    if value is None and request.can_read_body and request.content_type == "application/json":
        if (request.content_length or 0) > 1024:
            raise BadRequest('Send at most {"share_style": true} here.')
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest("The body is not JSON.") from None
        value = body.get("share_style") if isinstance(body, dict) else None
    return flag("share_style", value)


async def share_job(request: web.Request) -> web.Response:
    """POST /api/jobs/{id}/share: show the job in the gallery (once it is done)."""
    service = request.app[SERVICE]
    job = await service.find(request.match_info["id"])
    await service.showcase.share(job, await _share_style(request))
    sharing = await service.showcase.state(job.id)
    return web.json_response(public_job(service, await service.find(job.id), sharing))


async def unshare_job(request: web.Request) -> web.Response:
    """DELETE /api/jobs/{id}/share: withdraw the job from the gallery."""
    service = request.app[SERVICE]
    job = await service.find(request.match_info["id"])
    await service.showcase.unshare(job.id)
    return web.json_response(public_job(service, job, await service.showcase.state(job.id)))


def add_routes(app: web.Application) -> None:
    """Register the gallery's routes."""
    r = app.router
    r.add_get("/api/gallery", list_gallery)
    r.add_get("/api/gallery/{item}/{kind:thumbnail|image|style}", gallery_image)
    r.add_post("/api/gallery/{item}/report", report_item)
    r.add_post("/api/jobs/{id}/share", share_job)
    r.add_delete("/api/jobs/{id}/share", unshare_job)
