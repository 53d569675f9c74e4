"""How cheap can a checked Progress message be in Python? The floor under bench/protocol.py.

    python bench/protocol_floor.py

Issue 2 asks the protocol layer to cost at most 1.5x bare `msgpack.packb` + `unpackb`. This
measures, in the same run and the same way as bench/protocol.py (CPU time, best of
interleaved rounds), four ways of sending and receiving the same Progress messages:

1. bare: `unpackb(packb(map))`, the yardstick;
2. frames: our 4-byte header and reused Packer/Unpacker, nothing else;
3. floor: everything issue 2 requires and nothing more, hand-inlined into one function per
   side, with no layers, no error wording and no generality: the map is built, framed,
   unpacked, every field type- and range-checked, a frozen `Progress` built through its slot
   descriptors, and the lease checked against a dict on both sides;
4. ours: `Connection.send` -> `Connection.receive_data`.

The floor is not product code (it handles one message type and words no errors); it shows
what the checks, the message object and the lease bookkeeping cost when nothing else does.
"""

from __future__ import annotations

import math
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.protocol import best, progress_stream
from protocol import Progress

HEADER = struct.Struct(">I")
COUNT, ROUNDS = 20_000, 7


def floor_pair() -> tuple[Callable[[Progress], bytes], Callable[[bytes], Progress]]:
    """The inlined sender and receiver, sharing one open lease."""
    packer = msgpack.Packer()
    unpacker = msgpack.Unpacker(
        max_buffer_size=4096, raw=False, strict_map_key=True, max_str_len=65536,
        max_bin_len=1 << 20, max_array_len=256, max_map_len=256,
    )  # fmt: skip
    sent_leases = {"lease-0": "job-0"}
    received_leases = {"lease-0": "job-0"}
    setters = tuple(getattr(Progress, name).__set__ for name in Progress.__slots__)

    def send(m: Progress) -> bytes:
        if sent_leases.get(m.lease_id) != m.job_id:
            raise ValueError("lease")
        data: bytes = packer.pack({
            "type": "progress", "job_id": m.job_id, "lease_id": m.lease_id, "epoch": m.epoch,
            "max_epochs": m.max_epochs, "losses": m.losses, "elapsed": m.elapsed,
        })  # fmt: skip
        return HEADER.pack(len(data)) + data

    def receive(frame: bytes) -> Progress:
        (size,) = HEADER.unpack_from(frame)
        if size + 4 != len(frame) or size > 4096:
            raise ValueError("frame")
        start = unpacker.tell()
        unpacker.feed(frame[4:])
        b = unpacker.unpack()
        if unpacker.tell() - start != size or type(b) is not dict or b.get("type") != "progress":
            raise ValueError("body")
        job, lease_id, epoch, top = b["job_id"], b["lease_id"], b["epoch"], b["max_epochs"]
        losses, elapsed = b["losses"], b["elapsed"]
        if type(job) is not str or type(lease_id) is not str:
            raise ValueError("ids")
        if not 0 < len(job) <= 128 or not 0 < len(lease_id) <= 128:
            raise ValueError("ids")
        if type(top) is not int or type(epoch) is not int or not 0 <= epoch <= top <= 2**63:
            raise ValueError("epochs")
        if type(losses) is not dict or len(losses) > 256:
            raise ValueError("losses")
        for key, value in losses.items():
            if type(key) is not str or type(value) is not float:
                raise ValueError("losses")
        if type(elapsed) is not float or not 0.0 <= elapsed < math.inf:
            raise ValueError("elapsed")
        if received_leases.get(lease_id) != job:
            raise ValueError("lease")
        message = object.__new__(Progress)
        set_job, set_lease, set_epoch, set_top, set_losses, set_elapsed = setters
        set_job(message, job)
        set_lease(message, lease_id)
        set_epoch(message, epoch)
        set_top(message, top)
        set_losses(message, losses)
        set_elapsed(message, elapsed)
        return message

    return send, receive


def main() -> None:
    """Time the four ways and print each against bare msgpack."""
    relay, node, messages, bodies = progress_stream(COUNT)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    packer, unpacker = msgpack.Packer(), msgpack.Unpacker(max_buffer_size=4096)
    floor_send, floor_receive = floor_pair()
    if floor_receive(floor_send(messages[5])) != messages[5]:
        raise SystemExit("the floor path does not round-trip")
    send, receive = node.send, relay.receive_data

    def timed(work: Callable[[], None]) -> Callable[[], float]:
        def run() -> float:
            start = time.process_time()
            work()
            return time.process_time() - start

        return run

    def bare() -> None:
        for body in bodies:
            unpackb(packb(body))

    def frames() -> None:
        for body in bodies:
            data = packer.pack(body)
            frame = HEADER.pack(len(data)) + data
            unpacker.feed(frame[4:])
            unpacker.unpack()

    def floor() -> None:
        for message in messages:
            floor_receive(floor_send(message))

    def ours() -> None:
        for message in messages:
            receive(send(message))

    names = ("bare msgpack", "frames only", "floor (inlined checks)", "ours (Connection)")
    times = best(ROUNDS, *(timed(w) for w in (bare, frames, floor, ours)))
    print(f"Progress, {COUNT} messages one at a time, best of {ROUNDS} (CPU time):")
    for name, seconds in zip(names, times, strict=True):
        per = seconds / COUNT * 1e6
        print(f"  {name:<26}{per:7.2f} µs  {seconds / times[0]:5.2f}x bare")


if __name__ == "__main__":
    main()
