"""The relay's HTTP side under load, against a bare aiohttp app measured in the same run.

    python bench/relay.py [--quick]

A child process runs the real relay app on loopback with a fake node behind the node seam
(`relay.reports`) that answers every offer at once, plus a bare aiohttp app (the peer): a POST
handler that reads the same multipart body and answers 202, an idle WebSocket, and the same
10 MB file served with FileResponse. The load comes from this process over real sockets.

1. Jobs/s through the HTTP API: POST N jobs (32 at a time) until every one is done.
2. Relay-added latency at 50 jobs/s: POST start to the job seen done (p50/p99), and the
   POST alone, against the peer's POST; and a POST with `?wait=10`, answered with the done
   job, against the 202 POST.
3. Memory per idle WebSocket, 1,000 open on a waiting job (child's RSS before/after).
4. MB/s for downloading a 10 MB result, and how long the relay takes to take it in.
5. The public gallery with 10,000 shared items: latency of `GET /api/gallery` pages (the
   first, pages deep behind a cursor, and filtered by method), against the peer answering
   a JSON list of the same size.

Goals (2-core machine): >= 300 jobs/s; p99 < 20 ms at 50 jobs/s; `wait` adds < 5 ms p99;
< 100 KB per idle WebSocket; >= 100 MB/s; p99 of a gallery page < 20 ms.
"""

import argparse
import asyncio
import io
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.api import SERVICE
from relay.app import init
from relay.config import Config
from relay.dispatch import NodeInfo
from relay.handles import OfferJob
from relay.reports import NodeReports
from relay.showcase import PAGE_SIZE, Item, ShowcaseStore

BIG_SIDE = 1830  # jobs of this size get the 10 MB result


def _png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(out, format="PNG")
    return out.getvalue()


def _big_png() -> bytes:
    """A ~10 MB PNG: random pixels do not compress."""
    img = Image.frombytes("RGB", (BIG_SIDE, BIG_SIDE), os.urandom(BIG_SIDE * BIG_SIDE * 3))
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=0)
    return out.getvalue()


# ---- the child: relay + fake node + peer -------------------------------------------------


async def _fake_node(reports: NodeReports, big: bytes) -> None:
    info = NodeInfo(
        "bench-node",
        methods=frozenset({"gatys", "fast"}),
        styles=frozenset({"candy"}),
        slots=64,
        max_pixels=10**8,
    )
    handle = reports.node_connected(info)
    small: dict[tuple[int, int], bytes] = {}
    while True:
        cmd = await handle.outbox.get()
        if not isinstance(cmd, OfferJob):
            continue
        if (cmd.width, cmd.height) == (BIG_SIDE, BIG_SIDE):
            data, w, h = big, BIG_SIDE, BIG_SIDE
        else:
            w, h = cmd.width, cmd.height
            data = small.setdefault((w, h), _png((w, h)))
        await reports.result(handle, cmd.job_id, cmd.lease, data, width=w, height=h)


def _bare_app(big_path: Path) -> web.Application:
    async def post(request: web.Request) -> web.Response:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, aiohttp.BodyPartReader)
            await part.read()
        return web.json_response({"id": "x", "state": "queued"}, status=202)

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(heartbeat=30.0)
        await sock.prepare(request)
        await sock.send_json({"type": "state"})
        async for _ in sock:
            pass
        return sock

    async def file(request: web.Request) -> web.FileResponse:
        return web.FileResponse(big_path)

    listing = {"items": [_gallery_item(n).view() for n in range(PAGE_SIZE)], "next_cursor": "1"}

    async def gallery(request: web.Request) -> web.Response:
        return web.json_response(listing)

    app = web.Application()
    app.router.add_post("/jobs", post)
    app.router.add_get("/ws", ws)
    app.router.add_get("/file", file)
    app.router.add_get("/gallery", gallery)
    return app


async def _serve(ports: "mp.Queue[tuple[int, int]]", data_dir: str) -> None:
    config = Config(
        data_dir=Path(data_dir),
        queue_capacity=100_000,
        max_open_jobs=100_000,
        rate_per_minute=10_000_000,
        # One client posts from 32 connections at once: per-client limits would measure
        # themselves, not the relay (bench/abuse.py measures them).
        uploads_per_client=1_000,
        client_quota_mb=100_000.0,
    )
    app = init(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    big = _big_png()
    big_path = Path(data_dir) / "big.png"
    big_path.write_bytes(big)
    bare = web.AppRunner(_bare_app(big_path), access_log=None)
    await bare.setup()
    bare_site = web.TCPSite(bare, "127.0.0.1", 0)
    await bare_site.start()
    node = asyncio.create_task(_fake_node(NodeReports(app[SERVICE]), big))
    ports.put((_port(runner), _port(bare)))
    try:
        await asyncio.Event().wait()
    finally:
        node.cancel()


def _port(runner: web.AppRunner) -> int:
    """The port a runner's only site listens on."""
    addresses = runner.addresses
    return int(addresses[0][1])


def proc_status_kb(pid: int, name: str) -> int:
    """A process's `VmRSS` (now) or `VmHWM` (its peak) in KB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {name} for process {pid}")


def _child(ports: "mp.Queue[tuple[int, int]]", data_dir: str) -> None:
    asyncio.run(_serve(ports, data_dir))


class Child:
    """A relay child process on a fresh data dir."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="relay-bench-")
        ctx = mp.get_context("spawn")
        ports: mp.Queue[tuple[int, int]] = ctx.Queue()
        self.data_dir = self._tmp.name
        self.proc = ctx.Process(target=_child, args=(ports, self._tmp.name), daemon=True)
        self.proc.start()
        relay_port, bare_port = ports.get(timeout=60)
        self.relay = f"http://127.0.0.1:{relay_port}"
        self.bare = f"http://127.0.0.1:{bare_port}"

    def rss_kb(self) -> int:
        assert self.proc.pid is not None
        return proc_status_kb(self.proc.pid, "VmRSS")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the child has used."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.join(10)
        self._tmp.cleanup()


# ---- the load ----------------------------------------------------------------------------

PHOTO = _png((64, 48))


def _form(photo: bytes = PHOTO, **fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("content", photo, filename="p.png", content_type="image/png")
    for name, value in {"style": "fast:candy", **fields}.items():
        data.add_field(name, value)
    return data


async def _post(
    session: aiohttp.ClientSession, url: str, photo: bytes = PHOTO, **fields: str
) -> dict[str, Any]:
    async with session.post(url, data=_form(photo, **fields)) as resp:
        body: dict[str, Any] = await resp.json()
        # With `?wait=`, a job that ended in time is answered 200 (relay.waiting).
        assert resp.status == 202 or (resp.status == 200 and body["state"] == "done"), body
        return body


async def _wait_done(session: aiohttp.ClientSession, base: str, job_id: str) -> None:
    while True:
        async with session.get(f"{base}/api/jobs/{job_id}") as resp:
            if (await resp.json())["state"] == "done":
                return
        await asyncio.sleep(0.001)


async def throughput(session: aiohttp.ClientSession, base: str, n: int, url: str) -> float:
    """Jobs per second: N POSTs, 32 at a time, until the relay has none open."""
    todo = iter(range(n))

    async def worker() -> None:
        for _ in todo:
            await _post(session, url)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(32)))
    if "/api/" in url:
        while True:
            async with session.get(f"{base}/healthz") as resp:
                health = await resp.json()
            if health["queued"] == 0 and health["running"] == 0:
                break
            await asyncio.sleep(0.002)
    return n / (time.perf_counter() - start)


async def latency(
    session: aiohttp.ClientSession, base: str, url: str, *, rate: float, n: int, until_done: bool
) -> tuple[list[float], list[float]]:
    """At `rate` jobs/s, open loop: POST times and POST-to-done times (ms)."""
    posts: list[float] = []
    dones: list[float] = []

    async def one() -> None:
        t0 = time.perf_counter()
        body = await _post(session, url)
        posts.append((time.perf_counter() - t0) * 1000)
        if until_done:
            await _wait_done(session, base, body["id"])
            dones.append((time.perf_counter() - t0) * 1000)

    tasks = []
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return posts, dones


async def wait_vs_202(
    session: aiohttp.ClientSession, url: str, *, rate: float, n: int
) -> tuple[list[float], list[float]]:
    """At `rate` jobs/s, open loop, alternating a plain POST (202) and one with `?wait=10`
    (answered when the job is done): their times (ms), under the same load."""
    plain: list[float] = []
    waits: list[float] = []

    async def one(waiting: bool) -> None:
        t0 = time.perf_counter()
        body = await _post(session, f"{url}?wait=10" if waiting else url)
        assert not waiting or body["state"] == "done", body
        (waits if waiting else plain).append((time.perf_counter() - t0) * 1000)

    tasks = []
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i % 2 == 1)))
    await asyncio.gather(*tasks)
    return plain, waits


GALLERY_ITEMS = 10_000


def _gallery_item(n: int) -> Item:
    method = ("gatys", "fast", "arbitrary")[n % 3]
    style = "fast:candy" if method == "fast" else "painting:starry_night"
    sha = f"{n:064x}"
    return Item(f"item-{n:08d}", f"job-{n}", method, style, sha, sha, None, 512, 384, n)


def seed_gallery(data_dir: str, count: int) -> None:
    """Add `count` shared items to a relay's gallery, straight into its table (the files
    are not needed to list them)."""
    store = ShowcaseStore(Path(data_dir) / "jobs.sqlite3")
    store.insert_many([_gallery_item(n) for n in range(count)])
    store.close()


async def gallery_pages(
    session: aiohttp.ClientSession, base: str, rounds: int
) -> dict[str, list[float]]:
    """ms per gallery page: the first, deep pages (following cursors), filtered by method."""
    times: dict[str, list[float]] = {"first": [], "deep": [], "method": []}

    async def get(kind: str, url: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        async with session.get(url) as resp:
            assert resp.status == 200, await resp.text()
            body: dict[str, Any] = await resp.json()
        times[kind].append((time.perf_counter() - t0) * 1000)
        return body

    for _ in range(rounds):
        await get("first", f"{base}/api/gallery")
        await get("method", f"{base}/api/gallery?method=fast")
    cursor = (await get("first", f"{base}/api/gallery"))["next_cursor"]
    while cursor is not None and len(times["deep"]) < rounds:
        cursor = (await get("deep", f"{base}/api/gallery?cursor={cursor}"))["next_cursor"]
    return times


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def idle_sockets(child: Child, url: str, count: int) -> float:
    """KB of child RSS per idle WebSocket, `count` open at once."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.sleep(0.5)
        before = child.rss_kb()
        sockets = []
        for _ in range(count):
            ws = await session.ws_connect(url)
            await ws.receive_json()
            sockets.append(ws)
        await asyncio.sleep(1.0)
        after = child.rss_kb()
        for ws in sockets:
            await ws.close()
    return (after - before) / count


async def download(session: aiohttp.ClientSession, url: str, rounds: int) -> float:
    """MB/s downloading `url` `rounds` times, one after another."""
    total = 0
    start = time.perf_counter()
    for _ in range(rounds):
        async with session.get(url) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(1 << 20):
                total += len(chunk)
    return total / (time.perf_counter() - start) / 1e6


async def main(quick: bool) -> None:
    n = 300 if quick else 1500
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"load average at start: {os.getloadavg()[0]:.2f} (other work shares these cores)")
    child = Child()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
            await throughput(s, child.relay, 50, f"{child.relay}/api/jobs")  # warm up
            cpu0 = child.cpu_seconds()
            relay_rate = await throughput(s, child.relay, n, f"{child.relay}/api/jobs")
            cpu1 = child.cpu_seconds()
            bare_rate = await throughput(s, child.bare, n, f"{child.bare}/jobs")
            cpu2 = child.cpu_seconds()
            relay_ms, bare_ms = (cpu1 - cpu0) / n * 1000, (cpu2 - cpu1) / n * 1000
            print(f"\n1. jobs through the API ({n} jobs, 32 at a time, fake node answers at once)")
            print(
                f"   relay {relay_rate:6.0f} jobs/s, {relay_ms:5.2f} CPU ms/job "
                f"(= {1000 / relay_ms:5.0f} jobs/s per free core)   goal >= 300"
            )
            print(
                f"   bare  {bare_rate:6.0f} POST/s, {bare_ms:5.2f} CPU ms/POST "
                f"(= {1000 / bare_ms:5.0f} /s per free core)   ratio {relay_rate / bare_rate:.2f}"
            )

            count = 150 if quick else 500
            relay_url = f"{child.relay}/api/jobs"
            posts, dones = await latency(
                s, child.relay, relay_url, rate=50, n=count, until_done=True
            )
            bare_url = f"{child.bare}/jobs"
            bare_posts, _ = await latency(
                s, child.bare, bare_url, rate=50, n=count, until_done=False
            )
            print(f"\n2. latency at 50 jobs/s ({count} jobs), ms")
            print(
                f"   relay POST->done   p50 {pct(dones, 50):6.2f}  p99 {pct(dones, 99):6.2f}"
                "   goal p99 < 20"
            )
            print(f"   relay POST alone   p50 {pct(posts, 50):6.2f}  p99 {pct(posts, 99):6.2f}")
            print(
                f"   bare POST          p50 {pct(bare_posts, 50):6.2f}  p99 "
                f"{pct(bare_posts, 99):6.2f}"
            )
            print(
                f"   relay-added p50 {statistics.median(dones) - statistics.median(bare_posts):.2f}"
            )
            plain, waits = await wait_vs_202(s, relay_url, rate=50, n=2 * count)
            print(f"   relay POST (202)   p50 {pct(plain, 50):6.2f}  p99 {pct(plain, 99):6.2f}")
            print(
                f"   relay POST?wait=10 p50 {pct(waits, 50):6.2f}  p99 {pct(waits, 99):6.2f}"
                f"   (answered done) adds p99 {pct(waits, 99) - pct(plain, 99):.2f}"
                "   goal < 5"
            )

            waiting = await _post(
                s, f"{child.relay}/api/jobs", style="painting:udnie", method="arbitrary"
            )
            # The relay checks a result against the job's size: the big job is 1830 px too.
            big = await _post(
                s, f"{child.relay}/api/jobs", _png((BIG_SIDE, BIG_SIDE)), size=str(BIG_SIDE)
            )
            t0 = time.perf_counter()
            await _wait_done(s, child.relay, big["id"])
            ingest = (time.perf_counter() - t0) * 1000
            rounds = 10 if quick else 30
            result_url = f"{child.relay}/api/jobs/{big['id']}/result"
            relay_mbs = await download(s, result_url, rounds)
            bare_mbs = await download(s, f"{child.bare}/file", rounds)
            print(f"\n3. a 10 MB result: taken in from the node and recorded in {ingest:.0f} ms")
            print(
                f"   download relay {relay_mbs:7.0f} MB/s   bare FileResponse {bare_mbs:7.0f} MB/s"
                f"   ratio {relay_mbs / bare_mbs:.2f}   goal >= 100"
            )
            seed_gallery(child.data_dir, GALLERY_ITEMS)
            rounds = 100 if quick else 400
            pages = await gallery_pages(s, child.relay, rounds)
            bare_pages = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                async with s.get(f"{child.bare}/gallery") as resp:
                    await resp.read()
                bare_pages.append((time.perf_counter() - t0) * 1000)
            print(f"\n5. gallery pages with {GALLERY_ITEMS} shared items, ms (one at a time)")
            for kind, values in pages.items():
                print(
                    f"   relay {kind:6} p50 {pct(values, 50):6.2f}  p99 {pct(values, 99):6.2f}"
                    "   goal p99 < 20"
                )
            print(
                f"   bare JSON list p50 {pct(bare_pages, 50):6.2f}  p99 {pct(bare_pages, 99):6.2f}"
            )
        sockets = 300 if quick else 1000
        ws_url = f"{child.relay}/api/jobs/{waiting['id']}/events".replace("http", "ws", 1)
        relay_kb = await idle_sockets(child, ws_url, sockets)
    finally:
        child.stop()
    peer = Child()
    try:
        bare_kb = await idle_sockets(peer, f"{peer.bare}/ws".replace("http", "ws", 1), sockets)
    finally:
        peer.stop()
    print(f"\n4. memory per idle WebSocket ({sockets} open on a waiting job)")
    print(f"   relay {relay_kb:6.1f} KB   bare aiohttp WebSocket {bare_kb:6.1f} KB   goal < 100")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs and sockets")
    asyncio.run(main(parser.parse_args().quick))
