"""The public relay under attack, while a normal user goes on posting small jobs.

    python bench/abuse.py [--quick] [--attacks gzip,webp,...] [--duration S] [--json PATH]

For each attack (listed in bench/abuse_attacks.py, numbered as in issue 11) a fresh relay
process (`python -m relay`, temp data dir, free ports on 127.0.0.1) is started with one fake
GPU node that dials it over TCP, speaks the real protocol and answers every offer at once
with a correct PNG. Beside it a normal user posts small jobs (a 12 KB JPEG, `fast` or
`arbitrary`) at a steady rate from addresses of its own, and times POST -> done over the
job's events WebSocket, then downloads the result and checks it is a clean PNG of the job's
size. The attack runs for `--duration` seconds from addresses of its own (127.2.x.y), and
the relay's RSS is sampled every 100 ms. The first row is the same run with no attack.

Per attack it prints the normal user's POST -> done p50/p99, jobs done and errors, the
relay's peak RSS, whether the relay was still up (process alive, /healthz answering) and how
many nodes it still had, and notes particular to the attack.

Goals: under every attack the normal user's p99 < 2 s (and no errors), the relay's peak
RSS < 400 MB, and the relay still up with its node.

All traffic stays on 127.0.0.0/8; every loop is bounded in count and time.
"""

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from wire_node import WireNode  # noqa: E402

from bench.abuse_attacks import (  # noqa: E402
    ATTACKS,
    BAD_NODE,
    LOOP,
    Attack,
    Ctx,
    Mailbox,
    session_from,
    solid_png,
)
from bench.relay import pct, proc_status_kb  # noqa: E402
from protocol import (  # noqa: E402
    Accept,
    Bye,
    Offer,
    Ping,
    Pong,
    Reject,
    Result,
    StyleInfo,
)
from relay.events import FINAL_TYPES  # noqa: E402
from relay.tokens import TokenStore  # noqa: E402

NORMAL_ADDRESSES = tuple(f"127.0.1.{i}" for i in range(1, 17))
GOAL_P99_MS = 2000.0
GOAL_RSS_MB = 400.0
JOB_SIZE = 256
GOOD_NODE = "good"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOP, 0))
        return int(sock.getsockname()[1])


def photo() -> bytes:
    """The normal user's picture: a 320x240 JPEG of about 12 KB."""
    noise = bytes((i * 7919 + (i >> 8) * 104729) % 251 for i in range(320 * 240))
    img = Image.frombytes("L", (320, 240), noise).filter(ImageFilter.GaussianBlur(2))
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


# ---- the relay process -------------------------------------------------------------------


class RelayProcess:
    """`python -m relay` on free loopback ports and a temp data dir, with two node tokens."""

    def __init__(self, flags: dict[str, str], kill_mb: float) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="relay-abuse-")
        self.data_dir = Path(self._tmp.name) / "data"
        self.log_path = Path(self._tmp.name) / "relay.log"
        self.http_port, self.node_port = free_port(), free_port()
        self.base = f"http://{LOOP}:{self.http_port}"
        tokens = TokenStore(self.data_dir)
        self.tokens = {GOOD_NODE: tokens.add(GOOD_NODE), BAD_NODE: tokens.add(BAD_NODE)}
        self.kill_mb = kill_mb
        self.killed_at_mb: float | None = None
        self.peak_kb = 0
        args = {
            "host": LOOP,
            "http_port": str(self.http_port),
            "node_port": str(self.node_port),
            "data_dir": str(self.data_dir),
            **flags,
        }
        command = [sys.executable, "-m", "relay"]
        for name, value in args.items():
            command += ["--" + name.replace("_", "-"), value]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env = {k: v for k, v in env.items() if not k.startswith("STYLERELAY_")}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    async def wait_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(self.base + "/healthz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the relay did not start; its log:\n{self.log_text()[-3000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self) -> int:
        return proc_status_kb(self.proc.pid, "VmRSS") if self.alive() else 0

    async def sample(self) -> None:
        """Track peak RSS every 100 ms; kill the relay past `kill_mb` (this machine is shared)."""
        while self.alive():
            with contextlib.suppress(OSError, RuntimeError):
                self.peak_kb = max(self.peak_kb, self.rss_kb())
            if self.peak_kb > self.kill_mb * 1024:
                self.killed_at_mb = self.peak_kb / 1024
                self.proc.kill()
                return
            await asyncio.sleep(0.1)

    async def healthz(self) -> dict[str, Any] | None:
        """The /healthz body, or None if the relay does not answer within 3 s."""
        if not self.alive():
            return None
        try:
            async with (
                aiohttp.ClientSession() as session,
                asyncio.timeout(3.0),
                session.get(self.base + "/healthz") as resp,
            ):
                body: dict[str, Any] = await resp.json()
                return body if resp.status == 200 else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def disk_mb(self) -> float:
        total = sum(p.stat().st_size for p in self.data_dir.rglob("*") if p.is_file())
        return total / 2**20

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(OSError, RuntimeError):
                self.peak_kb = max(self.peak_kb, proc_status_kb(self.proc.pid, "VmHWM"))
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._tmp.cleanup()


# ---- the honest node ---------------------------------------------------------------------


class GoodNode:
    """A node that answers every offer at once with a PNG of the content's size, and dials
    again half a second after losing its connection (as the real daemon does, sooner)."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.connects = 0
        self.answered = 0
        self.last_error: str | None = None
        self.connected = False
        self._pngs: dict[tuple[int, int], bytes] = {}

    async def run(self, until: float) -> None:
        while time.monotonic() < until:
            try:
                await self._session()
            except Exception as exc:  # the bench goes on; the row shows the reconnects
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            await asyncio.sleep(0.5)

    async def _session(self) -> None:
        reader, writer = await asyncio.open_connection(LOOP, self.port)
        node = WireNode(reader, writer)
        caps: dict[str, Any] = {
            "methods": ("fast", "arbitrary"),
            "styles": (StyleInfo("candy", "Candy", "fast", None),),
            "max_pixels": 2048 * 2048,
            "slots": 4,
        }
        try:
            await node.hello(self.token, GOOD_NODE, **caps)
            self.connects += 1
            self.connected = True
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    return
                for message in node.conn.receive_data(data):
                    match message:
                        case Offer():
                            await self._answer(node, message)
                        case Ping(nonce=nonce):
                            await node.send(Pong(nonce))
                        case Bye() | Reject():
                            return
        finally:
            self.connected = False
            await node.close()

    async def _answer(self, node: WireNode, offer: Offer) -> None:
        with Image.open(io.BytesIO(offer.content)) as img:
            size = img.size
        png = self._pngs.get(size) or self._pngs.setdefault(size, solid_png(size))
        out = node.conn.send(Accept(offer.job_id, offer.lease_id))
        out += node.conn.send(Result.for_png(offer.job_id, offer.lease_id, png, *size))
        await node.send_raw(out)
        self.answered += 1


# ---- the normal user ---------------------------------------------------------------------


def clean_png(data: bytes, size: tuple[int, int]) -> bool:
    """A whole PNG of `size` with nothing after its IEND chunk."""
    if not data.endswith(b"IEND\xaeB`\x82"):
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.format == "PNG" and img.size == size
    except (OSError, SyntaxError, ValueError):
        return False


@dataclass
class NormalUser:
    """Posts small jobs at `rate` per second, open loop, from its own addresses."""

    base: str
    rate: float
    job_timeout: float
    email: bool = False
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    posted: int = 0
    socket_ends: int = 0
    emails: list[str] = field(default_factory=list)

    async def run(self, until: float) -> None:
        picture = photo()
        sessions = [session_from(a) for a in NORMAL_ADDRESSES]
        tasks = []
        try:
            start = time.monotonic()
            i = 0
            while (due := start + i / self.rate) < until:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                session = sessions[i % len(sessions)]
                tasks.append(asyncio.create_task(self._one(session, picture, i)))
                i += 1
            await asyncio.gather(*tasks)
        finally:
            for session in sessions:
                await session.close()

    async def _one(self, session: aiohttp.ClientSession, picture: bytes, i: int) -> None:
        self.posted += 1
        form = aiohttp.FormData()
        form.add_field("content", picture, filename="holiday.jpg", content_type="image/jpeg")
        if i % 2:
            form.add_field("style", "painting:udnie")
            form.add_field("method", "arbitrary")
        else:
            form.add_field("style", "fast:candy")
        form.add_field("size", str(JOB_SIZE))
        if self.email:
            address = f"user-{i}@example.org"
            form.add_field("email", address)
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.job_timeout):
                async with session.post(self.base + "/api/jobs", data=form) as resp:
                    job = await resp.json(content_type=None)
                    if resp.status != 202:
                        self.errors[f"POST {resp.status}"] += 1
                        return
                final = await self._wait(session, job["id"])
                if final.startswith("socket"):
                    # The socket ended without a final event: ask, as a careful page would.
                    self.socket_ends += 1
                    async with session.get(f"{self.base}/api/jobs/{job['id']}") as resp:
                        final = (await resp.json())["state"]
                    while final in ("queued", "running"):
                        await asyncio.sleep(0.05)
                        async with session.get(f"{self.base}/api/jobs/{job['id']}") as resp:
                            final = (await resp.json())["state"]
                elapsed = (time.perf_counter() - t0) * 1000
                if final != "done":
                    self.errors[f"job {final}"] += 1
                    return
                url = f"{self.base}/api/jobs/{job['id']}/result"
                async with session.get(url) as resp:
                    data = await resp.read()
                if resp.status != 200 or not clean_png(data, (job["width"], job["height"])):
                    self.errors["bad result"] += 1
                    return
                self.latencies.append(elapsed)
                if self.email:
                    self.emails.append(address)
        except TimeoutError:
            self.errors["timeout"] += 1
        except (aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
            self.errors[type(exc).__name__] += 1

    async def _wait(self, session: aiohttp.ClientSession, job_id: str) -> str:
        url = f"{self.base}/api/jobs/{job_id}/events".replace("http", "ws", 1)
        async with session.ws_connect(url) as ws:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    return f"socket {msg.type.name.lower()}"
                event = json.loads(msg.data)
                kind = event["type"]
                if kind == "state" and event["job"]["state"] in FINAL_TYPES:
                    return str(event["job"]["state"])
                if kind in FINAL_TYPES:
                    return str(kind)
        return f"socket closed ({ws.close_code})"


# ---- one run -----------------------------------------------------------------------------


async def run_one(attack: Attack, args: argparse.Namespace) -> dict[str, Any]:
    """Start a relay and a node, run the normal user beside the attack, and measure."""
    mailbox = Mailbox() if attack.smtp else None
    flags = dict(attack.flags)
    if mailbox is not None:
        flags.update(mailbox.relay_flags())
    relay = RelayProcess(flags, args.kill_mb)
    notes: dict[str, Any] = {}
    try:
        await relay.wait_up()
        sampler = asyncio.create_task(relay.sample())
        setup_end = time.monotonic() + 60
        node = GoodNode(relay.node_port, relay.tokens[GOOD_NODE])
        node_task = asyncio.create_task(node.run(setup_end + 3600))
        while node.connects == 0 and time.monotonic() < setup_end:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the relay registers the node after its Welcome
        until = time.monotonic() + args.duration
        ctx = Ctx(relay.base, relay.node_port, relay.tokens[BAD_NODE], relay.data_dir, until, notes)
        user = NormalUser(relay.base, args.rate, args.job_timeout, email=mailbox is not None)
        work = [user.run(until)]
        if attack.run is not None:
            work.append(_bounded(attack.run(ctx), args.duration + 5, notes))
        await asyncio.gather(*work)
        await asyncio.sleep(0.5)  # a malicious node's goodbye reaches the relay
        health = await relay.healthz()
        good_node_up = node.connected
        node_task.cancel()
        await asyncio.gather(node_task, return_exceptions=True)
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        log = relay.log_text()
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            (args.keep_logs / f"{attack.name}.log").write_text(log)
        notes["node connects"] = node.connects
        if user.socket_ends:
            notes["events sockets closed before the final event"] = user.socket_ends
        if node.last_error and node.connects > 1:
            notes["node's last error"] = node.last_error
        if mailbox is not None:
            await asyncio.sleep(1.0)  # the last messages on their way
            got = mailbox.delivered(user.emails)
            notes["normal mails delivered"] = f"{got}/{len(user.emails)}"
            if got < len(user.emails):
                user.errors["mail not delivered"] += len(user.emails) - got
            mailbox.stop()
        if attack.name == "disk":
            notes["data dir MB"] = round(relay.disk_mb())
        row: dict[str, Any] = {
            "attack": attack.name,
            "item": attack.item,
            "what": attack.what,
            "posted": user.posted,
            "done": len(user.latencies),
            "p50_ms": round(pct(user.latencies, 50), 1) if user.latencies else None,
            "p99_ms": round(pct(user.latencies, 99), 1) if user.latencies else None,
            "errors": dict(user.errors),
            "relay_up": health is not None,
            "nodes_at_end": health["nodes"] if health else None,
            "good_node_connected": good_node_up,
            "peak_rss_mb": None,
            "killed_at_mb": relay.killed_at_mb,
            "log_errors": log.count(" ERROR ") + log.count("Traceback"),
            "notes": notes,
            "attack_defects": ctx.defects,
        }
    finally:
        relay.stop()
        if mailbox is not None:
            mailbox.stop()
    row["peak_rss_mb"] = round(relay.peak_kb / 1024, 1)
    row["meets_goals"] = bool(
        row["p99_ms"] is not None
        and row["p99_ms"] < GOAL_P99_MS
        and not row["errors"]
        and row["peak_rss_mb"] < GOAL_RSS_MB
        and row["relay_up"]
        and row["good_node_connected"]
        and not row["attack_defects"]
    )
    return row


async def _bounded(work: Awaitable[None], seconds: float, notes: dict[str, Any]) -> None:
    """Run an attack for at most `seconds`; its own failure is a note, not a crash."""
    try:
        async with asyncio.timeout(seconds):
            await work
    except TimeoutError:
        notes["attack overran"] = True
    except Exception as exc:  # an attack that breaks still leaves the row
        notes["attack error"] = f"{type(exc).__name__}: {exc}"[:200]


# ---- the table ---------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_row(row: dict[str, Any]) -> None:
    errors = ", ".join(f"{k} x{v}" for k, v in row["errors"].items()) or "0"
    rss = f"{row['peak_rss_mb']:.0f}"
    if row["killed_at_mb"]:
        rss += " (killed)"
    up = "yes" if row["relay_up"] else "NO"
    node = "yes" if row["good_node_connected"] else "NO"
    notes = "; ".join(f"{k}: {v}" for k, v in row["notes"].items())
    goal = "ok" if row["meets_goals"] else "MISS"
    print(
        f"{row['item']:>3} {row['attack']:<14} {_ms(row['p50_ms']):>6} {_ms(row['p99_ms']):>6} "
        f"{row['done']:>3}/{row['posted']:<3} {rss:>12} {up:>3} {node:>4} {row['log_errors']:>4} "
        f"{goal:>4}  errors: {errors}"
    )
    if notes:
        print(f"{'':<19}{notes}")
    for defect in row["attack_defects"]:
        print(f"{'':<19}DEFECT: {defect}")
    sys.stdout.flush()


def header() -> None:
    print(
        f"goals: normal user's p99 < {GOAL_P99_MS / 1000:g} s with no errors, relay peak RSS < "
        f"{GOAL_RSS_MB:g} MB, relay up with its node, no defect the attack itself found"
    )
    print(
        f"{'#':>3} {'attack':<14} {'p50ms':>6} {'p99ms':>6} {'ok/jobs':<7} {'peak RSS MB':>12} "
        f"{'up':>3} {'node':>4} {'logE':>4} {'goal':>4}"
    )


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    chosen = [a for a in ATTACKS if a.name in args.attacks]
    baseline = Attack("baseline", "-", "no attack", None)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"each run: {args.duration:g} s, normal user {args.rate:g} jobs/s from "
        f"{len(NORMAL_ADDRESSES)} addresses"
    )
    header()
    rows = []
    for attack in [baseline, *chosen]:
        row = await run_one(attack, args)
        print_row(row)
        rows.append(row)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [a.name for a in ATTACKS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="each attack ~2 s (a smoke run)")
    parser.add_argument(
        "--attacks",
        default=",".join(names),
        help=f"comma-separated, of: {', '.join(names)} (default: all)",
    )
    parser.add_argument("--duration", type=float, help="seconds per attack (default 6; quick 2)")
    parser.add_argument("--rate", type=float, default=2.0, help="normal user's jobs/s (2)")
    parser.add_argument(
        "--job-timeout", type=float, default=10.0, help="normal user gives a job up after (10 s)"
    )
    parser.add_argument(
        "--kill-mb", type=float, default=3000.0, help="kill the relay past this RSS (3000 MB)"
    )
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--keep-logs", type=Path, help="save each run's relay log in this dir")
    args = parser.parse_args(argv)
    args.attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = sorted(set(args.attacks) - set(names))
    if unknown:
        parser.error(f"unknown attack(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    if args.duration is None:
        args.duration = 2.0 if args.quick else 6.0
    return args


if __name__ == "__main__":
    options = parse_args()
    results = asyncio.run(main(options))
    if options.json:
        options.json.write_text(
            json.dumps(
                {
                    "goals": {"p99_ms": GOAL_P99_MS, "peak_rss_mb": GOAL_RSS_MB},
                    "duration_s": options.duration,
                    "rate": options.rate,
                    "rows": results,
                },
                indent=2,
            )
        )
