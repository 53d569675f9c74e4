"""The relay's one configuration object, built once from flags and `STYLERELAY_*` variables.

A flag wins over its environment variable, which wins over the default. Every value is cast
and checked here, so a typo stops the relay at start-up with a message naming the setting.
"""

import argparse
import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_TRANSFER_SIZE
from protocol.live import MAX_LIVE_SIDE
from relay.errors import ConfigError

ENV_PREFIX = "STYLERELAY_"
# Pillow refuses images above twice this as decompression bombs; staying below its warning
# threshold keeps every image we accept out of Pillow's bomb handling altogether.
PIXEL_CEILING = 89_478_485
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
LOG_FORMATS = ("text", "kv", "json")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text) if text.strip() != "0" else 0
    if value > 65535:
        raise ValueError(f"a port is 0..65535, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a positive number, got {text!r}")
    return value


def _share(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise ValueError(f"a share is above 0 and at most 1, got {text!r}")
    return value


def _live_side(text: str) -> int:
    value = _positive_int(text)
    if not 64 <= value <= MAX_LIVE_SIDE:
        raise ValueError(f"must be 64..{MAX_LIVE_SIDE} pixels, got {value}")
    return value


def _duration(text: str) -> float:
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"expected seconds or a duration like 90s, 15m, 24h, 7d; got {text!r}")
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]
    value = float(match.group(1)) * scale
    if value <= 0:
        raise ValueError(f"must be longer than zero, got {text!r}")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected yes/no (1/0, true/false, on/off), got {text!r}")


def _pixels(text: str) -> int:
    value = _positive_int(text)
    if value > PIXEL_CEILING:
        raise ValueError(f"at most {PIXEL_CEILING} pixels, got {value}")
    return value


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a value, got an empty string")
    return text.strip()


def _log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}, got {text!r}")
    return value


def _public_url(text: str) -> str:
    value = text.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
        raise ValueError(f"expected an http(s) URL like https://relay.example.org, got {text!r}")
    return value


def _count(text: str) -> int:
    """A whole number that may be zero (0 turns a limit off where the flag says so)."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def _networks(text: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks (`127.0.0.1,10.0.0.0/8,::1`).

    `no` (or empty) means none. A bare `yes`, which once meant "trust any peer", is refused:
    trusting everyone lets any client forge its address.
    """
    value = text.strip().lower()
    if value in _FALSE or not value:
        return ()
    if value in _TRUE:
        raise ValueError(
            "give the proxies' addresses (e.g. 127.0.0.1,::1), not yes: trusting every peer "
            "lets any client forge X-Forwarded-For"
        )
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(out)


def _origins(text: str) -> tuple[str, ...]:
    """Comma-separated origins (`https://app.example.org`) allowed to post and open sockets."""
    out = []
    for item in (part.strip().rstrip("/") for part in text.split(",")):
        if not item:
            continue
        if not re.match(r"^https?://[^/\s]+$", item):
            raise ValueError(f"an origin is scheme://host[:port], got {item!r}")
        out.append(item.lower())
    return tuple(out)


def _database_url(text: str) -> str:
    """A PostgreSQL URL: cluster mode (relay.cluster) keeps the shared state there."""
    value = text.strip()
    if not re.match(r"^postgres(ql)?://\S+$", value):
        raise ValueError("expected postgresql://user:password@host:port/database")
    return value


def _blob_url(text: str) -> str:
    """Where cluster mode keeps files: file:///shared/folder or s3://bucket?endpoint=..."""
    from relay.cluster.blobs import parse_blob_url  # noqa: PLC0415 (only cluster mode)

    parse_blob_url(text)
    return text.strip()


def _path(text: str) -> Path:
    if not text.strip():
        raise ValueError("expected a path, got an empty string")
    return Path(text).expanduser()


@dataclass(frozen=True)
class Config:
    """Every setting of the relay; immutable, passed down explicitly."""

    host: str = "0.0.0.0"
    http_port: int = 1337
    node_port: int = 5678
    data_dir: Path = Path("data")
    web_dir: Path | None = None
    max_epochs: int = 1000
    max_pixels: int = 24_000_000
    max_size: int = 2048
    default_size: int = 512
    max_upload_mb: float = 10.0
    result_ttl: float = 24 * 3600.0
    queue_capacity: int = 500
    queue_unservable: int = 50
    """Of the queue, how many jobs no connected node could run may wait (the rest is kept
    for jobs the nodes do run)."""
    max_open_jobs: int = 3
    rate_per_minute: int = 20
    retry_after: int = 30
    heartbeat_interval: float = 5.0
    stall_timeout: float = 120.0
    epoch_budget: float = 30.0
    tick_interval: float = 1.0
    sweep_interval: float = 30.0
    trusted_proxy: tuple[str, ...] = ()
    """Networks of reverse proxies whose X-Forwarded-For is believed; empty: none."""
    allowed_origins: tuple[str, ...] = ()
    """Origins besides the relay's own that may POST, DELETE and open WebSockets."""
    body_timeout: float = 30.0
    uploads_per_client: int = 2
    decode_workers: int = 2
    body_buffer_client_mb: float = 140.0
    body_buffer_total_mb: float = 200.0
    client_quota_mb: float = 500.0
    max_disk_gb: float = 20.0
    queue_timeout: float = 6 * 3600.0
    unservable_after: float = 600.0
    """How long a queued job every connected node that fits it has declined may wait for
    another before it fails with the nodes' reasons."""
    max_node_slots: int = 4
    live_max_seconds: float = 300.0
    """How long one live session (the camera painted live) may last."""
    live_max_side: int = 512
    """The longest side of a live frame, in pixels."""
    live_share: float = 0.5
    """The share of each node's slots that live sessions may hold, so queued jobs still run."""
    max_pending_nodes: int = 64
    max_pending_per_address: int = 8
    token_failures_per_minute: int = 10
    node_pause: float = 600.0
    mail_per_recipient_hour: int = 3
    gallery_keep: float = 30 * 86400.0
    """How long a shared result stays in the public gallery."""
    gallery_max: int = 10_000
    """Most items the gallery keeps; the oldest leave first."""
    gallery_report_threshold: int = 3
    """Reports (from distinct clients) that hide a gallery item until an operator looks."""
    gallery_reports_per_hour: int = 10
    """Gallery reports one client may send per hour."""
    handshake_timeout: float = 10.0
    node_max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    node_max_transfer_size: int = DEFAULT_MAX_TRANSFER_SIZE
    node_tls_cert: Path | None = None
    node_tls_key: Path | None = None
    log_format: str = "text"
    public_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_from: str | None = None
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_starttls: bool = True
    smtp_attach_max_mb: float = 5.0
    database_url: str | None = field(default=None, repr=False)
    """PostgreSQL shared by the replicas (cluster mode); None: one relay, SQLite."""
    blob_url: str | None = None
    """Where the replicas keep files (cluster mode); None: the data dir."""
    replica_dead_after: float = 15.0
    """Cluster mode: how long a replica may miss heartbeats before others take its jobs."""

    @property
    def max_upload_bytes(self) -> int:
        """The byte cap of one uploaded image."""
        return int(self.max_upload_mb * 1024 * 1024)

    def __post_init__(self) -> None:
        if self.default_size > self.max_size:
            raise ConfigError(f"default size {self.default_size} is above max size {self.max_size}")
        if (self.node_tls_cert is None) != (self.node_tls_key is None):
            raise ConfigError(
                "--node-tls-cert and --node-tls-key go together; give both or neither"
            )
        if self.smtp_host is not None and (self.smtp_from is None or self.public_url is None):
            raise ConfigError(
                "--smtp-host needs --smtp-from (the sender address) and --public-url "
                "(for the links in the messages)"
            )
        if (self.smtp_user is None) != (self.smtp_password is None):
            raise ConfigError("--smtp-user and --smtp-password go together; give both or neither")
        if (self.database_url is None) != (self.blob_url is None):
            raise ConfigError(
                "--database-url and --blob-url go together (cluster mode: the replicas share "
                "the database and the files); give both or neither"
            )

    @property
    def cluster(self) -> bool:
        """Whether this relay is one replica of several (docs/scale-out.md)."""
        return self.database_url is not None

    @property
    def mail_enabled(self) -> bool:
        """Whether finished jobs with an address get an e-mail."""
        return self.smtp_host is not None

    @classmethod
    def load(cls, flags: Mapping[str, str | None], environ: Mapping[str, str]) -> "Config":
        """Build from parsed flags (name -> raw text or None) and an environment."""
        values: dict[str, Any] = {}
        for name, (cast, _help) in SETTINGS.items():
            env_name = ENV_PREFIX + name.upper()
            raw, origin = flags.get(name), "--" + name.replace("_", "-")
            if raw is None and env_name in environ:
                raw, origin = environ[env_name], env_name
            if raw is None:
                continue
            try:
                values[name] = cast(raw)
            except ValueError as exc:
                raise ConfigError(f"{origin}: {exc}") from None
        return cls(**values)

    def replace(self, **changes: Any) -> "Config":
        """A copy with some settings changed (tests and benchmarks)."""
        return dataclasses.replace(self, **changes)


Cast = Callable[[str], Any]
SETTINGS: dict[str, tuple[Cast, str]] = {
    "host": (str, "address to listen on (default 0.0.0.0)"),
    "http_port": (_port, "web and API port (default 1337)"),
    "node_port": (_port, "port GPU nodes dial (default 5678)"),
    "data_dir": (_path, "jobs database, uploads, results and node tokens (default ./data)"),
    "web_dir": (_path, "static files of the page (default: the installed web/ package)"),
    "max_epochs": (_positive_int, "highest epochs a job may ask for (default 1000)"),
    "max_pixels": (_pixels, "most pixels an uploaded image may have (default 24000000)"),
    "max_size": (_positive_int, "longest side of a job's output in pixels (default 2048)"),
    "default_size": (_positive_int, "output size when a job names none (default 512)"),
    "max_upload_mb": (_positive_float, "byte cap of one uploaded image in MiB (default 10)"),
    "result_ttl": (_duration, "how long results are kept, e.g. 24h (default 24h)"),
    "queue_capacity": (_positive_int, "most jobs waiting at once (default 500)"),
    "queue_unservable": (
        _count,
        "of those, most jobs no connected node can run (wrong method, style or size); "
        "more are refused (default 50)",
    ),
    "max_open_jobs": (_positive_int, "most queued or running jobs per client (default 3)"),
    "rate_per_minute": (_positive_int, "most new jobs per client per minute (default 20)"),
    "retry_after": (_positive_int, "seconds a client is told to wait when full (default 30)"),
    "heartbeat_interval": (_duration, "seconds between node heartbeats (default 5)"),
    "stall_timeout": (
        _duration,
        "silence allowed from a busy node per job and megapixel (default 120s; fast and "
        "arbitrary jobs: at most 30s)",
    ),
    "epoch_budget": (_duration, "seconds allowed per epoch per megapixel (default 30)"),
    "tick_interval": (_duration, "how often timeouts are checked (default 1s)"),
    "sweep_interval": (
        _duration,
        "how often expired results and ended jobs' images are deleted (default 30s)",
    ),
    "trusted_proxy": (
        _networks,
        "reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For is believed "
        "(default: none)",
    ),
    "allowed_origins": (
        _origins,
        "other web origins allowed to post jobs and open sockets, comma-separated (default: none)",
    ),
    "body_timeout": (_duration, "seconds a request body may take to arrive (default 30)"),
    "uploads_per_client": (
        _positive_int,
        "job uploads one client may have being received or decoded at once (default 2)",
    ),
    "decode_workers": (_positive_int, "threads decoding uploaded images (default 2)"),
    "body_buffer_client_mb": (
        _positive_float,
        "MiB of unfinished request bodies one client may hold (default 140)",
    ),
    "body_buffer_total_mb": (
        _positive_float,
        "MiB of unfinished request bodies all clients together may hold (default 200)",
    ),
    "client_quota_mb": (
        _positive_float,
        "MiB of stored images (inputs and results) one client may hold (default 500)",
    ),
    "max_disk_gb": (
        _positive_float,
        "GiB the data dir may hold; new jobs are refused (507) beyond it (default 20)",
    ),
    "queue_timeout": (_duration, "how long a job may wait for a node before it fails (default 6h)"),
    "unservable_after": (
        _duration,
        "how long a job every connected node declined waits before it fails (default 10m)",
    ),
    "max_node_slots": (_positive_int, "most slots the relay believes of one node (default 4)"),
    "live_max_seconds": (_duration, "longest live session (default 300s)"),
    "live_max_side": (_live_side, "longest side of a live frame, pixels (default 512)"),
    "live_share": (_share, "share of each node's slots live sessions may hold (default 0.5)"),
    "max_pending_nodes": (
        _positive_int,
        "node connections that have not finished their handshake, in total (default 64)",
    ),
    "max_pending_per_address": (
        _positive_int,
        "node connections not yet through the handshake, per address (default 8)",
    ),
    "token_failures_per_minute": (
        _positive_int,
        "wrong node tokens allowed per address per minute (default 10)",
    ),
    "node_pause": (
        _duration,
        "how long a node whose jobs keep failing (but succeed elsewhere) is rested (default 10m)",
    ),
    "mail_per_recipient_hour": (
        _positive_int,
        "e-mails one address may receive per hour (default 3)",
    ),
    "gallery_keep": (
        _duration,
        "how long a shared result stays in the public gallery (default 30d)",
    ),
    "gallery_max": (
        _positive_int,
        "most items in the public gallery, oldest leave (default 10000)",
    ),
    "gallery_report_threshold": (
        _positive_int,
        "reports that hide a gallery item until an operator reviews it (default 3)",
    ),
    "gallery_reports_per_hour": (
        _positive_int,
        "gallery reports one client may send per hour (default 10)",
    ),
    "handshake_timeout": (_duration, "seconds a new node connection has to say Hello (default 10)"),
    "node_max_frame_size": (_positive_int, "largest frame a node may send, bytes (default 1 MiB)"),
    "node_max_transfer_size": (
        _positive_int,
        "largest image a node may send, bytes (default 64 MiB)",
    ),
    "node_tls_cert": (_path, "PEM certificate chain: serve the node port over TLS"),
    "node_tls_key": (_path, "PEM private key of --node-tls-cert"),
    "log_format": (_log_format, "log lines as text, kv (key=value) or json (default text)"),
    "public_url": (_public_url, "the relay's public address, for links in e-mails"),
    "smtp_host": (_text, "SMTP server: e-mail people whose job ended (default: no e-mail)"),
    "smtp_port": (_port, "SMTP port (default 587)"),
    "smtp_from": (_text, "sender address of the e-mails"),
    "smtp_user": (_text, "SMTP login (optional)"),
    "smtp_password": (_text, "SMTP password (optional; prefer the environment variable)"),
    "smtp_starttls": (_bool, "upgrade the SMTP connection with STARTTLS (default yes)"),
    "smtp_attach_max_mb": (
        _positive_float,
        "attach the result to the e-mail when at most this many MiB (default 5)",
    ),
    "database_url": (
        _database_url,
        "cluster mode: PostgreSQL the replicas share, postgresql://user:pass@host/db "
        "(default: none, one relay on SQLite; needs the cluster extra)",
    ),
    "blob_url": (
        _blob_url,
        "cluster mode: where the replicas keep files, file:///shared/folder or "
        "s3://bucket?endpoint=http://host:port (keys from AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY)",
    ),
    "replica_dead_after": (
        _duration,
        "cluster mode: silence after which a replica's running jobs are requeued (default 15s)",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one `--flag` per setting; each also reads `STYLERELAY_<NAME>`."""
    for name, (_cast, help_text) in SETTINGS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=name.upper(),
            help=f"{help_text}; env {ENV_PREFIX}{name.upper()}",
        )
