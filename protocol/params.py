"""The job parameters: one table of every parameter a job may carry, its type, range,
default and the methods it applies to.

The relay checks requests against it (narrowing `size` and `epochs` further by its
operator's caps), a node checks each Offer's `params` against it (and its own caps), and
docs/api.md and docs/protocol.md quote `markdown_table()`. An Offer's `params` carry these
names and nothing else.

    param = PARAMS["size"]
    param.check(9000, "gatys")
    # ParamError: size must be a whole number between 16 and 8192 pixels, not 9000

A value outside the table raises `ParamError` (a ValueError), whose message names the
parameter and its rule; the relay and the node turn it into their own refusals.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

from .limits import MAX_TEXT_LEN, MAX_UINT

METHODS = ("gatys", "fast", "arbitrary")
"""Every style method, in the order they are shown: Gatys optimises the picture over many
epochs; fast (a trained network) and arbitrary (any style image) run one pass."""

ONE_PASS = ("fast", "arbitrary")
"""The methods that run one pass (one epoch), whatever the size."""

Value = bool | int | float | str
"""What a parameter's value may be (what an Offer's params carry)."""


class Kind(enum.StrEnum):
    """A parameter's type, as JSON Schema names it (`choice` is a string from a list)."""

    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    CHOICE = "choice"
    STRING = "string"


class ParamError(ValueError):
    """A value the table does not allow; the message names the parameter and its rule."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


@dataclass(frozen=True)
class Param:
    """One job parameter: what it is, what values it takes, and where it applies."""

    name: str
    kind: Kind
    methods: tuple[str, ...]
    default: Value | None
    """What a node uses when the parameter is left out (None: see `help`)."""
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """The range excludes `low` itself (a value must be greater than it)."""
    highs: tuple[tuple[str, int], ...] = ()
    """Lower upper bounds for some methods: (method, high)."""
    choices: tuple[str, ...] = ()
    unit: str = ""
    public: bool = True
    """Whether a request may set it; the others the relay sets itself."""

    def applies(self, method: str) -> bool:
        """Whether the parameter means anything for `method`."""
        return method in self.methods

    def high_for(self, method: str | None, cap: float | None = None) -> float | None:
        """The upper bound for `method`, narrowed by `cap` (an operator's limit) if given."""
        bounds = [b for b in (self.high, cap) if b is not None]
        bounds += [high for m, high in self.highs if m == method]
        return min(bounds) if bounds else None

    def rule(self, method: str | None = None, cap: float | None = None) -> str:
        """What a value must be, in words: "a whole number between 16 and 8192 pixels"."""
        match self.kind:
            case Kind.BOOLEAN:
                return "true or false"
            case Kind.CHOICE:
                return f"one of {', '.join(self.choices)}"
            case Kind.STRING:
                return f"a string of at most {MAX_TEXT_LEN:,} characters"
        unit = f" {self.unit}" if self.unit else ""
        what = "a whole number" if self.kind is Kind.INTEGER else "a number"
        high = self.high_for(method, cap)
        if self.low is not None and high is not None:
            return f"{what} between {_num(self.low)} and {_num(high)}{unit}"
        low = None if self.low is None else ("zero" if self.low == 0 else _num(self.low))
        if low is not None:
            return (
                f"{what} greater than {low}{unit}"
                if self.low_open
                else f"{what} of {low} or more{unit}"
            )
        return what if high is None else f"{what} of at most {_num(high)}{unit}"

    def check(self, value: object, method: str | None = None, cap: float | None = None) -> Value:
        """`value` as this parameter holds it (an int for a whole float, a float for an int
        number), or ParamError. `method` picks its range; `cap` narrows the upper bound."""
        ok = self._accept(value, method, cap)
        if ok is None:
            raise ParamError(
                self.name, f"{self.name} must be {self.rule(method, cap)}, not {_shown(value)}"
            )
        return ok

    def _accept(self, value: object, method: str | None, cap: float | None) -> Value | None:
        if type(value) is bool or self.kind is Kind.BOOLEAN:
            return value if type(value) is bool and self.kind is Kind.BOOLEAN else None
        if type(value) is str:
            if self.kind is Kind.CHOICE:
                return value if value in self.choices else None
            return value if self.kind is Kind.STRING and len(value) <= MAX_TEXT_LEN else None
        number: int | float
        if type(value) is int or (type(value) is float and math.isfinite(value)):
            number = value
        else:
            return None
        if self.kind is Kind.INTEGER:
            if type(number) is float and not number.is_integer():
                return None
            number = int(number)  # JSON clients send 300.0
        elif self.kind is Kind.NUMBER:
            number = float(number) if abs(number) < 2**1024 else math.inf
            if not math.isfinite(number):
                return None
        else:
            return None
        return number if self._within(number, method, cap) else None

    def _within(self, number: float, method: str | None, cap: float | None) -> bool:
        high = self.high_for(method, cap)
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            return False
        return high is None or number <= high


def _num(number: float) -> str:
    return f"{number:g}" if abs(number) < 1e15 else str(int(number))


def _shown(value: object) -> str:
    if type(value) is int and value.bit_length() > 256:
        return f"a {value.bit_length()}-bit number"  # repr() of a vast int is slow, or refused
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


SIZE = Param(
    "size", Kind.INTEGER, METHODS, None,
    "Long side of the output (a photo is never scaled up).",
    low=16, high=16384, highs=(("gatys", 8192),), unit="pixels",
)  # fmt: skip
EPOCHS = Param(
    "epochs", Kind.INTEGER, ("gatys",), 200,
    "Loss-and-gradient steps over all scales; above 1024 pixels each scale needs one. "
    "Capped by the relay's and the node's `max_epochs`.",
    low=1,
)  # fmt: skip

TABLE: tuple[Param, ...] = (
    SIZE,
    EPOCHS,
    Param(
        "content_weight", Kind.NUMBER, ("gatys",), 0.08, "How much the photo's content counts.",
        low=0,
    ),
    Param("style_weight", Kind.NUMBER, ("gatys",), 1.0, "How much the style counts.", low=0),
    Param(
        "tv_weight", Kind.NUMBER, ("gatys",), 0.0, "Smoothness: penalises pixel-to-pixel noise.",
        low=0,
    ),
    Param(
        "optimizer", Kind.CHOICE, ("gatys",), "lbfgs", "How the picture is optimised.",
        choices=("lbfgs", "adam"),
    ),
    Param(
        "learning_rate", Kind.NUMBER, ("gatys",), 1.0,
        "Step size in pixel units (0..255) for adam; L-BFGS scales its own steps.",
        low=0, low_open=True,
    ),
    Param(
        "init", Kind.CHOICE, ("gatys",), "content",
        "What the painting starts from: the photo, random noise, or the (first) style image.",
        choices=("content", "noise", "style"),
    ),
    Param(
        "style_scale", Kind.NUMBER, ("gatys",), 1.0,
        "Style images are sized to this fraction of the output's long side: larger gives "
        "larger brush strokes.",
        low=0.05, high=4.0,
    ),
    Param(
        "pooling", Kind.CHOICE, ("gatys",), "max",
        "How VGG19 pools its features: avg often paints smoother.", choices=("max", "avg"),
    ),
    Param(
        "seed", Kind.INTEGER, ("gatys",), 0, "Random seed (for noise and adam).",
        low=0, high=MAX_UINT,
    ),
    Param(
        "strength", Kind.NUMBER, METHODS, 1.0,
        "How strongly the style is applied: 0 is the photo, 1 the full style. One-pass "
        "methods blend with the photo; gatys scales its style weight and half-size warm-up.",
        low=0, high=1,
    ),
    Param(
        "keep_colors", Kind.BOOLEAN, METHODS, False,
        "Keep the photo's colours (the style changes only the brightness).",
    ),
    Param(
        "style_mix", Kind.STRING, ("fast",), None,
        "A blend of fast styles, `id:weight,...`; the relay builds it from the job's styles.",
        public=False,
    ),
)  # fmt: skip
"""Every job parameter, in the order the docs list them."""

PARAMS: Mapping[str, Param] = {p.name: p for p in TABLE}
"""The table by name."""


def defaults(method: str) -> dict[str, Value]:
    """The defaults of the parameters that apply to `method` and have one."""
    return {p.name: p.default for p in TABLE if p.applies(method) and p.default is not None}


def markdown_table() -> str:
    """The table as Markdown, as docs/api.md and docs/protocol.md quote it."""
    lines = [
        "| parameter | type | range | methods | default | what |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in TABLE:
        methods = "all" if p.methods == METHODS else ", ".join(p.methods)
        if p.highs:
            methods = methods + "".join(f" ({m}: at most {_num(h)})" for m, h in p.highs)
        default = "—" if p.default is None else f"`{_shown_default(p.default)}`"
        name = f"`{p.name}`" + ("" if p.public else " (set by the relay)")
        lines.append(
            f"| {name} | {p.kind.value} | {_range(p)} | {methods} | {default} | {p.help} |"
        )
    return "\n".join(lines) + "\n"


def _shown_default(value: Value) -> str:
    if type(value) is bool:
        return "true" if value else "false"
    return _num(value) if type(value) is float else str(value)


def _range(p: Param) -> str:
    match p.kind:
        case Kind.BOOLEAN:
            return "`true`, `false`"
        case Kind.CHOICE:
            return ", ".join(f"`{c}`" for c in p.choices)
        case Kind.STRING:
            return f"≤ {MAX_TEXT_LEN:,} characters"
    low = "—" if p.low is None else _num(p.low)
    if p.high is None:
        return f"> {low}" if p.low_open else f"≥ {low}"
    high = "2^63 − 1" if p.high == MAX_UINT else _num(p.high)
    return f"{low}..{high}"
