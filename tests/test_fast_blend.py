"""Blending, strength and keep-colours on the built-in network, through the engine."""

from collections.abc import Iterator

import pytest
import torch
from fast_helpers import mad, one_thread, photo

from gpu_node.errors import BadInputError
from gpu_node.fast.engine import FastEngine
from gpu_node.fast.multistyle import NUM_STYLES
from gpu_node.fast.post import luma
from gpu_node.fast.registry import build_registry
from gpu_node.fast.spec import parse_style_mix

STARRY = "builtin:starry-blue"
WOVEN = "builtin:woven-blocks"


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="module")
def engine() -> FastEngine:
    return FastEngine(build_registry(None), torch.device("cpu"))


def test_strength_zero_is_the_photo_and_one_is_the_full_style(engine: FastEngine) -> None:
    x = photo()
    raw = engine.multistyle.stylize(x, torch.eye(NUM_STYLES)[19])
    assert torch.equal(engine.stylize(x, parse_style_mix(STARRY), strength=0.0), x)
    assert torch.equal(engine.stylize(x, parse_style_mix(STARRY), strength=1.0), raw)
    half = engine.stylize(x, parse_style_mix(STARRY), strength=0.5)
    assert torch.allclose(half, (x + raw) / 2, atol=1e-6)
    assert mad(x, raw) > 0.1


def test_a_blend_of_one_style_is_that_style(engine: FastEngine) -> None:
    x = photo("astronaut.png")
    alone = engine.stylize(x, parse_style_mix(WOVEN))
    assert torch.equal(engine.stylize(x, parse_style_mix(f"{WOVEN}:0.3")), alone)
    assert torch.equal(engine.stylize(x, parse_style_mix(f"{WOVEN}:1,{WOVEN}:2")), alone)


def test_blend_weights_mix_the_norm_parameters(engine: FastEngine) -> None:
    x = photo("tubingen.png")
    a = engine.stylize(x, parse_style_mix(STARRY))
    b = engine.stylize(x, parse_style_mix(WOVEN))
    even = engine.stylize(x, parse_style_mix(f"{STARRY}:1,{WOVEN}:1"))
    mostly_a = engine.stylize(x, parse_style_mix(f"{STARRY}:0.9,{WOVEN}:0.1"))
    weights = torch.zeros(NUM_STYLES)
    weights[19] = weights[17] = 0.5
    assert torch.equal(even, engine.multistyle.stylize(x, weights))
    # a blend is a new picture, nearer to the style that weighs more
    assert mad(even, a) > 0.02 and mad(even, b) > 0.02
    assert mad(mostly_a, a) < mad(mostly_a, b)


def test_keep_colors_takes_brightness_from_the_style_and_colour_from_the_photo(
    engine: FastEngine,
) -> None:
    x = photo()
    styled = engine.stylize(x, parse_style_mix(WOVEN))
    kept = engine.stylize(x, parse_style_mix(WOVEN), preserve_colors=True)
    # colour = what is left after taking away brightness; compare where nothing clipped
    inside = ((kept > 0.001) & (kept < 0.999)).all(dim=1, keepdim=True)
    chroma_kept, chroma_photo = kept - luma(kept), x - luma(x)
    assert float((chroma_kept - chroma_photo).abs()[inside.expand_as(x)].mean()) < 1e-5
    assert float((luma(kept) - luma(styled))[inside].abs().mean()) < 1e-5
    assert mad(chroma_photo, styled - luma(styled)) > 0.02


@pytest.mark.parametrize(
    "spec",
    ["", " , ", f"{STARRY}:0", f"{STARRY}:-1", f"{STARRY}:nan", ":0.5", f"{STARRY}:inf"],
)
def test_malformed_specs_are_refused(spec: str) -> None:
    with pytest.raises(BadInputError):
        parse_style_mix(spec)


def test_ids_parse_with_and_without_weights() -> None:
    mix = parse_style_mix(f"{STARRY}:3, {WOVEN}")
    assert mix.parts == ((STARRY, 0.75), (WOVEN, 0.25))
    assert parse_style_mix("starry-blue:2").parts == (("starry-blue", 1.0),)


def test_unknown_styles_and_bad_strength_are_refused(engine: FastEngine) -> None:
    x = photo()
    with pytest.raises(BadInputError, match="unknown style"):
        engine.stylize(x, parse_style_mix("builtin:no-such-style"))
    for strength in (-0.1, 1.5, float("nan")):
        with pytest.raises(BadInputError, match="strength"):
            engine.stylize(x, parse_style_mix(STARRY), strength=strength)


def test_bare_slugs_resolve_to_builtin_ids(engine: FastEngine) -> None:
    x = photo()
    assert torch.equal(
        engine.stylize(x, parse_style_mix("starry-blue")),
        engine.stylize(x, parse_style_mix(STARRY)),
    )
