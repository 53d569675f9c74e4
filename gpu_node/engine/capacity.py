"""Will a Gatys job fit the device? An estimate from the pixel count, checked up front.

A job that does not fit with every layer's activations kept is planned with gradient
checkpointing (`MemoryPlan.checkpoint`): the network keeps only each block's input and the
layers the losses read, and recomputes the rest during the backward pass (about a third
more compute) instead of the job being refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from gpu_node.engine.vgg import LAYER_INDEX, LAYER_NAMES
from gpu_node.errors import CapacityError

_BYTES = 4  # float32
# What autograd keeps (ReLU outputs, which convolutions overwrite in place, pool indices,
# gradients in flight) and the allocator's slack, as a multiple of the forward layers
# counted below. Measured on the CPU at relu5_1 (peak RSS of one job, 2026-11-23): 11.2 GiB
# at 2048x2048 against 9.5 GiB counted (1.17), 3.0 against 2.4 at 1024x1024 (1.28).
_ACTIVATION_FACTOR = 1.3
# Weights, their Winograd transforms and the style targets, whatever the size.
_FIXED = 512 * 2**20
_SPARE = 0.85  # leave some of the free memory to everything else
MIN_HISTORY = 5
"""The shortest L-BFGS memory a large job is shortened to before it is refused."""


_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}


def estimate_bytes(
    height: int,
    width: int,
    deepest: str,
    history: int,
    *,
    checkpoint: bool = False,
    coarse: bool = False,
) -> int:
    """Bytes a job at height x width needs, up to layer `deepest`, with L-BFGS `history`
    (with `checkpoint`: the activations of gradient checkpointing, see the module; with
    `coarse`: those of the half-size pass of the coarse style term as well)."""
    pixels = height * width
    activations = _checkpointed_floats if checkpoint else _layer_floats
    floats = activations(pixels, deepest)
    if coarse:  # kept alongside the full-size pass's until the backward pass
        floats += activations(pixels // 4, deepest)
    image = 3 * pixels
    # L-BFGS keeps two image-sized vectors per remembered step, plus a few working copies.
    optimiser = (2 * history + 6) * image
    return int((floats * _ACTIVATION_FACTOR + optimiser) * _BYTES) + _FIXED


def _layer_floats(pixels: int, deepest: str) -> int:
    floats = 0
    for name in LAYER_NAMES[: LAYER_INDEX[deepest] + 1]:
        block = int(name[4])  # conv3_2, relu3_2, pool3 -> 3
        halvings = block if name.startswith("pool") else block - 1
        floats += _CHANNELS[block] * pixels // 4**halvings
    return floats


def _checkpointed_floats(pixels: int, deepest: str) -> int:
    """Each block's input and the maps the losses read (a style layer a block, and the
    content layer) kept, plus one block recomputed at a time: its two first convolutions'
    maps and their gradients."""
    blocks = int(deepest[4])
    kept, largest = 3 * pixels, 0
    for block in range(1, blocks + 1):
        one_map = _CHANNELS[block] * pixels // 4 ** (block - 1)
        pool = _CHANNELS[block] * pixels // 4**block if block < blocks else 0
        kept += (2 if block == 4 else 1) * one_map + pool
        largest = max(largest, 4 * one_map)
    return kept + largest


def free_bytes(device: torch.device) -> int:
    """Memory the device can still give: free GPU memory, or available RAM on the CPU."""
    match device.type:
        case "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return int(free)
        case "mps":
            mps = torch.mps
            return int(mps.recommended_max_memory() - mps.driver_allocated_memory())
        case _:
            return _available_ram()


def _available_ram() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def fitting_history(
    height: int,
    width: int,
    deepest: str,
    history: int,
    free: int,
    *,
    where: str = "the device",
    checkpoint: bool = False,
    coarse: bool = False,
) -> int:
    """The longest L-BFGS history up to `history` with which the job fits in `free` bytes.

    A large picture is refined from a half-size one, so the last scale needs little memory
    of earlier steps: the history is shortened (down to MIN_HISTORY) before the job is
    refused with CapacityError.
    """
    budget = free * _SPARE
    shortest = min(history, MIN_HISTORY)
    for length in range(history, shortest - 1, -1):
        need = estimate_bytes(height, width, deepest, length, checkpoint=checkpoint, coarse=coarse)
        if need <= budget:
            return length
    need = estimate_bytes(height, width, deepest, shortest, checkpoint=checkpoint, coarse=coarse)
    raise CapacityError(
        f"a {width}x{height} image needs about {need / 2**30:.1f} GiB, but only "
        f"{free / 2**30:.1f} GiB is free on {where}; choose a smaller size"
    )


def check_fits(height: int, width: int, deepest: str, history: int, device: torch.device) -> int:
    """The L-BFGS history the job can have on `device` (see fitting_history), or
    CapacityError if it does not fit the device's free memory at all."""
    free = free_bytes(device)
    return fitting_history(height, width, deepest, history, free, where=device.type)


@dataclass(frozen=True)
class MemoryPlan:
    """How a Gatys job fits its device: its L-BFGS history, and whether it checkpoints."""

    history: int
    checkpoint: bool


def plan_memory(
    height: int,
    width: int,
    deepest: str,
    history: int,
    device: torch.device,
    *,
    free: int | None = None,
    coarse: bool = False,
) -> MemoryPlan:
    """The plan for a job on `device` (`free` bytes, default: what the device has free;
    `coarse`: with a half-size style pass, see estimate_bytes): as it is (the history
    shortened if need be), else with gradient checkpointing, else CapacityError. Jobs
    reach a node only within its owner's --max-pixels, so a job the owner allows runs
    slower rather than being refused where checkpointing makes it fit."""
    free = free_bytes(device) if free is None else free
    try:
        return MemoryPlan(
            fitting_history(height, width, deepest, history, free, coarse=coarse), False
        )
    except CapacityError:
        length = fitting_history(
            height, width, deepest, history, free, where=device.type, checkpoint=True,
            coarse=coarse,
        )  # fmt: skip
        return MemoryPlan(length, True)
