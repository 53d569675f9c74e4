"""Live mode end to end, beside the same frames run directly on the node's engine.

    python bench/live.py [--side 160] [--seconds 15] [--device cpu] [--sessions 1]

A real relay (`python -m relay`) and a real node daemon (`python -m gpu_node run`) run as
child processes on loopback; this process plays the page: it opens live sessions on
`/api/live`, sends camera-like JPEG frames (a moving disc over a gradient) whenever fewer
than two are at the node, as web/js/live.js does, and times each frame from send to its
painted JPEG back. Then the same frames go straight through the node's `FastEngine` here,
(decode, paint, encode: the node's own work per frame), one at a time and two at a time
as the node's live desk runs them: the peers. On a busy 2-core CPU, two frames at once
beat one at a time by far (torch's two threads per frame wait on each other when other
processes hold a core), so the node's two frames in flight pay for themselves.
Both a fast style and the arbitrary method (a painting) are measured.

Goals (issue 19): on a 2-core CPU at 160x120, >= 4 frames/s with a median delay under
500 ms; on a GPU at 512x384, >= 25 frames/s per session under 100 ms, 8 sessions at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.tokens import TokenStore  # noqa: E402

FAST = "fast:builtin:ochre-sky"
PAINTING = "painting:starry_night"
FRAMES = 48


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def frames(side: int) -> list[bytes]:
    """Camera-like 4:3 JPEGs with the long side `side`: a disc moving over a gradient."""
    w, h = side, side * 3 // 4
    out = []
    for k in range(FRAMES):
        img = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        draw = ImageDraw.Draw(img)
        x = (k * w // FRAMES) % w
        draw.ellipse((x - h // 4, h // 4, x + h // 4, 3 * h // 4), fill=(220, 120, 40))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=70)
        out.append(buf.getvalue())
    return out


@dataclass
class Run:
    painted: int = 0
    dropped: int = 0
    delays: list[float] = field(default_factory=list)
    seconds: float = 0.0
    sides: set[int] = field(default_factory=set)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def session(
    base: str, style: str, side: int, jpegs: list[bytes], seconds: float, *, page: int = 0
) -> Run:
    """One page: frames out while fewer than two are at the node, timed until painted."""
    run = Run()
    who = {"X-Forwarded-For": f"10.0.0.{page + 1}"}  # one live session per client
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{base}/api/live", headers=who) as ws,
    ):
        await ws.send_json({"type": "start", "style": style, "side": side})
        sent: dict[int, float] = {}
        seq = 0
        started = measure_from = None
        end = None

        last = 0.0

        async def pump() -> None:
            # As the page: fewer than two at the node, no faster than a camera's 30 a second.
            nonlocal seq, last
            while len(sent) < 2:
                gap = last + 1 / 30 - time.perf_counter()
                if gap > 0:
                    await asyncio.sleep(gap)
                seq += 1
                last = sent[seq] = time.perf_counter()
                await ws.send_bytes(struct.pack(">BI", 1, seq) + jpegs[seq % len(jpegs)])

        async for msg in ws:
            now = time.perf_counter()
            if msg.type is aiohttp.WSMsgType.BINARY:
                got = struct.unpack_from(">BI", msg.data)[1]
                t0 = sent.pop(got, None)
                if measure_from is not None and now >= measure_from and t0 is not None:
                    run.painted += 1
                    run.delays.append((now - t0) * 1000)
                    with Image.open(io.BytesIO(msg.data[5:])) as img:
                        run.sides.add(max(img.size))
                if end is not None and now >= end:
                    run.seconds = now - measure_from  # type: ignore[operator]
                    await ws.send_json({"type": "stop"})
                    break
                await pump()
                continue
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            event = msg.json()
            if event["type"] == "ready":
                started = time.perf_counter()
                measure_from, end = started + 2.0, started + 2.0 + seconds  # 2 s warm-up
                await pump()
            elif event["type"] == "dropped":
                sent.pop(event["seq"], None)
                run.dropped += 1
                await pump()
            elif event["type"] == "ended":
                raise RuntimeError(f"the session ended: {event}")
    return run


def direct(style: str, jpegs: list[bytes], seconds: float, device: str, at_once: int = 1) -> Run:
    """The same frames straight through the engine (decode, paint, encode), `at_once`
    threads each painting one frame after another, with the node's torch settings."""
    import concurrent.futures

    import torch

    from gpu_node.device import pick_device
    from gpu_node.fast.engine import ArbitraryItem, FastEngine, FastItem
    from gpu_node.fast.registry import build_registry
    from gpu_node.fast.spec import StyleMix
    from gpu_node.tensors import image_to_tensor, tensor_to_image
    from relay import gallery

    dev = pick_device(device)
    engine = FastEngine(build_registry(), dev)
    vector = None
    if style.startswith("painting:"):
        painting = gallery.find(style)
        assert painting is not None
        with Image.open(painting.image_path) as img:
            picture = img.convert("RGB")
        vector = engine.style_vector(torch.zeros(1, 3, 64, 64), picture, 1.0)
    mix = StyleMix(((style.removeprefix("fast:"), 1.0),))

    def one(data: bytes) -> bytes:
        with Image.open(io.BytesIO(data)) as img:
            photo = image_to_tensor(img.convert("RGB"), dev)
        if vector is None:
            out = engine.stylize_batch([FastItem(photo, mix)])[0]
        else:
            out = engine.stylize_arbitrary_batch([ArbitraryItem(photo, vector)])[0]
        buf = io.BytesIO()
        tensor_to_image(out).save(buf, "JPEG", quality=80)
        return buf.getvalue()

    for data in jpegs[:4]:  # warm-up
        one(data)
    run = Run()
    start = time.perf_counter()

    def loop(first: int) -> None:
        k = first
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            one(jpegs[k % len(jpegs)])
            run.delays.append((time.perf_counter() - t0) * 1000)
            run.painted += 1
            k += at_once

    with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
        list(pool.map(loop, range(at_once)))
    run.seconds = time.perf_counter() - start
    return run


def line(name: str, run: Run, sessions: int = 1) -> str:
    fps = run.painted / run.seconds if run.seconds else 0.0
    per = f" ({fps / sessions:.1f}/session)" if sessions > 1 else ""
    return (
        f"  {name:<28} {fps:6.1f} frames/s{per}  delay p50 {pct(run.delays, 50):6.0f} ms  "
        f"p90 {pct(run.delays, 90):6.0f}  p99 {pct(run.delays, 99):6.0f}  "
        f"dropped {run.dropped}"
    )


def wait_for_node(base: str, timeout: float = 120.0) -> None:
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/api/nodes", timeout=2) as resp:
                if json.load(resp)["nodes"]:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the node did not connect")


async def relayed(
    base: str, style: str, side: int, jpegs: list[bytes], args: argparse.Namespace
) -> Run:
    """`args.sessions` pages at once (from as many addresses: one live session each)."""
    runs = await asyncio.gather(
        *(session(base, style, side, jpegs, args.seconds, page=k) for k in range(args.sessions))
    )
    total = Run(seconds=max(r.seconds for r in runs))
    for r in runs:
        total.painted += r.painted
        total.dropped += r.dropped
        total.delays += r.delays
        total.sides |= r.sides
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=160, help="frame long side (default 160)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per run")
    parser.add_argument("--device", default="cpu", help="the node's torch device")
    parser.add_argument("--sessions", type=int, default=1, help="live sessions at once")
    args = parser.parse_args()
    jpegs = frames(args.side)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        relay_log = stack.enter_context(open(Path(tmp) / "relay.log", "w"))
        node_log = stack.enter_context(open(Path(tmp) / "node.log", "w"))
        http, nodes = free_port(), free_port()
        token = TokenStore(Path(tmp)).add("bench-node")
        slots = max(2, 2 * args.sessions)
        relay = subprocess.Popen(
            [sys.executable, "-m", "relay", "--host", "127.0.0.1", "--http-port", str(http),
             "--node-port", str(nodes), "--data-dir", tmp, "--rate-per-minute", "1000",
             "--live-max-side", str(max(args.side, 64)), "--max-node-slots", str(slots),
             "--trusted-proxy", "127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=relay_log,
        )  # fmt: skip
        node = subprocess.Popen(
            [sys.executable, "-m", "gpu_node", "run", "--relay", f"127.0.0.1:{nodes}",
             f"--token={token}", "--name", "bench-node", "--device", args.device,
             "--slots", str(slots)],
            env=env, stdout=subprocess.DEVNULL, stderr=node_log,
        )  # fmt: skip
        base = f"http://127.0.0.1:{http}"
        try:
            try:
                wait_for_node(base)
            except RuntimeError:
                for name in ("relay.log", "node.log"):
                    print(f"--- {name}:", (Path(tmp) / name).read_text()[-2000:])
                raise
            side_text = f"{args.side}x{args.side * 3 // 4}"
            print(f"live mode at {side_text}, {args.sessions} session(s), node on {args.device}, "
                  f"{os.cpu_count()} CPU(s); {args.seconds:g} s measured per run; pages send "
                  "at most 30 frames/s (a camera's rate), the engine runs flat out")  # fmt: skip
            for style in (FAST, PAINTING):
                run = asyncio.run(relayed(base, style, args.side, jpegs, args))
                one = direct(style, jpegs, args.seconds, args.device)
                two = direct(style, jpegs, args.seconds, args.device, at_once=2)
                report(style, run, one, two, args)
        finally:
            node.terminate()
            relay.terminate()
            node.wait(30)
            relay.wait(30)


def report(style: str, run: Run, one: Run, two: Run, args: argparse.Namespace) -> None:
    """Print one style's figures beside the peers'."""
    print(f"{style}:")
    print(line("relay + node (page's view)", run, args.sessions))
    print(line("engine, 1 frame at a time", one))
    print(line("engine, 2 frames at a time", two))
    fps = run.painted / run.seconds
    for name, peer in (("1 at a time", one), ("2 at a time", two)):
        print(
            f"  vs engine {name}: {fps / (peer.painted / peer.seconds):.2f}x the frames/s, "
            f"delay p50 +{pct(run.delays, 50) - pct(peer.delays, 50):.0f} ms"
        )
    print(f"  sides painted {sorted(run.sides)}")
    ok = fps / args.sessions >= 4 and statistics.median(run.delays) < 500
    print(f"  goal (>= 4 frames/s, median < 500 ms): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
