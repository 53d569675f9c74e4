"""Blocking work off the event loop, except when it is small.

Handing work to a thread costs a queue put, a wake-up and two GIL hand-offs, which on a
busy 2-core machine measured about 1 ms each (bench/relay.py), more than writing a small
file or decoding a thumbnail-sized image. So work below `INLINE_COST` runs right here.
"""

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

INLINE_COST = 128 * 1024
"""Bytes (of file, or of decoded pixels) below which blocking work runs on the loop."""


async def off_loop(cost: int, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `func` in a worker thread, or inline when `cost` bytes is small."""
    if cost <= INLINE_COST:
        return func(*args, **kwargs)
    return await asyncio.to_thread(func, *args, **kwargs)
