"""`LiveDesk`: the node's live sessions, frames painted with the fast engines it has.

The relay opens a live lease (`LiveOpen`), sends frames (`LiveFrame`), may switch the
style (`LiveRestyle`) and ends it (`LiveEnd`); the desk answers every frame once, painted
(`LivePainted`) or not (`LiveMissed`). Frames run on threads of the desk's own, so the
event loop never waits for an engine, and frames of several sessions that arrive together
with the same network and size run as one batch (`gpu_node.fast.batching`). A style is
prepared once per open or switch (an arbitrary style's vector is predicted then, not per
frame). The relay never holds more than two frames of a session here, and it counts live
sessions against the node's slots; the desk refuses beyond `slots` anyway, and refuses
everything when its owner said `--no-live`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from PIL import Image

from gpu_node.daemon.runner import JobRunner
from gpu_node.fast.batching import Batcher
from gpu_node.fast.engine import ArbitraryItem, FastItem
from gpu_node.fast.spec import StyleMix
from gpu_node.images import open_image
from gpu_node.tensors import image_to_tensor, tensor_to_image
from protocol import (
    LiveEnd,
    LiveFrame,
    LiveMessage,
    LiveMissed,
    LiveOpen,
    LivePainted,
    LiveReady,
    LiveRestyle,
    LiveStyle,
    Message,
)

log = logging.getLogger(__name__)

JPEG_QUALITY = 80
"""Painted frames go back as JPEGs of this quality: small, and quick to encode."""
STYLE_SIDE = 512
"""An arbitrary style image is read at most this large (its network looks at 256 px)."""
FRAMES_AT_WORK = 4
"""Most frames of one lease painted or waiting here at once; more are answered missed.
The relay sends two at a time (docs/protocol.md): twice that leaves room for its timing,
and a faulty relay cannot pile frames up in this node's memory."""


@dataclass(frozen=True)
class _Look:
    """A prepared style: how to turn a photo tensor into a batch item."""

    key: str
    make: Callable[[torch.Tensor], FastItem | ArbitraryItem]


@dataclass
class _Session:
    lease: str
    side: int
    look: _Look | None = None
    at_work: int = 0
    """Its frames being painted or waiting for a thread."""
    styles: int = 0
    """Styles asked for so far (the opening one is the first)."""
    applied: int = 0
    """Which of them `look` is: a slow preparation that a later one overtook is not used."""


class LiveDesk:
    """The live sessions of one relay connection."""

    def __init__(
        self,
        runner: JobRunner,
        send: Callable[[Message], None],
        *,
        enabled: bool,
        slots: int,
    ) -> None:
        self.runner = runner
        self._send = send
        self.enabled = enabled
        self.slots = slots
        self.draining = False
        """When set, new live leases are refused (sessions already open go on)."""
        self._sessions: dict[str, _Session] = {}
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(2, 2 * slots), thread_name_prefix="live"
        )
        engine = runner.fast_engine
        self._fast: Batcher[FastItem, torch.Tensor] = Batcher(engine.stylize_batch)
        self._arbitrary: Batcher[ArbitraryItem, torch.Tensor] = Batcher(
            engine.stylize_arbitrary_batch
        )
        self._tasks: set[asyncio.Future[None]] = set()

    def handle(self, message: LiveMessage) -> None:
        """A live message from the relay (on the event loop)."""
        match message:
            case LiveOpen(lease_id=lease, side=side, style=style):
                self._open(lease, side, style)
            case LiveRestyle(lease_id=lease, style=style):
                if (session := self._sessions.get(lease)) is not None:
                    self._switch(session, style)
            case LiveFrame(lease_id=lease, seq=seq, image=image):
                session = self._sessions.get(lease)
                if session is None:
                    pass
                elif session.at_work >= FRAMES_AT_WORK:
                    busy = f"{FRAMES_AT_WORK} frames of this session are being painted already"
                    self._send(LiveMissed(lease, seq, busy))
                else:
                    session.at_work += 1
                    self._later(self._frame(session, seq, image))
            case LiveEnd(lease_id=lease):
                self._sessions.pop(lease, None)
            case _:
                log.debug("ignoring %s", type(message).__name__)

    def close(self) -> None:
        """The connection ended: every session with it."""
        self._sessions.clear()
        for task in self._tasks:
            task.cancel()
        self._threads.shutdown(wait=False, cancel_futures=True)

    # ---- inside ----------------------------------------------------------------------

    def _later(self, work: object) -> None:
        task = asyncio.ensure_future(work)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _open(self, lease: str, side: int, style: LiveStyle) -> None:
        if not self.enabled:
            self._send(LiveEnd(lease, "this node's owner does not take live sessions"))
        elif self.draining:
            self._send(LiveEnd(lease, "this node is leaving"))
        elif len(self._sessions) >= self.slots:
            self._send(LiveEnd(lease, f"this node takes at most {self.slots} live session(s)"))
        elif style.method not in self.runner.methods:
            self._send(LiveEnd(lease, f"this node does not run the {style.method} method"))
        else:
            session = self._sessions[lease] = _Session(lease, side)
            self._switch(session, style, opening=True)

    def _switch(self, session: _Session, style: LiveStyle, opening: bool = False) -> None:
        session.styles += 1
        self._later(self._restyle(session, session.styles, style, opening))

    async def _restyle(self, session: _Session, nth: int, style: LiveStyle, opening: bool) -> None:
        """Prepare the `nth` style of `session`; it is used unless a later one is (a quick
        style must not be undone by a slow one asked for before it)."""
        loop = asyncio.get_running_loop()
        lease = session.lease
        try:
            look = await loop.run_in_executor(self._threads, self._prepare, style)
        except Exception as exc:  # a style this node cannot paint: the relay is told why
            if self._sessions.pop(lease, None) is not None:
                self._send(LiveEnd(lease, f"cannot paint this style: {exc}"[:1000]))
            return
        if self._sessions.get(lease) is not session:
            return  # ended meanwhile
        if nth > session.applied:
            session.look, session.applied = look, nth
        if opening:
            self._send(LiveReady(lease))

    def _prepare(self, style: LiveStyle) -> _Look:
        """Check the style and do the per-style work once (on a live thread)."""
        engine = self.runner.fast_engine
        if style.method == "fast":
            assert style.style_id is not None
            mix = StyleMix(((style.style_id, 1.0),))
            engine.check(FastItem(torch.zeros(1, 3, 64, 64), mix))
            return _Look(style.style_id, lambda photo: FastItem(photo, mix))
        assert style.image is not None
        picture = open_image(style.image, max_pixels=4096 * 4096)
        picture.thumbnail((STYLE_SIDE, STYLE_SIDE))
        vector = engine.style_vector(torch.zeros(1, 3, 64, 64), picture, 1.0)
        return _Look("arbitrary", lambda photo: ArbitraryItem(photo, vector))

    async def _frame(self, session: _Session, seq: int, image: bytes) -> None:
        loop = asyncio.get_running_loop()
        look = session.look
        started = time.perf_counter()
        try:
            if look is None:
                raise ValueError("the style is not ready yet")
            jpeg = await loop.run_in_executor(self._threads, self._paint, look, session.side, image)
        except Exception as exc:  # this frame only: the session goes on
            if self._sessions.get(session.lease) is session:
                self._send(LiveMissed(session.lease, seq, str(exc)[:500]))
            return
        finally:
            session.at_work -= 1
        if self._sessions.get(session.lease) is session:  # not ended meanwhile
            elapsed = time.perf_counter() - started
            self._send(LivePainted(session.lease, seq, jpeg, elapsed))

    def _paint(self, look: _Look, side: int, data: bytes) -> bytes:
        """Decode, paint and encode one frame (on a live thread)."""
        with Image.open(io.BytesIO(data), formats=("JPEG", "WEBP")) as img:
            if max(img.size) > side:
                raise ValueError(f"{img.width}x{img.height} is over the session's {side} px")
            picture = img.convert("RGB")
        item = look.make(image_to_tensor(picture, self.runner.device))
        if isinstance(item, FastItem):
            out = self._fast.submit(self.runner.fast_engine.batch_key(item), item)
        else:
            key: Hashable = ("arbitrary", tuple(item.photo.shape))
            out = self._arbitrary.submit(key, item)
        painted = tensor_to_image(out)
        buffer = io.BytesIO()
        painted.save(buffer, "JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()
