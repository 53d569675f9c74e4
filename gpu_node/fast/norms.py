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


def _channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel mean and mean square [B, C, 1, 1], in float32."""
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # [B, H*W, C] is a free view here; the squares are the diagonal of a small Gram
        # matrix, which BLAS computes far faster than a strided norm reduction
        v = x.permute(0, 2, 3, 1).reshape(b, h * w, c).float()
        total = v.sum(dim=1)
        squares = torch.bmm(v.transpose(1, 2), v).diagonal(dim1=1, dim2=2)
    else:
        total = x.sum(dim=(2, 3), dtype=torch.float32)
        squares = torch.linalg.vector_norm(x, dim=(2, 3), dtype=torch.float32) ** 2
    return (total / (h * w))[:, :, None, None], (squares / (h * w))[:, :, None, None]


def instance_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Normalise each channel of each image, then scale by `gamma` and shift by `beta` [B, C].

    Written out rather than F.instance_norm because on the CPU this is several times
    faster: a plain sum and a sum of squares are quick reductions, where the fused
    kernel's running variance is not (and it copies channels-last input to NCHW), and
    outside autograd the affine step runs in place instead of faulting in a fresh tensor.
    """
    mean, mean_sq = _channel_moments(x)
    var = (mean_sq - mean * mean).clamp_(min=0.0)
    scale = gamma[:, :, None, None].float() * torch.rsqrt(var + 1e-5)
    shift = beta[:, :, None, None].float() - mean * scale
    scale, shift = scale.to(x.dtype), shift.to(x.dtype)
    if torch.is_grad_enabled() and x.requires_grad:
        return x * scale + shift
    return x.mul_(scale).add_(shift)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad the bottom and right so both sides divide by `multiple`; returns (x, h, w)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        # reflection needs the pad to be smaller than the side; replicate covers tiny images
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w
