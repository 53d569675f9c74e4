"""What only a cluster has to get right: several replicas on one real PostgreSQL claiming
at once, a node on one replica running a job posted to another, caps that hold across
replicas, a dead replica's jobs requeued free, one leader, and replicas that refuse to
run beside others with different limits."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from relay.cluster.contract import StaleLease
from relay.config import Config
from relay.dispatch import Action, JobTicket, NodeInfo, Requeued, SendOffer, Timeouts
from relay.errors import TooManyRequests

asyncpg = pytest.importorskip("asyncpg")

from cluster_engines import Postgres  # noqa: E402

from relay.cluster.database import DatabaseUnavailable  # noqa: E402
from relay.cluster.dispatcher import CHANNEL, PgDispatcher  # noqa: E402
from relay.cluster.replicas import (  # noqa: E402
    Leader,
    ReplicaMismatch,
    heartbeat,
    join,
    limits_of,
    reap,
)
from relay.cluster.schema import CLAIM_LOCK, migrate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TIMEOUTS = Timeouts(stall=10.0, epoch_budget=1.0, max_attempts=3)
Replica = Callable[[str], Awaitable[PgDispatcher]]


def job(job_id: str, client: str, epochs: int = 10) -> JobTicket:
    return JobTicket(job_id, client, "gatys", epochs, 1_000_000)


def node(name: str, slots: int = 1, max_epochs: int = 1000) -> NodeInfo:
    return NodeInfo(name, methods=frozenset({"gatys"}), slots=slots, max_epochs=max_epochs)


def offers(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.node, a.job) for a in actions if isinstance(a, SendOffer)]


def lease(actions: list[Action], job_id: str) -> str:
    [found] = [a.lease for a in actions if isinstance(a, SendOffer) and a.job == job_id]
    return found


@pytest.fixture
async def replica(database_url: str) -> AsyncIterator[Replica]:
    """Makes dispatchers of named replicas, each with a pool of its own, on one database."""
    pools = []

    async def make(name: str) -> PgDispatcher:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        pools.append(pool)
        async with pool.acquire() as conn:
            await migrate(conn)
        return PgDispatcher(pool, name, TIMEOUTS)

    yield make
    for pool in pools:
        await pool.close()


async def test_replicas_claiming_at_once_never_take_a_job_twice_and_keep_turns_fair(
    replica: Replica,
) -> None:
    a, b = await replica("a"), await replica("b")
    clients = ["c1", "c2", "c3", "c4"]
    for i in range(10):
        for c in clients:
            await a.submit(job(f"{c}-{i}", c), 0)
    # Both replicas' nodes come up together and claim concurrently.
    got = await asyncio.gather(a.node_up(node("na", 4), 1), b.node_up(node("nb", 4), 1))
    started = offers(got[0]) + offers(got[1])
    assert len(started) == 8
    assert len({j for _, j in started}) == 8
    per_client = Counter(j.split("-")[0] for _, j in started)
    assert per_client == dict.fromkeys(clients, 2)  # round-robin, as on one relay
    assert await a.counts() == (32, 8)


async def test_a_job_posted_to_one_replica_runs_on_a_node_of_another(
    replica: Replica, database_url: str
) -> None:
    a, b = await replica("a"), await replica("b")
    await b.node_up(node("nb"), 0)
    woken = asyncio.Event()

    def wake(*_: object) -> None:
        woken.set()

    listener = await asyncpg.connect(database_url)
    await listener.add_listener(CHANNEL, wake)
    try:
        assert await a.submit(job("j", "alice"), 1) == []  # replica A has no node
        await asyncio.wait_for(woken.wait(), 5)
        assert offers(await b.dispatch(2)) == [("nb", "j")]
    finally:
        await listener.close()


async def test_a_submit_wakes_only_the_replicas_with_a_free_slot(
    replica: Replica, database_url: str
) -> None:
    a, b, c = await replica("a"), await replica("b"), await replica("c")
    await c.node_up(node("nc"), 0)
    assert offers(await c.submit(job("busy", "carol"), 0)) == [("nc", "busy")]
    await b.node_up(node("nb"), 0)
    payloads: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(CHANNEL, lambda *args: payloads.put_nowait(args[3]))
    try:
        assert await a.submit(job("j", "alice"), 1) == []  # replica A has no node
        payload = await asyncio.wait_for(payloads.get(), 5)
        assert [r.concerns(payload) for r in (a, b, c)] == [False, True, False]
        assert offers(await b.dispatch(2)) == [("nb", "j")]
        # Every slot is busy: the next submit wakes nobody (NOTIFYs arrive in commit
        # order, so the marker sent after it is the next one heard).
        assert await a.submit(job("k", "alice"), 3) == []
        await listener.execute("SELECT pg_notify($1, 'marker')", CHANNEL)
        assert await asyncio.wait_for(payloads.get(), 5) == "marker"
    finally:
        await listener.close()


async def test_a_slot_freed_while_a_submit_waits_to_say_whom_to_wake_is_woken(
    replica: Replica, database_url: str
) -> None:
    a = await replica("a")
    held = lease(await a.node_up(node("na"), 0) + await a.submit(job("old", "bob"), 0), "old")
    listener = await asyncpg.connect(database_url)
    payloads: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CHANNEL, lambda *args: payloads.put_nowait(args[3]))
    # A finish of replica A in the middle of its claim (it saw no queued work yet).
    finishing = await asyncpg.connect(database_url)
    try:
        async with finishing.transaction():
            await finishing.execute(
                "UPDATE jobs SET state = 'done' WHERE id = 'old' AND lease = $1", held
            )
            await finishing.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
            submitting = asyncio.create_task(a.submit(job("new", "alice"), 1))
            while not await listener.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ):
                await asyncio.sleep(0.01)  # the submit found no free slot, and waits
        assert await submitting == []
        assert a.concerns(await asyncio.wait_for(payloads.get(), 5))
        assert offers(await a.dispatch(2)) == [("na", "new")]
    finally:
        await finishing.close()
        await listener.close()


async def test_a_submit_inserts_the_records_columns_with_the_job(replica: Replica) -> None:
    a = await replica("a")
    await a.submit(job("j", "alice"), 0, record={"reason": "kept", "result": "file"})
    row = await a.pool.fetchrow("SELECT state, reason, result FROM jobs WHERE id = 'j'")
    assert tuple(row) == ("queued", "kept", "file")


async def test_a_node_on_another_replica_never_gets_a_job_above_its_epoch_cap(
    replica: Replica,
) -> None:
    a, b = await replica("a"), await replica("b")
    await b.node_up(node("capped", max_epochs=100), 0)
    assert await a.submit(job("long", "alice", epochs=500), 1) == []
    assert await b.dispatch(2) == []
    assert offers(await a.node_up(node("able"), 3)) == [("able", "long")]


async def test_the_open_jobs_cap_holds_across_replicas(replica: Replica) -> None:
    a, b = await replica("a"), await replica("b")
    tries = [(a if i % 2 else b).submit(job(f"j{i}", "greedy"), 0, max_open=3) for i in range(10)]
    results = await asyncio.gather(*tries, return_exceptions=True)
    refused = [r for r in results if isinstance(r, TooManyRequests)]
    assert len(refused) == 7
    assert all(not isinstance(r, BaseException) for r in results if r not in refused)
    assert await a.open_jobs("greedy") == 3


async def test_a_dead_replicas_jobs_run_again_free_and_its_late_result_is_refused(
    replica: Replica,
) -> None:
    a, b = await replica("a"), await replica("b")
    limits = {"max_epochs": 1000}
    async with a.pool.acquire() as conn:
        await join(conn, "a", limits, 0, dead_after=15)
    async with b.pool.acquire() as conn:
        await join(conn, "b", limits, 0, dead_after=15)
    await a.node_up(node("na"), 0)
    [offer] = [x for x in await a.submit(job("j", "alice"), 0) if isinstance(x, SendOffer)]
    await b.node_up(node("nb"), 1)
    async with b.pool.acquire() as conn:
        await heartbeat(conn, "b", 20)  # A has been silent since 0
    actions = await reap(b, 20, dead_after=15)
    assert actions[0] == Requeued("j", 0, "relay replica a stopped answering")
    assert offers(actions) == [("nb", "j")]
    with pytest.raises(StaleLease):
        await a.finished("na", "j", offer.lease, 21)
    [new_lease] = [x.lease for x in actions if isinstance(x, SendOffer)]
    await b.finished("nb", "j", new_lease, 22, result="f" * 64)
    with pytest.raises(StaleLease):
        await b.finished("nb", "j", new_lease, 23, result="0" * 64)
    assert await b.state_of("j") == ("done", 0, "f" * 64)
    assert await reap(b, 40, dead_after=15) == []  # A is forgotten; B is alive


KILLED_REPLICA = """
import asyncio, sys, time
import asyncpg
from relay.cluster.dispatcher import PgDispatcher
from relay.cluster.replicas import Leader, join
from relay.cluster.schema import migrate
from relay.dispatch import JobTicket, NodeInfo, SendOffer

async def main(url):
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    async with pool.acquire() as conn:
        await migrate(conn)
        await join(conn, "doomed", {"max_epochs": 1000}, time.time(), 1.0)
    leader = Leader(await asyncpg.connect(url))
    assert await leader.try_lead()
    dispatcher = PgDispatcher(pool, "doomed")
    await dispatcher.node_up(NodeInfo("n1", methods=frozenset({"gatys"})), time.time())
    actions = await dispatcher.submit(JobTicket("j", "alice", "gatys", 10, 10**6), time.time())
    [offer] = [a for a in actions if isinstance(a, SendOffer)]
    print(offer.lease, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1]))
"""


async def test_a_replica_killed_with_sigkill_loses_the_lead_and_its_job_runs_elsewhere(
    replica: Replica, database_url: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_REPLICA, database_url],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        old_lease = (await asyncio.to_thread(proc.stdout.readline)).strip()
        assert old_lease, "the replica did not start"
        b = await replica("b")
        leader = Leader(await asyncpg.connect(database_url))
        assert not await leader.try_lead()  # the doomed replica leads
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while not await leader.try_lead():
            assert time.monotonic() < deadline, "the lead was not released"
            await asyncio.sleep(0.1)
        await b.node_up(node("n2"), time.time())
        actions = await reap(b, time.time() + 2, dead_after=1.0)
        assert actions[0] == Requeued("j", 0, "relay replica doomed stopped answering")
        assert offers(actions) == [("n2", "j")]
        with pytest.raises(StaleLease):
            await b.finished("n1", "j", old_lease, time.time())
        await leader.conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


async def test_one_replica_leads_and_another_takes_over_when_it_steps_down(
    database_url: str,
) -> None:
    first = Leader(await asyncpg.connect(database_url))
    second = Leader(await asyncpg.connect(database_url))
    try:
        assert await first.try_lead()
        assert not await second.try_lead()
        assert await first.try_lead()  # still
        await first.step_down()
        assert await second.try_lead()
        assert not await first.try_lead()
    finally:
        await first.conn.close()
        await second.conn.close()


async def test_a_replica_refuses_to_start_beside_a_live_one_with_other_limits(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        mine = limits_of(Config())
        await join(conn, "a", mine, 100, dead_after=15)
        other = limits_of(Config(max_epochs=300, max_open_jobs=5))
        with pytest.raises(ReplicaMismatch) as refused:
            await join(conn, "b", other, 105, dead_after=15)
        message = str(refused.value)
        assert "replica a" in message
        assert "--max-epochs 300 (theirs: 1000)" in message
        assert "--max-open-jobs 5 (theirs: 3)" in message
        await join(conn, "c", mine, 105, dead_after=15)  # the same limits: welcome
        # Once the others are dead (silent past dead_after), other limits may start.
        await join(conn, "b", other, 200, dead_after=15)
    finally:
        await conn.close()


async def test_accepted_jobs_survive_a_postgres_restart_and_posts_get_503_while_it_is_down(
    replica: Replica, postgres_server: Postgres
) -> None:
    a = await replica("a")
    for i in range(20):
        await a.submit(job(f"j{i}", f"c{i % 3}"), 0)
    running = offers(await a.node_up(node("n", 2), 1))
    await asyncio.to_thread(postgres_server.restart)  # pg_ctl restart -m fast
    assert await a.counts() == (18, 2)  # the pool reconnects; nothing was lost
    assert await a.lease_of(running[0][1]) is not None
    a.retry_for = 1.0
    await asyncio.to_thread(postgres_server.halt)
    try:
        with pytest.raises(DatabaseUnavailable) as down:
            await a.submit(job("late", "c0"), 2)
        assert down.value.status == 503
        assert down.value.headers == {"Retry-After": "5"}
    finally:
        await asyncio.to_thread(postgres_server.resume)
    a.retry_for = 5.0
    assert await a.open_jobs("c0") == 7
    assert offers(await a.submit(job("after", "c0"), 3)) == []  # queued behind the others
    assert await a.open_jobs("c0") == 8
