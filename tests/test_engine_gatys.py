"""The Gatys engine on real weights and small pictures: numbers, not just "it ran"."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpu_node.engine import color
from gpu_node.engine.gatys import stylize_gatys
from gpu_node.engine.gatys_params import GatysParams, Init, Optimizer
from gpu_node.engine.losses import gram
from gpu_node.engine.progress import EngineProgress
from gpu_node.engine.vgg import VGG19Features
from gpu_node.engine.weights import load_weights
from gpu_node.errors import BadInputError, Cancelled
from gpu_node.images import open_image, resize_long_side
from gpu_node.tensors import image_to_tensor

DATA = Path(__file__).parent / "data"
SIZE = 64
STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


@dataclass(frozen=True)
class Run:
    content: Image.Image
    style: Image.Image
    output: Image.Image
    log: list[EngineProgress]


@pytest.fixture(scope="module")
def content() -> Image.Image:
    return resize_long_side(open_image(DATA / "cat.jpg"), SIZE)


@pytest.fixture(scope="module")
def style() -> Image.Image:
    return resize_long_side(open_image(DATA / "starry_night.jpg"), SIZE)


@pytest.fixture(scope="module")
def styled(content: Image.Image, style: Image.Image) -> Run:
    log: list[EngineProgress] = []
    params = GatysParams(size=SIZE, epochs=40, max_epochs=40, content_weight=0.1)
    output = stylize_gatys(content, [(style, 1.0)], params, progress=log.append)
    return Run(content, style, output, log)


def _features(img: Image.Image, layers: list[str]) -> dict[str, torch.Tensor]:
    net = VGG19Features(load_weights(), up_to="relu5_1")
    with torch.no_grad():
        features: dict[str, torch.Tensor] = net(image_to_tensor(img), layers)
    return features


def _style_distance(img: Image.Image, style: Image.Image) -> float:
    mine, theirs = _features(img, STYLE_LAYERS), _features(style, STYLE_LAYERS)
    return sum(float((gram(mine[k]) - gram(theirs[k])).square().mean()) for k in STYLE_LAYERS)


def _content_distance(img: Image.Image, content: Image.Image) -> float:
    a, b = _features(img, ["relu4_2"])["relu4_2"], _features(content, ["relu4_2"])["relu4_2"]
    return float((a - b).square().mean())


@pytest.mark.slow
def test_loss_falls_and_progress_counts_every_epoch(styled: Run) -> None:
    epochs = [p.epoch for p in styled.log]
    assert epochs == list(range(1, 41))
    assert all(p.epochs == 40 for p in styled.log)
    assert set(styled.log[-1].losses) == {"content", "style", "total"}
    elapsed = [p.elapsed for p in styled.log]
    assert elapsed == sorted(elapsed)
    assert styled.log[-1].losses["total"] < 0.1 * styled.log[0].losses["total"]


@pytest.mark.slow
def test_gram_distance_to_the_style_drops_far_below_the_contents(styled: Run) -> None:
    assert styled.output.size == styled.content.size
    before = _style_distance(styled.content, styled.style)
    after = _style_distance(styled.output, styled.style)
    assert after < 0.1 * before


@pytest.mark.slow
def test_content_stays_recognisable(styled: Run) -> None:
    # The styled cat stays nearer the cat, in content features, than the painting is (at
    # 64 px relu4_2 is only 8x5, so the margin is modest: measured 0.70).
    drift = _content_distance(styled.output, styled.content)
    painting = _content_distance(resize_long_side(styled.style, SIZE), styled.content)
    assert drift < 0.8 * painting
    # and the content term does not run away while the style term falls
    late = [p.losses["content"] for p in styled.log[20:]]
    assert max(late) < 2 * late[0]


def test_seed_reproduces_noise_runs(content: Image.Image, style: Image.Image) -> None:
    def run(seed: int) -> np.ndarray:
        params = GatysParams(size=32, epochs=3, init=Init.NOISE, seed=seed)
        return np.array(stylize_gatys(content, [(style, 1.0)], params))

    first, again, other = run(7), run(7), run(8)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_preserve_colors_keeps_the_contents_chroma(
    content: Image.Image, style: Image.Image
) -> None:
    params = GatysParams(size=48, epochs=6, preserve_colors=True)
    out = stylize_gatys(content, [(style, 1.0)], params)
    plain = stylize_gatys(content, [(style, 1.0)], GatysParams(size=48, epochs=6))
    small = content.resize(out.size)

    def chroma(img: Image.Image) -> torch.Tensor:
        return color.rgb_to_yiq(image_to_tensor(img))[:, 1:]

    kept = float((chroma(out) - chroma(small)).abs().mean())
    changed = float((chroma(plain) - chroma(small)).abs().mean())
    assert kept < 0.01
    assert changed > 3 * kept


def test_cancel_stops_within_one_epoch(content: Image.Image, style: Image.Image) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def progress(p: EngineProgress) -> None:
        seen.append(p.epoch)
        if p.epoch == 3:
            cancel.set()

    params = GatysParams(size=32, epochs=50)
    with pytest.raises(Cancelled):
        stylize_gatys(content, [(style, 1.0)], params, progress=progress, cancel=cancel)
    assert seen == [1, 2, 3]


def test_cancel_before_start_runs_nothing(content: Image.Image, style: Image.Image) -> None:
    cancel = threading.Event()
    cancel.set()
    seen: list[EngineProgress] = []
    with pytest.raises(Cancelled):
        stylize_gatys(
            content, [(style, 1.0)], GatysParams(size=32, epochs=5), progress=seen.append,
            cancel=cancel,
        )  # fmt: skip
    assert seen == []


def test_previews_come_every_n_epochs(content: Image.Image, style: Image.Image) -> None:
    shown: list[tuple[tuple[int, int], int]] = []
    params = GatysParams(size=32, epochs=6, preview_every=2)
    out = stylize_gatys(
        content, [(style, 1.0)], params, preview=lambda img, epoch: shown.append((img.size, epoch))
    )
    assert shown == [(out.size, 2), (out.size, 4), (out.size, 6)]


def test_adam_lowers_the_loss_too(content: Image.Image, style: Image.Image) -> None:
    log: list[EngineProgress] = []
    params = GatysParams(size=32, epochs=8, optimizer=Optimizer.ADAM, learning_rate=8.0)
    stylize_gatys(content, [(style, 1.0)], params, progress=log.append)
    assert log[-1].losses["total"] < 0.7 * log[0].losses["total"]


def test_multiscale_runs_coarse_to_fine(content: Image.Image, style: Image.Image) -> None:
    params = GatysParams(size=96, epochs=5, multiscale_above=64)
    assert params.scales() == [48, 96] and params.epochs_per_scale() == [3, 2]
    log: list[EngineProgress] = []
    out = stylize_gatys(content, [(style, 1.0)], params, progress=log.append)
    assert max(out.size) == 96
    assert [p.epoch for p in log] == [1, 2, 3, 4, 5]


def test_the_coarse_style_term_brings_the_half_size_style_nearer() -> None:
    # Full size only (no warm-up), 128 px: the stage is large enough to halve. With the
    # half-size term, the picture at half size is nearer the style at half size.
    content = resize_long_side(open_image(DATA / "cat.jpg"), 128)
    style = resize_long_side(open_image(DATA / "starry_night.jpg"), 128)

    def half_size_distance(coarse: float) -> tuple[float, set[str]]:
        params = GatysParams(
            size=128, epochs=12, warmup_share=0.0, coarse_style_weight=coarse, content_weight=0.1
        )
        log: list[EngineProgress] = []
        out = stylize_gatys(content, [(style, 1.0)], params, progress=log.append)
        return _style_distance(out.reduce(2), style.reduce(2)), set(log[-1].losses)

    without, names_without = half_size_distance(0.0)
    with_term, names_with = half_size_distance(1.0)
    assert names_without == {"content", "style", "total"}
    assert names_with == {"content", "style", "coarse", "total"}
    assert with_term < 0.8 * without


def test_two_styles_blend_and_bad_blends_are_refused(
    content: Image.Image, style: Image.Image
) -> None:
    wave = resize_long_side(open_image(DATA / "great_wave.jpg"), SIZE)
    params = GatysParams(size=32, epochs=2)
    out = stylize_gatys(content, [(style, 2.0), (wave, 1.0)], params)
    assert max(out.size) == 32
    with pytest.raises(BadInputError, match="style"):
        stylize_gatys(content, [], params)
    with pytest.raises(BadInputError, match="blend"):
        stylize_gatys(content, [(style, 0.0), (wave, 0.0)], params)
    with pytest.raises(BadInputError, match="blend"):
        stylize_gatys(content, [(style, float("nan"))], params)
