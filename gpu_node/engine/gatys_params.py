"""Parameters of a Gatys job: one frozen, validated object.

Loss:  L = content_weight * L_content + style_weight * L_style + tv_weight * L_tv

with L_content the weighted MSE of features at `content_layers`, L_style the weighted MSE
of size-normalised Gram matrices at `style_layers` (blended over the style images), and
L_tv the mean absolute difference of neighbouring pixels, all with pixels in 0..255.

The paper's content layer "conv4_2" and style layers "conv1_1 ... conv5_1" are blobs of
Caffe's VGG, whose ReLUs work in place: what the paper used are the rectified outputs,
named relu4_2 and relu1_1 ... relu5_1 here, and those are the defaults. Any layer, conv
outputs included, can be named instead.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

from gpu_node.engine.layers import LAYER_INDEX, Pooling, check_layers
from gpu_node.errors import BadInputError
from protocol.params import SIZE

LayerWeights = tuple[tuple[str, float], ...]

DEFAULT_CONTENT_LAYERS: LayerWeights = (("relu4_2", 1.0),)
DEFAULT_STYLE_LAYERS: LayerWeights = (
    ("relu1_1", 1.0),
    ("relu2_1", 1.0),
    ("relu3_1", 1.0),
    ("relu4_1", 1.0),
    ("relu5_1", 1.0),
)
MAX_SIZE = int(SIZE.high_for("gatys"))  # type: ignore[arg-type]  # the table's, an int
"""The longest side the engine paints, from the shared table of job parameters."""
MIN_WARMUP = 64
"""The smallest long side a warm-up stage runs at."""


class Optimizer(enum.Enum):
    """How the picture is optimised; one epoch is one loss-and-gradient evaluation."""

    LBFGS = "lbfgs"
    ADAM = "adam"


class Init(enum.Enum):
    """What the optimisation starts from."""

    CONTENT = "content"
    NOISE = "noise"
    STYLE = "style"


@dataclass(frozen=True)
class GatysParams:
    """Everything that shapes a Gatys job; invalid values raise BadInputError on creation.

    The fields the shared table of job parameters names (`protocol.params`) have its
    defaults; tests/test_params_table.py holds them equal."""

    size: int = 512
    """Long side of the output in pixels."""
    epochs: int = 200
    """Loss-and-gradient evaluations to run (over all scales)."""
    max_epochs: int = 1000
    """The caller's cap on `epochs`; asking for more is an error, never a silent clamp."""
    content_weight: float = 8e-2
    """Against a style weight of 1. With the coarse-to-fine stages below, 0.08 kept the
    photo better than the classic neural-style output while stylising more than twice as
    much, on Tübingen × The Starry Night and on average over the shared pairs
    (bench/results/quality-512.md); 0.025 stylised more still but kept less of the photo."""
    style_weight: float = 1.0
    tv_weight: float = 0.0
    content_layers: LayerWeights = DEFAULT_CONTENT_LAYERS
    style_layers: LayerWeights = DEFAULT_STYLE_LAYERS
    optimizer: Optimizer = Optimizer.LBFGS
    learning_rate: float = 1.0
    """Step size in pixel units (0..255); L-BFGS scales its steps itself and uses 1."""
    lbfgs_history: int = 50
    init: Init = Init.CONTENT
    seed: int = 0
    pooling: Pooling = Pooling.MAX
    style_scale: float = 1.0
    """Style images are sized to this fraction of the output's long side."""
    preserve_colors: bool = False
    """Transfer luminance only and keep the content's chroma (YIQ)."""
    preview_every: int = 0
    """Hand a preview to the preview callback every this many epochs (0: never)."""
    multiscale_above: int = 1024
    """Outputs larger than this start at half size (or less) and are refined upwards."""
    warmup_share: float = 0.75
    """Share of the epochs first run at half the coarsest scale (when that is at least
    `MIN_WARMUP` px), before refining at full size; scaled by `style_strength`. Three
    quarters stylised more than half on every pair measured (bench/quality.py)."""
    coarse_style_weight: float = 0.3
    """Weight, relative to the style term, of the style loss measured again on the picture
    at half size (2x2 means) against the style images at half size, in the stages after
    the warm-up (of at least `2 * MIN_WARMUP` px): it keeps the larger strokes the warm-up
    painted while the full size refines. 0.3 cut the style ratio about threefold at the
    cost of a sixth more content loss (bench/quality.py). Faded in over the upper half of
    `style_strength` (see `effective_coarse_weight`)."""
    style_strength: float = 1.0
    """0..1, how strongly the style is applied: scales `style_weight` and `warmup_share`,
    and above 0.5 fades in `coarse_style_weight` (0 leaves a content start as the photo)."""

    def __post_init__(self) -> None:
        _whole("size", self.size, 16, MAX_SIZE)
        _whole("max_epochs", self.max_epochs, 1, None)
        _whole("epochs", self.epochs, 1, None)
        if self.epochs > self.max_epochs:
            raise BadInputError(
                f"epochs {self.epochs} is over the cap of max_epochs={self.max_epochs}"
            )
        for name in ("content_weight", "style_weight", "tv_weight", "coarse_style_weight"):
            _finite(name, getattr(self, name), allow_zero=True)
        _finite("learning_rate", self.learning_rate, allow_zero=False)
        _finite("style_scale", self.style_scale, allow_zero=False)
        if not 0.05 <= self.style_scale <= 4.0:
            raise BadInputError(f"style_scale must be between 0.05 and 4, not {self.style_scale}")
        _whole("lbfgs_history", self.lbfgs_history, 1, 1000)
        _whole("preview_every", self.preview_every, 0, None)
        _whole("multiscale_above", self.multiscale_above, 64, None)
        _whole("seed", self.seed, 0, 2**63 - 1)
        _finite("warmup_share", self.warmup_share, allow_zero=True)
        _finite("style_strength", self.style_strength, allow_zero=True)
        if self.style_strength > 1:
            raise BadInputError(
                f"style_strength must be between 0 and 1, not {self.style_strength}"
            )
        if self.warmup_share >= 1:
            raise BadInputError(f"warmup_share must be below 1, not {self.warmup_share}")
        if not self.style_layers:
            raise BadInputError("at least one style layer is needed")
        for name, layers in (("content", self.content_layers), ("style", self.style_layers)):
            check_layers([layer for layer, _ in layers])
            for layer, weight in layers:
                _finite(f"{name} layer {layer} weight", weight, allow_zero=True)
            if len({layer for layer, _ in layers}) != len(layers):
                raise BadInputError(f"a {name} layer is named twice")
        for field_name, kind in (
            ("optimizer", Optimizer),
            ("init", Init),
            ("pooling", Pooling),
        ):
            if not isinstance(getattr(self, field_name), kind):
                raise BadInputError(f"{field_name} must be a {kind.__name__}")

    @property
    def effective_style_weight(self) -> float:
        """The style term's weight in the loss: `style_weight` scaled by `style_strength`."""
        return self.style_weight * self.style_strength

    @property
    def effective_coarse_weight(self) -> float:
        """`coarse_style_weight` faded in over the upper half of `style_strength` (none at
        0.5 or below, all at 1): even a hundredth of it stylises strongly, so a lower
        strength without it is the way back to the lighter look of the old defaults."""
        return self.coarse_style_weight * max(0.0, 2 * self.style_strength - 1)

    @property
    def deepest_layer(self) -> str:
        """The deepest VGG layer the losses read; the forward pass stops there."""
        names = [n for n, _ in self.content_layers + self.style_layers]
        return max(names, key=LAYER_INDEX.__getitem__)

    def scales(self) -> list[int]:
        """Long sides to optimise at, coarse to fine, ending at `size`."""
        sizes = [self.size]
        while sizes[0] > self.multiscale_above:
            sizes.insert(0, (sizes[0] + 1) // 2)
        return sizes

    def epochs_per_scale(self) -> list[int]:
        """How the epochs are shared among `scales()` (the spare ones go to the coarsest)."""
        count = len(self.scales())
        if self.epochs < count:
            raise BadInputError(
                f"{self.epochs} epochs cannot cover {count} scales for size {self.size}; "
                f"ask for at least {count}"
            )
        share, spare = divmod(self.epochs, count)
        return [share + (spare if i == 0 else 0) for i in range(count)]

    def coarse_style_at(self, size: int) -> bool:
        """Whether the stage at long side `size` adds the half-size style term: every scale
        after the warm-up, when `effective_coarse_weight` is above 0 and half of the scale
        is at least `MIN_WARMUP` px."""
        return self.effective_coarse_weight > 0 and size in self.scales() and size >= 2 * MIN_WARMUP

    def stages(self) -> list[tuple[int, int]]:
        """(long side, epochs) to run in turn: the warm-up at half size, then `scales()`."""
        scales = self.scales()
        half = scales[0] // 2
        share = self.warmup_share * self.style_strength
        warmup = round(self.epochs * share) if half >= MIN_WARMUP else 0
        if warmup == 0 or self.epochs - warmup < len(scales):
            return list(zip(scales, self.epochs_per_scale(), strict=True))
        rest = replace(self, epochs=self.epochs - warmup, max_epochs=self.max_epochs)
        return [(half, warmup), *zip(scales, rest.epochs_per_scale(), strict=True)]


def _whole(name: str, value: object, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInputError(f"{name} must be a whole number, not {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadInputError(f"{name} must be {bound}, not {value}")


def _finite(name: str, value: object, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadInputError(f"{name} must be a finite number, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise BadInputError(f"{name} must be {'zero or ' if allow_zero else ''}positive")


LEGACY_GATYS = GatysParams(
    content_weight=1e-2,
    style_weight=1.0,
    tv_weight=0.0,
    warmup_share=0.0,
    coarse_style_weight=0.0,
    style_strength=1.0,
)
"""The defaults before issue 18: full size only, a lighter, finer-grained look
(bench/quality.py's "before")."""
