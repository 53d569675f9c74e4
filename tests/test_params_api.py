"""Job parameters end to end: what the API takes (`init`, `style_scale`, `pooling` among
them) reaches the node's engine; what the node would decline, the relay refuses first,
naming the field and the allowed range or methods."""

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, json_order, make_config, png

from gpu_node.daemon.params import Declined, GatysJob, NodeCaps, job_spec
from gpu_node.engine.gatys_params import Init
from gpu_node.engine.layers import Pooling
from gpu_node.fast.registry import StyleRegistry, build_registry
from protocol import DeclineReason, Offer, StyleImage
from relay.api import SERVICE
from relay.app import init
from relay.nodewire import wire_offer

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]
PAINTING = "painting:udnie"
CAPS = NodeCaps(max_epochs=1000, max_pixels=10**8)


@pytest.fixture
def start(aiohttp_client: AiohttpClient, tmp_path: Path) -> Start:
    clock = FakeClock()

    async def go(**changes: Any) -> Client:
        return await aiohttp_client(init(make_config(tmp_path, **changes), clock, clock))

    return go


@pytest.fixture(scope="module")
def registry() -> StyleRegistry:
    return build_registry(None)


async def offered(client: Client, **fields: Any) -> Offer:
    """Submit a JSON job and return the protocol Offer a node is sent for it."""
    resp = await client.post("/api/jobs", json=json_order(**fields))
    assert resp.status == 202, await resp.text()
    node = FakeNode.connect(client.app[SERVICE])
    return wire_offer(await node.offer())


async def refused(client: Client, **fields: str) -> str:
    resp = await client.post("/api/jobs", data=form(**fields))
    body = await resp.json()
    assert resp.status == 400, body
    message: str = body["error"]
    return message


async def test_init_style_scale_and_pooling_reach_the_gatys_engine(
    start: Start, registry: StyleRegistry
) -> None:
    client = await start()
    offer = await offered(
        client, style=PAINTING, epochs=10, init="noise", style_scale=0.5, pooling="avg", seed=3
    )
    assert {k: offer.params[k] for k in ("init", "style_scale", "pooling", "seed")} == {
        "init": "noise", "style_scale": 0.5, "pooling": "avg", "seed": 3,
    }  # fmt: skip
    spec = job_spec(offer, CAPS, registry)
    assert isinstance(spec, GatysJob)
    p = spec.params
    assert (p.init, p.style_scale, p.pooling, p.seed, p.epochs) == (
        Init.NOISE, 0.5, Pooling.AVG, 3, 10,
    )  # fmt: skip


async def test_a_form_takes_the_new_settings_as_text(start: Start) -> None:
    client = await start()
    resp = await client.post(
        "/api/jobs",
        data=form(style=PAINTING, init="style", style_scale="2", pooling="max"),
    )
    body = await resp.json()
    assert resp.status == 202, body
    assert body["params"]["init"] == "style" and body["params"]["style_scale"] == 2.0


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"init": "photo"}, "`init` must be one of content, noise, style"),
        ({"pooling": "min"}, "`pooling` must be one of max, avg"),
        ({"style_scale": "5"}, "`style_scale` must be a number between 0.05 and 4"),
        ({"style_scale": "0"}, "`style_scale` must be a number between 0.05 and 4"),
        ({"size": "9000"}, "`size` must be a whole number between 16 and 8192 pixels"),
        ({"method": "arbitrary", "seed": "3"}, "`seed` applies to the gatys method only"),
        (
            {"method": "arbitrary", "init": "noise"},
            "`init` applies to the gatys method only, not arbitrary",
        ),
        ({"method": "arbitrary", "epochs": "300"}, "`epochs` applies to the gatys method only"),
        ({"method": "arbitrary", "strength": "2"}, "`strength` must be a number between 0 and 1"),
    ],
)
async def test_values_outside_the_table_are_400_naming_the_rule(
    start: Start, fields: dict[str, str], says: str
) -> None:
    client = await start(max_size=10_000)
    message = await refused(client, style=PAINTING, **fields)
    assert says in message, message
    assert client.app[SERVICE].scheduler.queued == 0


async def test_the_relays_caps_narrow_the_tables_range(start: Start) -> None:
    client = await start(max_size=600)
    says = await refused(client, style=PAINTING, size="700")
    assert "between 16 and 600 pixels" in says


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"init": "photo"}, "init must be one of content, noise, style"),
        ({"pooling": "min"}, "pooling must be one of max, avg"),
        ({"style_scale": 5.0}, "style_scale must be a number between 0.05 and 4"),
        ({"size": 9000}, "size must be a whole number between 16 and 8192 pixels"),
        ({"preserve_colors": True}, "unknown parameter(s) preserve_colors"),
    ],
)
def test_the_node_declines_offers_outside_the_table(
    registry: StyleRegistry, params: dict[str, Any], says: str
) -> None:
    offer = Offer("j", "l", "gatys", params, None, (StyleImage(png(), 1.0),), png())
    with pytest.raises(Declined) as caught:
        job_spec(offer, CAPS, registry)
    assert caught.value.reason is DeclineReason.INVALID_PARAMS
    assert says in caught.value.message


async def test_an_empty_size_field_is_no_size(start: Start) -> None:
    # A form may send every field, empty ones too: an empty `size` is left out, so a
    # one-pass job keeps the photo's own size (as without the field).
    client = await start()
    resp = await client.post(
        "/api/jobs", data=form(png((64, 48)), style=PAINTING, method="arbitrary", size="")
    )
    body = await resp.json()
    assert resp.status == 202, body
    assert (body["width"], body["height"], body["params"]["size"]) == (64, 48, 64)
