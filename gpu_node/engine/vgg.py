"""VGG19 as a frozen feature network with named layers.

Layers are named as in the paper: conv1_1, relu1_1, conv1_2, relu1_2, pool1, ... relu5_4,
pool5. `forward` takes RGB images in 0..1 (the weights' own normalisation is applied
inside), returns only the layers asked for, and stops after the deepest of them. With
`checkpoint` set, a forward pass that records gradients keeps only each block's input and
the layers asked for, and runs each block again during the backward pass
(`torch.utils.checkpoint`): less memory for a large picture, the same numbers.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as recompute

from gpu_node.engine.conv import FrozenConv3x3
from gpu_node.engine.layers import LAYER_INDEX, LAYER_NAMES, Pooling, check_layers
from gpu_node.engine.weights import Normalization, VGGWeights
from gpu_node.errors import BadInputError

__all__ = ["LAYER_INDEX", "LAYER_NAMES", "Pooling", "VGG19Features", "check_layers"]


class _Normalize(nn.Module):
    """x * scale - mean, per channel, in RGB order (the first convolution takes BGR
    weights reordered, so no channel shuffle runs per image)."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, norm: Normalization) -> None:
        super().__init__()
        order = [2, 1, 0] if norm.bgr else [0, 1, 2]
        mean = [norm.mean[i] for i in order]
        std = [norm.std[i] for i in order]
        scale = torch.tensor([norm.scale / s for s in std]).view(1, 3, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, 3, 1, 1)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


class VGG19Features(nn.Module):
    """Frozen VGG19 convolutional features, cut after `up_to` (default: all of them).

    `winograd` allows the faster CPU convolution of `gpu_node.engine.conv`; `channels_last`
    lays feature maps out as cuDNN prefers (inputs may come in either layout); `checkpoint`
    trades compute for memory (see the module).
    """

    def __init__(
        self,
        weights: VGGWeights,
        pooling: Pooling = Pooling.MAX,
        up_to: str | None = None,
        *,
        winograd: bool = True,
        channels_last: bool = False,
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        last = LAYER_INDEX[up_to] if up_to is not None else len(LAYER_NAMES) - 1
        self.normalize = _Normalize(weights.normalization)
        self.convs = nn.ModuleList()
        self.pooling = pooling
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.names = LAYER_NAMES[: last + 1]
        pairs = iter(weights.convs)
        self._conv_at: dict[str, int] = {}
        for name in self.names:
            if name.startswith("conv"):
                self._conv_at[name] = len(self.convs)
                weight, bias = next(pairs)
                if name == "conv1_1" and weights.normalization.bgr:
                    weight = weight.flip(1)  # BGR -> RGB input channels
                self.convs.append(FrozenConv3x3(weight, bias, winograd=winograd))
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        """Always stays in eval mode: the network is a fixed measuring instrument."""
        return super().train(False)

    def forward(self, image: torch.Tensor, layers: Collection[str]) -> dict[str, torch.Tensor]:
        """Features of `image` (RGB, 0..1, [N, 3, H, W]) at each of `layers`."""
        wanted = set(layers)
        missing = wanted - set(self.names)
        if missing:
            check_layers(missing)
            raise BadInputError(f"layer(s) {', '.join(sorted(missing))} are cut off this network")
        deepest = max((LAYER_INDEX[name] for name in wanted), default=-1)
        x = self.normalize(image).contiguous(memory_format=self.memory_format)
        todo = self.names[: deepest + 1]
        if not (self.checkpoint and torch.is_grad_enabled() and x.requires_grad):
            return self._layers(todo, x, wanted)[1]
        out: dict[str, torch.Tensor] = {}
        for block in sorted({name[4] for name in todo}):
            names = [name for name in todo if name[4] == block]
            asked = [name for name in names if name in wanted]

            def run(x: torch.Tensor, names: list[str] = names) -> tuple[torch.Tensor, ...]:
                x, got = self._layers(names, x, wanted)
                return (x, *(got[name] for name in names if name in got))

            x, *maps = recompute(run, x, use_reentrant=False)
            out.update(zip(asked, maps, strict=True))
        return out

    def _layers(
        self, names: Sequence[str], x: torch.Tensor, wanted: set[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run `names` in order from `x`: the last map, and those of `wanted`."""
        out: dict[str, torch.Tensor] = {}
        for name in names:
            match name[:4]:
                case "conv":
                    x = self.convs[self._conv_at[name]](x)
                case "relu":
                    # In place saves a copy per layer, unless the conv output was asked for.
                    keep = "conv" + name[4:] in wanted
                    x = F.relu(x) if keep else F.relu_(x)
                case _:
                    x = (
                        F.max_pool2d(x, 2, 2)
                        if self.pooling is Pooling.MAX
                        else F.avg_pool2d(x, 2, 2)
                    )
            if name in wanted:
                out[name] = x
        return x, out
