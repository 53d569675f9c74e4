"""Choosing the torch device a job runs on, and setting torch up for it.

`pick_device` prefers CUDA, then Apple MPS, then the CPU, unless one is asked for by name.
`configure_backend` applies the speed settings that suit the device; torch keeps these
process-wide, so they are set once by the entry point (the CLI or the daemon), not by
the engines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from gpu_node.errors import BadInputError


@dataclass(frozen=True)
class BackendConfig:
    """The torch settings applied for a device."""

    device: torch.device
    threads: int
    tf32: bool


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Names of the devices this process can use, best first."""
    names: list[str] = []
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(requested: str | None) -> torch.device:
    """The device named by `requested` ("auto"/None picks the best), or BadInputError."""
    if requested is None or requested in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise BadInputError(
            f"unknown device {requested!r}; use one of: auto, {', '.join(available_devices())}"
        ) from None
    match device.type:
        case "cpu":
            return device
        case "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = 0 if device.index is None else device.index
            if index >= count:
                raise BadInputError(
                    f"device {requested!r} is not available here "
                    f"({count} CUDA device(s)); use one of: {', '.join(available_devices())}"
                )
            return torch.device("cuda", index)
        case "mps":
            if not _mps_available():
                raise BadInputError(
                    f"device {requested!r} is not available here; "
                    f"use one of: {', '.join(available_devices())}"
                )
            return device
        case _:
            raise BadInputError(
                f"device type {device.type!r} is not supported; "
                f"use one of: auto, {', '.join(available_devices())}"
            )


def configure_backend(device: torch.device, *, threads: int | None = None) -> BackendConfig:
    """Apply the speed settings for `device` and return what was set.

    CUDA gets TF32 matrix maths and cuDNN autotuning (style losses keep their quality at
    TF32); the CPU gets one thread per core unless `threads` says otherwise.
    """
    cores = threads if threads is not None else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores))
    tf32 = device.type == "cuda"
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return BackendConfig(device=device, threads=torch.get_num_threads(), tf32=tf32)


def pick_device(requested: str | None = None) -> torch.device:
    """Resolve `requested` (None: CUDA, then MPS, then CPU) and configure torch for it."""
    device = resolve_device(requested)
    configure_backend(device)
    return device
