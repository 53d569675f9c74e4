"""`JobRunner`: an Offer in, a Result out. Plain code that runs on a worker thread.

`screen` is quick and runs before the node answers the offer: method, style, parameters
and the owner's caps, raising `Declined`. `run` then decodes the images, dispatches on the
method to an engine, streams throttled Progress and Preview (and, for Gatys, Checkpoint)
through `emit`, and returns the Result; whatever goes wrong becomes `JobFailed` with a
protocol failure code. A Gatys offer with a start picture continues from it.
Cancelling is the engine's business: it checks the job's `threading.Event` every epoch.
Fast and arbitrary jobs running at once on several slots share one pass of the network
when their sizes match (`gpu_node.fast.batching`); each still reports on its own.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import warnings
from collections.abc import Callable

import torch
from PIL import Image

from gpu_node.daemon.params import (
    ArbitraryJob,
    Declined,
    FastJob,
    GatysJob,
    JobSpec,
    NodeCaps,
    job_spec,
)
from gpu_node.daemon.reporting import Emit, Reporter
from gpu_node.device import FastPaths, fast_paths
from gpu_node.engine.gatys import stylize_gatys
from gpu_node.engine.pace import gatys_pace, one_pass_pace
from gpu_node.engine.progress import EngineProgress, check_cancel
from gpu_node.engine.weights import load_weights
from gpu_node.errors import (
    BadInputError,
    Cancelled,
    CapacityError,
    ImageError,
    WeightsError,
)
from gpu_node.fast.batching import Batcher
from gpu_node.fast.engine import ArbitraryItem, FastEngine, FastItem
from gpu_node.fast.registry import StyleRegistry
from gpu_node.fast.spec import StyleMix
from gpu_node.images import encode_png, open_image, resize_long_side
from gpu_node.methods import METHODS
from gpu_node.tensors import image_to_tensor, tensor_to_image
from protocol import DeclineReason, Failure, FailureCode, Offer, Pace, Result

log = logging.getLogger(__name__)

ALL_METHODS = tuple(METHODS)


class JobFailed(Exception):
    """An accepted job ended without a picture; becomes a Failure with `code`."""

    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def failure(self, offer: Offer) -> Failure:
        """The Failure message for `offer`'s lease."""
        return Failure(offer.job_id, offer.lease_id, self.code, self.message[:4000])


Handler = Callable[[Offer, JobSpec, Image.Image, threading.Event, Reporter], Image.Image]


class JobRunner:
    """Runs the jobs of one node: its caps, styles, device and loaded engines."""

    def __init__(
        self,
        caps: NodeCaps,
        registry: StyleRegistry,
        device: torch.device,
        methods: tuple[str, ...] = ALL_METHODS,
        *,
        clock: Callable[[], float] = time.monotonic,
        paths: FastPaths | None = None,
    ) -> None:
        self.caps = caps
        self.registry = registry
        self.device = device
        self.paths = paths if paths is not None else fast_paths(device)
        """The device's speed settings (`--precision`, `--compile`), for the Gatys engine."""
        self._clock = clock
        self._fast = FastEngine(registry, device)
        self._fast_batches: Batcher[FastItem, torch.Tensor] = Batcher(self._fast.stylize_batch)
        self._arbitrary_batches: Batcher[ArbitraryItem, torch.Tensor] = Batcher(
            self._fast.stylize_arbitrary_batch
        )
        table: dict[str, Handler] = {
            "gatys": self._gatys,
            "fast": self._fast_style,
            "arbitrary": self._arbitrary,
        }
        self._handlers = {m: table[m] for m in methods if m in table}

    @property
    def live_runner(self) -> JobRunner:
        """This runner: live sessions paint with its fast engines (`Runner.live_runner`)."""
        return self

    @property
    def fast_engine(self) -> FastEngine:
        """The loaded fast and arbitrary networks (live sessions paint with them too)."""
        return self._fast

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods this runner serves."""
        return tuple(self._handlers)

    def warm_up(self) -> None:
        """Load the weights and libraries the first job would otherwise wait for."""
        started = time.perf_counter()
        try:
            if "gatys" in self._handlers:
                load_weights()
                # torch imports its compiler stack when the first optimizer is built: seconds
                torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])
            if "fast" in self._handlers:
                self._fast.multistyle  # noqa: B018 (loads the network on first access)
        except Exception as exc:  # the first job that needs it will report it properly
            log.warning("could not warm the engines up: %s", exc)
            return
        log.info("engines ready in %.1f s", time.perf_counter() - started)

    def measure_pace(self) -> tuple[Pace, ...]:
        """Time a short warm-up of each method on this device (a few seconds on a CPU), for
        Hello; a method whose warm-up fails goes unmeasured (the relay then guesses)."""
        timers: dict[str, Callable[[], tuple[float, float]]] = {
            "gatys": lambda: gatys_pace(self.device, load_weights()),
            "fast": lambda: one_pass_pace(self._fast_pass, self.device),
            "arbitrary": lambda: one_pass_pace(self._arbitrary_pass, self.device),
        }
        paces: list[Pace] = []
        for method in self.methods:
            timer = timers.get(method)
            if timer is None:
                continue
            started = time.perf_counter()
            try:
                seconds, per_mp = timer()
            except Exception as exc:
                log.warning("could not measure this node's %s pace: %s", method, exc)
                continue
            log.info(
                "%s pace: %.3f s + %.2f s/MP per %s (measured in %.1f s)",
                method, seconds, per_mp, "epoch" if method == "gatys" else "job",
                time.perf_counter() - started,
            )  # fmt: skip
            paces.append(Pace(method, seconds, per_mp))
        return tuple(paces)

    def _fast_pass(self, photo: torch.Tensor) -> object:
        builtin = next(e.id for e in self.registry if e.id.startswith("builtin:"))
        return self._fast.stylize(photo, StyleMix(((builtin, 1.0),)))

    def _arbitrary_pass(self, photo: torch.Tensor) -> object:
        style = Image.new("RGB", (256, 256), (200, 120, 40))
        return self._fast.stylize_arbitrary(photo, style)

    def screen(self, offer: Offer) -> JobSpec:
        """Check an offer before accepting it; Declined says why it cannot run here."""
        if offer.method not in self._handlers:
            raise Declined(
                DeclineReason.UNSUPPORTED_METHOD,
                f"this node does not serve {offer.method!r}; it serves {', '.join(self.methods)}",
            )
        # Per-epoch previews cost a GPU a sync and a copy each; on a CPU they are noise.
        preview_every = 1 if self.device.type == "cpu" else None
        spec = job_spec(offer, self.caps, self.registry, preview_every=preview_every)
        self._check_output_pixels(offer, spec)
        _check_start(offer, spec)
        return spec

    def _check_output_pixels(self, offer: Offer, spec: JobSpec) -> None:
        size = _peek_size(offer.content)
        if size is None:
            return  # not readable: `run` decodes it properly and fails with the reason
        long_side = spec.params.size if isinstance(spec, GatysJob) else spec.size
        width, height = fitted(size, long_side) if long_side is not None else size
        if width * height > self.caps.max_pixels:
            raise Declined(
                DeclineReason.TOO_LARGE,
                f"the result would be {width}x{height} = {width * height:,} pixels, above "
                f"this node's cap of {self.caps.max_pixels:,} (max_pixels)",
            )

    def run(
        self,
        offer: Offer,
        spec: JobSpec,
        cancel: threading.Event,
        emit: Emit,
        *,
        checkpoint_every: float | None = None,
    ) -> Result:
        """Run an accepted offer to its Result, or raise JobFailed. A Gatys job sends its
        picture as a Checkpoint every `checkpoint_every` seconds (None: never) and once
        more when it is cancelled, so the relay keeps what it reached."""
        every = checkpoint_every if isinstance(spec, GatysJob) else None
        reporter = Reporter(offer, emit, clock=self._clock, checkpoint_every=every)
        started = time.perf_counter()
        try:
            content = _decode(offer.content, "content image", self.caps.max_pixels)
            image = self._handlers[offer.method](offer, spec, content, cancel, reporter)
            png = encode_png(image)
        except Cancelled:
            reporter.last_checkpoint()
            raise JobFailed(FailureCode.CANCELLED, "the job was cancelled") from None
        except BadInputError as exc:
            raise JobFailed(FailureCode.INVALID_INPUT, str(exc)) from None
        except CapacityError as exc:
            raise JobFailed(FailureCode.OUT_OF_MEMORY, str(exc)) from None
        except (torch.OutOfMemoryError, MemoryError):
            raise JobFailed(
                FailureCode.OUT_OF_MEMORY, f"{self.device} ran out of memory; try a smaller size"
            ) from None
        except WeightsError as exc:
            log.error("job %s: %s", offer.job_id, exc)
            raise JobFailed(FailureCode.INTERNAL, f"the node's model weights: {exc}") from None
        except Exception as exc:
            log.exception("job %s failed", offer.job_id)
            raise JobFailed(FailureCode.INTERNAL, f"internal error on the node: {exc}") from None
        log.info(
            "job %s: %s %dx%d in %.1f s",
            offer.job_id, offer.method, image.width, image.height,
            time.perf_counter() - started,
        )  # fmt: skip
        return Result.for_png(offer.job_id, offer.lease_id, png, image.width, image.height)

    def _gatys(
        self,
        offer: Offer,
        spec: JobSpec,
        content: Image.Image,
        cancel: threading.Event,
        reporter: Reporter,
    ) -> Image.Image:
        assert isinstance(spec, GatysJob)
        styles = [
            (_decode(s.data, f"style image {i + 1}", self.caps.max_pixels), s.weight)
            for i, s in enumerate(offer.style_images)
        ]
        start = offer.start_image
        return stylize_gatys(
            content,
            styles,
            spec.params,
            device=self.device,
            paths=self.paths,
            progress=reporter.progress,
            preview=reporter.preview,
            cancel=cancel,
            checkpoint=reporter.checkpoint,
            start=None if start is None else _decode(start, "start image", self.caps.max_pixels),
            start_epoch=offer.start_epoch,
        )

    def _fast_style(
        self,
        offer: Offer,
        spec: JobSpec,
        content: Image.Image,
        cancel: threading.Event,
        reporter: Reporter,
    ) -> Image.Image:
        assert isinstance(spec, FastJob)
        started = time.perf_counter()
        photo = image_to_tensor(_sized(content, spec.size), self.device)
        item = FastItem(photo, spec.mix, spec.strength, spec.preserve_colors)
        check_cancel(cancel)
        self._fast.check(item)
        out = self._fast_batches.submit(self._fast.batch_key(item), item)
        reporter.progress(EngineProgress(1, 1, {}, time.perf_counter() - started))
        return tensor_to_image(out)

    def _arbitrary(
        self,
        offer: Offer,
        spec: JobSpec,
        content: Image.Image,
        cancel: threading.Event,
        reporter: Reporter,
    ) -> Image.Image:
        assert isinstance(spec, ArbitraryJob)
        started = time.perf_counter()
        style = _decode(offer.style_images[0].data, "style image", self.caps.max_pixels)
        photo = image_to_tensor(_sized(content, spec.size), self.device)
        item = self._fast.arbitrary_item(photo, style, spec.strength, spec.preserve_colors, cancel)
        out = self._arbitrary_batches.submit(("arbitrary", tuple(photo.shape)), item)
        reporter.progress(EngineProgress(1, 1, {}, time.perf_counter() - started))
        return tensor_to_image(out)


def _decode(data: bytes, what: str, max_pixels: int) -> Image.Image:
    try:
        return open_image(data, max_pixels=max_pixels)
    except ImageError as exc:
        # open_image names bytes "the image"; say which image of the offer it was
        raise ImageError(str(exc).replace("the image", f"the {what}", 1)) from None


def _check_start(offer: Offer, spec: JobSpec) -> None:
    """A start picture (a resumed job) only continues a Gatys job, within its epochs."""
    if not offer.resumes:
        return
    if not isinstance(spec, GatysJob):
        raise Declined(
            DeclineReason.INVALID_PARAMS, f"a {offer.method} job cannot continue from a picture"
        )
    if offer.start_epoch > spec.params.epochs:
        raise Declined(
            DeclineReason.INVALID_PARAMS,
            f"the start picture reached epoch {offer.start_epoch}, beyond the job's "
            f"{spec.params.epochs}",
        )


def _sized(image: Image.Image, size: int | None) -> Image.Image:
    return image if size is None else resize_long_side(image, size)


def fitted(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """`size` scaled so its longer side is `long_side` (as the engines and resize do)."""
    width, height = size
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _peek_size(data: bytes) -> tuple[int, int] | None:
    """An image's size from its header alone, or None if the header is unreadable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as img:
                return img.size
        except Exception:  # anything: `run` reports it properly after a full decode
            return None
