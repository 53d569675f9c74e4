"""TLS for the node's connection to the relay: verify the relay's certificate.

The system's CAs by default, one PEM file with `--ca-file` (a private CA), or no check at
all with `--insecure`, which is for testing only and says so loudly in the log.
"""

from __future__ import annotations

import logging
import ssl

from gpu_node.daemon.config import ConfigError, NodeConfig

log = logging.getLogger(__name__)


def client_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The TLS context to dial the relay with, or None for plain TCP; ConfigError if unusable."""
    if not config.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.insecure:
        log.warning(
            "INSECURE: the relay's TLS certificate is NOT checked (--insecure). Anyone between "
            "this node and %s can read the jobs and pose as the relay. Use it for testing only.",
            config.relay,
        )
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca_file is not None:
        try:
            context.load_verify_locations(cafile=config.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"--ca-file {config.ca_file}: not a readable PEM file ({exc})"
            ) from None
    return context


def explain(exc: ssl.SSLError, config: NodeConfig) -> str:
    """A log line for a failed TLS handshake that says what to do about it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        where = f"the CA in {config.ca_file}" if config.ca_file else "this machine's trusted CAs"
        return (
            f"the relay's TLS certificate could not be verified against {where}: "
            f"{exc.verify_message or exc}; if the relay uses a private CA, give --ca-file"
        )
    return f"TLS handshake with the relay failed: {exc.reason or exc}; is its node port TLS?"
