"""From an Offer to a job the engines understand: checked before the node accepts it.

`job_spec` reads `Offer.params` (plain scalars on the wire) into one of `GatysJob`,
`FastJob` or `ArbitraryJob`, checking the node owner's caps on the way. Anything wrong
raises `Declined` with the protocol's reason code and a message a person can read.

Parameters (all optional except what a method needs):

    every method   size (long side, px), seed, preserve_colors (alias keep_colors), epochs
    gatys          content_weight, style_weight, tv_weight, optimizer (lbfgs|adam),
                   init (content|noise|style), learning_rate, style_scale, pooling (max|avg),
                   strength (0..1, GatysParams.style_strength)
    fast           strength (0..1), style_mix ("builtin:a:0.7,builtin:b:0.3"; else style_id)
    arbitrary      strength (0..1); exactly one style image
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from gpu_node.engine.layers import Pooling
from gpu_node.engine.params import GatysParams, Init, Optimizer
from gpu_node.errors import BadInputError
from gpu_node.fast.registry import StyleKind, StyleRegistry
from gpu_node.fast.spec import StyleMix, check_strength, parse_style_mix
from protocol import DeclineReason, Offer, Scalar

GATYS_KEYS = frozenset(
    {"content_weight", "style_weight", "tv_weight", "optimizer", "init", "learning_rate",
     "style_scale", "pooling"}
)  # fmt: skip
COMMON_KEYS = frozenset({"size", "seed", "preserve_colors", "keep_colors", "epochs"})
FAST_KEYS = frozenset({"strength", "style_mix"})
KNOWN_KEYS = GATYS_KEYS | COMMON_KEYS | FAST_KEYS
DEFAULT_GATYS_EPOCHS = 300


class Declined(Exception):
    """The node will not take this offer; becomes a Decline with `reason`."""

    def __init__(self, reason: DeclineReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class NodeCaps:
    """The node owner's limits that every offer is checked against."""

    max_epochs: int
    max_pixels: int


@dataclass(frozen=True)
class GatysJob:
    """A Gatys optimisation: its parameters and the style images' blend weights."""

    params: GatysParams
    style_weights: tuple[float, ...]


@dataclass(frozen=True)
class FastJob:
    """A feed-forward style (a built-in blend or one trained style)."""

    mix: StyleMix
    size: int | None
    strength: float
    preserve_colors: bool


@dataclass(frozen=True)
class ArbitraryJob:
    """Arbitrary stylization after the offer's one style image."""

    size: int | None
    strength: float
    preserve_colors: bool


JobSpec = GatysJob | FastJob | ArbitraryJob
"""What a checked offer asks for."""


def job_spec(
    offer: Offer, caps: NodeCaps, registry: StyleRegistry, *, preview_every: int | None = None
) -> JobSpec:
    """Check `offer` against the node's caps and styles; raise Declined if it cannot run.

    `preview_every` is handed to the Gatys engine; None picks about 50 previews a job.
    """
    params = offer.params
    unknown = sorted(set(params) - KNOWN_KEYS)
    if unknown:
        raise _invalid(f"unknown parameter(s) {', '.join(unknown)}")
    epochs = _int(params, "epochs", None)
    if epochs is not None and epochs > caps.max_epochs:
        raise Declined(
            DeclineReason.TOO_LARGE,
            f"epochs {epochs} is above this node's cap of {caps.max_epochs} (max_epochs)",
        )
    size = _int(params, "size", None)
    if size is not None and not 16 <= size <= 16384:
        raise _invalid(f"size must be between 16 and 16384 pixels, not {size}")
    preserve = _bool(params, "preserve_colors", _bool(params, "keep_colors", False))
    try:
        match offer.method:
            case "gatys":
                return _gatys(
                    offer, caps, epochs=epochs, size=size, preserve=preserve,
                    preview_every=preview_every,
                )  # fmt: skip
            case "fast":
                return FastJob(_mix(offer, registry), size, _strength(params), preserve)
            case "arbitrary":
                if len(offer.style_images) != 1:
                    raise _invalid(
                        f"arbitrary takes exactly one style image, not {len(offer.style_images)}"
                    )
                return ArbitraryJob(size, _strength(params), preserve)
            case method:
                raise Declined(DeclineReason.UNSUPPORTED_METHOD, f"unknown method {method!r}")
    except BadInputError as exc:
        raise _invalid(str(exc)) from None


def _gatys(
    offer: Offer,
    caps: NodeCaps,
    *,
    epochs: int | None,
    size: int | None,
    preserve: bool,
    preview_every: int | None,
) -> GatysJob:
    if not offer.style_images:
        raise Declined(DeclineReason.INVALID_INPUT, "gatys needs at least one style image")
    params = offer.params
    if epochs is None:
        epochs = min(DEFAULT_GATYS_EPOCHS, caps.max_epochs)
    values: dict[str, object] = {
        "epochs": epochs,
        "max_epochs": caps.max_epochs,
        "preserve_colors": preserve,
        "preview_every": preview_every if preview_every is not None else max(1, epochs // 50),
    }
    if size is not None:
        values["size"] = size
    for key in ("content_weight", "style_weight", "tv_weight", "learning_rate", "style_scale"):
        if key in params:
            values[key] = _float(params, key)
    if "seed" in params:
        values["seed"] = _int(params, "seed", 0)
    if "strength" in params:
        values["style_strength"] = _strength(params)
    for key, kind in (("optimizer", Optimizer), ("init", Init), ("pooling", Pooling)):
        if key in params:
            values[key] = _choice(params, key, kind)
    gatys = GatysParams(**values)  # type: ignore[arg-type]
    return GatysJob(gatys, tuple(image.weight for image in offer.style_images))


def _mix(offer: Offer, registry: StyleRegistry) -> StyleMix:
    spec = params_str(offer.params, "style_mix")
    if spec is not None:
        mix = parse_style_mix(spec)
    elif offer.style_id is not None:
        mix = StyleMix(((offer.style_id, 1.0),))
    else:
        raise _invalid("fast needs a style: style_id or the style_mix parameter")
    entries = []
    for style_id in mix.ids:
        try:
            entries.append(registry.get(style_id))
        except BadInputError:
            raise Declined(
                DeclineReason.UNKNOWN_STYLE, f"this node has no style {style_id!r}"
            ) from None
    if len(entries) > 1 and any(e.kind is StyleKind.TRAINED for e in entries):
        raise _invalid("trained styles cannot be blended; only built-in styles can")
    # the registry also knows styles by bare slug: pass on the full ids
    return StyleMix(tuple((e.id, w) for e, (_, w) in zip(entries, mix.parts, strict=True)))


def _strength(params: Mapping[str, Scalar]) -> float:
    return check_strength(_float(params, "strength") if "strength" in params else 1.0)


def _invalid(message: str) -> Declined:
    return Declined(DeclineReason.INVALID_PARAMS, message)


def _int(params: Mapping[str, Scalar], key: str, default: int | None) -> int | None:
    value = params.get(key, default)
    if value is None:
        return None
    if type(value) is float and value.is_integer():
        value = int(value)  # JSON clients send 300.0
    if type(value) is not int:
        raise _invalid(f"{key} must be a whole number, not {value!r}")
    return value


def _float(params: Mapping[str, Scalar], key: str) -> float:
    value = params[key]
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise _invalid(f"{key} must be a finite number, not {value!r}")
    return float(value)


def _bool(params: Mapping[str, Scalar], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if type(value) is not bool:
        raise _invalid(f"{key} must be true or false, not {value!r}")
    return value


def params_str(params: Mapping[str, Scalar], key: str) -> str | None:
    """The string parameter `key`, None if absent; Declined if it is not a string."""
    value = params.get(key)
    if value is None or type(value) is str:
        return value
    raise _invalid(f"{key} must be a string, not {value!r}")


def _choice(params: Mapping[str, Scalar], key: str, kind: type[Enum]) -> Enum:
    value = params[key]
    try:
        return kind(str(value).lower())
    except ValueError:
        names = ", ".join(member.value for member in kind)
        raise _invalid(f"{key} must be one of {names}, not {value!r}") from None
