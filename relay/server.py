"""Run the relay until SIGINT or SIGTERM, then shut down gracefully."""

import logging

from aiohttp import web

from relay.app import init
from relay.config import Config

log = logging.getLogger(__name__)


def serve(config: Config) -> None:
    """Serve the web app on `config.host:config.http_port` (blocks)."""
    log.info(
        "relay: web on http://%s:%d/, data in %s",
        config.host,
        config.http_port,
        config.data_dir.resolve(),
    )
    web.run_app(
        init(config),
        host=config.host,
        port=config.http_port,
        shutdown_timeout=10.0,
        print=None,
        access_log=None,
        # Never inflate a request body: compressed bodies are refused (relay.intake).
        auto_decompress=False,
    )
