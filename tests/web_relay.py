"""A real relay served on a loopback port in a background thread, and a fake node inside it.

The browser tests drive the page against this relay. The fake node connects through the
relay's node seam (`relay.hub.NodeHub`), as the protocol listener will, and answers offers
with real work: timed epochs, preview JPEGs that change as it goes, and a result PNG of the
offer's size made from the photo and the style. A test can hold it at an epoch and let it go.

    relay = RelayThread(make_config(tmp_path)).start()
    node = relay.add_node(epoch_seconds=0.05)
    ...  # the browser opens relay.url
    relay.stop()
"""

import asyncio
import io
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import WSCloseCode, web
from PIL import Image, ImageChops, ImageFilter, ImageOps

from relay.api import SERVICE, SOCKETS
from relay.app import NODE_LISTENER, init
from relay.config import Config
from relay.dispatch import NodeInfo
from relay.handles import CancelJob, NodeHandle, Offer
from relay.hub import NodeHub
from relay.tokens import TokenStore

if TYPE_CHECKING:
    from gpu_node.daemon.daemon import Daemon

log = logging.getLogger(__name__)
T = TypeVar("T")
FAST_STYLES = {"candy": (230, 60, 140), "mosaic": (40, 150, 200)}
FAST_TITLES = {"candy": "Candy", "mosaic": "Mosaic"}
HEARTBEAT = 1.0


def web_config(tmp_path: Path, **changes: Any) -> Config:
    """A relay config for page tests: small caps so the page's limits can be tried."""
    base = Config(
        host="127.0.0.1",
        http_port=0,
        node_port=0,
        data_dir=tmp_path / "relay-data",
        max_epochs=300,
        max_upload_mb=1.0,
        max_pixels=4_000_000,
        max_size=1024,
        default_size=256,
        rate_per_minute=1000,
        max_open_jobs=20,
        tick_interval=1.0,
        sweep_interval=3600.0,
    )
    return base.replace(**changes)


def _jpeg(img: Image.Image, quality: int = 85) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def swatch(color: tuple[int, int, int], size: int = 96) -> bytes:
    """A thumbnail for a fast style: a diagonal gradient of its colour."""
    ramp = Image.linear_gradient("L").rotate(45).resize((size, size))
    tinted = ImageOps.colorize(ramp, black=(20, 20, 40), white=color)
    return _jpeg(tinted)


def paint(offer: Offer, amount: float) -> Image.Image:
    """The photo `amount` of the way (0..1) to a posterised, style-tinted picture."""
    with Image.open(io.BytesIO(offer.content_png)) as img:
        photo = img.convert("RGB")
    if offer.style_images:
        with Image.open(io.BytesIO(offer.style_images[0][0])) as img:
            tint = img.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    else:
        tint = FAST_STYLES.get(offer.fast_styles[0][0] if offer.fast_styles else "", (200, 80, 40))
    assert isinstance(tint, tuple)
    styled = ImageOps.posterize(photo.filter(ImageFilter.SMOOTH_MORE), 3)
    styled = ImageChops.multiply(styled, Image.new("RGB", photo.size, tint))
    styled = ImageChops.screen(
        styled, ImageOps.grayscale(photo).convert("RGB").point(lambda v: v // 3)
    )
    return Image.blend(photo, styled, max(0.0, min(1.0, amount)))


@dataclass
class FakeNode:
    """A node inside the relay's loop: takes offers, reports epochs, previews and a PNG."""

    hub: NodeHub
    handle: NodeHandle
    epoch_seconds: float
    preview_every: int = 3
    hold_at: int | None = None
    offers: list[Offer] = field(default_factory=list)
    epochs_reported: list[int] = field(default_factory=list)
    _cancelled: set[str] = field(default_factory=set)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _held: asyncio.Event = field(default_factory=asyncio.Event)

    async def heartbeat(self) -> None:
        """Say "still here" every second, as the real node's heartbeats do."""
        while True:
            self.hub.seen(self.handle)
            await asyncio.sleep(HEARTBEAT)

    async def serve(self) -> None:
        """Answer commands (and beat) until cancelled."""
        tasks: set[asyncio.Task[None]] = set()
        tasks.add(asyncio.get_running_loop().create_task(self.heartbeat()))
        try:
            while True:
                command = await self.handle.outbox.get()
                if isinstance(command, CancelJob):
                    self._cancelled.add(command.job_id)
                    continue
                if not isinstance(command, Offer):
                    continue  # a live message: this fake node never said it takes them
                self.offers.append(command)
                task = asyncio.get_running_loop().create_task(self._work(command))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in list(tasks):
                task.cancel()

    async def _work(self, offer: Offer) -> None:
        hub, handle = self.hub, self.handle
        for epoch in range(1, offer.epochs + 1):
            await asyncio.sleep(self.epoch_seconds)
            if offer.job_id in self._cancelled:
                return
            if self.hold_at is not None and epoch == self.hold_at and not self._release.is_set():
                self._held.set()
                await self._release.wait()
            self.epochs_reported.append(epoch)
            losses = {"content": 10.0 / epoch, "style": 100.0 / epoch}
            hub.progress(
                handle,
                offer.job_id,
                offer.lease,
                epoch=epoch,
                max_epochs=offer.epochs,
                losses=losses,
            )
            if epoch % self.preview_every == 0 or epoch == offer.epochs:
                image = await asyncio.to_thread(paint, offer, epoch / offer.epochs)
                await hub.preview(handle, offer.job_id, offer.lease, _jpeg(image, 70))
        result = await asyncio.to_thread(lambda: _png(paint(offer, 1.0)))
        await hub.result(
            handle, offer.job_id, offer.lease, result, width=offer.width, height=offer.height
        )

    def release(self) -> None:
        """Let a node held at `hold_at` go on."""
        self._release.set()

    async def wait_held(self) -> None:
        """Until the node reaches `hold_at`."""
        await self._held.wait()


class RelayThread:
    """The relay app on 127.0.0.1 (port 0: a free one), its loop in a daemon thread."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="relay", daemon=True)
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.nodes: list[tuple[FakeNode, asyncio.Task[None]]] = []
        self.daemons: list[tuple[Daemon, asyncio.Task[int]]] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine in the relay's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """Run a plain function in the relay's loop (the hub is not thread-safe)."""

        async def wrapped() -> T:
            return fn()

        return self.run(wrapped())

    def start(self) -> "RelayThread":
        """Serve the app; `url` is where the page is."""
        self.thread.start()

        async def up() -> str:
            self.runner = web.AppRunner(init(self.config), access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", self.config.http_port)
            await site.start()
            server = site._server
            assert isinstance(server, asyncio.base_events.Server)
            port = server.sockets[0].getsockname()[1]
            return f"http://127.0.0.1:{port}"

        self.url = self.run(up())
        return self

    @property
    def app(self) -> web.Application:
        """The relay's web application."""
        assert self.runner is not None
        return self.runner.app

    def add_node(
        self,
        name: str = "test-gpu",
        pace: dict[str, tuple[float, float]] | None = None,
        **options: Any,
    ) -> FakeNode:
        """Connect a fake node (methods gatys, fast, arbitrary; fast styles candy and mosaic),
        advertising `pace` as a real node's Hello would (relay/estimates.py)."""

        async def connect() -> FakeNode:
            hub = self.app[SERVICE].hub
            info = NodeInfo(
                name,
                device_name="Fake GPU",
                device_memory=8 << 30,
                methods=frozenset({"gatys", "fast", "arbitrary"}),
                styles=frozenset(FAST_STYLES),
                titles=dict(FAST_TITLES),
                max_epochs=1000,
                max_pixels=4_000_000,
                thumbnails={k: swatch(c) for k, c in FAST_STYLES.items()},
                pace=dict(pace or {}),
            )
            node = FakeNode(hub, hub.node_connected(info), **{"epoch_seconds": 0.05, **options})
            task = asyncio.get_running_loop().create_task(node.serve())
            self.nodes.append((node, task))
            return node

        return self.run(connect())

    def add_real_node(self, name: str = "cpu-node", **options: Any) -> "Daemon":
        """Connect a real node daemon (CPU) through the node port, as a GPU owner would."""
        from gpu_node.daemon.config import NodeConfig
        from gpu_node.daemon.daemon import create_daemon

        port = self.app[NODE_LISTENER].port
        token = TokenStore(self.config.data_dir).add(name)
        values: dict[str, Any] = {"name": name, "device": "cpu", "backoff_max": 1.0}
        config = NodeConfig("127.0.0.1", port, token, **{**values, **options})
        daemon = create_daemon(config)

        async def start() -> None:
            self.daemons.append((daemon, asyncio.get_running_loop().create_task(daemon.serve())))
            async with asyncio.timeout(60):
                while not self.app[SERVICE].hub.infos():
                    await asyncio.sleep(0.05)

        self.run(start(), timeout=90.0)
        return daemon

    def drop_sockets(self) -> int:
        """Close every page WebSocket from the server side, as a network drop would."""

        async def close() -> int:
            live: set[web.WebSocketResponse] = self.app[SOCKETS]
            sockets = list(live)
            for ws in sockets:
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"test drop")
            return len(sockets)

        return self.run(close())

    def stop(self) -> None:
        """Stop nodes and the server, then the loop."""

        async def down() -> None:
            for daemon, serving in self.daemons:
                daemon.drain()
                await asyncio.wait_for(serving, 30.0)
            for _node, task in self.nodes:
                task.cancel()
            await asyncio.gather(*(t for _n, t in self.nodes), return_exceptions=True)
            if self.runner is not None:
                await self.runner.cleanup()

        try:
            self.run(down(), timeout=20.0)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10.0)
            self.loop.close()


def main() -> None:
    """Serve the page with a fake node for trying it by hand: `python tests/web_relay.py`."""
    import sys
    import tempfile

    logging.basicConfig(level=logging.INFO)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    with tempfile.TemporaryDirectory() as tmp:
        relay = RelayThread(web_config(Path(tmp), http_port=port)).start()
        relay.add_node(epoch_seconds=0.1)
        sys.stdout.write(f"page at {relay.url}\n")
        sys.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            relay.stop()


if __name__ == "__main__":
    main()
