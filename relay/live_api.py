"""`GET /api/live`: the WebSocket of a live session (docs/api.md, "Live").

The page says `{"type": "start", "style": ..., "side": ...}`, then sends frames as binary
messages (`relay.live.split_frame`) and gets painted ones back (`painted_bytes`), with JSON
events between them: ready, size, dropped, moved, ended. `{"type": "style", ...}` switches
the style without stopping; `{"type": "stop"}` (or closing the socket) ends the session.
An own style image goes first as a binary message tagged `STYLE_TAG`. The Origin check is
the API's (`relay.crosssite`, for every WebSocket); starting a session takes one of the
client's new-job tokens (`JobService.check_rate`); the session ends after
`--live-max-seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image

from protocol import LiveStyle
from protocol.live import MAX_LIVE_IMAGE
from relay import api, gallery
from relay.errors import ApiError
from relay.live import (
    SOCKETS_PER_CLIENT,
    STYLE_TAG,
    LiveRefused,
    LiveSession,
    check_image,
    split_frame,
)

log = logging.getLogger(__name__)

MAX_TEXT = 4096
"""Longest JSON message a page may send."""
STYLE_SIDE = 512
"""A painting is sent to the node at most this many pixels a side (its network reads 256)."""
OWN_STYLE_SIDE = 1024
"""Most pixels a side of an own style image: nodes read 512 (the page sends that much); a
larger picture only costs them decoding, which a page could ask for twice a second."""
MAX_QUEUED = 64
"""Events queued for a slow page beyond which `dropped` and `error` notices are left out."""
MAX_QUEUED_FRAMES = 4
"""Painted frames queued for a page that does not read them beyond which new ones are left
out: a page that never reads must not make the relay hold its frames for five minutes."""
MAX_BAD_MESSAGES = 20
"""Unusable messages in a row after which the socket closes: a page that sends only
garbage, and never reads the errors, must not make them pile up."""


@functools.cache  # the paintings ship with the relay: each is made ready once, not per message
def _painting_jpeg(painting: gallery.Painting) -> bytes:
    with Image.open(painting.image_path) as opened:
        img = opened.convert("RGB")
    img.thumbnail((STYLE_SIDE, STYLE_SIDE))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


async def style_of(name: object, own: bytes | None) -> LiveStyle:
    """The LiveStyle a page asks for: `fast:NAME`, a gallery painting id, or `image` (the
    own image it sent before). ValueError says what is wrong."""
    if type(name) is not str or not name:
        raise ValueError("say which style: fast:NAME, a painting's id, or image")
    if name.startswith("fast:"):
        return LiveStyle("fast", style_id=name.removeprefix("fast:"))
    painting = gallery.find(name)
    if painting is not None:
        return LiveStyle("arbitrary", image=await asyncio.to_thread(_painting_jpeg, painting))
    if name == "image":
        if own is None:
            raise ValueError("send your style image (a binary message tagged 2) first")
        return LiveStyle("arbitrary", image=own)
    raise ValueError(f"unknown style {name[:80]!r}")


class _Socket:
    """One page's socket: its session, and the events and painted frames to send it."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.service = request.app[api.SERVICE]
        self.client = api.client_key(request, self.service.config)
        self.ws = ws
        self.queue: asyncio.Queue[dict[str, Any] | bytes] = asyncio.Queue()
        self.session: LiveSession | None = None
        self.own: bytes | None = None
        self.frames_queued = 0
        self.bad_in_a_row = 0

    def put(self, item: dict[str, Any] | bytes) -> None:
        """Queue an event or painted frame for the page (`relay.live.ToPage`)."""
        if isinstance(item, bytes):
            if self.frames_queued >= MAX_QUEUED_FRAMES:
                return
            self.frames_queued += 1
        elif item["type"] in ("dropped", "error") and self.queue.qsize() > MAX_QUEUED:
            return
        self.queue.put_nowait(item)

    async def pump(self) -> None:
        """Send what is queued, in order, until the session's end."""
        while True:
            item = await self.queue.get()
            if isinstance(item, bytes):
                await self.ws.send_bytes(item)
                self.frames_queued -= 1
                continue
            await self.ws.send_json(item)
            if item["type"] == "ended":
                await self.ws.close()
                return

    def refuse(self, error: str) -> bool:
        """Tell the page what was wrong with its message; after `MAX_BAD_MESSAGES` such in
        a row, end instead and answer False (the socket should close)."""
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= MAX_BAD_MESSAGES:
            self.end("bad_messages", f"{MAX_BAD_MESSAGES} unusable messages in a row ({error})")
            return False
        self.put({"type": "error", "error": error})
        return True

    def binary(self, data: bytes) -> bool:
        """A frame, or an own style image; False when the socket should close."""
        if data[:1] == bytes([STYLE_TAG]):
            try:
                check_image(data[1:], OWN_STYLE_SIDE, ("JPEG", "PNG", "WEBP"))
            except ValueError as exc:
                return self.refuse(f"Your style image: {exc}.")
            self.own = data[1:]
        elif self.session is not None:
            try:
                seq, image = split_frame(data)
            except ValueError as exc:
                return self.refuse(str(exc))
            self.service.live_sessions.frame(self.session, seq, image)
        self.bad_in_a_row = 0
        return True

    async def text(self, text: str, limit: asyncio.Timeout) -> bool:
        """A command; False when the socket should close."""
        sessions, config = self.service.live_sessions, self.service.config
        try:
            command = _command(text)
            kind = command.get("type")
            if kind == "start" and self.session is None:
                style = await style_of(command.get("style"), self.own)
                side = command.get("side", config.live_max_side)
                if type(side) is not int or side < 1:
                    raise ValueError("side is a whole number of pixels")
                self.service.check_rate(self.client)
                self.session = sessions.open(self.client, side, style, self.put)
                limit.reschedule(asyncio.get_running_loop().time() + config.live_max_seconds)
            elif kind == "style" and self.session is not None:
                sessions.restyle(self.session, await style_of(command.get("style"), self.own))
            elif kind == "stop":
                return False
            else:
                raise ValueError(f"unexpected {str(kind)[:40]!r} message")
            self.bad_in_a_row = 0
        except ValueError as exc:
            return self.refuse(str(exc))
        except LiveRefused as exc:
            self.put({"type": "ended", "reason": exc.reason, "message": exc.message})
            return False
        except ApiError as exc:
            self.put({"type": "ended", "reason": "refused", "message": exc.message})
            return False
        return True

    def end(self, reason: str, message: str) -> None:
        """End the session (if one started) and say so to the page."""
        if self.session is not None:
            self.service.live_sessions.close(self.session, message, reason)
        else:
            self.put({"type": "ended", "reason": reason, "message": message})


async def live_socket(request: web.Request) -> web.StreamResponse:
    """GET /api/live: one live session over a WebSocket."""
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_LIVE_IMAGE + 64)
    await ws.prepare(request)
    sock = _Socket(request, ws)
    sessions = sock.service.live_sessions
    if not sessions.socket_opened(sock.client):
        message = f"You have {SOCKETS_PER_CLIENT} live sockets open already; close one first."
        await ws.send_json({"type": "ended", "reason": "too_many_sockets", "message": message})
        await ws.close()
        return ws
    request.app[api.SOCKETS].add(ws)
    sender = asyncio.get_running_loop().create_task(sock.pump())
    try:
        async with asyncio.timeout(None) as limit:
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    if not sock.binary(msg.data):
                        break
                elif msg.type is WSMsgType.TEXT and not await sock.text(msg.data, limit):
                    break
    except TimeoutError:
        seconds = f"{sock.service.config.live_max_seconds:g} s"
        sock.end("time_up", f"Live sessions last at most {seconds}.")
    finally:
        # All that must happen goes before the first await: when the page hangs up,
        # aiohttp cancels this task there.
        sock.end("stopped", "Stopped.")
        request.app[api.SOCKETS].discard(ws)
        sessions.socket_closed(sock.client)
        try:  # give the page a moment to read how it ended
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                await asyncio.wait_for(asyncio.shield(sender), 2.0)
        finally:
            sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await ws.close()
    return ws


def _command(text: str) -> dict[str, Any]:
    if len(text) > MAX_TEXT:
        raise ValueError(f"messages are at most {MAX_TEXT} characters")
    try:
        command = json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # nested too deep: no crash either
        raise ValueError("messages are JSON objects") from None
    if type(command) is not dict:
        raise ValueError("messages are JSON objects")
    return command


def add_routes(app: web.Application) -> None:
    """Register the live WebSocket."""
    app.router.add_get("/api/live", live_socket)
