"""Replicas as running members on a real PostgreSQL: the leader requeues a dead member's
job within its dead-after time plus a few seconds, without charging an attempt, and a
member with other limits is refused at start."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

asyncpg = pytest.importorskip("asyncpg")

from relay.cluster.member import Member  # noqa: E402
from relay.cluster.replicas import ReplicaMismatch  # noqa: E402
from relay.config import Config  # noqa: E402
from relay.dispatch import Action, JobTicket, NodeInfo, Requeued, SendOffer  # noqa: E402

CONFIG = Config(replica_dead_after=1.0)
Make = Callable[..., Awaitable[tuple[Member, list[Action]]]]


@pytest.fixture
async def member(database_url: str) -> AsyncIterator[Make]:
    made: list[tuple[Member, object, object]] = []

    async def make(name: str, config: Config = CONFIG) -> tuple[Member, list[Action]]:
        seen: list[Action] = []

        async def apply(actions: list[Action]) -> None:
            seen.extend(actions)

        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        leader_conn = await asyncpg.connect(database_url)
        made.append((m := Member(pool, leader_conn, name, config, apply, lead_every=0.2),
                     pool, leader_conn))  # fmt: skip
        await m.start()
        return m, seen

    yield make
    for m, pool, conn in made:
        for task in m._tasks:
            task.cancel()
        await conn.close()  # type: ignore[attr-defined]
        await pool.close()  # type: ignore[attr-defined]


async def test_the_leader_requeues_a_dead_members_job_within_dead_after_plus_five_seconds(
    member: Make,
) -> None:
    doomed, applied = await member("doomed")
    await doomed.dispatcher.node_up(NodeInfo("n1", methods=frozenset({"gatys"})), time.time())
    returned = await doomed.dispatcher.submit(
        JobTicket("j", "alice", "gatys", 10, 10**6), time.time()
    )
    # The submit's own claim places the job, or the member's tick (every 0.2 s, also a
    # claim for this replica's nodes) got there first between the insert and that claim.
    async with asyncio.timeout(5):
        while not (placed := [a for a in [*returned, *applied] if isinstance(a, SendOffer)]):
            await asyncio.sleep(0.01)
    assert [(a.node, a.job) for a in placed] == [("n1", "j")]
    survivor, seen = await member("survivor")
    await survivor.dispatcher.node_up(NodeInfo("n2", methods=frozenset({"gatys"})), time.time())
    # The doomed replica's process dies: its loops stop and its connections go.
    died = time.monotonic()
    for task in doomed._tasks:
        task.cancel()
    await doomed.leader.conn.close()
    async with asyncio.timeout(CONFIG.replica_dead_after + 5):
        while not any(isinstance(a, SendOffer) for a in seen):
            await asyncio.sleep(0.05)
    assert time.monotonic() - died <= CONFIG.replica_dead_after + 5
    assert Requeued("j", 0, "relay replica doomed stopped answering") in seen
    assert [(a.node, a.job) for a in seen if isinstance(a, SendOffer)] == [("n2", "j")]
    assert await survivor.dispatcher.state_of("j") == ("running", 0, None)


async def test_a_member_with_other_limits_is_refused_at_start(member: Make) -> None:
    await member("a")
    with pytest.raises(ReplicaMismatch, match="--max-open-jobs 9"):
        await member("b", CONFIG.replace(max_open_jobs=9))


async def test_a_member_that_stops_cleanly_leaves_and_lets_another_lead(member: Make) -> None:
    first, _ = await member("first")
    async with asyncio.timeout(5):
        while not first.leader.leading:
            await asyncio.sleep(0.05)
    second, _ = await member("second")
    await first.stop()
    async with asyncio.timeout(5):
        while not second.leader.leading:
            await asyncio.sleep(0.05)
    rows = await second.pool.fetch("SELECT id FROM replicas")
    assert [r["id"] for r in rows] == ["second"]
