"""`Precision`: the arithmetic a node's networks run in (`--precision`), without torch, so
the daemon's flags can be checked before torch loads."""

from __future__ import annotations

import enum


class Precision(enum.Enum):
    """The arithmetic a node's networks run in; off CUDA every choice is plain float32."""

    FP32 = "fp32"
    """Plain float32 everywhere: the reference, and the slowest on tensor-core GPUs."""
    TF32 = "tf32"
    """float32 with TF32 matrix maths on CUDA: the default; style losses keep their quality."""
    BF16 = "bf16"
    """TF32 plus bfloat16 autocast of the Gatys network's forward passes (the picture, the
    losses and the optimiser stay float32); bench/gpu.py reports its output against fp32."""


DEFAULT_PRECISION = Precision.TF32
