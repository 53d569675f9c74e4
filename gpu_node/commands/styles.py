"""`python -m gpu_node styles`: list every fast style id this node can serve."""

import argparse
import json
import sys
from pathlib import Path

from gpu_node.commands import DefaultsHelpFormatter
from gpu_node.fast.registry import MODELS_DIR_ENV, build_registry, default_models_dir


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `styles` subcommand."""
    parser = sub.add_parser(
        "styles",
        help="list the fast style ids this node can serve",
        description="List built-in styles and the trained models found in the models dir, "
        "sorted by id. Reads only the models' headers: no torch, no weights.",
        formatter_class=DefaultsHelpFormatter,
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
    """Print a header, then one line per style sorted by id: id, kind and display name."""
    registry = build_registry(args.models_dir)
    if args.json:
        rows = [
            {k: v for k, v in advert.items() if k != "thumbnail"} for advert in registry.adverts()
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    lines = sorted((entry.id, entry.kind.value, entry.name) for entry in registry)
    lines.insert(0, ("ID", "KIND", "NAME"))
    width = max(len(line[0]) for line in lines)
    for style_id, kind, name in lines:
        sys.stdout.write(f"{style_id:<{width}}  {kind:<7}  {name}\n")
    return 0
