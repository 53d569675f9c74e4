"""The scheduler's vocabulary: what a node offers, what a job needs, and the actions.

The node listener builds `NodeInfo` from a node's hello and carries out `SendOffer` and
`SendCancel`; nothing here knows about sockets or the wire format.
"""

from dataclasses import dataclass, field

from protocol.params import ONE_PASS


@dataclass(frozen=True)
class NodeInfo:
    """What a node advertises when it connects.

    `styles` are the bare names of its fast styles (`candy` serves style id `fast:candy`);
    `titles` and `thumbnails` optionally map such a name to a display name and to JPEG
    bytes for the gallery.
    """

    name: str
    device_name: str = "cpu"
    device_memory: int = 0
    methods: frozenset[str] = frozenset()
    styles: frozenset[str] = frozenset()
    max_epochs: int = 1000
    max_pixels: int = 4_000_000
    slots: int = 1
    titles: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    pace: dict[str, tuple[float, float]] = field(default_factory=dict, compare=False, hash=False)
    """Its measured pace by method (relay/estimates.py), empty if it sent none."""
    thumbnails: dict[str, bytes] = field(default_factory=dict, compare=False, hash=False)
    devices: tuple[tuple[str, int, int], ...] = field(default=(), compare=False, hash=False)
    """(name, memory bytes, slots) of each device it drives, empty if it listed none."""


@dataclass(frozen=True)
class JobTicket:
    """A job's ticket in the scheduler's queue: what it needs to know of the job to place it
    (named apart from the node's `gpu_node.daemon.params.JobSpec`)."""

    id: str
    client: str
    method: str
    epochs: int
    pixels: int
    fast_styles: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Timeouts:
    """How long a running job may stay silent or run, and how often it may be retried."""

    stall: float = 120.0
    epoch_budget: float = 30.0
    max_attempts: int = 3
    stop_grace: float = 60.0
    """How long a node may take to confirm a cancel before its slot counts as free."""
    busy_pause: float = 2.0
    """How long a slot rests after its node declined an offer as busy."""
    not_stored_pause: float = 30.0
    """How long a job whose result the relay could not store waits before it is offered
    again (the disk was full; an immediate rerun would fail the same way)."""
    free_handbacks: int = 5
    """How often a job may be handed back by nodes that leave on purpose (Bye) before each
    further hand-back counts as an attempt: a job that makes nodes quit still ends."""
    queue: float = 6 * 3600.0
    """How long a job may wait in the queue in all (time on a node does not count) before
    it fails: a job no node can take does not hold its place for ever."""
    unservable_after: float = 600.0
    """How long a queued job may wait once every connected node that fits it has declined
    it (no other came) before it fails with their reasons; shorter than `queue`."""
    probation_wait: float = 3.0
    """How long a job waits for a busy proven node before a node on probation (one that
    has not finished a job yet) may take it (see `relay.scheduler`)."""
    one_pass_stall: float = 30.0
    """The stall limit per megapixel of the one-pass methods (`protocol.params.ONE_PASS`):
    their node reports Progress once, after the whole run, which takes seconds even on a CPU
    (a 2048x2048 arbitrary-style pass: about 2 s on two cores), so `stall` (sized for
    Gatys, whose first report follows loading VGG and a first epoch) would let a silent
    node sit on such a job for minutes."""

    def stall_limit(self, job: JobTicket) -> float:
        """Seconds allowed between two progress reports: longer for bigger images."""
        # Never above `stall`: a relay configured with a shorter one keeps it for all.
        base = min(self.one_pass_stall, self.stall) if job.method in ONE_PASS else self.stall
        return base * max(1.0, job.pixels / 1e6)

    def run_limit(self, job: JobTicket) -> float:
        """Seconds allowed for the whole run: scaled to epochs and megapixels."""
        return self.stall_limit(job) + job.epochs * max(0.1, job.pixels / 1e6) * self.epoch_budget


@dataclass(frozen=True)
class SendOffer:
    """Offer `job` to `node` under a new lease."""

    node: str
    job: str
    lease: str


@dataclass(frozen=True)
class SendCancel:
    """Tell `node` to stop `job`; its lease is void."""

    node: str
    job: str
    lease: str


@dataclass(frozen=True)
class OfferDeclined:
    """`node` refused the offer of `job`: the job never ran there and waits again (it may
    be offered elsewhere by the actions that follow)."""

    node: str
    job: str
    reason: str


@dataclass(frozen=True)
class Requeued:
    """`job` lost its node and waits again; `attempts` abnormal ends so far."""

    job: str
    attempts: int
    reason: str


@dataclass(frozen=True)
class Failed:
    """`job` cannot be finished; `reason` says why in words a person can read. `attempts`
    is set when the failure is the last of its abnormal ends: the count the reason names."""

    job: str
    reason: str
    attempts: int | None = None


@dataclass(frozen=True)
class NodePaused:
    """`node` gets no new jobs for `seconds`: its jobs kept failing while others' succeeded."""

    node: str
    seconds: float
    reason: str


Action = SendOffer | SendCancel | OfferDeclined | Requeued | Failed | NodePaused


def fits(node: NodeInfo, job: JobTicket) -> bool:
    """Whether `node` can run `job` at all (ignoring how busy it is)."""
    return (
        job.method in node.methods
        and job.fast_styles <= node.styles
        and job.epochs <= node.max_epochs
        and job.pixels <= node.max_pixels
    )


def unfit(job: JobTicket, nodes: list[NodeInfo]) -> tuple[str, str] | None:
    """Why none of `nodes` could run `job` however idle, in words, and what its owner could
    change so that one could ("" where nothing would help); None if one could."""
    if not nodes:
        return "No node is online; the job starts when one connects.", ""
    if not any(job.method in i.methods for i in nodes):
        return f"No connected node offers the {job.method} method.", "choose another method"
    missing = sorted(s for s in job.fast_styles if not any(s in i.styles for i in nodes))
    if missing:
        names = ", ".join("fast:" + s for s in missing)
        return f"No connected node has the style {names}.", "choose another style"
    top_epochs = max(i.max_epochs for i in nodes if job.method in i.methods)
    if job.epochs > top_epochs:
        return (
            f"{job.epochs} epochs is above every connected node's cap "
            f"(the highest is {top_epochs}).",
            f"ask for at most {top_epochs} epochs",
        )
    top_pixels = max(i.max_pixels for i in nodes if job.method in i.methods)
    if job.pixels > top_pixels:
        return (
            f"The image has {job.pixels:,} pixels, more than any connected node takes "
            f"(the most is {top_pixels:,}).",
            "choose a smaller size",
        )
    if not any(fits(i, job) for i in nodes):
        return "No single connected node offers everything this job needs.", ""
    return None


def why_waiting(job: JobTicket, nodes: list[NodeInfo], declined_by: dict[str, str]) -> str | None:
    """Why none of `nodes` (those taking jobs) runs `job`, in words; None if one could."""
    found = unfit(job, nodes)
    if found is not None:
        return found[0]
    if all(i.name in declined_by for i in nodes if fits(i, job)):
        reasons = "; ".join(f"{n}: {r}" for n, r in sorted(declined_by.items()))
        return f"Every node that could run it declined ({reasons})."
    return None


def waited_too_long(limit: float, why: str | None) -> str:
    """Why a job failed after waiting `limit` seconds, given `why_waiting`'s words then."""
    detail = _clause(why or "Every node that could was busy")
    return f"No node could take this job within {_span(limit)} ({detail}); try again later."


def declined_too_long(limit: float, why: str) -> str:
    """Why a job failed after every connected node that fits it had declined it for `limit`
    seconds, given `why_waiting`'s words (the nodes' reasons)."""
    return f"{why} No other node came to take it within {_span(limit)}."


def style_gone(styles: list[str]) -> str:
    """Why a queued job failed when its fast styles were forgotten: the last node that had
    them left, and they were since pushed out of the relay's recent styles."""
    names = ", ".join("fast:" + s for s in sorted(styles))
    return (
        f"No node offers the style {names} any more: it left with its last node a while "
        "ago; choose another style."
    )


def no_room_to_wait(why: str, hint: str, waiting: int) -> str:
    """Why a job no connected node can run is refused: `waiting` such jobs fill their share
    of the queue. `why` and `hint` are `unfit`'s words."""
    advice = f"try again later or {hint}" if hint else "try again later"
    return (
        f"No connected node can run this job now ({_clause(why)}), and {waiting} jobs "
        f"already wait for one; {advice}."
    )


def _clause(sentence: str) -> str:
    """`why_waiting`'s sentence as a clause inside another: no capital, no full stop, and
    no afterthought past a ";" (one inside brackets, the nodes' own reasons, stays)."""
    # "No node is online; the job starts when one connects." -> "no node is online"
    detail = sentence.rstrip(".")
    head, sep, _ = detail.partition(";")
    detail = head if sep and "(" not in head else detail
    return detail[:1].lower() + detail[1:]


def _span(seconds: float) -> str:
    """6 h, 1.5 h, 20 min, 100 s: a duration as a person says it."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}".removesuffix(".0") + " h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
