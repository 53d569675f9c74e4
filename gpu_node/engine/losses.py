"""Pure loss helpers for Gatys style transfer: Gram matrices, content, style and TV terms.

Gram matrices are normalised by the layer's size (channels x height x width), so layers
and image sizes weigh alike and a style measured at one size matches another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F


def gram(features: torch.Tensor) -> torch.Tensor:
    """The [N, C, C] Gram matrix of [N, C, H, W] features, divided by C*H*W."""
    out: torch.Tensor = _Gram.apply(features)
    return out


class _Gram(torch.autograd.Function):
    """G = F F^T / (C*H*W) with a backward of one matrix product instead of autograd's two
    (and the [C, H*W] sum between them): dF = (dG + dG^T) F / (C*H*W)."""

    @staticmethod
    def forward(ctx: Any, features: torch.Tensor) -> torch.Tensor:
        n, c, h, w = features.shape
        flat = features.reshape(n, c, h * w)
        ctx.save_for_backward(flat)
        ctx.shape = features.shape
        ctx.scale = 1.0 / (c * h * w)
        return _times_transposed(flat).mul_(ctx.scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (flat,) = ctx.saved_tensors
        sym = (grad + grad.transpose(1, 2)).mul_(ctx.scale)
        # One image (the usual case) takes mm, which runs faster than bmm over a batch of 1.
        product = torch.mm(sym[0], flat[0]).unsqueeze(0) if len(flat) == 1 else sym.bmm(flat)
        return product.view(ctx.shape)


def _times_transposed(flat: torch.Tensor) -> torch.Tensor:
    if len(flat) == 1:
        return torch.mm(flat[0], flat[0].t()).unsqueeze(0)
    return torch.bmm(flat, flat.transpose(1, 2))


def content_loss(
    features: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    layers: Sequence[tuple[str, float]],
) -> torch.Tensor:
    """Weighted mean squared distance between features and their content targets."""
    terms = [weight * F.mse_loss(features[name], targets[name]) for name, weight in layers]
    return torch.stack(terms).sum()


def style_loss(
    features: Mapping[str, torch.Tensor],
    target_grams: Sequence[tuple[float, Mapping[str, torch.Tensor]]],
    layers: Sequence[tuple[str, float]],
) -> torch.Tensor:
    """Blend-weighted, layer-weighted mean squared distance between Gram matrices."""
    terms = []
    for name, weight in layers:
        own = gram(features[name])
        for blend, grams in target_grams:
            terms.append((blend * weight) * F.mse_loss(own, grams[name]))
    return torch.stack(terms).sum()


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation: mean absolute difference between neighbouring pixels."""
    across = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    down = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    return across + down
