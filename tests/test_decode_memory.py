"""Decoding is bounded in memory: big jobs wait for room on a budget, and one crafted WebP
cannot take more than its share."""

import asyncio
import io
import json
import os
import subprocess
import sys
import threading
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from relay import uploads
from relay.decoding import SMALL_COST, Decoder, MemoryBudget

BIG = SMALL_COST + 1  # a cost that takes the big lane
ROOT = Path(__file__).resolve().parent.parent


async def test_jobs_wait_until_their_memory_fits() -> None:
    budget = MemoryBudget(100)
    await budget.acquire(60)
    later = asyncio.create_task(budget.acquire(50))
    await asyncio.sleep(0)
    assert not later.done() and budget.in_use == 60
    budget.release(60)
    await later
    assert budget.in_use == 50


async def test_a_job_over_the_whole_budget_runs_alone() -> None:
    budget = MemoryBudget(100)
    await budget.acquire(250)  # nothing else holds any: admitted
    small = asyncio.create_task(budget.acquire(10))
    await asyncio.sleep(0)
    assert not small.done()
    budget.release(250)
    await small
    assert budget.in_use == 10


async def test_first_come_first_served_and_a_cancelled_waiter_gives_way() -> None:
    budget = MemoryBudget(100)
    await budget.acquire(50)
    big = asyncio.create_task(budget.acquire(80))
    small = asyncio.create_task(budget.acquire(10))
    await asyncio.sleep(0)
    # 10 would fit, but the big job came first and is not overtaken for ever.
    assert not big.done() and not small.done()
    big.cancel()
    await small
    assert budget.in_use == 60
    with pytest.raises(asyncio.CancelledError):
        await big


async def test_concurrent_decodes_never_hold_more_than_the_budget() -> None:
    decoder = Decoder(workers=4, budget=100)
    lock = threading.Lock()
    held, peak = [0], [0]

    def job(memory: int) -> int:
        with lock:
            held[0] += memory
            peak[0] = max(peak[0], held[0])
        threading.Event().wait(0.005)  # stay a while, so that others would overlap
        with lock:
            held[0] -= memory
        return memory

    sizes = [40, 30, 60, 20, 90, 10, 50, 40, 30, 70] * 3
    try:
        done = await asyncio.gather(*(decoder.run(BIG, job, m, memory=m) for m in sizes))
    finally:
        decoder.close()
    assert done == sizes
    assert 0 < peak[0] <= 100
    assert decoder.budget.in_use == 0


async def test_a_single_job_over_budget_still_runs() -> None:
    decoder = Decoder(workers=2, budget=100)
    try:
        assert await decoder.run(BIG, sum, [1, 2], memory=10**12) == 3
    finally:
        decoder.close()
    assert decoder.budget.in_use == 0


async def test_memory_is_held_until_the_thread_is_done_even_if_the_caller_left() -> None:
    decoder = Decoder(workers=1, budget=100)
    started, finish = threading.Event(), threading.Event()

    def job() -> None:
        started.set()
        finish.wait(5)

    task = asyncio.create_task(decoder.run(BIG, job, memory=70))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The thread still decodes, so its bytes still count: a second job must wait.
    second = asyncio.create_task(decoder.run(BIG, sum, [1], memory=70))
    await asyncio.sleep(0.01)
    assert decoder.budget.in_use == 70 and not second.done()
    finish.set()
    assert await second == 1
    decoder.close()
    assert decoder.budget.in_use == 0


@cache
def webp_bomb(mode: str) -> bytes:
    """A lossless WebP of 6000x4000 (the pixel cap) in under 1 KB, as in bench/abuse.py."""
    out = io.BytesIO()
    Image.new(mode, (6000, 4000)).save(out, format="WEBP", lossless=True)
    return out.getvalue()


# Growth of the high-water RSS over one `prepare`. VmHWM, not ru_maxrss: the latter
# carries over the parent's peak through fork and exec on Linux, so it would hide ours.
_MEASURE = """
import json, sys
from relay.uploads import prepare

def high_water_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

data = sys.stdin.buffer.read()
before = high_water_kb()
img = prepare(data, 512, "x")
print(json.dumps({"grew_kb": high_water_kb() - before, "size": [img.width, img.height]}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_a_24_megapixel_webp_bomb_decodes_in_bounded_memory(mode: str) -> None:
    """Pillow's own WebP loading held 371 MiB (RGB) and 485 MiB (RGBA, flattened at full
    size) at its peak for this 1 KB file; now libwebp's canvases go first (282 MiB)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE],
        input=webp_bomb(mode),
        capture_output=True,
        env=env,
        check=True,
        timeout=60,
    )
    measured = json.loads(run.stdout)
    assert measured["size"] == [512, 341]
    assert measured["grew_kb"] < 310 * 1024
    # The budget's estimate covers what it really took.
    header = uploads.probe(webp_bomb(mode), 10**8, "x")
    assert uploads.decode_memory(header) >= measured["grew_kb"] * 1024


def test_big_photos_are_reduced_first_and_look_the_same() -> None:
    rng = np.random.default_rng(7)
    base = Image.linear_gradient("L").resize((3000, 2000)).convert("RGB")
    noisy = np.asarray(base).astype(np.int16) + rng.normal(0, 12, (2000, 3000, 3))
    photo = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    photo.save(out, format="PNG", compress_level=1)
    prepared = uploads.prepare(out.getvalue(), 500, "The photo")
    direct = photo.resize((prepared.width, prepared.height), Image.Resampling.LANCZOS)
    with Image.open(io.BytesIO(prepared.png)) as img:
        got = np.asarray(img.convert("RGB")).astype(int)
    difference = np.abs(got - np.asarray(direct).astype(int))
    assert difference.mean() < 1.5 and difference.max() < 16


async def test_checks_of_node_images_never_wait_behind_uploads() -> None:
    # Both big lanes and the small one busy with uploads that do not end...
    decoder = Decoder(2)
    gate = threading.Event()
    try:
        held = [
            asyncio.ensure_future(decoder.run(cost, gate.wait))
            for cost in (50 * 1024 * 1024, 50 * 1024 * 1024, 2 * 1024 * 1024)
        ]
        await asyncio.sleep(0.05)
        # ...a node's result (a 2048-px PNG's worth of pixels) is still checked at once.
        checked = await asyncio.wait_for(decoder.check(2048 * 1365 * 3, lambda: "ok"), 5)
        assert checked == "ok"
        assert not any(task.done() for task in held)
    finally:
        gate.set()
        await asyncio.gather(*held)
        decoder.close()
