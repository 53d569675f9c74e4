"""`ClusterService`: the job service of one relay replica in cluster mode.

It is `relay.jobs.JobService` with the job records and the queue moved to PostgreSQL
(`relay.cluster.queue`) and the files to the shared store (`relay.cluster.blobs`):

- A new job is inserted into the shared queue (its 202 waits for the commit); nothing
  is kept in the replica's memory for it.
- The replica's own `Scheduler` places jobs on the nodes connected to it, as a single
  relay does, but only jobs it claimed: whenever those nodes have free slots
  (`Scheduler.room`: after every change, on a NOTIFY that work arrived, and every tick),
  it claims the next jobs in fair order that they can run.
- What the scheduler decides about a claimed job is written to its row, fenced by the
  claim's lease (`ClusterQueue.end`, `update`): a job its node lost, or one its node
  declined, goes back to the shared queue at once (front of its client's line), so a
  node of any replica may take it.
- Job events go to this replica's WebSockets and, through `relay.cluster.fanout`, to the
  others'; an ending is sent on only once its row is written, so a replica that reads
  the job on hearing of it reads the ending.
- A cancel sent to any replica ends the row; the replica whose node runs the job hears
  it on `CONTROL` and stops the node.
- `relay.cluster.member.Member` heartbeats, and the leader (one replica at a time)
  requeues the jobs of replicas that died (no attempt charged), fails jobs that waited too
  long, and deletes expired jobs and their files.
- While PostgreSQL is away: a POST answers 503 with Retry-After once a few seconds of
  retries did not reach it; ended jobs this replica wrote or read lately are still
  answered (views and results, `ENDED`); an ending or a hand-back waits until it can be
  written, however long. After a restart, the replica LISTENs and competes for the lead
  on new connections.

Shared through PostgreSQL besides: every replica's nodes, fast styles and the paces their
jobs showed (shown and offered everywhere, `relay.cluster.nodes`), node tokens and API
keys (`relay.cluster.credentials`), the public gallery (`relay.cluster.gallery`), e-mail
(sent by the leader), each client's new jobs a minute (`ClusterQueue.submit`). Kept per
replica (docs/scale-out.md): upload slots, per-client disk quotas, live camera sessions.
"""

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import replace
from typing import Any, TypeVar

from relay.blobs import no_space
from relay.cluster.blobs import StoreUnavailable, open_blobs, parse_blob_url
from relay.cluster.database import RETRY_FOR, DatabaseUnavailable
from relay.cluster.dispatcher import CHANNEL as WORK
from relay.cluster.fanout import Fanout
from relay.cluster.gallery import SharedGallery, migrate_gallery
from relay.cluster.member import Member, timeouts_of
from relay.cluster.nodes import NodeRegistry
from relay.cluster.queue import CONTROL, ClusterQueue, wall
from relay.cluster.records import migrate_records, record_from_json, record_json
from relay.config import Config
from relay.disk import Disk
from relay.dispatch import (
    Action,
    Failed,
    JobTicket,
    OfferDeclined,
    Requeued,
    SendCancel,
    SendOffer,
    fits,
    unfit,
)
from relay.errors import ApiError, InsufficientStorage, NotFound
from relay.events import FINAL_TYPES, Event, EventBus
from relay.jobs import JobService
from relay.mailer import EmailStatus, Mailer, MailSettings
from relay.model import JobRecord, JobState, Live, Order, fast_styles, ticket_of
from relay.ratelimits import Quota
from relay.views import node_views

log = logging.getLogger(__name__)
T = TypeVar("T")

ORPHAN_AFTER = 30.0
"""Seconds after its claim a row naming this replica but not held by it is an orphan."""
ORPHAN_TICKS = 10
"""Ticks between looks for orphaned claims (`_adopt_orphans`) and for cancels of held jobs
this replica did not hear (`_stop_cancelled`)."""
UNNAMED_FILES_AFTER = 3600.0
"""Seconds after it was written a file no job row names is deleted by the leader."""
STYLES_KEPT = 3600.0
"""Seconds a fast style stays known after the last node that offered it left."""
RECENT = 2000
"""Records of jobs this replica ended lately, kept for the node's last words on them (a
checkpoint sent as it stops) and for the views that follow an ending."""
ENDED = 2000
"""Records of ended jobs this replica wrote or read lately, answered from memory while
PostgreSQL is away (their results stay downloadable)."""


class _SharedBus(EventBus):
    """The replica's event bus, which also sends each event to the other replicas (an
    ending is sent by `ClusterService` once written, see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.fanout: Fanout | None = None

    def publish(self, job_id: str, event: Event) -> None:
        super().publish(job_id, event)
        if self.fanout is not None and event["type"] not in FINAL_TYPES:
            self.fanout.publish(job_id, dict(event))

    def deliver(self, job_id: str, event: Event) -> None:
        """An event from another replica: to this replica's subscribers only."""
        super().publish(job_id, event)


class ClusterService(JobService):
    """One replica's job service on the shared database and store (module docstring)."""

    def __init__(
        self,
        config: Config,
        clock: Callable[[], float],
        timer: Callable[[], float],
        *,
        pool: Any,
        listener: Any,
        leader: Any,
        replica: str,
        connect: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        super().__init__(config, clock, timer)
        assert config.blob_url is not None
        self.bus: _SharedBus = _SharedBus()
        self.shared = open_blobs(parse_blob_url(config.blob_url))
        """The files every replica reaches (a shared folder or an S3 bucket)."""
        self.blobs = self.shared  # type: ignore[assignment]
        self.disk = Disk(config, self.blobs, self.store)
        # E-mail goes out from the leader only (`_mail_round`), read from the job rows.
        settings = MailSettings.from_config(config)
        self.mailer = None
        self.sender = (
            Mailer(settings, self.blobs.read, self.metrics, record=self._mail_sent, clock=clock)
            if settings
            else None
        )
        self._mailing: set[str] = set()
        self._mail_task: asyncio.Task[None] | None = None
        self._sending: asyncio.Task[None] | None = None
        self._led = False
        self._ticks = 0
        self.replica = replica
        self.pool = pool
        self.listener = listener
        self.connect = connect
        """Makes a new connection (for LISTEN or the lead) when PostgreSQL restarted."""
        self.queue = ClusterQueue(pool, replica, timeouts_of(config))
        self.showcase.close()  # the one gallery is in PostgreSQL
        live, fetch = self.queue.live_files, self.queue.fetch
        self.showcase = SharedGallery(
            config, pool, self.blobs, self.decoder, clock, live=live, fetch=fetch
        )
        self.member = Member(
            pool, leader, replica, config, self._apply_shared, clock=wall, connect=connect
        )
        self.fanout = Fanout(pool, listener, replica, self._delivered)
        self._claims: dict[str, str] = {}
        """Lease of each job this replica claimed and holds."""
        self._claimed_for: dict[str, str | None] = {}
        """The node each claim was made for, until it is offered."""
        self._recent: OrderedDict[str, JobRecord] = OrderedDict()
        self._ended_leases: dict[str, str] = {}
        self._writing: dict[str, JobRecord] = {}
        """Jobs whose ending or hand-back is being written: what the row is about to say."""
        """The lease each job that ended here had (a cancelled job's last checkpoint)."""
        self._ended: OrderedDict[str, JobRecord] = OrderedDict()
        self._pulling: asyncio.Task[None] | None = None
        self._pull_again = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._offered: frozenset[str] = frozenset()
        self.registry = NodeRegistry(pool, replica)
        self._other_views: list[dict[str, Any]] = []
        self._places: dict[str, int | None] = {}
        self._relistening: asyncio.Task[None] | None = None
        self._styling: asyncio.Task[Any] | None = None

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Join the cluster (tables made if missing; `ReplicaMismatch` if the live replicas'
        limits differ), start the fan-out and listen for work and cancels."""
        await self.member.start()
        async with self.pool.acquire() as conn:
            await migrate_records(conn)
            await self.registry.migrate(conn)
            await migrate_gallery(conn)
        await self.fanout.start()
        self.bus.fanout = self.fanout
        await self._listen()
        if self.sender is not None:
            self._sending = asyncio.get_running_loop().create_task(self.sender.run())
        self._pull_soon()
        await self._load_styles(frozenset())

    async def _catch_up(self) -> None:
        """After a gap in listening: the jobs held here that were cancelled meanwhile stop,
        and the watched jobs of other replicas that ended meanwhile are told to their
        watchers now."""
        with contextlib.suppress(DatabaseUnavailable):  # the ticks look again anyway
            await self._stop_cancelled()
        for job_id in self.bus.watched():
            if job_id not in self._open:
                await self._deliver_end(job_id)

    async def _stop_cancelled(self) -> None:
        """Stop the jobs held here whose rows say they were cancelled, a cancel this
        replica did not hear on `CONTROL`: NOTIFY is not stored, so one sent while its
        listening connection was down is lost, and one heard just before its claim's
        answer finds no job here yet. (Its node would paint it to the end.)"""
        held = dict(self._claims)
        if not held:
            return
        for job_id in await self.queue.cancelled(held):
            if self._claims.get(job_id) == held[job_id] and job_id in self._open:
                log.info("job %s: cancelled through another replica; stopping it here", job_id)
                with contextlib.suppress(ApiError):
                    self.cancel(job_id)

    async def leave(self) -> None:
        """A clean stop: hand every claimed job back (no attempt charged), leave."""
        now = wall()
        for job_id, lease in list(self._claims.items()):
            job = self._open.get(job_id)
            attempts = job.attempts if job is not None else 0
            with contextlib.suppress(Exception):
                await self.queue.requeue(job_id, lease, attempts, now)
        self._claims.clear()
        self._claimed_for.clear()
        if self._sending is not None:
            self._sending.cancel()
        if self._tasks:
            # Writes that wait for the database wait no longer than a retry's window here.
            _, waiting = await asyncio.wait(set(self._tasks), timeout=RETRY_FOR)
            for task in waiting:
                task.cancel()
        await self.fanout.close()
        with contextlib.suppress(Exception):
            await self.member.stop()

    def recover(self) -> int:
        """Nothing to recover in memory: the shared queue survives any replica."""
        return 0

    # ---- questions -------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        """A job this replica holds or ended lately (the nodes' reports ask about those);
        `find` reads any job."""
        job = self._open.get(job_id) or self._writing.get(job_id) or self._recent.get(job_id)
        if job is None:
            raise NotFound("No such job. Its id is wrong, or the job and its result expired.")
        return job

    async def find(self, job_id: str) -> JobRecord:
        """Any job of the cluster, from the shared database (this replica's own open ones
        from memory: they are newer there). While the database is away, an ended job this
        replica wrote or read lately is answered from memory (`ENDED`); so is a job whose
        ending or hand-back this replica is still writing (read your own writes)."""
        job = self._open.get(job_id) or self._writing.get(job_id)
        if job is not None:
            return job
        kept = self._ended.get(job_id)
        try:
            # One try for a job known to have ended: its answer is at hand if that fails.
            found = await self.queue.fetch(job_id, 0.0 if kept is not None else None)
        except DatabaseUnavailable:
            if kept is None:
                raise
            return kept
        if found is None:
            self._ended.pop(job_id, None)
            raise NotFound("No such job. Its id is wrong, or the job and its result expired.")
        ended = self._recent.get(job_id)
        if ended is not None and ended.state.final and not found.state.final:
            return ended  # ended here, its row not yet written (its ending told already)
        if found.state is JobState.QUEUED:
            # Its place in the shared queue, for the view that follows this read.
            self._places[job_id] = await self.queue.position(found)
            while len(self._places) > RECENT:
                del self._places[next(iter(self._places))]
        if found.state.final:
            self._keep_ended(found)
        return found

    def position_of(self, job: JobRecord) -> int | None:
        """A queued job's place: in this replica's line, or as last read from the shared
        queue (`find`)."""
        place = self._places.pop(job.id, None)
        if job.state is not JobState.QUEUED:
            return None
        local = self.scheduler.position(job.id)
        return local if local is not None else place

    async def preview_of(self, job: JobRecord) -> bytes | None:
        """The latest preview, from this replica's memory or the shared table."""
        local = await super().preview_of(job)
        if local is not None or job.state is not JobState.RUNNING:
            return local
        kept = await self.queue.preview(job.id)
        return kept[0] if kept is not None else None

    def check_admission(
        self, client: str, job: JobTicket | None = None, quota: Quota | None = None
    ) -> None:
        """The disk only: the open-jobs cap and the queue's capacity are checked across
        the cluster as the job is inserted (`ClusterQueue.submit`)."""
        self.disk.check(client, 0)

    # ---- admission -------------------------------------------------------------------

    async def submit(self, client: str, order: Order, quota: Quota | None = None) -> JobRecord:
        """As one relay's; but a client over its rate or at its cap across the cluster, a
        full queue, or a job no node could run when its share of the queue is taken, is
        refused before the images go to the shared store, where a refused job's files
        would stay, unnamed, for an hour (`UNNAMED_FILES_AFTER`)."""
        pixels = order.content.width * order.content.height
        ticket = JobTicket(
            "", client, order.method, order.epochs, pixels, fast_styles(order.styles)
        )
        await self.queue.check_room(
            client,
            wall(),
            unfit=unfit(ticket, self.hub.all_infos()),
            unservable=self.config.queue_unservable,
            **self._limits(quota),
        )
        return await super().submit(client, order, quota)

    def _put_all(self, images: list[bytes]) -> list[str]:
        """As one relay's; but a shared store that failed otherwise than for want of space
        answers 503 (try again), not 507 with the store's error (its address) in it."""
        try:
            return super()._put_all(images)
        except InsufficientStorage as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and not no_space(cause):
                raise StoreUnavailable(self.config.retry_after) from cause
            raise

    def _limits(self, quota: Quota | None) -> dict[str, Any]:
        """The limits a new job of a client (with an API key's `quota`) is admitted within."""
        cap = self.config.max_open_jobs
        if quota is not None and quota.max_open is not None:
            cap = quota.max_open
        return {
            "max_open": cap,
            "capacity": self.config.queue_capacity,
            "retry_after": self.config.retry_after,
            "per_minute": (quota and quota.per_minute) or self.config.rate_per_minute,
            "who": "your key" if quota is not None else "your address",
        }

    async def _admit(
        self, job: JobRecord, shas: list[str], unservable: bool, quota: Quota | None = None
    ) -> None:
        try:
            ticket = ticket_of(job)
            here = any(fits(info, ticket) for info, _ in self.scheduler.room())
            await self.queue.submit(
                job,
                wall(),
                per_day=quota.per_day if quota is not None else None,
                priority=self.scheduler.priority(job.client),  # set by `submit`
                unfit=unfit(ticket, self.hub.all_infos()),  # every replica's nodes
                unservable=self.config.queue_unservable,
                tell_others=not here,
                **self._limits(quota),
            )
        finally:
            self._adding[job.client] -= 1
            if not self._adding[job.client]:
                del self._adding[job.client]
            self._adding_unservable -= unservable
            self.blobs.release(shas)
        self._remember(job)
        log.info("job %s queued: %s %dx%d", job.id, job.method, job.width, job.height)
        self._pull_soon()

    # ---- claims ----------------------------------------------------------------------

    def _pull_soon(self) -> None:
        """Claim work for free slots soon (one claim at a time; a request meanwhile makes
        one more run after it)."""
        if self._pulling is not None and not self._pulling.done():
            self._pull_again = True
            return
        self._pulling = asyncio.get_running_loop().create_task(self._pull())

    async def _pull(self) -> None:
        while True:
            self._pull_again = False
            rooms = self.scheduler.room()
            if rooms:
                try:
                    claims = await self.queue.claim(rooms, wall())
                except Exception:
                    log.exception("could not claim work from the shared queue")
                    return
                for claim in claims:
                    job = claim.job
                    self._claims[job.id] = claim.lease
                    self._claimed_for[job.id] = job.node
                    self._open[job.id] = replace(job, state=JobState.QUEUED, node=None)
                    self.disk.usage.refer(job, self.blobs.size)
                    self.apply(self.scheduler.submit(ticket_of(job), self.timer(), job.attempts))
            if not self._pull_again:
                return

    def _on_work(self, _conn: Any, _pid: int, _channel: str, _payload: str) -> None:
        self._pull_soon()

    def _on_control(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        parts = payload.split()
        if len(parts) == 3 and parts[0] == "cancel" and parts[1] == self.replica:
            job_id = parts[2]
            if job_id in self._open:
                with contextlib.suppress(ApiError):
                    self.cancel(job_id)

    def tick(self) -> None:
        """Periodic: the scheduler's timeouts for this replica's nodes, a claim, the shared
        catalogue of fast styles and nodes, listening again if PostgreSQL restarted, and
        (the leader) e-mail."""
        super().tick()
        self._pull_soon()
        if self._styling is None or self._styling.done():  # not piling up while PG is away
            self._sync_styles()
        relistening = self._relistening is not None and not self._relistening.done()
        if self.listener.is_closed() and self.connect is not None and not relistening:
            self._relistening = asyncio.get_running_loop().create_task(self._relisten())
        self._ticks += 1
        if self._ticks % ORPHAN_TICKS == 0:
            self._write(self._adopt_orphans())
            self._write(self._stop_cancelled())
        if self.sender is not None and (self._mail_task is None or self._mail_task.done()):
            self._mail_task = asyncio.get_running_loop().create_task(self._mail_round())

    # ---- e-mail ----------------------------------------------------------------------

    def email_status(self, job: JobRecord) -> str | None:
        """pending / sent / failed / limited, as the job's row says (the leader sends)."""
        if job.email is None or self.sender is None:
            return None
        return job.email_status or ("pending" if not job.state.final else None)

    async def _mail_round(self) -> None:
        """The leader queues the e-mail of jobs that ended on any replica. On taking the
        lead, it first counts each address's messages of the last hour (the hourly cap
        holds whoever leads). A message being sent as the lead changes hands may go out
        twice; none is lost."""
        assert self.sender is not None
        leading = self.member.leader.leading
        if leading and not self._led:
            self.sender.resume([], await self.queue.mail_since(self.sender.since()))
        self._led = leading
        if not leading:
            self._mailing.clear()
            return
        for job in await self.queue.mail_waiting(self._mailing):
            self._mailing.add(job.id)
            self.sender.notify(job)

    def _mail_sent(self, job_id: str, status: EmailStatus) -> None:
        """The sender's word on a message (sent, failed, limited) goes to the job's row."""
        if status is EmailStatus.PENDING:
            return

        async def record() -> None:
            await self.queue.update(job_id, None, {"email_status": str(status)})
            # Only once the row no longer says pending: the next round would send it again.
            self._mailing.discard(job_id)

        self._write(record())

    async def _listen(self) -> None:
        await self.listener.add_listener(WORK, self._on_work)
        await self.listener.add_listener(CONTROL, self._on_control)

    async def _relisten(self) -> None:
        """LISTEN again on a new connection: work, cancels for this replica's nodes and
        the other replicas' job events (NOTIFYs sent meanwhile are lost: the tick claims
        anyway)."""
        assert self.connect is not None
        try:
            conn = await self.connect()
        except Exception as exc:
            log.warning("could not listen on PostgreSQL again yet: %s", exc)
            return
        old, self.listener = self.listener, conn
        try:
            await self._listen()
            await self.fanout.listen(conn)
        except Exception as exc:
            log.warning("could not listen on PostgreSQL again yet: %s", exc)
            self.listener = old  # closed: the next tick tries again
            with contextlib.suppress(Exception):
                await conn.close()
            return
        log.info("listening on PostgreSQL again")
        self._pull_soon()
        await self._catch_up()

    def _sync_styles(self) -> None:
        offered = frozenset().union(*(info.styles for info in self.hub.infos()))
        self._offered = offered
        self._styling = self._write(self._load_styles(offered))
        self._sync_nodes()

    def _sync_nodes(self) -> None:
        """Show this replica's nodes to the others, and theirs here (`relay.cluster.nodes`)."""
        views = {
            v["name"]: v
            for v in node_views(self.hub, self.scheduler.nodes(), self.timer(), self.kudos.work)
        }
        local = [(info, views[info.name]) for info in self.hub.infos() if info.name in views]

        learned = self.hub.learned()

        async def sync() -> None:
            others = await self.registry.sync(local, wall(), learned)
            for name, pace in self.registry.adopted.items():
                self.hub.adopt(name, pace)
            mine = {info.name for info, _ in local}
            self.hub.others = [o.info for o in others if o.info.name not in mine]
            self._other_views = [o.view for o in others if o.info.name not in mine]

        self._write(sync())

    def other_node_views(self) -> list[dict[str, Any]]:
        """The other replicas' nodes as they show them (`relay.cluster.nodes`)."""
        return list(self._other_views)

    async def _load_styles(self, offered: frozenset[str]) -> None:
        known = await self.queue.styles(offered, wall(), STYLES_KEPT)
        self.hub.remember_fast(frozenset(known))

    # ---- changes ---------------------------------------------------------------------

    async def cancel_now(self, job_id: str) -> JobRecord:
        """Cancel a job wherever it is: here, or in the shared queue (and on the replica
        that runs it, told on `CONTROL`)."""
        if job_id in self._open:
            return self.cancel(job_id)
        job = await self.find(job_id)
        if job.state.final:
            return self.cancel(job_id)  # the same 409 as a single relay's
        if await self.queue.cancel(job_id, wall()) is None:
            return await self.find(job_id)
        ended = await self.find(job_id)
        self._announce_end(ended)
        return ended

    async def delete_now(self, job_id: str) -> None:
        """Remove an ended job and its files at its owner's request."""
        job = await self.find(job_id)
        if not job.state.final:
            self.cancel(job_id)  # 409: cancel it first
        await self.queue.delete(job_id)
        self._recent.pop(job_id, None)
        self._ended.pop(job_id, None)
        await self.showcase.unshare(job_id)  # its item goes too, with the files it alone kept
        live = await self.queue.live_files()
        await asyncio.to_thread(self.blobs.discard, job.files(), live)

    def apply(self, actions: Iterable[Action]) -> None:
        """Carry out the scheduler's decisions about this replica's nodes (as a single
        relay does), then hand back to the shared queue the jobs they put back in line,
        and claim work for slots they freed."""
        actions = list(actions)
        super().apply(actions)
        if self._offered != frozenset().union(*(info.styles for info in self.hub.infos())):
            self._sync_styles()  # a node came or went here: the others learn its styles
        for action in actions:
            match action:
                case SendOffer(node, job_id, _):
                    claimed = self._open.get(job_id)
                    lease = self._claims.get(job_id)
                    # The claim named the node it was made for; another one here took it.
                    if claimed and lease and self._claimed_for.pop(job_id, None) != node:
                        fields = {"node": node, "started": claimed.started}
                        self._write(self.queue.update(job_id, lease, fields))
                case Requeued(job_id, _, _):
                    self._hand_back(job_id)
                case OfferDeclined(node, job_id, _):
                    self._hand_back(job_id, declined_by=node)
        self._pull_soon()

    def _hand_back(self, job_id: str, declined_by: str | None = None) -> None:
        """A claimed job the scheduler put back in line goes back to the shared queue
        (`declined_by`: the node that refused it, never offered it again)."""
        job = self._open.get(job_id)
        lease = self._claims.get(job_id)
        if job is None or lease is None or job.state is not JobState.QUEUED:
            return  # another node here took it at once (the same actions offered it)
        del self._claims[job_id]
        self._claimed_for.pop(job_id, None)
        # A pause the scheduler gave it (the store failed it) holds in the shared queue too:
        # every replica's claim would fail the same way at once.
        pause = max(0.0, self.scheduler.not_before(job_id) - self.timer())
        self.scheduler.cancel(job_id, self.timer())
        self._open.pop(job_id, None)
        self.live.pop(job_id, None)
        self.disk.usage.forget(job_id)
        attempts, now = job.attempts, wall()
        back = replace(job, state=JobState.QUEUED, node=None, started=None)
        self._writing[job_id] = back
        self._remember(back)

        async def give_back() -> None:
            try:
                await _until_written(
                    lambda: self.queue.requeue(
                        job_id, lease, attempts, now, declined_by=declined_by, pause=pause
                    )
                )
            finally:
                self._writing.pop(job_id, None)

        self._write(give_back())

    def _apply_shared(self, actions: list[Action]) -> Coroutine[Any, Any, None]:
        """The leader's decisions about jobs of no one replica (a dead replica's requeued,
        a queued job that waited too long): tell every replica's watchers."""

        async def tell() -> None:
            for action in actions:
                match action:
                    case Requeued(job_id, attempts, reason):
                        event = {"type": "queued", "requeued": reason, "attempts": attempts}
                        self.bus.publish(job_id, event)
                    case Failed(job_id, _, _):
                        job = await self.queue.fetch(job_id)
                        if job is not None:
                            self._announce_end(job)
                    case SendCancel():
                        pass  # the leader's tick only times out this replica's leases
            if actions:
                self._pull_soon()

        return tell()

    def _record_end(
        self, job: JobRecord, state: JobState, now: float, fields: dict[str, Any]
    ) -> None:
        """Write the ending to the job's row, fenced by this replica's claim; then tell the
        other replicas (a queued job, never claimed here, is ended only while queued)."""
        lease = self._claims.pop(job.id, None)
        self._claimed_for.pop(job.id, None)
        if self.sender is not None and job.email and state in (JobState.DONE, JobState.FAILED):
            fields = {**fields, "email_status": "pending"}  # for the leader to send
        done = replace(job, state=state, finished=now, **fields)
        self._remember(done)
        if lease is not None:
            # The row keeps it: the node's last word on a cancelled job is still welcome.
            self._ended_leases[job.id] = lease
            while len(self._ended_leases) > RECENT:
                del self._ended_leases[next(iter(self._ended_leases))]
        written = {"started": job.started, "node": job.node, **fields}

        self._writing[job.id] = done

        async def record() -> None:
            at = wall()
            try:
                ended = await _until_written(
                    lambda: self.queue.end(job.id, lease, str(state), at, written)
                )
            finally:
                self._writing.pop(job.id, None)
            if ended:
                self._keep_ended(done)
                self._send_end(done)
            else:
                log.warning("job %s: its ending (%s) came after its claim was lost", job.id, state)
                self._recent.pop(job.id, None)  # not how it ended: `find` reads the row

        self._write(record())

    def _announce_end(self, job: JobRecord) -> None:
        """An ending recorded by another replica or the leader: to this replica's watchers
        and the other replicas'."""
        if self.bus.watching(job.id):
            event: dict[str, Any] = {"type": str(job.state), "job": job, "live": None}
            if job.state is JobState.FAILED:
                event["error"] = job.error
            self.bus.deliver(job.id, event)
        self._send_end(job)

    def _send_end(self, job: JobRecord) -> None:
        # With the record: a replica that hears it need not read it back.
        event = {"type": str(job.state), "ended": True, "record": record_json(job)}
        self.fanout.publish(job.id, event)

    def _delivered(self, job_id: str, event: Event) -> None:
        """Another replica's event; an ending carries the job's record (its row written
        already), or, if too large to travel, is read from the database."""
        if event.get("ended") or event["type"] == "stale":
            if job_id not in self._open:
                self.live.pop(job_id, None)
            if not self.bus.watching(job_id):
                return
            try:
                job = record_from_json(event["record"])
            except (KeyError, TypeError, ValueError):
                self._write(self._deliver_end(job_id))
                return
            self._deliver_record(job)
            return
        if event["type"] == "started":
            self.live.setdefault(job_id, Live(str(event.get("node"))))
        elif event["type"] == "progress" and job_id in self.live and job_id not in self._open:
            live = self.live[job_id]
            live.epoch, live.epochs = event.get("epoch"), event.get("epochs")
        self.bus.deliver(job_id, event)

    async def _deliver_end(self, job_id: str) -> None:
        job = await self.queue.fetch(job_id)
        if job is not None and job.state.final:
            self._deliver_record(job)

    def _deliver_record(self, job: JobRecord) -> None:
        self._remember(job)
        event: dict[str, Any] = {"type": str(job.state), "job": job, "live": None}
        if job.state is JobState.FAILED:
            event["error"] = job.error
        self.bus.deliver(job.id, event)

    def previewed(self, job_id: str, jpeg: bytes) -> None:
        """Keep the preview here and in the shared table (any replica serves it)."""
        super().previewed(job_id, jpeg)
        self._write(self.queue.keep_preview(job_id, jpeg, self.live[job_id].previews))

    def update(self, job_id: str, *, persist: bool = True, **fields: Any) -> None:
        """Change a held job's fields in memory; persisted ones go to its row (fenced)."""
        job = self._open.get(job_id)
        if job is not None:
            self._open[job_id] = replace(job, **fields)
        elif (ended := self._recent.get(job_id)) is not None:
            # A job that ended here: its node's last checkpoint, sent as it stopped.
            self._recent[job_id] = replace(ended, **fields)
        lease = self._claims.get(job_id) or self._ended_leases.get(job_id)
        keep = {k: v for k, v in fields.items() if k in ("partial_file", "partial_epoch")}
        if persist and lease is not None and keep:
            self._write(_until_written(lambda: self.queue.update(job_id, lease, keep)))

    async def sweep(self) -> int:
        """The leader deletes expired jobs and their files (every replica is asked); every
        replica learns again what the shared store holds (the others' writes and deletions
        count against its disk cap)."""
        if not self.member.leader.leading:
            await asyncio.to_thread(self.shared.scan)
            return 0
        await self.showcase.sweep()
        now = self.clock()
        await self.queue.forget_full_buckets(now - 120.0)
        await self.queue.forget_old_days(now - 86400.0)
        await self.queue.forget_stale_previews()
        expired = await self.queue.expire(now - self.config.result_ttl)
        # Files no row names: those of expired jobs, and any a replica wrote that never
        # made it into a row (an upload refused after it was stored, a result that came
        # too late, a replica killed mid-submit), once old enough that no replica can
        # still be about to record them. (The same listing counts the store's bytes.)
        old = await asyncio.to_thread(self.shared.written_before, now - UNNAMED_FILES_AFTER)
        live = await self.queue.live_files()
        files = {sha for job in expired for sha in job.files()} | set(old)
        removed = await asyncio.to_thread(self.blobs.discard, sorted(files - live), live)
        if expired or removed:
            log.info("swept %d expired job(s), %d file(s)", len(expired), removed)
        return len(expired)

    async def checkpoint(self) -> None:
        """Nothing to fold: the records are PostgreSQL's."""

    # ---- inside ----------------------------------------------------------------------

    def _remember(self, job: JobRecord) -> None:
        known = self._recent.get(job.id)
        if known is not None and known.state.final and not job.state.final:
            return  # a fast node ended it here before its submit came back: keep the ending
        self._recent[job.id] = job
        self._recent.move_to_end(job.id)
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    async def _adopt_orphans(self) -> None:
        """Rows claimed for this replica that it does not hold (a claim whose answer was
        lost with the connection, a write given up) go back to the queue, free."""
        held = set(self._claims)
        for job_id, lease in await self.queue.orphans(held, wall() - ORPHAN_AFTER):
            if job_id not in self._claims:
                log.warning("job %s: claimed here but not held; back to the queue", job_id)
                await self.queue.requeue(job_id, lease, None, wall())

    def _keep_ended(self, job: JobRecord) -> None:
        self._ended[job.id] = job
        self._ended.move_to_end(job.id)
        while len(self._ended) > ENDED:
            self._ended.popitem(last=False)

    def _write(self, work: Coroutine[Any, Any, Any]) -> "asyncio.Task[Any]":
        """Run a database write in the background, logging a failure."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._written)
        return task

    def _written(self, task: "asyncio.Task[Any]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("a cluster write failed: %s", exc)


async def _until_written(write: Callable[[], Awaitable[T]]) -> T:
    """Run `write` again while the database is away, however long: an ending or a hand-back
    lost to an outage would leave its job running for good. (The write is fenced by its
    claim, so one that comes after the others took this replica for dead does nothing.)"""
    while True:
        try:
            return await write()
        except DatabaseUnavailable:
            log.warning("a cluster write waits for the database")
