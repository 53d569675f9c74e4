"""`make run`: the whole service on one machine, a relay and a local node, in one command.

The relay runs in this process on 127.0.0.1; the node daemon runs as a child process
(`python -m gpu_node`) that dials it with a token made for it, on CUDA if present, else the
CPU. The relay itself never imports torch: the node is another process. Ctrl-C stops both
(the node drains first). Every relay flag and `STYLERELAY_*` variable works here too.
"""

import argparse
import asyncio
import logging
import math
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from relay import config as config_module
from relay.app import NODE_LISTENER, init
from relay.config import Config
from relay.errors import ConfigError
from relay.tokens import TokenStore

log = logging.getLogger("relay.dev")

LOCAL_NODE = "local"
# On Ctrl-C the node may finish a job for this long, then hands it back (it stays queued).
DRAIN_GRACE = 10.0
DRAIN_WAIT = DRAIN_GRACE + 10.0


def build_parser() -> argparse.ArgumentParser:
    """The relay's flags plus the local node's."""
    parser = argparse.ArgumentParser(
        prog="make run",
        description="Start a Stylerelay relay and a local GPU/CPU node on this machine.",
    )
    config_module.add_arguments(parser)
    parser.add_argument("--device", default="auto", help="the local node's device (auto|cuda|cpu)")
    parser.add_argument("--no-node", action="store_true", help="start the relay alone")
    return parser


def local_token(config: Config) -> str:
    """A fresh token for the local node; the old one (stored hashed, unreadable) is revoked."""
    store = TokenStore(config.data_dir)
    if any(info.name == LOCAL_NODE for info in store.list()):
        store.revoke(LOCAL_NODE)
    return store.add(LOCAL_NODE)


def node_command(config: Config, port: int, device: str) -> list[str]:
    """The command line of the local node daemon (the token travels in its environment)."""
    return [
        sys.executable,
        "-m",
        "gpu_node",
        "--relay",
        f"127.0.0.1:{port}",
        "--name",
        LOCAL_NODE,
        "--device",
        device,
        "--max-epochs",
        str(config.max_epochs),
        "--drain-grace",
        str(DRAIN_GRACE),
        # Enough slots that the live share (--live-share) leaves the camera one: with a
        # single slot, half of it is none, and Live would say no node can paint.
        "--slots",
        str(local_slots(config.live_share)),
    ]


def local_slots(live_share: float) -> int:
    """Slots of the local node: one for jobs, and as many as a live session needs."""
    return max(2, math.ceil(1 / live_share)) if live_share > 0 else 1


def local_node_ctx(config: Config, device: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context that starts the node once the node port is bound."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        port = app[NODE_LISTENER].port
        env = {**os.environ, "STYLERELAY_NODE_TOKEN": local_token(config)}
        # Its own session: Ctrl-C in the terminal reaches the relay, which then drains the
        # node with one SIGTERM, instead of both getting the signal at once.
        node = subprocess.Popen(node_command(config, port, device), env=env, start_new_session=True)
        url = f"http://{config.host}:{config.http_port}/"
        sys.stdout.write(
            f"\nStylerelay is running: open {url}\n"
            f"The local node (pid {node.pid}) is loading its models and connecting.\n"
            "Press Ctrl-C to stop.\n\n"
        )
        sys.stdout.flush()
        yield
        if node.poll() is None:
            node.terminate()  # SIGTERM: the daemon drains, then says Bye
            # Polled on the loop: the relay must keep serving the node while it drains.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DRAIN_WAIT
            while node.poll() is None and loop.time() < deadline:
                await asyncio.sleep(0.1)
            if node.poll() is None:
                log.warning("the local node did not stop in %.0f s; killing it", DRAIN_WAIT)
                node.kill()
                node.wait()

    return ctx


def main(argv: list[str] | None = None) -> int:
    """Start the relay and the local node; return the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    flags = {name: getattr(args, name, None) for name in config_module.SETTINGS}
    # A trial on one machine listens on loopback unless told otherwise.
    env = {"STYLERELAY_HOST": "127.0.0.1", **os.environ}
    try:
        config = Config.load(flags, env)
    except ConfigError as exc:
        sys.stderr.write(f"make run: {exc}\n")
        return 2
    app = init(config)
    if not args.no_node:
        app.cleanup_ctx.append(local_node_ctx(config, args.device))
    try:
        web.run_app(app, host=config.host, port=config.http_port, print=None, access_log=None)
    except OSError as exc:
        sys.stderr.write(
            f"make run: cannot listen on {config.host}:{config.http_port} or the node port "
            f"{config.node_port}: {exc.strerror}. Is another relay running? "
            "Choose other ports with --http-port and --node-port.\n"
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
