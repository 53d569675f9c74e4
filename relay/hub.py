"""The node side of the relay: where a node connection (`relay.nodelink`, or a test's fake
node) calls in, and where it picks up the offers and cancels meant for it.

    handle = hub.node_connected(NodeInfo(...))     # after the node authenticated
    command = await handle.outbox.get()            # Offer or CancelJob, in order
    hub.progress(handle, job_id, lease, epoch=3, max_epochs=100, losses={"style": 1.5})
    await hub.preview(handle, job_id, lease, jpeg_bytes)
    await hub.result(handle, job_id, lease, png_bytes, width=w, height=h)
    hub.failed(handle, job_id, lease, reason, retry=True)
    hub.node_lost(handle)

Every report names its lease; reports for a lease that is no longer current (the job was
cancelled, timed out or handed to another node) are ignored and answer False. A handle
replaced by a newer connection of the same node name is ignored the same way. Results and
previews are decoded and checked (`relay.imagecheck`) before they are kept: a bad result
ends the lease as a failure, a bad preview is dropped; both count as the node's fault.
"""

import asyncio
import logging
import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from relay import estimates
from relay.dispatch import NodeInfo
from relay.handles import CancelJob, FastStyle, NodeHandle, Offer
from relay.imagecheck import BadImage
from relay.model import JobRecord, JobState
from relay.offload import off_loop
from relay.views import iso, job_url

if TYPE_CHECKING:
    from relay.jobs import JobService
    from relay.live import LiveSessions

log = logging.getLogger(__name__)

MISSED_HEARTBEATS = 3
"""Heartbeat intervals a node may stay silent before the relay drops it."""
MAX_RESULT_BYTES = 256 * 1024 * 1024
MAX_PREVIEW_BYTES = 4 * 1024 * 1024
MAX_LOSSES = 16
RECENT_FAST_STYLES = 1024
"""Fast styles of nodes that left, still accepted in new jobs (the most recent ones)."""


def _clean_losses(losses: dict[str, float]) -> dict[str, float]:
    clean: dict[str, float] = {}
    for name, value in list(losses.items())[:MAX_LOSSES]:
        if isinstance(value, int | float) and math.isfinite(value):
            clean[str(name)[:32]] = float(value)
    return clean


class NodeHub:
    """Connected nodes and their reports; owned by the `JobService`."""

    def __init__(self, service: "JobService") -> None:
        self._service = service
        self._handles: dict[str, NodeHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.paces: dict[str, dict[str, tuple[float, float]]] = {}
        """Each node's pace by method (relay/estimates.py): what its Hello said, corrected
        by its finished Gatys jobs; the one home of a node's speed."""
        self._paced_by_jobs: set[str] = set()
        self._recent_fast: OrderedDict[str, None] = OrderedDict()
        self._stopping = False

    # ---- connections -----------------------------------------------------------------

    def node_connected(self, info: NodeInfo) -> NodeHandle:
        """A node authenticated: register it (replacing an older connection of that name)."""
        now, tick = self._service.clock(), self._service.timer()
        old = self._handles.get(info.name)
        forgotten: set[str] = set()
        if old is not None:
            old.drop("replaced by a newer connection of the same node")
            forgotten = self.remember_fast(old.info.styles) - info.styles
        handle = NodeHandle(info, now, now, tick)
        self._handles[info.name] = handle
        # What its jobs showed outranks a new start-up warm-up's guess.
        pace = dict(info.pace)
        if info.name in self._paced_by_jobs:
            pace.update(self.paces.get(info.name, {}))
        self.paces[info.name] = pace
        log.info(
            "node %s connected%s: %s, methods %s, %d slot(s)",
            info.name,
            " (replacing its older connection)" if old else "",
            info.device_name,
            ",".join(sorted(info.methods)),
            info.slots,
        )
        self._service.apply(self._service.scheduler.node_up(info, tick))
        if forgotten:
            self._service.apply(self._service.scheduler.styles_gone(forgotten))
        return handle

    def node_lost(
        self, handle: NodeHandle, reason: str | None = None, *, deliberate: bool = False
    ) -> None:
        """The connection ended: its jobs go back to the queue (`deliberate`: the node said
        Bye, so they were handed back and do not use up an attempt)."""
        if not self._current(handle):
            return
        del self._handles[handle.name]
        forgotten = self.remember_fast(handle.info.styles)
        handle.drop(reason or "connection lost")
        log.info("node %s lost%s", handle.name, f": {reason}" if reason else "")
        if self._stopping:
            return  # its jobs stay queued in the store and start again after the restart
        now = self._service.timer()
        scheduler = self._service.scheduler
        self._service.apply(scheduler.node_down(handle.name, now, reason, deliberate=deliberate))
        if forgotten:
            # Jobs for these can no longer be asked for, nor be run: they end now.
            self._service.apply(scheduler.styles_gone(forgotten))

    def draining(self, handle: NodeHandle) -> None:
        """The node is leaving: it finishes its jobs but is offered no new ones."""
        if self._current(handle):
            self._service.scheduler.node_draining(handle.name)

    def seen(self, handle: NodeHandle) -> None:
        """The node said something (a heartbeat, say): it is alive now."""
        handle.last_seen = self._service.clock()
        handle.heard = self._service.timer()

    def check_silence(self, heartbeat: float, misses: int = MISSED_HEARTBEATS) -> None:
        """Drop nodes that have said nothing for `misses` heartbeat intervals."""
        now = self._service.timer()
        for handle in list(self._handles.values()):
            silent = now - handle.heard
            if silent > misses * heartbeat:
                self.node_lost(handle, f"missed {misses} heartbeats ({silent:.0f} s silent)")

    @property
    def known_fast(self) -> set[str]:
        """Fast styles a new job may ask for: those of connected nodes, and the most recent
        of nodes that left (a job for one waits for a node that has it)."""
        known = set(self._recent_fast)
        for handle in self._handles.values():
            known |= handle.info.styles
        return known

    def remember_fast(self, styles: frozenset[str]) -> set[str]:
        """Keep `styles` among the recent ones; return those this pushed out that no
        connected node has either: the relay no longer knows them."""
        pushed: set[str] = set()
        for name in sorted(styles):
            self._recent_fast[name] = None
            self._recent_fast.move_to_end(name)
        while len(self._recent_fast) > RECENT_FAST_STYLES:
            pushed.add(self._recent_fast.popitem(last=False)[0])
        for handle in self._handles.values():
            pushed -= handle.info.styles
        return pushed

    @property
    def live_sessions(self) -> "LiveSessions":
        """The relay's live sessions (`relay.live`), which lease slots of these nodes."""
        return self._service.live_sessions

    def _current(self, handle: NodeHandle) -> bool:
        return self._handles.get(handle.name) is handle

    def _measure(self, node: str, job: JobRecord, now: float) -> None:
        """Fold a finished Gatys job's time into the node's pace."""
        if job.method != "gatys" or job.started is None or job.epochs <= 0 or job.pixels <= 0:
            return
        took = now - job.started
        if took <= 0:
            return
        paces = self.paces.setdefault(node, {})
        first = node not in self._paced_by_jobs
        old = paces.get("gatys")
        if old is None:  # a node that measured nothing: all its time counts per pixel
            old, first = (
                (0.0, took / estimates.units("gatys", job.epochs) / (job.pixels / 1e6)),
                True,
            )
        paces["gatys"] = estimates.refined(
            old, "gatys", job.epochs, job.pixels, took=took, first=first
        )
        self._paced_by_jobs.add(node)

    def pace_view(self, node: str) -> dict[str, dict[str, float]]:
        """A node's pace as /api/nodes shows it: per method, seconds and seconds per MP."""
        return {
            method: {"seconds": round(a, 6), "seconds_per_mp": round(b, 6)}
            for method, (a, b) in sorted(self.paces.get(node, {}).items())
        }

    def _lease_ended(self, handle: NodeHandle, lease: str) -> None:
        """The node's last word on a lease: if it was told to stop it, its slot is free."""
        if self._current(handle):
            service = self._service
            service.apply(service.scheduler.lease_closed(handle.name, lease, service.timer()))

    def replaced(self, handle: NodeHandle) -> bool:
        """True if a newer connection of the same node name took this one's place."""
        newer = self._handles.get(handle.name)
        return newer is not None and newer is not handle

    def _holds(self, handle: NodeHandle, job_id: str, lease: str) -> bool:
        if not self._current(handle):
            return False
        self.seen(handle)
        return self._service.scheduler.is_current(handle.name, job_id, lease)

    # ---- reports from nodes ----------------------------------------------------------

    def progress(
        self,
        handle: NodeHandle,
        job_id: str,
        lease: str,
        *,
        epoch: int,
        max_epochs: int,
        losses: dict[str, float],
    ) -> bool:
        """The node reports an epoch finished; False if the lease is not current."""
        if not self._holds(handle, job_id, lease):
            return False
        service = self._service
        service.scheduler.progress(handle.name, job_id, lease, service.timer())
        live = service.live[job_id]
        live.epoch, live.max_epochs, live.losses = epoch, max_epochs, _clean_losses(losses)
        event = {"type": "progress", "epoch": epoch, "max_epochs": max_epochs}
        service.bus.publish(job_id, {**event, "losses": live.losses})
        return True

    async def preview(self, handle: NodeHandle, job_id: str, lease: str, jpeg: bytes) -> bool:
        """The node sends a preview JPEG; checked, then kept in memory, the latest one only.
        False if the lease is not current or the preview is unusable."""
        if not self._holds(handle, job_id, lease):
            return False
        service = self._service
        job = service.get(job_id)
        try:
            if len(jpeg) > MAX_PREVIEW_BYTES:
                raise BadImage(f"{len(jpeg):,} bytes, over {MAX_PREVIEW_BYTES:,}")
            # The node shrinks previews (gpu_node.daemon.reporting), never beyond the job.
            await service.images.jpeg(jpeg, job.width, job.height)
        except BadImage as exc:
            log.warning("node %s sent an unusable preview for job %s: %s", handle.name, job_id, exc)
            if self._current(handle):
                why = f"sent an unusable preview: {exc}"
                service.apply(service.scheduler.fault(handle.name, service.timer(), why))
            return False
        # The lease may have ended while the preview was checked.
        if not self._holds(handle, job_id, lease):
            return False
        live = self._service.live[job_id]
        live.preview = jpeg
        live.previews += 1
        url = f"{job_url(job_id, '/preview')}?n={live.previews}"
        self._service.bus.publish(job_id, {"type": "preview", "url": url})
        return True

    async def result(
        self, handle: NodeHandle, job_id: str, lease: str, png: bytes, *, width: int, height: int
    ) -> bool:
        """The node delivers the finished PNG; False if the lease is not current."""
        self._lease_ended(handle, lease)
        if not self._holds(handle, job_id, lease):
            return False
        service = self._service
        job = service.get(job_id)
        try:
            if len(png) > MAX_RESULT_BYTES:
                raise BadImage(f"{len(png):,} bytes, over {MAX_RESULT_BYTES:,}")
            if (width, height) != (job.width, job.height):
                raise BadImage(f"it says {width}x{height}, the job is {job.width}x{job.height}")
            await service.images.png(png, job.width, job.height)
        except BadImage as exc:
            log.warning("node %s sent an unusable result for job %s: %s", handle.name, job_id, exc)
            # A failure like any other: the job goes back (an attempt), the node is at fault.
            why = f"node {handle.name} sent an unusable result ({exc})"
            return self.failed(handle, job_id, lease, why, retry=True)
        # The lease may have ended while the result was checked.
        if not self._holds(handle, job_id, lease):
            return False
        preview = service.live[job_id].preview
        try:
            result_file, preview_file = await service.put_result(png, preview)
        except OSError as exc:
            return self._not_stored(handle, job_id, lease, exc)
        # The lease may have ended while the files were written.
        if not self._holds(handle, job_id, lease):
            service.blobs.release(f for f in (result_file, preview_file) if f)
            return False
        job = service.get(job_id)
        self._measure(handle.name, job, service.clock())
        service.finish_done(job, result_file, preview_file)
        service.apply(service.scheduler.finished(handle.name, job_id, lease, service.timer()))
        return True

    def _not_stored(self, handle: NodeHandle, job_id: str, lease: str, exc: OSError) -> bool:
        """The relay could not write the result (a full disk): not the node's fault, so the
        job goes back to the queue without using up an attempt, and the node stays."""
        log.error("job %s: the result of node %s could not be stored: %s", job_id, handle.name, exc)
        service = self._service
        reason = f"the relay could not store the result ({exc.strerror})"
        service.apply(
            service.scheduler.not_stored(handle.name, job_id, lease, reason, service.timer())
        )
        return False

    def failed(
        self,
        handle: NodeHandle,
        job_id: str,
        lease: str,
        reason: str,
        *,
        retry: bool,
        blame: bool = True,
    ) -> bool:
        """The node could not finish the job: try elsewhere (`retry`) or fail it.
        `blame` False: the relay, not the node, is at fault (no mark on its record)."""
        self._lease_ended(handle, lease)
        if not self._holds(handle, job_id, lease):
            return False
        now = self._service.timer()
        actions = self._service.scheduler.failed(
            handle.name, job_id, lease, now, reason=reason, retry=retry, blame=blame
        )
        self._service.apply(actions)
        return True

    def declined(
        self, handle: NodeHandle, job_id: str, lease: str, reason: str, *, busy: bool = False
    ) -> bool:
        """The node refused the offer (over its own caps, say): offer it elsewhere."""
        self._lease_ended(handle, lease)
        if not self._holds(handle, job_id, lease):
            return False
        log.info("node %s declined job %s: %s", handle.name, job_id, reason)
        self._service.live.pop(job_id, None)
        # It never ran: the start the offer noted is taken back (an Accept is not waited
        # for to note it, as the lease, its timers and the page's "running" begin at the
        # offer; a decline is the one answer that says the node never began).
        self._service.update(job_id, persist=False, state=JobState.QUEUED, node=None, started=None)
        now = self._service.timer()
        self._service.apply(
            self._service.scheduler.declined(handle.name, job_id, lease, reason, now, busy=busy)
        )
        return True

    # ---- commands to nodes -----------------------------------------------------------

    def send_offer(self, node: str, job_id: str, lease: str) -> None:
        """Read the job's images off the loop, then put the offer in the node's outbox."""
        task = asyncio.get_running_loop().create_task(self._offer(node, job_id, lease))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _offer(self, node: str, job_id: str, lease: str) -> None:
        service = self._service
        job = service.get(job_id)
        try:
            # The stored PNGs are about 3 bytes a pixel at most, per image.
            cost = job.pixels * 3 * (1 + len(job.style_files))
            offer = await off_loop(cost, self._build_offer, job, lease)
        except OSError as exc:
            log.error("job %s: its stored images cannot be read: %s", job_id, exc)
            actions = service.scheduler.failed(
                node,
                job_id,
                lease,
                service.timer(),
                reason="The job's images were lost.",
                retry=False,
                blame=False,
            )
            service.apply(actions)
            return
        handle = self._handles.get(node)
        # A cancel or a lost node may have overtaken the read.
        if handle is not None and service.scheduler.is_current(node, job_id, lease):
            handle.outbox.put_nowait(offer)

    def _build_offer(self, job: JobRecord, lease: str) -> Offer:
        blobs = self._service.blobs
        images = [s for s in job.styles if not s.id.startswith("fast:")]
        fast = [s for s in job.styles if s.id.startswith("fast:")]
        return Offer(
            job_id=job.id,
            lease=lease,
            method=job.method,
            epochs=job.epochs,
            width=job.width,
            height=job.height,
            params=dict(job.params),
            content_png=blobs.read(job.content_file),
            style_images=tuple(
                (blobs.read(sha), s.weight) for sha, s in zip(job.style_files, images, strict=True)
            ),
            fast_styles=tuple((s.id.removeprefix("fast:"), s.weight) for s in fast),
        )

    def send_cancel(self, node: str, job_id: str, lease: str) -> None:
        """Tell a node to stop a job."""
        handle = self._handles.get(node)
        if handle is not None:
            handle.outbox.put_nowait(CancelJob(job_id, lease))

    def relay_stopping(self) -> None:
        """The relay is shutting down: connections that end now are not the jobs' fault,
        so they cost no attempt (the store requeues running jobs when the relay restarts)."""
        self._stopping = True

    async def close(self) -> None:
        """Stop offers still being read."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- views -----------------------------------------------------------------------

    def fast_styles(self) -> dict[str, FastStyle]:
        """Fast styles offered by connected nodes, by name."""
        styles: dict[str, FastStyle] = {}
        for handle in self._handles.values():
            info = handle.info
            for name in info.styles:
                known = styles.get(name)
                title = info.titles.get(name) or (known.title if known else "")
                thumb = info.thumbnails.get(name) or (known.thumbnail if known else None)
                styles[name] = FastStyle(name, title or name.replace("_", " "), thumb)
        return styles

    def infos(self) -> list[NodeInfo]:
        """What every connected node advertised."""
        return [h.info for h in self._handles.values()]

    def views(self) -> list[dict[str, Any]]:
        """Connected nodes as public JSON: no tokens, no job ids beyond a short tag."""
        out = []
        for view in self._service.scheduler.nodes():
            handle = self._handles.get(view.info.name)
            if handle is None:
                continue
            info = view.info
            pace = self.pace_view(info.name)
            now = self._service.timer()
            left = view.paused_until - now if view.paused_until is not None else 0.0
            paused = left > 0
            if paused:
                state = "paused"
            else:
                state = "draining" if view.draining else "busy" if view.jobs else "idle"
            out.append(
                {
                    "name": info.name,
                    "device": info.device_name,
                    "memory": info.device_memory,
                    "methods": sorted(info.methods),
                    "styles": sorted("fast:" + s for s in info.styles),
                    "max_epochs": info.max_epochs,
                    "max_pixels": info.max_pixels,
                    "slots": info.slots,
                    "state": state,
                    # Rested after failing jobs that ran elsewhere: why, and seconds left.
                    "paused": paused,
                    "pause_reason": view.pause_reason if paused else None,
                    "paused_for": round(left) if paused else None,
                    # Not yet trusted: it has finished no job (one at a time meanwhile).
                    "probation": not view.proven,
                    "busy_slots": len(view.jobs),
                    # A short tag, not the id: a job id is the key to its result.
                    "current_jobs": sorted(j[:6] for j in view.jobs),
                    "jobs_done": view.jobs_done,
                    # For the page's time estimates (relay/estimates.py, web/js/speed.js).
                    "pace": pace,
                    # Megapixel-epochs of its finished jobs still kept: its kudos.
                    "work_done": round(self._service.kudos.work(info.name), 3),
                    "seconds_per_epoch_mp": pace.get("gatys", {}).get("seconds_per_mp"),
                    "connected_since": iso(handle.connected_since),
                    "last_seen": iso(handle.last_seen),
                }
            )
        return out
