"""A relay app on a test client, a clock the test moves, and the fake node that speaks to
the relay through its node seam (`relay.reports.NodeReports`), as a node connection does."""

import asyncio
import base64
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import FormData
from PIL import Image

from relay.config import Config
from relay.dispatch import NodeInfo
from relay.handles import CancelJob, NodeCommand, NodeHandle, OfferJob
from relay.hub import NodeHub
from relay.jobs import JobService
from relay.reports import NodeReports


@dataclass
class FakeClock:
    """Wall time that moves only when the test says so."""

    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(tmp_path: Path, **changes: Any) -> Config:
    """A config on a temporary data dir; periodic tasks effectively off (tests call them)."""
    base = Config(
        data_dir=tmp_path / "data",
        host="127.0.0.1",
        node_port=0,
        max_upload_mb=1.0,
        max_pixels=1_000_000,
        max_epochs=500,
        rate_per_minute=1000,
        max_open_jobs=50,
        tick_interval=3600.0,
        sweep_interval=3600.0,
    )
    return base.replace(**changes)


def png(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (10, 120, 200)) -> bytes:
    """A plain PNG."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def jpeg(size: tuple[int, int] = (32, 24)) -> bytes:
    """A plain JPEG."""
    out = io.BytesIO()
    Image.new("RGB", size, (200, 100, 0)).save(out, format="JPEG")
    return out.getvalue()


def form(content: bytes | None = None, /, **fields: str) -> FormData:
    """A multipart job request: the photo as `content`, the rest as text fields."""
    data = FormData()
    photo = io.BytesIO(content or png())
    data.add_field("content", photo, filename="photo.png", content_type="image/png")
    for name, value in fields.items():
        data.add_field(name, value)
    return data


def json_order(content: bytes | None = None, /, **fields: Any) -> dict[str, Any]:
    """A JSON job request with the photo as base64."""
    return {"image": base64.b64encode(content or png()).decode(), **fields}


Painter = Callable[[OfferJob, float], Image.Image]
"""What a serving fake node paints for an offer, `amount` (0..1) of the way to the end."""


def plain_paint(offer: OfferJob, amount: float) -> Image.Image:
    """A picture of the offer's size whose colour moves from blue to yellow as it goes."""
    a = max(0.0, min(1.0, amount))
    color = (round(10 + 240 * a), round(120 + 80 * a), round(200 - 190 * a))
    return Image.new("RGB", (offer.width, offer.height), color)


def encode(img: Image.Image, kind: str, quality: int = 85) -> bytes:
    """An image as PNG or JPEG bytes."""
    out = io.BytesIO()
    img.convert("RGB").save(out, format=kind, quality=quality)
    return out.getvalue()


@dataclass
class FakeNode:
    """The tests' one fake node at the relay's node seam: it takes commands from its outbox
    and reports through `relay.reports`, as a node connection (`relay.nodelink`) does. A
    test drives it step by step (`offer`, `progress`, `finish`), or `serve` runs it on its
    own: timed epochs, previews that change as it goes, a result of the offer's size; it can
    be held at an epoch and let go. (Over TCP, with the real protocol: `wire_node.WireNode`.)
    """

    reports: NodeReports
    handle: NodeHandle
    offers: list[OfferJob] = field(default_factory=list)
    epoch_seconds: float = 0.05
    preview_every: int = 3
    hold_at: int | None = None
    paint: Painter = plain_paint
    heartbeat: float = 1.0
    checkpoints: bool = False
    """Send a checkpoint every 5 epochs and when cancelled, as a real Gatys node does."""
    epochs_reported: list[int] = field(default_factory=list)
    _cancelled: set[str] = field(default_factory=set)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _held: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def connect(
        cls,
        to: JobService | NodeReports,
        name: str = "gpu-1",
        serving: dict[str, Any] | None = None,
        **info: Any,
    ) -> "FakeNode":
        """Connect a node named `name` (every method, fast style candy, one slot, roomy
        caps, unless `info` says otherwise) to a relay's job service; `serving` sets how
        `serve` works."""
        reports = to if isinstance(to, NodeReports) else NodeReports(to)
        fields: dict[str, Any] = {
            "device_name": "Fake GPU",
            "device_memory": 8 << 30,
            "methods": frozenset({"gatys", "fast", "arbitrary"}),
            "styles": frozenset({"candy"}),
            "max_epochs": 1000,
            "max_pixels": 4_000_000,
            "slots": 1,
        }
        handle = reports.node_connected(NodeInfo(name, **{**fields, **info}))
        return cls(reports, handle, **(serving or {}))

    @property
    def hub(self) -> NodeHub:
        """The relay's node registry."""
        return self.reports.hub

    async def command(self, timeout: float | None = 5.0) -> NodeCommand:
        """The next offer or cancel meant for this node."""
        cmd = await asyncio.wait_for(self.handle.outbox.get(), timeout)
        if isinstance(cmd, OfferJob):
            self.offers.append(cmd)
        return cmd

    async def offer(self) -> OfferJob:
        """The next command, which must be an offer."""
        cmd = await self.command()
        assert isinstance(cmd, OfferJob), cmd
        return cmd

    async def cancel(self) -> CancelJob:
        """The next command, which must be a cancel."""
        cmd = await self.command()
        assert isinstance(cmd, CancelJob), cmd
        return cmd

    def progress(self, offer: OfferJob, epoch: int) -> bool:
        return self.reports.progress(
            self.handle,
            offer.job_id,
            offer.lease,
            epoch=epoch,
            epochs=offer.epochs,
            losses={"content": 1.0 / epoch, "style": 2.0 / epoch},
        )

    async def preview(self, offer: OfferJob) -> bool:
        return await self.reports.preview(self.handle, offer.job_id, offer.lease, jpeg())

    async def finish(self, offer: OfferJob) -> tuple[bool, bytes]:
        """Deliver a result PNG of the offer's size; return (accepted, the PNG)."""
        data = png((offer.width, offer.height), (250, 200, 10))
        ok = await self.reports.result(
            self.handle, offer.job_id, offer.lease, data, width=offer.width, height=offer.height
        )
        return ok, data

    def lost(self) -> None:
        self.reports.node_lost(self.handle, "connection closed")

    # ---- serving on its own ----------------------------------------------------------

    async def serve(self) -> None:
        """Answer commands (and say "still here" every `heartbeat`) until cancelled."""
        tasks: set[asyncio.Task[None]] = set()
        tasks.add(asyncio.get_running_loop().create_task(self._beat()))
        try:
            while True:
                command = await self.command(timeout=None)
                if isinstance(command, CancelJob):
                    self._cancelled.add(command.job_id)
                    continue
                if not isinstance(command, OfferJob):
                    continue  # a live message: this fake node never said it takes them
                task = asyncio.get_running_loop().create_task(self._work(command))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in list(tasks):
                task.cancel()

    async def _beat(self) -> None:
        while True:
            self.hub.seen(self.handle)
            await asyncio.sleep(self.heartbeat)

    async def _work(self, offer: OfferJob) -> None:
        reports, handle = self.reports, self.handle
        for epoch in range(1, offer.epochs + 1):
            await asyncio.sleep(self.epoch_seconds)
            if offer.job_id in self._cancelled:
                if self.checkpoints and epoch > 1:
                    await self._checkpoint(offer, epoch - 1)
                return
            if self.hold_at is not None and epoch == self.hold_at and not self._release.is_set():
                self._held.set()
                await self._release.wait()
            self.epochs_reported.append(epoch)
            losses = {"content": 10.0 / epoch, "style": 100.0 / epoch}
            reports.progress(
                handle, offer.job_id, offer.lease, epoch=epoch, epochs=offer.epochs,
                losses=losses,
            )  # fmt: skip
            if epoch % self.preview_every == 0 or epoch == offer.epochs:
                image = await asyncio.to_thread(self.paint, offer, epoch / offer.epochs)
                await reports.preview(handle, offer.job_id, offer.lease, encode(image, "JPEG", 70))
            if self.checkpoints and epoch % 5 == 0:
                await self._checkpoint(offer, epoch)
        result = await asyncio.to_thread(lambda: encode(self.paint(offer, 1.0), "PNG"))
        await reports.result(
            handle, offer.job_id, offer.lease, result, width=offer.width, height=offer.height
        )

    async def _checkpoint(self, offer: OfferJob, epoch: int) -> None:
        image = await asyncio.to_thread(
            lambda: encode(self.paint(offer, epoch / offer.epochs), "PNG")
        )
        await self.reports.checkpoint(
            self.handle, offer.job_id, offer.lease, epoch, image, width=offer.width,
            height=offer.height,
        )  # fmt: skip

    def release(self) -> None:
        """Let a node held at `hold_at` go on."""
        self._release.set()

    async def wait_held(self) -> None:
        """Until the node reaches `hold_at`."""
        await self._held.wait()
