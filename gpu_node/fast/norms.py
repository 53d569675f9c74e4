"""Layers shared by the fast networks: reflection-padded conv and style-conditioned norm."""

import torch
import torch.nn.functional as F
from torch import nn


class ReflectConv(nn.Conv2d):
    """A square conv whose border is reflection-padded to keep the size (before the stride)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True):
        super().__init__(
            c_in, c_out, kernel, stride, padding=kernel // 2, padding_mode="reflect", bias=bias
        )


def instance_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Normalise each channel of each image, then scale by `gamma` and shift by `beta` [B, C]."""
    y = F.instance_norm(x, eps=1e-5)
    return y * gamma[:, :, None, None] + beta[:, :, None, None]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad the bottom and right so both sides divide by `multiple`; returns (x, h, w)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        # reflection needs the pad to be smaller than the side; replicate covers tiny images
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w
