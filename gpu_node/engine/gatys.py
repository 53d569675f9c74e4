"""Gatys et al. style transfer: optimise a picture until its VGG19 features match the
content image's and its Gram matrices match the style images'.

`stylize_gatys` is the one entry point for the CLI and the node daemon. It runs on the
caller's thread, reports every epoch, and checks the cancel flag before each epoch. Given a
`start` picture and the epoch it reached (a checkpoint of an earlier run), it continues
from there: the optimiser's history starts afresh, the picture does not.

Nothing in the optimisation loop waits for the device: L-BFGS is `SyncFreeLBFGS`, and the
losses of a progress report and the picture of a preview are copied off the device in
queue order (`HostCopies`) and handed on when they have landed, an epoch or so later on a
GPU; each scale ends by waiting for what is still on its way. A checkpoint is drawn only
when the reporter finds one due (every `--checkpoint-every` seconds).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from PIL import Image

from gpu_node.device import FastPaths, autocast, compiled, fast_paths
from gpu_node.engine import color
from gpu_node.engine.capacity import plan_memory
from gpu_node.engine.gatys_params import GatysParams, Init, Optimizer
from gpu_node.engine.lbfgs import SyncFreeLBFGS
from gpu_node.engine.losses import content_loss, gram, style_loss, tv_loss
from gpu_node.engine.offload import HostCopies
from gpu_node.engine.progress import (
    CheckpointFn,
    EngineProgress,
    PreviewFn,
    ProgressFn,
    Render,
    check_cancel,
)
from gpu_node.engine.vgg import VGG19Features
from gpu_node.engine.weights import VGGWeights, load_weights
from gpu_node.errors import BadInputError
from gpu_node.images import resize_long_side
from gpu_node.tensors import image_to_tensor, tensor_to_image

log = logging.getLogger(__name__)

# The picture is optimised in pixel units (0..255), as in the original Caffe work: the
# step sizes and L-BFGS tolerances were tuned for that scale.
_PIXEL = 255.0


@dataclass(frozen=True)
class _Job:
    """What stays fixed across the scales of one job."""

    params: GatysParams
    net: VGG19Features
    device: torch.device
    progress: ProgressFn | None
    preview: PreviewFn | None
    cancel: threading.Event | None
    started: float
    finish: Callable[[torch.Tensor], torch.Tensor]
    paths: FastPaths
    progress_every: int
    checkpoint: CheckpointFn | None
    full: torch.Tensor
    """The content at the output size: what checkpoints are drawn at."""


def stylize_gatys(
    content: Image.Image,
    styles: Sequence[tuple[Image.Image, float]],
    params: GatysParams,
    *,
    device: torch.device | None = None,
    weights: VGGWeights | None = None,
    progress: ProgressFn | None = None,
    preview: PreviewFn | None = None,
    cancel: threading.Event | None = None,
    paths: FastPaths | None = None,
    progress_every: int = 1,
    checkpoint: CheckpointFn | None = None,
    start: Image.Image | None = None,
    start_epoch: int = 0,
    free_memory: int | None = None,
) -> Image.Image:
    """Paint `content` in the blended manner of `styles` ((image, blend weight) pairs).

    `paths` are the device's speed settings (default: `fast_paths(device)`); progress is
    reported every `progress_every` epochs and after the last (on a GPU an epoch or so
    late: the losses travel back without stalling it). `checkpoint` is offered the picture
    after every epoch. With a `start` picture that reached `start_epoch` of `params.epochs`,
    the job continues from it: only the remaining epochs run, and progress counts on from
    `start_epoch`. `free_memory` is the bytes the job may take (default: what the device
    has free); a job that fits only with gradient checkpointing runs with it.

    Raises BadInputError for unusable arguments, CapacityError when the output would not
    fit the device, WeightsError for missing weights, and Cancelled when `cancel` is set.
    """
    started = time.perf_counter()
    blends = _blend_weights(styles)
    if start is not None and not 0 <= start_epoch <= params.epochs:
        raise BadInputError(
            f"the start picture's epoch {start_epoch} is not within the job's {params.epochs}"
        )
    device = device or torch.device("cpu")
    paths = paths if paths is not None else fast_paths(device)
    vgg = weights if weights is not None else load_weights()
    final_w, final_h = _fitted(content.size, params.size)
    lbfgs = params.optimizer is Optimizer.LBFGS
    wanted = params.lbfgs_history if lbfgs else 0
    plan = plan_memory(
        final_h, final_w, params.deepest_layer, wanted, device, free=free_memory,
        coarse=any(params.coarse_style_at(size) for size, _ in params.stages()),
    )  # fmt: skip
    history = plan.history
    if plan.checkpoint:
        log.info(
            "gatys %dx%d: gradient checkpointing to fit %s memory (slower, same result)",
            final_w, final_h, device.type,
        )  # fmt: skip
        paths = replace(paths, compile=False)  # recomputed blocks and compile do not mix
    if history < wanted:
        log.info(
            "gatys %dx%d: L-BFGS history shortened from %d to %d steps to fit %s memory",
            final_w, final_h, wanted, history, device.type,
        )  # fmt: skip
        params = replace(params, lbfgs_history=history)

    # cuDNN runs faster on channels-last maps; the picture itself stays contiguous because
    # L-BFGS flattens its gradient with view(-1).
    net = VGG19Features(
        vgg,
        params.pooling,
        up_to=params.deepest_layer,
        channels_last=paths.channels_last,
        checkpoint=plan.checkpoint,
    ).to(device)
    full_content = image_to_tensor(resize_long_side(content, params.size), device)
    job = _Job(
        params=params,
        net=net,
        device=device,
        progress=progress,
        preview=preview,
        cancel=cancel,
        started=started,
        finish=_finisher(full_content, params.preserve_colors),
        paths=paths,
        progress_every=max(1, progress_every),
        checkpoint=checkpoint,
        full=full_content,
    )
    stages = params.stages()
    log.debug("gatys %dx%d on %s, stages %s", final_w, final_h, device, stages)

    canvas: torch.Tensor | None = None
    done = 0
    for size, epochs in stages:
        if start is not None and done + epochs <= start_epoch:
            done += epochs  # this stage was finished before the start picture was taken
            continue
        content_t = (
            full_content
            if size == params.size
            else image_to_tensor(resize_long_side(content, size), device)
        )
        style_size = max(16, round(size * params.style_scale))
        style_ts = [
            (image_to_tensor(resize_long_side(img, style_size), device), blend)
            for (img, _), blend in zip(styles, blends, strict=True)
        ]
        if params.preserve_colors:
            style_ts = [(color.match_luminance(s, content_t), b) for s, b in style_ts]
            content_t = color.luminance_as_rgb(content_t)
        # After the warm-up, the style is also matched at half size (see GatysParams).
        coarse_ts = [(_halved(s), b) for s, b in style_ts] if params.coarse_style_at(size) else []
        skip = 0
        if canvas is not None:
            first = canvas
        elif start is not None:
            first = image_to_tensor(start.convert("RGB"), device)
            skip = start_epoch - done  # epochs of this scale the start picture has had
        else:
            first = _initial(params, content_t, style_ts[0][0])
        canvas = _optimise(
            job, content_t, style_ts, coarse_ts, _resized(first, content_t),
            epochs=epochs - skip, done=done + skip,
        )  # fmt: skip
        done += epochs
    if canvas is None:  # the start picture had every epoch already
        assert start is not None
        canvas = _resized(image_to_tensor(start.convert("RGB"), device), full_content)
    return tensor_to_image(job.finish(canvas))


def _blend_weights(styles: Sequence[tuple[Image.Image, float]]) -> list[float]:
    if not styles:
        raise BadInputError("at least one style image is needed")
    weights = [float(w) for _, w in styles]
    if any(not (w >= 0 and w < float("inf")) for w in weights) or sum(weights) <= 0:
        raise BadInputError("style blend weights must be zero or positive, and not all zero")
    total = sum(weights)
    return [w / total for w in weights]


def _fitted(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    width, height = size
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _initial(params: GatysParams, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    match params.init:
        case Init.CONTENT:
            return content.clone()
        case Init.STYLE:
            return _resized(style, content)
        case Init.NOISE:
            # Drawn on the CPU so a seed gives the same start on every device.
            generator = torch.Generator().manual_seed(params.seed)
            noise = torch.rand(content.shape, generator=generator)
            return noise.to(content.device)


def _resized(image: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if image.shape[-2:] == like.shape[-2:]:
        return image
    resized = F.interpolate(image, size=like.shape[-2:], mode="bicubic", align_corners=False)
    return resized.clamp(0.0, 1.0)


def _halved(image: torch.Tensor) -> torch.Tensor:
    """`image` at half its size, each pixel the mean of a 2x2 block (differentiable)."""
    return F.avg_pool2d(image, 2)


def _finisher(content: torch.Tensor, preserve: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    def finish(picture: torch.Tensor) -> torch.Tensor:
        image = picture.detach().float().clamp(0.0, 1.0)
        if not preserve:
            return image
        return color.with_chroma_of(image, _resized(content, image))

    return finish


def _optimise(
    job: _Job,
    content: torch.Tensor,
    styles: list[tuple[torch.Tensor, float]],
    coarse: list[tuple[torch.Tensor, float]],
    start: torch.Tensor,
    *,
    epochs: int,
    done: int,
) -> torch.Tensor:
    """Run `epochs` evaluations at this scale from `start`; return the picture (both 0..1)."""
    params, net = job.params, job.net
    features_of = compiled(net, job.paths)
    content_names = [name for name, _ in params.content_layers]
    style_names = [name for name, _ in params.style_layers]
    with torch.no_grad():
        content_targets = net(content, content_names)
        style_grams = [
            (blend, {k: gram(v) for k, v in net(s, style_names).items()}) for s, blend in styles
        ]
        coarse_grams = [
            (blend, {k: gram(v) for k, v in net(s, style_names).items()}) for s, blend in coarse
        ]
    names = list(dict.fromkeys(content_names + style_names))
    canvas = (start.detach() * _PIXEL).contiguous()
    canvas.requires_grad_(True)
    optimizer = _optimizer(params, canvas)
    # The loss terms stay on the device; a progress report copies them off (see HostCopies).
    terms: dict[str, torch.Tensor] = {}

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        with autocast(job.device, job.paths):
            features = features_of(canvas * (1.0 / _PIXEL), names)
        features = {k: v.float() for k, v in features.items()}
        content_term = params.content_weight * content_loss(
            features, content_targets, params.content_layers
        )
        style_term = params.effective_style_weight * style_loss(
            features, style_grams, params.style_layers
        )
        total = content_term + style_term
        if coarse_grams:
            with autocast(job.device, job.paths):
                small = features_of(_halved(canvas * (1.0 / _PIXEL)), style_names)
            small = {k: v.float() for k, v in small.items()}
            coarse_term = (
                params.effective_style_weight * params.effective_coarse_weight
            ) * style_loss(small, coarse_grams, params.style_layers)
            total = total + coarse_term
            terms["coarse"] = coarse_term.detach()
        if params.tv_weight > 0:
            tv_term = params.tv_weight * tv_loss(canvas)
            total = total + tv_term
            terms["tv"] = tv_term.detach()
        total.backward()  # type: ignore[no-untyped-call]
        terms.update(content=content_term.detach(), style=style_term.detach(), total=total.detach())
        return total

    last = done + epochs
    copies: HostCopies[_Tag] = HostCopies(job.device)
    for epoch in range(done + 1, last + 1):
        check_cancel(job.cancel)
        optimizer.step(closure)
        if job.progress is not None and (epoch % job.progress_every == 0 or epoch == last):
            copies.start(torch.stack(list(terms.values())), ("progress", epoch, tuple(terms)))
        if job.preview is not None and params.preview_every and epoch % params.preview_every == 0:
            copies.start(job.finish(canvas.detach() / _PIXEL), ("preview", epoch, ()))
        _hand_on(job, copies.arrived())
        if job.checkpoint is not None:
            job.checkpoint(epoch, _render(job, canvas))
    _hand_on(job, copies.wait())
    return canvas.detach().div(_PIXEL).clamp(0.0, 1.0)


def _render(job: _Job, canvas: torch.Tensor) -> Render:
    """Draw `canvas` (pixel units, at any scale) as the finished picture at the output size."""

    def render() -> Image.Image:
        picture = canvas.detach().div(_PIXEL).clamp(0.0, 1.0)
        return tensor_to_image(job.finish(_resized(picture, job.full)))

    return render


_Tag = tuple[str, int, tuple[str, ...]]
"""What a copy off the device is for: ("progress" or "preview", its epoch, loss names)."""


def _hand_on(job: _Job, landed: list[tuple[_Tag, torch.Tensor]]) -> None:
    """Report the progress and previews whose copies have reached the host."""
    for (kind, epoch, names), host in landed:
        if kind == "progress" and job.progress is not None:
            losses = dict(zip(names, host.tolist(), strict=True))
            elapsed = time.perf_counter() - job.started
            job.progress(EngineProgress(epoch, job.params.epochs, losses, elapsed))
        elif kind == "preview" and job.preview is not None:
            job.preview(tensor_to_image(host), epoch)


def _optimizer(params: GatysParams, canvas: torch.Tensor) -> SyncFreeLBFGS | torch.optim.Adam:
    match params.optimizer:
        case Optimizer.LBFGS:
            # Each step() is exactly one evaluation (torch's max_iter=1), so an epoch is too.
            return SyncFreeLBFGS(canvas, lr=params.learning_rate, history_size=params.lbfgs_history)
        case Optimizer.ADAM:
            return torch.optim.Adam([canvas], lr=params.learning_rate)
