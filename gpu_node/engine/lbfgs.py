"""L-BFGS that never waits for the device: torch's algorithm with its decisions made in
tensors instead of Python.

`torch.optim.LBFGS` reads the loss, the gradient's size and every curvature product off
the device each step (`float(loss)`, `if ys > 1e-10`, `alpha=-al[i]`: hundreds of host
synchronisations a step at a history of 100), so a GPU idles between its kernels. This is
the same method for the Gatys engine's use (one parameter, `max_iter=1`, no line search):
step for step the same picture as torch's, with the kernels queued back to back.

Where torch's step takes a branch on a device value, this one computes both ways:
- a pair whose curvature `y.s` is not positive is kept with weight 0 (inert) rather than
  dropped, so it takes the oldest pair's place a step early;
- a vanishing gradient (`tolerance_grad`) or a direction that does not descend
  (`tolerance_change`) holds the picture still instead of ending the step.
Both happen only once an optimisation has converged or broken down.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class SyncFreeLBFGS:
    """L-BFGS over one tensor, one evaluation per `step` (torch's `max_iter=1`)."""

    def __init__(
        self,
        param: torch.Tensor,
        *,
        lr: float = 1.0,
        history_size: int = 100,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
    ) -> None:
        if history_size < 1:
            raise ValueError(f"history_size must be at least 1, not {history_size}")
        self.param = param
        self.lr = lr
        self.history_size = history_size
        self.tolerance_grad = tolerance_grad
        self.tolerance_change = tolerance_change
        self.steps = 0
        # The ring of (y, s, 1/y.s) pairs; `_next` is the slot written next, so the
        # newest pair is the one before it. Rows are allocated as the ring fills.
        self._dirs: list[torch.Tensor] = []
        self._stps: list[torch.Tensor] = []
        self._ro: list[torch.Tensor] = []
        self._next = 0
        self._d: torch.Tensor | None = None
        self._t: torch.Tensor | None = None
        self._prev_grad: torch.Tensor | None = None
        self._h_diag: torch.Tensor | None = None

    def zero_grad(self) -> None:
        """Forget the parameter's gradient (set it to None, as torch's optimisers do)."""
        self.param.grad = None

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Evaluate `closure` (which must fill the gradient) once and move the parameter."""
        with torch.enable_grad():
            loss = closure()
        grad = self.param.grad
        if grad is None:
            raise RuntimeError("the closure left the parameter without a gradient")
        flat = grad.reshape(-1)
        zero = flat.new_zeros(())
        self.steps += 1
        if self._d is None or self._t is None or self._prev_grad is None:
            d = flat.neg()
            t = torch.clamp(flat.abs().sum().reciprocal(), max=1.0) * self.lr
            self._prev_grad = flat.clone(memory_format=torch.contiguous_format)
            self._h_diag = flat.new_ones(())
        else:
            d = self._direction(flat, self._d, self._t, self._prev_grad)
            t = flat.new_full((), self.lr)
            self._prev_grad.copy_(flat)
        gtd = flat.dot(d)
        moves = (flat.abs().amax() > self.tolerance_grad) & (gtd <= -self.tolerance_change)
        with torch.no_grad():
            self.param.view(-1).addcmul_(d, torch.where(moves, t, zero))
        self._d, self._t = d, t
        return loss

    def _direction(
        self, flat: torch.Tensor, d: torch.Tensor, t: torch.Tensor, prev: torch.Tensor
    ) -> torch.Tensor:
        """Store the newest pair and return -H g by the two-loop recursion."""
        assert self._h_diag is not None
        y = flat - prev
        s = d * t
        ys = y.dot(s)
        accept = ys > 1e-10
        ro = torch.where(accept, ys.reciprocal(), ys.new_zeros(()))
        self._h_diag = torch.where(accept, ys / y.dot(y), self._h_diag)
        slot = self._next
        if slot == len(self._dirs):
            self._dirs.append(y)
            self._stps.append(s)
            self._ro.append(ro)
        else:
            self._dirs[slot], self._stps[slot], self._ro[slot] = y, s, ro
        self._next = (slot + 1) % self.history_size
        count = len(self._dirs)
        newest_first = [(slot - k) % count for k in range(count)]
        q = flat.neg()
        al: dict[int, torch.Tensor] = {}
        for i in newest_first:
            al[i] = self._stps[i].dot(q) * self._ro[i]
            q.addcmul_(self._dirs[i], al[i], value=-1)
        r = q * self._h_diag
        for i in reversed(newest_first):
            be = self._dirs[i].dot(r) * self._ro[i]
            r.addcmul_(self._stps[i], al[i] - be)
        return r
