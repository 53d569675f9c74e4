"""How fast this device runs each method, measured by a short warm-up: a few Gatys L-BFGS
steps at two small sizes, fitted to `seconds + seconds_per_mp * megapixels` per epoch; and
one pass of the fast and arbitrary networks at two sizes, fitted the same way per job.

An epoch's cost is not proportional to its pixels at small sizes (a fixed part per step:
layer launches, the optimizer's bookkeeping), so two sizes give both terms; the relay's
estimate formula (relay/estimates.py) reads the pair and adds the job's start-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from PIL import Image

from gpu_node.engine.gatys import stylize_gatys
from gpu_node.engine.gatys_params import GatysParams
from gpu_node.engine.weights import VGGWeights
from protocol import GATYS_START_EPOCHS

# (long side, epochs) of the two warm-up runs. About 3 s in all on an idle 2-core CPU.
# Four epochs, so that the default stages run (three at half size, one at full; two would
# be too few for a warm-up stage and would time full-size epochs only).
WARM_UP_RUNS = ((128, 4), (256, 4))


def _step_seconds(
    size: int, epochs: int, device: torch.device, weights: VGGWeights | None
) -> tuple[float, float]:
    """(megapixels, seconds per unit of work) of a short job on a 4:3 picture of `size`."""
    # A noisy picture: a flat one lets L-BFGS stop early and time nothing.
    gen = torch.Generator().manual_seed(0)
    noise = (torch.rand(size * 3 // 4, size, 3, generator=gen) * 255).to(torch.uint8).numpy()
    picture = Image.fromarray(noise, "RGB")
    marks: list[float] = []
    started = time.perf_counter()
    stylize_gatys(
        picture,
        [(picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 1.0)],
        # The default stages (most epochs at half size first, gatys_params.stages):
        # the relay prices every epoch alike, so the pace is that of an average epoch of a
        # default job. A job with a lower `strength` warms up less and runs a little longer.
        GatysParams(size=size, epochs=epochs),
        device=device,
        weights=weights,
        progress=lambda _: marks.append(time.perf_counter()),
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    # The whole run, start-up included, per unit the relay counts (epochs plus
    # GATYS_START_EPOCHS): steady steps alone left out the start-up and made a fresh
    # node's estimates two to four times too short (bench/estimates.py).
    step = (time.perf_counter() - started) / (len(marks) + GATYS_START_EPOCHS)
    return size * (size * 3 // 4) / 1e6, step


def _fit(small: tuple[float, float], big: tuple[float, float]) -> tuple[float, float]:
    """(seconds, seconds per megapixel) through two (megapixels, seconds) points, both >= 0."""
    (mp_small, t_small), (mp_big, t_big) = small, big
    per_mp = (t_big - t_small) / (mp_big - mp_small)
    fixed = t_small - per_mp * mp_small
    if per_mp <= 0 or fixed < 0:  # noise beat the signal: all of it per pixel, as the big run
        return 0.0, t_big / mp_big
    return fixed, per_mp


def gatys_pace(device: torch.device, weights: VGGWeights | None = None) -> tuple[float, float]:
    """(seconds, seconds per megapixel) of one Gatys epoch on `device`, both >= 0."""
    small, big = (_step_seconds(size, epochs, device, weights) for size, epochs in WARM_UP_RUNS)
    return _fit(small, big)


ONE_PASS_SIZES = (256, 512)
"""Long sides of the two timed passes of a one-pass method (after an untimed first one)."""


def one_pass_pace(
    run: Callable[[torch.Tensor], object], device: torch.device
) -> tuple[float, float]:
    """(seconds, seconds per megapixel) of one pass of `run` over a photo [1, 3, H, W] in
    0..1 on `device`: a first pass loads the network (not timed), then two sizes are timed."""
    gen = torch.Generator().manual_seed(0)

    def photo(size: int) -> torch.Tensor:
        return torch.rand(1, 3, size * 3 // 4, size, generator=gen).to(device)

    run(photo(128))
    points = []
    for size in ONE_PASS_SIZES:
        picture = photo(size)
        started = time.perf_counter()
        run(picture)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        points.append((size * (size * 3 // 4) / 1e6, time.perf_counter() - started))
    return _fit(points[0], points[1])
