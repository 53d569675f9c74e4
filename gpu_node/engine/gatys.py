"""Gatys et al. style transfer: optimise a picture until its VGG19 features match the
content image's and its Gram matrices match the style images'.

`stylize_gatys` is the one entry point for the CLI and the node daemon. It runs on the
caller's thread, reports every epoch, and checks the cancel flag before each epoch.
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
from gpu_node.engine.capacity import check_fits
from gpu_node.engine.losses import content_loss, gram, style_loss, tv_loss
from gpu_node.engine.params import GatysParams, Init, Optimizer
from gpu_node.engine.progress import PreviewFn, Progress, ProgressFn, check_cancel
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
) -> Image.Image:
    """Paint `content` in the blended manner of `styles` ((image, blend weight) pairs).

    `paths` are the device's speed settings (default: `fast_paths(device)`); progress is
    reported every `progress_every` epochs and after the last, since reading the losses
    off a GPU waits for it.

    Raises BadInputError for unusable arguments, CapacityError when the output would not
    fit the device, WeightsError for missing weights, and Cancelled when `cancel` is set.
    """
    started = time.perf_counter()
    blends = _blend_weights(styles)
    device = device or torch.device("cpu")
    paths = paths if paths is not None else fast_paths(device)
    vgg = weights if weights is not None else load_weights()
    final_w, final_h = _fitted(content.size, params.size)
    lbfgs = params.optimizer is Optimizer.LBFGS
    wanted = params.lbfgs_history if lbfgs else 0
    history = check_fits(final_h, final_w, params.deepest_layer, wanted, device)
    if history < wanted:
        log.info(
            "gatys %dx%d: L-BFGS history shortened from %d to %d steps to fit %s memory",
            final_w, final_h, wanted, history, device.type,
        )  # fmt: skip
        params = replace(params, lbfgs_history=history)

    # cuDNN runs faster on channels-last maps; the picture itself stays contiguous because
    # L-BFGS flattens its gradient with view(-1).
    net = VGG19Features(
        vgg, params.pooling, up_to=params.deepest_layer, channels_last=paths.channels_last
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
    )
    stages = params.stages()
    log.debug("gatys %dx%d on %s, stages %s", final_w, final_h, device, stages)

    canvas: torch.Tensor | None = None
    done = 0
    for size, epochs in stages:
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
        start = _initial(params, content_t, style_ts[0][0]) if canvas is None else canvas
        canvas = _optimise(
            job, content_t, style_ts, _resized(start, content_t), epochs=epochs, done=done
        )
        done += epochs
    assert canvas is not None
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
    names = list(dict.fromkeys(content_names + style_names))
    canvas = (start.detach() * _PIXEL).contiguous()
    canvas.requires_grad_(True)
    optimizer = _optimizer(params, canvas)
    # The loss terms stay on the device: reading them waits for the GPU, so that happens
    # only when progress is reported. (L-BFGS itself reads the loss and gradient each step.)
    terms: dict[str, torch.Tensor] = {}

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
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
        if params.tv_weight > 0:
            tv_term = params.tv_weight * tv_loss(canvas)
            total = total + tv_term
            terms["tv"] = tv_term.detach()
        total.backward()  # type: ignore[no-untyped-call]
        terms.update(content=content_term.detach(), style=style_term.detach(), total=total.detach())
        return total

    last = done + epochs
    for epoch in range(done + 1, last + 1):
        check_cancel(job.cancel)
        optimizer.step(closure)  # type: ignore[arg-type]
        if job.progress is not None and (epoch % job.progress_every == 0 or epoch == last):
            losses = {k: float(v) for k, v in terms.items()}
            elapsed = time.perf_counter() - job.started
            job.progress(Progress(epoch, params.epochs, losses, elapsed))
        if job.preview is not None and params.preview_every and epoch % params.preview_every == 0:
            job.preview(tensor_to_image(job.finish(canvas.detach() / _PIXEL)), epoch)
    return canvas.detach().div(_PIXEL).clamp(0.0, 1.0)


def _optimizer(params: GatysParams, canvas: torch.Tensor) -> torch.optim.Optimizer:
    match params.optimizer:
        case Optimizer.LBFGS:
            # max_iter=1: each step() is exactly one evaluation, so an epoch is one too.
            return torch.optim.LBFGS(
                [canvas], lr=params.learning_rate, max_iter=1, history_size=params.lbfgs_history
            )
        case Optimizer.ADAM:
            return torch.optim.Adam([canvas], lr=params.learning_rate)
