"""What happens to a stylised picture afterwards: strength and keeping the photo's colours.

Both work on tensors [B, 3, H, W] in 0..1 on the job's device.
"""

import torch

# ITU-R BT.601 luma weights, the ones JPEG's YCbCr uses
_LUMA = (0.299, 0.587, 0.114)


def luma(x: torch.Tensor) -> torch.Tensor:
    """Brightness [B, 1, H, W] of RGB images."""
    r, g, b = x.unbind(dim=1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def keep_colors(stylized: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """The stylised brightness with the photo's colour (its chroma kept unchanged)."""
    return (photo + (luma(stylized) - luma(photo))).clamp(0.0, 1.0)


def mix(stylized: torch.Tensor, photo: torch.Tensor, strength: float) -> torch.Tensor:
    """Blend toward the photo: strength 0 gives the photo exactly, 1 the stylised picture."""
    if strength >= 1.0:
        return stylized
    if strength <= 0.0:
        return photo.clone()
    return torch.lerp(photo, stylized, strength)
