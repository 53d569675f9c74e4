"""Estimate against actual time for Gatys jobs on this machine, as the page would see them.

A fresh node measures its pace with the start-up warm-up (`gpu_node.engine.pace`); the
relay's formula (`relay.estimates.job_seconds`, which the page mirrors) turns it into an
estimate per job. Then one job runs (the "first job", 256 px), the relay's refinement
(`relay.estimates.refined`) corrects the pace, and each size runs again for real. The
table gives both estimates and the actual seconds, and their ratios (goal: within ±50%
fresh, ±30% after one job).

    flock /tmp/bench.lock python -m bench.estimates [--epochs 15] [--sizes 128 256 512]
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image

from gpu_node.engine.gatys import stylize_gatys
from gpu_node.engine.gatys_params import GatysParams
from gpu_node.engine.pace import gatys_pace
from gpu_node.engine.weights import load_weights
from relay.estimates import job_seconds, refined

DATA = "tests/data"


def run(content: Image.Image, style: Image.Image, size: int, epochs: int) -> tuple[int, float]:
    """(output pixels, seconds) of one Gatys job, from images to the finished picture."""
    started = time.perf_counter()
    out = stylize_gatys(
        content, [(style, 1.0)], GatysParams(size=size, epochs=epochs), weights=load_weights()
    )
    return out.width * out.height, time.perf_counter() - started


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    args = parser.parse_args()
    content = Image.open(f"{DATA}/cat.jpg").convert("RGB")
    style = Image.open(f"{DATA}/starry_night.jpg").convert("RGB")
    load_weights()
    started = time.perf_counter()
    pace = gatys_pace(torch.device("cpu"))
    warm = time.perf_counter() - started
    print(f"warm-up: {warm:.1f} s; pace {pace[0]:.3f} s + {pace[1]:.2f} s/MP per epoch")
    pixels, took = run(content, style, 256, args.epochs)
    after = refined(pace, "gatys", args.epochs, pixels, took=took, first=True)
    print(f"first job (256 px, {args.epochs} epochs): {took:.1f} s; pace now "
          f"{after[0]:.3f} s + {after[1]:.2f} s/MP")  # fmt: skip
    print(
        "| size | epochs | fresh estimate | after one job | actual | fresh/actual | after/actual |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        pixels, actual = run(content, style, size, args.epochs)
        fresh = job_seconds(pace, "gatys", args.epochs, pixels)
        later = job_seconds(after, "gatys", args.epochs, pixels)
        print(
            f"| {size} | {args.epochs} | {fresh:.1f} s | {later:.1f} s | {actual:.1f} s "
            f"| {fresh / actual:.2f} | {later / actual:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
