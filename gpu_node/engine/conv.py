"""Frozen 3x3 convolutions, with faster CPU paths through Winograd's algorithm.

On a CPU, oneDNN's direct convolution already runs near the cores' peak, so the only way
to make VGG19 faster there is to do less arithmetic: a Winograd transform needs a third
to a quarter of the multiplications for a 3x3 kernel. Two implementations, by map size
(measured per layer on a 2-core AVX2 machine, OpenMP threads passive):

- large maps (48x48 and up): NNPACK's F(6x6, 3x3) kernels, 1.3-2x faster than oneDNN;
- small maps (16x16 up to 48x48): gpu_node.engine.winograd's F(4x4, 3x3) on torch's own
  matrix products, with kernels transformed once, 1.4-2.3x faster than oneDNN there,
  where NNPACK's per-call kernel transform of 512x512 channels makes it lose;
- smaller maps, other dtypes and other devices: the framework's own convolution.

Gradients flow only to the input (the weights are frozen); the input gradient of a 3x3
convolution is itself a 3x3 convolution with the kernel transposed and flipped, so it
takes the same fast path.
"""

from __future__ import annotations

import enum
import functools
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input

from gpu_node.engine.winograd import WinogradKernel, conv3x3

log = logging.getLogger(__name__)

# Feature maps with at least this many pixels take NNPACK's Winograd path on the CPU,
WINOGRAD_MIN_PIXELS = 48 * 48
# and those with at least this many (but fewer than the above) the tiled torch one.
TILED_MIN_PIXELS = 16 * 16
# A gradient with fewer channels than this goes through oneDNN's backward-data instead.
WINOGRAD_MIN_CHANNELS = 16


class _Path(enum.Enum):
    """Which implementation convolves a given input."""

    DIRECT = "direct"
    NNPACK = "nnpack"
    TILED = "tiled"


@functools.cache
def nnpack_usable() -> bool:
    """Whether this torch build has NNPACK (asking also initialises it)."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


class _NnpackConv(torch.autograd.Function):
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
            return _thin_input_grad(ctx.input_shape, ctx.weight, grad), None, None, None
        back = torch._nnpack_spatial_convolution(grad.contiguous(), flipped, None, [1, 1])
        return back, None, None, None


class _TiledConv(torch.autograd.Function):
    """The same convolution through gpu_node.engine.winograd, for small maps."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, conv: FrozenConv3x3, bias: torch.Tensor) -> torch.Tensor:
        ctx.conv, ctx.input_shape = conv, x.shape
        return conv3x3(x, conv.kernels(x)[0], bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        conv: FrozenConv3x3 = ctx.conv
        if conv.flipped.shape[0] < WINOGRAD_MIN_CHANNELS:
            return _thin_input_grad(ctx.input_shape, conv.weight, grad), None, None
        return conv3x3(grad, conv.kernels(grad)[1], None), None, None


def _thin_input_grad(shape: torch.Size, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    # conv1_1's gradient has 3 channels: a Winograd transform of the 64 incoming maps is
    # wasted on them (NNPACK took 31 ms where oneDNN's backward-data takes 12, 256 px).
    back: torch.Tensor = conv2d_input(shape, weight, grad, padding=1)  # type: ignore[no-untyped-call]
    return back


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
        self._kernels: tuple[WinogradKernel, WinogradKernel] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve `x` [N, C, H, W]."""
        out: torch.Tensor
        match self._path(x):
            case _Path.NNPACK:
                out = _NnpackConv.apply(x, self.weight, self.flipped, self.bias)
            case _Path.TILED:
                out = _TiledConv.apply(x, self, self.bias)
            case _Path.DIRECT:
                out = F.conv2d(x, self.weight, self.bias, padding=1)
        return out

    def kernels(self, like: torch.Tensor) -> tuple[WinogradKernel, WinogradKernel]:
        """The forward and input-gradient kernels, transformed once for `like`'s device."""
        cached = self._kernels
        if cached is None or cached[0].u.device != like.device:
            cached = (WinogradKernel(self.weight), WinogradKernel(self.flipped))
            self._kernels = cached
        return cached

    def _path(self, x: torch.Tensor) -> _Path:
        if not self.winograd or x.device.type != "cpu" or x.dtype != torch.float32:
            return _Path.DIRECT
        pixels = x.shape[-1] * x.shape[-2]
        if pixels >= WINOGRAD_MIN_PIXELS and nnpack_usable():
            return _Path.NNPACK
        if pixels >= TILED_MIN_PIXELS:
            return _Path.TILED
        return _Path.DIRECT
