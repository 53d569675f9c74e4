"""The dispatcher: which job runs where. A plain class: events in, actions out.

No sockets, no clock of its own (every call takes `now`), no I/O. The service applies the
actions it returns: `SendOffer`/`SendCancel` go to a node, `Requeued`/`Failed` to the store
and to the job's subscribers.

- Queue: FIFO per client, clients served round-robin, so one client cannot starve others.
  A client given priority p (an API key's `--priority`) is served up to 1 + p jobs per turn.
  A job another node declined, or one handed back, goes to the front of its client's queue.
- Capability: a job goes only to a node that offers its method, holds its fast styles, whose
  `max_epochs` and `max_pixels` cover it, and that has a free slot.
- Leases: every assignment has a new lease id; only the current lease's progress and result
  count. A lease ends when its node is lost, when the job is silent longer than its stall
  limit (scaled to its size) or runs past its deadline (scaled to size and epochs). The job
  then goes back to the queue; after `max_attempts` such ends it fails. A node that leaves
  on purpose (it said Bye) hands its jobs back without using up an attempt, up to
  `free_handbacks` times per job.
- Distrust: a node is believed for at most `max_slots` slots, and work goes to the fitting
  node with the lowest busy fraction (ties: the one that started fewest jobs), so a node
  claiming many slots cannot take every job. A job a node failed goes to a node that has not
  failed it, if one is connected (it waits for it); a node's non-retryable failure fails the
  job only when no such node exists (a second opinion: a liar cannot fail jobs outright).
- Trust is earned: while some connected node has proven itself (finished a job, and not
  stalled one since; `relay.reputation` keeps the record by name), a node that has not is
  on probation: it holds at most one job, and gets one only when no proven node could run
  it, or once the job has waited `timeouts.probation_wait` for the busy proven ones (the
  tick hands those out). A node that accepts and then sits on jobs thus holds at most one,
  and only when the proven nodes are short; a new honest node still gets work when the
  queue backs up, and proves itself with it. A relay with no proven node yet (fresh start)
  places by load alone.
- Rest: a node whose jobs keep failing while others finish theirs gets no new jobs for a
  while (the rule is in `relay.reputation`).
- Waiting: a job may wait `timeouts.queue` seconds in all (a recovered job brings the time
  it has waited already); a queued job past that fails, with why no node took it. Time on
  a node does not count: a job that goes back to the queue keeps the wait it had left.
- Refused: a queued job that every connected, non-draining node fitting it has declined
  fails once it has been so for `timeouts.unservable_after` (no other node came), with the
  nodes' reasons. A fitting node that has not declined it (even a busy or resting one)
  keeps it waiting; a new lease starts the count afresh.
- Unservable: the scheduler counts the queued jobs no connected, non-draining node could
  run (`unservable`), so admission can keep such jobs to a share of the queue.
"""

import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace

from relay.dispatch import (
    Action,
    Failed,
    JobTicket,
    NodeInfo,
    OfferDeclined,
    Requeued,
    SendCancel,
    SendOffer,
    Timeouts,
    declined_too_long,
    fits,
    style_gone,
    unfit,
    waited_too_long,
    why_waiting,
)
from relay.reputation import Reputation


@dataclass
class _Assignment:
    """A job given to a node under lease `id`, with its timers (the protocol's own lease
    bookkeeping is `protocol.state`'s)."""

    id: str
    node: str
    started: float
    silent_until: float
    deadline: float


@dataclass
class _Job:
    spec: JobTicket
    wait_until: float
    """When it fails if still queued; pushed back by the time it spends on a node."""
    attempts: int = 0
    handbacks: int = 0
    lease: _Assignment | None = None
    declined_by: dict[str, str] = field(default_factory=dict)
    failed_on: set[str] = field(default_factory=set)
    """Nodes whose lease of this job ended in a failure or a stall."""
    not_before: float = 0.0
    """Not offered before this time (the relay's store failed: its result could not be
    stored, or its images read)."""
    queued_since: float = 0.0
    """When it last joined the queue: how long it has waited for a proven node."""
    refused_since: float | None = None
    """Since when every connected node that fits it has declined it (None: not so)."""


@dataclass
class _Node:
    info: NodeInfo
    jobs: set[str] = field(default_factory=set)
    jobs_done: int = 0
    started: int = 0
    draining: bool = False
    stopping: dict[str, float] = field(default_factory=dict)
    """Leases the node was told to stop, until it ends them (or the deadline passes):
    their slots are still busy on the node."""
    live: int = 0
    """Slots held by live sessions (`relay.live`)."""

    @property
    def busy(self) -> int:
        """Slots in use: running jobs, stops not yet confirmed and live sessions."""
        return len(self.jobs) + len(self.stopping) + self.live


@dataclass(frozen=True)
class NodeView:
    """A node as the scheduler sees it: what it offers, what runs there, what it finished."""

    info: NodeInfo
    jobs: frozenset[str]
    jobs_done: int
    draining: bool = False
    paused_until: float | None = None
    """On the scheduler's clock; None unless the node is rested."""
    pause_reason: str | None = None
    proven: bool = True
    """Whether it has finished a job (else, beside proven nodes, it is on probation)."""


class Scheduler:
    """Fair queue, capability matching and leases for every queued and running job."""

    def __init__(
        self, timeouts: Timeouts | None = None, *, max_slots: int = 4, pause: float = 600.0
    ) -> None:
        self.timeouts = timeouts or Timeouts()
        self.max_slots = max_slots
        """The most slots believed of one node, whatever it advertises."""
        self.reputation = Reputation(pause)
        """Which nodes rest, after failing jobs that others could run."""
        self._queues: OrderedDict[str, deque[str]] = OrderedDict()
        self._jobs: dict[str, _Job] = {}
        self._nodes: dict[str, _Node] = {}
        self._open: dict[str, int] = {}
        self._priority: dict[str, int] = {}
        # Jobs served so far in the current turn of a client with priority.
        self._turns: dict[str, int] = {}
        # Queued jobs no connected, non-draining node could run (paused ones count as able:
        # they rest a while, they have not left). Kept up to date as jobs and nodes come and
        # go, so admission asks for its size, not for a walk through the queue.
        self._unservable: set[str] = set()

    # ---- questions -------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Jobs waiting for a node."""
        return sum(len(q) for q in self._queues.values())

    @property
    def running(self) -> int:
        """Jobs on a node now."""
        return len(self._jobs) - self.queued

    @property
    def unservable(self) -> int:
        """Queued jobs that no connected, non-draining node could run, however idle."""
        return len(self._unservable)

    def unfit(self, job: JobTicket) -> tuple[str, str] | None:
        """Why no connected, non-draining node could run `job` (which need not be queued),
        and what its owner could change (`relay.dispatch.unfit`); None if one could."""
        return unfit(job, self._serving())

    def open_jobs(self, client: str) -> int:
        """Queued plus running jobs of one client."""
        return self._open.get(client, 0)

    def priority(self, client: str) -> int:
        """Extra jobs `client` is served per turn (0 for all but API keys)."""
        return self._priority.get(client, 0)

    def set_priority(self, client: str, priority: int) -> None:
        """Serve `client` up to 1 + `priority` jobs per round-robin turn (0: one, as all)."""
        if priority > 0:
            self._priority[client] = priority
        else:
            self._priority.pop(client, None)

    def room(self) -> list[tuple[NodeInfo, int]]:
        """The nodes taking jobs that have free slots, and how many (a node on probation
        counts one slot), once the queued jobs are placed: what a cluster replica may
        claim from the shared queue (`relay.cluster.service`)."""
        if self.queued:
            return []
        trusting = self._trusting()
        free = ((n.info, self._free(n, trusting)) for _, n in sorted(self._nodes.items()))
        return [(info, slots) for info, slots in free if slots > 0]

    def nodes(self) -> list[NodeView]:
        """Every connected node, by name."""
        views = []
        for name, n in sorted(self._nodes.items()):
            until, reason = self.reputation.pause_of(name) or (None, None)
            views.append(
                NodeView(
                    n.info,
                    frozenset(n.jobs),
                    n.jobs_done,
                    n.draining,
                    until,
                    reason,
                    self.reputation.proven(name),
                )
            )
        return views

    def lease_of(self, job_id: str) -> tuple[str, str] | None:
        """(node, lease) of a running job, or None."""
        entry = self._jobs.get(job_id)
        if entry is None or entry.lease is None:
            return None
        return entry.lease.node, entry.lease.id

    def not_before(self, job_id: str) -> float:
        """When a queued job may be offered again after the relay's store failed it
        (`not_stored`); 0.0 if at once or unknown."""
        entry = self._jobs.get(job_id)
        return entry.not_before if entry is not None else 0.0

    def is_current(self, node: str, job_id: str, lease: str) -> bool:
        """Whether `lease` is the live assignment of `job_id` to `node`."""
        return self.lease_of(job_id) == (node, lease)

    def position(self, job_id: str) -> int | None:
        """1-based place in the fair order if no node were picky, or None if not queued."""
        entry = self._jobs.get(job_id)
        if entry is None or entry.lease is not None:
            return None
        client = entry.spec.client
        index = self._queues[client].index(job_id)
        ahead, earlier = 0, True
        for other, queue in self._queues.items():
            if other == client:
                ahead += index
                earlier = False
            else:
                # Round-robin: clients before ours in the rotation get one more turn first.
                ahead += min(len(queue), index + 1 if earlier else index)
        return ahead + 1

    def ahead(self, job_id: str) -> list[str]:
        """The queued jobs before `job_id` in the fair order (as `position` counts them)."""
        entry = self._jobs.get(job_id)
        if entry is None or entry.lease is not None:
            return []
        client = entry.spec.client
        index = self._queues[client].index(job_id)
        out: list[str] = []
        earlier = True
        for other, queue in self._queues.items():
            if other == client:
                out += list(queue)[:index]
                earlier = False
            else:
                out += list(queue)[: index + 1 if earlier else index]
        return out

    def why_waiting(self, job_id: str) -> str | None:
        """Why no node has taken this queued job, in words; None if it is not queued."""
        entry = self._jobs.get(job_id)
        if entry is None or entry.lease is not None:
            return None
        infos = [n.info for n in self._nodes.values() if self._takes_jobs(n)]
        if not infos and any(self.reputation.paused(name) for name in self._nodes):
            return "Every connected node is paused after repeated failures; it waits."
        return why_waiting(entry.spec, infos, entry.declined_by)

    # ---- events ----------------------------------------------------------------------

    def submit(
        self, job: JobTicket, now: float, attempts: int = 0, waited: float = 0.0
    ) -> list[Action]:
        """A new (or recovered) job joins the back of its client's queue; one recovered
        after it has `waited` its whole allowance fails at once."""
        if job.id in self._jobs:
            raise ValueError(f"job {job.id} is already scheduled")
        wait_until = now + self.timeouts.queue - waited
        if now >= wait_until:
            infos = [n.info for n in self._nodes.values() if not n.draining]
            why = why_waiting(job, infos, {})
            return [Failed(job.id, waited_too_long(self.timeouts.queue, why))]
        self._jobs[job.id] = _Job(job, wait_until, attempts, queued_since=now - waited)
        self._queues.setdefault(job.client, deque()).append(job.id)
        self._note_servable(job)
        self._open[job.client] = self._open.get(job.client, 0) + 1
        return self._dispatch(now)

    def node_up(self, info: NodeInfo, now: float) -> list[Action]:
        """A node connected (a node of the same name connected before is replaced)."""
        actions: list[Action] = []
        if info.name in self._nodes:
            actions += self.node_down(info.name, now, f"node {info.name} reconnected")
        # Believed up to the cap: slots are only a claim, and the relay spreads by them.
        slots = max(1, min(info.slots, self.max_slots))
        self._nodes[info.name] = _Node(replace(info, slots=slots))
        self._unservable = {j for j in self._unservable if not fits(info, self._jobs[j].spec)}
        return actions + self._dispatch(now)

    def node_draining(self, name: str) -> None:
        """A node is leaving: it keeps its running jobs but gets no new ones."""
        node = self._nodes.get(name)
        if node is not None:
            node.draining = True
            self._count_unservable()

    def node_down(
        self, name: str, now: float, reason: str | None = None, *, deliberate: bool = False
    ) -> list[Action]:
        """A node is gone: its jobs go back to the queue (or fail after too many tries).

        `deliberate`: it said Bye (its owner stopped it), so its running jobs were handed
        back, not lost to a crash: that does not use up one of the jobs' attempts.
        """
        node = self._nodes.pop(name, None)
        if node is None:
            return []
        self._count_unservable()
        actions: list[Action] = []
        for job_id in sorted(node.jobs):
            why = reason or f"node {name} was lost"
            actions += self._end_lease(job_id, why, now, handed_back=deliberate)
        return actions + self._dispatch(now)

    def hold_live(self, name: str, share: float) -> bool:
        """Take a free slot of node `name` for a live session, if it is not draining and
        live sessions there hold fewer than `share` of its slots; False if not (the rest
        stay for queued jobs)."""
        node = self._nodes.get(name)
        if node is None or node.draining or self._free(node, self._trusting()) < 1:
            return False
        if node.live + 1 > int(node.info.slots * share):
            return False
        node.live += 1
        return True

    def release_live(self, name: str, now: float) -> list[Action]:
        """A live session let go of its slot on node `name`: queued jobs may take it."""
        node = self._nodes.get(name)
        if node is None or node.live < 1:
            return []
        node.live -= 1
        return self._dispatch(now)

    def progress(self, node: str, job_id: str, lease: str, now: float) -> bool:
        """The node reports progress; True if it counts (the lease is current)."""
        if not self.is_current(node, job_id, lease):
            return False
        entry = self._jobs[job_id]
        assert entry.lease is not None
        entry.lease.silent_until = now + self.timeouts.stall_limit(entry.spec)
        return True

    def finished(self, node: str, job_id: str, lease: str, now: float) -> list[Action]:
        """The current lease delivered its result: the job leaves, the slot frees up."""
        if not self.is_current(node, job_id, lease):
            raise ValueError(f"lease {lease} of job {job_id} on {node} is not current")
        self._nodes[node].jobs_done += 1
        self._forget(job_id)
        # A success here is the comparison that may show other nodes' failures are theirs.
        actions: list[Action] = [*self.reputation.done(node, now)]
        return actions + self._dispatch(now)

    def failed(
        self,
        node: str,
        job_id: str,
        lease: str,
        now: float,
        *,
        reason: str,
        retry: bool,
        blame: bool = True,
    ) -> list[Action]:
        """The node could not run the job: retry elsewhere, or fail it if `retry` is False.

        Not retryable fails the job only if no other connected node that could run it is
        left to ask: one node's word that the input is bad is checked against another's.
        `blame`: False when the relay itself failed the lease (the node is not at fault).
        """
        if not self.is_current(node, job_id, lease):
            return []
        entry = self._jobs[job_id]
        faults: list[Action] = []
        if blame:
            entry.failed_on.add(node)
            faults += self.reputation.fault(node, now, reason)
            if not retry and self._second_opinion(entry):
                entry.declined_by[node] = reason
                retry = True
        if retry:
            return faults + self._end_lease(job_id, reason, now) + self._dispatch(now)
        self._forget(job_id)
        return [*faults, Failed(job_id, reason), *self._dispatch(now)]

    def fault(self, node: str, now: float, reason: str) -> list[Action]:
        """The node misbehaved without ending a lease (an unusable preview, say)."""
        if node not in self._nodes:
            return []
        return [*self.reputation.fault(node, now, reason)]

    def declined(
        self, node: str, job_id: str, lease: str, reason: str, now: float, *, busy: bool = False
    ) -> list[Action]:
        """The node refused the offer: not an attempt, and never offered this job again,
        unless it was only `busy` (then its slot rests a moment and it may get it later)."""
        if not self.is_current(node, job_id, lease):
            return []
        entry = self._jobs[job_id]
        if busy:
            self._stopping(node, lease, now, self.timeouts.busy_pause)
        else:
            entry.declined_by[node] = reason
        self._release(job_id, now)
        self._requeue_front(entry)
        actions: list[Action] = [OfferDeclined(node, job_id, reason), *self._dispatch(now)]
        if entry.lease is None and entry.refused_since is None and self._refused(entry):
            entry.refused_since = now
        return actions

    def not_stored(
        self, node: str, job_id: str, lease: str, reason: str, now: float
    ) -> list[Action]:
        """The relay's store failed the job (it could not store the delivered result, its
        disk full; or read the job's images, a shared store unreachable): the node was not
        at fault, so the job goes back to the front without using up an attempt."""
        if not self.is_current(node, job_id, lease):
            return []
        entry = self._jobs[job_id]
        self._release(job_id, now)
        self._requeue_front(entry)
        # Running it again at once would only burn a node's time on a result the disk cannot
        # take either (or fail again to read); the tick offers it again after the pause.
        entry.not_before = now + self.timeouts.not_stored_pause
        return [Requeued(job_id, entry.attempts, reason), *self._dispatch(now)]

    def cancel(self, job_id: str, now: float) -> list[Action] | None:
        """Take a job away: dequeue it, or tell its node to stop. None if not scheduled."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        lease = entry.lease
        if lease is not None:
            self._stopping(lease.node, lease.id, now)
        self._forget(job_id)
        if lease is None:
            return []
        return [SendCancel(lease.node, job_id, lease.id), *self._dispatch(now)]

    def lease_closed(self, node: str, lease: str, now: float) -> list[Action]:
        """The node ended a lease it was told to stop (a late result, a failure, a decline):
        its slot is free again."""
        entry = self._nodes.get(node)
        if entry is None or entry.stopping.pop(lease, None) is None:
            return []
        return self._dispatch(now)

    def _stopping(self, node: str, lease: str, now: float, grace: float | None = None) -> None:
        entry = self._nodes.get(node)
        if entry is not None:
            entry.stopping[lease] = now + (self.timeouts.stop_grace if grace is None else grace)

    def tick(self, now: float) -> list[Action]:
        """Check the clock: end leases that went silent or ran past their deadline, and
        fail queued jobs that have waited too long."""
        actions: list[Action] = []
        for job_id, entry in list(self._jobs.items()):
            lease = entry.lease
            if lease is None:
                if now > entry.wait_until:
                    reason = waited_too_long(self.timeouts.queue, self.why_waiting(job_id))
                    self._forget(job_id)
                    actions.append(Failed(job_id, reason))
                elif entry.declined_by:
                    actions += self._check_refused(entry, now)
                continue
            if now > lease.silent_until:
                limit = self.timeouts.stall_limit(entry.spec)
                reason = f"node {lease.node} showed no progress for {limit:.0f} s"
            elif now > lease.deadline:
                limit = lease.deadline - lease.started
                reason = f"node {lease.node} did not finish within {limit:.0f} s"
            else:
                continue
            actions.append(SendCancel(lease.node, job_id, lease.id))
            self._stopping(lease.node, lease.id, now)
            entry.failed_on.add(lease.node)
            actions += self.reputation.stalled(lease.node, now, reason)
            actions += self._end_lease(job_id, reason, now)
        freed = self.reputation.wake(now)
        for node in self._nodes.values():
            # A node that never confirms a stop gets its slot back after a grace period.
            expired = [lease for lease, until in node.stopping.items() if now > until]
            for lease_id in expired:
                del node.stopping[lease_id]
            freed = freed or bool(expired)
        queued = [e for e in self._jobs.values() if e.lease is None]
        due = any(0 < e.not_before <= now for e in queued)
        if not due and any(now - e.queued_since >= self.timeouts.probation_wait for e in queued):
            # A job has waited long enough for a proven node: one on probation may take it.
            trusting = self._trusting()
            due = any(
                self._on_probation(n, trusting)
                for n in self._nodes.values()
                if self._free(n, trusting)
            )
        if actions or freed or due:
            actions += self._dispatch(now)
        return actions

    def styles_gone(self, styles: set[str]) -> list[Action]:
        """The relay forgot these fast styles (no connected node has them, and they left
        its recent set): queued jobs that need one fail, saying which."""
        actions: list[Action] = []
        for job_id, entry in list(self._jobs.items()):
            missing = entry.spec.fast_styles & styles
            if entry.lease is None and missing:
                self._forget(job_id)
                actions.append(Failed(job_id, style_gone(sorted(missing))))
        return actions

    # ---- inside ----------------------------------------------------------------------

    def _fitting(self, entry: _Job) -> list[NodeInfo]:
        """Connected, non-draining nodes that could run the job (resting ones count)."""
        return [n.info for n in self._nodes.values() if not n.draining and fits(n.info, entry.spec)]

    def _refused(self, entry: _Job) -> bool:
        """Whether some connected node fits the job and every such node declined it."""
        fitting = self._fitting(entry)
        return bool(fitting) and all(i.name in entry.declined_by for i in fitting)

    def _check_refused(self, entry: _Job, now: float) -> list[Action]:
        """Fail a queued job refused by every fitting node for `unservable_after`."""
        if not self._refused(entry):
            entry.refused_since = None
            return []
        if entry.refused_since is None:
            entry.refused_since = now
            return []
        if now - entry.refused_since <= self.timeouts.unservable_after:
            return []
        why = why_waiting(entry.spec, self._fitting(entry), entry.declined_by)
        self._forget(entry.spec.id)
        reason = declined_too_long(self.timeouts.unservable_after, why or "Every node declined.")
        return [Failed(entry.spec.id, reason)]

    def _end_lease(
        self, job_id: str, reason: str, now: float, *, handed_back: bool = False
    ) -> list[Action]:
        entry = self._jobs[job_id]
        if handed_back and entry.handbacks < self.timeouts.free_handbacks:
            entry.handbacks += 1
        else:
            entry.attempts += 1
            if entry.attempts >= self.timeouts.max_attempts:
                self._forget(job_id)
                why = f"Gave up after {entry.attempts} attempts; last: {reason}."
                return [Failed(job_id, why, entry.attempts)]
        self._release(job_id, now)
        self._requeue_front(entry)
        return [Requeued(job_id, entry.attempts, reason)]

    def _release(self, job_id: str, now: float) -> None:
        entry = self._jobs[job_id]
        if entry.lease is not None:
            entry.wait_until += now - entry.lease.started
            entry.queued_since = now
            node = self._nodes.get(entry.lease.node)
            if node is not None:
                node.jobs.discard(job_id)
            entry.lease = None

    def _requeue_front(self, entry: _Job) -> None:
        client = entry.spec.client
        queue = self._queues.get(client)
        if queue is None:
            queue = self._queues[client] = deque()
            # It waited longest: its client gets the next turn.
            self._queues.move_to_end(client, last=False)
        queue.appendleft(entry.spec.id)
        self._note_servable(entry.spec)

    def _forget(self, job_id: str) -> None:
        entry = self._jobs.pop(job_id)
        self._unservable.discard(job_id)
        if entry.lease is not None:
            node = self._nodes.get(entry.lease.node)
            if node is not None:
                node.jobs.discard(job_id)
        else:
            queue = self._queues[entry.spec.client]
            queue.remove(job_id)
            if not queue:
                del self._queues[entry.spec.client]
                self._turns.pop(entry.spec.client, None)
        client = entry.spec.client
        self._open[client] -= 1
        if not self._open[client]:
            del self._open[client]

    def _serving(self) -> list[NodeInfo]:
        return [n.info for n in self._nodes.values() if not n.draining]

    def _note_servable(self, job: JobTicket) -> None:
        """Count a job that has just joined the queue if no serving node fits it."""
        if not any(fits(info, job) for info in self._serving()):
            self._unservable.add(job.id)

    def _count_unservable(self) -> None:
        """Count again after a node left or began to drain (O(queue x nodes); rare)."""
        serving = self._serving()
        self._unservable = {
            job_id
            for job_id, entry in self._jobs.items()
            if entry.lease is None and not any(fits(info, entry.spec) for info in serving)
        }

    # ---- distrust --------------------------------------------------------------------

    def _takes_jobs(self, node: _Node) -> bool:
        # A draining node finishes what it has and takes nothing new; a paused one rests.
        return not node.draining and not self.reputation.paused(node.info.name)

    def _trusting(self) -> bool:
        """Whether some node taking jobs has proven itself (else nobody is on probation)."""
        return any(
            self.reputation.proven(n.info.name) and self._takes_jobs(n)
            for n in self._nodes.values()
        )

    def _on_probation(self, node: _Node, trusting: bool) -> bool:
        return trusting and not self.reputation.proven(node.info.name)

    def _free(self, node: _Node, trusting: bool) -> int:
        if not self._takes_jobs(node):
            return 0
        # On probation a node's claim counts for one slot, whatever it advertises.
        slots = 1 if self._on_probation(node, trusting) else node.info.slots
        return max(0, slots - node.busy)

    def _able(self, entry: _Job) -> list[_Node]:
        """Nodes that take jobs, could run this one and have not declined it."""
        return [
            n
            for n in self._nodes.values()
            if self._takes_jobs(n)
            and n.info.name not in entry.declined_by
            and fits(n.info, entry.spec)
        ]

    def _second_opinion(self, entry: _Job) -> bool:
        """Whether a connected node could run the job and has not failed it."""
        return any(n.info.name not in entry.failed_on for n in self._able(entry))

    def _pick_node(self, entry: _Job, now: float, trusting: bool) -> _Node | None:
        able = self._able(entry)
        # A node that failed this job gets it again only if no other could run it.
        fresh = [n for n in able if n.info.name not in entry.failed_on]
        candidates = fresh or able
        free = [n for n in candidates if self._free(n, trusting) > 0]
        trusted = [n for n in free if not self._on_probation(n, trusting)]
        if free and not trusted:
            # Only nodes on probation have room: they get the job if no proven node could
            # run it at all, or once it has waited long enough for the busy proven ones.
            proven_able = any(not self._on_probation(n, trusting) for n in candidates)
            if not proven_able or now - entry.queued_since >= self.timeouts.probation_wait:
                trusted = free
        if not trusted:
            return None
        # Least loaded first, whatever the slot counts; ties go to who started fewest.
        return min(trusted, key=lambda n: (n.busy / n.info.slots, n.started, n.info.name))

    def _dispatch(self, now: float) -> list[Action]:
        actions: list[Action] = []
        # Nobody's record changes while jobs are placed: whether one is proven holds.
        trusting = self._trusting()
        while any(self._free(n, trusting) > 0 for n in self._nodes.values()):
            offer = self._assign_one(now, trusting)
            if offer is None:
                break
            actions.append(offer)
        return actions

    def _assign_one(self, now: float, trusting: bool) -> SendOffer | None:
        for client, queue in self._queues.items():
            for job_id in queue:
                entry = self._jobs[job_id]
                if entry.not_before > now:
                    continue
                entry.not_before = 0.0
                node = self._pick_node(entry, now, trusting)
                if node is None:
                    continue
                queue.remove(job_id)
                served = self._turns.pop(client, 0) + 1
                if queue and served <= self._priority.get(client, 0):
                    # Priority: the client keeps its turn (stays first) for another job.
                    self._turns[client] = served
                elif queue:
                    self._queues.move_to_end(client)
                else:
                    del self._queues[client]
                # Random, so lease ids never repeat, not even across relay restarts.
                lease_id = secrets.token_hex(8)
                stall = self.timeouts.stall_limit(entry.spec)
                entry.lease = _Assignment(
                    lease_id,
                    node.info.name,
                    now,
                    silent_until=now + stall,
                    deadline=now + self.timeouts.run_limit(entry.spec),
                )
                entry.refused_since = None
                node.jobs.add(job_id)
                node.started += 1
                return SendOffer(node.info.name, job_id, lease_id)
        return None
