"""`python -m gpu_node run --relay HOST:PORT --token T`: serve a relay as a GPU node.

`python -m gpu_node --relay ...` means the same. Runs until SIGTERM or SIGINT (drains, exit
status 0) or until the relay refuses the token or protocol version (exit status 2).
"""

import argparse
import asyncio

from gpu_node.daemon.config import add_arguments, from_args


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the `run` subcommand."""
    parser = sub.add_parser(
        "run",
        help="dial a relay and run its jobs on this machine",
        description=(
            "Dial out to a Stylerelay relay, advertise this node's methods and styles, and "
            "run the jobs it offers. Every flag can also be set as STYLERELAY_NODE_<FLAG> "
            "(e.g. STYLERELAY_NODE_TOKEN); flags win. SIGTERM drains: the running job "
            "finishes (or is handed back after --drain-grace seconds), then the node leaves."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the daemon from flags and the environment, and serve until told to stop."""
    # torch loads here, not at start-up: `--help` stays instant.
    from gpu_node.daemon.daemon import create_daemon, serve  # noqa: PLC0415

    config = from_args(args)
    daemon = create_daemon(config)
    return asyncio.run(serve(daemon))
