"""A bounded pool of threads for decoding images, so decodes cannot take over the relay.

Uploads, node results and previews are decoded here rather than in the event loop's default
executor, which other blocking work (files, the database) shares. Two lanes: big decodes
queue for `decode_workers` threads, and small ones have a thread of their own, so a
thumbnail-sized upload is not kept waiting behind a queue of crafted 24-megapixel images.
"""

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from relay.offload import INLINE_COST

T = TypeVar("T")

SMALL_COST = 3 * 1024 * 1024
"""Cost (bytes of decoded pixels, or of text to parse) up to which work takes the small lane:
a megapixel of RGB, tens of milliseconds of work."""


class Decoder:
    """Runs decoding work on its own threads: `workers` for big jobs, one for small ones."""

    def __init__(self, workers: int) -> None:
        self._big = ThreadPoolExecutor(workers, thread_name_prefix="decode")
        self._small = ThreadPoolExecutor(1, thread_name_prefix="decode-small")

    async def run(self, cost: int, func: Callable[..., T], *args: object) -> T:
        """Run `func(*args)`, costing `cost` bytes: inline when tiny, else on a lane's thread."""
        if cost <= INLINE_COST:
            return func(*args)
        pool = self._small if cost <= SMALL_COST else self._big
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, functools.partial(func, *args))

    def close(self) -> None:
        """Stop the threads; work already queued is dropped."""
        self._big.shutdown(wait=False, cancel_futures=True)
        self._small.shutdown(wait=False, cancel_futures=True)
