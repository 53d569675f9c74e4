"""The relay's job service: admission, state, cancel, timeouts, expiry.

It ties the parts together: `JobStore` rows and `BlobStore` files, the `Scheduler`'s
decisions, and the `EventBus` that feeds WebSockets. It is the one owner of job state:
the HTTP API asks it, and what nodes report reaches it through `relay.reports`, as the
scheduler's actions (`apply`). Connected nodes and their outboxes are `relay.hub`'s registry
(`service.hub`), which knows nothing of jobs.
"""

import asyncio
import logging
import secrets
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from relay import estimates
from relay.blobs import BlobStore, no_space
from relay.checkpoints import resume_fields
from relay.config import Config
from relay.decoding import Decoder
from relay.disk import DISK_FULL, Disk
from relay.dispatch import (
    Action,
    Failed,
    JobTicket,
    NodePaused,
    OfferDeclined,
    Requeued,
    SendCancel,
    SendOffer,
    Timeouts,
    no_room_to_wait,
)
from relay.errors import (
    ApiError,
    Conflict,
    InsufficientStorage,
    NotFound,
    QueueFull,
    StoreError,
    TooManyRequests,
)
from relay.events import EventBus
from relay.handles import CancelJob, OfferJob, offer_for
from relay.hub import NodeHub
from relay.imagecheck import ImageChecker
from relay.kudos import WorkLedger
from relay.live import LiveSessions
from relay.logs import event as log_event
from relay.mailer import EmailStatus, Mailer, MailSettings
from relay.metrics import Gauges, Metrics
from relay.model import JobRecord, JobState, Live, Order, fast_styles, job_url, ticket_of
from relay.offload import off_loop
from relay.ratelimits import Quota, RateLimiter, SlidingWindow
from relay.scheduler import Scheduler
from relay.showcase import Gallery, Showcase
from relay.store import JobStore

log = logging.getLogger(__name__)


class JobService:
    """Everything the HTTP API asks of jobs, and the actions that follow from node events."""

    def __init__(
        self, config: Config, clock: Callable[[], float], timer: Callable[[], float]
    ) -> None:
        self.config = config
        self.clock = clock
        """Wall time: what records say (created, started, finished) and what expires them."""
        self.timer = timer
        """Monotonic time: leases, heartbeats and rate limits, untouched by clock changes."""
        self.store = JobStore(config.data_dir / "jobs.sqlite3")
        self.blobs = BlobStore(config.data_dir / "files")
        self.disk = Disk(config, self.blobs, self.store)
        self.bus = EventBus()
        self.scheduler = Scheduler(
            Timeouts(
                config.stall_timeout,
                config.epoch_budget,
                queue=config.queue_timeout,
                unservable_after=config.unservable_after,
            ),
            max_slots=config.max_node_slots,
            pause=config.node_pause,
        )
        self.limiter = RateLimiter(config.rate_per_minute, timer)
        self.daily = SlidingWindow(0, 86400.0)
        """New jobs a day of API keys that set a count (`relay.ratelimits.Quota.per_day`)."""
        self.live: dict[str, Live] = {}
        self.hub = NodeHub(clock, timer)
        """Connected nodes and their outboxes."""
        self._offering: set[asyncio.Task[None]] = set()
        self.live_sessions = LiveSessions(self)
        """Live sessions: cameras painted frame by frame (`relay.live`)."""
        self.kudos = WorkLedger()
        """Work each node did recently: priority for API keys linked to it."""
        self.metrics = Metrics()
        self.decoder = Decoder(config.decode_workers)
        """Threads that decode images (uploads, node results): see `relay.decoding`."""
        self.images = ImageChecker(self.decoder)
        """Checks the images nodes send, on the decoder's threads."""
        settings = MailSettings.from_config(config)
        self.mailer = (
            Mailer(settings, self.blobs.read, self.metrics, record=self._record_email, clock=clock)
            if settings
            else None
        )
        self.showcase: Gallery = Showcase(config, self.blobs, self.disk.usage, self.decoder, clock)
        """The public gallery of results people shared."""
        self._positions: dict[str, tuple[int, str | None]] = {}
        """The place and the waiting reason each watched queued job was last told."""
        # Queued and running jobs, also kept here: nodes and pages ask about them often.
        self._open: dict[str, JobRecord] = {}
        # Jobs being written to the database, by client: admitted, not yet queued.
        self._adding: Counter[str] = Counter()
        # Of those, how many no connected node could run when they were admitted.
        self._adding_unservable = 0

    # ---- lifecycle -------------------------------------------------------------------

    def recover(self) -> int:
        """Put every job that was queued or running before a restart back in the queue;
        those that have waited longer than `queue_timeout` since they were made, or that
        are above caps lowered since (`max_epochs`, `max_size`, `max_pixels`), fail."""
        # Mail first: a job failed below queues its own message, which must not be resumed.
        if self.mailer is not None:
            unsent = self.store.unsent_mail()
            self.mailer.resume(unsent, self.store.mail_since(self.mailer.since()))
            if unsent:
                log.info("%d e-mail(s) still to send from before the restart", len(unsent))
        jobs = self.store.recover()
        now, wall = self.timer(), self.clock()
        for stored in self.store.all():
            self.disk.usage.refer(stored, self.blobs.size)
            self.kudos.credit(stored)
            # An API key's jobs of the last day still count against its daily quota (those
            # older than --result-ttl are gone from the store, and so not counted).
            age = wall - stored.created
            if stored.client.startswith("key:") and 0 <= age < self.daily.window:
                self.daily.add(stored.client, now - age)
        for job in jobs:
            self._open[job.id] = job
            over = self._over_caps(job)
            if over is not None:
                self._finish(job, JobState.FAILED, error=over)
                continue
            # Admitted when a node had them: its styles stay known while it waits.
            self.hub.remember_fast(fast_styles(job.styles))
            # The store does not know how long the job ran, so all its age counts.
            waited = max(0.0, wall - job.created)
            self.apply(self.scheduler.submit(ticket_of(job), now, job.attempts, waited))
        if jobs:
            log.info("recovered %d queued job(s) from %s", len(jobs), self.config.data_dir)
        return len(jobs)

    def _over_caps(self, job: JobRecord) -> str | None:
        """Why a recovered job is above this relay's caps (lowered since it was queued), or
        None: such a job could never be offered again."""
        config, side = self.config, max(job.width, job.height)
        lowered = "lowered since the job was queued"
        if job.epochs > config.max_epochs:
            return (
                f"{job.epochs} epochs is above this relay's cap of {config.max_epochs} "
                f"(max_epochs), {lowered}."
            )
        if side > config.max_size:
            return (
                f"The job's {side}-pixel size is above this relay's cap of {config.max_size} "
                f"pixels (max_size), {lowered}."
            )
        if job.pixels > config.max_pixels:
            return (
                f"The job's {job.pixels:,} pixels are above this relay's cap of "
                f"{config.max_pixels:,} (max_pixels), {lowered}."
            )
        return None

    def close(self) -> None:
        """Close the databases and stop the decoding threads."""
        self.showcase.close()
        self.store.close()
        self.decoder.close()

    # ---- admission -------------------------------------------------------------------

    def check_admission(
        self, client: str, job: JobTicket | None = None, quota: Quota | None = None
    ) -> None:
        """Refuse early when this client may not add a job now (429), the queue is full
        (503) or the disk is (507); and, given the `job`, when no connected node could run
        it and such jobs already fill their share of the queue (503). An API key's `quota`
        sets the client's own cap on open jobs."""
        cap = self.config.max_open_jobs
        if quota is not None and quota.max_open is not None:
            cap = quota.max_open
        if self.scheduler.open_jobs(client) + self._adding[client] >= cap:
            raise TooManyRequests(
                f"You already have {cap} jobs queued or running; "
                "wait for one to finish or cancel one."
            )
        if self.scheduler.queued + self._adding.total() >= self.config.queue_capacity:
            raise QueueFull(
                f"The queue is full ({self.config.queue_capacity} jobs waiting); "
                f"try again in {self.config.retry_after} s.",
                self.config.retry_after,
            )
        if job is not None:
            self._check_unservable_share(job)
        self.disk.check(client, 0)

    def _check_unservable_share(self, job: JobTicket) -> None:
        """503 when no connected node could run `job` and `--queue-unservable` such jobs
        already wait: a flood of them cannot fill the queue that the nodes' jobs need."""
        waiting = self.scheduler.unservable + self._adding_unservable
        if waiting < self.config.queue_unservable:
            return
        unfit = self.scheduler.unfit(job)
        if unfit is not None:
            raise QueueFull(no_room_to_wait(*unfit, waiting), self.config.retry_after)

    def check_rate(self, client: str, quota: Quota | None = None) -> None:
        """Take one new-job token for this client, or refuse with 429; an API key's
        `quota` sets its own rate a minute and may set a count a day."""
        per_minute = quota.per_minute if quota is not None else None
        wait = self.limiter.allow(client, per_minute)
        if wait > 0:
            seconds = max(1, round(wait))
            who = "your key" if quota is not None else "your address"
            raise TooManyRequests(
                f"Too many new jobs from {who} (limit "
                f"{per_minute or self.config.rate_per_minute} a minute); "
                f"try again in {seconds} s.",
                {"Retry-After": str(seconds)},
            )
        per_day = quota.per_day if quota is not None else None
        if per_day is not None and not self.daily.take(client, self.timer(), per_day):
            raise TooManyRequests(
                f"Your key's {per_day} jobs a day are used up; try again in a few hours.",
                {"Retry-After": "3600"},
            )

    async def submit(self, client: str, order: Order, quota: Quota | None = None) -> JobRecord:
        """Store a checked order's images and row, and queue it (only once it is stored);
        an API key's `quota` sets the client's cap and its priority in the queue."""
        images = [order.content.png, *(s.png for s in order.style_images)]
        size = sum(len(data) for data in images)
        pixels = order.content.width * order.content.height
        ticket = JobTicket(
            "", client, order.method, order.epochs, pixels, fast_styles(order.styles)
        )
        self.check_admission(client, ticket, quota)
        self.disk.check(client, size)
        shas = await off_loop(size, self._put_all, images)
        try:
            self.disk.check_quota(client, shas)
            # The queue may have filled while the images were written.
            self.check_admission(client, ticket, quota)
        except ApiError:
            self.blobs.release(shas)
            raise
        unservable = self.scheduler.unfit(ticket) is not None
        job = JobRecord(
            id=secrets.token_urlsafe(16),
            client=client,
            method=order.method,
            styles=order.styles,
            style_files=tuple(shas[1:]),
            content_file=shas[0],
            width=order.content.width,
            height=order.content.height,
            epochs=order.epochs,
            params=order.params,
            email=order.email,
            filename=order.filename,
            created=self.clock(),
        )
        # Shielded: once its row is on the way, the job is queued even if the request is
        # cancelled meanwhile; it must not exist in the database alone.
        # Counted at once, not when the task below starts: admissions in between see it.
        if quota is not None:
            self.scheduler.set_priority(client, quota.priority + self.kudos.bonus(quota.node))
        self._adding[client] += 1
        self._adding_unservable += unservable
        await asyncio.shield(self._admit(job, shas, unservable, quota))
        if order.share:
            await self.showcase.want(job.id, order.share_style)
        return self.get(job.id)

    def _put_all(self, images: list[bytes]) -> list[str]:
        """Write (and hold) the images; 507 with none held if one cannot be written."""
        shas: list[str] = []
        try:
            for data in images:
                shas.append(self.blobs.put(data))
        except OSError as exc:
            self.blobs.release(shas)
            log.error("could not store a new job's images: %s", exc)
            if no_space(exc):
                raise InsufficientStorage(DISK_FULL) from exc
            raise InsufficientStorage(
                f"The relay could not store the images ({exc.strerror}); it cannot take "
                "new jobs now."
            ) from exc
        return shas

    async def _admit(
        self, job: JobRecord, shas: list[str], unservable: bool, quota: Quota | None = None
    ) -> None:
        """Write the job's row; then, and only then, it exists: counted, queued, offered.
        A row the database did not take means no job (507), not one in memory alone.
        `submit` counted it as being added (`unservable`: as one no node could run)."""
        try:
            await self.store.add(job)
            self._open[job.id] = job
            self.disk.usage.refer(job, self.blobs.size)
        except StoreError as exc:
            log.error("job %s refused: %s", job.id, exc)
            raise InsufficientStorage(DISK_FULL) from exc
        finally:
            self._adding[job.client] -= 1
            if not self._adding[job.client]:
                del self._adding[job.client]
            self._adding_unservable -= unservable
            self.blobs.release(shas)
        log_event(
            log,
            "job_queued",
            "job %s queued: %s %dx%d",
            job.id,
            job.method,
            job.width,
            job.height,
            job=job.id,
            method=job.method,
            pixels=job.pixels,
        )
        self.apply(self.scheduler.submit(ticket_of(job), self.timer()))

    # ---- questions -------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        """A job by id, or NotFound (404)."""
        job = self._open.get(job_id) or self.store.get(job_id)
        if job is None:
            raise NotFound("No such job. Its id is wrong, or the job and its result expired.")
        return job

    async def find(self, job_id: str) -> JobRecord:
        """A job by id, or NotFound (404): what the HTTP side asks (a cluster replica
        reads jobs that other replicas hold from the shared database)."""
        return self.get(job_id)

    async def cancel_now(self, job_id: str) -> JobRecord:
        """Cancel a job at a person's request (`cancel`; in a cluster, wherever it runs)."""
        return self.cancel(job_id)

    async def preview_of(self, job: JobRecord) -> bytes | None:
        """The latest preview JPEG of a running job, if its node sent one."""
        live = self.live.get(job.id)
        return live.preview if live is not None else None

    def position_of(self, job: JobRecord) -> int | None:
        """A queued job's place in line (1: next), or None."""
        return self.scheduler.position(job.id)

    def other_node_views(self) -> list[dict[str, Any]]:
        """Public views of nodes this relay does not hold (a cluster's other replicas')."""
        return []

    def starts_in(self, job_id: str) -> float | None:
        """Seconds until a queued job should start (relay/estimates.py), or None when it
        is not queued or no connected node that serves its method has a pace."""
        job = self._open.get(job_id)
        if job is None or job.state is not JobState.QUEUED:
            return None
        paces = self.hub.paces
        able = [
            i
            for i in self.hub.infos()
            if job.method in i.methods and job.method in paces.get(i.name, {})
        ]
        if not able:
            return None

        def seconds(node: str, other: JobRecord) -> float:
            pace = paces[node].get(other.method) or paces[node][job.method]
            return estimates.job_seconds(pace, other.method, other.epochs, other.pixels)

        names = {i.name for i in able}
        best = min(names, key=lambda n: seconds(n, job))
        now = self.clock()
        running = [
            seconds(o.node, o) - (now - (o.started or now))
            for o in self._open.values()
            if o.state is JobState.RUNNING and o.node in names
        ]
        ahead = [seconds(best, o) for i in self.scheduler.ahead(job_id) if (o := self._open.get(i))]
        return round(estimates.wait_seconds(running, ahead, sum(i.slots for i in able)), 1)

    def email_status(self, job: JobRecord) -> str | None:
        """pending / sent / failed / limited for a job with an address and a mailer, else None."""
        if job.email is None or self.mailer is None:
            return None
        if job.email_status is not None:
            return job.email_status
        return "pending" if not job.state.final else None

    def _record_email(self, job_id: str, status: EmailStatus) -> None:
        self.store.update(job_id, email_status=str(status))

    def oldest_queued(self) -> float | None:
        """Seconds the longest-waiting queued job has waited, or None."""
        created = [j.created for j in self._open.values() if j.state is JobState.QUEUED]
        return self.clock() - min(created) if created else None

    def gauges(self) -> Gauges:
        """The live numbers `/metrics` reads at scrape time."""
        by_state = {"queued": 0, "running": 0}
        for job in self._open.values():
            by_state[str(job.state)] = by_state.get(str(job.state), 0) + 1
        nodes = self.scheduler.nodes()
        return Gauges(
            jobs_by_state=by_state,
            queue_length=self.scheduler.queued,
            nodes_connected=len(nodes),
            node_slots=sum(n.info.slots for n in nodes),
            busy_slots=sum(len(n.jobs) for n in nodes),
            mail_queue=self.mailer.waiting if self.mailer else 0,
        )

    # ---- changes ---------------------------------------------------------------------

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job: dequeue it, or tell its node to stop."""
        job = self.get(job_id)
        if job.state.final:
            raise Conflict(f"The job has already ended ({job.state}); nothing to cancel.")
        actions = self.scheduler.cancel(job_id, self.timer()) or []
        self._finish(job, JobState.CANCELLED, error="Cancelled by request.")
        self.apply(actions)
        return self.get(job_id)

    async def delete_now(self, job_id: str) -> None:
        """Remove an ended job at its owner's request: the row, and at once every file of
        it that no other live job keeps (its photo, style uploads, preview and result).
        Conflict (409) while the job is queued or running: cancel it first."""
        job = self.get(job_id)
        if not job.state.final:
            raise Conflict(f"The job is {job.state}; cancel it before deleting it.")
        try:
            self.store.delete([job.id])
        except sqlite3.Error as exc:
            # Nothing is removed: files gone under a row that still names them would be a
            # job half there. The person can try again once the disk has room.
            log.error("could not delete job %s: %s", job.id, exc)
            raise InsufficientStorage(
                "The relay's disk is full, so the job could not be deleted now; "
                "try again in a while."
            ) from None
        self.disk.usage.forget(job.id)
        # "Delete now" means everything: a shared result leaves the gallery with it, and
        # the gallery's thumbnail goes with the other files.
        item = await self.showcase.unshare(job.id)
        files = [*job.files(), *(item.files() if item is not None else ())]
        removed = await asyncio.to_thread(self.blobs.discard, files, self.disk.usage)
        log_event(
            log, "job_deleted", "job %s deleted by request", job.id, job=job.id, files=removed
        )

    def tick(self) -> None:
        """Periodic: end leases that timed out, forget idle buckets (silent nodes are
        `relay.reports.NodeReports.check_silence`'s)."""
        self.apply(self.scheduler.tick(self.timer()))
        self.limiter.prune()
        if self.store.unsaved:  # changes a full disk refused: try again
            self.store.commit()

    async def sweep(self) -> int:
        """Delete finished jobs older than the result TTL, and every file no live job keeps
        (see `relay.disk`): inputs of cancelled and failed jobs go at the next sweep."""
        now = self.clock()
        expired = self.store.expired(now - self.config.result_ttl)
        try:
            self.store.delete(job.id for job in expired)
        except sqlite3.Error as exc:  # a full disk: still free what the files hold
            log.error("could not delete %d expired job(s): %s", len(expired), exc)
            expired = []
        for job in expired:
            self.disk.usage.forget(job.id)
            self.kudos.debit(job)
        await self.showcase.sweep()
        removed = await asyncio.to_thread(self.blobs.collect, self.disk.usage)
        if expired or removed:
            log.info("swept %d expired job(s), %d file(s)", len(expired), removed)
        return len(expired)

    async def checkpoint(self) -> None:
        """Periodic: fold the database's write-ahead log into it, off the loop."""
        await asyncio.to_thread(self.store.checkpoint)

    def apply(self, actions: Iterable[Action]) -> None:
        """Carry out the scheduler's decisions: store, tell subscribers, tell nodes."""
        now = self.clock()
        for action in actions:
            match action:
                case SendOffer(node, job_id, lease):
                    # Memory only: after a restart a running job is queued again anyway,
                    # so the row need not say "running"; one write fewer per job.
                    self.update(
                        job_id, persist=False, state=JobState.RUNNING, started=now, node=node
                    )
                    started = self._open.get(job_id)
                    if started is not None:
                        waited = now - started.created
                        self.metrics.job_started(started.method, waited)
                        log_event(
                            log,
                            "job_started",
                            "job %s started on node %s",
                            job_id,
                            node,
                            job=job_id,
                            node=node,
                            wait_ms=round(waited * 1000),
                        )
                    self.live[job_id] = Live(node)
                    self._positions.pop(job_id, None)
                    self.bus.publish(job_id, {"type": "started", "node": node})
                    self._send_offer(node, job_id, lease)
                case SendCancel(node, job_id, lease):
                    self.hub.send(node, CancelJob(job_id, lease))
                case OfferDeclined(node, job_id, reason):
                    self.live.pop(job_id, None)
                    # It never ran: the start the offer noted is taken back (an Accept is
                    # not waited for to note it, as the lease, its timers and the page's
                    # "running" begin at the offer; a decline is the one answer that says
                    # the node never began).
                    self.update(
                        job_id, persist=False, state=JobState.QUEUED, node=None, started=None
                    )
                case Requeued(job_id, attempts, reason):
                    log_event(
                        log,
                        "job_requeued",
                        "job %s requeued (attempt %d): %s",
                        job_id,
                        attempts,
                        reason,
                        level=logging.WARNING,
                        job=job_id,
                        attempt=attempts,
                    )
                    self.update(job_id, state=JobState.QUEUED, node=None, attempts=attempts)
                    self.live.pop(job_id, None)
                    position = self.scheduler.position(job_id)
                    waiting = self.scheduler.why_waiting(job_id)
                    if position is not None:
                        self._positions[job_id] = (position, waiting)
                    self.bus.publish(
                        job_id,
                        {
                            "type": "queued",
                            "position": position,
                            "reason": waiting,
                            "requeued": reason,
                            "attempts": attempts,
                            "starts_in": self.starts_in(job_id),
                        },
                    )
                case Failed(job_id, reason, attempts):
                    job = self._open.get(job_id)
                    if job is not None:
                        counted = {} if attempts is None else {"attempts": attempts}
                        self._finish(job, JobState.FAILED, error=reason, **counted)
                case NodePaused(node, seconds, reason):
                    log_event(
                        log,
                        "node_paused",
                        "node %s paused for %.0f s: %s",
                        node,
                        seconds,
                        reason,
                        level=logging.WARNING,
                        node=node,
                    )
        self._publish_positions()

    def progressed(
        self,
        node: str,
        job_id: str,
        lease: str,
        *,
        epoch: int,
        epochs: int,
        losses: dict[str, float],
    ) -> None:
        """A running job's node finished `epoch` of the `epochs` it plans (its lease checked
        by `relay.reports`): the lease lives on, watchers are told."""
        self.scheduler.progress(node, job_id, lease, self.timer())
        live = self.live[job_id]
        live.epoch, live.epochs, live.losses = epoch, epochs, losses
        event = {"type": "progress", "epoch": epoch, "epochs": epochs, "losses": losses}
        self.bus.publish(job_id, event)

    def previewed(self, job_id: str, jpeg: bytes) -> None:
        """A running job's node sent a preview (checked by `relay.reports`): the latest one
        is kept in memory, and watchers are told where to fetch it."""
        live = self.live[job_id]
        live.preview = jpeg
        live.previews += 1
        url = f"{job_url(job_id, '/preview')}?n={live.previews}"
        self.bus.publish(job_id, {"type": "preview", "url": url})

    def checkpointed(self, job_id: str, sha: str, epoch: int) -> bool:
        """Keep a checked, stored checkpoint (`relay.checkpoints`) as the job's latest,
        instead of the previous one; False if the job is gone."""
        try:
            old = self.get(job_id).partial_file
        except NotFound:  # deleted meanwhile
            return False
        self.update(job_id, partial_file=sha, partial_epoch=epoch)
        self.disk.usage.refer(self.get(job_id), self.blobs.size)
        if old is not None and old != sha:
            # The previous one is of no use now: free its space at once, not at the sweep.
            task = asyncio.get_running_loop().run_in_executor(
                None, self.blobs.discard, [old], self.disk.usage
            )
            task.add_done_callback(lambda done: done.exception())
        log.debug("job %s: checkpoint at epoch %d kept", job_id, epoch)
        return True

    def _send_offer(self, node: str, job_id: str, lease: str) -> None:
        """Read the job's images off the loop, then put the offer in the node's outbox."""
        task = asyncio.get_running_loop().create_task(self._offer(node, job_id, lease))
        self._offering.add(task)
        task.add_done_callback(self._offering.discard)

    async def _offer(self, node: str, job_id: str, lease: str) -> None:
        job = self.get(job_id)
        try:
            # The stored PNGs are about 3 bytes a pixel at most, per image.
            cost = job.pixels * 3 * (1 + len(job.style_files))
            offer = await off_loop(cost, self._offer_of, job, lease)
        except FileNotFoundError as exc:
            log.error("job %s: its stored images cannot be read: %s", job_id, exc)
            actions = self.scheduler.failed(
                node,
                job_id,
                lease,
                self.timer(),
                reason="The job's images were lost.",
                retry=False,
                blame=False,
            )
            self.apply(actions)
            return
        except OSError as exc:  # the store failed, not the images (S3 unreachable): later
            log.error("job %s: its stored images cannot be read now: %s", job_id, exc)
            why = f"the relay could not read the job's images ({exc.strerror or exc})"
            self.apply(self.scheduler.not_stored(node, job_id, lease, why, self.timer()))
            return
        # A cancel or a lost node may have overtaken the read.
        if self.scheduler.is_current(node, job_id, lease):
            if (live := self.live.get(job_id)) is not None:
                live.resumed_from = offer.start_epoch if offer.start_png is not None else 0
            self.hub.send(node, offer)

    def _offer_of(self, job: JobRecord, lease: str) -> OfferJob:
        """The job's offer, continuing from its latest checkpoint if it has one (blocking)."""
        return replace(offer_for(job, lease, self.blobs.read), **resume_fields(job, self.blobs))

    async def stop_offering(self) -> None:
        """Stop offers whose images are still being read."""
        for task in list(self._offering):
            task.cancel()
        await asyncio.gather(*self._offering, return_exceptions=True)

    def update(self, job_id: str, *, persist: bool = True, **fields: Any) -> None:
        """Change an open job's fields in memory, and in the database if `persist`."""
        if persist:
            self.store.update(job_id, **fields)
        job = self._open.get(job_id)
        if job is not None:
            self._open[job_id] = replace(job, **fields)

    async def put_result(self, png: bytes, preview: bytes | None) -> tuple[str, str | None]:
        """Write (and hold) a result and its preview; OSError, with nothing held, if not.
        `finish_done` lets go of them once the job refers to them."""
        result_file = await off_loop(len(png), self.blobs.put, png)
        try:
            preview_file = (
                await off_loop(len(preview), self.blobs.put, preview) if preview else None
            )
        except OSError:
            self.blobs.release([result_file])
            raise
        return result_file, preview_file

    def finish_done(
        self, job: JobRecord | None, result_file: str, preview_file: str | None
    ) -> None:
        """Record a delivered result (stored by `put_result`), or with no job (its lease
        ended meanwhile) only let go of the files."""
        if job is not None:
            self._finish(job, JobState.DONE, result_file=result_file, preview_file=preview_file)
        self.blobs.release(f for f in (result_file, preview_file) if f)

    def _finish(self, job: JobRecord, state: JobState, **fields: Any) -> None:
        now = self.clock()
        live = self.live.pop(job.id, None)
        self._positions.pop(job.id, None)
        # What was kept in memory only (start, node) is written now, with the outcome.
        # If the disk is full, the store keeps this change and tries it again every tick,
        # and shows it meanwhile: the job reads as ended, not queued (re-running a job
        # whose result the node delivered would be the worse mistake). Only if the relay
        # stops before the disk has room is the end lost; the store logs which jobs.
        self._record_end(job, state, now, fields)
        self._open.pop(job.id, None)
        done = replace(job, state=state, finished=now, **fields)
        self.kudos.credit(done)
        self.disk.usage.refer(done, self.blobs.size)
        run = now - job.started if job.started is not None else None
        self.metrics.job_finished(job.method, str(state), run)
        log_event(
            log,
            f"job_{state}",
            "job %s %s%s",
            job.id,
            state,
            f": {done.error}" if done.error else "",
            job=job.id,
            node=job.node,
            method=job.method,
            ms=round(run * 1000) if run is not None else None,
        )
        if self.mailer is not None:
            self.mailer.notify(done)
        self.showcase.job_ended(done)
        if not self.bus.watching(job.id):
            return
        # The record, and what it had reported: the HTTP side shapes the view
        # (`relay.views.event_json`).
        event: dict[str, Any] = {"type": str(state), "job": done, "live": live}
        if state is JobState.FAILED:
            event["error"] = done.error
        self.bus.publish(job.id, event)

    def _record_end(
        self, job: JobRecord, state: JobState, now: float, fields: dict[str, Any]
    ) -> None:
        """Write how a job ended (what memory alone held, its start and node, with it)."""
        self.store.update(
            job.id, state=state, finished=now, started=job.started, node=job.node, **fields
        )

    def _publish_positions(self) -> None:
        """Tell subscribers of queued jobs their place and why they wait, when either changed
        (a node that came or went changes the reason, not the place)."""
        for job_id in self.bus.watched():
            position = self.scheduler.position(job_id)
            if position is None:
                continue
            reason = self.scheduler.why_waiting(job_id)
            if self._positions.get(job_id) == (position, reason):
                continue
            self._positions[job_id] = (position, reason)
            self.bus.publish(
                job_id,
                {
                    "type": "queued",
                    "position": position,
                    "reason": reason,
                    "starts_in": self.starts_in(job_id),
                },
            )
