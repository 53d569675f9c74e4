"""`python -m gpu_node train`: teach a new fast style (Johnson et al.) from one painting."""

import argparse
import logging
from pathlib import Path

from gpu_node.commands import DefaultsHelpFormatter
from gpu_node.fast.trainconfig import TrainConfig

log = logging.getLogger(__name__)
_DEFAULTS = TrainConfig(dataset=Path(), style=Path(), out=Path())


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `train` subcommand."""
    p = sub.add_parser(
        "train",
        help="train a new fast style from a painting and a folder of photos",
        description="Train a feed-forward style network (Johnson et al.) and write it as one "
        ".safetensors file that a node serves from its models dir.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--dataset", type=Path, required=True, help="folder of JPEG/PNG photos")
    p.add_argument("--style", type=Path, required=True, help="the style picture")
    p.add_argument("--out", type=Path, required=True, help="the model file to write")
    p.add_argument("--name", default="", help="display name (default: from the style file)")
    d = _DEFAULTS
    p.add_argument("--iterations", type=int, default=d.iterations, help="training steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="photos per step")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--image-size", type=int, default=d.image_size, help="training crop side")
    p.add_argument("--style-size", type=int, default=d.style_size, help="style picture's long side")
    p.add_argument(
        "--checkpoint-interval", type=int, default=d.checkpoint_interval, help="steps between saves"
    )
    p.add_argument("--content-weight", type=float, default=d.content_weight, help="loss weight")
    p.add_argument("--style-weight", type=float, default=d.style_weight, help="loss weight")
    p.add_argument("--tv-weight", type=float, default=d.tv_weight, help="smoothness weight")
    p.add_argument(
        "--content-layer",
        choices=("relu2_2", "relu3_3"),
        default=d.content_layer,
        help="VGG layer the content loss compares",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument(
        "--resume", type=Path, default=argparse.SUPPRESS, help="checkpoint to continue from"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train and report where the model went."""
    # torch loads here, not at start-up: `--help` stays instant.
    from gpu_node.device import pick_device  # noqa: PLC0415
    from gpu_node.fast.training import train  # noqa: PLC0415

    config = TrainConfig(
        dataset=args.dataset,
        style=args.style,
        out=args.out,
        name=args.name,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        image_size=args.image_size,
        style_size=args.style_size,
        checkpoint_interval=args.checkpoint_interval,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        content_layer=args.content_layer,
        seed=args.seed,
    )
    config.validate()
    device = pick_device(args.device)
    result = train(config, device, resume=getattr(args, "resume", None))
    log.info(
        "trained %d iterations in %.0f s on %s; loss %.4g -> %.4g; wrote %s",
        result.iterations,
        result.seconds,
        device,
        result.first_loss,
        result.last_loss,
        result.model,
    )
    return 0
