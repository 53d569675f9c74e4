"""Issue 11, hardening: one bad message cannot silence the mailer, one job mails one plain
address and no address is flooded, and queued jobs no node can take do not wait forever.

Mail goes to a real aiosmtpd server on 127.0.0.1; the relay runs on a FakeClock the test
moves (both its wall clock and its monotonic timer).
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiosmtpd.smtp import SMTP
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, json_order, make_config
from test_ops_mail import Inbox

from relay.api import SERVICE
from relay.app import init
from relay.dispatch import Failed, JobTicket, NodeInfo, Requeued, SendOffer, Timeouts
from relay.jobs import JobService
from relay.model import JobRecord, JobState
from relay.scheduler import Scheduler
from relay.store import JobStore

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]
HOUR = 3600.0
PAINTING = "painting:starry_night"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def mail_server() -> AsyncIterator[tuple[Inbox, int]]:
    inbox = Inbox()
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(inbox), "127.0.0.1", 0)
    yield inbox, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
def start(
    aiohttp_client: AiohttpClient,
    tmp_path: Path,
    clock: FakeClock,
    mail_server: tuple[Inbox, int],
) -> Start:
    """A relay on `tmp_path` that mails through `mail_server`; call again to restart it."""

    async def go(**changes: Any) -> Client:
        mail: dict[str, Any] = {
            "smtp_host": "127.0.0.1",
            "smtp_port": mail_server[1],
            "smtp_from": "relay@example.org",
            "smtp_starttls": False,
            "public_url": "https://relay.example.org",
        }
        config = make_config(tmp_path, **{**mail, **changes})
        return await aiohttp_client(init(config, clock, clock))

    return go


def service(client: Client) -> JobService:
    return client.app[SERVICE]


async def create(client: Client, **fields: str) -> dict[str, Any]:
    fields.setdefault("style", PAINTING)
    resp = await client.post("/api/jobs", data=form(**fields))
    body: dict[str, Any] = await resp.json()
    assert resp.status == 202, body
    return body


async def job_of(client: Client, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get(f"/api/jobs/{job_id}")).json()
    return body


async def email_status(client: Client, job_id: str, want: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while (body := await job_of(client, job_id))["email_status"] != want:
            await asyncio.sleep(0.02)
    return body


async def run_one(node: FakeNode) -> None:
    await node.finish(await node.offer())


# ---- 2: one bad message does not silence the mailer --------------------------------------


async def test_a_file_name_with_line_breaks_is_cleaned_and_later_mail_still_goes(
    start: Start, mail_server: tuple[Inbox, int]
) -> None:
    inbox, _ = mail_server
    client = await start()
    node = FakeNode.connect(service(client))
    evil = await create(
        client, email="ann@example.org", filename="cat\r\nBcc: victim@example.net.png"
    )
    await run_one(node)
    later = await create(client, email="bo@example.org", filename="dog.png")
    await run_one(node)

    await inbox.wait(2)
    await email_status(client, evil["id"], "sent")
    await email_status(client, later["id"], "sent")
    first, second = inbox.messages
    assert first["To"] == "ann@example.org" and first["Bcc"] is None
    [attachment] = list(first.iter_attachments())
    name = attachment.get_filename()
    assert name is not None and "\r" not in name and "\n" not in name
    # One rule names the result, in the mail and as a download.
    download = await client.get(f"/api/jobs/{evil['id']}/result")
    assert f'filename="{name}"' in download.headers["Content-Disposition"]
    assert name == "cat_Bcc_victim_example.net-stylized.png"
    assert second["To"] == "bo@example.org"


async def test_after_a_restart_a_poisoned_pending_message_fails_alone(
    start: Start,
    mail_server: tuple[Inbox, int],
    tmp_path: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox, _ = mail_server
    # Rows a relay left behind, still pending: first a file name its old code choked on,
    # then an address no message can carry (hand-edited, or from an older check), then a
    # plain one. The bad ones come first, as they would be retried first.
    store = JobStore(tmp_path / "data" / "jobs.sqlite3")
    rows = {
        "crlf-name": ("cy@example.org", "x\r\nBcc: victim@example.net.png"),
        "crlf-address": ("dee@example.org\r\nBcc: victim@example.net", None),
        "plain": ("eve@example.org", None),
    }
    for job_id, (address, filename) in rows.items():
        store.insert(
            JobRecord(
                id=job_id,
                client="c",
                method="gatys",
                styles=(),
                style_files=(),
                content_file="0" * 64,
                width=8,
                height=8,
                epochs=1,
                email=address,
                filename=filename,
                state=JobState.FAILED,
                error="boom",
                created=clock.now - 60,
                finished=clock.now - 30,
                email_status="pending",
            )
        )
    store.close()

    client = await start()
    await inbox.wait(2)
    await email_status(client, "crlf-address", "failed")
    await email_status(client, "crlf-name", "sent")
    await email_status(client, "plain", "sent")
    assert sorted(m["To"] for m in inbox.messages) == ["cy@example.org", "eve@example.org"]
    assert service(client).metrics.mails["failed"] == 1
    assert any(
        r.levelno >= logging.ERROR and "crlf-address" in r.getMessage() for r in caplog.records
    )

    # The mailer is still alive for new jobs.
    node = FakeNode.connect(service(client))
    fresh = await create(client, email="fay@example.org")
    await run_one(node)
    await inbox.wait(3)
    await email_status(client, fresh["id"], "sent")


# ---- 9: one plain address per job, and a limit per recipient ------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "root,postmaster,abuse@victim.example",
        "ann@example.org, bo@example.org",
        "ann@example.org;bo@example.org",
        "Ann <ann@example.org>",
        "ann@example.org (Ann)",
        '"ann lee"@example.org',
        "ann lee@example.org",
        "a:b@example.org",
        "a\\b@example.org",
        "a[b]@example.org",
        "ann@example.org\r\nBcc: victim@example.net",
        "ann\t@example.org",
        "ann\x00@example.org",
        "a" * 65 + "@example.org",
        "ann@" + ".".join(["d" * 60] * 5) + ".org",  # 311 characters
        "ann@example",
        "ann@@example.org",
        ".ann@example.org",
        "ann..lee@example.org",
        "ann@-example.org",
    ],
)
async def test_only_one_plain_address_is_accepted(start: Start, address: str) -> None:
    client = await start()
    resp = await client.post("/api/jobs", json=json_order(style=PAINTING, email=address))
    body = await resp.json()
    assert resp.status == 400, body
    assert "e-mail address" in body["error"]
    assert service(client).scheduler.queued == 0


@pytest.mark.parametrize(
    "address", ["ann@example.org", "Ann.Lee+art@Mail.Example.co.uk", "o'brien@example.org"]
)
async def test_plain_addresses_are_still_accepted(start: Start, address: str) -> None:
    client = await start()
    resp = await client.post("/api/jobs", json=json_order(style=PAINTING, email=address))
    assert resp.status == 202, await resp.text()


async def test_an_address_gets_at_most_its_hourly_mails_and_the_count_survives_a_restart(
    start: Start, mail_server: tuple[Inbox, int], clock: FakeClock
) -> None:
    inbox, _ = mail_server
    client = await start()
    assert service(client).config.mail_per_recipient_hour == 3
    node = FakeNode.connect(service(client))
    # The same mailbox in any case counts as one.
    spellings = ["Zoe@Example.org", "zoe@example.org", "ZOE@EXAMPLE.ORG", "zoe@example.org"]
    jobs = []
    for address in spellings:
        jobs.append(await create(client, email=address))
        await run_one(node)
        clock.advance(60)
    other = await create(client, email="yan@example.org")
    await run_one(node)

    await inbox.wait(4)
    for job in jobs[:3]:
        await email_status(client, job["id"], "sent")
    over = await email_status(client, jobs[3]["id"], "limited")
    assert over["state"] == "done"  # the job itself is not harmed
    await email_status(client, other["id"], "sent")  # nor is anyone else
    assert [m["To"].lower() for m in inbox.messages].count("zoe@example.org") == 3
    assert service(client).metrics.mails["limited"] == 1
    await client.close()

    # After a restart the hour still counts what was sent before it.
    client = await start()
    node = FakeNode.connect(service(client))
    again = await create(client, email="zoe@example.org")
    await run_one(node)
    await email_status(client, again["id"], "limited")

    # An hour after the first three, the address gets mail again.
    clock.advance(HOUR)
    node.hub.seen(node.handle)
    later = await create(client, email="zoe@example.org")
    await run_one(node)
    await email_status(client, later["id"], "sent")
    assert len(inbox.messages) == 5


# ---- 6: queued jobs expire ---------------------------------------------------------------


@pytest.fixture
def start_plain(aiohttp_client: AiohttpClient, tmp_path: Path, clock: FakeClock) -> Start:
    """A relay without e-mail; call again to restart it on the same data dir."""

    async def go(**changes: Any) -> Client:
        return await aiohttp_client(init(make_config(tmp_path, **changes), clock, clock))

    return go


def tick(client: Client, *nodes: FakeNode) -> None:
    """The periodic check, with the nodes' heartbeats up to date."""
    for node in nodes:
        node.hub.seen(node.handle)
    service(client).tick()


async def test_a_job_no_node_can_take_fails_after_the_queue_timeout_and_frees_its_slot(
    start_plain: Start, clock: FakeClock
) -> None:
    client = await start_plain(max_open_jobs=1)
    assert service(client).config.queue_timeout == 6 * HOUR
    node = FakeNode.connect(service(client), methods=frozenset({"gatys"}))
    job = await create(client, method="arbitrary")
    body = await job_of(client, job["id"])
    assert body["waiting_reason"] == "No connected node offers the arbitrary method."
    assert (await client.post("/api/jobs", data=form(style=PAINTING))).status == 429

    clock.advance(6 * HOUR - 1)
    tick(client, node)
    assert (await job_of(client, job["id"]))["state"] == "queued"
    clock.advance(2)
    tick(client, node)
    body = await job_of(client, job["id"])
    assert body["state"] == "failed"
    assert body["error"] == (
        "No node could take this job within 6 h (no connected node offers the arbitrary "
        "method); try again later."
    )
    assert service(client).scheduler.queued == 0
    # Its client's open-job slot is free again.
    assert (await client.post("/api/jobs", data=form(style=PAINTING))).status == 202


async def test_a_running_job_is_not_ended_by_the_queue_timeout(
    start_plain: Start, clock: FakeClock
) -> None:
    client = await start_plain(queue_timeout=60.0)
    node = FakeNode.connect(service(client))
    job = await create(client, epochs="500")
    offer = await node.offer()
    for epoch in range(1, 6):
        clock.advance(50)
        assert node.progress(offer, epoch)
        tick(client, node)
    assert (await job_of(client, job["id"]))["state"] == "running"
    assert (await node.finish(offer))[0]
    assert (await job_of(client, job["id"]))["state"] == "done"


def test_time_spent_running_does_not_count_as_waiting() -> None:
    s = Scheduler(Timeouts(queue=100.0))
    spec = JobTicket("j", "alice", "gatys", 10, 512 * 512)
    assert s.submit(spec, 0.0) == []
    [offer] = s.node_up(NodeInfo("n1", methods=frozenset({"gatys"})), 90.0)
    assert isinstance(offer, SendOffer)
    s.progress("n1", "j", offer.lease, 100.0)
    # It ran 110 s, then its node was lost: it waits again with the 10 s it had left.
    [requeued] = s.node_down("n1", 200.0)
    assert isinstance(requeued, Requeued)
    assert s.tick(209.0) == []
    [failed] = s.tick(211.0)
    assert isinstance(failed, Failed) and failed.job == "j"
    assert failed.reason.startswith("No node could take this job within 100 s (no node")
    assert s.queued == 0 and s.open_jobs("alice") == 0


def test_the_reason_keeps_what_declining_nodes_said() -> None:
    s = Scheduler(Timeouts(queue=100.0))
    s.submit(JobTicket("j", "alice", "gatys", 10, 64), 0.0)
    for name in ("n1", "n2"):
        [offer] = s.node_up(NodeInfo(name, methods=frozenset({"gatys"})), 1.0)
        assert isinstance(offer, SendOffer)
        s.declined(name, "j", offer.lease, f"{name} is out of memory", 1.0)
    [failed] = s.tick(102.0)
    assert isinstance(failed, Failed)
    assert failed.reason == (
        "No node could take this job within 100 s (every node that could run it declined "
        "(n1: n1 is out of memory; n2: n2 is out of memory)); try again later."
    )


def test_a_job_that_has_already_waited_too_long_fails_when_submitted() -> None:
    s = Scheduler(Timeouts(queue=100.0))
    [failed] = s.submit(JobTicket("j", "alice", "fast", 1, 64), 5.0, waited=100.0)
    assert isinstance(failed, Failed)
    assert s.queued == 0 and s.open_jobs("alice") == 0
    assert s.submit(JobTicket("k", "alice", "fast", 1, 64), 5.0, waited=99.0) == []
    assert s.tick(5.5) == []
    assert [type(a) for a in s.tick(6.5)] == [Failed]


async def test_after_a_restart_old_queued_jobs_fail_and_the_rest_keep_their_time(
    start_plain: Start, clock: FakeClock
) -> None:
    client = await start_plain()
    old = await create(client, method="arbitrary")
    clock.advance(5 * HOUR)
    young = await create(client, method="arbitrary")
    await client.close()

    clock.advance(1.5 * HOUR)  # the relay was down; `old` has waited 6.5 h, `young` 1.5 h
    client = await start_plain()
    body = await job_of(client, old["id"])
    assert body["state"] == "failed"
    assert body["error"] == (
        "No node could take this job within 6 h (no node is online); try again later."
    )
    assert (await job_of(client, young["id"]))["state"] == "queued"
    assert service(client).scheduler.queued == 1

    clock.advance(4.5 * HOUR - 1)
    tick(client)
    assert (await job_of(client, young["id"]))["state"] == "queued"
    clock.advance(2)
    tick(client)
    assert (await job_of(client, young["id"]))["state"] == "failed"
    assert service(client).scheduler.queued == 0
