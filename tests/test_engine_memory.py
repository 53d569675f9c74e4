"""A Gatys job too large to keep every activation runs with gradient checkpointing instead
of being refused, and computes the same picture."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from gpu_node.engine.capacity import MIN_HISTORY, estimate_bytes, fitting_history, plan_memory
from gpu_node.engine.gatys import stylize_gatys
from gpu_node.engine.gatys_params import GatysParams
from gpu_node.engine.vgg import VGG19Features
from gpu_node.engine.weights import load_weights
from gpu_node.errors import CapacityError
from gpu_node.images import open_image, resize_long_side
from gpu_node.tensors import image_to_tensor

DATA = Path(__file__).parent / "data"
CPU = torch.device("cpu")
DEEPEST = "relu5_1"


def _between(low: int, high: int) -> int:
    """Free bytes that hold a job needing `low` bytes but not one needing `high` (the
    planner leaves 15% of free memory to everything else)."""
    assert low < high
    return int((low + high) / 2 / 0.85)


def test_checkpointing_needs_less_memory_at_every_size() -> None:
    for side in (256, 1024, 4096):
        plain = estimate_bytes(side, side, DEEPEST, MIN_HISTORY)
        assert estimate_bytes(side, side, DEEPEST, MIN_HISTORY, checkpoint=True) < plain
    # large pictures gain most: their activations, not the weights, fill the memory
    plain = estimate_bytes(4096, 4096, DEEPEST, MIN_HISTORY)
    assert estimate_bytes(4096, 4096, DEEPEST, MIN_HISTORY, checkpoint=True) < 0.75 * plain


def test_the_half_size_style_pass_adds_a_quarter_of_the_activations() -> None:
    for checkpoint in (False, True):
        side = 2048
        base = estimate_bytes(side, side, DEEPEST, MIN_HISTORY, checkpoint=checkpoint)
        more = estimate_bytes(side, side, DEEPEST, MIN_HISTORY, checkpoint=checkpoint, coarse=True)
        quarter = estimate_bytes(side // 2, side // 2, DEEPEST, 0, checkpoint=checkpoint)
        assert 1.15 * base < more < 1.3 * base
        assert more - base < quarter  # a quarter's activations, not its fixed part too


def test_the_plan_checkpoints_only_what_would_otherwise_be_refused() -> None:
    side, history = 2048, 50
    roomy = plan_memory(side, side, DEEPEST, history, CPU, free=64 * 2**30)
    assert roomy.history == history and not roomy.checkpoint
    plain = estimate_bytes(side, side, DEEPEST, MIN_HISTORY)
    checkpointed = estimate_bytes(side, side, DEEPEST, MIN_HISTORY, checkpoint=True)
    tight = plan_memory(side, side, DEEPEST, history, CPU, free=_between(checkpointed, plain))
    assert tight.checkpoint and MIN_HISTORY <= tight.history <= history
    with pytest.raises(CapacityError, match="choose a smaller size"):
        plan_memory(side, side, DEEPEST, history, CPU, free=int(checkpointed * 0.8))


def test_checkpointed_features_and_gradients_match_the_plain_network() -> None:
    weights = load_weights()
    plain = VGG19Features(weights, up_to=DEEPEST)
    saving = VGG19Features(weights, up_to=DEEPEST, checkpoint=True)
    image = image_to_tensor(resize_long_side(open_image(DATA / "cat.jpg"), 32))
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"]
    results = []
    for net in (plain, saving):
        x = image.clone().requires_grad_(True)
        features = net(x, layers)
        sum(f.square().mean() for f in features.values()).backward()
        assert x.grad is not None
        results.append((features, x.grad))
    (f_plain, g_plain), (f_saving, g_saving) = results
    assert f_plain.keys() == f_saving.keys() == set(layers)
    for name in layers:
        assert torch.allclose(f_plain[name], f_saving[name], rtol=1e-5, atol=1e-5)
    assert g_plain.abs().max() > 0
    assert torch.allclose(g_plain, g_saving, rtol=1e-4, atol=1e-6)


def test_a_job_above_what_fits_runs_checkpointed_to_the_same_picture(
    caplog: pytest.LogCaptureFixture,
) -> None:
    content = resize_long_side(open_image(DATA / "cat.jpg"), 32)
    style = resize_long_side(open_image(DATA / "starry_night.jpg"), 32)
    params = GatysParams(size=32, epochs=5, max_epochs=5, lbfgs_history=MIN_HISTORY)
    width, height = content.size
    plain_need = estimate_bytes(height, width, params.deepest_layer, MIN_HISTORY)
    saving_need = estimate_bytes(height, width, params.deepest_layer, MIN_HISTORY, checkpoint=True)
    budget = _between(saving_need, plain_need)
    with pytest.raises(CapacityError):  # as it is, the job does not fit this budget
        fitting_history(height, width, params.deepest_layer, MIN_HISTORY, budget)
    reference = stylize_gatys(content, [(style, 1.0)], params)
    with caplog.at_level(logging.INFO, logger="gpu_node.engine.gatys"):
        saving = stylize_gatys(content, [(style, 1.0)], params, free_memory=budget)
    assert "gradient checkpointing" in caplog.text
    difference = np.abs(np.asarray(reference, dtype=np.int16) - np.asarray(saving, np.int16))
    assert difference.max() <= 1  # the same picture, to the rounding of a pixel
