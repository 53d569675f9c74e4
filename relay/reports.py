"""What nodes report, carried to the job service: the one way a node's word changes a job.

A node connection (`relay.nodelink`, or a test's fake node) calls in here:

    reports = NodeReports(service)
    handle = reports.node_connected(NodeInfo(...))   # after the node authenticated
    command = await handle.outbox.get()              # OfferJob or CancelJob, in order
    reports.progress(handle, job_id, lease, epoch=3, epochs=100, losses={"style": 1.5})
    await reports.preview(handle, job_id, lease, jpeg_bytes)
    await reports.result(handle, job_id, lease, png_bytes, width=w, height=h)
    reports.failed(handle, job_id, lease, reason, retry=True)
    reports.node_lost(handle)

Every report names its lease; reports for a lease that is no longer current (the job was
cancelled, timed out or handed to another node) are ignored and answer False, and so are
reports on a handle a newer connection of the same node replaced. Results and previews are
decoded and checked (`relay.imagecheck`) before they are kept: a bad result ends the lease
as a failure, a bad preview is dropped; both count as the node's fault.

Job state changes only through the service (`JobService.apply` of the scheduler's actions,
`JobService.finish_done`); the registry of connections is `relay.hub.NodeHub`. The class
keeps no state of its own, so any number of them may speak for one service.
"""

import logging
import math

from relay import checkpoints
from relay.dispatch import NodeInfo
from relay.errors import NotFound
from relay.handles import NodeHandle
from relay.imagecheck import BadImage
from relay.jobs import JobService
from relay.offload import off_loop

log = logging.getLogger(__name__)

MAX_RESULT_BYTES = 256 * 1024 * 1024
MAX_PREVIEW_BYTES = 4 * 1024 * 1024
MAX_LOSSES = 16


def _clean_losses(losses: dict[str, float]) -> dict[str, float]:
    clean: dict[str, float] = {}
    for name, value in list(losses.items())[:MAX_LOSSES]:
        if isinstance(value, int | float) and math.isfinite(value):
            clean[str(name)[:32]] = float(value)
    return clean


class NodeReports:
    """Node connections' reports to the job service, checked against their lease."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self.hub = service.hub

    # ---- connections -----------------------------------------------------------------

    def node_connected(self, info: NodeInfo) -> NodeHandle:
        """A node authenticated: register it (replacing an older connection of that name)."""
        service = self.service
        handle, old, forgotten = self.hub.add(info)
        log.info(
            "node %s connected%s: %s, methods %s, %d slot(s)",
            info.name,
            " (replacing its older connection)" if old else "",
            info.device_name,
            ",".join(sorted(info.methods)),
            info.slots,
        )
        service.apply(service.scheduler.node_up(info, handle.heard))
        if forgotten:
            service.apply(service.scheduler.styles_gone(forgotten))
        return handle

    def node_lost(
        self, handle: NodeHandle, reason: str | None = None, *, deliberate: bool = False
    ) -> None:
        """The connection ended: its jobs go back to the queue (`deliberate`: the node said
        Bye, so they were handed back and do not use up an attempt)."""
        forgotten = self.hub.remove(handle, reason or "connection lost")
        if forgotten is None:
            return
        log.info("node %s lost%s", handle.name, f": {reason}" if reason else "")
        if self.hub.stopping:
            return  # its jobs stay queued in the store and start again after the restart
        service = self.service
        scheduler = service.scheduler
        now = service.timer()
        service.apply(scheduler.node_down(handle.name, now, reason, deliberate=deliberate))
        if forgotten:
            # Jobs for these can no longer be asked for, nor be run: they end now.
            service.apply(scheduler.styles_gone(forgotten))

    def draining(self, handle: NodeHandle) -> None:
        """The node is leaving: it finishes its jobs but is offered no new ones."""
        if self.hub.current(handle):
            self.service.scheduler.node_draining(handle.name)
            self.service.live_sessions.node_draining(handle)

    def check_silence(self) -> None:
        """Periodic: drop the nodes the hub's liveness rule finds silent (their jobs go
        back), and give up live leases and frames a node left unanswered."""
        for handle, reason in self.hub.silent(self.service.config.heartbeat_interval):
            self.node_lost(handle, reason)
        self.service.live_sessions.check_unanswered()

    # ---- leases ----------------------------------------------------------------------

    def _lease_ended(self, handle: NodeHandle, lease: str) -> None:
        """The node's last word on a lease: if it was told to stop it, its slot is free."""
        if self.hub.current(handle):
            service = self.service
            service.apply(service.scheduler.lease_closed(handle.name, lease, service.timer()))

    def _holds(self, handle: NodeHandle, job_id: str, lease: str) -> bool:
        if not self.hub.current(handle):
            return False
        self.hub.seen(handle)
        return self.service.scheduler.is_current(handle.name, job_id, lease)

    def progress(
        self,
        handle: NodeHandle,
        job_id: str,
        lease: str,
        *,
        epoch: int,
        epochs: int,
        losses: dict[str, float],
    ) -> bool:
        """The node reports `epoch` of the `epochs` it plans finished; False if the lease is
        not current."""
        if not self._holds(handle, job_id, lease):
            return False
        clean = _clean_losses(losses)
        self.service.progressed(
            handle.name, job_id, lease, epoch=epoch, epochs=epochs, losses=clean
        )
        return True

    async def preview(self, handle: NodeHandle, job_id: str, lease: str, jpeg: bytes) -> bool:
        """The node sends a preview JPEG; checked, then kept in memory, the latest one only.
        False if the lease is not current or the preview is unusable."""
        if not self._holds(handle, job_id, lease):
            return False
        service = self.service
        job = service.get(job_id)
        try:
            if len(jpeg) > MAX_PREVIEW_BYTES:
                raise BadImage(f"{len(jpeg):,} bytes, over {MAX_PREVIEW_BYTES:,}")
            # The node shrinks previews (gpu_node.daemon.reporting), never beyond the job.
            await service.images.jpeg(jpeg, job.width, job.height)
        except BadImage as exc:
            log.warning("node %s sent an unusable preview for job %s: %s", handle.name, job_id, exc)
            if self.hub.current(handle):
                why = f"sent an unusable preview: {exc}"
                service.apply(service.scheduler.fault(handle.name, service.timer(), why))
            return False
        # The lease may have ended while the preview was checked.
        if not self._holds(handle, job_id, lease):
            return False
        service.previewed(job_id, jpeg)
        return True

    async def result(
        self, handle: NodeHandle, job_id: str, lease: str, png: bytes, *, width: int, height: int
    ) -> bool:
        """The node delivers the finished PNG; False if the lease is not current."""
        self._lease_ended(handle, lease)
        if not self._holds(handle, job_id, lease):
            return False
        service = self.service
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
        preview = service.live[job_id].preview  # stored beside the result
        try:
            result_file, preview_file = await service.put_result(png, preview)
        except OSError as exc:
            return self._not_stored(handle, job_id, lease, exc)
        # The lease may have ended while the files were written.
        if not self._holds(handle, job_id, lease):
            service.finish_done(None, result_file, preview_file)
            return False
        job = service.get(job_id)
        if job.method == "gatys" and job.started is not None:
            took = service.clock() - job.started
            # A run resumed from a checkpoint did only the epochs after it.
            ran = job.epochs - service.live[job_id].resumed_from
            self.hub.measure(handle.name, ran, job.pixels, took)
        service.finish_done(job, result_file, preview_file)
        service.apply(service.scheduler.finished(handle.name, job_id, lease, service.timer()))
        return True

    def _not_stored(self, handle: NodeHandle, job_id: str, lease: str, exc: OSError) -> bool:
        """The relay could not write the result (a full disk): not the node's fault, so the
        job goes back to the queue without using up an attempt, and the node stays."""
        log.error("job %s: the result of node %s could not be stored: %s", job_id, handle.name, exc)
        service = self.service
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
        service = self.service
        actions = service.scheduler.failed(
            handle.name, job_id, lease, service.timer(), reason=reason, retry=retry, blame=blame
        )
        service.apply(actions)
        return True

    def declined(
        self, handle: NodeHandle, job_id: str, lease: str, reason: str, *, busy: bool = False
    ) -> bool:
        """The node refused the offer (over its own caps, say): offer it elsewhere."""
        self._lease_ended(handle, lease)
        if not self._holds(handle, job_id, lease):
            return False
        log.info("node %s declined job %s: %s", handle.name, job_id, reason)
        service = self.service
        now = service.timer()
        service.apply(
            service.scheduler.declined(handle.name, job_id, lease, reason, now, busy=busy)
        )
        return True

    async def checkpoint(
        self, handle: NodeHandle, job_id: str, lease: str, epoch: int, png: bytes, *,
        width: int, height: int,
    ) -> bool:  # fmt: skip
        """The node sends its picture so far (`relay.checkpoints`): checked like a result,
        then kept instead of the job's previous one. False if unusable (the node's fault)
        or no longer welcome (asked again after each wait: the lease may end meanwhile).
        The last one of a job the person cancelled is still welcome, though its lease ended."""
        service = self.service

        def welcome() -> bool:
            if self._holds(handle, job_id, lease):
                return True
            try:
                job = service.get(job_id)
            except NotFound:
                return False
            return self.hub.current(handle) and checkpoints.stopped_here(job, handle.name)

        if not welcome():
            return False
        try:
            job = service.get(job_id)
            checkpoints.check(job, epoch, png, width, height)
            await service.images.png(png, job.width, job.height)
        except BadImage as exc:
            log.warning(
                "node %s sent an unusable checkpoint for job %s: %s", handle.name, job_id, exc
            )
            why = f"sent an unusable checkpoint: {exc}"
            service.apply(service.scheduler.fault(handle.name, service.timer(), why))
            return False
        if not welcome():
            return False
        try:
            sha = await off_loop(len(png), service.blobs.put, png)
        except OSError as exc:  # a full disk: the job goes on, without this checkpoint
            log.error("job %s: a checkpoint could not be stored: %s", job_id, exc)
            return False
        try:
            return welcome() and service.checkpointed(job_id, sha, epoch)
        finally:
            service.blobs.release([sha])
