"""`NodeConfig`: the daemon's settings, built once from flags and the environment.

Every flag has a `STYLERELAY_NODE_<NAME>` variable (`--max-epochs` -> `STYLERELAY_NODE_MAX_EPOCHS`);
a flag given on the command line wins over its variable. Anything unusable raises
`ConfigError` naming the flag or variable and the rule it broke.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gpu_node.errors import BadInputError
from gpu_node.fast.registry import MODELS_DIR_ENV
from gpu_node.precision import DEFAULT_PRECISION, Precision

ENV_PREFIX = "STYLERELAY_NODE_"
DEFAULT_PORT = 5678
DEFAULT_MAX_EPOCHS = 1000
# 2048 x 2048: the largest picture a Gatys job fits on a common 8 GB card.
DEFAULT_MAX_PIXELS = 2048 * 2048
DEFAULT_CHECKPOINT_EVERY = 30.0
"""Seconds between a Gatys job's checkpoints (`--checkpoint-every`)."""
MAX_SLOTS = 64
MAX_TOKEN_LEN = 1024
MAX_NAME_LEN = 256


class ConfigError(BadInputError):
    """A flag or environment variable is unusable."""


@dataclass(frozen=True)
class NodeConfig:
    """Everything the daemon needs to know, checked."""

    relay_host: str
    relay_port: int
    token: str = field(repr=False)
    name: str
    device: str = "auto"
    """One torch device, a comma-separated list (`cuda:0,cuda:1`) or `all`: one daemon,
    one connection, `slots` jobs per device."""
    precision: Precision = DEFAULT_PRECISION
    """The networks' arithmetic on CUDA (fp32, tf32, bf16); other devices run float32."""
    compile: bool = False
    """`torch.compile` the Gatys network on CUDA, running eagerly where that fails."""
    max_epochs: int = DEFAULT_MAX_EPOCHS
    max_pixels: int = DEFAULT_MAX_PIXELS
    slots: int = 1
    models_dir: Path | None = None
    backoff_min: float = 1.0
    """First reconnect delay ceiling, seconds."""
    backoff_max: float = 60.0
    """Largest reconnect delay, seconds."""
    stable_after: float = 30.0
    """A connection up this long resets the backoff."""
    drain_grace: float = 120.0
    """On SIGTERM, how long running jobs may take before they are handed back."""
    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY
    """Seconds between checkpoints of a Gatys job (its picture so far, sent to the relay,
    which resumes the job from it if this node stops or is lost)."""
    tls: bool = False
    """Dial the relay over TLS, verifying its certificate."""
    ca_file: Path | None = None
    """PEM file of the CA that signed the relay's certificate (else the system's CAs)."""
    insecure: bool = False
    """TLS without verifying the relay's certificate: for testing only."""
    no_live: bool = False
    """Refuse live sessions (a camera painted frame by frame); jobs only."""
    more_relays: tuple[tuple[str, int], ...] = ()
    """Further (host, port) of the same relay service (replicas, docs/scale-out.md): when
    one address fails the node dials the next, in turn."""

    def __post_init__(self) -> None:
        for host, port in self.relays:
            if not host:
                raise ConfigError("--relay needs a host, as HOST:PORT")
            if not 0 < port < 65536:
                raise ConfigError(f"--relay port must be 1..65535, not {port}")
        _check_token(self.token)
        if not self.name.strip() or len(self.name) > MAX_NAME_LEN:
            raise ConfigError(f"--name must be 1..{MAX_NAME_LEN} characters")
        if self.max_epochs < 1:
            raise ConfigError(f"--max-epochs must be at least 1, not {self.max_epochs}")
        if self.max_pixels < 16 * 16:
            raise ConfigError(f"--max-pixels must be at least 256, not {self.max_pixels}")
        if not 1 <= self.slots <= MAX_SLOTS:
            raise ConfigError(f"--slots must be between 1 and {MAX_SLOTS}, not {self.slots}")
        if not 0 < self.backoff_min <= self.backoff_max:
            raise ConfigError("the backoff must satisfy 0 < minimum <= maximum")
        if self.insecure and self.ca_file is not None:
            raise ConfigError("--insecure skips verification; it makes no sense with --ca-file")
        if self.drain_grace < 0:
            raise ConfigError(f"--drain-grace must be zero or more, not {self.drain_grace}")
        if not 0 < self.checkpoint_every < float("inf"):
            raise ConfigError(
                f"--checkpoint-every must be a positive number of seconds, not "
                f"{self.checkpoint_every}"
            )

    @property
    def relays(self) -> tuple[tuple[str, int], ...]:
        """Every address of the relay, in the order they are tried."""
        return ((self.relay_host, self.relay_port), *self.more_relays)

    @property
    def relay(self) -> str:
        """The relay's (first) address as HOST:PORT, for log lines."""
        return self.label(self.relay_host, self.relay_port)

    def label(self, host: str, port: int) -> str:
        """An address as HOST:PORT (tls://HOST:PORT, [V6]:PORT), for log lines."""
        shown = f"[{host}]" if ":" in host else host
        return f"{'tls://' if self.tls else ''}{shown}:{port}"


def _check_token(token: str) -> None:
    if not token:
        raise ConfigError(
            "no node token: give --token T or --token-file PATH "
            "(the relay's `python -m relay tokens add NAME` prints one)"
        )
    if len(token) > MAX_TOKEN_LEN or any(c.isspace() for c in token):
        raise ConfigError(f"the token must be 1..{MAX_TOKEN_LEN} characters without spaces")


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or a bare host (port 5678) -> (host, port); ConfigError."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if sep else ""
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"--relay {text!r} is not HOST:PORT")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:  # a bare host name, or a bare IPv6 address
        host, port_text = text, ""
    if not host:
        raise ConfigError(f"--relay {text!r} has no host; use HOST:PORT")
    if not port_text:
        return host, DEFAULT_PORT
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"--relay port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"--relay port must be 1..65535, not {port}")
    return host, port


def _relays(text: str) -> tuple[list[tuple[str, int]], bool]:
    """`[tls://]HOST:PORT[,...]` -> the addresses, and whether TLS was asked for. Every
    address is dialled the same way: mixing tls:// and plain ones is refused."""
    addresses: list[tuple[str, int]] = []
    schemes: set[str] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        scheme, sep, rest = item.partition("://")
        if sep and scheme.lower() not in ("tls", "tcp"):
            raise ConfigError(f"--relay {item!r}: the scheme is tls:// or tcp://, not {scheme}://")
        schemes.add(scheme.lower() if sep else "")
        addresses.append(parse_address(rest if sep else item))
    if not addresses:
        raise ConfigError(f"no relay: give --relay HOST:PORT (or ${ENV_PREFIX}RELAY)")
    if "tls" in schemes and schemes != {"tls"}:
        raise ConfigError(f"--relay {text!r}: give tls:// on every address or on none")
    return addresses, "tls" in schemes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the daemon's flags; all default to None so the environment can fill them in."""
    add = parser.add_argument
    add(
        "--relay",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="the relay's node address (port 5678 by default); several, comma-separated, "
        "are tried in turn when one fails (relay replicas)",
    )
    add("--token", help="this node's token (prefer --token-file: flags show in `ps`)")
    add("--token-file", type=Path, metavar="PATH", help="read the token from this file")
    add("--name", help="the name the relay shows (default: this machine's hostname)")
    add(
        "--device",
        help="torch device: auto, cpu, cuda, cuda:N, mps, a list (cuda:0,cuda:1) or all "
        "(every GPU; --slots then counts per device) (default auto)",
    )
    add(
        "--precision",
        choices=[p.value for p in Precision],
        help=f"arithmetic on CUDA (default {DEFAULT_PRECISION.value}); other devices run fp32",
    )
    add(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the Gatys network on CUDA (falls back to eager if it fails)",
    )
    add(
        "--max-epochs",
        type=_int_arg,
        help=f"most epochs a job may ask (default {DEFAULT_MAX_EPOCHS})",
    )
    add(
        "--max-pixels",
        type=_int_arg,
        help=f"largest picture in pixels (default {DEFAULT_MAX_PIXELS})",
    )
    add("--slots", type=_int_arg, help="jobs run at once on each device (default 1)")
    add("--models-dir", type=Path, help=f"folder of trained fast styles (also ${MODELS_DIR_ENV})")
    add("--backoff-max", type=float, help="longest wait between reconnects, seconds (default 60)")
    add("--drain-grace", type=float, help="on SIGTERM, seconds a running job may still take")
    add(
        "--checkpoint-every",
        type=float,
        metavar="SECONDS",
        help="send a Gatys job's picture so far to the relay this often, so a stopped or "
        f"lost node loses little work (default {DEFAULT_CHECKPOINT_EVERY:g})",
    )
    add("--tls", action="store_true", default=None, help="dial the relay over TLS (or tls://HOST)")
    add("--ca-file", type=Path, metavar="PEM", help="CA of the relay's certificate (implies --tls)")
    add(
        "--no-live",
        action="store_true",
        default=None,
        help="take no live sessions (cameras painted frame by frame), only jobs",
    )
    add(
        "--insecure",
        action="store_true",
        default=None,
        help="TLS without checking the relay's certificate: testing only (implies --tls)",
    )


def _int_arg(text: str) -> int:
    try:
        return int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """The config from parsed flags, falling back to STYLERELAY_NODE_* variables."""
    env = os.environ if environ is None else environ

    def pick(flag: str) -> str | None:
        value = getattr(args, flag, None)
        if value is not None:
            return str(value)
        raw = env.get(ENV_PREFIX + flag.upper(), "").strip()
        return raw or None

    def number(flag: str, kind: type[int] | type[float], default: float) -> float:
        value = getattr(args, flag, None)
        if value is not None:
            return float(value) if kind is float else int(value)
        name = ENV_PREFIX + flag.upper()
        raw = env.get(name, "").strip().replace("_", "")
        if not raw:
            return default
        try:
            return kind(raw)
        except ValueError:
            raise ConfigError(f"${name}={raw!r} is not a number") from None

    relay = pick("relay")
    if relay is None:
        raise ConfigError(f"no relay: give --relay HOST:PORT (or ${ENV_PREFIX}RELAY)")
    addresses, any_tls = _relays(relay)
    (host, port), more = addresses[0], tuple(addresses[1:])
    ca_file = pick("ca_file")
    insecure, tls_flag = _switch("insecure", pick("insecure")), _switch("tls", pick("tls"))
    tls = tls_flag or ca_file is not None or insecure or any_tls
    models = pick("models_dir") or env.get(MODELS_DIR_ENV, "").strip() or None
    backoff_max = number("backoff_max", float, 60.0)
    return NodeConfig(
        relay_host=host,
        relay_port=port,
        token=_token(args, env),
        name=pick("name") or socket.gethostname() or "node",
        device=pick("device") or "auto",
        precision=_precision(pick("precision")),
        compile=_switch("compile", pick("compile")),
        max_epochs=int(number("max_epochs", int, DEFAULT_MAX_EPOCHS)),
        max_pixels=int(number("max_pixels", int, DEFAULT_MAX_PIXELS)),
        slots=int(number("slots", int, 1)),
        models_dir=Path(models) if models else None,
        backoff_min=min(1.0, backoff_max),
        backoff_max=backoff_max,
        drain_grace=number("drain_grace", float, 120.0),
        checkpoint_every=number("checkpoint_every", float, DEFAULT_CHECKPOINT_EVERY),
        tls=bool(tls),
        ca_file=Path(ca_file) if ca_file else None,
        insecure=insecure,
        no_live=_switch("no_live", pick("no_live")),
        more_relays=more,
    )


def _precision(raw: str | None) -> Precision:
    if raw is None:
        return DEFAULT_PRECISION
    try:
        return Precision(raw.strip().lower())
    except ValueError:
        choices = ", ".join(p.value for p in Precision)
        raise ConfigError(f"--precision {raw!r}: expected one of {choices}") from None


def _switch(flag: str, raw: str | None) -> bool:
    """A store_true flag ("True") or its variable (yes/no, 1/0, true/false, on/off)."""
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"${ENV_PREFIX}{flag.upper()}={raw!r}: expected yes or no")


def _token(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    token: str | None = getattr(args, "token", None)
    path: Path | None = getattr(args, "token_file", None)
    if token is not None and path is not None:
        raise ConfigError("give --token or --token-file, not both")
    if token is None and path is None:
        token = env.get(ENV_PREFIX + "TOKEN", "").strip() or None
        env_path = env.get(ENV_PREFIX + "TOKEN_FILE", "").strip()
        path = Path(env_path) if env_path and token is None else None
    if token is not None:
        return token.strip()
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--token-file {path}: cannot be read ({exc})") from None
