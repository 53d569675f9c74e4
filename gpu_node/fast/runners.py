"""The `stylize` command's fast methods: `--method fast` and `--method arbitrary`.

    python -m gpu_node stylize --method fast --style builtin:starry-blue:0.7,red-fauve:0.3 \\
        --content photo.jpg --out out.png [--strength 0.8 --preserve-colors]
    python -m gpu_node stylize --method arbitrary --style-image painting.jpg \\
        --content photo.jpg --out out.png

The photo is scaled to `--size` on its long side and stylised at that resolution. Their
options are added by the `stylize` command, which imports this module only to run.
"""

import argparse
import logging
from collections.abc import Callable

import torch
from PIL import Image

from gpu_node.errors import BadInputError
from gpu_node.fast.allocator import keep_freed_memory
from gpu_node.fast.engine import FastEngine
from gpu_node.fast.registry import build_registry
from gpu_node.fast.spec import check_strength, parse_style_mix
from gpu_node.images import DEFAULT_MAX_PIXELS, open_image, resize_long_side
from gpu_node.tensors import image_to_tensor, tensor_to_image

log = logging.getLogger(__name__)


def _prepare(args: argparse.Namespace, content: Image.Image) -> torch.Tensor:
    check_strength(args.strength)
    keep_freed_memory()
    return image_to_tensor(resize_long_side(content, args.size))


def run_fast(args: argparse.Namespace, content: Image.Image, device: torch.device) -> Image.Image:
    """A built-in style, a blend of built-ins, or a trained style."""
    if not args.style:
        raise BadInputError("--method fast needs --style ID (see `python -m gpu_node styles`)")
    request = parse_style_mix(args.style)
    photo = _prepare(args, content)
    engine = FastEngine(build_registry(args.models_dir), device)
    out = engine.stylize(
        photo, request, strength=args.strength, preserve_colors=args.preserve_colors
    )
    return tensor_to_image(out)


def run_arbitrary(
    args: argparse.Namespace, content: Image.Image, device: torch.device
) -> Image.Image:
    """Any picture as the style, at the photo's full (`--size`) resolution."""
    if len(args.style_image) != 1:
        raise BadInputError("--method arbitrary needs exactly one --style-image")
    style = open_image(args.style_image[0], max_pixels=DEFAULT_MAX_PIXELS)
    photo = _prepare(args, content)
    engine = FastEngine(build_registry(None), device)
    out = engine.stylize_arbitrary(
        photo, style, strength=args.strength, preserve_colors=args.preserve_colors
    )
    return tensor_to_image(out)


Runner = Callable[[argparse.Namespace, Image.Image, torch.device], Image.Image]

RUNNERS: dict[str, Runner] = {"fast": run_fast, "arbitrary": run_arbitrary}
"""Method name -> runner, merged into the `stylize` command's table."""
