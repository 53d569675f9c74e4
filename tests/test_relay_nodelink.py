"""The node listener over real TCP: a fake node speaking the real protocol dials the relay."""

import asyncio
import base64
import struct

import msgpack
import pytest
from relay_harness import FakeClock, jpeg, png
from wire_relay import Start, accept, result_for

from protocol import (
    Accept,
    Bye,
    ByeReason,
    Cancel,
    Decline,
    DeclineReason,
    Drain,
    Failure,
    FailureCode,
    Offer,
    Ping,
    Pong,
    Preview,
    Progress,
    Reject,
    RejectReason,
    StyleInfo,
)
from relay.api import SERVICE

# ---- handshake ---------------------------------------------------------------------------


async def test_good_token_is_welcomed_and_listed_without_secrets(start: Start) -> None:
    relay = await start()
    node = await relay.node("gpu-home", device_name="NVIDIA H100")
    [listed] = await relay.nodes()
    assert (listed["name"], listed["device"], listed["state"]) == (
        "gpu-home",
        "NVIDIA H100",
        "idle",
    )
    assert "builtin:candy" in str(listed["styles"])
    assert "token" not in str(listed).lower()
    styles = await (await relay.client.get("/api/styles")).json()
    assert any(s["id"] == "fast:builtin:candy" for s in styles["styles"])
    await node.close()


async def test_wrong_and_revoked_tokens_are_rejected_and_closed(start: Start) -> None:
    relay = await start()
    node = await relay.dial()
    await node.hello("not-a-token")
    reject = await node.expect(Reject)
    assert reject.reason is RejectReason.BAD_TOKEN
    assert "tokens add" in reject.message
    assert await node.closed_by_relay()

    token = relay.tokens.add("gpu-2")
    relay.tokens.revoke("gpu-2")
    node = await relay.dial()
    await node.hello(token, "gpu-2")
    assert (await node.expect(Reject)).reason is RejectReason.BAD_TOKEN
    assert await relay.nodes() == []


async def test_silent_connection_is_closed_at_the_handshake_deadline(start: Start) -> None:
    relay = await start(handshake_timeout=0.3)
    node = await relay.dial()
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await node.closed_by_relay(timeout=3.0)
    assert 0.25 <= loop.time() - began < 2.0


async def test_oversized_frame_before_hello_closes_at_once(start: Start) -> None:
    relay = await start()
    node = await relay.dial()
    # A 4 GiB length prefix and no body: refused before any body is buffered.
    await node.send_raw(struct.pack(">I", 0xFFFF_FFFF))
    assert await node.closed_by_relay(timeout=2.0)


async def test_anything_but_hello_first_is_refused(start: Start) -> None:
    relay = await start()
    node = await relay.dial()
    body = msgpack.packb({"type": "ping", "nonce": 1})
    await node.send_raw(struct.pack(">I", len(body)) + body)
    assert await node.closed_by_relay(timeout=2.0)
    assert await relay.nodes() == []


# ---- jobs ----------------------------------------------------------------------------------


async def test_a_job_runs_over_the_wire_to_a_downloadable_result(start: Start) -> None:
    relay = await start()
    node = await relay.node()
    job_id = await relay.job(keep_colors="true")
    offer = await node.expect(Offer)
    assert (offer.job_id, offer.method, offer.style_id) == (job_id, "fast", "builtin:candy")
    assert offer.params["keep_colors"] is True
    assert offer.params["size"] == 40
    await node.send(Accept(offer.job_id, offer.lease_id))
    await node.send(Progress(offer.job_id, offer.lease_id, 1, 1, {"style": 2.5}, 0.1))
    await node.send(Preview(offer.job_id, offer.lease_id, 1, jpeg()))
    result = result_for(offer)
    await node.send(result)
    done = await relay.wait_for(job_id, "done")
    assert done["node"] == "gpu-1"
    downloaded = await relay.client.get(done["result_url"])
    assert await downloaded.read() == result.png
    [listed] = await relay.nodes()
    assert listed["jobs_done"] == 1


async def test_a_blend_of_fast_styles_travels_as_style_mix(start: Start) -> None:
    relay = await start()
    mix = [("builtin:candy", "Candy", "fast"), ("builtin:wave", "Wave", "fast")]
    node = await relay.node(styles=tuple(StyleInfo(*s) for s in mix))
    resp = await relay.client.post(
        "/api/jobs",
        json={
            "image": base64.b64encode(png()).decode(),
            "style": [
                {"id": "fast:builtin:candy", "weight": 3},
                {"id": "fast:builtin:wave", "weight": 1},
            ],
        },
    )
    assert resp.status == 202, await resp.text()
    offer = await node.expect(Offer)
    assert offer.style_id is None
    assert offer.params["style_mix"] == "builtin:candy:0.75,builtin:wave:0.25"


async def test_lost_node_requeues_to_another_node(start: Start) -> None:
    relay = await start()
    first = await relay.node("gpu-a")
    job_id = await relay.job()
    offer = await accept(first)
    await first.close()
    second = await relay.node("gpu-b")
    retry = await accept(second)
    assert retry.job_id == job_id and retry.lease_id != offer.lease_id
    state = await relay.state(job_id)
    assert (state["node"], state["attempts"]) == ("gpu-b", 1)
    winner = result_for(retry)
    await second.send(winner)
    done = await relay.wait_for(job_id, "done")
    assert await (await relay.client.get(done["result_url"])).read() == winner.png


async def test_a_node_stopped_by_its_owner_hands_its_job_back_without_using_an_attempt(
    start: Start,
) -> None:
    relay = await start()
    first = await relay.node("gpu-a")
    job_id = await relay.job()
    await accept(first)
    await first.send(Bye(ByeReason.SHUTDOWN, "1 job(s) handed back"))
    assert await first.closed_by_relay()
    second = await relay.node("gpu-b")
    retry = await accept(second)
    assert retry.job_id == job_id
    state = await relay.state(job_id)
    assert (state["node"], state["attempts"]) == ("gpu-b", 0)


async def test_a_jump_of_the_wall_clock_does_not_end_running_leases(start: Start) -> None:
    wall, timer = FakeClock(), FakeClock()
    relay = await start(clock=wall, timer=timer, tick_interval=3600)
    node = await relay.node()
    job_id = await relay.job()
    await accept(node)
    service = relay.client.app[SERVICE]
    wall.advance(24 * 3600.0)  # the VM's clock is stepped a day ahead
    service.tick()
    state = await relay.state(job_id)
    assert (state["state"], state["attempts"]) == ("running", 0)
    assert [n["state"] for n in await relay.nodes()] == ["busy"]
    timer.advance(24 * 3600.0)  # a day of real silence does end it
    service.tick()
    state = await relay.state(job_id)
    assert (state["state"], state["attempts"]) == ("queued", 1)


async def test_a_result_that_crosses_a_cancel_is_ignored(start: Start) -> None:
    relay = await start()
    node = await relay.node()
    job_id = await relay.job()
    offer = await accept(node)
    assert (await relay.client.delete(f"/api/jobs/{job_id}")).status in (200, 202)
    await node.expect(Cancel)
    # The node had already finished: its result for the void lease arrives anyway.
    await node.send(result_for(offer))
    await asyncio.sleep(0.2)
    state = await relay.state(job_id)
    assert state["state"] == "cancelled"
    assert state["result_url"] is None
    assert [n["jobs_done"] for n in await relay.nodes()] == [0]


async def test_node_that_misses_heartbeats_is_dropped(start: Start) -> None:
    # The liveness rule runs on the tick (`NodeReports.check_silence`).
    relay = await start(heartbeat_interval=0.1, tick_interval=0.05)
    node = await relay.node()
    job_id = await relay.job()
    await accept(node)
    ping = await node.expect(Ping, timeout=1.0)
    assert ping.nonce >= 1
    # Say nothing more: three silent intervals later the relay says goodbye.
    loop = asyncio.get_running_loop()
    began = loop.time()
    while True:
        message = await node.next(timeout=2.0)
        if isinstance(message, Bye):
            assert message.reason is ByeReason.HEARTBEAT_TIMEOUT
            break
    assert loop.time() - began < 1.5
    assert await node.closed_by_relay()
    assert await relay.nodes() == []
    assert (await relay.state(job_id))["state"] == "queued"


async def test_silence_is_judged_on_the_relays_timer_alone(start: Start) -> None:
    # One liveness rule (NodeHub.silent) on the relay's injected monotonic timer: silence
    # the timer did not see drops nobody; silence it saw does, and the link says goodbye.
    timer = FakeClock()
    relay = await start(timer=timer, heartbeat_interval=0.05, tick_interval=0.02)
    node = await relay.node()
    job_id = await relay.job()
    await accept(node)
    await asyncio.sleep(0.5)  # ten intervals of real time, the pings unanswered
    assert [n["state"] for n in await relay.nodes()] == ["busy"]
    timer.advance(0.2)  # four intervals on the relay's timer
    while not isinstance(message := await node.next(timeout=2.0), Bye):
        pass
    assert message.reason is ByeReason.HEARTBEAT_TIMEOUT
    assert await node.closed_by_relay()
    assert await relay.nodes() == []
    assert (await relay.state(job_id))["state"] == "queued"


async def test_pongs_keep_a_busy_node_alive(start: Start) -> None:
    relay = await start(heartbeat_interval=0.05)
    node = await relay.node()
    await relay.job()
    await accept(node)
    for _ in range(12):  # 0.6 s of pings answered: well past three intervals
        ping = await node.expect(Ping, timeout=1.0)
        await node.send(Pong(ping.nonce))
    assert [n["state"] for n in await relay.nodes()] == ["busy"]


async def test_drain_finishes_the_job_but_takes_no_new_one(start: Start) -> None:
    relay = await start()
    node = await relay.node()
    first = await relay.job()
    offer = await accept(node)
    await node.send(Drain())
    await asyncio.sleep(0.1)
    second = await relay.job()
    assert [n["state"] for n in await relay.nodes()] == ["draining"]
    await node.send(result_for(offer))
    await relay.wait_for(first, "done")
    await asyncio.sleep(0.1)
    waiting = await relay.state(second)
    assert waiting["state"] == "queued"
    await node.send(Bye(ByeReason.DRAINED))
    assert await node.closed_by_relay()
    assert await relay.nodes() == []


async def test_cancel_reaches_the_node(start: Start) -> None:
    relay = await start()
    node = await relay.node()
    job_id = await relay.job()
    offer = await accept(node)
    resp = await relay.client.delete(f"/api/jobs/{job_id}")
    assert resp.status in (200, 202)
    cancel = await node.expect(Cancel)
    assert (cancel.job_id, cancel.lease_id) == (offer.job_id, offer.lease_id)
    await node.send(Failure(offer.job_id, offer.lease_id, FailureCode.CANCELLED, "stopped"))
    assert (await relay.wait_for(job_id, "cancelled"))["state"] == "cancelled"


@pytest.mark.single_relay("a node's words on a job it declined stay with the replica it told")
async def test_decline_over_the_cap_says_why_the_job_waits(start: Start) -> None:
    relay = await start()
    job_id = await relay.job(style="painting:starry_night", epochs="50")
    node = await relay.node()
    offer = await node.expect(Offer)
    await node.send(
        Decline(offer.job_id, offer.lease_id, DeclineReason.TOO_LARGE, "epochs 50 is above 10")
    )
    state = await relay.wait_for(job_id, "queued")
    assert "epochs 50 is above 10" in str(state)


async def test_invalid_input_failure_is_final(start: Start) -> None:
    relay = await start()
    node = await relay.node()
    job_id = await relay.job()
    offer = await accept(node)
    await node.send(
        Failure(offer.job_id, offer.lease_id, FailureCode.INVALID_INPUT, "cannot read the photo")
    )
    failed = await relay.wait_for(job_id, "failed")
    assert "cannot read the photo" in failed["error"]


async def test_a_newer_connection_of_the_same_node_replaces_the_old(start: Start) -> None:
    relay = await start()
    old = await relay.node("gpu-a")
    new = await relay.node("gpu-a")
    bye = await old.expect(Bye)
    assert bye.reason is ByeReason.REPLACED
    assert await old.closed_by_relay()
    [listed] = await relay.nodes()
    assert listed["name"] == "gpu-a"
    job_id = await relay.job()
    assert (await accept(new)).job_id == job_id
