"""L-BFGS for one picture, exactly one loss-and-gradient evaluation per step.

The update is the classic one, as torch's LBFGS does it with max_iter=1: Nocedal's
two-loop recursion over the last `history` curvature pairs, scaled by s.y / y.y, steps
of `lr` (1 by default), no line search. The difference is the first step. Torch moves
1/|g|_1 along -g, which for a picture of 200,000 values is so short that the first
curvature pair (s, y) is mostly rounding noise: the scale it gives every later step is a
draw, and two runs that differ by one part in a million part ways after two steps. Here
the first step moves the pixel with the largest gradient by `first_step` units (pixels
in 0..255), long enough for y to measure the curvature and short enough to stay where
the loss is nearly quadratic. Each step's evaluation counts as one epoch, as before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch

# Pixels are optimised in 0..255: a first move of at most 4 units is small next to the
# tens of units the picture travels over a job.
FIRST_STEP = 4.0


class LBFGS:
    """Minimises a closure over `param` (a tensor with requires_grad); see the module."""

    def __init__(
        self,
        param: torch.Tensor,
        *,
        history: int = 50,
        lr: float = 1.0,
        first_step: float = FIRST_STEP,
    ) -> None:
        if history < 1:
            raise ValueError("history must be at least 1")
        if not (first_step > 0 and lr > 0):
            raise ValueError("first_step and lr must be positive")
        self.param = param
        self.history = history
        self.first_step = first_step
        self.lr = lr
        self._pairs: deque[tuple[torch.Tensor, torch.Tensor, float]] = deque(maxlen=history)
        self._last_grad: torch.Tensor | None = None
        self._last_move: torch.Tensor | None = None
        self._scale = 1.0
        self.evaluations = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the parameter's gradient before the closure computes a fresh one."""
        if set_to_none:
            self.param.grad = None
        elif self.param.grad is not None:
            self.param.grad.zero_()

    def step(self, closure: Callable[[], float]) -> float:
        """Evaluate the closure once at the current point, then move; returns its loss."""
        loss = closure()
        self.evaluations += 1
        if self.param.grad is None:
            raise RuntimeError("the closure left no gradient on the parameter")
        grad = self.param.grad.detach().reshape(-1).clone()
        if not torch.isfinite(grad).all():
            raise FloatingPointError("the gradient is not finite")
        if self._last_grad is not None and self._last_move is not None:
            self._remember(self._last_move, grad - self._last_grad)
        direction = self._direction(grad)
        if self._last_move is None:
            largest = float(grad.abs().max())
            if largest == 0.0:
                return loss  # at a stationary point already: nothing to learn or do
            direction.mul_(self.first_step / largest)
        if self.lr != 1.0:
            direction.mul_(self.lr)
        with torch.no_grad():
            self.param.view(-1).add_(direction)
        self._last_grad, self._last_move = grad, direction
        return loss

    def _remember(self, move: torch.Tensor, change: torch.Tensor) -> None:
        ys = float(change.dot(move))
        if ys <= 1e-10:
            return  # not a descent curvature pair (or too small to trust): skip it
        self._pairs.append((move, change, 1.0 / ys))
        self._scale = ys / float(change.dot(change))

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        """-H g by the two-loop recursion; -g before any curvature is known."""
        q = grad.neg()
        alphas = []
        for move, change, rho in reversed(self._pairs):
            alpha = rho * float(move.dot(q))
            q.add_(change, alpha=-alpha)
            alphas.append(alpha)
        q.mul_(self._scale)
        for (move, change, rho), alpha in zip(self._pairs, reversed(alphas), strict=True):
            beta = rho * float(change.dot(q))
            q.add_(move, alpha=alpha - beta)
        return q
