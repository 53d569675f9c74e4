"""API keys: managed on the command line, each its own client with its own quotas on the
real app, refused (401) when bad or revoked, and served first by priority in the queue."""

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from relay_harness import FakeClock, FakeNode, form, make_config

from relay.api import SERVICE
from relay.apikeys import KeyStore
from relay.app import init
from relay.cli import main
from relay.dispatch import JobTicket, NodeInfo, SendOffer
from relay.ratelimits import Quota
from relay.scheduler import Scheduler

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]


@pytest.fixture
def start(aiohttp_client: AiohttpClient, tmp_path: Path) -> Start:
    clock = FakeClock()

    async def go(**changes: Any) -> Client:
        client = await aiohttp_client(init(make_config(tmp_path, **changes), clock, clock))
        FakeNode.connect(client.app[SERVICE])  # one slot: the first job runs, others wait
        return client

    return go


def add_key(tmp_path: Path, name: str, **quota: Any) -> str:
    return KeyStore(tmp_path / "data").add(name, Quota(**quota))


async def post(client: Client, key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = form(style="painting:starry_night")
    resp = await client.post("/api/jobs", data=data, headers=headers)
    body: dict[str, Any] = await resp.json()
    return resp.status, body


# ---- command line ------------------------------------------------------------------------


def test_keys_add_list_revoke_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    assert main(["keys", "add", "bot", "--max-open", "5", "--per-day", "100", "--priority",
                 "2", "--data-dir", data]) == 0  # fmt: skip
    key = capsys.readouterr().out.strip()
    assert key.startswith("sr_") and len(key) > 40
    stored = (tmp_path / "data" / "keys.json").read_text()
    assert key not in stored  # only its hash
    assert (tmp_path / "data" / "keys.json").stat().st_mode & 0o077 == 0
    info = KeyStore(tmp_path / "data").verify(key)
    assert info is not None and info.client == "key:bot"
    assert info.quota == Quota(max_open=5, per_minute=None, per_day=100, priority=2)

    assert main(["keys", "list", "--data-dir", data]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bot\t") and "max-open 5" in out and "priority 2" in out
    assert "per-minute default" in out

    assert main(["keys", "add", "bot", "--data-dir", data]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["keys", "add", "neg", "--max-open", "0", "--data-dir", data]) == 2
    assert main(["keys", "revoke", "bot", "--data-dir", data]) == 0
    assert KeyStore(tmp_path / "data").verify(key) is None
    assert main(["keys", "revoke", "bot", "--data-dir", data]) == 2
    main(["keys", "list", "--data-dir", data])
    assert capsys.readouterr().out == ""


# ---- limits per key ----------------------------------------------------------------------


async def test_keyed_clients_behind_one_address_each_get_their_own_open_job_cap(
    start: Start, tmp_path: Path
) -> None:
    client = await start(max_open_jobs=1)
    alice = add_key(tmp_path, "alice", max_open=3)
    bob = add_key(tmp_path, "bob")  # no cap of its own: the relay's, but its own count
    for _ in range(3):
        assert (await post(client, alice))[0] == 202
    status, body = await post(client, alice)
    assert status == 429 and "3 jobs queued or running" in body["error"]
    assert (await post(client, bob))[0] == 202
    assert (await post(client, bob))[0] == 429
    # The anonymous clients of that address are unaffected: their own one job, then 429.
    status, job = await post(client)
    assert status == 202, job
    status, body = await post(client)
    assert status == 429 and "1 jobs queued or running" in body["error"]
    scheduler = client.app[SERVICE].scheduler
    assert scheduler.open_jobs("key:alice") == 3 and scheduler.open_jobs("key:bob") == 1


async def test_a_key_has_its_own_rate_and_daily_count(start: Start, tmp_path: Path) -> None:
    client = await start(rate_per_minute=1000)
    slow = add_key(tmp_path, "slow", per_minute=1)
    daily = add_key(tmp_path, "daily", per_day=2)
    assert (await post(client, slow))[0] == 202
    resp = await client.post(
        "/api/jobs",
        data=form(style="painting:starry_night"),
        headers={"Authorization": f"Bearer {slow}"},
    )
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert "your key (limit 1 a minute)" in (await resp.json())["error"]
    assert [(await post(client, daily))[0] for _ in range(3)] == [202, 202, 429]
    assert "2 jobs a day" in (await post(client, daily))[1]["error"]
    assert (await post(client))[0] == 202  # the address itself is still under its limits
    # A restart does not give the key its day back: its stored jobs are counted again.
    await client.close()
    again = await start(rate_per_minute=1000)
    assert (await post(again, daily))[0] == 429


async def test_bad_malformed_or_revoked_key_is_401_never_anonymous(
    start: Start, tmp_path: Path
) -> None:
    client = await start()
    key = add_key(tmp_path, "gone")
    assert (await post(client, key))[0] == 202
    KeyStore(tmp_path / "data").revoke("gone")
    for header in (f"Bearer {key}", "Bearer nonsense", "bearer  ", "Bearer"):
        resp = await client.post(
            "/api/jobs", data=form(style="painting:starry_night"), headers={"Authorization": header}
        )
        assert resp.status == 401, header
        assert set(await resp.json()) == {"error"}
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.get("/api/styles", headers={"Authorization": "Bearer nonsense"})
    assert resp.status == 401
    # Another scheme is not a key (a proxy's Basic auth in front of /status passes it on).
    resp = await client.get("/api/styles", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert resp.status == 200
    assert client.app[SERVICE].scheduler.open_jobs("key:gone") == 1  # nothing more added


async def test_a_damaged_keys_file_is_503_for_keyed_requests_and_anonymous_ones_go_on(
    start: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start()
    key = add_key(tmp_path, "ann")
    (tmp_path / "data" / "keys.json").write_text("{ not json")
    resp = await client.post(
        "/api/jobs",
        data=form(style="painting:starry_night"),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert resp.status == 503
    assert "cannot be checked" in (await resp.json())["error"]
    assert "keys.json is not valid JSON" in caplog.text
    assert (await client.post("/api/jobs", data=form(style="painting:starry_night"))).status == 202


# ---- priority ----------------------------------------------------------------------------


def test_a_priority_one_client_is_served_twice_per_turn() -> None:
    s = Scheduler()
    s.set_priority("key:vip", 1)
    for i in range(4):
        s.submit(JobTicket(f"v{i}", "key:vip", "gatys", 10, 1000), 0.0)
        s.submit(JobTicket(f"a{i}", "1.2.3.4", "gatys", 10, 1000), 0.0)
        s.submit(JobTicket(f"b{i}", "5.6.7.8", "gatys", 10, 1000), 0.0)
    order = [
        a.job for a in s.node_up(NodeInfo("n1", methods=frozenset({"gatys"})), 1.0)
        if isinstance(a, SendOffer)
    ]  # fmt: skip
    for t in range(11):
        job_id = next(iter(next(v for v in s.nodes()).jobs))
        lease = s.lease_of(job_id)
        assert lease is not None
        order += [
            a.job for a in s.finished("n1", job_id, lease[1], 2.0 + t) if isinstance(a, SendOffer)
        ]
    assert order == ["v0", "v1", "a0", "b0", "v2", "v3", "a1", "b1", "a2", "b2", "a3", "b3"]


def test_without_priority_round_robin_is_unchanged() -> None:
    s = Scheduler()
    s.set_priority("key:x", 0)
    for i in range(2):
        s.submit(JobTicket(f"x{i}", "key:x", "gatys", 10, 1000), 0.0)
        s.submit(JobTicket(f"y{i}", "9.9.9.9", "gatys", 10, 1000), 0.0)
    order = [
        a.job for a in s.node_up(NodeInfo("n1", methods=frozenset({"gatys"}), slots=4), 1.0)
        if isinstance(a, SendOffer)
    ]  # fmt: skip
    assert order == ["x0", "y0", "x1", "y1"]


# ---- kudos: priority earned with GPU time ------------------------------------------------


def test_the_ledger_shares_turns_by_recent_work() -> None:
    from relay.kudos import MAX_TURNS, WorkLedger
    from relay.model import JobRecord, JobState

    def done(job_id: str, node: str, epochs: int, side: int) -> JobRecord:
        return JobRecord(job_id, "c", "gatys", (), (), "0" * 64, side, side, epochs,
                         state=JobState.DONE, node=node)  # fmt: skip

    ledger = WorkLedger()
    a, b = done("a", "gpu-a", 100, 1000), done("b", "gpu-b", 100, 1000)
    ledger.credit(a)
    assert (ledger.work("gpu-a"), ledger.bonus("gpu-a")) == (100.0, MAX_TURNS)
    ledger.credit(b)
    assert ledger.share("gpu-a") == 0.5 and ledger.bonus("gpu-a") == MAX_TURNS // 2
    ledger.debit(a)  # expired: it no longer counts
    assert (ledger.work("gpu-a"), ledger.bonus("gpu-b"), ledger.bonus(None)) == (0.0, 4, 0)


async def test_a_key_linked_to_a_node_earns_turns_from_its_work(
    aiohttp_client: AiohttpClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    assert main(["keys", "add", "owner", "--node", "gpu-1", "--data-dir", data]) == 0
    owner = capsys.readouterr().out.strip()
    plain = add_key(tmp_path, "plain")
    assert main(["keys", "list", "--data-dir", data]) == 0
    assert "node gpu-1" in capsys.readouterr().out
    clock = FakeClock()
    client: Client = await aiohttp_client(init(make_config(tmp_path), clock, clock))
    service = client.app[SERVICE]
    node = FakeNode.connect(service, name="gpu-1")
    # Before its node did anything, the owner's key is served like any other.
    assert (await post(client, owner))[0] == 202
    assert service.scheduler.priority("key:owner") == 0
    assert (await node.finish(await node.offer()))[0]
    nodes = (await (await client.get("/api/nodes")).json())["nodes"]
    assert nodes[0]["name"] == "gpu-1" and nodes[0]["work_done"] > 0
    # Its node did all the recent work: the owner now gets the most extra turns there are,
    # a key without a node none.
    assert (await post(client, owner))[0] == 202
    assert (await post(client, plain))[0] == 202
    from relay.kudos import MAX_TURNS

    assert service.scheduler.priority("key:owner") == MAX_TURNS
    assert service.scheduler.priority("key:plain") == 0
    # The work is rebuilt from the store after a restart.
    await client.close()
    again: Client = await aiohttp_client(init(make_config(tmp_path), clock, clock))
    assert again.app[SERVICE].kudos.work("gpu-1") == service.kudos.work("gpu-1") > 0
