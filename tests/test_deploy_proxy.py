"""The shipped nginx site in front of a real relay process: what the hardening relies on
holds through the proxy as operators deploy it (same-origin posts pass, cross-site ones and
compressed bodies are refused, and a client cannot forge its address to escape limits)."""

import asyncio
import contextlib
import gzip
import io
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "deploy" / "proxy" / "nginx-stylerelay.conf"
HOST = "relay.example.org"

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("openssl") is None,
    reason="needs nginx and openssl (make test installs them)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on {port}")


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[int]:
    """A relay behind the shipped nginx site; yields nginx's TLS port."""
    relay_port, http_port, tls_port = _free_port(), _free_port(), _free_port()
    relay_log, nginx_log = tmp_path / "relay.log", tmp_path / "nginx.log"
    logs = contextlib.ExitStack()
    relay_out, nginx_out = (
        logs.enter_context(relay_log.open("wb")),
        logs.enter_context(nginx_log.open("wb")),
    )
    relay = subprocess.Popen(
        [sys.executable, "-m", "relay", "--host", "127.0.0.1", "--http-port", str(relay_port),
         "--node-port", "0", "--data-dir", str(tmp_path / "data"),
         "--trusted-proxy", "127.0.0.1", "--max-open-jobs", "1"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=relay_out,
    )  # fmt: skip
    nginx: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", "k.pem", "-out", "c.pem", "-days", "1", "-subj", f"/CN={HOST}"],
            cwd=tmp_path, check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        site = SITE.read_text()
        site = site.replace("/etc/letsencrypt/live/relay.example.org/fullchain.pem", "c.pem")
        site = site.replace("/etc/letsencrypt/live/relay.example.org/privkey.pem", "k.pem")
        site = site.replace("127.0.0.1:1337", f"127.0.0.1:{relay_port}")
        site = site.replace("listen 443 ssl", f"listen 127.0.0.1:{tls_port} ssl")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
        # Loopback only in a test: the site's IPv6 listeners are not needed.
        site = "\n".join(line for line in site.splitlines() if "listen [::]" not in line)
        (tmp_path / "site.conf").write_text(site)
        (tmp_path / "nginx.conf").write_text(
            f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\ndaemon off;\n"
            "events {}\n"
            f"http {{ access_log off; client_body_temp_path {tmp_path}; "
            f"proxy_temp_path {tmp_path}; include site.conf; }}\n"
        )
        nginx = subprocess.Popen(
            ["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=nginx_out,
        )
        _wait_port(relay_port, relay, "the relay", relay_log)
        _wait_port(tls_port, nginx, "nginx", nginx_log)
        yield tls_port
    finally:
        for proc in (nginx, relay):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        logs.close()


def _photo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def _form() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("content", _photo(), filename="p.png", content_type="image/png")
    form.add_field("style", "painting:udnie")
    form.add_field("method", "arbitrary")
    return form


async def _post(port: int, **headers: str) -> tuple[int, dict[str, object]]:
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"https://127.0.0.1:{port}/api/jobs",
            data=_form(),
            headers={"Host": HOST, **headers},
            ssl=tls,
        ) as resp,
    ):
        return resp.status, await resp.json()


async def _post_raw(port: int, body: bytes, **headers: str) -> tuple[int, dict[str, object]]:
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(
            f"https://127.0.0.1:{port}/api/jobs",
            data=body,
            headers={"Host": HOST, **headers},
            ssl=tls,
        ) as resp,
    ):
        return resp.status, await resp.json()


def test_the_shipped_nginx_site_keeps_the_relays_defences(proxied: int) -> None:
    async def scenario() -> None:
        # A page of another site may not post through the proxy.
        status, body = await _post(proxied, Origin="https://evil.example")
        assert status == 403, body
        # The relay's own page may: its origin is what the proxy says the client used.
        status, body = await _post(proxied, Origin=f"https://{HOST}")
        assert status == 202, body
        # A forged X-Forwarded-For does not make a new client: nginx appends the real peer
        # and the relay believes only that last hop, so the one open job already counts.
        status, body = await _post(proxied, **{"X-Forwarded-For": "203.0.113.77"})
        assert status == 429, body
        # A compressed body is refused, not inflated, behind the proxy too.
        bomb = gzip.compress(b"{" + b" " * 2_000_000 + b"}")
        status, body = await _post_raw(
            proxied, bomb, **{"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )
        assert status == 415, body

    asyncio.run(scenario())
