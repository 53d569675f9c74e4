"""GatysParams: the epoch cap, validation with clear messages, scales; capacity estimates."""

from __future__ import annotations

import pytest
import torch

from gpu_node.engine.capacity import check_fits, estimate_bytes, fitting_history
from gpu_node.engine.gatys_params import LEGACY_GATYS, GatysParams
from gpu_node.errors import BadInputError, CapacityError


def test_epochs_over_the_cap_are_an_error_naming_the_cap() -> None:
    assert GatysParams(epochs=10, max_epochs=10).epochs == 10
    with pytest.raises(BadInputError, match="max_epochs=10"):
        GatysParams(epochs=11, max_epochs=10)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("size", 8, "size must be between"),
        ("size", 512.5, "whole number"),
        ("epochs", 0, "epochs must be"),
        ("content_weight", -1.0, "content_weight must be"),
        ("style_weight", float("inf"), "finite"),
        ("learning_rate", 0.0, "positive"),
        ("style_scale", 10.0, "style_scale"),
        ("style_layers", (("relu9_1", 1.0),), "unknown VGG19 layer"),
        ("style_layers", (), "at least one style layer"),
        ("content_layers", (("relu4_2", 1.0), ("relu4_2", 2.0)), "named twice"),
        ("optimizer", "lbfgs", "Optimizer"),
    ],
)
def test_bad_values_are_refused_with_a_message(field: str, value: object, words: str) -> None:
    with pytest.raises(BadInputError, match=words):
        GatysParams(**{field: value})  # type: ignore[arg-type]


def test_large_outputs_run_coarse_to_fine() -> None:
    assert GatysParams(size=512).scales() == [512]
    big = GatysParams(size=2048, epochs=301)
    assert big.scales() == [1024, 2048]
    assert big.epochs_per_scale() == [151, 150]
    assert GatysParams(size=4096, epochs=30).scales() == [1024, 2048, 4096]
    with pytest.raises(BadInputError, match="at least 3"):
        GatysParams(size=4096, epochs=2).epochs_per_scale()


def test_deepest_layer_is_where_the_forward_pass_stops() -> None:
    assert GatysParams().deepest_layer == "relu5_1"
    shallow = GatysParams(style_layers=(("relu1_1", 1.0),), content_layers=(("relu2_2", 1.0),))
    assert shallow.deepest_layer == "relu2_2"


def test_memory_estimate_grows_with_pixels_and_refuses_the_impossible() -> None:
    small = estimate_bytes(512, 512, "relu5_1", 50)
    large = estimate_bytes(2048, 2048, "relu5_1", 50)
    assert 0.5 * 2**30 < small < 2 * 2**30
    # Measured peaks at relu5_1 (history 5): 1.1 GiB at 512 px, 11.9 GiB at 2048 px.
    assert 11.9 * 2**30 < estimate_bytes(2048, 2048, "relu5_1", 5) < 14 * 2**30
    assert 10 * small < large < 16 * small
    assert check_fits(64, 64, "relu5_1", 50, torch.device("cpu")) == 50
    with pytest.raises(CapacityError, match="free on cpu; choose a smaller size"):
        check_fits(60_000, 60_000, "relu5_1", 50, torch.device("cpu"))


def test_a_large_job_gets_a_shorter_lbfgs_history_before_it_is_refused() -> None:
    need = {h: estimate_bytes(2048, 2048, "relu5_1", h) for h in (5, 20, 50)}
    roomy = int(need[50] / 0.85) + 1
    assert fitting_history(2048, 2048, "relu5_1", 50, roomy) == 50
    tight = int(need[20] / 0.85) + 1
    assert fitting_history(2048, 2048, "relu5_1", 50, tight) == 20
    assert fitting_history(2048, 2048, "relu5_1", 3, tight) == 3  # short already: kept
    with pytest.raises(CapacityError, match=r"needs about 1\d\.\d GiB"):
        fitting_history(2048, 2048, "relu5_1", 50, int(need[5] / 0.85) - 2**20)


def test_a_warm_up_at_half_size_comes_first_when_there_is_room() -> None:
    # The defaults (issue 18): three quarters of the epochs at half size, then the rest at
    # full size.
    assert GatysParams(size=512, epochs=200).stages() == [(256, 150), (512, 50)]
    big = GatysParams(size=2048, epochs=301)
    assert big.stages() == [(512, 226), (1024, 38), (2048, 37)]
    # below 2 * MIN_WARMUP, or with no epoch to spare for the scales, no warm-up
    assert GatysParams(size=96, epochs=10).stages() == [(96, 10)]
    assert GatysParams(size=2048, epochs=2).stages() == [(1024, 1), (2048, 1)]
    assert GatysParams(size=512, epochs=200, warmup_share=0.0).stages() == [(512, 200)]


def test_style_strength_scales_the_style_weight_the_warm_up_and_the_coarse_term() -> None:
    full = GatysParams(size=512, epochs=200)
    half = GatysParams(size=512, epochs=200, style_strength=0.5)
    assert half.effective_style_weight == pytest.approx(0.5 * full.effective_style_weight)
    assert half.stages() == [(256, 75), (512, 125)]
    # the half-size style term fades in over the upper half of the strength
    assert half.effective_coarse_weight == 0 and not half.coarse_style_at(512)
    three_quarters = GatysParams(size=512, epochs=200, style_strength=0.75)
    assert three_quarters.effective_coarse_weight == pytest.approx(0.15)
    assert full.effective_coarse_weight == full.coarse_style_weight
    none = GatysParams(size=512, epochs=200, style_strength=0.0)
    assert none.effective_style_weight == 0 and none.stages() == [(512, 200)]
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(BadInputError, match="style_strength"):
            GatysParams(style_strength=bad)
    with pytest.raises(BadInputError, match="warmup_share"):
        GatysParams(warmup_share=1.0)


def test_the_coarse_style_term_comes_after_the_warm_up_only() -> None:
    # The defaults (issue 18): the half-size style term joins the full-size stage, never
    # the half-size warm-up itself, nor a stage too small to halve, nor the old defaults.
    params = GatysParams(size=512, epochs=200)
    assert params.coarse_style_weight == 0.3
    assert [params.coarse_style_at(size) for size, _ in params.stages()] == [False, True]
    big = GatysParams(size=2048, epochs=301)
    assert [big.coarse_style_at(size) for size, _ in big.stages()] == [False, True, True]
    assert not GatysParams(size=96, epochs=10).coarse_style_at(96)
    assert not LEGACY_GATYS.coarse_style_at(512)
    assert not GatysParams(coarse_style_weight=0.0).coarse_style_at(512)
    with pytest.raises(BadInputError, match="coarse_style_weight"):
        GatysParams(coarse_style_weight=-1.0)


def test_the_pace_warm_up_runs_the_default_stages() -> None:
    # The node's measured pace prices an average epoch of a default job (relay/estimates.py):
    # its timed runs must include the half-size warm-up that default jobs have.
    from gpu_node.engine.pace import WARM_UP_RUNS

    for size, epochs in WARM_UP_RUNS:
        stages = GatysParams(size=size, epochs=epochs).stages()
        assert len(stages) == 2 and stages[0][0] == size // 2, (size, stages)
