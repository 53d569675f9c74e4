"""Cost of the protocol layer against bare msgpack, measured in the same run.

    python bench/protocol.py [--quick]

1. Progress messages, one at a time: `Connection.send` on a node, `receive_data` on a relay
   (framing, validation, state machine, lease checks) against `msgpack.packb` + `unpackb`
   of the same wire map.
2. A 10 MB Result: chunk frames + digest + reassembly against `packb` + `unpackb` of the same
   bytes. Bare msgpack does not hash; the sha256 both ends must compute is timed alone too.

Times are this process's CPU time (other processes' load does not count), best of several
interleaved rounds.
The goal is a ratio (ours / bare) of at most 1.5.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol import (
    Accept,
    Capabilities,
    Connection,
    Hello,
    Offer,
    Progress,
    Result,
    Role,
    Welcome,
)
from protocol.codec import encode
from protocol.frames import FrameReader, pack_frame
from protocol.limits import DEFAULT_MAX_FRAME_SIZE


def best(rounds: int, *runs: Callable[[], float]) -> list[float]:
    """The shortest of `rounds` timings of each run; rounds interleave the runs, so that a
    busy spell on the machine hits them alike."""
    timings = [[run() for run in runs] for _ in range(rounds)]
    return [min(column) for column in zip(*timings, strict=True)]


def connected() -> tuple[Connection, Connection]:
    relay, node = Connection(Role.RELAY), Connection(Role.NODE)
    caps = Capabilities("bench", 0, ("fast",), (), 1000, 2**24, 1)
    relay.receive_data(node.send(Hello((1,), "bench", "", "0", caps)))
    node.receive_data(relay.send(Welcome(1, "s", 10.0, relay.advertised_limits(1000, 2**24))))
    return relay, node


def lease(relay: Connection, node: Connection, n: int) -> tuple[str, str]:
    job, lease_id = f"job-{n}", f"lease-{n}"
    node.receive_data(relay.send(Offer(job, lease_id, "fast", {}, "mosaic", (), b"c")))
    relay.receive_data(node.send(Accept(job, lease_id)))
    return job, lease_id


def progress_stream(
    count: int,
) -> tuple[Connection, Connection, list[Progress], list[dict[str, object]]]:
    """A relay and a node with an accepted lease, `count` Progress messages for it, and
    their wire maps."""
    relay, node = connected()
    job, lease_id = lease(relay, node, 0)
    messages = [
        Progress(job, lease_id, i, count, {"content": 1.5 * i, "style": 2.5e5 / (i + 1)}, 0.01 * i)
        for i in range(count)
    ]
    bodies = [encode(m, lambda data: (0, "")) for m in messages]
    return relay, node, messages, bodies


def bench_progress(count: int, rounds: int) -> tuple[float, float, float]:
    """Seconds per Progress message: ours, bare msgpack, and our framing alone (the frame
    layer with its reused Packer and Unpacker, without messages, checks or state)."""
    relay, node, messages, bodies = progress_stream(count)
    send, receive = node.send, relay.receive_data

    def ours() -> float:
        start = time.process_time()
        for message in messages:
            receive(send(message))
        return time.process_time() - start

    packb, unpackb = msgpack.packb, msgpack.unpackb

    def bare() -> float:
        start = time.process_time()
        for body in bodies:
            unpackb(packb(body))
        return time.process_time() - start

    reader, packer = FrameReader(DEFAULT_MAX_FRAME_SIZE), msgpack.Packer()
    feed = reader.feed

    def frames() -> float:
        start = time.process_time()
        for body in bodies:
            feed(pack_frame(packer, body))
        return time.process_time() - start

    ours_time, bare_time, frames_time = best(rounds, ours, bare, frames)
    return ours_time / count, bare_time / count, frames_time / count


def bench_result(size: int, rounds: int) -> tuple[float, float, float]:
    """Seconds per `size`-byte Result: ours, bare msgpack, sha256 twice (send and receive)."""
    png = bytes(range(256)) * (size // 256)
    relay, node = connected()
    leases = [lease(relay, node, n) for n in range(rounds + 1)]
    results = [Result.for_png(job, lease_id, png, 2000, 1250) for job, lease_id in leases]

    def ours() -> float:
        # Nothing is kept, as with bare msgpack below: both reuse freed memory alike.
        result = results.pop()
        start = time.process_time()
        relay.receive_data(node.send(result))
        return time.process_time() - start

    def bare() -> float:
        start = time.process_time()
        msgpack.unpackb(msgpack.packb(png))
        return time.process_time() - start

    def hashing() -> float:
        start = time.process_time()
        hashlib.sha256(png).hexdigest()
        hashlib.sha256(png).hexdigest()
        return time.process_time() - start

    check = results.pop()
    if relay.receive_data(node.send(check)) != [check]:
        raise SystemExit("the Result did not come back intact")
    ours_time, bare_time, hash_time = best(rounds, ours, bare, hashing)
    return ours_time, bare_time, hash_time


def row(label: str, value: str) -> None:
    """Print one aligned line of the report."""
    print(f"  {label:<40}{value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and rounds")
    args = parser.parse_args()
    count, rounds = (2_000, 3) if args.quick else (20_000, 7)
    size = 10 * 1000 * 1000
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, msgpack {'.'.join(map(str, msgpack.version))}"
    )

    ours, bare, frames = bench_progress(count, rounds)
    print(f"\nProgress, encode + decode one at a time ({count} messages, best of {rounds}):")
    row("ours (Connection send -> receive_data)", f"{1 / ours:>10,.0f} msg/s  {ours * 1e6:7.2f} µs")
    row("bare msgpack packb -> unpackb", f"{1 / bare:>10,.0f} msg/s  {bare * 1e6:7.2f} µs")
    row("ratio (ours cost / bare cost)", f"{ours / bare:>10.2f}x")
    row("of which framing alone (no messages)", f"{frames / bare:>10.2f}x")
    row("messages, checks and state machine", f"{(ours - frames) * 1e6:>10.2f} µs")

    ours, bare, hashing = bench_result(size, rounds)
    mb = size / 1e6
    print(f"\n10 MB Result, chunked send -> receive_data (best of {rounds}):")
    row("ours", f"{mb / ours:>10,.0f} MB/s  {ours * 1e3:7.2f} ms")
    row("bare msgpack packb -> unpackb", f"{mb / bare:>10,.0f} MB/s  {bare * 1e3:7.2f} ms")
    row("ratio (ours cost / bare cost)", f"{ours / bare:>10.2f}x")
    row("sha256 alone, sender + receiver", f"{mb / hashing:>10,.0f} MB/s  {hashing * 1e3:7.2f} ms")
    row("ratio without the two hashes", f"{(ours - hashing) / bare:>10.2f}x")


if __name__ == "__main__":
    main()
