"""Turning an engine's per-epoch callbacks into a modest stream of Progress, Preview and
Checkpoint.

An engine on a GPU reports hundreds of epochs a second; the relay and the browser need a
few. `Reporter` passes at most one Progress per `progress_interval` (the job's last epoch
always goes through), one small JPEG Preview per `preview_interval` and, when asked to,
one full-size PNG Checkpoint per `checkpoint_every` (and the newest picture once more by
`last_checkpoint` when the job stops without a result: cancelled or handed back). The
clock is injected so the throttling can be tested without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PIL import Image

from gpu_node.engine.progress import EngineProgress, Render
from gpu_node.images import encode_jpeg, encode_png
from protocol import Checkpoint, Message, Offer, Preview, Progress

Emit = Callable[[Message], None]
"""Hands one outgoing message to the connection's writer (thread-safe)."""

PROGRESS_INTERVAL = 0.25
PREVIEW_INTERVAL = 1.0
PREVIEW_SIDE = 256
PREVIEW_QUALITY = 80


class Reporter:
    """Throttles one job's progress and previews into protocol messages."""

    def __init__(
        self,
        offer: Offer,
        emit: Emit,
        *,
        clock: Callable[[], float] = time.monotonic,
        progress_interval: float = PROGRESS_INTERVAL,
        preview_interval: float = PREVIEW_INTERVAL,
        checkpoint_every: float | None = None,
    ) -> None:
        self._job = offer.job_id
        self._lease = offer.lease_id
        self._emit = emit
        self._clock = clock
        self._progress_interval = progress_interval
        self._preview_interval = preview_interval
        self._last_progress = -float("inf")
        self._last_preview = -float("inf")
        self._checkpoint_every = checkpoint_every
        self._last_checkpoint = clock()
        self._newest: tuple[int, Render] | None = None
        self._sent_epoch = -1

    def progress(self, report: EngineProgress) -> None:
        """Pass an engine's epoch report on, unless one went out just now."""
        now = self._clock()
        last = report.epoch >= report.epochs
        if not last and now - self._last_progress < self._progress_interval:
            return
        self._last_progress = now
        self._emit(
            Progress(
                self._job,
                self._lease,
                min(report.epoch, report.epochs),
                report.epochs,
                {str(k): float(v) for k, v in report.losses.items()},
                max(0.0, float(report.elapsed)),
            )
        )

    def wants_preview(self) -> bool:
        """Whether a preview offered now would be sent (lets callers skip making one)."""
        return self._clock() - self._last_preview >= self._preview_interval

    def preview(self, image: Image.Image, epoch: int) -> None:
        """Send a small JPEG of `image`, unless one went out less than a second ago."""
        if not self.wants_preview():
            return
        self._last_preview = self._clock()
        self._emit(Preview(self._job, self._lease, epoch, preview_jpeg(image)))

    def checkpoint(self, epoch: int, render: Render) -> None:
        """Keep the engine's newest picture within reach; send it if a checkpoint is due.
        Does nothing unless the reporter was made with `checkpoint_every`."""
        if self._checkpoint_every is None:
            return
        self._newest = (epoch, render)
        if self._clock() - self._last_checkpoint >= self._checkpoint_every:
            self._send_checkpoint()

    def last_checkpoint(self) -> None:
        """Send the newest picture, unless it went out already: the job stops (cancelled or
        handed back) and the relay should keep what it reached."""
        if self._newest is not None and self._newest[0] > self._sent_epoch:
            self._send_checkpoint()

    def _send_checkpoint(self) -> None:
        assert self._newest is not None
        epoch, render = self._newest
        image = render()
        png = encode_png(image)
        self._last_checkpoint = self._clock()
        self._sent_epoch = epoch
        self._emit(Checkpoint(self._job, self._lease, epoch, png, image.width, image.height))


def preview_jpeg(image: Image.Image, side: int = PREVIEW_SIDE) -> bytes:
    """`image` shrunk to at most `side` px on its long side, as a JPEG."""
    small = image.copy()
    small.thumbnail((side, side), Image.Resampling.BILINEAR)
    return encode_jpeg(small, quality=PREVIEW_QUALITY)
