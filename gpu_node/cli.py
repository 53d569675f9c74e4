"""Command line of the node: `stylize`, `styles`, `train`, the daemon itself (`run`), and
`thumbnails` for developers.

Each subcommand lives in `gpu_node.commands.<name>` and adds itself with `register`.
Errors a person caused end with exit status 2 and one line on stderr, never a traceback.
"""

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

from gpu_node.errors import BadInputError, NodeError

# Subcommand modules; each exposes register(subparsers) and sets `func` on its parser.
COMMANDS = ("stylize", "styles", "train", "run", "thumbnails")

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every subcommand that is installed."""
    parser = argparse.ArgumentParser(
        prog="stylerelay-node",
        description="Stylerelay GPU node: run style transfer locally or serve a relay.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"gpu_node.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gpu_node.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one subcommand; return the exit status."""
    args_list = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # `python -m gpu_node --relay HOST:PORT --token T` runs the daemon without naming it.
    if args_list and args_list[0].startswith("--relay"):
        args_list = ["run", *args_list]
    args = parser.parse_args(args_list)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return func(args)
    except BadInputError as exc:
        sys.stderr.write(f"stylerelay-node: {exc}\n")
        return 2
    except NodeError as exc:
        sys.stderr.write(f"stylerelay-node: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("stylerelay-node: interrupted\n")
        return 130
