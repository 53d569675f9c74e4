"""Parsing a style request: `ID[:WEIGHT,ID:WEIGHT...]` into weighted style ids.

Ids carry a prefix (`builtin:starry-blue`), so a weight is the last `:` field only when
it reads as a number. The API's ids (`fast:builtin:starry-blue`) are taken too: its `fast:`
prefix names the method, not the style. Weights must be positive; they are normalised to
sum to 1.
"""

import math
from dataclasses import dataclass

from gpu_node.errors import BadInputError

API_PREFIX = "fast:"
"""How the relay's API names a fast style (`fast:builtin:starry-blue`)."""


@dataclass(frozen=True)
class StyleMix:
    """Style ids with weights that sum to 1, in the order given, each id once."""

    parts: tuple[tuple[str, float], ...]

    @property
    def ids(self) -> tuple[str, ...]:
        """The style ids in the mix."""
        return tuple(style_id for style_id, _ in self.parts)


def _split_weight(part: str) -> tuple[str, float]:
    head, sep, tail = part.rpartition(":")
    if sep:
        try:
            weight = float(tail)
        except ValueError:
            return part, 1.0
        if not head:
            raise BadInputError(f"style spec {part!r} has a weight but no style id")
        if not math.isfinite(weight) or weight <= 0:
            raise BadInputError(f"style weight must be a positive number, not {tail!r}")
        return head, weight
    return part, 1.0


def parse_style_mix(spec: str) -> StyleMix:
    """`"builtin:a:0.7,builtin:b:0.3"` -> StyleMix; BadInputError for a malformed spec."""
    totals: dict[str, float] = {}
    for raw in spec.split(","):
        part = raw.strip()
        if not part:
            continue
        style_id, weight = _split_weight(part)
        style_id = style_id.removeprefix(API_PREFIX)
        totals[style_id] = totals.get(style_id, 0.0) + weight
    if not totals:
        raise BadInputError("no style given; use e.g. builtin:starry-blue or a:0.5,b:0.5")
    total = sum(totals.values())
    return StyleMix(tuple((style_id, w / total) for style_id, w in totals.items()))


def check_strength(strength: float) -> float:
    """`strength` if it lies in 0..1, else BadInputError."""
    if not (math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise BadInputError(f"strength must be between 0 and 1, not {strength}")
    return float(strength)
