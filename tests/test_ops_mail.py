"""E-mail when a job ends: a real aiosmtpd server on port 0 receives what the relay sends."""

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiosmtpd.smtp import SMTP, Envelope, Session
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, make_config

from relay.api import SERVICE
from relay.app import init
from relay.mailer import EmailStatus, Mailer, MailSettings
from relay.metrics import Metrics
from relay.model import JobRecord, JobState

Client = TestClient[web.Request, web.Application]


@dataclass
class Inbox:
    """An SMTP handler keeping every message; it refuses the first `refuse` with 451."""

    refuse: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse > 0:
            self.refuse -= 1
            return "451 Try again later"
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.arrived.set()
        return "250 OK"

    async def wait(self, count: int = 1, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[Inbox, int]]:
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(inbox), "127.0.0.1", 0)
    yield inbox, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


Start = Callable[..., Awaitable[Client]]


@pytest.fixture
def start(aiohttp_client: AiohttpClient, tmp_path: Path, smtp: tuple[Inbox, int]) -> Start:
    async def go(**changes: Any) -> Client:
        settings: dict[str, Any] = {
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp[1],
            "smtp_from": "relay@example.org",
            "smtp_starttls": False,
            "public_url": "https://relay.example.org",
        }
        config = make_config(tmp_path, **{**settings, **changes})
        clock = FakeClock()
        return await aiohttp_client(init(config, clock, clock))

    return go


async def status_of(client: Client, job_id: str, want: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            body: dict[str, Any] = await (await client.get(f"/api/jobs/{job_id}")).json()
            if body["email_status"] == want:
                return body
            await asyncio.sleep(0.02)


async def test_done_job_mails_a_link_and_the_picture(start: Start, smtp: tuple[Inbox, int]) -> None:
    inbox, _ = smtp
    client = await start()
    resp = await client.post(
        "/api/jobs",
        data=form(style="painting:starry_night", email="ann@example.org", filename="cat.png"),
    )
    job = await resp.json()
    assert job["email_status"] == "pending"
    assert "email" not in job  # the address itself is never shown
    node = FakeNode.connect(client.app[SERVICE])
    _, result = await node.finish(await node.offer())

    await inbox.wait()
    await status_of(client, job["id"], "sent")
    message = inbox.messages[0]
    assert message["To"] == "ann@example.org" and message["From"] == "relay@example.org"
    assert "ready" in message["Subject"]
    body = message.get_body(("plain",))
    assert body is not None
    assert f"https://relay.example.org/api/jobs/{job['id']}/result" in body.get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "cat-stylized.png"  # named as the download is
    assert attachment.get_content() == result


async def test_large_result_is_linked_not_attached_and_failures_mail_the_reason(
    start: Start, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    client = await start(smtp_attach_max_mb=0.0001)  # about 100 bytes
    node = FakeNode.connect(client.app[SERVICE], slots=2)
    first = await (
        await client.post(
            "/api/jobs", data=form(style="painting:starry_night", email="bo@example.org")
        )
    ).json()
    await node.finish(await node.offer())
    await inbox.wait(1)
    assert list(inbox.messages[0].iter_attachments()) == []

    second = await (
        await client.post(
            "/api/jobs", data=form(style="painting:starry_night", email="cy@example.org")
        )
    ).json()
    offer = await node.offer()
    node.reports.failed(node.handle, offer.job_id, offer.lease, "the GPU caught fire", retry=False)
    await inbox.wait(2)
    failed = inbox.messages[1]
    assert failed["To"] == "cy@example.org" and "failed" in failed["Subject"]
    text = failed.get_body(("plain",))
    assert text is not None and "the GPU caught fire" in text.get_content()
    assert (await status_of(client, second["id"], "sent"))["state"] == "failed"
    assert (await status_of(client, first["id"], "sent"))["state"] == "done"


async def test_a_restart_keeps_statuses_and_sends_what_was_still_pending(
    start: Start, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    # First life: the mail server is down; the message waits 5 s for its retry.
    loop = asyncio.get_running_loop()
    probe = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    dead_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    client = await start(smtp_port=dead_port)
    job = await (
        await client.post(
            "/api/jobs", data=form(style="painting:starry_night", email="eve@example.org")
        )
    ).json()
    node = FakeNode.connect(client.app[SERVICE])
    await node.finish(await node.offer())
    async with asyncio.timeout(10):
        while not client.app[SERVICE].metrics.mails.get("retried"):
            await asyncio.sleep(0.02)
    assert (await status_of(client, job["id"], "pending"))["state"] == "done"
    await client.close()

    # Second life, same data directory, the mail server is up: the message goes out.
    client = await start()
    await inbox.wait()
    assert inbox.messages[0]["To"] == "eve@example.org"
    await status_of(client, job["id"], "sent")
    await client.close()

    # Third life: nothing is sent twice, and the status is still known.
    client = await start()
    await status_of(client, job["id"], "sent")
    await asyncio.sleep(0.1)
    assert len(inbox.messages) == 1


async def test_bad_address_is_refused_at_admission(start: Start) -> None:
    client = await start()
    resp = await client.post(
        "/api/jobs", data=form(style="painting:starry_night", email="not an address")
    )
    assert resp.status == 400
    assert "e-mail address" in (await resp.json())["error"]


def _job(job_id: str) -> JobRecord:
    return JobRecord(
        id=job_id,
        client="c",
        method="fast",
        styles=(),
        style_files=(),
        content_file="x",
        width=8,
        height=8,
        epochs=1,
        email="dee@example.org",
        state=JobState.FAILED,
        error="boom",
    )


def _settings(port: int) -> MailSettings:
    return MailSettings("127.0.0.1", port, "relay@example.org", "http://r", starttls=False)


async def test_refused_sends_are_retried_then_succeed(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    inbox.refuse = 2
    metrics = Metrics()
    mailer = Mailer(_settings(port), lambda _sha: b"", metrics, retry_delays=(0.05, 0.05, 0.05))
    worker = asyncio.create_task(mailer.run())
    mailer.notify(_job("j1"))
    assert mailer.status("j1") is EmailStatus.PENDING
    await inbox.wait()
    await asyncio.sleep(0.01)
    assert mailer.status("j1") is EmailStatus.SENT
    assert metrics.mails == {"retried": 2, "sent": 1}
    worker.cancel()


async def test_an_unreachable_server_ends_in_failed_without_blocking_others(
    smtp: tuple[Inbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    # A port that was just free: nothing listens there.
    loop = asyncio.get_running_loop()
    probe = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    dead_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    metrics = Metrics()
    mailer = Mailer(_settings(dead_port), lambda _sha: b"", metrics, retry_delays=(0.02, 0.02))
    worker = asyncio.create_task(mailer.run())
    mailer.notify(_job("j2"))
    mailer.notify(_job("j3"))
    async with asyncio.timeout(10):
        while mailer.status("j2") is EmailStatus.PENDING or mailer.waiting:
            await asyncio.sleep(0.01)
    assert mailer.status("j2") is EmailStatus.FAILED and mailer.status("j3") is EmailStatus.FAILED
    assert metrics.mails == {"retried": 4, "failed": 2}
    assert any("failed after 3 attempts" in r.getMessage() for r in caplog.records)
    worker.cancel()
