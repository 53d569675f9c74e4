"""Pillow images to torch tensors and back: float [1, 3, H, W] with values in 0..1."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def image_to_tensor(img: Image.Image, device: torch.device | None = None) -> torch.Tensor:
    """An RGB image as a float32 tensor [1, 3, H, W] in 0..1 on `device` (CPU if None)."""
    # np.array copies, so the tensor owns writable memory (np.asarray of a PIL image is
    # read-only, and torch warns about that).
    array = np.array(img.convert("RGB"), dtype=np.uint8)
    tensor = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
    return tensor.to(device=device or torch.device("cpu"), dtype=torch.float32).div_(255.0)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """A [1, 3, H, W] or [3, H, W] tensor in 0..1 as an RGB image (values clamped)."""
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"expected a batch of one image, got {tensor.shape[0]}")
        tensor = tensor[0]
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected 3 channels [3, H, W], got shape {tuple(tensor.shape)}")
    pixels = tensor.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    array = pixels.permute(1, 2, 0).contiguous().cpu().numpy()
    return Image.fromarray(array)
