"""The engine's L-BFGS: one evaluation per step, a loss that falls, runs that repeat."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from gpu_node.engine.lbfgs import LBFGS


def _quadratic(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A badly scaled quadratic 0.5 * sum(a * (x - b)^2): curvatures from 0.1 to 100."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 2, 500)[torch.randperm(500, generator=generator)]
    target = torch.randn(500, generator=generator) * 50
    return scales, target


def _closure(
    x: torch.Tensor, scales: torch.Tensor, target: torch.Tensor, calls: list[float]
) -> Callable[[], float]:
    def closure() -> float:
        x.grad = None
        loss = 0.5 * (scales * (x - target).square()).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        calls.append(float(loss.detach()))
        return calls[-1]

    return closure


def test_each_step_is_one_evaluation_and_the_loss_falls_far() -> None:
    scales, target = _quadratic(0)
    x = torch.zeros(500, requires_grad=True)
    calls: list[float] = []
    optimizer = LBFGS(x, history=10)
    closure = _closure(x, scales, target, calls)
    for step in range(1, 41):
        optimizer.step(closure)
        assert len(calls) == step == optimizer.evaluations
    assert calls[-1] < 1e-3 * calls[0]
    assert all(
        later < earlier for earlier, later in zip(calls[10::10], calls[20::10], strict=False)
    )


def test_first_step_moves_the_steepest_value_by_first_step_units() -> None:
    scales, target = _quadratic(1)
    x = torch.zeros(500, requires_grad=True)
    optimizer = LBFGS(x, first_step=2.5)
    optimizer.step(_closure(x, scales, target, []))
    assert float(x.detach().abs().max()) == pytest.approx(2.5, rel=1e-6)


def test_same_start_same_steps() -> None:
    runs = []
    for _ in range(2):
        scales, target = _quadratic(2)
        x = torch.zeros(500, requires_grad=True)
        optimizer = LBFGS(x, history=5)
        closure = _closure(x, scales, target, [])
        for _ in range(15):
            optimizer.step(closure)
        runs.append(x.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_given_torchs_first_step_it_takes_torchs_steps() -> None:
    # Torch's first move is -g / |g|_1; asked for the same move, the two-loop recursion
    # and its scaling must then retrace torch's L-BFGS to rounding.
    scales, target = _quadratic(3)
    start_grad = (scales * target).double()
    torchs_first = float(start_grad.abs().max() / start_grad.abs().sum())
    finals = []
    for ours in (True, False):
        x = torch.zeros(500, dtype=torch.float64, requires_grad=True)
        calls: list[float] = []
        closure = _closure(x, scales.double(), target.double(), calls)
        if ours:
            mine = LBFGS(x, history=20, first_step=torchs_first)
            for _ in range(40):
                mine.step(closure)
        else:
            theirs = torch.optim.LBFGS([x], lr=1, max_iter=1, history_size=20)
            for _ in range(40):
                theirs.step(closure)  # type: ignore[no-untyped-call]
        finals.append(calls[-1])
    assert finals[0] == pytest.approx(finals[1], rel=1e-6)
    assert finals[0] < 1e-3 * calls[0]


def test_a_gradientless_closure_or_bad_settings_are_refused() -> None:
    x = torch.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="no gradient"):
        LBFGS(x).step(lambda: 0.0)
    with pytest.raises(ValueError):
        LBFGS(x, history=0)
    with pytest.raises(ValueError):
        LBFGS(x, first_step=0.0)


def test_a_stationary_start_stays_put() -> None:
    x = torch.zeros(4, requires_grad=True)

    def flat() -> float:
        x.grad = torch.zeros(4)
        return 1.0

    optimizer = LBFGS(x)
    for _ in range(3):
        assert optimizer.step(flat) == 1.0
    assert torch.equal(x.detach(), torch.zeros(4))
