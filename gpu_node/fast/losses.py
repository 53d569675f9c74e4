"""Perceptual losses of Johnson et al.: content and style measured by a frozen VGG19.

Content: mean squared distance of the features at one layer (relu2_2 in the paper).
Style: for each style layer, mean squared distance of Gram matrices normalised by the
feature map size. Total variation: mean absolute difference of neighbouring pixels,
which keeps the picture free of high-frequency noise.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gpu_node.engine.vgg import VGG19Features
from gpu_node.fast.trainconfig import CONTENT_LAYER, STYLE_LAYERS

__all__ = ["CONTENT_LAYER", "STYLE_LAYERS", "LossWeights", "PerceptualLoss"]


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices [B, C, C] of features [B, C, H, W], divided by C*H*W, in float32."""
    b, c, h, w = features.shape
    flat = features.float().reshape(b, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontally and vertically adjacent pixels."""
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    return dx + dy


@dataclass(frozen=True)
class LossWeights:
    """How much each term counts."""

    content: float
    style: float
    tv: float


class PerceptualLoss:
    """The training objective for one style picture."""

    def __init__(
        self,
        vgg: VGG19Features,
        style_image: torch.Tensor,
        weights: LossWeights,
        content_layer: str = CONTENT_LAYER,
        style_layers: Sequence[str] = STYLE_LAYERS,
    ) -> None:
        self.vgg = vgg
        self.weights = weights
        self.content_layer = content_layer
        self.style_layers = tuple(style_layers)
        with torch.no_grad():
            feats = vgg(style_image, self.style_layers)
            self.style_grams = {k: gram(feats[k]) for k in self.style_layers}

    def __call__(self, output: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms (already weighted) and their sum under "total"."""
        layers = {*self.style_layers, self.content_layer}
        out_feats = self.vgg(output, layers)
        with torch.no_grad():
            target = self.vgg(content, [self.content_layer])[self.content_layer]
        content_loss = F.mse_loss(out_feats[self.content_layer].float(), target.float())
        style_loss = sum(
            (
                F.mse_loss(gram(out_feats[k]), self.style_grams[k].expand(output.shape[0], -1, -1))
                for k in self.style_layers
            ),
            start=torch.zeros((), device=output.device),
        )
        terms = {
            "content": self.weights.content * content_loss,
            "style": self.weights.style * style_loss,
            "tv": self.weights.tv * total_variation(output.float()),
        }
        terms["total"] = terms["content"] + terms["style"] + terms["tv"]
        return terms
