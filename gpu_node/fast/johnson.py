"""The Johnson et al. transformer that `train` makes, one network per style.

A 9x9 conv, two stride-2 convs, five residual blocks, two nearest-upsample-then-conv
layers (no transposed convs, so no checkerboard) and a 9x9 conv to RGB. Every conv pads
by reflection and is followed by an instance norm (Ulyanov et al.'s fix to Johnson's
batch norm). Input and output are RGB in 0..1; a sigmoid keeps the output in range.
"""

import torch
import torch.nn.functional as F
from torch import nn

from gpu_node.fast.norms import ReflectConv, pad_to_multiple

RESIDUAL_BLOCKS = 5


class ConvNorm(nn.Module):
    """Reflection-padded conv, instance norm with learned scale and shift, optional ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, relu: bool = True):
        super().__init__()
        self.conv = ReflectConv(c_in, c_out, kernel, stride)
        self.norm = nn.InstanceNorm2d(c_out, affine=True)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Conv, norm, then ReLU if asked."""
        x = self.norm(self.conv(x))
        return F.relu(x) if self.relu else x


class Residual(nn.Module):
    """Two 3x3 conv-norm layers with a skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = ConvNorm(channels, channels, 3)
        self.second = ConvNorm(channels, channels, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + F(x)."""
        out: torch.Tensor = x + self.second(self.first(x))
        return out


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by 2, then a conv-norm layer."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.layer = ConvNorm(c_in, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Double the size, then convolve."""
        out: torch.Tensor = self.layer(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return out


class JohnsonNet(nn.Module):
    """Photo [B, 3, H, W] in 0..1 -> stylised photo in 0..1."""

    def __init__(self) -> None:
        super().__init__()
        self.contract = nn.Sequential(
            ConvNorm(3, 32, 9), ConvNorm(32, 64, 3, 2), ConvNorm(64, 128, 3, 2)
        )
        self.residual = nn.Sequential(*(Residual(128) for _ in range(RESIDUAL_BLOCKS)))
        self.expand = nn.Sequential(Upsample(128, 64), Upsample(64, 32))
        self.out = ReflectConv(32, 3, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sides must be multiples of 4; see `stylize` for any size."""
        return torch.sigmoid(self.out(self.expand(self.residual(self.contract(x)))))

    def stylize(self, image: torch.Tensor) -> torch.Tensor:
        """Stylise an image of any size: pad to a multiple of 4, run, crop back."""
        padded, h, w = pad_to_multiple(image, 4)
        dtype = next(self.parameters()).dtype
        out: torch.Tensor = self(padded.to(dtype))
        return out[..., :h, :w].to(image.dtype)
