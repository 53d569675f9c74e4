"""TLS on the node port: a real relay serving TLS on port 0, with certificates made here
by the `openssl` command (a private CA and a certificate for 127.0.0.1), and the node side's
real TLS context, first on a wire-level fake node, then in the real daemon."""

import asyncio
import contextlib
import logging
import random
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import make_config
from wire_node import WireNode

from gpu_node.daemon.config import ConfigError as NodeConfigError
from gpu_node.daemon.config import NodeConfig
from gpu_node.daemon.tls import client_context
from protocol import Welcome
from relay.app import NODE_LISTENER, init
from relay.errors import ConfigError
from relay.tokens import TokenStore

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
Client = TestClient[web.Request, web.Application]


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(cwd: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    _ca(d, "ca")
    _ca(d, "other")
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "relay.key", "-out", "relay.csr", "-subj", "/CN=relay", cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "relay.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "relay.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d,
    )  # fmt: skip
    return Certs(d / "ca.pem", d / "relay.pem", d / "relay.key", d / "other.pem")


@dataclass
class TlsRelay:
    client: Client
    port: int
    token: str


@pytest.fixture
async def relay(aiohttp_client: AiohttpClient, tmp_path: Path, certs: Certs) -> TlsRelay:
    config = make_config(tmp_path, node_tls_cert=certs.cert, node_tls_key=certs.key)
    client = await aiohttp_client(init(config))
    token = TokenStore(config.data_dir).add("gpu-tls")
    return TlsRelay(client, client.app[NODE_LISTENER].port, token)


def node_config(port: int, **changes: Any) -> NodeConfig:
    fields: dict[str, Any] = {
        "relay_host": "127.0.0.1",
        "relay_port": port,
        "token": "t",
        "name": "gpu-tls",
        "tls": True,
        "backoff_min": 0.05,
        "backoff_max": 0.1,
    }
    return NodeConfig(**{**fields, **changes})


async def dial(port: int, context: ssl.SSLContext | None) -> WireNode:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1" if context else None
    )
    return WireNode(reader, writer)


async def test_node_with_the_ca_file_is_welcomed_over_tls(relay: TlsRelay, certs: Certs) -> None:
    context = client_context(node_config(relay.port, ca_file=certs.ca))
    node = await dial(relay.port, context)
    assert node.writer.get_extra_info("ssl_object") is not None
    await node.hello(relay.token, "gpu-tls")
    assert isinstance(await node.expect(Welcome), Welcome)
    nodes = await (await relay.client.get("/api/nodes")).json()
    assert [n["name"] for n in nodes["nodes"]] == ["gpu-tls"]
    await node.close()


async def test_without_the_ca_the_certificate_is_refused(relay: TlsRelay, certs: Certs) -> None:
    for config in (node_config(relay.port), node_config(relay.port, ca_file=certs.other_ca)):
        context = client_context(config)
        with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
            await dial(relay.port, context)


async def test_insecure_connects_and_warns_loudly(
    relay: TlsRelay, caplog: pytest.LogCaptureFixture
) -> None:
    context = client_context(node_config(relay.port, insecure=True))
    assert any(
        "INSECURE" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
    node = await dial(relay.port, context)
    await node.hello(relay.token, "gpu-tls")
    await node.expect(Welcome)
    await node.close()


async def test_a_plain_node_on_the_tls_port_gets_nowhere(relay: TlsRelay) -> None:
    node = await dial(relay.port, None)
    await node.hello(relay.token, "gpu-tls")
    assert await node.closed_by_relay()
    await node.close()
    assert (await (await relay.client.get("/api/nodes")).json())["nodes"] == []


def test_bad_tls_files_stop_the_relay_and_the_node_with_a_message(
    tmp_path: Path, certs: Certs
) -> None:
    with pytest.raises(ConfigError, match="key must match"):
        init(make_config(tmp_path, node_tls_cert=certs.cert, node_tls_key=certs.ca))
    with pytest.raises(ConfigError, match="no such file"):
        init(make_config(tmp_path, node_tls_cert=tmp_path / "x.pem", node_tls_key=certs.key))
    with pytest.raises(ConfigError, match="give both or neither"):
        make_config(tmp_path, node_tls_cert=certs.cert)
    with pytest.raises(NodeConfigError, match="not a readable PEM"):
        client_context(node_config(1, ca_file=certs.key.with_suffix(".csr")))


# ---- the real daemon -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def daemon(config: NodeConfig) -> AsyncIterator[Any]:
    from gpu_node.daemon.capabilities import build_capabilities
    from gpu_node.daemon.daemon import Daemon
    from gpu_node.daemon.params import NodeCaps
    from gpu_node.daemon.runner import JobRunner
    from gpu_node.device import pick_device
    from gpu_node.fast.registry import build_registry

    runner = JobRunner(NodeCaps(10, 10_000), build_registry(None), pick_device("cpu"), ("fast",))
    caps = build_capabilities(config, runner.registry, runner.device, runner.methods)
    node = Daemon(config, caps, runner, rng=random.Random(0))
    task = asyncio.create_task(node.serve())
    try:
        yield node
    finally:
        node.drain()
        await asyncio.wait_for(task, 10)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def test_the_daemon_dials_tls_and_explains_an_unknown_ca(
    relay: TlsRelay, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    async def listed() -> bool:
        body = await (await relay.client.get("/api/nodes")).json()
        return [n["name"] for n in body["nodes"]] == ["gpu-tls"]

    good = node_config(relay.port, token=relay.token, ca_file=certs.ca, device="cpu")
    async with daemon(good):
        await until(listed)

    bad = node_config(relay.port, token=relay.token, device="cpu")

    async def explained() -> bool:
        return any("could not be verified" in r.getMessage() for r in caplog.records)

    async with daemon(bad) as node:
        await until(explained)
        assert node.session is None
    [line] = {r.getMessage() for r in caplog.records if "could not be verified" in r.getMessage()}
    assert "this machine's trusted CAs" in line and "--ca-file" in line


# ---- the node's TLS settings ---------------------------------------------------------------


def _node(argv: list[str], env: dict[str, str] | None = None) -> NodeConfig:
    import argparse

    from gpu_node.daemon.config import add_arguments, from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(["--token", "t", *argv]), env or {})


def test_node_tls_comes_from_the_scheme_a_flag_or_the_environment(tmp_path: Path) -> None:
    assert not _node(["--relay", "relay.example:5678"]).tls
    assert not _node(["--relay", "tcp://relay.example:5678"]).tls
    secure = _node(["--relay", "tls://relay.example:5678"])
    assert secure.tls and (secure.relay_host, secure.relay_port) == ("relay.example", 5678)
    assert secure.relay == "tls://relay.example:5678"
    assert _node(["--relay", "relay.example", "--tls"]).tls
    assert _node(["--relay", "h"], {"STYLERELAY_NODE_TLS": "yes"}).tls
    assert not _node(["--relay", "h"], {"STYLERELAY_NODE_TLS": "off"}).tls
    with pytest.raises(NodeConfigError, match="STYLERELAY_NODE_TLS='maybe': expected yes or no"):
        _node(["--relay", "h"], {"STYLERELAY_NODE_TLS": "maybe"})
    with_ca = _node(["--relay", "h", "--ca-file", str(tmp_path / "ca.pem")])
    assert with_ca.tls and with_ca.ca_file == tmp_path / "ca.pem"
    insecure = _node(["--relay", "h"], {"STYLERELAY_NODE_INSECURE": "1"})
    assert insecure.tls and insecure.insecure
    with pytest.raises(NodeConfigError, match="scheme is tls:// or tcp://"):
        _node(["--relay", "https://relay.example"])
    with pytest.raises(NodeConfigError, match="makes no sense with --ca-file"):
        _node(["--relay", "h", "--insecure", "--ca-file", "ca.pem"])
