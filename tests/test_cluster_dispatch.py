"""One conformance suite for both dispatchers: the single relay's `Scheduler` (through
`LocalDispatch`) and the cluster's `PgDispatcher` on a real, throwaway PostgreSQL. Each
test runs against both; the clock is a number passed in, as the contract says."""

from collections.abc import AsyncIterator

import pytest

from relay.cluster.contract import Dispatch, LocalDispatch, StaleLease
from relay.dispatch import (
    Action,
    Failed,
    JobTicket,
    NodeInfo,
    Requeued,
    SendCancel,
    SendOffer,
    Timeouts,
)
from relay.scheduler import Scheduler

TIMEOUTS = Timeouts(stall=10.0, epoch_budget=1.0, max_attempts=3, stop_grace=5.0)
"""A 1-megapixel, 10-epoch job may be silent 10 s and run 20 s."""


def job(job_id: str, client: str = "alice", epochs: int = 10, **more: object) -> JobTicket:
    """A 1-megapixel Gatys job."""
    fields: dict[str, object] = {"method": "gatys", "pixels": 1_000_000, **more}
    return JobTicket(job_id, client, epochs=epochs, **fields)  # type: ignore[arg-type]


def node(name: str, slots: int = 1, max_epochs: int = 1000, **more: object) -> NodeInfo:
    """A node that runs Gatys (and the fast style `candy`)."""
    return NodeInfo(
        name,
        methods=frozenset({"gatys", "fast"}),
        styles=frozenset({"candy"}),
        slots=slots,
        max_epochs=max_epochs,
        **more,  # type: ignore[arg-type]
    )


def offers(actions: list[Action]) -> list[tuple[str, str]]:
    """(node, job) of each offer."""
    return [(a.node, a.job) for a in actions if isinstance(a, SendOffer)]


def lease(actions: list[Action], job_id: str) -> str:
    """The lease of the offer of `job_id`."""
    [found] = [a.lease for a in actions if isinstance(a, SendOffer) and a.job == job_id]
    return found


@pytest.fixture(params=["single", "postgres"])
async def dispatch(request: pytest.FixtureRequest) -> AsyncIterator[Dispatch]:
    """The same contract, from memory or from PostgreSQL."""
    if request.param == "single":
        yield LocalDispatch(Scheduler(TIMEOUTS, max_slots=4))
        return
    asyncpg = pytest.importorskip("asyncpg")
    from relay.cluster.dispatcher import PgDispatcher
    from relay.cluster.schema import migrate

    pool = await asyncpg.create_pool(request.getfixturevalue("database_url"), min_size=1)
    async with pool.acquire() as conn:
        await migrate(conn)
    yield PgDispatcher(pool, "replica-a", TIMEOUTS, max_slots=4)
    await pool.close()


async def test_one_clients_jobs_run_in_the_order_they_came(dispatch: Dispatch) -> None:
    for name in ("j1", "j2", "j3"):
        await dispatch.submit(job(name), 0)
    first = await dispatch.node_up(node("n"), 1)
    assert offers(first) == [("n", "j1")]
    second = await dispatch.finished("n", "j1", lease(first, "j1"), 2)
    assert offers(second) == [("n", "j2")]
    third = await dispatch.finished("n", "j2", lease(second, "j2"), 3)
    assert offers(third) == [("n", "j3")]


async def test_clients_take_turns(dispatch: Dispatch) -> None:
    for name in ("a1", "a2", "a3"):
        await dispatch.submit(job(name, "alice"), 0)
    for name in ("b1", "b2"):
        await dispatch.submit(job(name, "bob"), 0)
    actions = await dispatch.node_up(node("n"), 1)
    order = []
    for now in range(2, 8):
        [(_, running)] = offers(actions)
        order.append(running)
        actions = await dispatch.finished("n", running, lease(actions, running), now)
        if running == "a3":
            break
    assert order == ["a1", "b1", "a2", "b2", "a3"]


async def test_a_job_goes_only_to_a_node_whose_caps_cover_it(dispatch: Dispatch) -> None:
    assert offers(await dispatch.node_up(node("small", max_epochs=100), 0)) == []
    assert offers(await dispatch.submit(job("big", epochs=500), 1)) == []
    assert offers(await dispatch.submit(job("tiny", "bob", epochs=50), 2)) == [("small", "tiny")]
    assert offers(await dispatch.submit(job("odd", "carol", fast_styles=frozenset({"mosaic"}),
                                             method="fast"), 3)) == []  # fmt: skip
    assert offers(await dispatch.node_up(node("large", max_epochs=1000), 4)) == [("large", "big")]
    assert await dispatch.counts() == (1, 2)


async def test_a_node_gets_no_more_jobs_than_its_slots(dispatch: Dispatch) -> None:
    await dispatch.node_up(node("n", slots=2), 0)
    started = []
    for name in ("j1", "j2", "j3"):
        started += offers(await dispatch.submit(job(name), 1))
    assert started == [("n", "j1"), ("n", "j2")]
    assert await dispatch.counts() == (1, 2)


async def test_a_late_completion_under_a_lost_lease_is_refused(dispatch: Dispatch) -> None:
    await dispatch.submit(job("j"), 0)
    old = lease(await dispatch.node_up(node("n"), 1), "j")
    requeued = await dispatch.node_down("n", 2)
    assert [a for a in requeued if isinstance(a, Requeued)] == [Requeued("j", 1, "node n was lost")]
    new = lease(await dispatch.node_up(node("n"), 3), "j")
    assert new != old
    assert not await dispatch.progress("n", "j", old, 4)
    assert await dispatch.progress("n", "j", new, 4)
    with pytest.raises(StaleLease):
        await dispatch.finished("n", "j", old, 5)
    await dispatch.finished("n", "j", new, 6)
    with pytest.raises(StaleLease):  # a result is recorded once
        await dispatch.finished("n", "j", new, 7)
    assert await dispatch.lease_of("j") is None
    assert await dispatch.open_jobs("alice") == 0


async def test_a_job_whose_node_keeps_getting_lost_fails_after_max_attempts(
    dispatch: Dispatch,
) -> None:
    await dispatch.submit(job("j"), 0)
    ends: list[Action] = []
    for now in range(1, 4):
        await dispatch.node_up(node("n"), now)
        ends += await dispatch.node_down("n", now + 0.5)
    assert ends[:2] == [Requeued("j", 1, "node n was lost"), Requeued("j", 2, "node n was lost")]
    assert ends[2] == Failed("j", "Gave up after 3 attempts; last: node n was lost.", 3)
    assert await dispatch.open_jobs("alice") == 0


async def test_a_node_that_says_bye_hands_its_job_back_without_using_an_attempt(
    dispatch: Dispatch,
) -> None:
    await dispatch.submit(job("j"), 0)
    await dispatch.node_up(node("n"), 1)
    back = await dispatch.node_down("n", 2, "node n left", deliberate=True)
    assert back == [Requeued("j", 0, "node n left")]
    assert offers(await dispatch.node_up(node("m"), 3)) == [("m", "j")]


async def test_cancel_dequeues_or_stops_and_the_slot_frees_when_the_node_confirms(
    dispatch: Dispatch,
) -> None:
    assert await dispatch.cancel("nothing", 0) is None
    await dispatch.submit(job("queued", "bob"), 0)
    assert await dispatch.cancel("queued", 0) == []
    first = await dispatch.submit(job("running"), 0)
    assert first == []
    running = lease(await dispatch.node_up(node("n"), 1), "running")
    await dispatch.submit(job("next"), 1)
    stopped = await dispatch.cancel("running", 2)
    assert stopped == [SendCancel("n", "running", running)]  # the slot is busy until confirmed
    assert await dispatch.open_jobs("alice") == 1
    assert offers(await dispatch.lease_closed("n", running, 3)) == [("n", "next")]


async def test_a_silent_node_loses_its_job_on_the_tick(dispatch: Dispatch) -> None:
    await dispatch.submit(job("j"), 0)
    held = lease(await dispatch.node_up(node("n", slots=2), 0), "j")
    assert await dispatch.tick(9) == []
    ended = await dispatch.tick(11)
    assert ended[:2] == [
        SendCancel("n", "j", held),
        Requeued("j", 1, "node n showed no progress for 10 s"),
    ]
    # The node that stalled it gets it back only because no other node could run it.
    assert offers(ended[2:]) == [("n", "j")]


async def test_a_declined_job_goes_to_another_node_never_back(dispatch: Dispatch) -> None:
    await dispatch.submit(job("j"), 0)
    held = lease(await dispatch.node_up(node("picky"), 0), "j")
    assert offers(await dispatch.declined("picky", "j", held, "no thanks", 1)) == []
    assert offers(await dispatch.node_up(node("willing"), 2)) == [("willing", "j")]


async def test_a_failure_not_worth_retrying_fails_the_job_only_without_a_second_opinion(
    dispatch: Dispatch,
) -> None:
    await dispatch.submit(job("alone"), 0)
    held = lease(await dispatch.node_up(node("n"), 0), "alone")
    assert await dispatch.failed("n", "alone", held, 1, reason="bad image", retry=False) == [
        Failed("alone", "bad image")
    ]
    await dispatch.node_up(node("m"), 2)
    actions = await dispatch.submit(job("checked", "bob"), 3)
    [(first, _)] = offers(actions)
    other = "m" if first == "n" else "n"
    again = await dispatch.failed(
        first, "checked", lease(actions, "checked"), 4, reason="bad image", retry=False
    )
    assert offers(again) == [(other, "checked")]


async def test_open_jobs_count_queued_and_running_per_client(dispatch: Dispatch) -> None:
    await dispatch.node_up(node("n"), 0)
    for name in ("a1", "a2"):
        await dispatch.submit(job(name, "alice"), 1)
    await dispatch.submit(job("b1", "bob"), 1)
    assert (await dispatch.open_jobs("alice"), await dispatch.open_jobs("bob")) == (2, 1)
    assert await dispatch.counts() == (2, 1)


async def test_a_job_the_node_cannot_run_holds_back_neither_its_client_nor_others(
    dispatch: Dispatch,
) -> None:
    await dispatch.submit(job("a-big", epochs=500), 0)
    await dispatch.submit(job("a-small", epochs=50), 1)
    await dispatch.submit(job("b-small", "bob", epochs=50), 2)
    await dispatch.submit(job("a-next", epochs=50), 3)
    started = offers(await dispatch.node_up(node("n", slots=3, max_epochs=100), 4))
    assert started == [("n", "a-small"), ("n", "b-small"), ("n", "a-next")]
    assert await dispatch.counts() == (1, 3)


async def test_turns_follow_arrival_not_client_names(dispatch: Dispatch) -> None:
    for name, client in (("z1", "zoe"), ("a1", "adam"), ("z2", "zoe"), ("m1", "mia")):
        await dispatch.submit(job(name, client), 0)
    started = offers(await dispatch.node_up(node("n", slots=4), 1))
    assert started == [("n", "z1"), ("n", "a1"), ("n", "m1"), ("n", "z2")]
