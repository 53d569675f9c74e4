"""Gathering the fast jobs that several worker threads hold into one pass of the network.

A `Batcher` is shared by the node's job threads. The first job of a kind becomes its
batch's leader: it waits a short, bounded time (default 10 ms) for jobs of the same key
(same network, same picture size) to join, runs them all in one call, and hands each
job its own result, or the error, back on its own thread. Nothing here knows of torch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 (an item going in)
R = TypeVar("R")  # its result

DEFAULT_WAIT = 0.010
DEFAULT_MAX_BATCH = 16


@dataclass
class _Batch(Generic[I, R]):
    items: list[I] = field(default_factory=list)
    results: Sequence[R] = ()
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Batcher(Generic[I, R]):
    """Runs items of equal key together through `run_batch` (items in, results in order)."""

    def __init__(
        self,
        run_batch: Callable[[list[I]], Sequence[R]],
        *,
        wait: float = DEFAULT_WAIT,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._run_batch = run_batch
        self._wait = wait
        self._max_batch = max(1, max_batch)
        self._lock = threading.Condition()
        self._open: dict[Hashable, _Batch[I, R]] = {}
        self.sizes: list[int] = []
        """The size of every batch run so far, for tests and the logs."""

    def submit(self, key: Hashable, item: I) -> R:
        """Run `item` with any others of `key` that arrive within the wait; its result."""
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None
            if batch is None:
                batch = self._open[key] = _Batch()
            index = len(batch.items)
            batch.items.append(item)
            if len(batch.items) >= self._max_batch:
                del self._open[key]  # full: later jobs start the next batch
                self._lock.notify_all()
            elif leader:
                full = self._max_batch
                self._lock.wait_for(lambda: len(batch.items) >= full, timeout=self._wait)
                if self._open.get(key) is batch:
                    del self._open[key]
        if leader:
            self._run(batch)
        else:
            batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.results[index]

    def _run(self, batch: _Batch[I, R]) -> None:
        self.sizes.append(len(batch.items))
        try:
            results = self._run_batch(batch.items)
            if len(results) != len(batch.items):
                raise RuntimeError(f"{len(results)} results for {len(batch.items)} items")
            batch.results = results
        except BaseException as exc:  # every job of the batch hears of it
            batch.error = exc
        finally:
            batch.done.set()
