"""`python -m gpu_node thumbnails`: re-render the built-in styles' thumbnails (developers,
after changing the network or the names; see `gpu_node.fast.make_thumbnails`)."""

import argparse
from pathlib import Path

from gpu_node.commands import DefaultsHelpFormatter


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `thumbnails` subcommand."""
    parser = sub.add_parser(
        "thumbnails",
        help="re-render the built-in styles' thumbnails (for developers)",
        description="Render the 26 built-in styles' gallery thumbnails from the shipped photo.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--out-dir", type=Path, help="where to write (default: the package's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render every thumbnail; log each file written."""
    # torch loads here, not at start-up: `--help` stays instant.
    from gpu_node.fast.make_thumbnails import OUT_DIR, render_builtin_thumbnails  # noqa: PLC0415

    render_builtin_thumbnails(args.out_dir or OUT_DIR)
    return 0
