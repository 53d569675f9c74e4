"""Will a Gatys job fit the device? An estimate from the pixel count, checked up front."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from gpu_node.engine.vgg import LAYER_INDEX, LAYER_NAMES
from gpu_node.errors import CapacityError

_BYTES = 4  # float32
# What autograd keeps per layer (input, output, the gradient flowing back) plus the
# allocator's slack, as a multiple of the forward activations counted below. Measured on
# the CPU (1024x768, relu5_1): 2.7 GiB peak against 2.6 GiB for a factor of 1.5; 2 leaves room.
_ACTIVATION_FACTOR = 2.0
_SPARE = 0.85  # leave some of the free memory to everything else


_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}


def estimate_bytes(height: int, width: int, deepest: str, history: int) -> int:
    """Bytes a job at height x width needs, up to layer `deepest`, with L-BFGS `history`."""
    floats = 0
    pixels = height * width
    for name in LAYER_NAMES[: LAYER_INDEX[deepest] + 1]:
        block = int(name[4])  # conv3_2, relu3_2, pool3 -> 3
        halvings = block if name.startswith("pool") else block - 1
        floats += _CHANNELS[block] * pixels // 4**halvings
    image = 3 * pixels
    # L-BFGS keeps two image-sized vectors per remembered step, plus a few working copies.
    optimiser = (2 * history + 6) * image
    return int((floats * _ACTIVATION_FACTOR + optimiser) * _BYTES)


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


def check_fits(height: int, width: int, deepest: str, history: int, device: torch.device) -> None:
    """Raise CapacityError if the job would not fit the device's free memory."""
    need = estimate_bytes(height, width, deepest, history)
    free = free_bytes(device)
    if need > free * _SPARE:
        raise CapacityError(
            f"a {width}x{height} image needs about {need / 2**30:.1f} GiB on {device.type}, "
            f"but only {free / 2**30:.1f} GiB is free; choose a smaller size"
        )
