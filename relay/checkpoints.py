"""No painting thrown away: the latest checkpoint of each Gatys job (protocol version 2).

A node running a Gatys job sends its picture so far as a `Checkpoint` now and then, when
the job is cancelled and when the node hands the job back. The relay keeps the newest one
per job, as a stored file the job refers to (`JobRecord.partial_file` and `partial_epoch`),
so that:

- a job offered again (its node was stopped or lost) continues from it: the Offer carries
  it as the start picture with the epoch it reached (`resume_fields`);
- a job that ends without a result (cancelled or failed) shows it: the job view's
  `partial` (`partial_view`), served by GET /api/jobs/{id}/partial.

A checkpoint is decoded and checked like a result (`relay.imagecheck`: a whole PNG of the
job's size) before it replaces the previous one. Its file counts in the client's disk
quota like the job's other files, and goes with the job (`relay.disk.kept_files`).
"""

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from relay.blobs import BlobStore
from relay.errors import NotFound
from relay.imagecheck import BadImage
from relay.model import JobRecord, JobState
from relay.offload import off_loop

if TYPE_CHECKING:
    from relay.jobs import JobService

log = logging.getLogger(__name__)

MAX_CHECKPOINT_BYTES = 256 * 1024 * 1024
"""Largest checkpoint PNG kept (as for results)."""
RESUMABLE = frozenset({"gatys"})
"""Methods whose jobs continue from a checkpoint; one-pass methods simply run again."""
_SHOWN_IN = frozenset({JobState.FAILED, JobState.CANCELLED})


def partial_view(job: JobRecord, url: str) -> dict[str, Any] | None:
    """The job view's `partial`: the painting so far of a job that ended without a result
    (epoch reached, and `url`, where GET serves the PNG), or None."""
    if job.state not in _SHOWN_IN or job.partial_file is None or job.partial_epoch is None:
        return None
    return {"epoch": job.partial_epoch, "url": url}


def resume_fields(job: JobRecord, blobs: BlobStore) -> dict[str, Any]:
    """The Offer fields that continue `job` from its latest checkpoint (blocking: it reads
    the file), or none when there is no checkpoint to continue from."""
    if job.method not in RESUMABLE or job.partial_file is None or not job.partial_epoch:
        return {}
    try:
        start = blobs.read(job.partial_file)
    except OSError as exc:  # not worth failing the job for: it starts afresh
        log.error("job %s: its checkpoint cannot be read, starting afresh: %s", job.id, exc)
        return {}
    return {"start_png": start, "start_epoch": job.partial_epoch}


class Checkpoints:
    """Keeps the latest checkpoint of each job; owned by the `JobService`."""

    def __init__(self, service: "JobService") -> None:
        self._service = service

    def stopped_here(self, job_id: str, node: str) -> bool:
        """Whether `job_id` was cancelled while `node` ran it: the node's last checkpoint,
        sent as it stops, is still welcome (its lease is no longer current)."""
        try:
            job = self._service.get(job_id)
        except NotFound:
            return False
        return job.state is JobState.CANCELLED and job.node == node

    async def keep(
        self,
        job_id: str,
        node: str,
        epoch: int,
        png: bytes,
        *,
        width: int,
        height: int,
        welcome: Callable[[], bool],
    ) -> bool:
        """Check a node's checkpoint and keep it instead of the job's previous one; False
        if it is unusable (the node's fault) or no longer `welcome` (asked again after each
        wait: the lease may end meanwhile)."""
        service = self._service
        try:
            job = service.get(job_id)
            if job.method not in RESUMABLE:
                raise BadImage(f"a {job.method} job has no checkpoints")
            if len(png) > MAX_CHECKPOINT_BYTES:
                raise BadImage(f"{len(png):,} bytes, over {MAX_CHECKPOINT_BYTES:,}")
            if (width, height) != (job.width, job.height):
                raise BadImage(f"it says {width}x{height}, the job is {job.width}x{job.height}")
            if not 0 < epoch <= job.epochs:
                raise BadImage(f"epoch {epoch} is not within the job's {job.epochs}")
            await service.images.png(png, job.width, job.height)
        except BadImage as exc:
            log.warning("node %s sent an unusable checkpoint for job %s: %s", node, job_id, exc)
            why = f"sent an unusable checkpoint: {exc}"
            service.apply(service.scheduler.fault(node, service.timer(), why))
            return False
        if not welcome():
            return False
        try:
            sha = await off_loop(len(png), service.blobs.put, png)
        except OSError as exc:  # a full disk: the job goes on, without this checkpoint
            log.error("job %s: a checkpoint could not be stored: %s", job_id, exc)
            return False
        try:
            if not welcome():
                return False
            return self._replace(job_id, sha, epoch)
        finally:
            service.blobs.release([sha])

    def _replace(self, job_id: str, sha: str, epoch: int) -> bool:
        service = self._service
        try:
            old = service.get(job_id).partial_file
        except NotFound:  # deleted meanwhile
            return False
        service.update(job_id, partial_file=sha, partial_epoch=epoch)
        service.disk.usage.refer(service.get(job_id), service.blobs.size)
        if old is not None and old != sha:
            # The previous one is of no use now: free its space at once, not at the sweep.
            task = asyncio.get_running_loop().run_in_executor(
                None, service.blobs.discard, [old], service.disk.usage
            )
            task.add_done_callback(lambda done: done.exception())
        log.debug("job %s: checkpoint at epoch %d kept", job_id, epoch)
        return True
