"""VGG19's layer names and pooling choice, without torch.

Kept apart from `vgg` so that parameters and the command line's help can be built
without importing torch (about a second on a small CPU).
"""

from __future__ import annotations

import enum
from collections.abc import Collection

from gpu_node.errors import BadInputError

# (block, convolutions in it) of VGG19.
BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))


class Pooling(enum.Enum):
    """How VGG19 halves its feature maps between blocks."""

    MAX = "max"
    AVG = "avg"


def _layer_names() -> tuple[str, ...]:
    names: list[str] = []
    for block, convs in BLOCKS:
        for conv in range(1, convs + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
        names.append(f"pool{block}")
    return tuple(names)


LAYER_NAMES = _layer_names()
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}


def check_layers(layers: Collection[str]) -> None:
    """Raise BadInputError naming any layer VGG19 does not have."""
    unknown = sorted(set(layers) - LAYER_INDEX.keys())
    if unknown:
        raise BadInputError(
            f"unknown VGG19 layer(s) {', '.join(unknown)}; layers are named like "
            "conv4_2, relu4_2, pool4"
        )
