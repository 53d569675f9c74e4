"""Frozen 3x3 convolutions, with a faster CPU path through NNPACK's Winograd kernels.

On a CPU, oneDNN's direct convolution already runs near the cores' peak, so the only way
to make VGG19 faster there is to do less arithmetic: NNPACK's Winograd transform needs
about a third of the multiplications for a 3x3 kernel. It pays off on large feature maps
(measured 1.3-1.6x per layer at 64 px and above on a 2-core AVX2 machine) and loses on
small ones, so it is used only where the map is large. Gradients flow only to the input
(the weights are frozen); the input gradient of a 3x3 convolution is itself a 3x3
convolution with the kernel transposed and flipped, so it takes the fast path too.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input

log = logging.getLogger(__name__)

# Feature maps with at least this many pixels take the Winograd path on the CPU.
WINOGRAD_MIN_PIXELS = 48 * 48
# ... and produce at least this many channels (the Winograd transform of the input is
# wasted on a thin output).
WINOGRAD_MIN_CHANNELS = 16


@functools.cache
def nnpack_usable() -> bool:
    """Whether this torch build has NNPACK (asking also initialises it)."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


class _WinogradConv(torch.autograd.Function):
    """3x3, stride 1, padding 1 convolution through NNPACK; gradient to the input only."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, flipped: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        ctx.weight, ctx.flipped, ctx.input_shape = weight, flipped, x.shape
        return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, [1, 1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        flipped: torch.Tensor = ctx.flipped
        if flipped.shape[0] < WINOGRAD_MIN_CHANNELS:
            # conv1_1's gradient has 3 channels: NNPACK would transform 64 input maps for
            # them, and took 31 ms where oneDNN's backward-data takes 12 (256 px).
            back = conv2d_input(ctx.input_shape, ctx.weight, grad, padding=1)  # type: ignore[no-untyped-call]
            return back, None, None, None
        return (
            torch._nnpack_spatial_convolution(grad.contiguous(), flipped, None, [1, 1]),
            None,
            None,
            None,
        )


class FrozenConv3x3(nn.Module):
    """A 3x3 convolution with padding 1 whose weights never train."""

    weight: torch.Tensor
    bias: torch.Tensor
    flipped: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, *, winograd: bool = True) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone())
        # The kernel of the input gradient: in and out swapped, rotated by 180 degrees.
        self.register_buffer("flipped", weight.detach().transpose(0, 1).flip(2, 3).contiguous())
        self.winograd = winograd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve `x` [N, C, H, W]."""
        if self._use_winograd(x):
            out: torch.Tensor = _WinogradConv.apply(x, self.weight, self.flipped, self.bias)
            return out
        return F.conv2d(x, self.weight, self.bias, padding=1)

    def _use_winograd(self, x: torch.Tensor) -> bool:
        return (
            self.winograd
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.shape[-1] * x.shape[-2] >= WINOGRAD_MIN_PIXELS
            and nnpack_usable()
        )
