"""No painting thrown away: the latest checkpoint of each Gatys job (protocol version 2).

A node running a Gatys job sends its picture so far as a `Checkpoint` now and then, when
the job is cancelled and when the node hands the job back. The relay keeps the newest one
per job, as a stored file the job refers to (`JobRecord.partial_file` and `partial_epoch`),
so that:

- a job offered again (its node was stopped or lost) continues from it: the Offer carries
  it as the start picture with the epoch it reached (`resume_fields`);
- a job that ends without a result (cancelled or failed) shows it: the job view's
  `partial` (`partial_view`), served by GET /api/jobs/{id}/partial.

The node's report arrives through `relay.reports.NodeReports.checkpoint`, and the job
takes it through `JobService.checkpointed` (the one owner of job state). A checkpoint is
decoded and checked like a result (`relay.imagecheck`: a whole PNG of the
job's size) before it replaces the previous one. Its file counts in the client's disk
quota like the job's other files, and goes with the job (`relay.disk.kept_files`).
"""

import logging
from typing import Any

from relay.blobs import BlobStore
from relay.imagecheck import BadImage
from relay.model import JobRecord, JobState

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


def stopped_here(job: JobRecord, node: str) -> bool:
    """Whether `job` was cancelled while `node` ran it: the node's last checkpoint, sent as
    it stops, is still welcome (its lease is no longer current)."""
    return job.state is JobState.CANCELLED and job.node == node


def check(job: JobRecord, epoch: int, png: bytes, width: int, height: int) -> None:
    """What can be told of a checkpoint before decoding it; raises BadImage."""
    if job.method not in RESUMABLE:
        raise BadImage(f"a {job.method} job has no checkpoints")
    if len(png) > MAX_CHECKPOINT_BYTES:
        raise BadImage(f"{len(png):,} bytes, over {MAX_CHECKPOINT_BYTES:,}")
    if (width, height) != (job.width, job.height):
        raise BadImage(f"it says {width}x{height}, the job is {job.width}x{job.height}")
    if not 0 < epoch <= job.epochs:
        raise BadImage(f"epoch {epoch} is not within the job's {job.epochs}")
