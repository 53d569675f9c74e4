"""From an Offer to a job the engines understand: checked before the node accepts it.

`job_spec` reads `Offer.params` (plain scalars on the wire) into one of `GatysJob`,
`FastJob` or `ArbitraryJob`, checking each against the shared table of job parameters
(`protocol.params`: names, types, ranges) and the node owner's caps on the way. Anything
wrong raises `Declined` with the protocol's reason code and a message a person can read.
A known parameter that does not apply to the offer's method (the relay sends `epochs` 1 with
one-pass jobs) is checked and then ignored; which of `style_id` / `style_images` a method
needs is checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from gpu_node.engine.gatys_params import GatysParams, Init, Optimizer
from gpu_node.engine.layers import Pooling
from gpu_node.errors import BadInputError
from gpu_node.fast.registry import StyleKind, StyleRegistry
from gpu_node.fast.spec import StyleMix, parse_style_mix
from protocol import DeclineReason, Offer
from protocol.params import EPOCHS, PARAMS, TABLE, ParamError, Value

GATYS_ENGINE_KEYS = tuple(p.name for p in TABLE if p.methods == ("gatys",) and p is not EPOCHS)
"""The table's Gatys-only parameters, which GatysParams takes under the same names."""
_ENUMS: dict[str, type[Enum]] = {"optimizer": Optimizer, "init": Init, "pooling": Pooling}


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
    params = _checked(offer)
    epochs: int | None = params.get("epochs")  # type: ignore[assignment]
    if epochs is not None and epochs > caps.max_epochs:
        raise Declined(
            DeclineReason.TOO_LARGE,
            f"epochs {epochs} is above this node's cap of {caps.max_epochs} (max_epochs)",
        )
    size: int | None = params.get("size")  # type: ignore[assignment]
    preserve = bool(params.get("keep_colors", False))
    try:
        match offer.method:
            case "gatys":
                return _gatys(
                    offer, params, caps, epochs=epochs, size=size, preserve=preserve,
                    preview_every=preview_every,
                )  # fmt: skip
            case "fast":
                return FastJob(_mix(offer, params, registry), size, _strength(params), preserve)
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


def _checked(offer: Offer) -> dict[str, Value]:
    """The offer's params, each checked against the shared table for the offer's method."""
    unknown = sorted(set(offer.params) - set(PARAMS))
    if unknown:
        raise _invalid(f"unknown parameter(s) {', '.join(unknown)}")
    try:
        return {k: PARAMS[k].check(v, offer.method) for k, v in offer.params.items()}
    except ParamError as error:
        raise _invalid(error.message) from None


def _gatys(
    offer: Offer,
    params: Mapping[str, Value],
    caps: NodeCaps,
    *,
    epochs: int | None,
    size: int | None,
    preserve: bool,
    preview_every: int | None,
) -> GatysJob:
    if not offer.style_images:
        raise Declined(DeclineReason.INVALID_INPUT, "gatys needs at least one style image")
    if epochs is None:
        epochs = min(int(EPOCHS.default), caps.max_epochs)  # type: ignore[arg-type]
    values: dict[str, object] = {
        "epochs": epochs,
        "max_epochs": caps.max_epochs,
        "preserve_colors": preserve,
        "preview_every": preview_every if preview_every is not None else max(1, epochs // 50),
    }
    if size is not None:
        values["size"] = size
    for key in GATYS_ENGINE_KEYS:
        if key in params:
            kind = _ENUMS.get(key)
            values[key] = kind(params[key]) if kind is not None else params[key]
    if "strength" in params:  # the page's style strength: scales style weight and warm-up
        values["style_strength"] = params["strength"]
    gatys = GatysParams(**values)  # type: ignore[arg-type]
    return GatysJob(gatys, tuple(image.weight for image in offer.style_images))


def _mix(offer: Offer, params: Mapping[str, Value], registry: StyleRegistry) -> StyleMix:
    spec: str | None = params.get("style_mix")  # type: ignore[assignment]
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


def _strength(params: Mapping[str, Value]) -> float:
    return float(params.get("strength", PARAMS["strength"].default))  # type: ignore[arg-type]


def _invalid(message: str) -> Declined:
    return Declined(DeclineReason.INVALID_PARAMS, message)
