"""`DeviceRunners`: one node, several devices. Each device gets its own `JobRunner` (its
own loaded networks and batches) and `slots` jobs; each job goes to the device with the
fewest jobs running, then the fewest started, so work spreads over them.

`Runner` is what a session needs of whatever runs its jobs: one `JobRunner` (one device)
or a `DeviceRunners`. Live sessions (`gpu_node.daemon.live`) paint on one device: the
first one's runner (`Runner.live_runner`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from gpu_node.daemon.params import JobSpec
from gpu_node.daemon.reporting import Emit
from gpu_node.daemon.runner import JobRunner
from protocol import Offer, Pace, Result

log = logging.getLogger(__name__)


class Runner(Protocol):
    """Screens offers and runs accepted jobs to their Result (raising JobFailed)."""

    @property
    def live_runner(self) -> JobRunner:
        """The runner whose fast engines paint live sessions (one device's)."""

    def warm_up(self) -> None:
        """Load what the first job would otherwise wait for."""

    def screen(self, offer: Offer) -> JobSpec:
        """The offer's job, or Declined."""

    def run(
        self,
        offer: Offer,
        spec: JobSpec,
        cancel: threading.Event,
        emit: Emit,
        *,
        checkpoint_every: float | None = None,
    ) -> Result:
        """Run an accepted job (a Gatys job checkpointing every `checkpoint_every` s)."""


@dataclass
class Lane:
    """One device's runner and how many of its slots are taken."""

    runner: JobRunner
    slots: int
    running: int = 0
    started: int = 0
    """Jobs it has been given so far (for spreading work, tests and logs)."""


class DeviceRunners:
    """The runners of a node's devices behind one connection, `slots` jobs each."""

    def __init__(self, runners: Sequence[JobRunner], slots: int) -> None:
        if not runners:
            raise ValueError("a node needs at least one device")
        self.lanes = [Lane(runner, slots) for runner in runners]
        self._free = threading.Condition()

    @property
    def first(self) -> JobRunner:
        """The first device's runner: it screens offers and measures the node's pace."""
        return self.lanes[0].runner

    @property
    def live_runner(self) -> JobRunner:
        """The first device's runner: live sessions paint there (a live frame is one
        quick pass, so one device's fast engines serve them; jobs still spread)."""
        return self.first

    @property
    def devices(self) -> list[torch.device]:
        """The devices, one per lane (a name may repeat)."""
        return [lane.runner.device for lane in self.lanes]

    @property
    def slots(self) -> int:
        """Jobs the node runs at once, over all its devices."""
        return sum(lane.slots for lane in self.lanes)

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods served (the same on every device)."""
        return self.first.methods

    def warm_up(self) -> None:
        """Warm every device's engines up."""
        for lane in self.lanes:
            lane.runner.warm_up()

    def measure_pace(self) -> tuple[Pace, ...]:
        """The first device's pace: a node has one pace in Hello (devices of one daemon are
        usually alike, and the relay corrects it with each finished job)."""
        return self.first.measure_pace()

    def screen(self, offer: Offer) -> JobSpec:
        """Screen on the first device (every device checks the same caps)."""
        return self.first.screen(offer)

    def run(
        self,
        offer: Offer,
        spec: JobSpec,
        cancel: threading.Event,
        emit: Emit,
        *,
        checkpoint_every: float | None = None,
    ) -> Result:
        """Run the job on the least busy device."""
        lane = self._take()
        device = lane.runner.device
        log.debug("job %s on %s", offer.job_id, device)
        try:
            # CUDA calls that name no device (events, streams) then go to this job's
            with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
                return lane.runner.run(offer, spec, cancel, emit, checkpoint_every=checkpoint_every)
        finally:
            with self._free:
                lane.running -= 1
                self._free.notify()

    def _take(self) -> Lane:
        with self._free:
            # The session never runs more jobs than `slots`, so this waits only for a job
            # whose thread is still ending.
            self._free.wait_for(lambda: any(lane.running < lane.slots for lane in self.lanes))
            open_lanes = [lane for lane in self.lanes if lane.running < lane.slots]
            lane = min(open_lanes, key=lambda lane: (lane.running, lane.started))
            lane.running += 1
            lane.started += 1
            return lane
