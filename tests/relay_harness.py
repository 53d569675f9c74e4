"""A relay app on a test client, a clock the test moves, and a fake node that speaks to the
relay through its node seam (`relay.hub.NodeHub`), the way the protocol listener will."""

import asyncio
import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import FormData
from PIL import Image

from relay.config import Config
from relay.dispatch import NodeInfo
from relay.handles import CancelJob, NodeCommand, NodeHandle, Offer
from relay.hub import NodeHub


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


@dataclass
class FakeNode:
    """A node that answers through the hub as a protocol listener would."""

    hub: NodeHub
    handle: NodeHandle
    offers: list[Offer] = field(default_factory=list)

    @classmethod
    def connect(cls, hub: NodeHub, name: str = "gpu-1", **info: Any) -> "FakeNode":
        fields: dict[str, Any] = {
            "device_name": "Fake GPU",
            "device_memory": 8 << 30,
            "methods": frozenset({"gatys", "fast", "arbitrary"}),
            "styles": frozenset({"candy"}),
            "max_epochs": 1000,
            "max_pixels": 4_000_000,
            "slots": 1,
        }
        return cls(hub, hub.node_connected(NodeInfo(name, **{**fields, **info})))

    async def command(self, timeout: float = 5.0) -> NodeCommand:
        """The next offer or cancel meant for this node."""
        cmd = await asyncio.wait_for(self.handle.outbox.get(), timeout)
        if isinstance(cmd, Offer):
            self.offers.append(cmd)
        return cmd

    async def offer(self) -> Offer:
        """The next command, which must be an offer."""
        cmd = await self.command()
        assert isinstance(cmd, Offer), cmd
        return cmd

    async def cancel(self) -> CancelJob:
        """The next command, which must be a cancel."""
        cmd = await self.command()
        assert isinstance(cmd, CancelJob), cmd
        return cmd

    def progress(self, offer: Offer, epoch: int) -> bool:
        return self.hub.progress(
            self.handle,
            offer.job_id,
            offer.lease,
            epoch=epoch,
            max_epochs=offer.epochs,
            losses={"content": 1.0 / epoch, "style": 2.0 / epoch},
        )

    async def preview(self, offer: Offer) -> bool:
        return await self.hub.preview(self.handle, offer.job_id, offer.lease, jpeg())

    async def finish(self, offer: Offer) -> tuple[bool, bytes]:
        """Deliver a result PNG of the offer's size; return (accepted, the PNG)."""
        data = png((offer.width, offer.height), (250, 200, 10))
        ok = await self.hub.result(
            self.handle, offer.job_id, offer.lease, data, width=offer.width, height=offer.height
        )
        return ok, data

    def lost(self) -> None:
        self.hub.node_lost(self.handle, "connection closed")
