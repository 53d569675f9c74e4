"""`python -m gpu_node styles`: list every fast style id this node can serve."""

import argparse
import json
import sys
from pathlib import Path

from gpu_node.fast.registry import MODELS_DIR_ENV, build_registry, default_models_dir


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `styles` subcommand."""
    parser = sub.add_parser(
        "styles",
        help="list the fast style ids this node can serve",
        description="List built-in styles and the trained models found in the models dir.",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=default_models_dir(),
        help=f"folder of trained .safetensors styles (default: ${MODELS_DIR_ENV})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (no thumbnails)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per style: id, kind and display name."""
    registry = build_registry(args.models_dir)
    if args.json:
        rows = [
            {k: v for k, v in advert.items() if k != "thumbnail"} for advert in registry.adverts()
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    width = max(len(entry.id) for entry in registry)
    for entry in registry:
        sys.stdout.write(f"{entry.id:<{width}}  {entry.kind.value:<7}  {entry.name}\n")
    return 0
