"""Pure loss helpers for Gatys style transfer: Gram matrices, content, style and TV terms.

Gram matrices are normalised by the layer's size (channels x height x width), so layers
and image sizes weigh alike and a style measured at one size matches another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F


def gram(features: torch.Tensor) -> torch.Tensor:
    """The [N, C, C] Gram matrix of [N, C, H, W] features, divided by C*H*W."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)).div_(c * h * w)


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


def gram_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared distance between the Gram matrices of two feature maps (for scoring)."""
    return float(F.mse_loss(gram(a), gram(b)))
