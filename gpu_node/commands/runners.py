"""The `stylize` command's runners, one per method of `gpu_node.methods` (this module loads
torch; `stylize` imports it only to run).

Each takes the parsed options, the job parameters already checked against the shared table
(`stylize.job_values`), the photo and the device, and returns the styled picture.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping

import torch
from PIL import Image
from tqdm import tqdm

from gpu_node.engine.gatys import stylize_gatys
from gpu_node.engine.gatys_params import GatysParams, Init, Optimizer
from gpu_node.engine.layers import Pooling
from gpu_node.engine.progress import EngineProgress
from gpu_node.engine.weights import load_weights
from gpu_node.errors import BadInputError
from gpu_node.fast.allocator import keep_freed_memory
from gpu_node.fast.engine import FastEngine
from gpu_node.fast.registry import build_registry
from gpu_node.fast.spec import parse_style_mix
from gpu_node.images import DEFAULT_MAX_PIXELS, open_image, resize_long_side
from gpu_node.tensors import image_to_tensor, tensor_to_image
from protocol.params import Value

Runner = Callable[[argparse.Namespace, Mapping[str, Value], Image.Image, torch.device], Image.Image]
"""Styles the content image for one method."""


def gatys_params(values: Mapping[str, Value], max_epochs: int | None) -> GatysParams:
    """The engine's parameters from the checked job parameters (no cap: `epochs`)."""
    epochs = int(values["epochs"])
    return GatysParams(
        size=int(values["size"]),
        epochs=epochs,
        max_epochs=max_epochs if max_epochs is not None else epochs,
        content_weight=float(values["content_weight"]),
        style_weight=float(values["style_weight"]),
        tv_weight=float(values["tv_weight"]),
        optimizer=Optimizer(values["optimizer"]),
        learning_rate=float(values["learning_rate"]),
        init=Init(values["init"]),
        seed=int(values["seed"]),
        pooling=Pooling(values["pooling"]),
        style_scale=float(values["style_scale"]),
        preserve_colors=bool(values["keep_colors"]),
        style_strength=float(values["strength"]),
    )


def run_gatys(
    args: argparse.Namespace,
    values: Mapping[str, Value],
    content: Image.Image,
    device: torch.device,
) -> Image.Image:
    """Optimise the picture towards one or more style images (blended by weight)."""
    if not args.style_image:
        raise BadInputError("gatys needs at least one --style-image")
    blends = args.style_weights or [1.0] * len(args.style_image)
    if len(blends) != len(args.style_image):
        raise BadInputError(
            f"{len(blends)} --style-weights for {len(args.style_image)} --style-image"
        )
    params = gatys_params(values, args.max_epochs)
    styles = [
        (open_image(path, max_pixels=DEFAULT_MAX_PIXELS), weight)
        for path, weight in zip(args.style_image, blends, strict=True)
    ]
    weights = load_weights(args.weights)
    with tqdm(total=params.epochs, unit="epoch", file=sys.stderr, dynamic_ncols=True) as bar:

        def progress(p: EngineProgress) -> None:
            bar.set_postfix({k: f"{v:.3g}" for k, v in p.losses.items()}, refresh=False)
            bar.update(p.epoch - bar.n)

        return stylize_gatys(
            content, styles, params, device=device, weights=weights, progress=progress
        )


def _photo(values: Mapping[str, Value], content: Image.Image) -> torch.Tensor:
    keep_freed_memory()
    return image_to_tensor(resize_long_side(content, int(values["size"])))


def run_fast(
    args: argparse.Namespace,
    values: Mapping[str, Value],
    content: Image.Image,
    device: torch.device,
) -> Image.Image:
    """A built-in style, a blend of built-ins, or a trained style."""
    if not args.style:
        raise BadInputError("--method fast needs --style ID (see `python -m gpu_node styles`)")
    request = parse_style_mix(args.style)
    photo = _photo(values, content)
    engine = FastEngine(build_registry(args.models_dir), device)
    out = engine.stylize(
        photo,
        request,
        strength=float(values["strength"]),
        preserve_colors=bool(values["keep_colors"]),
    )
    return tensor_to_image(out)


def run_arbitrary(
    args: argparse.Namespace,
    values: Mapping[str, Value],
    content: Image.Image,
    device: torch.device,
) -> Image.Image:
    """Any picture as the style, at the photo's full (`--size`) resolution."""
    if len(args.style_image) != 1:
        raise BadInputError("--method arbitrary needs exactly one --style-image")
    style = open_image(args.style_image[0], max_pixels=DEFAULT_MAX_PIXELS)
    photo = _photo(values, content)
    engine = FastEngine(build_registry(None), device)
    out = engine.stylize_arbitrary(
        photo,
        style,
        strength=float(values["strength"]),
        preserve_colors=bool(values["keep_colors"]),
    )
    return tensor_to_image(out)


RUNNERS: dict[str, Runner] = {"gatys": run_gatys, "fast": run_fast, "arbitrary": run_arbitrary}
"""Method name -> runner, one per entry of `gpu_node.methods.METHODS`."""
