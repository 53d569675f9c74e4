"""Arbitrary style: strength moves between the photo's own style and the picture's."""

from collections.abc import Iterator

import pytest
import torch
from fast_helpers import DATA, mad, one_thread, photo
from PIL import Image

from gpu_node.fast.engine import FastEngine
from gpu_node.fast.registry import build_registry
from gpu_node.tensors import tensor_to_image


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="module")
def engine() -> FastEngine:
    return FastEngine(build_registry(None), torch.device("cpu"))


@pytest.fixture(scope="module")
def scream() -> Image.Image:
    return Image.open(DATA / "the_scream.jpg").convert("RGB")


def test_strength_zero_stays_near_the_photo_and_one_takes_the_style(
    engine: FastEngine, scream: Image.Image
) -> None:
    x = photo("tubingen.png")
    none = engine.stylize_arbitrary(x, scream, strength=0.0)
    half = engine.stylize_arbitrary(x, scream, strength=0.5)
    full = engine.stylize_arbitrary(x, scream, strength=1.0)
    assert mad(none, x) < mad(half, x) < mad(full, x)
    # strength 0 is the network run with the photo's own style vector
    transformer, predictor = engine._arbitrary_nets()
    own = predictor.predict(tensor_to_image(x))
    assert torch.allclose(none, transformer.stylize(x, own), atol=1e-6)


def test_different_style_pictures_give_different_results(
    engine: FastEngine, scream: Image.Image
) -> None:
    x = photo()
    starry = Image.open(DATA / "starry_night.jpg").convert("RGB")
    assert mad(engine.stylize_arbitrary(x, scream), engine.stylize_arbitrary(x, starry)) > 0.05


@pytest.mark.parametrize("size", [(97, 150), (64, 64), (33, 121)])
def test_runs_at_the_photo_own_resolution(
    engine: FastEngine, scream: Image.Image, size: tuple[int, int]
) -> None:
    x = torch.nn.functional.interpolate(photo(), size=size, mode="bilinear")
    out = engine.stylize_arbitrary(x, scream, preserve_colors=True)
    assert out.shape == x.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
