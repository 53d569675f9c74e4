"""Luminance-only transfer (Gatys et al., "Preserving color in neural artistic style
transfer"): style the luminance channel, then put the content's own chroma back.

Colours are split in the YIQ space of NTSC: Y is luminance, I and Q carry the colour.
"""

from __future__ import annotations

import torch

_RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ],
    dtype=torch.float64,
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", matrix.to(image), image)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] RGB to YIQ (same value range as the input)."""
    return _apply(_RGB_TO_YIQ, image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] YIQ back to RGB."""
    return _apply(_YIQ_TO_RGB, image)


def luminance_as_rgb(image: torch.Tensor) -> torch.Tensor:
    """The grey picture of `image`'s luminance, three equal channels."""
    luma = rgb_to_yiq(image)[:, :1]
    return luma.expand(-1, 3, -1, -1).contiguous()


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Grey `style` whose luminance has the mean and spread of `content`'s."""
    s = rgb_to_yiq(style)[:, :1]
    c = rgb_to_yiq(content)[:, :1]
    matched = (s - s.mean()) * (c.std() / s.std().clamp_min(1e-6)) + c.mean()
    return matched.clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()


def with_chroma_of(styled: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The luminance of `styled` with the I and Q channels of `content` (clamped to 0..1)."""
    luma = rgb_to_yiq(styled)[:, :1]
    chroma = rgb_to_yiq(content)[:, 1:]
    return yiq_to_rgb(torch.cat([luma, chroma], dim=1)).clamp(0.0, 1.0)
