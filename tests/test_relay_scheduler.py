"""The scheduler alone: fairness, capability, leases, timeouts, requeue, attempts, cancel."""

from collections.abc import Sequence

import pytest

from relay.dispatch import (
    Failed,
    JobTicket,
    NodeInfo,
    OfferDeclined,
    Requeued,
    SendCancel,
    SendOffer,
    Timeouts,
)
from relay.scheduler import Scheduler

GATYS = frozenset({"gatys"})
ALL = frozenset({"gatys", "fast", "arbitrary"})


def node(name: str = "n1", **kw: object) -> NodeInfo:
    fields: dict[str, object] = {"methods": ALL, "styles": frozenset({"candy", "mosaic"})}
    return NodeInfo(name, **{**fields, **kw})  # type: ignore[arg-type]


def job(job_id: str, client: str = "alice", **kw: object) -> JobTicket:
    fields: dict[str, object] = {"method": "gatys", "epochs": 100, "pixels": 512 * 512}
    return JobTicket(job_id, client, **{**fields, **kw})  # type: ignore[arg-type]


def offers(actions: Sequence[object]) -> list[str]:
    return [a.job for a in actions if isinstance(a, SendOffer)]


def finish_one(s: Scheduler, name: str, now: float) -> list[object]:
    view = next(v for v in s.nodes() if v.info.name == name)
    job_id = sorted(view.jobs)[0]
    lease = s.lease_of(job_id)
    assert lease is not None
    return list(s.finished(name, job_id, lease[1], now))


def test_fifo_for_one_client() -> None:
    s = Scheduler()
    for i in range(3):
        s.submit(job(f"j{i}"), 0.0)
    assert offers(list(s.node_up(node(), 1.0))) == ["j0"]
    assert offers(finish_one(s, "n1", 2.0)) == ["j1"]
    assert offers(finish_one(s, "n1", 3.0)) == ["j2"]
    assert finish_one(s, "n1", 4.0) == []


def test_round_robin_keeps_one_client_from_starving_others() -> None:
    s = Scheduler()
    for i in range(4):
        s.submit(job(f"a{i}", "alice"), 0.0)
    s.submit(job("b0", "bob"), 1.0)
    s.submit(job("c0", "carol"), 2.0)
    s.submit(job("b1", "bob"), 3.0)
    # Before any node: the fair order is a0 b0 c0 a1 b1 a2 a3.
    assert [s.position(j) for j in ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]] == [
        1,
        2,
        3,
        4,
        5,
        6,
        7,
    ]
    order = offers(list(s.node_up(node(), 4.0)))
    for t in range(6):
        order += offers(finish_one(s, "n1", 5.0 + t))
    assert order == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]


def test_node_with_two_slots_gets_two_jobs_and_reports_busy() -> None:
    s = Scheduler()
    for i in range(3):
        s.submit(job(f"j{i}"), 0.0)
    assert offers(list(s.node_up(node(slots=2), 1.0))) == ["j0", "j1"]
    assert (s.queued, s.running, s.open_jobs("alice")) == (1, 2, 3)
    assert s.nodes()[0].jobs == {"j0", "j1"}


@pytest.mark.parametrize(
    ("spec", "info", "why"),
    [
        (job("j"), None, "No node is online"),
        (
            job("j", method="fast", epochs=1),
            node(methods=GATYS),
            "No connected node offers the fast",
        ),
        (
            job("j", method="fast", epochs=1, fast_styles=frozenset({"udnie"})),
            node(),
            "No connected node has the style fast:udnie",
        ),
        (
            job("j", epochs=900),
            node(max_epochs=500),
            "900 epochs is above every connected node's cap (the highest is 500)",
        ),
        (
            job("j", pixels=5_000_000),
            node(max_pixels=1_000_000),
            "more than any connected node takes",
        ),
    ],
)
def test_capability_mismatch_waits_and_says_why(
    spec: JobTicket, info: NodeInfo | None, why: str
) -> None:
    s = Scheduler()
    if info is not None:
        s.node_up(info, 0.0)
    assert offers(list(s.submit(spec, 1.0))) == []
    reason = s.why_waiting("j")
    assert reason is not None
    assert why in reason
    # A node that fits takes it at once.
    big = node("big", max_pixels=10**7, styles=frozenset({"udnie"}))
    assert offers(list(s.node_up(big, 2.0))) == ["j"]
    assert s.why_waiting("j") is None


def test_job_skips_to_a_node_that_fits_without_blocking_others() -> None:
    s = Scheduler()
    s.node_up(node("small", max_epochs=100), 0.0)
    assert offers(list(s.submit(job("long", epochs=800), 1.0))) == []
    assert offers(list(s.submit(job("short", epochs=50), 2.0))) == ["short"]
    assert s.position("long") == 1


def test_progress_and_results_count_only_for_the_current_lease() -> None:
    s = Scheduler()
    s.node_up(node("n1"), 0.0)
    s.node_up(node("n2"), 0.0)
    [first] = s.submit(job("j"), 1.0)
    assert isinstance(first, SendOffer)
    actions = list(s.node_down(first.node, 2.0))
    assert actions[0] == Requeued("j", 1, f"node {first.node} was lost")
    [second] = [a for a in actions if isinstance(a, SendOffer)]
    assert second.lease != first.lease
    assert not s.progress(first.node, "j", first.lease, 3.0)
    assert not s.is_current(first.node, "j", first.lease)
    assert not s.progress(second.node, "j", first.lease, 3.0)
    assert s.progress(second.node, "j", second.lease, 3.0)
    with pytest.raises(ValueError, match="not current"):
        s.finished(second.node, "j", first.lease, 4.0)
    s.finished(second.node, "j", second.lease, 4.0)
    # A duplicate result after the job finished is stale too.
    assert not s.is_current(second.node, "j", second.lease)


def test_three_lost_nodes_fail_the_job_with_a_reason() -> None:
    s = Scheduler(Timeouts(max_attempts=3))
    s.submit(job("j"), 0.0)
    results = []
    for attempt in range(3):
        s.node_up(node(f"n{attempt}"), float(attempt))
        results += s.node_down(f"n{attempt}", attempt + 0.5)
    assert [type(a) for a in results] == [Requeued, Requeued, Failed]
    failed = results[-1]
    assert isinstance(failed, Failed)
    assert failed.reason == "Gave up after 3 attempts; last: node n2 was lost."
    assert (s.queued, s.running, s.open_jobs("alice")) == (0, 0, 0)


def test_nodes_that_leave_on_purpose_hand_jobs_back_without_using_attempts() -> None:
    s = Scheduler(Timeouts(max_attempts=2, free_handbacks=2))
    s.submit(job("j"), 0.0)
    results = []
    for turn in range(4):  # two free hand-backs, then each counts as an attempt
        s.node_up(node(f"n{turn}"), float(turn))
        lease = s.lease_of("j")
        assert lease is not None and lease[0] == f"n{turn}"
        results += s.node_down(f"n{turn}", turn + 0.5, "said goodbye", deliberate=True)
    why = "said goodbye"
    assert results == [Requeued("j", 0, why), Requeued("j", 0, why), Requeued("j", 1, why),
                       Failed("j", f"Gave up after 2 attempts; last: {why}.", 2)]  # fmt: skip


def test_a_crash_after_a_hand_back_still_counts_as_an_attempt() -> None:
    s = Scheduler(Timeouts(max_attempts=3))
    s.submit(job("j"), 0.0)
    s.node_up(node("n1"), 0.0)
    assert s.node_down("n1", 1.0, deliberate=True) == [Requeued("j", 0, "node n1 was lost")]
    s.node_up(node("n2"), 2.0)
    assert s.node_down("n2", 3.0) == [Requeued("j", 1, "node n2 was lost")]
    assert s.queued == 1


def test_silent_node_times_out_scaled_to_size() -> None:
    s = Scheduler(Timeouts(stall=10.0, epoch_budget=100.0))
    s.node_up(node(), 0.0)
    [small] = s.submit(job("small", pixels=500_000), 0.0)
    assert isinstance(small, SendOffer)
    assert s.tick(9.0) == []
    assert s.progress("n1", "small", small.lease, 9.0)
    assert s.tick(18.0) == []
    actions = s.tick(19.5)
    assert actions[0] == SendCancel("n1", "small", small.lease)
    assert actions[1] == Requeued("small", 1, "node n1 showed no progress for 10 s")
    # Re-offered under a new lease once the node confirms the stop (it is still connected).
    assert offers(actions) == []
    assert offers(s.lease_closed("n1", small.lease, 20.0)) == ["small"]
    # Four megapixels get four times the silence.
    s2 = Scheduler(Timeouts(stall=10.0, epoch_budget=100.0))
    s2.node_up(node(max_pixels=10**7), 0.0)
    s2.submit(job("big", pixels=4_000_000), 0.0)
    assert s2.tick(39.0) == []
    assert isinstance(s2.tick(40.5)[0], SendCancel)


def test_run_deadline_scales_with_epochs() -> None:
    t = Timeouts(stall=10.0, epoch_budget=2.0)
    assert t.run_limit(job("a", epochs=100, pixels=1_000_000)) == pytest.approx(210.0)
    assert t.run_limit(job("b", epochs=200, pixels=1_000_000)) == pytest.approx(410.0)
    s = Scheduler(t)
    s.node_up(node(), 0.0)
    [offer] = s.submit(job("a", epochs=100, pixels=1_000_000), 0.0)
    assert isinstance(offer, SendOffer)
    for now in range(5, 210, 5):
        assert s.progress("n1", "a", offer.lease, float(now))
        assert s.tick(float(now)) == []
    actions = s.tick(211.0)
    assert Requeued("a", 1, "node n1 did not finish within 210 s") in actions


def test_cancel_queued_and_running() -> None:
    s = Scheduler()
    s.node_up(node(), 0.0)
    [run] = s.submit(job("run"), 0.0)
    s.submit(job("wait1"), 0.0)
    s.submit(job("wait2"), 0.0)
    assert s.cancel("wait1", 1.0) == []
    assert s.position("wait2") == 1
    assert isinstance(run, SendOffer)
    actions = s.cancel("run", 2.0)
    assert actions == [SendCancel("n1", "run", run.lease)]
    # The node's slot stays busy until it confirms the stop; then the next job goes.
    assert s.lease_closed("n1", "some-other-lease", 2.5) == []
    assert offers(s.lease_closed("n1", run.lease, 3.0)) == ["wait2"]
    assert s.lease_closed("n1", run.lease, 3.5) == []
    assert s.cancel("run", 4.0) is None
    assert s.open_jobs("alice") == 1


def test_a_node_that_never_confirms_a_stop_gets_its_slot_back_after_a_grace() -> None:
    s = Scheduler(Timeouts(stop_grace=10.0))
    s.node_up(node(), 0.0)
    [run] = s.submit(job("run"), 0.0)
    s.submit(job("next"), 0.0)
    assert isinstance(run, SendOffer)
    s.cancel("run", 1.0)
    assert offers(s.tick(5.0)) == []
    assert offers(s.tick(11.5)) == ["next"]


def test_busy_decline_rests_the_slot_and_offers_again_later() -> None:
    s = Scheduler(Timeouts(busy_pause=2.0))
    s.node_up(node("only"), 0.0)
    [offer] = s.submit(job("j"), 1.0)
    assert isinstance(offer, SendOffer)
    declined = s.declined("only", "j", offer.lease, "all slots busy", 1.5, busy=True)
    assert declined == [OfferDeclined("only", "j", "all slots busy")]
    assert s.why_waiting("j") is None
    assert offers(s.tick(2.0)) == []
    [again] = s.tick(4.0)
    assert isinstance(again, SendOffer) and again.lease != offer.lease


def test_declined_offer_goes_elsewhere_and_not_back() -> None:
    s = Scheduler()
    s.node_up(node("picky"), 0.0)
    [offer] = s.submit(job("j"), 1.0)
    assert isinstance(offer, SendOffer)
    declined = s.declined("picky", "j", offer.lease, "over my epoch cap", 2.0)
    assert declined == [OfferDeclined("picky", "j", "over my epoch cap")]
    assert s.position("j") == 1
    why = s.why_waiting("j")
    assert why is not None
    assert "picky: over my epoch cap" in why
    assert offers(list(s.node_up(node("other"), 3.0))) == ["j"]


def test_node_failure_without_retry_fails_the_job() -> None:
    s = Scheduler()
    s.node_up(node(), 0.0)
    [offer] = s.submit(job("j"), 0.0)
    assert isinstance(offer, SendOffer)
    actions = s.failed("n1", "j", offer.lease, 1.0, reason="image too dark", retry=False)
    assert actions == [Failed("j", "image too dark")]
    assert s.open_jobs("alice") == 0


def test_reconnect_under_same_name_requeues_its_jobs() -> None:
    s = Scheduler()
    s.node_up(node(), 0.0)
    [offer] = s.submit(job("j"), 0.0)
    actions = s.node_up(node(), 1.0)
    assert actions[0] == Requeued("j", 1, "node n1 reconnected")
    [again] = [a for a in actions if isinstance(a, SendOffer)]
    assert isinstance(offer, SendOffer)
    assert again.lease != offer.lease


def test_submitting_twice_is_a_bug() -> None:
    s = Scheduler()
    s.submit(job("j"), 0.0)
    with pytest.raises(ValueError, match="already scheduled"):
        s.submit(job("j"), 0.0)


def test_a_result_the_disk_could_not_take_waits_before_it_runs_again() -> None:
    s = Scheduler(Timeouts(not_stored_pause=30.0))
    s.submit(job("j0"), 0.0)
    s.submit(job("j1", "bob"), 0.0)
    assert offers(s.node_up(node(), 1.0)) == ["j0"]
    lease = s.lease_of("j0")
    assert lease is not None
    actions = s.not_stored("n1", "j0", lease[1], "disk full", 2.0)
    # No attempt is charged, and the slot goes to another job rather than straight back.
    assert Requeued("j0", 0, "disk full") in actions
    assert offers(actions) == ["j1"]
    assert offers(finish_one(s, "n1", 3.0)) == []
    assert offers(s.tick(20.0)) == []
    assert offers(s.tick(32.5)) == ["j0"]
