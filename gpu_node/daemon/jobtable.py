"""`JobTable`: the jobs of one session, from the Offer to the message that ends the lease.

It answers each Offer (Decline when busy, draining or unfit; else Accept), runs accepted
jobs on the executor's worker threads, and queues their Progress, Preview, Checkpoint,
Result and Failure through the session's `send`. Worker threads never touch the
connection: their messages hop onto the event loop with `call_soon_threadsafe`. A job
handed back says nothing more on its lease but its last Checkpoint.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from gpu_node.daemon.devices import Runner
from gpu_node.daemon.params import Declined, JobSpec
from gpu_node.daemon.runner import JobFailed
from protocol import (
    Accept,
    Checkpoint,
    Decline,
    DeclineReason,
    Failure,
    FailureCode,
    Message,
    Offer,
    Result,
)

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One accepted job: its offer, cancel flag and task."""

    offer: Offer
    cancel: threading.Event = field(default_factory=threading.Event)
    handed_back: bool = False
    """Set when the lease is given up without an answer (the relay requeues the job)."""
    task: asyncio.Task[None] | None = None


class JobTable:
    """Accepts offers up to `slots` at once and runs them off the event loop."""

    def __init__(
        self,
        runner: Runner,
        executor: concurrent.futures.Executor,
        slots: int,
        send: Callable[[Message], None],
    ) -> None:
        self.runner = runner
        self.executor = executor
        self.slots = slots
        self.draining = False
        """When set, every new offer is declined with reason `draining`."""
        self.checkpoint_every: float | None = None
        """Seconds between a Gatys job's checkpoints; None (the default, and on a
        version-1 connection) sends none."""
        self._send = send
        self._jobs: dict[str, Job] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._jobs)

    def tasks(self) -> list[asyncio.Task[None]]:
        """The tasks of the jobs still running."""
        return [job.task for job in self._jobs.values() if job.task is not None]

    def offer(self, offer: Offer) -> None:
        """Answer an Offer: Decline it, or Accept it and start the job."""
        self._loop = asyncio.get_running_loop()
        try:
            if self.draining:
                raise Declined(DeclineReason.DRAINING, "this node is shutting down")
            if len(self._jobs) >= self.slots:
                raise Declined(DeclineReason.BUSY, f"all {self.slots} slot(s) are busy")
            spec = self.runner.screen(offer)
        except Declined as exc:
            log.info("job %s: declined (%s: %s)", offer.job_id, exc.reason, exc.message)
            self._send(Decline(offer.job_id, offer.lease_id, exc.reason, exc.message))
            return
        except Exception as exc:  # a bug in screening must not take the session down
            log.exception("job %s: could not read the offer", offer.job_id)
            message = f"the node could not read this offer: {exc}"[:4000]
            self._send(Decline(offer.job_id, offer.lease_id, DeclineReason.INVALID_PARAMS, message))
            return
        job = Job(offer)
        self._jobs[offer.lease_id] = job
        self._send(Accept(offer.job_id, offer.lease_id))
        log.info("job %s: accepted (%s)", offer.job_id, offer.method)
        job.task = asyncio.create_task(self._run(job, spec), name=f"job-{offer.job_id}")

    def cancel(self, job_id: str, lease_id: str) -> None:
        """Ask a running job to stop; one that already ended is ignored (the Cancel crossed)."""
        job = self._jobs.get(lease_id)
        if job is not None:
            log.info("job %s: cancelled by the relay", job_id)
            job.cancel.set()

    def hand_back(self) -> int:
        """Stop every running job without answering its lease; return how many there were."""
        for job in self._jobs.values():
            job.handed_back = True
            job.cancel.set()
        return len(self._jobs)

    def emit_threadsafe(self, message: Message) -> None:
        """Queue a job's message from its worker thread."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._emit, message)

    def _emit(self, message: Message) -> None:
        lease = getattr(message, "lease_id", None)
        job = self._jobs.get(lease) if isinstance(lease, str) else None
        # A job handed back still leaves its picture behind: the relay resumes from it.
        if job is not None and (not job.handed_back or type(message) is Checkpoint):
            self._send(message)

    async def _run(self, job: Job, spec: JobSpec) -> None:
        offer = job.offer
        loop = asyncio.get_running_loop()
        final: Result | Failure
        try:
            run = functools.partial(self.runner.run, checkpoint_every=self.checkpoint_every)
            final = await loop.run_in_executor(
                self.executor, run, offer, spec, job.cancel, self.emit_threadsafe
            )
            log.info("job %s: done, %dx%d", offer.job_id, final.width, final.height)
        except JobFailed as exc:
            final = exc.failure(offer)
            log.info("job %s: failed (%s: %s)", offer.job_id, exc.code, exc.message)
        except Exception as exc:  # e.g. the executor shut down under it; the lease must end
            log.exception("job %s: could not run", offer.job_id)
            final = Failure(offer.job_id, offer.lease_id, FailureCode.INTERNAL, str(exc)[:4000])
        if not job.handed_back:
            self._send(final)
        self._jobs.pop(offer.lease_id, None)
