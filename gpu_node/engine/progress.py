"""The contract every engine shares with its caller: progress, previews, checkpoints and
cancelling.

An engine reports an `EngineProgress` after every epoch through a `ProgressFn`, hands a
preview image to a `PreviewFn` every so often, offers a checkpoint to a `CheckpointFn` after
every epoch, and checks a `threading.Event` at least once per epoch, raising `Cancelled`
when it is set. Callbacks run on the engine's own thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from gpu_node.errors import Cancelled


@dataclass(frozen=True)
class EngineProgress:
    """Where a job stands after one epoch; `losses` maps each loss term to its value."""

    epoch: int
    epochs: int
    """The epochs planned for the job (not a cap)."""
    losses: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def fraction(self) -> float:
        """How much of the job is done, 0..1."""
        return min(1.0, self.epoch / self.epochs) if self.epochs > 0 else 1.0


ProgressFn = Callable[[EngineProgress], None]
"""Called after every epoch with the job's progress."""

PreviewFn = Callable[[Image.Image, int], None]
"""Called every few epochs with the current picture and the epoch it shows."""

Render = Callable[[], Image.Image]
"""Draws the picture as it stands, at the job's full output size (not cheap: call it only
for a checkpoint that is kept)."""

CheckpointFn = Callable[[int, Render], None]
"""Called after every epoch with the epoch reached and a `Render` of the picture. The render
stays valid until the next epoch begins, and after the engine stops (cancelled) it draws
the picture of the last epoch reported."""


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise Cancelled if the flag is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("the job was cancelled")
