"""A real relay app on a test server with its node port open, and helpers for fake nodes
that dial it over TCP (`wire_node.WireNode`): the harness of the node-link tests."""

import asyncio
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image
from relay_harness import form, png
from wire_node import WireNode

from protocol import PROTOCOL_VERSION, Accept, Offer, Result, Welcome
from relay.api import CONFIG
from relay.app import NODE_LISTENER
from relay.tokens import TokenStore

Client = TestClient[web.Request, web.Application]


class Relay:
    """A running relay app, its node port and a token store on its data dir."""

    def __init__(self, client: Client, data_dir: Path) -> None:
        self.client = client
        self.port = client.app[NODE_LISTENER].port
        self.tokens = TokenStore(data_dir)
        self.dialled: list[WireNode] = []
        self.issued: dict[str, str] = {}

    async def dial(self) -> WireNode:
        """A bare connection to the node port (closed when the test ends)."""
        node = await WireNode.dial(self.port)
        self.dialled.append(node)
        return node

    async def node(
        self, name: str = "gpu-1", *, versions: tuple[int, ...] = (PROTOCOL_VERSION,),
        **caps: object,
    ) -> WireNode:  # fmt: skip
        """A node that said Hello (offering `versions`) with a fresh token and was welcomed."""
        node = await self.dial()
        if name not in self.issued:
            self.issued[name] = await self.issue(name)
        await node.hello(self.issued[name], name, versions=versions, **caps)
        await node.expect(Welcome)
        return node

    async def issue(self, name: str) -> str:
        """A new token for node `name`, where the relay checks them: its data dir, or the
        database in cluster mode."""
        shared = self.client.app[NODE_LISTENER].tokens
        if self.client.app[CONFIG].cluster:
            from relay.cluster.credentials import SharedTokens

            assert isinstance(shared, SharedTokens)
            return await shared.add(name)
        return self.tokens.add(name)

    async def close(self) -> None:
        for node in self.dialled:
            await node.close()

    async def job(self, **fields: str) -> str:
        fields.setdefault("style", "fast:builtin:candy")
        fields.setdefault("size", "40")
        resp = await self.client.post("/api/jobs", data=form(png((64, 48)), **fields))
        body = await resp.json()
        assert resp.status == 202, body
        job_id: str = body["id"]
        return job_id

    async def state(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await (await self.client.get(f"/api/jobs/{job_id}")).json()
        return body

    async def nodes(self) -> list[dict[str, Any]]:
        body = await (await self.client.get("/api/nodes")).json()
        nodes: list[dict[str, Any]] = body["nodes"]
        return nodes

    async def wait_for(self, job_id: str, state: str, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while (body := await self.state(job_id))["state"] != state:
                await asyncio.sleep(0.02)
        return body


Start = Callable[..., Awaitable[Relay]]


async def accept(node: WireNode) -> Offer:
    """The next offer, accepted."""
    offer = await node.expect(Offer)
    await node.send(Accept(offer.job_id, offer.lease_id))
    return offer


def result_for(offer: Offer, color: tuple[int, int, int] = (250, 200, 10)) -> Result:
    size = offer.params["size"]
    assert isinstance(size, int)
    with Image.open(io.BytesIO(offer.content)) as img:
        width, height = img.size
    assert max(width, height) == size
    return Result.for_png(offer.job_id, offer.lease_id, png((width, height), color), width, height)
