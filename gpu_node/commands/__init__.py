"""Subcommands of `python -m gpu_node`, one module each, each with `register(subparsers)`."""
