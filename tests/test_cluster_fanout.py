"""Job events from one replica reach the others through a real PostgreSQL's
LISTEN/NOTIFY: every one, in order, batched, never echoed back."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

asyncpg = pytest.importorskip("asyncpg")

from relay.cluster.fanout import STALE, Fanout  # noqa: E402

Got = list[tuple[str, dict[str, Any]]]
Make = Callable[[str, Got], Awaitable[Fanout]]


@pytest.fixture
async def fanout(database_url: str) -> AsyncIterator[Make]:
    made: list[tuple[Fanout, Any]] = []

    async def make(replica: str, got: Got) -> Fanout:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        listener = await asyncpg.connect(database_url)
        bus = Fanout(pool, listener, replica, lambda job, event: got.append((job, event)))
        await bus.start()
        made.append((bus, pool))
        return bus

    yield make
    for bus, pool in made:
        await bus.close()
        await bus.listener.close()
        await pool.close()


async def _until(got: Got, count: int) -> None:
    async with asyncio.timeout(10):
        while len(got) < count:
            await asyncio.sleep(0.01)


async def test_every_event_reaches_the_other_replica_in_order_and_batched(
    fanout: Make,
) -> None:
    on_a: Got = []
    on_b: Got = []
    a, _ = await fanout("a", on_a), await fanout("b", on_b)
    for epoch in range(1, 301):
        a.publish("job-1", {"type": "progress", "epoch": epoch, "epochs": 300})
        if epoch % 50 == 0:
            await asyncio.sleep(0)  # the publisher runs between bursts, as in a relay
    a.publish("job-1", {"type": "done", "result_url": "/api/jobs/job-1/result"})
    await _until(on_b, 301)
    assert [e["epoch"] for _, e in on_b[:300]] == list(range(1, 301))
    assert on_b[300] == ("job-1", {"type": "done", "result_url": "/api/jobs/job-1/result"})
    assert a.notifies < 50  # batched, not one NOTIFY per event
    await asyncio.sleep(0.05)
    assert on_a == []  # a replica's own events are not delivered back to it


async def test_an_event_too_large_to_notify_arrives_as_stale(fanout: Make) -> None:
    on_b: Got = []
    a, _ = await fanout("a", []), await fanout("b", on_b)
    a.publish("job-2", {"type": "progress", "note": "x" * 10_000})
    a.publish("job-2", {"type": "progress", "epoch": 2})
    await _until(on_b, 2)
    assert on_b == [("job-2", STALE), ("job-2", {"type": "progress", "epoch": 2})]


async def test_events_from_every_other_replica_arrive(fanout: Make) -> None:
    on_c: Got = []
    a, b = await fanout("a", []), await fanout("b", [])
    await fanout("c", on_c)
    a.publish("from-a", {"type": "done"})
    b.publish("from-b", {"type": "failed"})
    await _until(on_c, 2)
    assert sorted(on_c) == [("from-a", {"type": "done"}), ("from-b", {"type": "failed"})]
