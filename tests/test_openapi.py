"""`/openapi.json`: valid OpenAPI 3.1, built from the relay's own field table and limits,
covering every route; and schemathesis against a live relay with a fake node."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, make_config
from web_relay import RelayThread, web_config

from relay import orders
from relay.app import init
from relay.config import Config
from relay.openapi import document

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, tmp_path: Path) -> Client:
    clock = FakeClock()
    config = make_config(tmp_path, max_epochs=321, max_size=1500)
    return await aiohttp_client(init(config, clock, clock))


async def served(client: Client) -> dict[str, Any]:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


async def test_the_document_is_valid_openapi_3_1(client: Client) -> None:
    doc = await served(client)
    assert doc["openapi"].startswith("3.1")
    validate(doc)


async def test_every_job_field_is_in_the_request_schemas(client: Client) -> None:
    schemas = (await served(client))["components"]["schemas"]
    for name in ("JobJson", "JobForm", "SeedsJobJson", "SeedsJobForm"):
        assert set(schemas[name]["properties"]) >= orders.FIELDS, name
    assert "model" in schemas["SeedsJobJson"]["properties"]
    assert "model" not in schemas["JobJson"]["properties"]
    assert schemas["JobJson"]["additionalProperties"] is False


async def test_limits_come_from_the_config(client: Client) -> None:
    props = (await served(client))["components"]["schemas"]["JobJson"]["properties"]
    assert props["epochs"]["maximum"] == 321
    assert props["size"]["maximum"] == 1500
    assert props["optimizer"]["enum"] == ["lbfgs", "adam"]


def test_a_field_without_a_schema_breaks_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orders, "FIELDS", orders.FIELDS | {"colour"})
    with pytest.raises(KeyError, match="colour"):
        document(Config())


async def test_every_route_is_documented(client: Client) -> None:
    paths = (await served(client))["paths"]
    routes = set()
    for route in client.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or path == "/{path}":  # the page's files: `/`, `/index`
            continue
        routes.add((path, route.method.lower()))
    documented = {(p, m) for p, ops in paths.items() for m in ops}
    assert routes - documented == set()
    assert documented - routes == {("/", "get"), ("/index", "get")}


async def test_every_error_status_of_the_docs_is_described(client: Client) -> None:
    responses = (await served(client))["components"]["responses"]
    statuses = {400, 401, 403, 404, 405, 408, 409, 413, 415, 429, 503, 507}
    assert {int(k[1:]) for k in responses} == statuses
    schema = {"$ref": "#/components/schemas/Error"}
    assert all(r["content"]["application/json"]["schema"] == schema for r in responses.values())


# ---- schemathesis against a live relay ---------------------------------------------------


@pytest.fixture
def live_relay(tmp_path: Path) -> Iterator[RelayThread]:
    # Generous per-client limits: schemathesis is one client sending hundreds of jobs.
    config = web_config(
        tmp_path,
        rate_per_minute=100_000,
        max_open_jobs=100_000,
        uploads_per_client=16,
        gallery_reports_per_hour=100_000,
    )
    relay = RelayThread(config).start()
    relay.add_node(epoch_seconds=0.001)
    try:
        yield relay
    finally:
        relay.stop()


CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


@pytest.mark.slow
def test_schemathesis_finds_no_errors(live_relay: RelayThread, tmp_path: Path) -> None:
    st = Path(sys.executable).parent / "st"
    command = [
        str(st),
        "run",
        f"{live_relay.url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        "25",
        "--seed",
        "1",
        "--phases",
        "examples,fuzzing,stateful",
        "--request-timeout",
        "65",  # a generated `wait` may be up to 60 s
        "--generation-deterministic",
    ]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    print(done.stdout[-6000:])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


async def test_a_405_names_the_allowed_methods_in_allow(client: Client) -> None:
    # Found by schemathesis (ST204): RFC 9110 requires `Allow` on a 405.
    resp = await client.request("TRACE", "/api/jobs")
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"  # not the page's GET, which would be a 404
    assert "use POST." in (await resp.json())["error"]
    resp = await client.request("TRACE", "/api/jobs/x")
    assert resp.headers["Allow"] == "DELETE, GET, HEAD"
    resp = await client.post("/index")
    assert resp.headers["Allow"] == "GET, HEAD"


async def test_get_of_a_post_only_path_is_405_not_404(client: Client) -> None:
    # Found by schemathesis (ST204): the page's catch-all answered GET /api/jobs with 404.
    for path in ("/api/jobs", "/transform", "/api/gallery/x/report"):
        resp = await client.get(path)
        assert resp.status == 405, path
        assert resp.headers["Allow"] == "POST"
    assert (await client.get("/no-such-page")).status == 404
