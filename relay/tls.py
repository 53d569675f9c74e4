"""TLS for the node port: the relay's server context from a PEM certificate and key."""

import ssl
from pathlib import Path

from relay.errors import ConfigError


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context; ConfigError naming the file when it cannot be loaded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(f"--node-tls-cert/--node-tls-key: no such file: {exc.filename}") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"--node-tls-cert {cert} / --node-tls-key {key}: cannot be loaded ({exc}); "
            "both must be PEM files and the key must match the certificate"
        ) from None
    return context
