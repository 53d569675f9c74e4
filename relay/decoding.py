"""A bounded pool of threads for decoding images, so decodes cannot take over the relay.

Uploads, node results and previews are decoded here rather than in the event loop's default
executor, which other blocking work (files, the database) shares. Two lanes: big decodes
queue for `decode_workers` threads, and small ones have a thread of their own, so a
thumbnail-sized upload is not kept waiting behind a queue of crafted 24-megapixel images.

Threads bound the CPU; memory needs its own bound, since one crafted 1 KB WebP decodes to
hundreds of megabytes. Each big job states the bytes it will hold at its peak and waits its
turn on a `MemoryBudget` until they fit beside the jobs already running. After a big job the
freed heap is handed back to the system (`trim_heap`): glibc keeps it otherwise, per thread.
"""

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from relay.offload import INLINE_COST

T = TypeVar("T")

SMALL_COST = 3 * 1024 * 1024
"""Cost (bytes of decoded pixels, or of text to parse) up to which work takes the small lane:
a megapixel of RGB, tens of milliseconds of work."""

MEMORY_BUDGET = 160 * 1024 * 1024
"""Bytes that big decodes may hold at once. A job larger than all of it still runs, alone."""


class MemoryBudget:
    """Admits jobs first come, first served while their bytes fit under `limit` together;
    a job larger than the whole budget is admitted when nothing else holds any."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        """Bytes held by admitted jobs that have not been released yet."""
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, amount: int) -> None:
        """Wait until `amount` bytes fit, then hold them until `release(amount)`."""
        if not self._waiting and self._fits(amount):
            self.in_use += amount
            return
        turn = asyncio.get_running_loop().create_future()
        entry = (amount, turn)
        self._waiting.append(entry)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release(amount)  # admitted just as the waiter gave up
            else:
                self._waiting.remove(entry)
                self._admit()  # a big job at the head may have been holding others back
            raise

    def release(self, amount: int) -> None:
        """Give back bytes taken by `acquire`, and admit whoever now fits."""
        self.in_use -= amount
        self._admit()

    def _fits(self, amount: int) -> bool:
        return self.in_use == 0 or self.in_use + amount <= self.limit

    def _admit(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            amount, turn = self._waiting.popleft()
            self.in_use += amount
            turn.set_result(None)


def _load_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim  # glibc only; musl has none
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def trim_heap() -> None:
    """Return freed heap memory to the system where the C library allows it (glibc)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _then_trim(func: Callable[..., T], *args: object) -> T:
    try:
        return func(*args)
    finally:
        trim_heap()


class Decoder:
    """Runs decoding work on its own threads: `workers` for big jobs, one for small ones,
    big ones only while their memory fits `budget` bytes together; and one more thread for
    checking what nodes send (`check`), which never queues behind uploads."""

    def __init__(self, workers: int, budget: int = MEMORY_BUDGET) -> None:
        self._big = ThreadPoolExecutor(workers, thread_name_prefix="decode")
        self._small = ThreadPoolExecutor(1, thread_name_prefix="decode-small")
        self._checks = ThreadPoolExecutor(1, thread_name_prefix="decode-check")
        self.budget = MemoryBudget(budget)

    async def check(self, cost: int, func: Callable[..., T], *args: object) -> T:
        """Run a check of a node's image: inline when tiny, else on the checks' own thread.

        A node holds a slot until its result is accepted; were its check queued behind a
        pile of crafted uploads, anyone could stall every node by uploading. A result is at
        most the job's size (`--max-size`), so it needs no memory budget of its own.
        """
        if cost <= INLINE_COST:
            return func(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._checks, functools.partial(_then_trim, func, *args))

    async def run(
        self, cost: int, func: Callable[..., T], *args: object, memory: int | None = None
    ) -> T:
        """Run `func(*args)`, costing `cost` bytes: inline when tiny, else on a lane's thread.

        `memory` is the bytes it holds at its peak (`cost` when not given); a big job waits
        until that fits the budget, and keeps it until its thread is done, even if the
        caller stops waiting.
        """
        if cost <= INLINE_COST:
            return func(*args)
        loop = asyncio.get_running_loop()
        if cost <= SMALL_COST:
            return await loop.run_in_executor(self._small, functools.partial(func, *args))
        amount = cost if memory is None else memory
        await self.budget.acquire(amount)
        try:
            done = self._big.submit(_then_trim, func, *args)
        except BaseException:
            self.budget.release(amount)
            raise

        def release(_: Future[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to admit
                loop.call_soon_threadsafe(self.budget.release, amount)

        done.add_done_callback(release)
        return await asyncio.wrap_future(done)

    def close(self) -> None:
        """Stop the threads; work already queued is dropped."""
        self._big.shutdown(wait=False, cancel_futures=True)
        self._small.shutdown(wait=False, cancel_futures=True)
        self._checks.shutdown(wait=False, cancel_futures=True)
