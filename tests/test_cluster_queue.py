"""The shared queue replicas claim from (`relay.cluster.queue.ClusterQueue`) on a real,
throwaway PostgreSQL: fair turns across clients and replicas, node caps, the client cap
and the queue's capacity, fencing of everything a claim records."""

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from relay.cluster.queue import ClusterQueue
from relay.cluster.records import migrate_records
from relay.cluster.schema import migrate
from relay.dispatch import NodeInfo, Timeouts
from relay.errors import QueueFull, TooManyRequests
from relay.model import JobRecord, StyleChoice

asyncpg = pytest.importorskip("asyncpg", reason="pip install 'stylerelay[cluster]'")

GATYS = NodeInfo("gpu", methods=frozenset({"gatys"}), slots=8)


def record(job_id: str, client: str, epochs: int = 10, side: int = 100) -> JobRecord:
    return JobRecord(
        id=job_id,
        client=client,
        method="gatys",
        styles=(StyleChoice("painting:starry_night"),),
        style_files=("s" * 64,),
        content_file="c" * 64,
        width=side,
        height=side,
        epochs=epochs,
        created=time.time(),
    )


@pytest.fixture
async def queues(database_url: str) -> AsyncIterator[list[ClusterQueue]]:
    """Two replicas' views of one shared queue."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn)
        await migrate_records(conn)
    yield [ClusterQueue(pool, name, Timeouts()) for name in ("replica-a", "replica-b")]
    await pool.close()


async def submit(queue: ClusterQueue, job: JobRecord, **caps: Any) -> None:
    limits = {"max_open": 100, "capacity": 1000, "retry_after": 5, "per_minute": 1000, **caps}
    await queue.submit(job, time.time(), **limits)


async def claim_one(queue: ClusterQueue, node: NodeInfo = GATYS) -> str | None:
    claims = await queue.claim([(node, 1)], time.time())
    return claims[0].job.id if claims else None


async def test_clients_take_turns_whichever_replica_claims(queues: list[ClusterQueue]) -> None:
    a, b = queues
    for n, client in enumerate(["alice", "alice", "alice", "bob", "carol"]):
        await submit(a if n % 2 else b, record(f"j{n}", client))
    order = [await claim_one(queues[n % 2]) for n in range(5)]
    assert order == ["j0", "j3", "j4", "j1", "j2"]
    assert await claim_one(a) is None


async def test_a_job_goes_only_to_a_node_whose_caps_cover_it(queues: list[ClusterQueue]) -> None:
    a, _ = queues
    await submit(a, record("long", "alice", epochs=900))
    await submit(a, record("big", "bob", side=3000))
    small = NodeInfo("small", methods=frozenset({"gatys"}), max_epochs=500, max_pixels=10**6)
    assert await claim_one(a, small) is None
    fast_only = NodeInfo("fast", methods=frozenset({"fast"}), max_pixels=10**8)
    assert await claim_one(a, fast_only) is None
    wide = NodeInfo("wide", methods=frozenset({"gatys"}), max_epochs=1000, max_pixels=10**8)
    assert {await claim_one(a, wide), await claim_one(a, wide)} == {"long", "big"}


async def test_the_client_cap_and_the_queue_capacity_hold_across_replicas(
    queues: list[ClusterQueue],
) -> None:
    a, b = queues
    await submit(a, record("j1", "alice"), max_open=2)
    await submit(b, record("j2", "alice"), max_open=2)
    with pytest.raises(TooManyRequests):
        await submit(a, record("j3", "alice"), max_open=2)
    with pytest.raises(QueueFull):
        await submit(b, record("j4", "bob"), capacity=2)
    # A submit retried after its commit's answer was lost inserts nothing twice.
    await submit(a, record("j1", "alice"), max_open=5)
    assert (await a.counts()) == (2, 0)


async def test_what_a_claim_records_holds_only_while_its_lease_is_the_rows(
    queues: list[ClusterQueue],
) -> None:
    a, b = queues
    await submit(a, record("j1", "alice"))
    (first,) = await a.claim([(GATYS, 1)], time.time())
    # The others thought replica A dead and handed its claim back; B claims it anew.
    assert await a.requeue("j1", first.lease, 0, time.time())
    (second,) = await b.claim([(GATYS, 1)], time.time())
    assert not await a.end("j1", first.lease, "done", time.time(), {"result_file": "r" * 64})
    assert not await a.update("j1", first.lease, {"partial_epoch": 3})
    assert await b.end("j1", second.lease, "done", time.time(), {"result_file": "d" * 64})
    done = await a.fetch("j1")
    assert done is not None
    assert (done.state, done.result_file, done.partial_epoch) == ("done", "d" * 64, None)
    # Recorded once: the same ending again changes nothing.
    assert not await b.end("j1", second.lease, "done", time.time(), {"result_file": "x" * 64})


async def test_a_cancel_wins_over_a_late_result(queues: list[ClusterQueue]) -> None:
    a, b = queues
    await submit(a, record("j1", "alice"))
    (claim,) = await a.claim([(GATYS, 1)], time.time())
    assert await b.cancel("j1", time.time()) == ("running", "replica-a")
    assert not await a.end("j1", claim.lease, "done", time.time(), {"result_file": "r" * 64})
    # The running replica still writes the cancel's leftovers (a checkpoint, say).
    assert await a.end("j1", claim.lease, "cancelled", time.time(), {"partial_epoch": 4})
    job = await b.fetch("j1")
    assert job is not None
    assert (job.state, job.result_file, job.partial_epoch) == ("cancelled", None, 4)


async def test_a_clients_new_jobs_a_minute_are_counted_across_replicas(
    queues: list[ClusterQueue],
) -> None:
    a, b = queues
    for n in range(3):
        await submit((a, b)[n % 2], record(f"j{n}", "alice"), per_minute=3)
    with pytest.raises(TooManyRequests) as refused:
        await submit(b, record("j3", "alice"), per_minute=3)
    assert refused.value.headers is not None
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 20
    # Another client has its own bucket; a refused job took no token.
    await submit(a, record("k0", "bob"), per_minute=3)
    assert (await a.counts())[0] == 4
